"""Shared test setup: offline, a temporary data dir per test, tiny data helpers.

Test images are generated (:mod:`tests.synth`, via :func:`class_folders`), so a fresh clone runs every
end-to-end test with nothing beside it. ``../shared/data`` (real CIFAR-10 images, real LLM descriptions) is
used only by a few extras (:func:`cifar_subset`, :func:`cifar_dir`), which skip where it is absent.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub, gradio or transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "localhost,127.0.0.1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `--precision auto` on a native-bf16 CPU picks bf16 only when a probe finds it faster: a timing, which a busy CI
# machine can flip between runs (cached features then differ from fp32 ones by ~1e-2). Tests run fp32 throughout;
# tests/test_precision.py passes CPU flags explicitly and checks the variable.
os.environ.setdefault("LABELER_CPU_BF16", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR = SHARED_DATA / "cifar10-test"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Every test gets its own LABELER_DATA_DIR, so projects given by name never collide."""
    monkeypatch.setenv("LABELER_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def class_folders(dst: Path, per_class: int, classes: list[str] | None = None, seed: int = 0) -> Path:
    """Write ``per_class`` generated images of each class as ``dst/<class>/NNNN.jpg`` and return dst.

    32×32 RGB JPEGs like CIFAR-10's, the same bytes on every machine (:func:`tests.synth.image_folder`);
    ``classes`` defaults to the CIFAR-10 names. Nothing to download, nothing skipped.
    """
    from .synth import image_folder

    return image_folder(dst, per_class, classes or CIFAR_CLASSES, seed=seed)


@pytest.fixture
def cifar_dir() -> Path:
    """../shared/data/cifar10-test (skips the test where it is absent: for real-image extras only)."""
    if not CIFAR.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {CIFAR}")
    return CIFAR


def cifar_subset(dst: Path, per_class: int, classes: list[str] | None = None) -> Path:
    """Link ``per_class`` real CIFAR images of each class into ``dst/<class>/`` and return dst.

    Skips the test where ../shared/data is absent: use it only for extras on real images; plumbing tests
    use :func:`class_folders`.
    """
    if not CIFAR.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {CIFAR}")
    for cls in classes or CIFAR_CLASSES:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((CIFAR / cls).iterdir())[:per_class]:
            (dst / cls / src.name).symlink_to(src)
    return dst


@pytest.fixture
def project(tmp_path):
    """A fresh single-label project with three classes."""
    from labeler.project import Project

    return Project.create(tmp_path / "proj", ["cat", "dog", "car"])


def wait_until(cond, what: str, timeout: float = 20.0, logs=None):
    """Poll ``cond()`` every 0.2 s until it returns something truthy (returned); fail after ``timeout`` s.

    ``logs``: a callable whose text (e.g. a server's log) is added to the failure message.
    """
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"; server log:\n{logs()}" if logs else ""))


def tiny_project(root: Path, images: Path, classes: list[str], label: bool = False) -> Path:
    """A project at ``root`` made through the CLI: init with ``classes``, import ``images``, tiny-random CLIP and
    DINO features, and (``label``) a zero-shot run. Returns ``root``."""
    from labeler.cli import main

    assert main(["init", str(root), "--classes", ",".join(classes)]) == 0
    assert main(["import", str(root), str(images), "--quiet"]) == 0
    assert main(["features", str(root), "--clip", "tiny-random", "--dino", "tiny-random", "--quiet"]) == 0
    if label:
        assert main(["label", str(root), "--quiet"]) == 0
    return root


def make_ctx(data_dir: Path | None = None, local_mode: bool = True, isolate: bool = False):
    """A wizard :class:`labeler.ui.common.Ctx` for calling step handlers by name in process (nothing built or
    launched): ``project``/``finished``/``visitor`` are plain ``gr.State("")``; ``data_dir`` defaults to the
    test's data dir."""
    import gradio as gr

    from labeler.project import data_dir as default_data_dir
    from labeler.ui.common import Ctx

    return Ctx(
        data_dir=Path(data_dir) if data_dir is not None else default_data_dir(),
        local_mode=local_mode,
        project=gr.State(""),
        finished=gr.State(""),
        isolate=isolate,
        visitor=gr.State(""),
    )


@pytest.fixture
def app_ctx(_data_dir):
    """A local-mode wizard context on the test's data dir (:func:`make_ctx`)."""
    return make_ctx(_data_dir)


def shown(outputs_type: type, values, hidden: tuple[str, ...] = ()):
    """A gradio_client result by name: ``values`` are ``outputs_type``'s fields less ``hidden`` (the ones the
    client never returns: gr.State, gr.Tabs, accordions), in order. ``shown(ViewOut, res, ("page",)).counts``."""
    from collections import namedtuple

    names = [f for f in outputs_type._fields if f not in hidden]
    values = values if isinstance(values, (list, tuple)) else [values]
    if len(values) != len(names):
        raise AssertionError(f"{outputs_type.__name__}: {len(values)} values for the fields {names}")
    return namedtuple(f"Shown{outputs_type.__name__}", names)._make(values)


def parse_source(path: Path):
    """``ast.parse`` of the file at ``path``, retried (up to 3 tries) on CPython 3.11's spurious "AST constructor
    recursion depth mismatch" SystemError, which another thread of the test process can trigger (cpython
    gh-106905; CI saw it once in test_hints). A real syntax error is raised as it is."""
    import ast

    text = path.read_text(encoding="utf-8")
    for attempt in range(3):
        try:
            return ast.parse(text, str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 2:
                raise
