"""``--precision auto``: which precision an encoder runs in, and the one-time bf16 probe behind it.

The rule (:func:`auto_precision`, a pure function of what it is given):

- CUDA GPU: bf16 where the GPU supports it, else fp16;
- CPU with native bfloat16 (x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16`` in ``/proc/cpuinfo``): bf16, but
  only once a probe showed that this model's bf16 features match its fp32 features (min cosine >=
  :data:`COSINE_MIN` on a sample of the project's images) and that bf16 is faster (>= :data:`MIN_SPEEDUP`x: not
  so for tiny models, where casts dominate); until then, or when the probe fails, fp32;
- anything else (a CPU without native bf16, where bf16 is emulated and slower; Apple MPS): fp32.

The probe (:func:`probe_bf16`) encodes a few images with the fp32 weights and with a bf16 copy of the same
weights; its result is cached per model key (and torch version) in the project's meta under
:data:`PROBE_META_KEY`, so it runs once per model and project. Features are float32 (and stored as float16)
whatever the precision; see docs/architecture.md (Features) for why vectors of two precisions may share a set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .models import Encoder
    from .project import Project

#: Lowest cosine between a bf16 and the fp32 feature of the same image for bf16 to count as the same features.
COSINE_MIN = 0.999
#: ``/proc/cpuinfo`` flags that mean the CPU computes bfloat16 natively (x86: AVX512-BF16, AMX; Arm: BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
#: Project meta key of the cached probe results:
#: ``{model_key: {"bf16": {"cosine_min", "speedup", "ok", "images", "torch"}}}``.
PROBE_META_KEY = "precision_probes"
#: bf16 must also be at least this much faster than fp32 in the probe (where it is not, fp32 stays: tiny models).
MIN_SPEEDUP = 1.1
#: Images the probe encodes (the first ``ok`` images of the project, by id).
PROBE_IMAGES = 16
CHOICES = ("auto", "fp32", "bf16", "fp16")


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of this machine (the ``flags``/``Features`` line of ``/proc/cpuinfo``; empty elsewhere).

    Falls back to :func:`torch.backends.cpu.get_cpu_capability` (``AMX`` there means native bf16) where the file
    cannot be read, e.g. on macOS or Windows.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    capability = str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()).upper()
    return frozenset({"amx_bf16"}) if "AMX" in capability else frozenset()


#: Set to ``0`` to make ``auto`` keep fp32 on this CPU (no probe): features that do not depend on a timing.
NO_CPU_BF16_ENV = "LABELER_CPU_BF16"


def machine_flags() -> frozenset[str]:
    """:func:`cpu_flags`, or none when ``$LABELER_CPU_BF16`` is ``0`` (``auto`` then means fp32 on the CPU).

    The probe also times bf16 against fp32, so on a busy native-bf16 CPU ``auto`` may pick either; the test suite
    and anyone who wants features independent of timing set ``LABELER_CPU_BF16=0``.
    """
    if os.environ.get(NO_CPU_BF16_ENV, "").strip() == "0":
        return frozenset()
    return cpu_flags()


def native_bf16(flags: Iterable[str]) -> bool:
    """Whether ``flags`` (see :func:`cpu_flags`) include native bfloat16 arithmetic."""
    return bool(NATIVE_BF16_FLAGS & {str(f).lower() for f in flags})


def auto_precision(
    device_type: str, flags: Iterable[str] = (), probe: bool | None = None, gpu_bf16: bool = False
) -> str:
    """What ``--precision auto`` means on a device: ``fp32``, ``bf16`` or ``fp16``.

    Parameters
    ----------
    device_type : str
        ``cpu``, ``cuda``, ``mps``, ...
    flags : iterable of str
        CPU flags (:func:`cpu_flags`); used on CPU only.
    probe : bool or None
        The model's bf16 probe on this CPU: True passed, False failed, None not run yet. Used on CPU only.
    gpu_bf16 : bool
        Whether the CUDA GPU supports bf16 (``torch.cuda.is_bf16_supported()``).
    """
    kind = str(device_type).lower()
    if kind == "cuda":
        return "bf16" if gpu_bf16 else "fp16"
    if kind == "cpu" and native_bf16(flags) and probe is True:
        return "bf16"
    return "fp32"


def needs_probe(device_type: str, flags: Iterable[str]) -> bool:
    """Whether ``auto`` on this device depends on the bf16 probe (a CPU with native bf16)."""
    return str(device_type).lower() == "cpu" and native_bf16(flags)


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest row-wise cosine between two (N, D) feature matrices."""
    a, b = a.float(), b.float()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float(cos.min()) if len(cos) else 1.0


