"""Pick the torch device Labeler runs models on.

torch is imported when a device is resolved, not with this module: the app and the CLI import it at start-up and
should not pay torch's import for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Hint, InvalidInputError

if TYPE_CHECKING:
    import torch

_HINT = "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map a device name to a :class:`torch.device`, checking that it exists.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (or None / empty): CUDA if available, else Apple MPS, else CPU.
        Otherwise a name torch understands: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Raises
    ------
    InvalidInputError
        For an unknown name, or a device this machine does not have (e.g. ``cuda``
        without a CUDA GPU), with a message that says what to use instead.
    """
    import torch

    text = "" if device is None else str(device).strip().lower()
    if text in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"unknown device {device!r}: {_HINT}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device {device!r} was asked for, but no CUDA GPU is available to torch "
                "(torch.cuda.is_available() is False): use the CPU or auto",
                hint=Hint(option="device", value="cpu"),
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidInputError(
                f"device {device!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise InvalidInputError(
                f"device {device!r} was asked for, but Apple MPS is not available here: use the CPU or auto",
                hint=Hint(option="device", value="cpu"),
            )
        return dev
    raise InvalidInputError(f"device type {dev.type!r} is not supported: {_HINT}")
