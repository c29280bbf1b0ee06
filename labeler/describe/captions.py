"""Image captions (one per image) and group descriptions (one per group of images sharing a pseudo-label).

LatteCLIP's recipe: an LMM describes each image ("Describe the {c} in the photo
concisely, less than 20 words") and groups of four images of one pseudo-class,
tiled into a 2×2 grid, asking what they have in common. Two ways to form groups:

* ``shared`` (kind ``group``): a class's images are split into groups of four, one
  call per group, and the description is stored for every member: about 0.25 calls
  per image (≈ 1.25 with the per-image captions);
* ``per-image`` (kind ``group-own``, as the official code does): each image gets its
  own group, itself and three random other images of its class (seeded), in a
  672×672 grid with 20 px gaps: one call per image (2 with the per-image captions).

Both may exist side by side. A person can edit a caption (the model's text is kept
in ``original``) or disable it (a hallucination); disabled texts drop out of
:func:`captions_by_image` and so out of LatteCLIP's text fusion, and a rerun never
overwrites an edited or disabled caption. The per-image and group prompts are saved
per project (:func:`caption_prompts`, :func:`set_caption_prompts`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from store import now

from ..errors import Hint, InvalidInputError, NotReadyError
from ..labels import pseudo_top1
from .base import Backend, BackendError, DeadlineExceeded, Request, get_backend, tile_grid
from .cache import cache_key, cached_responses, check_deadline, run_requests
from .parse import clean_caption
from .prompts import CAPTION_PROMPT, CAPTION_PROMPT_NO_CLASS, GROUP_PROMPT, GROUP_PROMPT_NO_CLASS, fill_class

if TYPE_CHECKING:
    from ..jobs import ProgressCallback
    from ..project import Project

#: Caption kinds: one per image; a shared group's description; an image's own group's description.
KINDS = ("image", "group", "group-own")
#: How groups are formed (see the module docstring); each mode's kind.
GROUP_MODES = {"shared": "group", "per-image": "group-own"}
#: Project meta keys of the saved prompts.
PROMPT_KEYS = {"caption": "caption_prompt", "group": "group_prompt"}
#: Grid geometry (cell side, gap) by group mode: per-image groups use the official 672×672 grid, 20 px gaps.
GRIDS = {"shared": (336, 4), "per-image": (326, 20)}
MAX_CAPTION_CHARS = 1000


def calls_per_image(per_image: bool, group_mode: str | None, group_size: int = 4) -> float:
    """LMM calls per image of a captioning choice: 1 for per-image captions, ``1/group_size`` for shared
    groups, 1 for per-image groups (e.g. per-image + shared = 1.25, per-image + per-image = 2)."""
    if group_mode is not None and group_mode not in GROUP_MODES:
        raise InvalidInputError(f"group mode {group_mode!r} is not one of {', '.join(GROUP_MODES)}")
    groups = 0.0 if group_mode is None else (1.0 / max(1, int(group_size)) if group_mode == "shared" else 1.0)
    return float(bool(per_image)) + groups


def make_groups(
    images: Sequence[Mapping[str, Any]],
    class_of: Mapping[int, str],
    group_size: int = 4,
    seed: int = 0,
    class_order: Sequence[str] = (),
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Split images into groups of ``group_size`` sharing a class (shuffled with ``seed`` within each class):
    the ``shared`` mode.

    Images without a class are left out; a class's last group may be smaller.

    Returns
    -------
    list of (class_name, image rows)
    """
    rng = np.random.default_rng(seed)
    out = []
    for c, members in _by_class(images, class_of, class_order).items():
        perm = rng.permutation(len(members))
        shuffled = [members[i] for i in perm]
        for start in range(0, len(shuffled), group_size):
            out.append((c, shuffled[start : start + group_size]))
    return out


