"""open_clip, imported on first use, with Labeler's model configs (``tiny-random``) registered once."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
_configs_added = False


def open_clip_module():
    """open_clip, with Labeler's model configs (``tiny-random``) registered once."""
    global _configs_added
    import open_clip

    if not _configs_added:
        open_clip.add_model_config(CONFIG_DIR)
        _configs_added = True
    return open_clip