def probe_bf16(model: Encoder, batch: torch.Tensor) -> tuple[float, float, Encoder]:
    """Features and speed of ``batch`` from ``model`` (fp32) and from a bf16 copy of its weights.

    Each encoder runs once on two images first (kernel set-up), then once on the whole batch, timed.

    Returns
    -------
    (cosine_min, speedup, bf16_model)
        The smallest cosine between the two features of an image, the bf16 copy's speed over fp32's (>1: bf16
        is faster), and the bf16 copy (``model`` is untouched).
    """
    if model.precision != "fp32":
        raise InvalidInputError(f"the bf16 probe compares with fp32 weights; this model runs in {model.precision}")
    low = model.converted("bf16")
    model.encode_images(batch[:2])
    low.encode_images(batch[:2])
    t0 = time.perf_counter()
    reference = model.encode_images(batch)
    t1 = time.perf_counter()
    features = low.encode_images(batch)
    t2 = time.perf_counter()
    return min_cosine(reference, features), (t1 - t0) / max(t2 - t1, 1e-9), low


def cached_probe(project: Project, key: str, precision: str = "bf16") -> dict | None:
    """The cached probe of model ``key`` in ``precision`` for this torch version, or None."""
    entry = ((project.get_meta(PROBE_META_KEY, {}) or {}).get(key) or {}).get(precision)
    if isinstance(entry, dict) and entry.get("torch") == torch.__version__:
        return entry
    return None


def _store_probe(project: Project, key: str, precision: str, entry: dict) -> None:
    probes = dict(project.get_meta(PROBE_META_KEY, {}) or {})
    probes[key] = {**(probes.get(key) or {}), precision: entry}
    project.set_meta(PROBE_META_KEY, probes)


def _sample_batch(project: Project, model: Encoder, n: int) -> torch.Tensor | None:
    from .ingest import load_rgb

    tensors = []
    # A few more rows than needed (some may not decode), never the whole table.
    rows = project.db.execute("select path from images where status = 'ok' order by id limit ?", [4 * n]).fetchall()
    for (path,) in rows:
        if len(tensors) >= n:
            break
        try:
            tensors.append(model.preprocess(load_rgb(path, 2 * model.image_size)))
        except Exception:  # noqa: BLE001 - an unreadable file is reported by compute_features, not here
            continue
    return torch.stack(tensors) if tensors else None