def make_own_groups(
    images: Sequence[Mapping[str, Any]],
    class_of: Mapping[int, str],
    group_size: int = 4,
    seed: int = 0,
    class_order: Sequence[str] = (),
) -> list[tuple[str, Mapping[str, Any], list[Mapping[str, Any]]]]:
    """One group per image (the ``per-image`` mode, as the official LatteCLIP): the image first, then
    ``group_size - 1`` other images of its class drawn at random (fewer when the class is smaller).

    The draw for an image depends only on ``seed``, its id and its class's members, so adding images of
    other classes changes no group.

    Returns
    -------
    list of (class_name, the image's row, the group's rows with the image first)
    """
    if int(group_size) < 1:
        raise InvalidInputError(f"group_size must be at least 1, got {group_size}")
    out = []
    for c, members in _by_class(images, class_of, class_order).items():
        members = sorted(members, key=lambda m: int(m["id"]))
        for im in members:
            others = [m for m in members if m is not im]
            rng = np.random.default_rng([int(seed), int(im["id"])])
            k = min(int(group_size) - 1, len(others))
            picked = rng.choice(len(others), size=k, replace=False) if k else []
            out.append((c, im, [im, *(others[int(i)] for i in picked)]))
    return out


def _by_class(
    images: Sequence[Mapping[str, Any]], class_of: Mapping[int, str], class_order: Sequence[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """Images by class, classes in ``class_order`` first, then the rest by name; images without a class dropped."""
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for im in images:
        c = class_of.get(int(im["id"]))
        if c is not None:
            by_class.setdefault(str(c), []).append(im)
    order = [c for c in class_order if c in by_class] + sorted(c for c in by_class if c not in set(class_order))
    return {c: by_class[c] for c in order}


def group_key(shas: Sequence[str]) -> str:
    """Stable id of a group: sha256 of its images' sorted sha256s (first 16 hex digits)."""
    return hashlib.sha256(",".join(sorted(shas)).encode()).hexdigest()[:16]


def pseudo_classes(project: Project) -> dict[int, str]:
    """``image_id → class name``: the top-1 class of the active labeling run (the zero-shot pseudo-labels that
    prompts and groups use); empty when there is no finished labeling run."""
    return {i: c for i, (c, _) in pseudo_top1(project).items() if c is not None}


# --- prompts ------------------------------------------------------------------------------------------------------


def caption_prompts(project: Project) -> dict[str, str]:
    """The project's per-image and group prompts: ``{"caption", "group"}`` (the saved ones, else the defaults
    :data:`~labeler.describe.prompts.CAPTION_PROMPT` and :data:`~labeler.describe.prompts.GROUP_PROMPT`)."""
    defaults = {"caption": CAPTION_PROMPT, "group": GROUP_PROMPT}
    out = {}
    for name, key in PROMPT_KEYS.items():
        saved = project.get_meta(key)
        out[name] = saved if isinstance(saved, str) and saved.strip() else defaults[name]
    return out


def set_caption_prompts(project: Project, caption: str | None = None, group: str | None = None) -> dict[str, str]:
    """Save the project's per-image (``caption``) and/or group prompt; None leaves one as it is, an empty
    string brings back the default. Returns :func:`caption_prompts`.

    Raises
    ------
    InvalidInputError
        A prompt that is not text, or longer than 2,000 characters.
    """
    for name, text in (("caption", caption), ("group", group)):
        if text is None:
            continue
        if not isinstance(text, str):
            raise InvalidInputError(f"the {name} prompt must be text, got {type(text).__name__}")
        if len(text) > 2000:
            raise InvalidInputError(f"the {name} prompt is {len(text)} characters long: keep it under 2,000")
        project.set_meta(PROMPT_KEYS[name], text.strip() or None)
    return caption_prompts(project)


# --- requests -----------------------------------------------------------------------------------------------------


def caption_requests(
    images: Sequence[Mapping[str, Any]],
    *,
    per_image: bool = True,
    groups: bool = False,
    group_mode: str = "shared",
    group_size: int = 4,
    per_image_prompt: str = CAPTION_PROMPT,
    group_prompt: str = GROUP_PROMPT,
    class_of: Mapping[int, str] | None = None,
    class_order: Sequence[str] = (),
    temperature: float = 0.2,
    max_tokens: int = 80,
    seed: int = 0,
    cell: int | None = None,
    gap: int | None = None,
) -> list[Request]:
    """The requests :func:`caption_images` sends (images load lazily, grids are tiled only when sent).

    Each request's ``meta["kind"]`` is the caption kind it writes (``image``, ``group``, ``group-own``) and
    ``meta["image_ids"]`` the images that get its answer. ``cell``/``gap``: the grid's cell side and gap in
    pixels (default: :data:`GRIDS` of the group mode).
    """
    if group_mode not in GROUP_MODES:
        raise InvalidInputError(f"group mode {group_mode!r} is not one of {', '.join(GROUP_MODES)}")
    class_of = class_of or {}
    cell = int(cell or GRIDS[group_mode][0])
    gap = int(GRIDS[group_mode][1] if gap is None else gap)
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
                    meta={"class_name": c, "image_ids": [int(im["id"])], "kind": "image"},
                )
            )
    if groups:
        if group_mode == "shared":
            found = [
                (c, members, members) for c, members in make_groups(images, class_of, group_size, seed, class_order)
            ]
        else:
            found = [
                (c, [im], members)
                for c, im, members in make_own_groups(images, class_of, group_size, seed, class_order)
            ]
        kind = GROUP_MODES[group_mode]
        for c, owners, members in found:
            reqs.append(_group_request(c, owners, members, kind, group_prompt, temperature, max_tokens, cell, gap))
    return reqs


