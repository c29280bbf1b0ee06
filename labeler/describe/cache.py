"""Resume and dedupe model calls through the project's ``llm_cache`` table.

A request's key is the sha256 of its backend, model, messages (system + prompt),
subject (the class, or the sha256 of its images), sample index and sampling
settings. :func:`run_requests` answers cached requests from the table and sends
only the rest, batch by batch, writing each batch's answers before the next one,
so a cancelled or killed job resumes where it stopped and a rerun costs no
new requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from store import now

from .base import Backend, Request, Response

if TYPE_CHECKING:
    from ..jobs import Job
    from ..project import Project


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
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
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


def run_requests(
    project: Project,
    backend: Backend,
    requests: Sequence[Request],
    *,
    job: Job | None = None,
    refresh: bool = False,
    message: str = "",
) -> tuple[list[Response], dict[str, int]]:
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

    Returns
    -------
    (responses, stats)
        Responses in request order; stats ``{"requests", "cached", "sent"}``.
    """
    keys = [cache_key(backend, r) for r in requests]
    found = {} if refresh else cached_responses(project, keys)
    responses: list[Response | None] = [None] * len(requests)
    todo: list[int] = []
    for i, k in enumerate(keys):
        if k and k in found:
            responses[i] = Response(found[k], cached=True)
        else:
            todo.append(i)
    total = len(requests)
    done = total - len(todo)
    if job is not None:
        job.progress(done, total, message or f"{done} of {total} answers cached", force=True)
    batch = max(1, int(backend.batch_size))
    for start in range(0, len(todo), batch):
        idx = todo[start : start + batch]
        answers = backend.complete([requests[i] for i in idx])
        if len(answers) != len(idx):
            raise RuntimeError(f"backend {backend.name} returned {len(answers)} answers for {len(idx)} requests")
        to_store = []
        for i, resp in zip(idx, answers, strict=True):
            responses[i] = resp
            if keys[i]:
                to_store.append((keys[i], list(resp.texts)))
        store_responses(project, backend, to_store)
        done += len(idx)
        if job is not None:
            job.progress(done, total, message or f"{done} of {total} answers")
    stats = {"requests": total, "cached": total - len(todo), "sent": len(todo)}
    return [r for r in responses if r is not None], stats
