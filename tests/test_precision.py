"""``--precision auto``: the rule, the bf16 probe and its cache, what feature sets record, the CLI, gpu_check.

Every test runs on any CPU: the CPU flags are passed in (or monkeypatched), so the native-bf16 branches are
exercised on machines without AVX512-BF16 too (bf16 is then emulated: slower, same numbers).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from labeler import precision as prec
from labeler.errors import InvalidInputError
from labeler.features import compute_features, feature_matrix, set_precisions
from labeler.models import ClipModel, load_clip
from labeler.project import Project

from .conftest import REPO
from .synth import image_folder

pytestmark = pytest.mark.filterwarnings("ignore:bf16")
NATIVE = frozenset({"fpu", "avx512f", "avx512_bf16"})


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-random", device="cpu")


@pytest.fixture
def proj(tmp_path):
    from labeler.ingest import import_sources

    src = image_folder(tmp_path / "imgs", 3, classes=["cat", "dog"])
    project = Project.create(tmp_path / "proj", ["cat", "dog"])
    import_sources(project, [str(src)])
    return project


class _Unstable(ClipModel):
    """A CLIP whose bf16 features are far from its fp32 ones (a model that does not survive bf16)."""

    def _image_features(self, x):
        out = super()._image_features(x)
        if self.precision == "bf16":
            out = out + 2.0 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.dtype)
        return out


class _Relabelled(ClipModel):
    """fp32 weights that say bf16: bf16 vectors that exactly match fp32 (a perfectly stable model)."""

    @property
    def dtype(self):
        return torch.float32


def _as(model, cls, precision=None):
    out = copy.copy(model)
    out.__class__ = cls
    if precision:
        out.precision = precision
    return out


# --- the rule ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "flags", "probe", "gpu_bf16", "expected"),
    [
        ("cuda", (), None, True, "bf16"),
        ("cuda", (), None, False, "fp16"),
        ("cuda", NATIVE, False, True, "bf16"),  # the CPU probe does not apply on a GPU
        ("cpu", NATIVE, True, False, "bf16"),
        ("cpu", {"amx_bf16"}, True, False, "bf16"),
        ("cpu", {"bf16", "asimd"}, True, False, "bf16"),  # Arm (Features: ... bf16)
        ("cpu", NATIVE, False, False, "fp32"),  # probe failed
        ("cpu", NATIVE, None, False, "fp32"),  # not probed yet
        ("cpu", {"avx512f", "avx2"}, True, False, "fp32"),  # AVX512 without BF16: emulated, slower
        ("cpu", (), True, False, "fp32"),
        ("mps", NATIVE, True, True, "fp32"),
    ],
)
def test_auto_precision_rule(device, flags, probe, gpu_bf16, expected):
    assert prec.auto_precision(device, flags, probe, gpu_bf16) == expected


def test_needs_probe_and_cpu_flags(tmp_path, monkeypatch):
    assert prec.needs_probe("cpu", NATIVE) and not prec.needs_probe("cpu", {"avx2"})
    assert not prec.needs_probe("cuda", NATIVE)
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert {"avx512_bf16", "amx_tile", "fpu"} <= prec.cpu_flags(x86) and prec.native_bf16(prec.cpu_flags(x86))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert prec.native_bf16(prec.cpu_flags(arm))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert prec.cpu_flags(tmp_path / "missing") == frozenset()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX")
    assert prec.native_bf16(prec.cpu_flags(tmp_path / "missing"))


# --- converting and probing ------------------------------------------------------------------------------------
def test_converted_copy_leaves_the_fp32_weights_exact(clip):
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    low = clip.converted("bf16")
    assert low.precision == "bf16" and clip.precision == "fp32" and low.model is not clip.model
    assert any(p.dtype == torch.bfloat16 for p in low.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in clip.model.state_dict().items())
    assert clip.converted("fp32") is clip


def test_probe_measures_the_cosine_of_the_same_weights(clip, proj):
    x = prec._sample_batch(proj, clip, 4)
    cos, speedup, low = prec.probe_bf16(clip, x)
    assert 0.9 < cos <= 1.0 + 1e-6 and low.precision == "bf16" and speedup > 0
    unstable = _as(clip, _Unstable)
    cos_bad, _, _ = prec.probe_bf16(unstable, x)
    assert cos_bad < prec.COSINE_MIN


def test_probe_refuses_bf16_for_an_unstable_model_and_caches_the_result(clip, proj, monkeypatch):
    unstable = _as(clip, _Unstable)
    model, info = prec.choose_encoder(proj, unstable, "auto", flags=NATIVE)
    assert model.precision == "fp32" and info["precision"] == "fp32"
    assert info["probe"]["ok"] is False and info["probe"]["cosine_min"] < prec.COSINE_MIN
    assert "failed" in info["reason"]
    cached = proj.get_meta(prec.PROBE_META_KEY)[clip.key]["bf16"]
    assert cached["ok"] is False and cached["images"] == 6 and cached["torch"] == torch.__version__
    # One-time: the next choice reads the cache and runs no probe.
    monkeypatch.setattr(prec, "probe_bf16", lambda *a: pytest.fail("the probe ran again"))
    model, info = prec.choose_encoder(proj, unstable, "auto", flags=NATIVE)
    assert model.precision == "fp32" and info["probe"]["cached"] is True


def test_probe_passing_picks_bf16_once_and_other_devices_skip_it(clip, proj, monkeypatch):
    calls = []

    def fake_probe(model, batch):
        calls.append(len(batch))
        return 0.99995, 2.0, model.converted("bf16")

    monkeypatch.setattr(prec, "probe_bf16", fake_probe)
    model, info = prec.choose_encoder(proj, clip, "auto", flags=NATIVE)
    assert model.precision == "bf16" and info["probe"] == {**info["probe"], "ok": True, "cached": False}
    model, info = prec.choose_encoder(proj, clip, "auto", flags=NATIVE)
    assert model.precision == "bf16" and info["probe"]["cached"] is True and calls == [6]
    # No native bf16: fp32 without probing; an explicit precision is kept as it is.
    model, info = prec.choose_encoder(proj, clip, "auto", flags={"avx2"})
    assert model is clip and info["precision"] == "fp32" and info["probe"] is None
    assert prec.choose_encoder(proj, clip, "fp32", flags=NATIVE)[0] is clip
    with pytest.raises(InvalidInputError, match="precision"):
        prec.choose_encoder(proj, clip, "int8")


def test_a_bf16_that_is_not_faster_stays_fp32(clip, proj, monkeypatch):
    monkeypatch.setattr(prec, "probe_bf16", lambda model, batch: (0.99999, 0.4, model.converted("bf16")))
    model, info = prec.choose_encoder(proj, clip, "auto", flags=NATIVE)
    assert model is clip and info["precision"] == "fp32" and info["probe"]["ok"] is False
    assert "not 1.1x faster" in info["reason"] and "0.40x" in info["reason"]


def test_a_changed_torch_version_probes_again(clip, proj, monkeypatch):
    prec._store_probe(proj, clip.key, "bf16", {"cosine_min": 0.5, "ok": False, "images": 6, "torch": "0.0"})
    assert prec.cached_probe(proj, clip.key) is None


def test_training_precision_follows_the_cached_probe(clip, proj):
    params = {"precision": "auto", "device": "cpu", "base": {"key": clip.key}}
    assert prec.training_precision(proj, params, flags=NATIVE) == "auto"  # not probed yet
    prec._store_probe(
        proj, clip.key, "bf16", {"cosine_min": 0.9999, "ok": True, "images": 6, "torch": torch.__version__}
    )
    assert prec.training_precision(proj, params, flags=NATIVE) == "bf16"
    assert prec.training_precision(proj, params, flags={"avx2"}) == "auto"
    assert prec.training_precision(proj, {**params, "precision": "fp32"}, flags=NATIVE) == "fp32"
    prec._store_probe(
        proj, clip.key, "bf16", {"cosine_min": 0.99, "ok": False, "images": 6, "torch": torch.__version__}
    )
    assert prec.training_precision(proj, params, flags=NATIVE) == "auto"


# --- what a feature set records ----------------------------------------------------------------------------------
def test_set_params_record_the_precisions_and_keys_stay_readable(clip, proj, tmp_path):
    from labeler.ingest import import_sources

    res = compute_features(proj, clip)
    fset = proj.features.get_set(clip.key)
    assert fset["key"] == "clip:tiny-random:none" and res["precision"] == "fp32" and "precision_check" not in res
    assert json.loads(fset["params"])["precisions"] == ["fp32"] and set_precisions(fset) == ["fp32"]
    # A set written before the precisions were listed reads as its creation precision.
    proj.features.set_params(fset["id"], {"image_size": 32, "precision": "fp32"})
    assert set_precisions(proj.features.get_set(clip.key)) == ["fp32"]
    assert set_precisions({"params": "{}"}) == ["fp32"]

    # New images in bf16 whose features match the stored fp32 ones: they join the set, which lists both.
    import_sources(proj, [str(image_folder(tmp_path / "more", 2, classes=["cat", "dog"], seed=1))])
    stable = _as(clip, _Relabelled, "bf16")
    res = compute_features(proj, stable)
    assert res["computed"] == 4 and res["precision"] == "bf16"
    assert res["precision_check"]["cosine_min"] >= prec.COSINE_MIN and res["precision_check"]["images"] == 6
    assert set_precisions(proj.features.get_set(clip.key)) == ["bf16", "fp32"]
    ids, X = feature_matrix(proj, clip.key)
    assert len(ids) == 10 and X.dtype == np.float32
    run = [r for r in proj.db["runs"].rows_where("kind = 'features'", order_by="id")][-1]
    assert json.loads(run["params"])["precision"] == "bf16"


def test_vectors_of_a_precision_that_differs_are_refused(clip, proj, tmp_path):
    from labeler.ingest import import_sources

    compute_features(proj, clip)
    import_sources(proj, [str(image_folder(tmp_path / "more", 2, classes=["cat", "dog"], seed=1))])
    unstable = _as(clip.converted("bf16"), _Unstable)
    with pytest.raises(InvalidInputError, match=r"holds fp32 vectors.*compute features again in fp32"):
        compute_features(proj, unstable)
    assert set_precisions(proj.features.get_set(clip.key)) == ["fp32"]
    assert len(feature_matrix(proj, clip.key)[0]) == 6


# --- the CLI -------------------------------------------------------------------------------------------------------
def test_features_precision_auto_end_to_end(proj, monkeypatch, capsys):
    from labeler.cli import main

    monkeypatch.setattr(prec, "cpu_flags", lambda path="/proc/cpuinfo": NATIVE)
    monkeypatch.delenv("LABELER_CPU_BF16", raising=False)  # the suite's fp32 setting (conftest) lifted here
    root = str(proj.root)
    assert main(["features", root, "--clip", "tiny-random", "--dino", "tiny-random", "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["feature_sets"]
    again = Project(root)
    probes = again.get_meta(prec.PROBE_META_KEY)
    for res in out:
        choice = res["precision_choice"]
        probe = choice["probe"]
        assert choice["asked"] == "auto" and probe["cached"] is False and probe["images"] == 6
        assert probes[res["key"]]["bf16"]["ok"] == probe["ok"]
        # bf16 exactly when the probe passed (same features, faster); the set and the job record what was used.
        assert probe["ok"] == (probe["cosine_min"] >= prec.COSINE_MIN and probe["speedup"] >= prec.MIN_SPEEDUP)
        assert res["precision"] == choice["precision"] == ("bf16" if probe["ok"] else "fp32")
        assert set_precisions(again.features.get_set(res["key"])) == [res["precision"]]
        assert res["computed"] == 6
    # The second run reads the cached probes; text output names the precision and why.
    assert main(["features", root, "--clip", "tiny-random", "--dino", "tiny-random", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "clip:tiny-random:none: computed 0, cached 6" in text and "bf16 probe" in text and "min cosine" in text
    # No native bf16: auto is fp32 and says why.
    monkeypatch.setattr(prec, "cpu_flags", lambda path="/proc/cpuinfo": frozenset({"avx2"}))
    assert main(["features", root, "--clip", "tiny-random", "--quiet"]) == 0
    assert "fp32: no native bf16 on this CPU" in capsys.readouterr().out


# --- bench/gpu_check.py --------------------------------------------------------------------------------------------
def test_gpu_check_skips_without_cuda():
    code = "import sys, torch; torch.cuda.is_available = lambda: False; sys.argv = ['gpu_check']; "
    code += "import runpy; runpy.run_path('bench/gpu_check.py', run_name='__main__')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device: skipped" in out.stdout


def test_gpu_check_cpu_dry_run(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "bench/gpu_check.py", "--cpu", "--images", "32", "--json", str(report)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["failed"] == [] and data["resume"]["resumed_from_epoch"] >= 1
    assert set(data["training"]) == {"nola", "lafter"} and "bf16" in data["features"]["clip"]
    assert data["cdul"]["backbone"] == "clip" and data["cdul"]["backbone_max_change"] > 0


# --- zero-shot over the cached float16 rows -----------------------------------------------------------------------
def test_zeroshot_scores_the_float16_rows_without_a_full_float32_copy(clip, proj, monkeypatch):
    from labeler.methods import get_method
    from labeler.methods.zeroshot import zero_shot_probs
    from store.features import FeatureStore

    compute_features(proj, clip)
    ids, X = feature_matrix(proj, clip.key)
    monkeypatch.setattr(FeatureStore, "ok_vectors", lambda *a: pytest.fail("the whole matrix was converted"))
    zs = get_method("zeroshot")
    res = zs.run(proj, zs.params_from({"device": "cpu", "batch_size": 4}))
    assert res.metrics["n"] == len(ids) == 6
    W = np.eye(2, X.shape[1], dtype=np.float32)
    np.testing.assert_allclose(zero_shot_probs(X.astype(np.float16), W), zero_shot_probs(X, W), atol=1e-5)


def test_training_auto_runs_bf16_autocast_once_the_probe_passed(clip, proj, monkeypatch):
    from labeler.methods import get_method
    from labeler.train import train

    compute_features(proj, clip)
    monkeypatch.setattr(prec, "cpu_flags", lambda path="/proc/cpuinfo": NATIVE)
    monkeypatch.delenv("LABELER_CPU_BF16", raising=False)  # the suite's fp32 setting (conftest) lifted here
    ok = {"cosine_min": 0.9999, "speedup": 2.0, "ok": True, "images": 6, "torch": torch.__version__}
    prec._store_probe(proj, clip.key, "bf16", ok)
    params = get_method("lafter").params_from({"epochs": 1, "batch_size": 4, "tokens": 2, "device": "cpu"})
    res = train(proj, "lafter", params, resume=None)
    assert res.metrics["amp"] == "bf16"
    assert json.loads(proj.db["runs"].get(res.run_id)["params"])["precision"] == "auto"  # decided again on resume


def test_labeler_cpu_bf16_0_makes_auto_fp32_without_a_probe(tmp_path, monkeypatch):
    """The suite's setting (tests/conftest.py): ``auto`` never depends on the probe's timing."""
    import labeler.precision as prec

    monkeypatch.setattr(prec, "cpu_flags", lambda *a, **k: frozenset({"avx512_bf16"}))
    monkeypatch.setenv("LABELER_CPU_BF16", "0")
    assert prec.machine_flags() == frozenset()
    monkeypatch.setenv("LABELER_CPU_BF16", "1")
    assert prec.machine_flags() == frozenset({"avx512_bf16"})
    monkeypatch.delenv("LABELER_CPU_BF16")
    assert prec.native_bf16(prec.machine_flags())