def _group_request(c, owners, members, kind, prompt, temperature, max_tokens, cell, gap) -> Request:
    """One grid of ``members`` asked ``prompt``; its answer goes to ``owners`` as ``kind``."""
    shas = [m["sha256"] for m in members]
    paths = [m["path"] for m in members]
    # shared groups are a set (sorted); an own group is the image first, then its draws, in grid order
    subject = "group:" + ",".join(sorted(shas)) if kind == "group" else "group-own:" + ",".join(shas)
    return Request(
        prompt=fill_class(prompt, c, GROUP_PROMPT_NO_CLASS).replace("{k}", str(len(members))),
        images=[lambda paths=paths: tile_grid(paths, cell=cell, gap=gap)],
        temperature=float(temperature),
        max_tokens=int(max_tokens) * 2,
        subject=subject,
        task="group",
        meta={
            "class_name": c,
            "image_ids": [int(m["id"]) for m in owners],
            "kind": kind,
            "group_key": group_key(shas),
        },
    )


def _check_options(backend: Backend, per_image: bool, groups: bool, group_mode: str, group_size, class_of) -> None:
    if not backend.supports_images:
        raise InvalidInputError(
            f"the {backend.name} backend cannot caption images: pick openai (with a vision model), transformers "
            "(with an image-text-to-text model) or template"
        )
    if not per_image and not groups:
        raise InvalidInputError("nothing to do: ask for per-image captions, group captions, or both")
    if group_mode not in GROUP_MODES:
        raise InvalidInputError(f"group_mode must be one of {', '.join(GROUP_MODES)}, got {group_mode!r}")
    if int(group_size) < 1:
        raise InvalidInputError(f"group_size must be at least 1, got {group_size}")
    if groups and not class_of:
        raise NotReadyError(
            "group captions need each image's pseudo-label (label with zero-shot, then caption the groups)",
            hint=Hint("label", option="method", value="zeroshot"),
        )


def _images_with_files(project: Project, image_ids: Sequence[int] | None) -> tuple[list[dict], int]:
    """The chosen images (default: every ok image) whose file exists, and how many were skipped as missing."""
    rows = project.images()
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        rows = [r for r in rows if int(r["id"]) in wanted]
    present = [r for r in rows if os.path.exists(r["path"])]
    if not present:
        raise NotReadyError("no images to caption", hint=Hint("import"))
    return present, len(rows) - len(present)


