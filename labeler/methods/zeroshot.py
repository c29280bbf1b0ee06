"""Zero-shot CLIP labeling: a text classifier from prompt templates, softmax over classes.

The pure functions (:func:`text_classifier`, :func:`zero_shot_probs`,
:func:`multilabel_sets`) work on arrays and are what the tests plant answers in;
:class:`ZeroShot` wires them to a project's cached CLIP features.

Scoring cached features needs no model: the class texts' embeddings are cached in the project
(:func:`class_text_embeddings`, per feature set and exact texts), so a run whose texts were encoded
before imports neither torch nor open_clip.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import Hint, InvalidInputError, NotReadyError
from ..prompts import DEFAULT_TEMPLATES
from .base import Method, RunResult

if TYPE_CHECKING:
    import torch

    from ..jobs import ProgressCallback
    from ..project import Project


def _l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def text_classifier(embeddings_per_class: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Class weights from text embeddings: per class, mean of L2-normalised embeddings, re-normalised.

    Parameters
    ----------
    embeddings_per_class : sequence of array (T_c, D)
        For each of the C classes, the embeddings of its T_c >= 1 texts.

    Returns
    -------
    np.ndarray (C, D), float32, unit rows.
    """
    if len(embeddings_per_class) == 0:
        raise InvalidInputError("text_classifier needs at least one class")
    rows, dim = [], None
    for c, emb in enumerate(embeddings_per_class):
        arr = emb.detach().float().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise InvalidInputError(f"class {c}: expected text embeddings of shape (T, D) with T >= 1, got {arr.shape}")
        if dim is not None and arr.shape[1] != dim:
            raise InvalidInputError(f"class {c}: embedding dimension {arr.shape[1]} differs from class 0's {dim}")
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"class {c}: text embeddings contain NaN or inf")
        dim = arr.shape[1]
        rows.append(_l2(_l2(arr.astype(np.float32)).mean(axis=0)))
    return np.stack(rows).astype(np.float32)


#: Rows scored at a time by :func:`zero_shot_probs` (a float32 block of 8192 x 512 is 16 MB).
SCORE_CHUNK = 8192


def _loaded_torch():
    """torch when this process has already imported it, else None (never imported here: 2.5 s of start-up for a
    command that scores cached features)."""
    import sys

    torch = sys.modules.get("torch")
    return torch if torch is not None and hasattr(torch, "from_numpy") else None


def _score_torch(torch, f: np.ndarray, wt: np.ndarray, scale: float, chunk: int, out: np.ndarray) -> None:
    """:func:`zero_shot_probs`'s loop in torch, in place in ``out``: the float16 conversion (2-3x numpy's), the
    matmul, the norms and the softmax all run in torch's thread pool. Mixing torch's pool with numpy's BLAS
    threads in one loop made the two spin against each other on a small machine (2-3x slower)."""
    block = torch.empty((min(chunk, len(f)), f.shape[1]), dtype=torch.float32)
    w = torch.from_numpy(wt)
    o = torch.from_numpy(out)
    for s in range(0, len(f), chunk):
        e = min(len(f), s + chunk)
        src = f[s:e]
        x = block[: e - s]
        if src.flags.writeable:
            x.copy_(torch.from_numpy(np.ascontiguousarray(src)))
        else:  # torch warns on read-only arrays (a memory map opened "r"): numpy converts those
            np.copyto(x.numpy(), src, casting="unsafe")
        logits = o[s:e]
        torch.mm(x, w, out=logits)
        logits.mul_((scale / torch.linalg.vector_norm(x, dim=1).clamp_min_(1e-12)).unsqueeze(1))
        logits.copy_(torch.softmax(logits, dim=1))


def _score_numpy(f: np.ndarray, wt: np.ndarray, scale: float, chunk: int, out: np.ndarray) -> None:
    block = np.empty((min(chunk, len(f)), f.shape[1]), dtype=np.float32)
    scale = np.float32(scale)
    for s in range(0, len(f), chunk):
        e = min(len(f), s + chunk)
        x = block[: e - s]
        np.copyto(x, f[s:e], casting="unsafe")
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        logits = out[s:e]
        np.matmul(x, wt, out=logits)
        logits *= (scale / np.maximum(norms, np.float32(1e-12)))[:, None]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)


