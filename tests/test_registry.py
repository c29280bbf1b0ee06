"""The one Registry type (labeler.registry) and every registry built on it: models, methods, backends, exporters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from labeler.describe import BACKENDS, Backend, get_backend, list_backends
from labeler.errors import InvalidInputError, LabelerError, NotReadyError
from labeler.export import EXPORTERS, ExportReport, export_report, formats, get_exporter, list_exporters
from labeler.methods import METHODS, PLANNED, Method, get_method, list_methods, register_method
from labeler.models import MODELS, Encoder, list_models
from labeler.models.registry import get_builder, register_model, registered
from labeler.registry import Entry, Registry

# --- the type --------------------------------------------------------------------------------------------------


def test_register_refuses_an_overwrite_unless_replace_is_asked():
    reg: Registry[object] = Registry("widget")
    first, second = object(), object()
    assert reg.register("a", first) is first
    assert reg.register("a", first) is first  # the same object again: nothing changes
    with pytest.raises(InvalidInputError, match="widget 'a' is already registered; pass replace=True"):
        reg.register("a", second)
    assert reg.get("a") is first
    assert reg.register("a", second, replace=True) is second
    assert reg.get("a") is second
    with pytest.raises(InvalidInputError, match="non-empty name"):
        reg.register("  ", first)


def test_unknown_name_is_a_labeler_error_listing_the_known_names():
    reg: Registry[int] = Registry("widget")
    reg.register("beta", 2)
    reg.register("alpha", 1)
    with pytest.raises(LabelerError, match=r"unknown widget 'gamma'; choose one of alpha, beta$"):
        reg.get("gamma")
    with pytest.raises(LabelerError, match=r"choose one of \(none\)"):
        Registry("empty").get("x")


def test_decorator_form_names_iteration_and_unregister():
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B:
        """The B widget."""

    @reg.register("a")
    class A:
        summary = "The A widget."

    assert (A.__name__, B.__name__) == ("A", "B")  # the decorator hands the class back
    assert reg.names() == ["a", "b"] == list(reg) and len(reg) == 2
    assert "a" in reg and "c" not in reg and None not in reg
    assert reg.list() == [Entry("a", "The A widget.", obj=A), Entry("b", "The B widget.", obj=B)]
    assert reg.unregister("a") is A and reg.names() == ["b"]
    with pytest.raises(InvalidInputError, match="unknown widget 'a'"):
        reg.unregister("a")


def test_planned_names_are_listed_as_unavailable_until_registered():
    reg: Registry[int] = Registry("widget", summary=lambda n: f"number {n}")
    reg.register("one", 1)
    reg.plan("two", "two is not built yet")
    reg.plan("one", "ignored: one is registered")
    assert reg.list() == [
        Entry("one", "number 1", obj=1),
        Entry("two", "two is not built yet", available=False, reason="two is not built yet"),
    ]
    assert "two" not in reg and reg.names() == ["one"] and reg.planned() == {"two": "two is not built yet"}
    with pytest.raises(InvalidInputError, match=r"^two is not built yet; available now: one$"):
        reg.get("two")
    reg.register("two", 2)
    assert reg.planned() == {} and [e.available for e in reg.list()] == [True, True]


# --- the four registries use it ----------------------------------------------------------------------------------


def test_every_registry_refuses_overwrites_through_its_front_door():
    with pytest.raises(InvalidInputError, match="method 'zeroshot' is already registered"):

        @register_method
        class Other(Method):
            name = "zeroshot"

    with pytest.raises(InvalidInputError, match="already registered"):
        register_model("clip", "tiny-random")(lambda pretrained, device, precision: None)
    with pytest.raises(InvalidInputError, match="model kind must be one of clip, dino"):
        register_model("vit", "x")
    assert get_builder("clip", "ViT-B-32") is None  # not registered: open_clip's business

    from labeler.describe import TemplateBackend, register_backend
    from labeler.export import register_exporter

    class Template2(TemplateBackend):
        pass

    with pytest.raises(InvalidInputError, match="description backend 'template' is already registered"):
        register_backend(Template2)
    with pytest.raises(InvalidInputError, match="export format 'csv' is already registered"):
        register_exporter("csv", suffix=".csv")(lambda project, out: None)
    assert get_exporter("csv").suffix == ".csv"  # the built-in is still there
    assert get_method("zeroshot").__class__.__module__ == "labeler.methods.zeroshot"


def test_replace_true_swaps_a_method_and_the_built_in_comes_back():
    original = METHODS.get("zeroshot")

    class Quieter(original):
        summary = "zero-shot, replaced"

    try:
        register_method(Quieter, replace=True)
        assert isinstance(get_method("zeroshot"), Quieter)
        assert {m["name"]: m["summary"] for m in list_methods()}["zeroshot"] == "zero-shot, replaced"
    finally:
        register_method(original, replace=True)
    assert type(get_method("zeroshot")) is original


def test_planned_methods_are_the_unbuilt_ones():
    assert PLANNED == {}  # NoLA, LaFTer, LatteCLIP and CDUL are built
    listed = {m["name"]: m for m in list_methods()}
    assert all(m["available"] and "not implemented" not in m["summary"] for m in listed.values())
    assert {"latteclip", "cdul", "cdul-init"} <= set(listed)
    with pytest.raises(
        InvalidInputError, match="unknown method 'nope'; choose one of cdul, cdul-init, lafter, latteclip, nola"
    ):
        get_method("nope")


# --- one sweep over everything registered -------------------------------------------------------------------------


def _model_case(kind: str, name: str, tmp_path) -> None:
    encoder = MODELS[kind].get(name)(None, torch.device("cpu"), "fp32")
    assert isinstance(encoder, Encoder)
    size = getattr(encoder, "image_size", None) or 32
    feats = encoder.encode_images(torch.zeros(1, 3, size, size))
    assert feats.shape[0] == 1 and torch.isfinite(feats).all()
    assert name in registered(kind) and name in list_models()[kind]["registered"]


def _method_case(name: str, tmp_path) -> None:
    method = get_method(name)
    assert isinstance(method, Method) and type(method).name == name
    assert method.params_from({}) is not None  # every option has a default
    listed = {m["name"]: m for m in list_methods()}
    assert listed[name]["available"] and listed[name]["summary"]


#: Options that let each built-in backend be constructed here; a server backend is built without calling it.
BACKEND_OPTIONS = {
    "file": lambda tmp_path: {"path": _descriptions_file(tmp_path)},
    "openai": lambda tmp_path: {"model": "tiny", "base_url": "http://127.0.0.1:9/v1", "api_key": ""},
    "transformers": lambda tmp_path: {"model": "hf-internal-testing/tiny-random-gpt2"},  # loaded on first use only
}


def _descriptions_file(tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"cat": ["a small furry pet"]}), encoding="utf-8")
    return path


def _backend_case(name: str, tmp_path) -> None:
    backend = get_backend(name, **BACKEND_OPTIONS.get(name, lambda _: {})(tmp_path))
    try:
        assert isinstance(backend, Backend) and backend.name == name
        assert backend.info()["backend"] == name
        listed = {b["name"]: b for b in list_backends()}
        assert listed[name]["summary"] and isinstance(listed[name]["options"], list)
    finally:
        backend.close()


def _exporter_case(name: str, tmp_path) -> None:
    from labeler.project import Project

    exporter = get_exporter(name)
    assert exporter.name == name and callable(exporter.func) and isinstance(exporter.suffix, str)
    assert name in formats() and {e["name"]: e for e in list_exporters()}[name]["summary"]
    project = Project.create(tmp_path / "proj", ["cat", "dog"])
    try:  # an empty project: a label exporter writes an empty export, the model exporter asks for training
        report = export_report(project, name, tmp_path / f"out{exporter.suffix}")
    except NotReadyError as exc:
        assert exc.hint is not None and exc.hint.step == "train"
    else:
        assert isinstance(report, ExportReport) and report.path.exists() and report.n_images == 0


CASES = (
    [pytest.param(_model_case, kind, name, id=f"model-{kind}-{name}") for kind in MODELS for name in MODELS[kind]]
    + [pytest.param(_method_case, None, name, id=f"method-{name}") for name in METHODS]
    + [pytest.param(_backend_case, None, name, id=f"backend-{name}") for name in BACKENDS]
    + [pytest.param(_exporter_case, None, name, id=f"exporter-{name}") for name in EXPORTERS]
)


@pytest.mark.parametrize(("case", "kind", "name"), CASES)
def test_every_registered_entry_constructs_and_is_listed(case, kind, name, tmp_path):
    registry = (
        MODELS[kind] if kind else {_method_case: METHODS, _backend_case: BACKENDS, _exporter_case: EXPORTERS}[case]
    )
    entry = {e.name: e for e in registry.list()}[name]
    assert entry.available and entry.obj is registry.get(name) and entry.summary
    if kind:
        case(kind, name, tmp_path)
    else:
        case(name, tmp_path)


def test_the_sweep_covers_the_built_ins():
    ids = {p.id for p in CASES}
    assert {"model-clip-tiny-random", "model-dino-tiny-random"} <= ids
    assert {f"method-{n}" for n in ("zeroshot", "nola", "lafter")} <= ids
    assert {f"backend-{n}" for n in ("template", "file", "openai", "transformers")} <= ids
    assert {f"exporter-{n}" for n in ("csv", "jsonl", "imagefolder", "model")} <= ids


# --- no import-order dependence -----------------------------------------------------------------------------------

FRESH = [
    pytest.param(
        "from labeler.methods import list_methods\nprint(json.dumps([m['name'] for m in list_methods()]))",
        ["cdul", "cdul-init", "lafter", "latteclip", "nola", "zeroshot"],
        id="labeler.methods",
    ),
    pytest.param(
        "from labeler.methods.base import list_methods\nprint(json.dumps([m['name'] for m in list_methods()]))",
        ["cdul", "cdul-init", "lafter", "latteclip", "nola", "zeroshot"],
        id="labeler.methods.base",
    ),
    pytest.param(
        "from labeler.export import formats\nprint(json.dumps(formats()))",
        ["csv", "imagefolder", "jsonl", "model"],
        id="labeler.export",
    ),
    pytest.param(
        "from labeler.describe.base import list_backends\nprint(json.dumps([b['name'] for b in list_backends()]))",
        ["file", "openai", "template", "transformers"],
        id="labeler.describe.base",
    ),
    pytest.param(
        "from labeler.models.registry import registered\nprint(json.dumps([registered('clip'), registered('dino')]))",
        [["tiny-random"], ["tiny-random"]],
        id="labeler.models.registry",
    ),
]


@pytest.mark.parametrize(("code", "expected"), FRESH)
def test_a_fresh_interpreter_importing_only_the_accessor_lists_everything(code, expected):
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
