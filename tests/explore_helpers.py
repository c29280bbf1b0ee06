"""Synthetic projects for the index, cluster, search and review tests: planted features, no models."""

from __future__ import annotations

import numpy as np
import pytest


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n_clusters: int, dim: int, n: int, noise: float = 0.5, seed: int = 0):
    """Unit vectors around ``n_clusters`` random centres: (centres (C, D), feats (N, D), truth (N,))."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, dim)))
    y = np.arange(n) % n_clusters
    feats = unit(centres[y] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 2)
    return centres, feats, y


def sha(i: int) -> str:
    return f"{i:064x}"


def add_images(project, n: int, start: int = 0) -> list[int]:
    """Insert ``n`` ok images rows (sha256 = start..start+n-1); returns their ids in order."""
    with project.db.conn:
        project.db["images"].insert_all(
            {"sha256": sha(i), "path": f"/x/{i}.png", "rel_path": f"img/{i}.png", "root": "/x", "status": "ok"}
            for i in range(start, start + n)
        )
    return [
        r[0]
        for r in project.db.execute("select id from images where sha256 >= ? order by sha256 limit ?", [sha(start), n])
    ]


def add_features(project, feats: np.ndarray, start: int = 0, kind: str = "clip", key: str | None = None) -> int:
    """Store ``feats`` for the images with sha256 start..; returns the feature set id."""
    key = key or f"{kind}:fake:none"
    sid = project.features.ensure_set(key, kind, feats.shape[1], model="fake", pretrained="")
    project.features.append(sid, [sha(i) for i in range(start, start + len(feats))], feats)
    return sid


def make_project(project, feats: np.ndarray, kind: str = "clip") -> list[int]:
    ids = add_images(project, len(feats))
    add_features(project, feats, kind=kind)
    return ids


def label_run(project, image_ids, probs: np.ndarray) -> int:
    """A finished zero-shot label run with the given probabilities (becomes the active run)."""
    from labeler import labels
    from labeler.jobs import Job

    with Job.start(
        project, "label", method="zeroshot", params={"classes": project.classes, "multi_label": False}
    ) as job:
        labels.write_predictions(project, job.id, list(image_ids), probs)
    return job.id


def probs_for(y: np.ndarray, n_classes: int, confidence: float = 0.8, seed: int = 0) -> np.ndarray:
    """Probabilities with top-1 = y and a little noise in the confidence."""
    rng = np.random.default_rng(seed)
    conf = np.clip(confidence + 0.1 * rng.normal(size=len(y)), 1.0 / n_classes + 0.05, 0.99)
    p = np.tile(((1 - conf) / (n_classes - 1))[:, None], (1, n_classes))
    p[np.arange(len(y)), y] = conf
    return p


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """faiss single-threaded in these tests: on a busy shared CPU, OpenMP spin-waiting makes tiny
    k-means and searches ~1000x slower (0.8 s instead of 1 ms), and the results do not depend on it."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# --- the Explore step's handlers, called in process -------------------------------------------------------------
def step_ctx(project):
    """A :class:`labeler.ui.common.Ctx` for calling the step's handlers without a server (plain states)."""
    import gradio as gr

    from labeler.ui.common import Ctx

    return Ctx(data_dir=project.root.parent, local_mode=True, project=gr.State(""), finished=gr.State(""))


def fake_thumbs(project, start: int = 0, n: int | None = None) -> None:
    """A tiny cached JPEG thumbnail for the images with sha256 start.. (the synthetic rows have no image files),
    so the gallery shows them."""
    from PIL import Image

    from labeler.ingest import thumbnail_path

    n = project.image_count() if n is None else n
    for i in range(start, start + n):
        dest = thumbnail_path(project, sha(i))
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i % 256, 0, 0)).save(dest, "JPEG")


def records(table, headers: list[str]) -> list[dict]:
    """A table update's rows as dicts keyed by ``headers`` (the step's column names)."""
    value = table.value if hasattr(table, "value") else table
    value = value["value"] if isinstance(value, dict) and "value" in value else value
    return [dict(zip(headers, row, strict=True)) for row in value["data"]]


class Event:
    """What gradio passes a handler's ``evt`` parameter: a gallery or table click (``index``, ``row_value``) or
    the map's payload (``_data``)."""

    def __init__(self, index=None, row_value=None, data=None):
        self.index, self.row_value, self._data = index, row_value, data
