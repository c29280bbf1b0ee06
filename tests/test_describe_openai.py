"""The openai backend against a real HTTP server on 127.0.0.1 speaking the chat-completions protocol."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from labeler.describe import (
    BackendError,
    OpenAIBackend,
    Request,
    caption_images,
    captions_by_image,
    count_cached,
    description_requests,
    generate_descriptions,
    get_backend,
    list_descriptions,
)
from labeler.describe.base import DeadlineExceeded
from labeler.errors import InvalidInputError, ModelUnavailableError
from labeler.jobs import list_runs

from .test_describe import add_images


class FakeServer:
    """State of the fake OpenAI server: what it answers, and what it saw."""

    def __init__(self):
        # normal | garbage | timeout | missing_model | no_images | unauthorized | error500 | refuse | null
        self.mode = "normal"
        self.hang_after: int | None = None  # requests after this many wait for `release` (at most 30 s)
        self.release = threading.Event()
        self.fail_first = 0  # answer 429 to this many requests first
        self.retry_after = "0.05"
        self.delay = 0.0  # seconds before answering (timeout mode: longer than the client waits)
        self.lock = threading.Lock()
        self.requests = 0
        self.inflight = 0
        self.max_inflight = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.url = ""

    def answer(self, body: dict) -> str:
        messages = body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"]
        if isinstance(user, list):  # vision request: report what arrived
            sizes = []
            for part in user:
                if part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    assert url.startswith("data:image/jpeg;base64,")
                    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                    sizes.append(f"{im.width}x{im.height}")
            text = next(p["text"] for p in user if p["type"] == "text")
            return f"Sure! Here is a caption:\n\n**Saw {len(sizes)} image(s) of {', '.join(sizes)} for: {text}**"
        m = re.search(r"names the (.+?) and says", system)
        cls = m.group(1) if m else "thing"
        return (
            f"Here are some sentences about the {cls}:\n\n"
            f"1. A {cls} answering '{user}' number {self.requests}.\n"
            f"2. **The {cls}** has a trait number {self.requests}.\n"
            f"- A {cls} is a {cls}.\n\nI hope this helps!"
        )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, payload, headers: dict | None = None, raw: bool = False):
        data = payload.encode() if raw else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
            pass

    def do_POST(self):
        s: FakeServer = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.requests += 1
            number = s.requests
            s.inflight += 1
            s.max_inflight = max(s.max_inflight, s.inflight)
            s.bodies.append(body)
            s.headers.append(dict(self.headers))
        try:
            if s.delay:
                time.sleep(s.delay)
            if s.hang_after is not None and number > s.hang_after:
                s.release.wait(30)
            if self.path != "/v1/chat/completions":
                return self._send(404, {"detail": "Not Found"})
            if number <= s.fail_first:
                return self._send(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": s.retry_after})
            has_image = isinstance(body["messages"][-1]["content"], list)
            if s.mode == "garbage":
                return self._send(200, "<html><body>Welcome to nginx!</body></html>", raw=True)
            if s.mode == "missing_model":
                msg = f'model "{body["model"]}" not found, try pulling it first'
                return self._send(404, {"error": {"message": msg, "type": "api_error"}})
            if s.mode == "no_images" and has_image:
                return self._send(400, {"error": {"message": "This model does not support image input"}})
            if s.mode == "unauthorized":
                return self._send(401, {"error": {"message": "Incorrect API key provided"}})
            if s.mode == "error500":
                return self._send(500, {"error": {"message": "CUDA error: device-side assert"}})
            n = int(body.get("n", 1))
            content = {"refuse": "I'm sorry, but I can't help with that.", "null": None}.get(s.mode, "")
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content if content != "" else s.answer(body)},
                    "finish_reason": "stop",
                }
                for i in range(n)
            ]
            return self._send(200, {"id": f"c{number}", "object": "chat.completion", "choices": choices})
        finally:
            with s.lock:
                s.inflight -= 1


@pytest.fixture
def server():
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = state
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


class DripServer:
    """A server that answers every connection with one byte every ``interval`` s — of the status line and
    headers (``part="headers"``) or, after complete headers, of the body — for at most ``limit`` bytes.

    ``cut`` is set when a client closes its connection mid-drip; ``finished`` counts drips that ran to
    their end (the server then closes the connection itself).
    """

    def __init__(self, part: str = "headers", interval: float = 0.2, limit: int = 150):
        self.part, self.interval, self.limit = part, interval, limit
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.connections = 0
        self.finished = 0
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request (its start is enough)
                if self.part == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                    payload = b" " * self.limit
                else:
                    payload = (b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * self.limit)[: self.limit]
                for i in range(len(payload)):
                    if self._stop.is_set():
                        return
                    conn.sendall(payload[i : i + 1])
                    time.sleep(self.interval)
            except OSError:
                self.cut.set()
                return
            self.finished += 1


def backend_for(server: FakeServer, **options) -> OpenAIBackend:
    opts = {"model": "tiny-llm", "base_url": server.url, "api_key": "", "backoff": 0.01, "timeout": 5.0}
    opts.update(options)
    return get_backend("openai", **opts)


def test_descriptions_through_openai_server_then_cached(project, server):
    backend = backend_for(server, max_workers=3, api_key="sk-test")
    preview = generate_descriptions(project, backend, samples_per_prompt=1, dry_run=True)
    assert preview == {
        "dry_run": True,
        "requests": 18,
        "cached": 0,
        "new": 18,
        "classes": 3,
        "backend": "openai",
        "model": "tiny-llm",
        "base_url": server.url,
    }
    assert server.requests == 0  # the preview asked nothing
    result = generate_descriptions(project, backend, samples_per_prompt=1, temperature=0.7, max_tokens=123)
    assert result["sent"] == 18 and server.requests == 18
    body = server.bodies[0]
    assert body["model"] == "tiny-llm" and body["temperature"] == 0.7 and body["max_tokens"] == 123
    assert [m["role"] for m in body["messages"]] == ["system", "user"] and "n" not in body
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    rows = list_descriptions(project, "dog")
    texts = [r["text"] for r in rows]
    assert len(texts) == 13  # 6 answers × 2 distinct sentences + one "A dog is a dog." shared by all
    assert all("dog" in t for t in texts) and "A dog is a dog." in texts
    assert not any("Here are" in t or "hope" in t or "**" in t for t in texts)
    assert rows[0]["source"] == "llm" and rows[0]["backend"] == "openai" and rows[0]["model"] == "tiny-llm"
    assert rows[0]["prompt"] == "Describe what a dog looks like."
    assert list_runs(project, kind="describe")[0]["params"]["base_url"] == server.url
    assert "sk-test" not in json.dumps(list_runs(project, kind="describe")[0]["params"])
    # rerun: zero new requests, same sentences
    again = generate_descriptions(project, backend, samples_per_prompt=1, temperature=0.7, max_tokens=123)
    assert server.requests == 18 and again["cached"] == 18 and again["sent"] == 0
    assert [r["text"] for r in list_descriptions(project, "dog")] == texts
    assert generate_descriptions(project, backend, samples_per_prompt=1, temperature=0.7, max_tokens=123,
                                 dry_run=True)["new"] == 0  # fmt: skip
    backend.close()


def test_concurrency_is_bounded(server):
    server.delay = 0.1
    backend = backend_for(server, max_workers=3)
    reqs = [Request(prompt=f"q{i}", subject=f"class:{i}") for i in range(12)]
    start = time.monotonic()
    out = backend.complete(reqs)
    elapsed = time.monotonic() - start
    assert len(out) == 12 and all(len(r.texts) == 1 for r in out)
    assert server.max_inflight == 3  # parallel, and never more than max_workers
    assert elapsed < 12 * 0.1 * 0.8


def test_n_samples_in_one_request(server):
    backend = backend_for(server)
    (resp,) = backend.complete([Request(prompt="describe", n=3)])
    assert len(resp.texts) == 3 and server.bodies[0]["n"] == 3 and server.requests == 1


def test_429_then_success_honours_retry_after(project, server):
    server.fail_first = 2
    server.retry_after = "0.05"
    backend = backend_for(server, max_workers=1, backoff=20.0)  # a 20 s backoff would time the test out
    start = time.monotonic()
    result = generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)
    assert time.monotonic() - start < 5
    assert result["sent"] == 6 and server.requests == 8
    assert len(list_descriptions(project, "cat")) > 0


def test_rate_limit_that_never_ends_is_a_clear_error(server):
    server.fail_first = 100
    backend = backend_for(server, max_retries=2)
    with pytest.raises(BackendError, match=r"kept answering HTTP 429 .*after 3 tries.*lower the workers"):
        backend.complete([Request(prompt="x")])
    assert server.requests == 3


def test_timeout_is_retried_then_clear_error(server):
    server.delay = 1.0
    backend = backend_for(server, timeout=0.25, max_retries=1)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"did not answer within 0.25 s, 2 tries.*raise the timeout"):
        backend.complete([Request(prompt="x")])
    assert time.monotonic() - start < 3
    deadline = time.monotonic() + 2
    while server.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests == 2  # the first try timed out and was retried once


def test_server_error_is_retried(server):
    server.mode = "error500"
    backend = backend_for(server, max_retries=1)
    with pytest.raises(BackendError, match=r"HTTP 500 \(server error: CUDA error"):
        backend.complete([Request(prompt="x")])
    assert server.requests == 2


def test_garbage_is_a_clear_error(project, server):
    server.mode = "garbage"
    backend = backend_for(server)
    with pytest.raises(BackendError, match=r"not JSON .*Welcome to nginx.*ends in /v1"):
        generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)
    assert list_runs(project, kind="describe")[0]["status"] == "failed"
    assert list_descriptions(project) == []


def test_wrong_path_is_a_clear_error(server):
    backend = backend_for(server, base_url=server.url.removesuffix("/v1"))
    with pytest.raises(BackendError, match=r"404 Not Found.*ends in /v1"):
        backend.complete([Request(prompt="x")])


def test_missing_model_names_it(server):
    server.mode = "missing_model"
    backend = backend_for(server, model="llama9-nope")
    with pytest.raises(ModelUnavailableError, match=r"model 'llama9-nope' is not available at .*give it as the model"):
        backend.complete([Request(prompt="x")])
    assert server.requests == 1


def test_bad_key_is_a_clear_error(server):
    server.mode = "unauthorized"
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        backend_for(server, api_key="sk-wrong").complete([Request(prompt="x")])


def test_unreachable_endpoint_names_url_and_fix():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/v1"
    backend = get_backend("openai", model="m", base_url=url, backoff=5.0)
    start = time.monotonic()
    with pytest.raises(BackendError, match=rf"cannot reach .*{re.escape(url)}.*ollama serve.*base URL"):
        backend.complete([Request(prompt="x"), Request(prompt="y")])
    assert time.monotonic() - start < 3  # not retried with the 5 s backoff: the server was never up


def test_options_and_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InvalidInputError, match="needs a model"):
        get_backend("openai")
    with pytest.raises(InvalidInputError, match="OPENAI_API_KEY.*base URL"):
        get_backend("openai", model="gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/chat/completions/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    b = get_backend("openai", model="llama3.2")
    assert b.base_url == "http://localhost:11434/v1" and b.api_key == "sk-env"
    assert b.info() == {"backend": "openai", "model": "llama3.2", "base_url": "http://localhost:11434/v1"}
    with pytest.raises(InvalidInputError, match="http://"):
        get_backend("openai", model="m", base_url="localhost:11434")
    with pytest.raises(InvalidInputError, match="max_workers"):
        get_backend("openai", model="m", max_workers=0)


def test_captions_and_group_grids_through_openai_server(project, server, tmp_path):
    images = add_images(project, tmp_path / "imgs", 9)
    class_of = {im["id"]: ("cat" if k < 5 else "dog") for k, im in enumerate(images)}
    backend = backend_for(server, max_workers=4)
    preview = caption_images(project, backend, groups=True, class_of=class_of, dry_run=True)
    assert (preview["requests"], preview["images"], preview["groups"]) == (9 + 3, 9, 3)
    result = caption_images(project, backend, groups=True, class_of=class_of, cell=100)
    assert result["sent"] == 12 and server.requests == 12
    caps = captions_by_image(project)
    first = caps[images[0]["id"]]
    prompt = "Describe the cat in the photo concisely, less than 20 words."
    assert first["image"] == f"Saw 1 image(s) of 32x32 for: {prompt}"
    assert first["group"].startswith("Saw 1 image(s) of 204x") and "of the cat in all the photos" in first["group"]
    assert "of the dog in all" in caps[images[8]["id"]]["group"]
    again = caption_images(project, backend, groups=True, class_of=class_of, cell=100)
    assert again["sent"] == 0 and server.requests == 12


def test_text_only_model_gets_a_clear_image_error(project, server, tmp_path):
    add_images(project, tmp_path / "imgs", 2)
    server.mode = "no_images"
    backend = backend_for(server, model="llama3.2")
    with pytest.raises(ModelUnavailableError, match=r"'llama3.2' .*cannot take images.*vision model"):
        caption_images(project, backend)
    assert list_runs(project, kind="caption")[0]["status"] == "failed"
    # the same model still writes descriptions
    assert generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)["added"] > 0


# --- total deadlines, refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["headers", "body"])
def test_timeout_is_a_total_deadline_even_if_bytes_keep_dripping(part):
    """One byte every 0.2 s for 30 s: httpx's per-read timeout never fires; --timeout 1 must still end the try."""
    with DripServer(part) as drip:
        backend = get_backend("openai", model="m", base_url=drip.url, timeout=1.0, max_retries=0)
        try:
            with pytest.raises(BackendError, match=r"did not answer within 1 s, 1 tries"):
                backend.complete([Request(prompt="x")])
            assert drip.connections == 1 and drip.finished == 0  # returned while the drip was still going
            assert drip.cut.wait(10)  # ... and closed the connection: the server's next byte failed
        finally:
            backend.close()


