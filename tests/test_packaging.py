"""Packaging: the wheel holds the library and its data files, the `labeler` command, and deps that match the pins."""

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the sources (no build/ or *.egg-info left in the checkout), offline."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts")
    for name in ("labeler", "store", "tests", "bench", "space"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "app.py", "requirements.txt"):
        shutil.copy2(REPO / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp, src],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp.glob("labeler-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_the_wheel_holds_labeler_and_store_with_their_data_files_and_nothing_else(wheel):
    names = set(wheel.namelist())
    code = {n for n in names if ".dist-info/" not in n}
    expected = {
        p.relative_to(REPO).as_posix()
        for top in ("labeler", "store")
        for p in (REPO / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert "labeler/models/configs/tiny-random.json" in expected  # the data file the tiny models need
    assert code == expected  # every module and data file of both packages; no tests/, bench/, space/, app.py
    assert {n.split("/")[0] for n in code} == {"labeler", "store"}


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
