"""Resume and dedupe model calls through the project's ``llm_cache`` table.

A request's key is the sha256 of its backend, model, messages (system + prompt),
subject (the class, or the sha256 of its images), sample index and sampling
settings. :func:`run_requests` answers cached requests from the table and sends
only the rest, batch by batch, writing each batch's answers before the next one,
so a cancelled or killed job resumes where it stopped and a rerun costs no
new requests.

Only usable answers are cached: a refusal, an empty answer or ``content: null``
(whatever the caller's ``usable`` test rejects) is counted and left out, so a
rerun — with another model, prompt or server — asks again. Cached answers that
fail the test (written by an older version) are asked again too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from store import in_chunks, now

from ..errors import InvalidInputError
from .base import Backend, DeadlineExceeded, Request, Response

if TYPE_CHECKING:
    from ..jobs import Job
    from ..project import Project


#: Above this many new (uncached) requests, a job waits for a confirmation before it sends them: the CLI's
#: ``describe`` and ``caption`` ask for ``--yes``, the app's Descriptions step for a second click.
CONFIRM_ABOVE = 500


def cache_key(backend: Backend, request: Request) -> str | None:
    """The request's cache key, or None when it cannot be cached (uncacheable backend, images without subject)."""
    if not backend.cacheable or (request.images and not request.subject):
        return None
    payload = [
        backend.name,
        backend.model,
        request.system or "",
        request.prompt,
        request.subject,
        int(request.sample),
        int(request.n),
        round(float(request.temperature), 4),
        int(request.max_tokens),
    ]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


def cached_responses(project: Project, keys: Sequence[str | None]) -> dict[str, list[str]]:
    """``key → texts`` for the keys found in ``llm_cache``."""
    wanted = sorted({k for k in keys if k})
    found: dict[str, list[str]] = {}
    for chunk, marks in in_chunks(wanted):
        for key, response in project.db.execute(f"select key, response from llm_cache where key in ({marks})", chunk):
            try:
                texts = json.loads(response)
            except ValueError:
                continue
            if isinstance(texts, list):
                found[key] = [str(t) for t in texts]
    return found


def store_responses(project: Project, backend: Backend, items: Sequence[tuple[str, list[str]]]) -> None:
    """Write answers to ``llm_cache`` (one transaction)."""
    if not items:
        return
    t = now()
    rows = [
        {"key": k, "backend": backend.name, "model": backend.model, "response": json.dumps(texts), "created_at": t}
        for k, texts in items
    ]
    with project.db.conn:
        project.db["llm_cache"].insert_all(rows, replace=True)


def count_cached(project: Project, backend: Backend, requests: Sequence[Request]) -> int:
    """How many of ``requests`` the cache already answers."""
    keys = [cache_key(backend, r) for r in requests]
    found = cached_responses(project, keys)
    return sum(1 for k in keys if k and k in found)


def clear_cache(project: Project, backend: str | None = None, model: str | None = None) -> int:
    """Delete cached answers (all, or one backend's / model's); returns how many rows went."""
    where, args = [], []
    if backend:
        where.append("backend = ?")
        args.append(backend)
    if model:
        where.append("model = ?")
        args.append(model)
    sql = "delete from llm_cache" + (" where " + " and ".join(where) if where else "")
    with project.db.conn:
        cur = project.db.execute(sql, args)
    return cur.rowcount


def check_deadline(deadline: float | None) -> None:
    """Raise InvalidInputError unless ``deadline`` is None or a positive number of seconds."""
    if deadline is not None and not (float(deadline) > 0):
        raise InvalidInputError(f"the deadline must be a positive number of seconds, got {deadline}")


def _usable_text(text: str) -> bool:
    return bool(text and text.strip())


def run_requests(
    project: Project,
    backend: Backend,
    requests: Sequence[Request],
    *,
    job: Job | None = None,
    refresh: bool = False,
    message: str = "",
    usable: Callable[[str], bool] | None = None,
    deadline: float | None = None,
) -> tuple[list[Response | None], dict[str, int]]:
    """Answer requests from the cache where possible, sending the rest to the backend in batches.

    Parameters
    ----------
    project : Project
    backend : Backend
    requests : sequence of Request
    job : Job, optional
        Gets progress after every batch (and so raises JobCancelled between batches).
    refresh : bool
        Ignore cached answers (new answers still replace them in the cache).
    message : str
        Progress message.
    usable : callable(text) -> bool, optional
        Whether an answer's text is worth keeping (default: not blank). A response with an unusable
        text is not cached (its texts are still returned) and is counted in ``stats["unusable"]``.
    deadline : float, optional
        Seconds the whole call may take. When they pass, sending stops (the backend cuts the
        requests in flight where it can), the answers so far stay cached, and the unanswered
        requests get None in ``responses`` (``stats["unanswered"]`` says how many).

    Returns
    -------
    (responses, stats)
        Responses in request order (None only for requests left unanswered at the deadline);
        stats ``{"requests", "cached", "sent", "unusable", "unanswered"}``: ``sent`` counts the
        answers that came back from the backend in this call, ``unusable`` those of them with an
        unusable text (cached answers are always usable).
    """
    ok = usable or _usable_text
    keys = [cache_key(backend, r) for r in requests]
    found = {} if refresh else cached_responses(project, keys)
    responses: list[Response | None] = [None] * len(requests)
    todo: list[int] = []
    for i, k in enumerate(keys):
        if k and k in found and all(ok(t) for t in found[k]):
            responses[i] = Response(found[k], cached=True)
        else:
            todo.append(i)
    total = len(requests)
    cached = total - len(todo)
    done = cached
    sent = unusable = 0
    until = time.monotonic() + float(deadline) if deadline is not None else None
    if job is not None:
        job.progress(done, total, message or f"{done} of {total} answers cached", force=True)
    batch = max(1, int(backend.batch_size))
    stopped = False
    backend.deadline = until
    try:
        for start in range(0, len(todo), batch):
            if until is not None and time.monotonic() >= until:
                break
            idx = todo[start : start + batch]
            try:
                answers: Sequence[Response | None] = backend.complete([requests[i] for i in idx])
            except DeadlineExceeded as exc:
                answers = exc.partial if exc.partial is not None and len(exc.partial) == len(idx) else [None] * len(idx)
                stopped = True
            if len(answers) != len(idx):
                raise RuntimeError(f"backend {backend.name} returned {len(answers)} answers for {len(idx)} requests")
            to_store = []
            for i, resp in zip(idx, answers, strict=True):
                if resp is None:
                    continue
                responses[i] = resp
                sent += 1
                if not resp.texts or not all(ok(t) for t in resp.texts):
                    unusable += 1
                elif keys[i]:
                    to_store.append((keys[i], list(resp.texts)))
            store_responses(project, backend, to_store)
            done = cached + sent
            if job is not None:
                job.progress(done, total, message or f"{done} of {total} answers")
            if stopped:
                break
    finally:
        backend.deadline = None
    stats = {
        "requests": total,
        "cached": cached,
        "sent": sent,
        "unusable": unusable,
        "unanswered": sum(1 for r in responses if r is None),
    }
    return responses, stats