@pytest.mark.parametrize("mode", ["refuse", "null"])
def test_refusals_and_null_answers_are_not_cached(project, server, mode):
    server.mode = mode
    backend = backend_for(server, max_workers=2)
    with pytest.raises(BackendError, match=r"6 answers were refusals or empty: nothing stored for cat"):
        generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)
    assert server.requests == 6 and list_descriptions(project) == []
    assert count_cached(project, backend, description_requests(backend, ["cat"], samples_per_prompt=1)) == 0
    server.mode = "normal"  # a good server (or model) later: it is asked, and the answers are stored
    result = generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)
    assert result["sent"] == 6 and result["cached"] == 0 and server.requests == 12
    assert list_descriptions(project, "cat") and result["warning"] == ""
    backend.close()


def test_refused_captions_are_not_stored_or_cached(project, server, tmp_path):
    add_images(project, tmp_path / "imgs", 3)
    server.mode = "refuse"
    backend = backend_for(server)
    with pytest.raises(BackendError, match=r"all 3 answers were refusals or empty: nothing stored or cached"):
        caption_images(project, backend)
    assert captions_by_image(project) == {} and list_runs(project, kind="caption")[0]["status"] == "failed"
    server.mode = "normal"
    result = caption_images(project, backend)
    assert result["sent"] == 3 and result["captions"] == 3 and server.requests == 6
    assert len(captions_by_image(project)) == 3
    backend.close()


def test_job_deadline_stops_keeps_the_answers_so_far_and_resumes(project, server):
    server.hang_after = 3  # the first three answers come back, then the server stops answering
    backend = backend_for(server, max_workers=3, timeout=60.0)
    with pytest.raises(DeadlineExceeded, match=r"stopped at the 1.5 s deadline after 3 of 18 answers.*rerun"):
        generate_descriptions(project, backend, samples_per_prompt=1, deadline=1.5)
    run = list_runs(project, kind="describe")[0]
    assert run["status"] == "cancelled" and "deadline" in run["error"]
    reqs = description_requests(backend, project.classes, samples_per_prompt=1)
    assert count_cached(project, backend, reqs) == 3  # what arrived before the deadline is kept
    server.hang_after = None
    server.release.set()
    result = generate_descriptions(project, backend, samples_per_prompt=1)
    assert result["cached"] == 3 and result["sent"] == 15
    assert all(list_descriptions(project, c) for c in project.classes)
    backend.close()
