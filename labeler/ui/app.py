"""The browser app: ``build_demo()`` builds it, ``launch()`` serves it.

Until the wizard lands this is one page: what Labeler is, the projects in the
data dir with their counts, and the CLI commands that do the work today.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from ..project import data_dir, list_projects  # noqa: E402

INTRO = """# Labeler
Label a folder of images from class names alone: CLIP zero-shot pseudo-labels, review, export.

The step-by-step wizard is being built. Today the command line does the whole job:

```
python -m labeler init pets --classes "cat,dog"
python -m labeler import pets ~/Pictures/pets
python -m labeler features pets --clip ViT-B-32 --pretrained laion2b_s34b_b79k
python -m labeler label pets --method zeroshot
python -m labeler export pets --format csv -o labels.csv
```
"""


def _projects_table() -> list[list]:
    return [
        [p["name"], p.get("images", ""), p.get("classes", ""), "multi" if p.get("multi_label") else "single", p["path"]]
        for p in list_projects()
    ]


def build_demo() -> gr.Blocks:
    """Build the app (not launched)."""
    with gr.Blocks(title="Labeler") as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"### Projects in `{data_dir()}`")
        table = gr.Dataframe(
            headers=["project", "images", "classes", "labels", "path"],
            value=_projects_table,
            interactive=False,
            label="projects",
        )
        gr.Button("Refresh").click(_projects_table, outputs=table, api_name="projects")
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, **kwargs) -> None:
    """Serve the app on ``host:port`` (never shared through a public tunnel)."""
    build_demo().launch(server_name=host, server_port=port, share=False, **kwargs)
