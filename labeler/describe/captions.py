"""Image captions (one per image) and group descriptions (one per group of images sharing a pseudo-label).

LatteCLIP's recipe: an LMM describes each image ("Describe the {c} in the photo
concisely, in less than 20 words") and groups of about four images of one
pseudo-class, tiled into a 2×2 grid, asking what they have in common. A group
caption is stored for every image of the group, so a collection costs about
1.25 model calls per image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from store import now

from ..errors import Hint, InvalidInputError, NotReadyError
from .base import Backend, BackendError, DeadlineExceeded, Request, get_backend, tile_grid
from .cache import check_deadline, count_cached, run_requests
from .parse import clean_caption
from .prompts import CAPTION_PROMPT, CAPTION_PROMPT_NO_CLASS, GROUP_PROMPT, GROUP_PROMPT_NO_CLASS, fill_class

if TYPE_CHECKING:
    from ..jobs import ProgressCallback
    from ..project import Project


def make_groups(
    images: Sequence[Mapping[str, Any]],
    class_of: Mapping[int, str],
    group_size: int = 4,
    seed: int = 0,
    class_order: Sequence[str] = (),
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Split images into groups of ``group_size`` sharing a class (shuffled with ``seed`` within each class).

    Images without a class are left out; a class's last group may be smaller.

    Returns
    -------
    list of (class_name, image rows)
    """
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for im in images:
        c = class_of.get(int(im["id"]))
        if c is not None:
            by_class.setdefault(str(c), []).append(im)
    order = [c for c in class_order if c in by_class] + sorted(c for c in by_class if c not in set(class_order))
    rng = np.random.default_rng(seed)
    out = []
    for c in order:
        members = by_class[c]
        perm = rng.permutation(len(members))
        shuffled = [members[i] for i in perm]
        for start in range(0, len(shuffled), group_size):
            out.append((c, shuffled[start : start + group_size]))
    return out


def group_key(shas: Sequence[str]) -> str:
    """Stable id of a group: sha256 of its images' sorted sha256s (first 16 hex digits)."""
    return hashlib.sha256(",".join(sorted(shas)).encode()).hexdigest()[:16]


def caption_requests(
    images: Sequence[Mapping[str, Any]],
    *,
    per_image: bool = True,
    groups: bool = False,
    group_size: int = 4,
    per_image_prompt: str = CAPTION_PROMPT,
    group_prompt: str = GROUP_PROMPT,
    class_of: Mapping[int, str] | None = None,
    class_order: Sequence[str] = (),
    temperature: float = 0.2,
    max_tokens: int = 80,
    seed: int = 0,
    cell: int = 336,
) -> list[Request]:
    """The requests :func:`caption_images` sends (images load lazily, grids are tiled only when sent)."""
    class_of = class_of or {}
    reqs: list[Request] = []
    if per_image:
        for im in images:
            c = class_of.get(int(im["id"]))
            reqs.append(
                Request(
                    prompt=fill_class(per_image_prompt, c, CAPTION_PROMPT_NO_CLASS),
                    images=[im["path"]],
                    temperature=float(temperature),
                    max_tokens=int(max_tokens),
                    subject=f"image:{im['sha256']}",
                    task="caption",
                    meta={"class_name": c, "image_ids": [int(im["id"])]},
                )
            )
    if groups:
        for c, members in make_groups(images, class_of, group_size, seed, class_order):
            shas = sorted(m["sha256"] for m in members)
            paths = [m["path"] for m in members]
            prompt = fill_class(group_prompt, c, GROUP_PROMPT_NO_CLASS).replace("{k}", str(len(members)))
            reqs.append(
                Request(
                    prompt=prompt,
                    images=[lambda paths=paths: tile_grid(paths, cell=cell)],
                    temperature=float(temperature),
                    max_tokens=int(max_tokens) * 2,
                    subject="group:" + ",".join(shas),
                    task="group",
                    meta={"class_name": c, "image_ids": [int(m["id"]) for m in members], "group_key": group_key(shas)},
                )
            )
    return reqs


