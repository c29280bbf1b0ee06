"""Packaging: the wheel holds the library and its data files (the app's assets/ as labeler/ui/static/), the
`labeler` command, and deps that match the pins; the sdist holds assets/ too."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(path: Path) -> dict[str, str]:
    """name (normalised) → pinned version of every ``name==version`` line in a requirements file."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _sources(tmp: Path) -> Path:
    """A copy of the checkout's sources under ``tmp / "src"`` (no build/ or *.egg-info left in the checkout)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts")
    for name in ("labeler", "store", "assets", "tests", "bench", "space"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "app.py", "requirements.txt"):
        shutil.copy2(REPO / name, src / name)
    return src


def _files(top: str) -> set[str]:
    """Every file under the checkout's folder ``top``, relative to the checkout (caches left out)."""
    return {
        p.relative_to(REPO).as_posix()
        for p in (REPO / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


#: Where each file of assets/ sits in the wheel (the data package labeler.ui.static, see pyproject.toml).
ASSETS = {name: "labeler/ui/static/" + name.removeprefix("assets/") for name in _files("assets")}


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources, offline."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _sources(tmp)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp, src],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp.glob("labeler-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(wheel_path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel_path) as zf:
        yield zf


def test_the_wheel_holds_labeler_and_store_with_their_data_files_and_nothing_else(wheel):
    names = set(wheel.namelist())
    code = {n for n in names if ".dist-info/" not in n}
    expected = _files("labeler") | _files("store") | set(ASSETS.values())
    assert "labeler/models/configs/tiny-random.json" in expected  # the data file the tiny models need
    assert {"labeler/ui/static/app.css", "labeler/ui/static/logo.svg"} <= expected  # the app's assets
    assert code == expected  # every module and data file of both packages and every asset; no tests/, bench/, app.py
    assert {n.split("/")[0] for n in code} == {"labeler", "store"}


def test_the_installed_package_reads_its_assets(wheel_path, tmp_path):
    """labeler.ui.assets finds every asset in an installed copy (the wheel unpacked, no checkout beside it)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel_path) as zf:
        zf.extractall(site)
    code = (
        "import sys; from labeler.ui import assets; "
        "print(assets.folder()); "
        "[assets.read(n) for n in sys.argv[1:]]; "
        "print(sorted(assets.examples().values()))"
    )
    names = [n.removeprefix("assets/") for n in ASSETS]
    proc = subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder, examples = proc.stdout.strip().splitlines()[-2:]
    assert folder == str(site / "labeler" / "ui" / "static")
    assert "cifar10.txt" in examples


def test_the_sdist_holds_the_assets(tmp_path):
    """``pip install`` from an sdist builds the wheel from it: assets/ must be inside."""
    pytest.importorskip("setuptools")
    src = _sources(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))", tmp_path],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import tarfile

    (path,) = tmp_path.glob("labeler-*.tar.gz")
    with tarfile.open(path) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = set(ASSETS) - names
    assert not missing, f"the sdist lacks {sorted(missing)}"


def test_the_wheel_declares_the_labeler_command_and_the_dependencies(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text and "labeler = labeler.cli:main" in text
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(metadata))
    assert meta["Name"] == "labeler" and meta["Requires-Python"] == ">=3.11"
    assert len(meta.get_all("Requires-Dist")) == len(PYPROJECT["project"]["dependencies"])


def test_the_console_script_is_the_cli_main(capsys):
    from labeler.cli import main

    assert PYPROJECT["project"]["scripts"] == {"labeler": "labeler.cli:main"}
    assert main([]) == 2  # no command: the help, exit 2 — as `python -m labeler` does
    assert "usage:" in capsys.readouterr().out


def test_requirements_pins_fall_inside_the_package_ranges():
    """requirements.txt (what CI and the Space install) and pyproject's ranges name the same packages, and each
    pin satisfies its range: a dependency added to one and not the other fails here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins(REPO / "requirements.txt")
    ranges = {canonicalize_name(r.name): r.specifier for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    assert ranges.keys() == pins.keys()
    outside = {name: (pins[name], str(spec)) for name, spec in ranges.items() if pins[name] not in spec}
    assert not outside, f"requirements.txt pins outside pyproject.toml's ranges: {outside}"