def zero_shot_probs(
    image_features: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0, chunk: int = SCORE_CHUNK
) -> np.ndarray:
    """Class probabilities: ``softmax(logit_scale · normalize(f) · Wᵀ)``.

    ``image_features`` may be the cached float16 rows as they are (a memory map included): ``chunk`` rows at a
    time are converted into one reused float32 block and scored; the normalisation is applied to the (N, C)
    logits (``f·Wᵀ / |f|``), not to the (N, D) features. No full float32 copy and no torch import: in torch when
    the process has already imported it (the app, training), else in numpy.

    Parameters
    ----------
    image_features : array (N, D), any float dtype
    classifier : array (C, D), unit rows (see :func:`text_classifier`)
    logit_scale : float
        CLIP's learnt temperature (100 for the released models).
    chunk : int
        Rows per block.

    Returns
    -------
    np.ndarray (N, C), float32, rows sum to 1.
    """
    f = image_features if isinstance(image_features, np.ndarray) else np.asarray(image_features)
    w = np.asarray(classifier, dtype=np.float32)
    if f.ndim != 2 or w.ndim != 2 or f.shape[1] != w.shape[1]:
        raise InvalidInputError(
            f"image features {tuple(f.shape)} and classifier {tuple(w.shape)} must be (N, D) and (C, D)"
        )
    if int(chunk) < 1:
        raise InvalidInputError(f"chunk must be at least 1, got {chunk}")
    n, chunk = len(f), int(chunk)
    out = np.empty((n, w.shape[0]), dtype=np.float32)
    wt = np.ascontiguousarray(w.T)
    torch = _loaded_torch()
    if n and torch is not None:
        _score_torch(torch, f, wt, float(logit_scale), chunk, out)
    elif n:
        _score_numpy(f, wt, float(logit_scale), chunk, out)
    return out


def multilabel_sets(probs: np.ndarray, threshold: float = 0.5) -> list[list[int]]:
    """Label sets for multi-label projects: classes whose probability is at least
    ``threshold`` × the image's top probability (so the top-1 class is always in).

    Parameters
    ----------
    probs : array (N, C)
    threshold : float in (0, 1]
    """
    if not 0 < threshold <= 1:
        raise InvalidInputError(f"threshold must be in (0, 1], got {threshold}")
    p = np.asarray(probs)
    keep = p >= threshold * p.max(axis=1, keepdims=True)
    return [np.flatnonzero(row).tolist() for row in keep]


@dataclass
class ZeroShotParams:
    """Options of the ``zeroshot`` method."""

    templates: str | list[str] = DEFAULT_TEMPLATES  # a template set name or format strings with {c}
    descriptions: str = "both"  # none: templates only | llm: enabled descriptions | both: templates + descriptions
    features: str | None = None  # CLIP feature-set key; the newest CLIP set when None
    threshold: float = 0.5  # multi-label only: keep classes with p >= threshold * max p
    device: str = "auto"
    batch_size: int = 8192  # images scored per chunk


def encode_class_texts(model, texts_per_class: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """CLIP text embeddings for each class's texts: a list of C arrays (T_c, D)."""
    flat = [t for texts in texts_per_class for t in texts]
    emb = model.encode_texts(flat).float().cpu().numpy()
    out, start = [], 0
    for texts in texts_per_class:
        out.append(emb[start : start + len(texts)])
        start += len(texts)
    return out


def _clip_for_set(fset: dict, device: str):
    from ..models import load_clip

    return load_clip(fset["model"], fset["pretrained"] or None, device=device)


#: Where a project keeps its class-text embeddings (one ``.npz`` per feature set and exact list of texts).
TEXT_CACHE_DIR = Path("cache") / "text-embeddings"


def text_cache_path(project: Project, fset: dict, texts: Sequence[str]) -> Path:
    """The cache file of ``texts`` encoded by the text tower of feature set ``fset``'s model."""
    key = json.dumps([fset["key"], fset.get("model"), fset.get("pretrained") or None, list(texts)])
    return Path(project.root) / TEXT_CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def _read_text_cache(path: Path, n: int) -> tuple[np.ndarray, float] | None:
    try:
        with np.load(path) as data:
            emb, scale = data["embeddings"], float(data["logit_scale"])
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: encoded again
    return (emb, scale) if emb.ndim == 2 and emb.shape[0] == n else None


def class_text_embeddings(
    project: Project, fset: dict, texts_per_class: Sequence[Sequence[str]], device: str = "auto"
) -> tuple[list[np.ndarray], float]:
    """Each class's text embeddings by the CLIP model of feature set ``fset``, and the model's logit scale.

    Read from the project's cache (:func:`text_cache_path`) when these exact texts were encoded before (no model
    is loaded, nothing of torch or open_clip imported); else the model's text tower encodes them once and the
    result is cached.

    Returns
    -------
    (list of C arrays (T_c, D) float32, float)

    Raises
    ------
    ModelUnavailableError
        Not cached and the model's weights cannot be had (offline): at once, before anything loads.
    """
    flat = [t for texts in texts_per_class for t in texts]
    path = text_cache_path(project, fset, flat)
    cached = _read_text_cache(path, len(flat))
    if cached is None:
        from ..models import TRY_TINY_FEATURES, check_clip_available

        check_clip_available(fset["model"], fset["pretrained"] or None, hint=TRY_TINY_FEATURES)
        model = _clip_for_set(fset, device)
        emb = model.encode_texts(flat).float().cpu().numpy() if flat else np.zeros((0, model.dim), np.float32)
        cached = (emb.astype(np.float32), float(model.logit_scale))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, embeddings=cached[0], logit_scale=np.float32(cached[1]))
        os.replace(tmp, path)
    emb, scale = cached
    out, start = [], 0
    for texts in texts_per_class:
        out.append(emb[start : start + len(texts)])
        start += len(texts)
    return out, scale