def caption_images(
    project: Project,
    backend: Backend | str = "template",
    *,
    per_image: bool = True,
    groups: bool = False,
    group_size: int = 4,
    per_image_prompt: str = CAPTION_PROMPT,
    group_prompt: str = GROUP_PROMPT,
    class_of: Mapping[int, str] | None = None,
    image_ids: Sequence[int] | None = None,
    temperature: float = 0.2,
    max_tokens: int = 80,
    seed: int = 0,
    cell: int = 336,
    refresh: bool = False,
    on_progress: ProgressCallback | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Caption the project's images with a vision backend (a ``caption`` job).

    Answers with nothing usable (refusals, empty or ``null`` content) are neither stored nor
    cached, so a rerun asks again; they are counted in ``empty``.

    Parameters
    ----------
    project : Project
    backend : Backend or str
        A backend that takes images (``openai`` with a vision model, ``transformers`` with an
        image-text-to-text model, or ``template``).
    per_image : bool
        One caption per image (``kind="image"``).
    groups : bool
        Also group descriptions (``kind="group"``): images sharing a class in ``class_of``, in groups
        of ``group_size`` tiled into one grid image; the caption is stored for each image of the group.
    group_size : int
        Images per group (4 → a 2×2 grid).
    per_image_prompt : str
        ``{c}`` is replaced by the image's class (``{a}``: with article); images without a class get
        a class-free prompt.
    group_prompt : str
        ``{c}``/``{a}`` as above, ``{k}`` the number of images in the grid.
    class_of : mapping image_id → class name, optional
        The images' (pseudo-)classes, e.g. the active zero-shot run's top-1 labels. Required for groups.
    image_ids : sequence of int, optional
        Only these images (default: every image whose status is ok).
    temperature, max_tokens
        Sampling settings (part of the cache key; groups get twice ``max_tokens``).
    seed : int
        Shuffles images within a class before grouping.
    cell : int
        Side in pixels of one grid cell.
    refresh : bool
        Ignore cached answers.
    on_progress : callable(done, total, message), optional
    dry_run : bool
        Only count: ``{"requests", "cached", "new", "images", "groups"}``, no calls, no writes.
    deadline : float, optional
        Seconds the whole job may take. When they pass it stops (cutting the requests in flight),
        stores the captions that arrived and raises :class:`~labeler.describe.base.DeadlineExceeded`
        saying how far it got; rerunning continues from the cache.

    Returns
    -------
    dict
        ``run_id``, ``requests``, ``cached``, ``sent``, ``captions`` (per-image captions written),
        ``groups`` (group captions written), ``empty`` (answers with nothing usable, e.g. refusals:
        nothing written or cached), ``missing_files`` (images skipped because their file is gone),
        ``warning`` (what to do about empty answers, or ``""``).

    Raises
    ------
    BackendError
        Every answer was a refusal or empty: nothing was stored or cached.
    DeadlineExceeded
        The deadline passed (the captions that arrived are stored).
    """
    from ..jobs import Job

    backend = get_backend(backend)
    if not backend.supports_images:
        raise InvalidInputError(
            f"the {backend.name} backend cannot caption images: pick openai (with a vision model), transformers "
            "(with an image-text-to-text model) or template"
        )
    check_deadline(deadline)
    if not per_image and not groups:
        raise InvalidInputError("nothing to do: ask for per-image captions, group captions, or both")
    if int(group_size) < 1:
        raise InvalidInputError(f"group_size must be at least 1, got {group_size}")
    if groups and not class_of:
        raise NotReadyError(
            "group captions need each image's pseudo-label (label with zero-shot, then caption the groups)",
            hint=Hint("label", option="method", value="zeroshot"),
        )
    class_of = {int(k): str(v) for k, v in (class_of or {}).items()}
    rows = project.images()
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        rows = [r for r in rows if int(r["id"]) in wanted]
    present = [r for r in rows if os.path.exists(r["path"])]
    missing = len(rows) - len(present)
    if not present:
        raise NotReadyError("no images to caption", hint=Hint("import"))
    reqs = caption_requests(
        present,
        per_image=per_image,
        groups=groups,
        group_size=int(group_size),
        per_image_prompt=per_image_prompt,
        group_prompt=group_prompt,
        class_of=class_of,
        class_order=project.classes,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        cell=cell,
    )
    n_images = sum(r.task == "caption" for r in reqs)
    n_groups = sum(r.task == "group" for r in reqs)
    if dry_run:
        cached = 0 if refresh else count_cached(project, backend, reqs)
        return {
            "dry_run": True,
            "requests": len(reqs),
            "cached": cached,
            "new": len(reqs) - cached,
            "images": n_images,
            "groups": n_groups,
            "missing_files": missing,
            **backend.info(),
        }
    params = {
        **backend.info(),
        "per_image": per_image,
        "groups": groups,
        "group_size": group_size,
        "per_image_prompt": per_image_prompt,
        "group_prompt": group_prompt if groups else None,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
        "requests": len(reqs),
    }
    with Job.start(project, "caption", method=backend.name, params=params, on_progress=on_progress) as job:
        responses, stats = run_requests(
            project,
            backend,
            reqs,
            job=job,
            refresh=refresh,
            message="captioning images",
            usable=lambda text: bool(clean_caption(text)),
            deadline=deadline,
        )
        t = now()
        out_rows, empty, written = [], 0, {"caption": 0, "group": 0}
        for r, resp in zip(reqs, responses, strict=True):
            if resp is None:  # not answered before the deadline
                continue
            text = clean_caption(resp.texts[0] if resp.texts else "")
            if not text:
                empty += 1
                continue
            written[r.task] += 1
            for image_id in r.meta["image_ids"]:
                out_rows.append(
                    {
                        "image_id": image_id,
                        "kind": "image" if r.task == "caption" else "group",
                        "group_key": r.meta.get("group_key"),
                        "text": text,
                        "backend": backend.name,
                        "model": backend.model,
                        "prompt": r.prompt,
                        "created_at": t,
                    }
                )
        with project.db.conn:
            for start in range(0, len(out_rows), 1000):
                chunk = out_rows[start : start + 1000]
                for row in chunk:  # (image_id, kind) is unique: the new caption replaces the old
                    project.db.execute(
                        "delete from captions where image_id = ? and kind = ?", [row["image_id"], row["kind"]]
                    )
                project.db["captions"].insert_all(chunk)
        result = {
            "run_id": job.id,
            **stats,
            "captions": written["caption"],
            "groups": written["group"],
            "empty": empty,
            "missing_files": missing,
            "warning": (
                f"{empty} answer{'s were' if empty != 1 else ' was'} refusals or empty: nothing stored for "
                f"{'them' if empty != 1 else 'it'} (not cached: a rerun asks again); try another model or prompt"
                if empty
                else ""
            ),
        }
        job.update_metrics(**{k: v for k, v in result.items() if k != "run_id"})
        if stats["unanswered"]:
            raise DeadlineExceeded(
                f"stopped at the {float(deadline):g} s deadline after {stats['cached'] + stats['sent']} of "
                f"{stats['requests']} answers ({stats['cached']} from cache); {written['caption']} captions and "
                f"{written['group']} group captions stored. The answers so far are cached: rerun the same step "
                "(with a longer deadline, or none) to finish" + (f". Also: {result['warning']}" if empty else ""),
                hint=Hint(option="deadline"),
            )
        if reqs and empty == len(reqs):
            raise BackendError(
                f"all {empty} answers were refusals or empty: nothing stored or cached (a rerun asks again); try "
                "another model (a vision model: gpt-4o-mini, llava, qwen2.5vl) or another prompt",
                hint=Hint(option="prompt"),
            )
    return result


def list_captions(project: Project, kind: str | None = None, image_id: int | None = None) -> list[dict]:
    """Captions by image id: ``{"image_id", "rel_path", "kind", "group_key", "text", "backend", "model", "prompt",
    "created_at"}``."""
    if kind not in (None, "image", "group"):
        raise InvalidInputError(f"caption kind {kind!r} is not 'image' or 'group'")
    where, args = [], []
    if kind:
        where.append("c.kind = ?")
        args.append(kind)
    if image_id is not None:
        where.append("c.image_id = ?")
        args.append(int(image_id))
    sql = (
        "select c.image_id, i.rel_path, c.kind, c.group_key, c.text, c.backend, c.model, c.prompt, c.created_at "
        "from captions c join images i on i.id = c.image_id"
        + (" where " + " and ".join(where) if where else "")
        + " order by c.image_id, c.kind"
    )
    keys = ("image_id", "rel_path", "kind", "group_key", "text", "backend", "model", "prompt", "created_at")
    return [dict(zip(keys, row, strict=True)) for row in project.db.execute(sql, args)]


def captions_by_image(project: Project) -> dict[int, dict[str, str]]:
    """``image_id → {"image": caption, "group": group caption}`` (keys present only where written)."""
    out: dict[int, dict[str, str]] = {}
    for image_id, kind, text in project.db.execute("select image_id, kind, text from captions"):
        out.setdefault(int(image_id), {})[kind] = text
    return out