def caption_images(
    project: Project,
    backend: Backend | str = "template",
    *,
    per_image: bool = True,
    groups: bool = False,
    group_mode: str = "shared",
    group_size: int = 4,
    per_image_prompt: str | None = None,
    group_prompt: str | None = None,
    class_of: Mapping[int, str] | None = None,
    image_ids: Sequence[int] | None = None,
    temperature: float = 0.2,
    max_tokens: int = 80,
    seed: int = 0,
    cell: int | None = None,
    gap: int | None = None,
    refresh: bool = False,
    on_progress: ProgressCallback | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Caption the project's images with a vision backend (a ``caption`` job).

    Answers with nothing usable (refusals, empty or ``null`` content) are neither stored nor
    cached, so a rerun asks again; they are counted in ``empty``. Captions a person edited or
    disabled are kept as they are (counted in ``kept``).

    Parameters
    ----------
    project : Project
    backend : Backend or str
        A backend that takes images (``openai`` with a vision model, ``transformers`` with an
        image-text-to-text model, or ``template``).
    per_image : bool
        One caption per image (``kind="image"``): 1 call per image.
    groups : bool
        Also group descriptions of images sharing a class in ``class_of``, tiled into one grid image.
    group_mode : {"shared", "per-image"}
        ``shared`` (``kind="group"``): the class's images split into groups of ``group_size``, one
        call per group, the answer stored for each member (``1/group_size`` calls per image).
        ``per-image`` (``kind="group-own"``, the official LatteCLIP): each image with ``group_size - 1``
        random others of its class, one call per image.
    group_size : int
        Images per group (4 → a 2×2 grid).
    per_image_prompt : str, optional
        ``{c}`` is replaced by the image's class (``{a}``: with article); images without a class get
        a class-free prompt. Default: the project's saved prompt (:func:`caption_prompts`).
    group_prompt : str, optional
        ``{c}``/``{a}`` as above, ``{k}`` the number of images in the grid. Default: the project's.
    class_of : mapping image_id → class name, optional
        The images' (pseudo-)classes, e.g. :func:`pseudo_classes`. Required for groups.
    image_ids : sequence of int, optional
        Only these images (default: every image whose status is ok).
    temperature, max_tokens
        Sampling settings (part of the cache key; groups get twice ``max_tokens``).
    seed : int
        Shuffles images within a class before grouping (shared), draws the group mates (per-image).
    cell, gap : int, optional
        Grid cell side and gap in pixels (default :data:`GRIDS` of the mode).
    refresh : bool
        Ignore cached answers.
    on_progress : callable(done, total, message), optional
    dry_run : bool
        Only count: ``{"requests", "cached", "new", "images", "groups", "max_new_tokens",
        "calls_per_image"}``, no calls, no writes.
    deadline : float, optional
        Seconds the whole job may take. When they pass it stops (cutting the requests in flight),
        stores the captions that arrived and raises :class:`~labeler.describe.base.DeadlineExceeded`
        saying how far it got; rerunning continues from the cache.

    Returns
    -------
    dict
        ``run_id``, ``requests``, ``cached``, ``sent``, ``captions`` (per-image captions written),
        ``groups`` (group answers written), ``kept`` (edited or disabled captions left as they were),
        ``empty`` (answers with nothing usable, e.g. refusals: nothing written or cached),
        ``missing_files`` (images skipped because their file is gone), ``warning`` (what to do about
        empty answers, or ``""``).

    Raises
    ------
    BackendError
        Every answer was a refusal or empty: nothing was stored or cached.
    DeadlineExceeded
        The deadline passed (the captions that arrived are stored).
    """
    from ..jobs import Job

    backend = get_backend(backend)
    _check_options(backend, per_image, groups, group_mode, group_size, class_of)
    check_deadline(deadline)
    saved = caption_prompts(project)
    per_image_prompt = saved["caption"] if per_image_prompt is None else per_image_prompt
    group_prompt = saved["group"] if group_prompt is None else group_prompt
    class_of = {int(k): str(v) for k, v in (class_of or {}).items()}
    present, missing = _images_with_files(project, image_ids)
    reqs = caption_requests(
        present,
        per_image=per_image,
        groups=groups,
        group_mode=group_mode,
        group_size=int(group_size),
        per_image_prompt=per_image_prompt,
        group_prompt=group_prompt,
        class_of=class_of,
        class_order=project.classes,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        cell=cell,
        gap=gap,
    )
    n_images = sum(r.task == "caption" for r in reqs)
    n_groups = sum(r.task == "group" for r in reqs)
    if dry_run:
        return _preview(project, backend, reqs, refresh, n_images, n_groups, missing, len(present))
    params = {
        **backend.info(),
        "per_image": per_image,
        "groups": groups,
        "group_mode": group_mode if groups else None,
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
        rows, written, empty = _answer_rows(backend, reqs, responses)
        kept = store_captions(project, rows)
        result = {
            "run_id": job.id,
            **stats,
            "captions": written["image"],
            "groups": written["group"] + written["group-own"],
            "kept": kept,
            "empty": empty,
            "missing_files": missing,
            "warning": _empty_warning(empty),
        }
        job.update_metrics(**{k: v for k, v in result.items() if k != "run_id"})
        _raise_if_short(result, stats, written, deadline, empty)
    return result


def _preview(project, backend, reqs, refresh, n_images, n_groups, missing, n_present) -> dict[str, Any]:
    """The dry run's counts: requests, cached, new, and what the new ones may cost (calls, output tokens)."""
    keys = [cache_key(backend, r) for r in reqs]
    found = {} if refresh else cached_responses(project, keys)
    new = [r for r, k in zip(reqs, keys, strict=True) if not (k and k in found)]
    cached = len(reqs) - len(new)
    return {
        "dry_run": True,
        "requests": len(reqs),
        "cached": cached,
        "new": len(reqs) - cached,
        "images": n_images,
        "groups": n_groups,
        "missing_files": missing,
        "calls_per_image": round(len(reqs) / max(1, n_present), 4),
        "max_new_tokens": sum(r.max_tokens * r.n for r in new),  # an upper bound on what the new calls generate
        **backend.info(),
    }


def _answer_rows(backend: Backend, reqs: Sequence[Request], responses) -> tuple[list[dict], dict[str, int], int]:
    """The caption rows of the usable answers, the answers written per kind, and how many answers were empty."""
    t = now()
    rows, empty, written = [], 0, dict.fromkeys(KINDS, 0)
    for r, resp in zip(reqs, responses, strict=True):
        if resp is None:  # not answered before the deadline
            continue
        text = clean_caption(resp.texts[0] if resp.texts else "")
        if not text:
            empty += 1
            continue
        written[r.meta["kind"]] += 1
        for image_id in r.meta["image_ids"]:
            rows.append(
                {
                    "image_id": image_id,
                    "kind": r.meta["kind"],
                    "group_key": r.meta.get("group_key"),
                    "text": text,
                    "backend": backend.name,
                    "model": backend.model,
                    "prompt": r.prompt,
                    "created_at": t,
                    "enabled": 1,
                    "original": None,
                }
            )
    return rows, written, empty


def store_captions(project: Project, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write caption rows, each replacing the image's caption of its kind unless a person edited or disabled
    that one (then it stays). Returns how many rows were kept that way (one transaction)."""
    protected = {
        (int(i), str(k))
        for i, k in project.db.execute("select image_id, kind from captions where original is not null or enabled = 0")
    }
    todo = [dict(r) for r in rows if (int(r["image_id"]), str(r["kind"])) not in protected]
    with project.db.conn:
        for start in range(0, len(todo), 1000):
            chunk = todo[start : start + 1000]
            for row in chunk:  # (image_id, kind) is unique: the new caption replaces the old
                project.db.execute(
                    "delete from captions where image_id = ? and kind = ?", [row["image_id"], row["kind"]]
                )
            project.db["captions"].insert_all(chunk)
    return len(rows) - len(todo)


def _empty_warning(empty: int) -> str:
    if not empty:
        return ""
    return (
        f"{empty} answer{'s were' if empty != 1 else ' was'} refusals or empty: nothing stored for "
        f"{'them' if empty != 1 else 'it'} (not cached: a rerun asks again); try another model or prompt"
    )


def _raise_if_short(result: dict, stats: dict, written: dict, deadline, empty: int) -> None:
    """DeadlineExceeded when answers are missing, BackendError when every answer was empty."""
    if stats["unanswered"]:
        groups = written["group"] + written["group-own"]
        raise DeadlineExceeded(
            f"stopped at the {float(deadline):g} s deadline after {stats['cached'] + stats['sent']} of "
            f"{stats['requests']} answers ({stats['cached']} from cache); {written['image']} captions and "
            f"{groups} group captions stored. The answers so far are cached: rerun the same step "
            "(with a longer deadline, or none) to finish" + (f". Also: {result['warning']}" if empty else ""),
            hint=Hint(option="deadline"),
        )
    if stats["requests"] and empty == stats["requests"]:
        raise BackendError(
            f"all {empty} answers were refusals or empty: nothing stored or cached (a rerun asks again); try "
            "another model (a vision model: gpt-4o-mini, llava, qwen2.5vl) or another prompt",
            hint=Hint(option="prompt"),
        )


# --- reading and editing ------------------------------------------------------------------------------------------

_COLUMNS = ("image_id", "rel_path", "kind", "group_key", "text", "backend", "model", "prompt", "created_at")


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInputError(f"caption kind {kind!r} is not one of {', '.join(map(repr, KINDS))}")
    return kind


def list_captions(
    project: Project,
    kind: str | None = None,
    image_id: int | None = None,
    enabled_only: bool = False,
    image_ids: Sequence[int] | None = None,
) -> list[dict]:
    """Captions by image id, then kind (image, group, group-own): ``{"image_id", "rel_path", "kind", "group_key",
    "text", "backend", "model", "prompt", "created_at", "enabled" (bool), "edited" (bool), "original"}``
    (``original``: the model's text before a person's edit, None when not edited). ``image_ids``: only these
    images (e.g. a gallery page)."""
    where, args = [], []
    if image_ids is not None:
        ids = [int(i) for i in image_ids][:10_000]
        where.append(f"c.image_id in ({', '.join('?' * len(ids)) or 'null'})")
        args.extend(ids)
    if kind is not None:
        where.append("c.kind = ?")
        args.append(_check_kind(kind))
    if image_id is not None:
        where.append("c.image_id = ?")
        args.append(int(image_id))
    if enabled_only:
        where.append("c.enabled = 1")
    sql = (
        "select " + ", ".join(("i." if k == "rel_path" else "c.") + k for k in _COLUMNS) + ", c.enabled, c.original "
        "from captions c join images i on i.id = c.image_id"
        + (" where " + " and ".join(where) if where else "")
        + " order by c.image_id, case c.kind when 'image' then 0 when 'group' then 1 else 2 end, c.kind"
    )
    out = []
    for row in project.db.execute(sql, args):
        d = dict(zip(_COLUMNS, row[: len(_COLUMNS)], strict=True))
        enabled, original = row[len(_COLUMNS) :]
        d.update(enabled=bool(enabled), edited=original is not None and original != d["text"], original=original)
        out.append(d)
    return out


def caption_counts(project: Project) -> dict[str, Any]:
    """``{"texts", "images", "by_kind": {kind: n}, "disabled", "edited"}`` over the project's captions."""
    by_kind = dict.fromkeys(KINDS, 0)
    texts = disabled = edited = 0
    for kind, n, off, ed in project.db.execute(
        "select kind, count(*), sum(enabled = 0), sum(original is not null and original != text) "
        "from captions group by kind"
    ):
        by_kind[str(kind)] = int(n)
        texts += int(n)
        disabled += int(off or 0)
        edited += int(ed or 0)
    images = project.db.execute("select count(distinct image_id) from captions").fetchone()[0]
    return {"texts": texts, "images": int(images), "by_kind": by_kind, "disabled": disabled, "edited": edited}


def captions_by_image(project: Project) -> dict[int, dict[str, str]]:
    """``image_id → {kind: text}`` of the **enabled** captions (kinds ``image``, ``group``, ``group-own``,
    present only where written): the texts LatteCLIP fuses. A disabled caption is left out."""
    out: dict[int, dict[str, str]] = {}
    for image_id, kind, text in project.db.execute("select image_id, kind, text from captions where enabled = 1"):
        out.setdefault(int(image_id), {})[kind] = text
    return out


def _caption_row(project: Project, image_id: int, kind: str) -> dict:
    rows = list_captions(project, kind=_check_kind(kind), image_id=int(image_id))
    if not rows:
        raise InvalidInputError(f"image {int(image_id)} has no {kind!r} caption")
    return rows[0]


def set_caption(project: Project, image_id: int, kind: str, text: str) -> dict:
    """Replace an image's caption of ``kind`` with a person's ``text``; the model's text is kept in ``original``
    (on the first edit), and going back to it clears the edit. A rerun of captioning keeps an edited caption.
    Returns the row as :func:`list_captions` gives it.

    Raises
    ------
    InvalidInputError
        Unknown kind, no such caption, empty or overlong text.
    """
    row = _caption_row(project, image_id, kind)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("a caption cannot be empty: disable it instead to leave it out")
    clean = " ".join(text.split())
    if len(clean) > MAX_CAPTION_CHARS:
        raise InvalidInputError(f"the caption is {len(clean)} characters long: keep it under {MAX_CAPTION_CHARS}")
    model_text = row["original"] if row["original"] is not None else row["text"]
    original = None if clean == model_text else model_text
    with project.db.conn:
        project.db.execute(
            "update captions set text = ?, original = ? where image_id = ? and kind = ?",
            [clean, original, int(image_id), kind],
        )
    return _caption_row(project, image_id, kind)


def set_caption_enabled(project: Project, image_id: int, kind: str, enabled: bool) -> dict:
    """Enable or disable an image's caption of ``kind`` (a disabled one, e.g. a hallucination, drops out of
    :func:`captions_by_image` and so of LatteCLIP's fusion; a rerun keeps it disabled). Returns the row."""
    _caption_row(project, image_id, kind)
    with project.db.conn:
        project.db.execute(
            "update captions set enabled = ? where image_id = ? and kind = ?", [int(bool(enabled)), int(image_id), kind]
        )
    return _caption_row(project, image_id, kind)


# --- files --------------------------------------------------------------------------------------------------------


def read_captions_file(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(image, kind, caption)`` rows of a captions file.

    JSON: ``{"image": "caption", ...}`` or ``[{"image": ..., "caption": ..., "kind": ...}, ...]`` (``text``
    may stand for ``caption``); CSV: ``image,caption[,kind]`` with that header (or without one: the first
    two columns). ``image`` is the image's path relative to its import folder, its file name, or its sha256;
    ``kind`` defaults to ``image``.

    Raises
    ------
    InvalidInputError
        Missing or malformed file (the message names the line or item).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"captions file {path} not found")
    ext = path.suffix.lower()
    out: list[tuple[str, str, str]] = []
    if ext == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f'{path} is not valid JSON ({exc}); expected {{"image": "caption"}}') from None
        if isinstance(data, dict):
            for k, v in data.items():
                if not isinstance(v, str):
                    raise InvalidInputError(f"{path}: the caption of {k!r} must be text")
                out.append((str(k), "image", v))
        elif isinstance(data, list):
            for i, item in enumerate(data):
                text = item.get("caption", item.get("text")) if isinstance(item, dict) else None
                if not isinstance(text, str) or "image" not in item:
                    raise InvalidInputError(f'{path}: item {i} must be {{"image": ..., "caption": ...}}')
                out.append((str(item["image"]), str(item.get("kind") or "image"), text))
        else:
            raise InvalidInputError(f'{path}: expected a JSON object {{"image": "caption"}}')
    elif ext in (".csv", ".tsv"):
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f, delimiter="\t" if ext == ".tsv" else ","))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InvalidInputError(f"{path}: not a UTF-8 CSV file ({exc})") from None
        cols = {"image": 0, "caption": 1, "kind": None}
        first = 1
        if rows and {"image", "caption"} <= {h.strip().lower() for h in rows[0]}:
            header = [h.strip().lower() for h in rows[0]]
            cols = {k: header.index(k) if k in header else None for k in cols}
            rows, first = rows[1:], 2
        for lineno, row in enumerate(rows, start=first):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(cols["image"], cols["caption"]):
                raise InvalidInputError(f"{path}, line {lineno}: expected the image and caption columns")
            kind = row[cols["kind"]].strip() if cols["kind"] is not None and len(row) > cols["kind"] else ""
            out.append((row[cols["image"]].strip(), kind or "image", row[cols["caption"]]))
    else:
        raise InvalidInputError(f"{path}: captions files must be .json or .csv, not {ext or 'no extension'!r}")
    for image, kind, _ in out:
        if kind not in KINDS:
            raise InvalidInputError(f"{path}: caption kind {kind!r} of {image!r} is not one of {', '.join(KINDS)}")
    return out