class ZeroShot(Method):
    """CLIP zero-shot with prompt templates over the project's cached CLIP features."""

    name = "zeroshot"
    summary = "CLIP zero-shot: prompt-template text classifier over cached CLIP features (no training)"
    Params = ZeroShotParams

    def run(
        self, project: Project, params: ZeroShotParams | None = None, on_progress: ProgressCallback | None = None
    ) -> RunResult:
        from ..describe import class_texts_report
        from ..jobs import Job
        from ..labels import set_active_run, write_predictions

        params = params or ZeroShotParams()
        classes = project.classes
        if len(classes) < 2:
            raise NotReadyError("the project needs at least two classes", hint=Hint("classes"))
        fset = project.features.get_set(params.features) if params.features else project.features.latest("clip")
        if fset is None or fset["kind"] != "clip":
            what = f"CLIP feature set {params.features!r}" if params.features else "CLIP features"
            raise NotReadyError(f"no {what} in this project", hint=Hint("features", option="clip"))
        # The float16 rows are read chunk by chunk and scored as they are (see zero_shot_probs): no full float32 copy.
        image_ids, rows = project.features.ok_rows(int(fset["id"]))
        matrix = project.features.matrix(int(fset["id"])) if image_ids else None
        if len(image_ids) == 0:
            raise NotReadyError(
                "no image has CLIP features yet (import images, then compute features)", hint=Hint("features")
            )
        texts, report = class_texts_report(project, params.descriptions, params.templates, classes)
        run_params = {
            **asdict(params),
            "features": fset["key"],
            "classes": classes,
            "multi_label": project.multi_label,
            "texts_per_class": report["texts_per_class"],
            "descriptions_per_class": report["descriptions_per_class"],
            "fallback_classes": report["fallback_classes"],
        }
        flat = [t for class_texts in texts for t in class_texts]
        if _read_text_cache(text_cache_path(project, fset, flat), len(flat)) is None:
            from ..models import TRY_TINY_FEATURES, check_clip_available

            # offline and not cached: fails now, before a run is recorded
            check_clip_available(fset["model"], fset["pretrained"] or None, hint=TRY_TINY_FEATURES)
        with Job.start(project, "label", method=self.name, params=run_params, on_progress=on_progress) as job:
            job.progress(0, len(image_ids), "encoding class texts", force=True)
            embeddings, logit_scale = class_text_embeddings(project, fset, texts, params.device)
            classifier = text_classifier(embeddings)
            top_counts = np.zeros(len(classes), dtype=np.int64)
            conf_sum = 0.0
            for start in range(0, len(image_ids), params.batch_size):
                ids = image_ids[start : start + params.batch_size]
                probs = zero_shot_probs(matrix[rows[start : start + len(ids)]], classifier, logit_scale)
                sets = multilabel_sets(probs, params.threshold) if project.multi_label else None
                write_predictions(project, job.id, ids, probs, sets)
                top_counts += np.bincount(probs.argmax(1), minlength=len(classes))
                conf_sum += float(probs.max(1).sum())
                job.progress(start + len(ids), len(image_ids), "scoring images")
            metrics = {
                "n": len(image_ids),
                "texts": report["message"],
                "mean_confidence": conf_sum / len(image_ids),
                "class_counts": dict(zip(classes, top_counts.tolist(), strict=True)),
            }
            job.update_metrics(**metrics)
        set_active_run(project, job.id)
        return RunResult(job.id, metrics)
