"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint.

OpenAI itself, Ollama (``http://localhost:11434/v1``), vLLM (``http://localhost:8000/v1``),
LM Studio (``http://localhost:1234/v1``) and others speak the same protocol:
``POST {base_url}/chat/completions``. Images travel as base64 ``data:`` URLs in
``image_url`` content parts, which vision models of all four accept.

Requests run on a bounded thread pool (``max_workers``); 429, 5xx, dropped
connections and timeouts are retried with exponential backoff and jitter
(``Retry-After`` honoured); everything else becomes a :class:`~labeler.errors.LabelerError`
whose message says what to fix.

``timeout`` is a *total* limit per try — connecting, sending and reading the whole
answer — however slowly the bytes arrive: httpx's own timeouts restart with every
byte read (so a server dripping one byte a second would never time out), so each
try runs on an :class:`httpx.AsyncClient` in one background event loop and is cut
by :func:`asyncio.wait_for`, which closes its connection. A job deadline
(:attr:`Backend.deadline`) cuts tries and retry waits the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ..errors import Hint, InvalidInputError, ModelUnavailableError
from .base import Backend, BackendError, DeadlineExceeded, Request, Response, image_data_url

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_IMAGE_WORDS = ("image", "vision", "multimodal", "multi-modal", "modality", "modalities")


def _error_message(resp: httpx.Response) -> str:
    """The server's error text (OpenAI ``{"error": {"message"}}``, Ollama, vLLM, FastAPI shapes) or the body start."""
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text[:300].split())
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if err:
            return " ".join(str(err)[:300].split())
    return " ".join(str(data)[:300].split())


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


class _Stopped(BackendError):
    """This request was stopped because another one failed (or the job was interrupted)."""


class _EventLoopThread:
    """An asyncio event loop running in a daemon thread, for the backend's async HTTP client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="labeler-llm-io", daemon=True)
        self.thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, LM Studio, ...).

    Parameters
    ----------
    model : str, optional
        Model name as the server knows it (``gpt-4o-mini``, ``llama3.2``, ``qwen2.5vl:7b``);
        default ``$OPENAI_MODEL``.
    base_url : str, optional
        API root ending in ``/v1``; default ``$OPENAI_BASE_URL`` or ``https://api.openai.com/v1``.
    api_key : str, optional
        Default ``$OPENAI_API_KEY``; local servers need none.
    timeout : float
        Seconds one try may take in all (connect + send + the whole answer, however slowly it
        arrives); a try cut by it is retried like other timeouts.
    max_workers : int
        Requests in flight at once.
    max_retries : int
        Retries of one request on 429/5xx/timeouts before giving up.
    backoff : float
        First retry delay in seconds; doubles each retry (with jitter), capped at ``max_backoff``.
    max_backoff : float
        Longest wait between tries, also the cap on ``Retry-After``.
    image_max_side : int
        Images are downscaled to this longer side before upload.
    extra_body : dict, optional
        Extra JSON fields for every request (e.g. ``{"seed": 0}`` or server-specific options).
    """

    name = "openai"
    summary = "any OpenAI-compatible chat endpoint: OpenAI, Ollama, vLLM, LM Studio (--base-url, --model)"
    source = "llm"
    supports_images = True  # the server says whether this model can; a clear error if not

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_workers: int = 4,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        image_max_side: int = 1024,
        extra_body: dict | None = None,
    ):
        self.model = model or os.environ.get("OPENAI_MODEL", "")
        if not self.model:
            raise InvalidInputError(
                "the openai backend needs a model (e.g. gpt-4o-mini for OpenAI, llama3.2 for Ollama): give one "
                "or set OPENAI_MODEL",
                hint=Hint(option="model"),
            )
        base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        if not base.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"base URL {base!r} must start with http:// or https:// (e.g. http://localhost:11434/v1)"
            )
        self.base_url = base
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not self.api_key and base == DEFAULT_BASE_URL:
            raise InvalidInputError(
                "the OpenAI API needs a key: set OPENAI_API_KEY or give an API key; for a local server "
                "(Ollama, vLLM, LM Studio) give its base URL instead, e.g. http://localhost:11434/v1",
                hint=Hint(option="api_key"),
            )
        if int(max_workers) < 1:
            raise InvalidInputError(f"max_workers must be at least 1, got {max_workers}")
        self.timeout = float(timeout)
        self.max_workers = int(max_workers)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.image_max_side = int(image_max_side)
        self.extra_body = dict(extra_body or {})
        self.batch_size = self.max_workers * 4
        if self.timeout <= 0:
            raise InvalidInputError(f"timeout must be more than 0 seconds, got {timeout}")
        self._ever_ok = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: set[concurrent.futures.Future] = set()
        self._io: _EventLoopThread | None = None  # started with the first request
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}

    def close(self) -> None:
        with self._lock:
            io, client = self._io, self._client
            self._io = self._client = None
        if io is None:
            return
        if client is not None:
            try:
                io.submit(client.aclose()).result(10)
            except Exception:  # closing must not hide the error that ended the job
                pass
        io.close()

    # --- transport --------------------------------------------------------------------------------------------------
    def _start_io(self) -> tuple[_EventLoopThread, httpx.AsyncClient]:
        with self._lock:
            if self._io is None or self._client is None:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._io = _EventLoopThread()
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                    headers=headers,
                    limits=httpx.Limits(
                        max_connections=max(10, self.max_workers), max_keepalive_connections=self.max_workers
                    ),
                )
            return self._io, self._client

    def _send(self, body: dict[str, Any], limit: float) -> httpx.Response:
        """POST one try, cut after ``limit`` seconds in all (raises TimeoutError then)."""
        io, client = self._start_io()

        async def post() -> httpx.Response:
            return await asyncio.wait_for(client.post(self.url, json=body), limit)

        fut = io.submit(post())
        with self._lock:
            self._inflight.add(fut)
        try:
            return fut.result(limit + 10)  # wait_for ends it by ``limit``; the margin is for closing the socket
        except concurrent.futures.CancelledError:
            raise _Stopped("stopped because another request failed") from None
        except BaseException:  # TimeoutError, an httpx error, or Ctrl-C while waiting: make sure the try ends
            fut.cancel()
            raise
        finally:
            with self._lock:
                self._inflight.discard(fut)

    def _stop_all(self) -> None:
        """Stop retries and cut the tries in flight (their connections close)."""
        self._stop.set()
        with self._lock:
            inflight = list(self._inflight)
        for fut in inflight:
            fut.cancel()

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded("the job's deadline passed while waiting for the model")

    # --- requests -------------------------------------------------------------------------------------------------
    def complete(self, requests: Sequence[Request]) -> list[Response]:
        """Answer each request; raises BackendError, or :class:`DeadlineExceeded` with the answers that
        did arrive in ``partial`` when the job's deadline cuts the batch."""
        if not requests:
            return []
        self._stop.clear()
        if len(requests) == 1 or self.max_workers == 1:
            out: list[Response | None] = [None] * len(requests)
            try:
                for i, r in enumerate(requests):
                    out[i] = self._one(r)
            except DeadlineExceeded as exc:
                exc.partial = out
                raise
            return [r for r in out if r is not None]
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(requests)), thread_name_prefix="labeler-llm")
        futures = [pool.submit(self._one, r) for r in requests]
        try:
            return [f.result() for f in futures]
        except BaseException as exc:
            self._stop_all()  # the others stop retrying and their tries are cut
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, DeadlineExceeded):
                exc.partial = [
                    f.result() if f.done() and not f.cancelled() and f.exception() is None else None for f in futures
                ]
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _messages(self, r: Request) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if r.system:
            messages.append({"role": "system", "content": r.system})
        if r.images:
            parts: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": image_data_url(im, self.image_max_side)}} for im in r.images
            ]
            parts.append({"type": "text", "text": r.prompt})
            messages.append({"role": "user", "content": parts})
        else:
            messages.append({"role": "user", "content": r.prompt})
        return messages

    def _one(self, r: Request) -> Response:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(r),
            "temperature": float(r.temperature),
            "max_tokens": int(r.max_tokens),
        }
        texts: list[str] = []
        while len(texts) < r.n:  # Ollama and others ignore n: ask again for the rest
            want = r.n - len(texts)
            if want > 1:
                body["n"] = want
            else:
                body.pop("n", None)
            data = self._post({**body, **self.extra_body}, bool(r.images))
            got = self._texts(data)
            texts.extend(got)
        return Response(texts[: r.n])

    def _texts(self, data: Any) -> list[str]:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            if isinstance(data, dict) and data.get("error"):
                err = data["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                raise BackendError(f"{self.url} answered with an error: {msg}")
            raise BackendError(
                f"{self.url} answered JSON without 'choices' ({str(data)[:120]!r}): is {self.base_url} an "
                "OpenAI-compatible API? Its base URL usually ends in /v1 (Ollama: http://localhost:11434/v1)"
            )
        out = []
        for c in choices:
            if not isinstance(c, dict):
                raise BackendError(f"{self.url} answered a malformed choice {str(c)[:80]!r}")
            msg = c.get("message")
            out.append(_content_text(msg.get("content") if isinstance(msg, dict) else c.get("text")))
        return out

    def _delay(self, attempt: int, resp: httpx.Response | None = None) -> float:
        after = _retry_after(resp) if resp is not None else None
        if after is not None:
            return min(after, self.max_backoff)
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def _post(self, body: dict[str, Any], has_images: bool) -> Any:
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Stopped("stopped because another request failed")
            deadline = self.deadline
            limit = self.timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._deadline_error()
                limit = min(limit, left)
            resp: httpx.Response | None = None
            try:
                resp = self._send(body, limit)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if not self._ever_ok or attempt >= self.max_retries:
                    raise BackendError(
                        f"cannot reach the OpenAI-compatible endpoint at {self.base_url} ({type(exc).__name__}: "
                        f"{exc}): start the server (e.g. `ollama serve`, or vLLM / LM Studio) or fix the base URL / "
                        "OPENAI_BASE_URL",
                        hint=Hint(option="base_url"),
                    ) from None
            except (httpx.TimeoutException, TimeoutError):
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._deadline_error() from None
                if attempt >= self.max_retries:
                    raise BackendError(
                        f"{self.url} did not answer within {self.timeout:g} s, {attempt + 1} tries (the timeout limits "
                        "each try in all, however slowly the answer arrives): the model may be loading or too slow "
                        "for this load; raise the timeout or lower the workers, then rerun (answers so far are cached)",
                        hint=Hint(option="timeout"),
                    ) from None
            except httpx.HTTPError as exc:  # dropped connection, protocol error
                if attempt >= self.max_retries:
                    raise BackendError(
                        f"{self.url} failed after {attempt + 1} tries: {type(exc).__name__}: {exc}"
                    ) from None
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise BackendError(
                            f"{self.url} answered something that is not JSON ({' '.join(resp.text[:120].split())!r}): "
                            f"is {self.base_url} an OpenAI-compatible API? Its base URL usually ends in /v1 "
                            "(Ollama: http://localhost:11434/v1, vLLM: http://localhost:8000/v1)"
                        ) from None
                    self._ever_ok = True
                    return data
                if resp.status_code not in RETRY_STATUS:
                    raise self._http_error(resp, has_images)
                if attempt >= self.max_retries:
                    what = "rate limited" if resp.status_code == 429 else "server error"
                    raise BackendError(
                        f"{self.url} kept answering HTTP {resp.status_code} ({what}: {_error_message(resp)}) after "
                        f"{attempt + 1} tries: lower the workers or wait, then rerun (answers so far are cached)",
                        hint=Hint(option="workers"),
                    )
            delay = self._delay(attempt, resp)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise self._deadline_error()
            attempt += 1
            if self._stop.wait(delay):
                raise _Stopped("stopped because another request failed")

    def _http_error(self, resp: httpx.Response, has_images: bool) -> Exception:
        status, msg = resp.status_code, _error_message(resp)
        low = msg.lower()
        model_missing = "model" in low and any(w in low for w in ("not found", "does not exist", "unknown", "no such"))
        if status in (401, 403):
            return BackendError(
                f"{self.base_url} refused the request (HTTP {status}: {msg}): set OPENAI_API_KEY or give a valid "
                "API key",
                hint=Hint(option="api_key"),
            )
        if model_missing or (status == 404 and self.model.lower() in low):
            hint = f"`ollama pull {self.model}` for Ollama, or " if ":11434" in self.base_url else ""
            return ModelUnavailableError(
                f"model {self.model!r} is not available at {self.base_url} (HTTP {status}: {msg}): check the name "
                f"({hint}list the served models at {self.base_url}/models) and give it as the model",
                hint=Hint(option="model"),
            )
        if has_images and status in (400, 415, 422, 500, 501) and any(w in low for w in _IMAGE_WORDS):
            return ModelUnavailableError(
                f"model {self.model!r} at {self.base_url} cannot take images (HTTP {status}: {msg}): pick a vision "
                "model, e.g. gpt-4o-mini, llava, llama3.2-vision or qwen2.5vl",
                hint=Hint(option="model"),
            )
        if status == 404:
            return BackendError(
                f"{self.url} answered 404 Not Found ({msg}): check the base URL; OpenAI-compatible servers serve "
                "/v1/chat/completions, so the base URL usually ends in /v1",
                hint=Hint(option="base_url"),
            )
        return BackendError(f"{self.url} answered HTTP {status}: {msg}")
