"""Compute and read image features: one cached matrix per model key, filled batch by batch.

:func:`compute_features` encodes every ``ok`` image of a project that has no vector yet for
the model's key, as a ``features`` job. Images are decoded and preprocessed in a torch
DataLoader; each batch's vectors are stored and committed before the next, so an interrupted
run resumes where it stopped and a finished one is never recomputed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import Hint, InvalidInputError, NotReadyError
from .ingest import load_rgb
from .jobs import Job, ProgressCallback, lock_project, unlock_project
from .snippets import DEFAULT_GRID, SnippetView, check_grid

if TYPE_CHECKING:
    from .models import Encoder
    from .project import Project

#: Below this many images to encode, decoding runs in the main process (workers cost ~1 s to start).
_MIN_IMAGES_FOR_WORKERS = 512
#: At most this many failures are listed in the result (all are counted).
_MAX_LISTED_FAILURES = 100
#: Without worker processes, batches decoded ahead in a thread while the model runs (0: decode in turn with the
#: forward). bench/features.py measures both.
PREFETCH_BATCHES = 1


class ImageFiles(Dataset):
    """Item ``i``: ``(i, preprocessed tensor, ok, error)``; a file that fails gives an empty tensor."""

    def __init__(self, paths: Sequence[str], transform, min_side: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_rgb(self.paths[i], self.min_side)), True, ""
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            return i, torch.empty(0), False, f"{type(e).__name__}: {e}"


def _collate(items):
    idx = [it[0] for it in items]
    ok = [it[2] for it in items]
    good = [it[1] for it in items if it[2]]
    x = torch.stack(good) if good else None
    errors = [it[3] for it in items]
    return idx, x, ok, errors


def worker_init(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per decode worker (the main process's forward owns the cores)."""
    torch.set_num_threads(1)


