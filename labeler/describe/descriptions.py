"""Class descriptions: generate (CuPL/NoLA style), list, edit, disable, import, export, and the zero-shot text sets.

Rows live in the ``descriptions`` table. ``source`` says who wrote a sentence:
``llm`` (openai / transformers backends), ``template``, ``file`` (imported) or
``user``. A user's work is never overwritten: regeneration replaces only
*untouched* rows — not written by the user, not edited, still enabled — and
skips sentences the user already has, edited away (``original``) or disabled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import in_chunks, now

from ..errors import Hint, InvalidInputError
from .base import Backend, BackendError, DeadlineExceeded, Request, get_backend
from .cache import check_deadline, count_cached, run_requests
from .offline import FileBackend, write_descriptions_file
from .parse import clean_imported, normalize_key
from .prompts import DESCRIBE_SYSTEM, question_prompts

if TYPE_CHECKING:
    from ..jobs import ProgressCallback
    from ..project import Project

DEFAULT_SAMPLES_PER_PROMPT = 2
DEFAULT_SENTENCES_PER_ANSWER = 5
DEFAULT_MAX_PER_CLASS = 50
MAX_DESCRIPTION_CHARS = 1000
DESCRIPTION_MODES = ("none", "llm", "both")
DEFAULT_TEMPLATES = "simple"  # = labeler.prompts.DEFAULT_TEMPLATES (not imported here: it pulls in torch)


# --- helpers -----------------------------------------------------------------------------------------------------


def _class_rows(project: Project, classes: Sequence[str] | None) -> list[tuple[str, int]]:
    """``(name, id)`` of the chosen classes in project order; unknown names raise InvalidInputError."""
    ids = project.class_ids()
    order = project.classes
    if not order:
        raise InvalidInputError("the project has no classes yet", hint=Hint("classes"))
    if classes is None:
        return [(c, ids[c]) for c in order]
    folded = {c.casefold(): c for c in order}
    out = []
    for c in classes:
        name = c if c in ids else folded.get(str(c).strip().casefold())
        if name is None:
            raise InvalidInputError(f"class {c!r} is not in this project; its classes are: {', '.join(order)}")
        out.append((name, ids[name]))
    return out


def _class_id(project: Project, class_name: str) -> int:
    return _class_rows(project, [class_name])[0][1]


def _row(project: Project, description_id: int) -> dict:
    row = project.db.execute("select * from descriptions where id = ?", [int(description_id)]).fetchone()
    if row is None:
        raise InvalidInputError(f"no description with id {description_id}", hint=Hint("descriptions"))
    cols = [d[0] for d in project.db.execute("select * from descriptions limit 0").description]
    return dict(zip(cols, row, strict=True))


def _check_text(text: str) -> str:
    clean = " ".join(str(text).split())
    if not clean:
        raise InvalidInputError("the description is empty: write a sentence describing the class")
    if len(clean) > MAX_DESCRIPTION_CHARS:
        raise InvalidInputError(
            f"the description is {len(clean)} characters long; keep it under {MAX_DESCRIPTION_CHARS}"
        )
    return clean


def _store_class_sentences(
    project: Project,
    class_id: int,
    sentences: Sequence[tuple[str, str | None]],
    *,
    source: str,
    backend: str | None,
    model: str | None,
    replace: bool,
) -> dict[str, int]:
    """Write one class's new sentences, protecting the user's rows. Returns counts.

    Parameters
    ----------
    sentences : sequence of (text, prompt)
    replace : bool
        True: untouched rows not in the new set are deleted (regeneration). False: only add.
    """
    db = project.db
    rows = [
        dict(zip(("id", "text", "source", "enabled", "edited", "original"), r, strict=True))
        for r in db.execute(
            "select id, text, source, enabled, edited, original from descriptions where class_id = ?", [class_id]
        )
    ]
    protected = [r for r in rows if r["source"] == "user" or r["edited"] or not r["enabled"]]
    untouched = [r for r in rows if r not in protected]
    blocked = {normalize_key(r["text"]) for r in protected}
    blocked |= {normalize_key(r["original"]) for r in protected if r["original"]}
    new: dict[str, tuple[str, str | None]] = {}
    for text, prompt in sentences:
        key = normalize_key(text)
        if key and key not in blocked and key not in new:
            new[key] = (text, prompt)
    counts = {"added": 0, "kept": 0, "removed": 0, "protected": len(protected)}
    if not new and replace:  # nothing usable came back: keep what is there
        counts["kept"] = len(untouched)
        return counts
    existing = {normalize_key(r["text"]): r for r in untouched}
    t = now()
    with db.conn:
        if replace:
            gone = [r["id"] for k, r in existing.items() if k not in new]
            for chunk, marks in in_chunks(gone):
                db.execute(f"delete from descriptions where id in ({marks})", chunk)
            counts["removed"] = len(gone)
        to_insert = []
        for key, (text, prompt) in new.items():
            if key in existing:
                counts["kept"] += 1
                continue
            to_insert.append(
                {
                    "class_id": class_id,
                    "text": text,
                    "source": source,
                    "backend": backend,
                    "model": model,
                    "prompt": prompt,
                    "enabled": 1,
                    "edited": 0,
                    "created_at": t,
                }
            )
        if to_insert:
            db["descriptions"].insert_all(to_insert)
        counts["added"] = len(to_insert)
        if not replace:
            counts["kept"] = len(untouched)
    return counts


def _interleave(per_answer: Sequence[Sequence[tuple[str, str | None]]], limit: int) -> list[tuple[str, str | None]]:
    """Round-robin over answers (so every question form is represented), deduplicated, at most ``limit``."""
    out, seen = [], set()
    depth = max((len(a) for a in per_answer), default=0)
    for i in range(depth):
        for answer in per_answer:
            if i < len(answer):
                key = normalize_key(answer[i][0])
                if key not in seen:
                    seen.add(key)
                    out.append(answer[i])
                    if len(out) >= limit:
                        return out
    return out


def _names(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unusable_message(backend: Backend, unusable: int, empty: Sequence[str]) -> str:
    """What to tell the user about answers that gave nothing usable (``""`` when there were none)."""
    if not unusable and not empty:
        return ""
    if isinstance(backend, FileBackend):
        return f"{backend.path} has no usable description for: {_names(empty)}" if empty else ""
    text = f"{unusable} answer{'s were' if unusable != 1 else ' was'} refusals or empty"
    if empty:
        text += f": nothing stored for {_names(empty)}"
    else:
        text += " (not cached: a rerun asks again)"
    return text + "; try another model or prompt"


# --- generation --------------------------------------------------------------------------------------------------


def description_requests(
    backend: Backend,
    classes: Sequence[str],
    *,
    samples_per_prompt: int = DEFAULT_SAMPLES_PER_PROMPT,
    sentences_per_answer: int = DEFAULT_SENTENCES_PER_ANSWER,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    domain: str | None = None,
    question_forms: Sequence[str] | None = None,
    temperature: float = 0.9,
    max_tokens: int = 400,
) -> list[Request]:
    """The requests :func:`generate_descriptions` sends: question forms × samples per class
    (one request per class for the ``template`` and ``file`` backends)."""
    reqs = []
    for c in classes:
        meta = {"class_name": c, "count": int(max_per_class), "domain": domain}
        if not backend.sampling:
            reqs.append(
                Request(prompt=f"Describe what {c} looks like.", subject=f"class:{c}", task="describe", meta=meta)
            )
            continue
        system = DESCRIBE_SYSTEM.replace("{k}", str(int(sentences_per_answer))).replace("{n}", c)
        for q, question in enumerate(question_prompts(c, domain, question_forms)):
            for s in range(int(samples_per_prompt)):
                reqs.append(
                    Request(
                        prompt=question,
                        system=system,
                        n=1,
                        temperature=float(temperature),
                        max_tokens=int(max_tokens),
                        sample=s,
                        subject=f"class:{c}",
                        task="describe",
                        meta={**meta, "question": q},
                    )
                )
    return reqs


def generate_descriptions(
    project: Project,
    backend: Backend | str = "template",
    *,
    classes: Sequence[str] | None = None,
    samples_per_prompt: int = DEFAULT_SAMPLES_PER_PROMPT,
    sentences_per_answer: int = DEFAULT_SENTENCES_PER_ANSWER,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    domain: str | None = None,
    question_forms: Sequence[str] | None = None,
    temperature: float = 0.9,
    max_tokens: int = 400,
    refresh: bool = False,
    on_progress: ProgressCallback | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Write class descriptions with a backend, CuPL/NoLA style (a ``describe`` job).

    Every class gets each question form ("Describe what a {c} looks like.", "How can you identify
    a {c}?", ...) ``samples_per_prompt`` times; answers are parsed into sentences
    (:func:`~labeler.describe.parse.parse_sentences`), interleaved across questions and
    deduplicated, up to ``max_per_class``. The defaults (6 forms × 2 samples × 5 sentences)
    give about 50 sentences per class, like NoLA's files.

    Answers are cached (``llm_cache``), so a rerun — or a resumed, cancelled run — sends only
    what is missing. Regeneration replaces untouched sentences only; the user's additions,
    edits and disables stay (see the module doc). Answers with no usable sentence (refusals,
    empty or ``null`` content) are not cached, so a rerun asks again; they are counted in
    ``unusable`` and the classes left without a sentence in ``empty_classes``.

    Parameters
    ----------
    project : Project
    backend : Backend or str
        A backend from :func:`~labeler.describe.get_backend`, or a name (default options).
    classes : sequence of str, optional
        Only these classes (default: all).
    samples_per_prompt : int
        Samples per question form.
    sentences_per_answer : int
        Sentences asked for in each answer.
    max_per_class : int
        Keep at most this many new sentences per class.
    domain : str, optional
        Domain hint, e.g. ``"satellite photo"``, ``"texture"``, ``"drawing"``.
    question_forms : sequence of str, optional
        Your own questions with ``{c}`` (class with article), ``{n}`` (bare name), ``{d}`` (domain).
    temperature, max_tokens
        Sampling settings (part of the cache key).
    refresh : bool
        Ignore cached answers and ask again.
    on_progress : callable(done, total, message), optional
    dry_run : bool
        Only count: return ``{"requests", "cached", "new"}`` without calling the backend or writing.
    deadline : float, optional
        Seconds the whole job may take. When they pass it stops (cutting the requests in flight),
        writes the descriptions of the classes whose answers all arrived, and raises
        :class:`~labeler.describe.base.DeadlineExceeded` saying how far it got; the answers so far
        are cached, so rerunning continues from there.

    Returns
    -------
    dict
        ``run_id``, ``requests``, ``cached``, ``sent``, ``unusable`` (answers with no usable sentence),
        ``added``, ``removed``, ``kept``, per-class counts in ``classes``, ``empty_classes`` (no usable
        sentence came back; their rows were kept) and ``warning`` (what to do about them, or ``""``).

    Raises
    ------
    BackendError
        No answer had a usable sentence (all refusals or empty): nothing was stored or cached.
    DeadlineExceeded
        The deadline passed (what was finished is kept).
    """
    from ..jobs import Job

    backend = get_backend(backend)
    if int(samples_per_prompt) < 1 or int(sentences_per_answer) < 1 or int(max_per_class) < 1:
        raise InvalidInputError("samples_per_prompt, sentences_per_answer and max_per_class must be at least 1")
    check_deadline(deadline)
    chosen = _class_rows(project, classes)
    names = [c for c, _ in chosen]
    reqs = description_requests(
        backend,
        names,
        samples_per_prompt=samples_per_prompt,
        sentences_per_answer=sentences_per_answer,
        max_per_class=max_per_class,
        domain=domain,
        question_forms=question_forms,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    if dry_run:
        cached = 0 if refresh else count_cached(project, backend, reqs)
        return {
            "dry_run": True,
            "requests": len(reqs),
            "cached": cached,
            "new": len(reqs) - cached,
            "classes": len(names),
            **backend.info(),
        }
    params = {
        **backend.info(),
        "classes": names,
        "samples_per_prompt": samples_per_prompt,
        "sentences_per_answer": sentences_per_answer,
        "max_per_class": max_per_class,
        "domain": domain,
        "question_forms": list(question_forms) if question_forms else None,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "requests": len(reqs),
    }
    with Job.start(project, "describe", method=backend.name, params=params, on_progress=on_progress) as job:
        responses, stats = run_requests(
            project,
            backend,
            reqs,
            job=job,
            refresh=refresh,
            message="describing classes",
            usable=lambda text: bool(backend.sentences_from(text)),
            deadline=deadline,
        )
        per_class: dict[str, list[list[tuple[str, str | None]]]] = {c: [] for c in names}
        unanswered: set[str] = set()
        for r, resp in zip(reqs, responses, strict=True):
            if resp is None:
                unanswered.add(r.meta["class_name"])
                continue
            if backend.sampling:
                prompt = r.prompt
            else:
                prompt = str(backend.path) if isinstance(backend, FileBackend) else f"{backend.name} backend"
            for text in resp.texts:
                per_class[r.meta["class_name"]].append([(s, prompt) for s in backend.sentences_from(text)])
        result: dict[str, Any] = {"run_id": job.id, **stats, "added": 0, "removed": 0, "kept": 0, "classes": {}}
        empty = []
        for name, cid in chosen:
            if name in unanswered:  # stopped at the deadline: this class's rows stay as they are
                continue
            sentences = _interleave(per_class[name], int(max_per_class))
            if not sentences:
                empty.append(name)
            counts = _store_class_sentences(
                project, cid, sentences, source=backend.source, backend=backend.name, model=backend.model, replace=True
            )
            result["classes"][name] = counts
            for k in ("added", "removed", "kept"):
                result[k] += counts[k]
        result["empty_classes"] = empty
        result["warning"] = unusable_message(backend, stats["unusable"], empty)
        result["summary"] = (
            f"{backend.work_text(stats, len(chosen))}; {result['added']} descriptions added, "
            f"{result['removed']} replaced, {result['kept']} kept"
        )
        job.update_metrics(**{k: v for k, v in result.items() if k not in ("run_id",)})
        if unanswered:
            done = len(chosen) - len(unanswered)
            raise DeadlineExceeded(
                f"stopped at the {float(deadline):g} s deadline after {stats['cached'] + stats['sent']} of "
                f"{stats['requests']} answers ({stats['cached']} from cache); descriptions written for {done} of "
                f"{len(chosen)} classes, not yet for {_names(sorted(unanswered, key=names.index))}. The answers so far "
                "are cached: rerun the same step (with a longer deadline, or none) to finish"
                + (f". Also: {result['warning']}" if result["warning"] else "")
            )
        if reqs and len(empty) == len(chosen):
            raise BackendError(
                (result["warning"] or f"no usable description came back for {_names(empty)}")
                + " (nothing was stored or cached, so a rerun asks again)"
            )
    return result


# --- reading and editing -----------------------------------------------------------------------------------------


def list_descriptions(project: Project, class_name: str | None = None, enabled_only: bool = False) -> list[dict]:
    """Descriptions in class order, then id: ``{"id", "class", "class_idx", "text", "source", "backend",
    "model", "prompt", "enabled", "edited", "original", "created_at"}``."""
    where, args = [], []
    if class_name is not None:
        where.append("d.class_id = ?")
        args.append(_class_id(project, class_name))
    if enabled_only:
        where.append("d.enabled = 1")
    sql = (
        "select d.id, c.name, c.idx, d.text, d.source, d.backend, d.model, d.prompt, d.enabled, d.edited, "
        "d.original, d.created_at from descriptions d join classes c on c.id = d.class_id"
        + (" where " + " and ".join(where) if where else "")
        + " order by c.idx, d.id"
    )
    keys = ("id", "class", "class_idx", "text", "source", "backend", "model", "prompt", "enabled", "edited",
            "original", "created_at")  # fmt: skip
    out = []
    for row in project.db.execute(sql, args):
        d = dict(zip(keys, row, strict=True))
        d["enabled"] = bool(d["enabled"])
        d["edited"] = bool(d["edited"])
        out.append(d)
    return out


def descriptions_by_class(project: Project, enabled_only: bool = True) -> dict[str, list[str]]:
    """``class → texts`` for every class (in class order; classes without descriptions map to [])."""
    out: dict[str, list[str]] = {c: [] for c in project.classes}
    for d in list_descriptions(project, enabled_only=enabled_only):
        out[d["class"]].append(d["text"])
    return out


def add_description(project: Project, class_name: str, text: str) -> int:
    """Add the user's own sentence to a class (``source="user"``); returns its id.

    Raises
    ------
    InvalidInputError
        Unknown class, empty or too long text, or the class already has this sentence.
    """
    cid = _class_id(project, class_name)
    clean = _check_text(text)
    key = normalize_key(clean)
    for did, existing in project.db.execute("select id, text from descriptions where class_id = ?", [cid]):
        if normalize_key(existing) == key:
            raise InvalidInputError(
                f"class {class_name!r} already has this description (id {did}); edit or enable that one instead"
            )
    with project.db.conn:
        return int(
            project.db["descriptions"]
            .insert(
                {
                    "class_id": cid,
                    "text": clean,
                    "source": "user",
                    "backend": None,
                    "model": None,
                    "prompt": None,
                    "enabled": 1,
                    "edited": 0,
                    "created_at": now(),
                }
            )
            .last_pk
        )


def edit_description(project: Project, description_id: int, text: str) -> dict:
    """Replace a description's text (marks it ``edited``, remembers the first ``original``); returns the row."""
    row = _row(project, description_id)
    clean = _check_text(text)
    if clean != row["text"]:
        original = row.get("original") or (row["text"] if row["source"] != "user" else None)
        with project.db.conn:
            project.db["descriptions"].update(row["id"], {"text": clean, "edited": 1, "original": original})
    return _row(project, description_id)


def set_description_enabled(project: Project, description_id: int, enabled: bool) -> dict:
    """Enable or disable a description. A disabled sentence is kept (and stays disabled) across regeneration."""
    row = _row(project, description_id)
    with project.db.conn:
        project.db["descriptions"].update(row["id"], {"enabled": int(bool(enabled))})
    return _row(project, description_id)


def delete_description(project: Project, description_id: int) -> None:
    """Delete a description. A deleted model sentence may come back when descriptions are regenerated:
    disable it instead to keep it out."""
    row = _row(project, description_id)
    with project.db.conn:
        project.db.execute("delete from descriptions where id = ?", [row["id"]])


# --- files -------------------------------------------------------------------------------------------------------


def import_descriptions(project: Project, path: str | os.PathLike, replace: bool = False) -> dict[str, Any]:
    """Import descriptions from JSON (``{"class": ["sentence", ...]}``, CuPL/NoLA files as they are) or CSV
    (``class,description``); class names match exactly, else ignoring case.

    Parameters
    ----------
    replace : bool
        False: add the file's sentences (skipping ones the class already has). True: like
        regeneration — untouched rows are replaced; the user's own, edited and disabled rows stay.

    Returns
    -------
    dict
        ``added``, ``removed``, ``kept``, ``dropped`` (lines of the file not imported) and
        ``dropped_reasons`` (those per reason: ``duplicate``, ``fragment``, ``empty``; see
        :func:`~labeler.describe.parse.clean_imported`), ``classes`` (per class counts), ``unknown_classes``
        (in the file, not in the project), ``missing_classes`` (in the project, not in the file) and
        ``summary`` (one sentence saying all that; :func:`import_summary`).
    """
    fb = FileBackend(path)
    chosen = _class_rows(project, None)
    folded = {c.casefold() for c, _ in chosen}
    unknown = [c for c in fb.data if c.casefold() not in folded]
    result: dict[str, Any] = {"path": str(path), "added": 0, "removed": 0, "kept": 0, "dropped": 0, "classes": {}}
    reasons: dict[str, int] = {}
    missing = []
    for name, cid in chosen:
        key = name if name in fb.data else fb._folded.get(name.casefold())
        if key is None:
            missing.append(name)
            continue
        sentences, dropped = clean_imported(fb.data[key], reasons=reasons)
        result["dropped"] += dropped
        counts = _store_class_sentences(
            project,
            cid,
            [(s, str(path)) for s in sentences],
            source="file",
            backend="file",
            model=fb.model,
            replace=replace,
        )
        result["classes"][name] = counts
        for k in ("added", "removed", "kept"):
            result[k] += counts[k]
    if not result["classes"]:
        raise InvalidInputError(
            f"{path} has no descriptions for any class of this project (file classes: "
            f"{', '.join(list(fb.data)[:10]) or 'none'}; project classes: {', '.join(c for c, _ in chosen)})"
        )
    result["dropped_reasons"] = {k: reasons[k] for k in _DROP_WORDS if reasons.get(k)}
    result["unknown_classes"] = unknown
    result["missing_classes"] = missing
    result["summary"] = import_summary(result)
    return result


#: How :func:`import_summary` names each reason a file's line was not imported.
_DROP_WORDS = {
    "duplicate": "repeated an earlier line of the same class",
    "fragment": "had fewer than two words",
    "empty": "were blank or had no letters",
}


def import_summary(result: dict[str, Any]) -> str:
    """One sentence on an :func:`import_descriptions` result: what was added and replaced, what was dropped
    and why, and the classes the file and the project do not share."""
    parts = [f"{result.get('added', 0)} descriptions added, {result.get('removed', 0)} replaced"]
    if result.get("kept"):
        parts.append(f"{result['kept']} already there")
    text = ", ".join(parts)
    reasons = result.get("dropped_reasons") or {}
    if result.get("dropped"):
        why = "; ".join(f"{n} {_DROP_WORDS.get(k, k)}" for k, n in reasons.items())
        text += f". {result['dropped']} lines of the file were not imported" + (f": {why}" if why else "")
    if result.get("unknown_classes"):
        text += f". Not in the project (ignored): {', '.join(result['unknown_classes'][:10])}"
    if result.get("missing_classes"):
        text += f". Not in the file: {', '.join(result['missing_classes'][:10])}"
    return text + "."


def export_descriptions(project: Project, path: str | os.PathLike, enabled_only: bool = True) -> dict[str, Any]:
    """Write descriptions to JSON (``{"class": [...]}``, every class) or CSV (``class,description``) by extension.

    Returns ``{"path", "classes", "descriptions"}``.
    """
    data = descriptions_by_class(project, enabled_only=enabled_only)
    out = write_descriptions_file(path, data)
    return {"path": str(Path(out)), "classes": len(data), "descriptions": sum(len(v) for v in data.values())}


# --- what zero-shot embeds ---------------------------------------------------------------------------------------


def class_texts_report(
    project: Project,
    mode: str = "both",
    templates: str | Sequence[str] = "simple",
    classes: Sequence[str] | None = None,
) -> tuple[list[list[str]], dict[str, Any]]:
    """The texts per class the zero-shot classifier embeds, and a report for the run record.

    Parameters
    ----------
    mode : {"none", "llm", "both"}
        ``none``: prompt templates only. ``llm``: the class's enabled descriptions (a class with none
        falls back to templates, listed in the report). ``both``: templates + enabled descriptions.
    templates : str or sequence of str
        A template set name or format strings (see :func:`labeler.prompts.class_prompts`).
    classes : sequence of str, optional
        Class order (default: the project's).

    Returns
    -------
    (texts, report)
        ``texts[i]`` for class ``i``; ``report`` = ``{"descriptions", "descriptions_per_class",
        "fallback_classes", "texts_per_class", "message"}``.
    """
    from ..prompts import class_prompts  # imports open_clip (and torch): only when needed

    if mode not in DESCRIPTION_MODES:
        raise InvalidInputError(f"descriptions mode {mode!r} is not one of {', '.join(DESCRIPTION_MODES)}")
    names = list(classes) if classes is not None else project.classes
    by_class = descriptions_by_class(project, enabled_only=True) if mode != "none" else {}
    texts, fallback, counts = [], [], {}
    for c in names:
        desc = by_class.get(c, [])
        counts[c] = len(desc)
        if mode == "none":
            texts.append(class_prompts(c, templates))
        elif mode == "llm":
            if desc:
                texts.append(list(desc))
            else:
                fallback.append(c)
                texts.append(class_prompts(c, templates))
        else:
            texts.append(class_prompts(c, templates) + list(desc))
    message = ""
    if mode == "llm" and fallback:
        message = (
            f"{len(fallback)} class(es) have no enabled descriptions and use prompt templates instead: "
            f"{', '.join(fallback[:10])}{' ...' if len(fallback) > 10 else ''} (generate descriptions for them)"
        )
    elif mode == "both" and not any(counts.values()):
        message = "no class has enabled descriptions: only prompt templates are used (generate descriptions first)"
    report = {
        "descriptions": mode,
        "descriptions_per_class": counts,
        "fallback_classes": fallback,
        "texts_per_class": [len(t) for t in texts],
        "message": message,
    }
    return texts, report


def class_texts(
    project: Project,
    mode: str = "both",
    templates: str | Sequence[str] = "simple",
    classes: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[list[str]]:
    """Texts per class for the zero-shot classifier (see :func:`class_texts_report`); ``warn`` receives the
    fallback message, if any."""
    texts, report = class_texts_report(project, mode, templates, classes)
    if report["message"] and warn is not None:
        warn(report["message"])
    return texts