def choose_encoder(
    project: Project,
    model: Encoder,
    precision: str = "auto",
    *,
    flags: Iterable[str] | None = None,
    images: int = PROBE_IMAGES,
) -> tuple[Encoder, dict]:
    """The encoder to compute ``project``'s features with under ``precision``, and why.

    Parameters
    ----------
    project : Project
        Where the probe's images come from and its result is cached.
    model : Encoder
        Loaded in fp32 when ``precision`` is ``auto`` (any precision otherwise: it is returned as is).
    precision : str
        ``auto`` or an explicit ``fp32`` / ``bf16`` / ``fp16``.
    flags : iterable of str or None
        CPU flags; None: :func:`machine_flags` (this CPU's, none with ``LABELER_CPU_BF16=0``).
    images : int
        Images the probe encodes.

    Returns
    -------
    (encoder, info)
        ``info``: ``{"asked", "precision", "reason", "probe": {"cosine_min", "speedup", "ok", "images", "torch",
        "cached"} or None}``.
    """
    asked = str(precision or "auto").lower()
    if asked not in CHOICES:
        raise InvalidInputError(f"precision {precision!r} is not one of {', '.join(CHOICES)}")
    if asked != "auto":
        return model, {"asked": asked, "precision": model.precision, "reason": "asked for", "probe": None}
    if model.precision != "fp32":
        raise InvalidInputError("precision auto starts from the fp32 weights: load the model with precision='fp32'")
    device_type = model.device.type
    flags = machine_flags() if flags is None else frozenset(flags)
    if device_type == "cuda":
        gpu_bf16 = bool(torch.cuda.is_bf16_supported())
        chosen = auto_precision(device_type, flags, None, gpu_bf16)
        info = {"asked": "auto", "precision": chosen, "reason": f"CUDA GPU ({'with' if gpu_bf16 else 'no'} bf16)"}
        return model.converted(chosen), {**info, "probe": None}
    if not needs_probe(device_type, flags):
        why = "no native bf16 on this CPU" if device_type == "cpu" else f"{device_type} device"
        if device_type == "cpu" and flags == frozenset() and os.environ.get(NO_CPU_BF16_ENV, "").strip() == "0":
            why = f"{NO_CPU_BF16_ENV}=0: fp32 on this CPU"
        return model, {"asked": "auto", "precision": "fp32", "reason": why, "probe": None}
    entry = cached_probe(project, model.key)
    low = None
    if entry is None:
        batch = _sample_batch(project, model, images)
        if batch is None:
            return model, {"asked": "auto", "precision": "fp32", "reason": "no image to probe bf16 with", "probe": None}
        cos, speedup, low = probe_bf16(model, batch)
        entry = {
            "cosine_min": round(cos, 6),
            "speedup": round(speedup, 2),
            "ok": bool(cos >= COSINE_MIN and speedup >= MIN_SPEEDUP),
            "images": len(batch),
            "torch": torch.__version__,
        }
        _store_probe(project, model.key, "bf16", entry)
        probe = {**entry, "cached": False}
    else:
        probe = {**entry, "cached": True}
    chosen = auto_precision(device_type, flags, bool(entry["ok"]))
    speed = entry.get("speedup")
    measured = f"min cosine {entry['cosine_min']:.5f} to fp32" + (f", {speed:.2f}x its speed" if speed else "")
    if entry["ok"]:
        verdict = "passed"
    elif entry["cosine_min"] < COSINE_MIN:
        verdict = f"failed (cosine below {COSINE_MIN})"
    else:
        verdict = f"failed (not {MIN_SPEEDUP}x faster)"
    reason = f"native bf16 CPU; bf16 probe {verdict}: {measured}"
    if chosen == "bf16":
        model = low if low is not None else model.converted("bf16")
    return model, {"asked": "auto", "precision": chosen, "reason": reason, "probe": probe}


def training_precision(project: Project, params: dict, flags: Iterable[str] | None = None) -> str:
    """What a training run's ``precision`` means on this machine (the loop's autocast setting).

    ``auto`` on a CPU with native bf16 becomes ``bf16`` (bf16 autocast) once the bf16 probe of the run's base
    CLIP model passed in this project (``labeler features`` runs it); otherwise ``auto`` stays as it is (see
    :func:`labeler.train.loop.resolve_amp`: bf16/fp16 on a GPU, fp32 on a CPU). Explicit precisions pass through.
    """
    from .device import resolve_device

    asked = str(params.get("precision") or "auto").lower()
    if asked != "auto":
        return asked
    device = resolve_device(params.get("device") or "auto")
    flags = machine_flags() if flags is None else frozenset(flags)
    key = (params.get("base") or {}).get("key")
    if not key or not needs_probe(device.type, flags):
        return "auto"
    entry = cached_probe(project, key)
    return (
        "bf16" if auto_precision(device.type, flags, None if entry is None else bool(entry["ok"])) == "bf16" else "auto"
    )