def default_num_workers(n_images: int, device: torch.device | str = "cpu") -> int:
    """DataLoader decode workers for ``n_images`` on ``device``.

    0 for fewer than 512 images (starting workers costs more than it saves) and on machines with
    at most 2 cores: measured there (bench/features.py, 2 cores, ViT-B-32 on CIFAR-10 JPEGs) the
    decode in the main process costs a few percent of the forward, while a worker only competes
    with the forward for the cores. With a GPU the forward is fast and decoding is the bottleneck:
    up to 4 workers. On a many-core CPU the forward owns the cores: a quarter of them, at most 2.
    """
    cores = os.cpu_count() or 1
    if n_images < _MIN_IMAGES_FOR_WORKERS or cores <= 2:
        return 0
    if torch.device(device).type in ("cuda", "mps"):
        return min(4, cores - 1)
    return min(2, cores // 4)


def compute_features(
    project: Project,
    model: Encoder,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Encode every ``ok`` image that has no features for ``model.key`` yet, and store them.

    Parameters
    ----------
    project : Project
    model : Encoder
        From :func:`labeler.models.load_encoder` (``key``, ``kind``, ``dim``, ``preprocess``, ``encode_images``).
    batch_size : int
        Images per forward pass and per commit.
    num_workers : int or None
        DataLoader decode workers; None: :func:`default_num_workers`.
    on_progress : callable or None
        ``(done, total, message)`` after each batch; raising from it stops the job (committed batches stay).

    Returns
    -------
    dict
        ``{"key", "set_id", "run_id", "computed", "cached", "failed", "failures": [{"image_id", "path",
        "reason"}], "seconds", "images_per_s", "precision"}`` (+ ``precision_check`` when vectors of a new
        precision joined the set). ``cached``: images that already had features; ``failed``: images that could
        not be read (a vanished file is marked ``status='missing'``).

    Raises
    ------
    JobCancelled
        When the run was cancelled (``request_cancel`` or ``on_progress`` raising it); rerunning resumes.
    ProjectBusyError
        Another job writes the project (another process, or another thread of this one).
    InvalidInputError
        The set holds vectors of another precision that this model's features do not match (cosine < 0.999).
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be at least 1, got {batch_size}")
    # The writer lock before reading what is missing: a run refused or started after another one never
    # encodes images the other one stored meanwhile (the job below re-enters the lock).
    locked = lock_project(project, "features")
    try:
        return _compute(project, model, batch_size, num_workers, on_progress)
    finally:
        if locked:
            unlock_project(project)


def _compute(project, model, batch_size: int, num_workers: int | None, on_progress) -> dict:
    store = project.features
    set_id = store.ensure_set(
        model.key,
        model.kind,
        model.dim,
        model=model.name,
        pretrained=model.pretrained or "",
        params={"image_size": model.image_size, "precision": model.precision, "precisions": [model.precision]},
    )
    images = project.images()
    rows = store.rows_for(set_id, [im["sha256"] for im in images])
    todo = [im for im, r in zip(images, rows, strict=True) if r < 0]
    mix = _check_precision_mix(project, model, set_id, images, rows) if todo else None
    workers = default_num_workers(len(todo), model.device) if num_workers is None else max(0, int(num_workers))
    params = {
        "key": model.key,
        "kind": model.kind,
        "model": model.name,
        "pretrained": model.pretrained,
        "precision": model.precision,
        "device": str(model.device),
        "batch_size": batch_size,
        "num_workers": workers,
    }
    result = {
        "key": model.key,
        "set_id": set_id,
        "computed": 0,
        "cached": len(images) - len(todo),
        "failed": 0,
        "failures": [],
        "precision": model.precision,
    }
    if mix is not None:
        result["precision_check"] = mix
    t0 = time.perf_counter()
    with Job.start(project, "features", method=model.kind, params=params, on_progress=on_progress) as job:
        result["run_id"] = job.id
        total = len(todo)
        job.progress(0, total, f"{total} images to encode, {result['cached']} cached", force=True)
        if todo:
            _run(project, model, job, set_id, todo, batch_size, workers, result)
        project.clear_feature_repair(model.key)  # rows a repair dropped were recomputed with the rest
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["images_per_s"] = round(result["computed"] / result["seconds"], 2) if result["computed"] else None
        job.update_metrics(**{k: v for k, v in result.items() if k not in ("failures", "key")})
    return result


def set_precisions(fset: dict) -> list[str]:
    """The precisions a feature set's vectors were computed in (sets from before they were listed: the one
    recorded at creation, else fp32)."""
    params = json.loads(fset.get("params") or "{}") if isinstance(fset.get("params"), str) else fset.get("params")
    params = params or {}
    return list(params.get("precisions") or [params.get("precision") or "fp32"])


def _check_precision_mix(project, model, set_id: int, images: list[dict], rows: np.ndarray) -> dict | None:
    """Before vectors of a new precision join a set: check that they match the vectors already there.

    Vectors of two precisions share a set only when, on up to 16 images the set holds, the new precision's
    features have a cosine of at least 0.999 to the stored ones (see docs/architecture.md, Features); the
    set's ``params["precisions"]`` then lists both. Returns the check (None when nothing new is mixed in).
    """
    from .precision import COSINE_MIN, PROBE_IMAGES, min_cosine

    fset = project.features.get_set(model.key)
    used = set(set_precisions(fset))
    if model.precision in used:
        return None
    have = [(im, int(r)) for im, r in zip(images, rows, strict=True) if r >= 0]
    tensors, kept = [], []
    for im, r in have:
        if len(tensors) >= PROBE_IMAGES:
            break
        try:
            tensors.append(model.preprocess(load_rgb(im["path"], 2 * model.image_size)))
            kept.append(r)
        except Exception:  # noqa: BLE001 - unreadable now: it cannot be compared, the next one can
            continue
    check = {"precisions": sorted(used), "new": model.precision, "images": len(kept), "cosine_min": None}
    if kept:
        stored = torch.from_numpy(np.asarray(project.features.matrix(set_id)[kept], dtype=np.float32))
        cos = min_cosine(model.encode_images(torch.stack(tensors)).cpu(), stored)
        check["cosine_min"] = round(cos, 6)
        if cos < COSINE_MIN:
            raise InvalidInputError(
                f"feature set {model.key!r} holds {'/'.join(sorted(used))} vectors and this model's "
                f"{model.precision} features differ from them (min cosine {cos:.4f} < {COSINE_MIN} on {len(kept)} "
                f"images): compute features again in {sorted(used)[0]} so the set stays consistent",
                hint=Hint("features", option="precision", value=sorted(used)[0]),
            )
    params = json.loads(fset.get("params") or "{}")
    project.features.set_params(set_id, {**params, "precisions": sorted(used | {model.precision})})
    return check


def prefetch_batches(dataset: Dataset, batch_size: int, depth: int = 1):
    """Batches of ``dataset`` (as :func:`_collate` makes them), in order, decoded ``depth`` batches ahead in a thread.

    ``depth`` 0: no thread, each batch decoded when asked for.

    The decode of batch k+1 (Pillow and torch release the GIL) overlaps the caller's forward of batch k: on a
    CPU the forward rarely keeps every core busy all the time, so most of the decode hides in its gaps. The
    thread stops (after the batch it is on) when the caller stops iterating, e.g. on cancel.

    Yields
    ------
    (idx, x, ok, errors)
        Item indices, the stacked tensors of the readable items (or None), their flags and error messages.
    """
    from concurrent.futures import ThreadPoolExecutor

    if batch_size < 1 or depth < 0:
        raise InvalidInputError(f"batch size must be >= 1 and depth >= 0, got {batch_size} and {depth}")
    starts = list(range(0, len(dataset), batch_size))

    def load(start: int):
        return _collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])

    if depth == 0:
        for start in starts:
            yield load(start)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labeler-decode")
    pending = []
    try:
        for start in starts[: depth + 1]:
            pending.append(pool.submit(load, start))
        nxt = depth + 1
        while pending:
            batch = pending.pop(0).result()
            if nxt < len(starts):
                pending.append(pool.submit(load, starts[nxt]))
                nxt += 1
            yield batch
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)