def import_captions(project: Project, path: str | os.PathLike) -> dict[str, Any]:
    """Import captions written elsewhere (e.g. by the official LatteCLIP scripts) from a JSON or CSV file
    (:func:`read_captions_file`); images are matched by relative path, then file name (when unique), then
    sha256. Edited or disabled captions stay as they are.

    Returns
    -------
    dict
        ``imported`` (captions written), ``kept`` (edited/disabled ones left), ``unmatched`` (how many file
        rows named no image of the project), ``examples`` (up to 5 of those names), ``empty`` (rows without
        text), ``summary``.
    """
    path = Path(path)
    entries = read_captions_file(path)
    by_rel, by_name, by_sha = {}, {}, {}
    for r in project.images():
        by_rel[str(r["rel_path"])] = int(r["id"])
        by_name.setdefault(Path(str(r["rel_path"])).name, []).append(int(r["id"]))
        by_sha[str(r["sha256"])] = int(r["id"])
    t = now()
    rows, unmatched, empty = {}, [], 0
    for image, kind, text in entries:
        clean = " ".join(text.split())[:MAX_CAPTION_CHARS]
        name = image.replace("\\", "/")
        found = by_rel.get(name) or by_sha.get(name.lower())
        if found is None and len(by_name.get(Path(name).name, [])) == 1:
            found = by_name[Path(name).name][0]
        if found is None:
            unmatched.append(image)
            continue
        if not clean:
            empty += 1
            continue
        rows[(found, kind)] = {
            "image_id": found,
            "kind": kind,
            "group_key": None,
            "text": clean,
            "backend": "file",
            "model": path.name,
            "prompt": "",
            "created_at": t,
            "enabled": 1,
            "original": None,
        }
    kept = store_captions(project, list(rows.values()))
    imported = len(rows) - kept
    summary = f"{imported} captions imported" + (f", {kept} edited or disabled ones kept" if kept else "")
    if unmatched:
        summary += f"; {len(unmatched)} rows name no image of the project (e.g. {', '.join(unmatched[:3])})"
    if empty:
        summary += f"; {empty} rows had no usable text"
    return {
        "path": str(path),
        "imported": imported,
        "kept": kept,
        "unmatched": len(unmatched),
        "examples": unmatched[:5],
        "empty": empty,
        "summary": summary,
    }
