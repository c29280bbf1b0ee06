"""Hugging Face Hub access that never hangs: offline mode when the Hub cannot be reached."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

_PROBE_TIMEOUT_S = 3.0
_RECHECK_AFTER_S = 300.0  # an unreachable Hub is probed again after this long (a long-running app)
_reachable: bool | None = None
_probed_at = 0.0
_lock = threading.Lock()


def _env_offline() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def _probe() -> bool:
    """True if a TCP connection to the Hub endpoint opens within a few seconds (DNS included)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(_PROBE_TIMEOUT_S + 0.5)  # getaddrinfo has no timeout of its own
    return bool(result and result[0])


def hub_offline() -> bool:
    """True when downloads are off: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, or the Hub unreachable.

    The reachability probe runs once per process (again after 5 minutes if the Hub was unreachable).
    """
    global _reachable, _probed_at
    if _env_offline():
        return True
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    with _lock:
        if _reachable is None or (not _reachable and time.monotonic() - _probed_at > _RECHECK_AFTER_S):
            _reachable = _probe()
            _probed_at = time.monotonic()
    return not _reachable


@contextlib.contextmanager
def hub_mode() -> Iterator[bool]:
    """Yield whether the Hub is offline; while offline, force huggingface_hub's offline mode.

    Forcing it makes a missing file fail at once from the local cache instead of
    retrying the network for a minute.
    """
    offline = hub_offline()
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield offline
        return
    before = constants.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = before


def hf_cache_dir() -> str:
    """Where Hugging Face downloads live (for messages)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