def _run(
    project,
    model,
    job: Job,
    set_id: int,
    todo: list[dict],
    batch_size: int,
    workers: int,
    result: dict,
    *,
    transform=None,
    min_side: int | None = None,
    encode=None,
):
    """Encode ``todo`` batch by batch into set ``set_id``; ``transform`` / ``min_side`` / ``encode`` default to the
    model's weak view, 2× its input side and ``model.encode_images`` (snippet features pass their own)."""
    on_cuda = model.device.type == "cuda"
    # JPEGs decode at >= 2x the model input (DCT scaling): a large speed-up for camera photos, no visible loss.
    transform = model.preprocess if transform is None else transform
    min_side = 2 * model.image_size if min_side is None else min_side
    encode = model.encode_images if encode is None else encode
    dataset = ImageFiles([im["path"] for im in todo], transform, min_side=min_side)
    if workers:
        batches = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            worker_init_fn=worker_init,
            persistent_workers=False,
            pin_memory=on_cuda,
        )
    else:
        # No worker processes: the next batch decodes in a thread while this one runs through the model.
        batches = prefetch_batches(dataset, batch_size, PREFETCH_BATCHES)
    total, done = len(todo), 0
    try:
        for idx, x, ok, errors in batches:
            good = [i for i, flag in zip(idx, ok, strict=True) if flag]
            if good:
                vectors = encode(x).cpu().numpy()
                result["computed"] += project.features.append(set_id, [todo[i]["sha256"] for i in good], vectors)
            bad = [(i, err) for i, flag, err in zip(idx, ok, errors, strict=True) if not flag]
            if bad:
                _record_failures(project, [(todo[i], err) for i, err in bad], result)
            done += len(idx)
            msg = f"encoded {result['computed']} of {total} images" + (
                f", {result['failed']} unreadable" if result["failed"] else ""
            )
            job.progress(done, total, msg)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a cancelled run stops the decode thread before the job is marked


def _record_failures(project, bad: list[tuple[dict, str]], result: dict) -> None:
    vanished = []
    for image, err in bad:
        gone = not os.path.exists(image["path"])
        reason = "file not found" if gone else f"cannot decode: {err}"
        if gone:
            vanished.append(image["id"])
        result["failed"] += 1
        if len(result["failures"]) < _MAX_LISTED_FAILURES:
            result["failures"].append({"image_id": image["id"], "path": image["path"], "reason": reason})
    if vanished:
        with project.db.conn:
            project.db.conn.executemany("update images set status = 'missing' where id = ?", [[i] for i in vanished])


# --- CDUL snippet features ----------------------------------------------------------------------------------------
#: ``feature_sets.kind`` of snippet sets: never picked where image features of kind ``clip`` / ``dino`` are wanted.
SNIPPET_KIND = "snippets"


def snippet_key(model_key: str, grid: int = DEFAULT_GRID) -> str:
    """The feature-set key of the ``grid × grid`` snippet features of the model ``model_key``."""
    return f"snippets{check_grid(grid)}:{model_key}"


def compute_snippet_features(
    project: Project,
    model: Encoder,
    *,
    grid: int = DEFAULT_GRID,
    batch_size: int = 16,
    num_workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Encode the ``grid × grid`` snippets (:func:`labeler.snippets.snippet_boxes`) of every ``ok`` image without them.

    The snippet features are a feature set like the image features, keyed by (model, image sha256, grid): set key
    :func:`snippet_key`, kind :data:`SNIPPET_KIND`, one row per image holding its S = grid² snippet vectors one
    after the other (dimension S·D, float16). Each crop goes through the model's weak view (resize, center crop).
    The job, its progress, cancel and resume are those of :func:`compute_features`: batches are committed as they
    finish, a rerun encodes only the images still missing. The whole-image features (CDUL's global similarity)
    are the model's ordinary feature set, computed by :func:`compute_features`.

    Parameters
    ----------
    model : Encoder
        The CLIP model (``labeler.models.load_clip``) whose image features the snippets go with.
    grid : int
        Crops per side (3).
    batch_size : int
        Images per batch (each is S forwards).

    Returns
    -------
    dict
        As :func:`compute_features` (``key`` is the snippet set's) plus ``grid``, ``snippets`` (S) and
        ``forwards`` (snippet forwards run).

    Raises
    ------
    InvalidInputError
        A bad grid or batch size, or snippets of another precision in the set.
    JobCancelled, ProjectBusyError
        As :func:`compute_features`.
    """
    grid = check_grid(grid)
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be at least 1, got {batch_size}")
    locked = lock_project(project, "features")
    try:
        return _compute_snippets(project, model, grid, batch_size, num_workers, on_progress)
    finally:
        if locked:
            unlock_project(project)


def _compute_snippets(project, model, grid: int, batch_size: int, num_workers: int | None, on_progress) -> dict:
    store = project.features
    s = grid * grid
    key = snippet_key(model.key, grid)
    set_id = store.ensure_set(
        key,
        SNIPPET_KIND,
        model.dim * s,
        model=model.name,
        pretrained=model.pretrained or "",
        params={
            "base": model.key,
            "base_kind": model.kind,
            "grid": grid,
            "snippets": s,
            "snippet_dim": model.dim,
            "image_size": model.image_size,
            "precision": model.precision,
            "precisions": [model.precision],
        },
    )
    used = set_precisions(store.get_set(key))
    images = project.images()
    rows = store.rows_for(set_id, [im["sha256"] for im in images])
    todo = [im for im, r in zip(images, rows, strict=True) if r < 0]
    if todo and model.precision not in used and store.count(set_id):
        raise InvalidInputError(
            f"snippet set {key!r} holds {'/'.join(sorted(used))} vectors; compute the rest in {sorted(used)[0]} too",
            hint=Hint("features", option="precision", value=sorted(used)[0]),
        )
    workers = default_num_workers(len(todo), model.device) if num_workers is None else max(0, int(num_workers))
    params = {
        "key": key,
        "kind": SNIPPET_KIND,
        "base": model.key,
        "model": model.name,
        "pretrained": model.pretrained,
        "grid": grid,
        "precision": model.precision,
        "device": str(model.device),
        "batch_size": batch_size,
        "num_workers": workers,
    }
    result = {
        "key": key,
        "set_id": set_id,
        "grid": grid,
        "snippets": s,
        "computed": 0,
        "cached": len(images) - len(todo),
        "failed": 0,
        "failures": [],
        "precision": model.precision,
    }
    t0 = time.perf_counter()
    with Job.start(project, "features", method=SNIPPET_KIND, params=params, on_progress=on_progress) as job:
        result["run_id"] = job.id
        msg = f"{len(todo)} images to cut into {s} snippets, {result['cached']} cached"
        job.progress(0, len(todo), msg, force=True)
        if todo:

            def encode(x: torch.Tensor) -> torch.Tensor:
                return model.encode_images(x.flatten(0, 1)).reshape(len(x), -1)

            _run(
                project,
                model,
                job,
                set_id,
                todo,
                batch_size,
                workers,
                result,
                transform=SnippetView(model.preprocess, grid),
                min_side=grid * model.image_size,
                encode=encode,
            )
        result["forwards"] = result["computed"] * s
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["images_per_s"] = round(result["computed"] / result["seconds"], 2) if result["computed"] else None
        job.update_metrics(**{k: v for k, v in result.items() if k not in ("failures", "key")})
    return result


def snippet_features(project: Project, key: str) -> tuple[list[int], np.ndarray]:
    """The snippet features of every ``ok`` image that has them in the snippet set ``key``.

    Returns
    -------
    (image_ids, X)
        Image ids in id order and their snippet vectors, shape (N, S, D), float32.

    Raises
    ------
    NotReadyError
        No such snippet set.
    """
    fset = project.features.get_set(key)
    if fset is None or fset["kind"] != SNIPPET_KIND:
        raise NotReadyError(f"no snippet features {key!r} yet", hint=Hint("features", option="snippets"))
    params = json.loads(fset.get("params") or "{}")
    ids, flat = project.features.ok_vectors(int(fset["id"]))
    s = int(params.get("snippets") or 1)
    return ids, flat.reshape(len(ids), s, -1)


def latest_set(project: Project, kind: str) -> dict | None:
    """The newest feature set of ``kind`` (``clip`` or ``dino``) with its row count, or None."""
    return project.features.latest(kind)


def feature_matrix(project: Project, key_or_kind: str) -> tuple[list[int], np.ndarray]:
    """Features of every ``ok`` image that has some in one set.

    Parameters
    ----------
    key_or_kind : str
        A model key (``clip:ViT-B-32:laion2b_s34b_b79k``), or ``clip`` / ``dino`` for the newest set of that kind.

    Returns
    -------
    (image_ids, X)
        Image ids in id order and their vectors, shape (N, D), float32.

    Raises
    ------
    NotReadyError
        No such feature set yet.
    """
    if key_or_kind in ("clip", "dino"):
        row = latest_set(project, key_or_kind)
        if row is None:
            raise NotReadyError(f"no {key_or_kind} features yet", hint=Hint("features", option=key_or_kind))
    else:
        row = project.features.get_set(key_or_kind)
        if row is None:
            raise NotReadyError(f"no features for model {key_or_kind!r} yet", hint=Hint("features"))
    return project.features.ok_vectors(int(row["id"]))
