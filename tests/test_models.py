"""Model front door: tiny seeded models, offline errors, local weights, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from labeler.device import resolve_device
from labeler.errors import Hint, InvalidInputError, ModelUnavailableError
from labeler.models import ClipModel, DinoModel, list_models, load_clip, load_dino, load_encoder

from .conftest import REPO


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def dino():
    return load_dino("tiny-random", device="cpu")


def _batch(model, n=5):
    imgs = [Image.new("RGB", (40 + 3 * i, 30), (30 * i, 200 - 20 * i, 90)) for i in range(n)]
    return torch.stack([model.preprocess(im) for im in imgs])


def test_tiny_clip_shapes_keys_and_normalisation(clip):
    assert isinstance(clip, ClipModel)
    assert (clip.kind, clip.key, clip.dim, clip.image_size) == ("clip", "clip:tiny-random:none", 64, 32)
    x = _batch(clip)
    assert x.shape == (5, 3, 32, 32)
    f = clip.encode_images(x)
    assert f.shape == (5, 64) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(f[0], f[1])  # different images, different features
    assert clip.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's init for a random model


def test_tiny_clip_encodes_text_offline(clip):
    t = clip.encode_texts(["a photo of a cat", "a photo of a dog", "a truck"], batch_size=2)
    assert t.shape == (3, 64) and t.dtype == torch.float32
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(t[0], t[1])
    assert clip.encode_texts([]).shape == (0, 64)
    with pytest.raises(InvalidInputError):
        clip.encode_texts("a cat")


def test_tiny_dino_shapes_and_normalisation(dino):
    assert isinstance(dino, DinoModel)
    assert (dino.kind, dino.key, dino.dim, dino.image_size) == ("dino", "dino:tiny-random", 32, 32)
    f = dino.encode_images(_batch(dino))
    assert f.shape == (5, 32) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert not torch.allclose(f[0], f[1])


def test_load_encoder_dispatch_and_list_models(clip):
    assert load_encoder("clip", "tiny-random", device="cpu").key == clip.key
    assert load_encoder("dino", "tiny-random", device="cpu").key == "dino:tiny-random"
    with pytest.raises(InvalidInputError):
        load_encoder("sift", "tiny-random")
    with pytest.raises(InvalidInputError):
        load_encoder("dino", "tiny-random", pretrained="laion2b_s34b_b79k")
    models = list_models()
    assert "tiny-random" in models["clip"]["registered"] and "tiny-random" in models["dino"]["registered"]
    assert "ViT-B-32:laion2b_s34b_b79k" in models["clip"]["pretrained"]


def test_same_weights_same_features_in_two_processes(clip, dino):
    code = (
        "import hashlib, torch\n"
        "from labeler.models import load_clip, load_dino\n"
        "g = torch.Generator().manual_seed(7); x = torch.randn(4, 3, 32, 32, generator=g)\n"
        "h = hashlib.sha256()\n"
        "for m in (load_clip('tiny-random', device='cpu'), load_dino('tiny-random', device='cpu')):\n"
        "    h.update(m.encode_images(x).numpy().tobytes())\n"
        "print('HASH', h.hexdigest())\n"
    )
    # One fresh interpreter against this one: a second fresh one would only repeat the comparison (each must
    # equal this process's hash anyway) at the cost of another torch + open_clip + transformers import.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    hashes = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("HASH")]
    assert len(hashes) == 1
    # ... the same as this process, whose global RNG state is not the seed's.
    import hashlib

    torch.manual_seed(999)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    h = hashlib.sha256()
    for m in (load_clip("tiny-random", device="cpu"), load_dino("tiny-random", device="cpu")):
        h.update(m.encode_images(x).numpy().tobytes())
    assert hashes[0] == f"HASH {h.hexdigest()}"


def test_loading_tiny_model_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_clip("tiny-random", device="cpu")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name, pretrained, mentions",
    [
        ("ViT-B-32", "laion2b_s34b_b79k", ["ViT-B-32", "laion2b_s34b_b79k", "pretrained weights of ViT-B-32"]),
        ("ViT-B-32", "auto", ["ViT-B-32", "laion2b_s34b_b79k", "open_clip_pytorch_model.bin", "tiny-random"]),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None, ["laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "folder"]),
    ],
)
def test_clip_weights_missing_offline_is_a_clear_error(name, pretrained, mentions, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache, whatever this machine holds
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelUnavailableError) as info:
        load_clip(name, pretrained=pretrained, device="cpu")
    for text in mentions:
        assert text in str(info.value)
    assert info.value.hint == Hint(option="clip", value="tiny-random")


@pytest.mark.timeout(60)
def test_dino_weights_missing_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelUnavailableError) as info:
        load_dino("facebook/dinov2-small", device="cpu")
    msg = str(info.value)
    assert "facebook/dinov2-small" in msg and "save_pretrained" in msg and "HF_HOME" in msg
    assert "model.safetensors" in msg and "tiny-random" in msg
    assert info.value.hint == Hint(option="dino", value="tiny-random")


def test_unknown_names_tags_and_folders(tmp_path):
    with pytest.raises(ModelUnavailableError, match="unknown CLIP model"):
        load_clip("no-such-arch", pretrained=None, device="cpu")
    with pytest.raises(ModelUnavailableError, match="neither a known tag"):
        load_clip("tiny-random", pretrained=str(tmp_path / "missing.bin"), device="cpu")
    with pytest.raises(ModelUnavailableError, match="open_clip_config.json"):
        load_clip(str(tmp_path), device="cpu")
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_dino(str(tmp_path / "nope"), device="cpu")


def test_clip_from_local_checkpoint_file(clip, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    m = load_clip("tiny-random", pretrained=str(path), device="cpu")
    assert m.key == f"clip:tiny-random:{path.resolve()}"
    x = _batch(clip)
    assert torch.equal(m.encode_images(x), clip.encode_images(x))
    assert torch.equal(m.encode_texts(["a cat"]), clip.encode_texts(["a cat"]))
    # A checkpoint for another architecture is refused with a clear error.
    bad = tmp_path / "bad.pt"
    torch.save({"nonsense": torch.zeros(2)}, bad)
    with pytest.raises(ModelUnavailableError, match="cannot load checkpoint"):
        load_clip("tiny-random", pretrained=str(bad), device="cpu")


def test_clip_from_local_open_clip_folder(clip, tmp_path):
    from labeler.models.clip import CONFIG_DIR

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    model_cfg = json.loads((CONFIG_DIR / "tiny-random.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.save(clip.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    m = load_clip(str(folder), device="cpu")
    assert m.key == f"clip:local-dir:{folder.resolve()}"
    x = _batch(clip)
    assert torch.equal(m.encode_images(x), clip.encode_images(x))
    assert m.encode_texts(["a cat"]).shape == (1, 64)


def test_dino_from_folder_saved_with_save_pretrained(dino, tmp_path):
    dino.save_pretrained(tmp_path / "tiny-dino")
    m = load_dino(str(tmp_path / "tiny-dino"), device="cpu")
    assert m.key == f"dino:{(tmp_path / 'tiny-dino').resolve()}"
    assert m.image_size == 32
    x = _batch(dino)
    assert torch.equal(m.encode_images(x), dino.encode_images(x))
    # Same preprocessing: the same picture gives the same tensor.
    im = Image.new("RGB", (50, 37), (10, 120, 240))
    assert torch.equal(m.preprocess(im), dino.preprocess(im))


def test_preprocess_is_picklable(clip, dino):
    import pickle

    im = Image.new("L", (45, 33), 77)  # grey input is converted to RGB
    for m in (clip, dino):
        t = pickle.loads(pickle.dumps(m.preprocess))(im)
        assert t.shape == (3, m.image_size, m.image_size)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InvalidInputError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(InvalidInputError):
            load_clip("tiny-random", device="cuda:0")
    else:
        with pytest.raises(InvalidInputError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_precision_checks():
    with pytest.raises(InvalidInputError, match="precision"):
        load_clip("tiny-random", device="cpu", precision="int3")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="fp16 needs a GPU"):
            load_clip("tiny-random", device="cpu", precision="fp16")


@pytest.mark.filterwarnings("ignore:bf16")
def test_bf16_gives_float32_features_close_to_fp32(clip):
    m = load_clip("tiny-random", device="cpu", precision="bf16")
    x = _batch(clip)
    f = m.encode_images(x)
    assert f.dtype == torch.float32 and m.precision == "bf16"
    assert torch.allclose(f.norm(dim=-1), torch.ones(len(x)), atol=1e-5)
    assert (f * clip.encode_images(x)).sum(-1).min() > 0.98  # cosine to the fp32 features
    assert m.encode_texts(["a cat"]).dtype == torch.float32


@pytest.mark.timeout(60)
def test_unreachable_hub_fails_fast_without_offline_env(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, Hub unreachable: the cache is used and a miss fails at once (no minute of retries)."""
    import huggingface_hub.constants as hc

    from labeler.models import _hub

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    dead = "http://127.0.0.1:9"  # the discard port: connection refused
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr(hc, "ENDPOINT", dead)
    monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(_hub, "_reachable", None)
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    with pytest.raises(ModelUnavailableError, match="facebook/dinov2-small"):
        load_dino("facebook/dinov2-small", device="cpu")
    assert time.monotonic() - t0 < 30
    assert hc.HF_HUB_OFFLINE is False  # restored after the load


def test_list_models_needs_no_open_clip_import_and_matches_it():
    """The app lists the models as it starts: from a snapshot of the installed open_clip's lists, no import."""
    code = (
        "import json, sys\nfrom labeler.models import list_models\nm = list_models()\n"
        "print('OUT', json.dumps([m['clip']['pretrained'], m['clip']['architectures'], "
        "[x for x in ('open_clip', 'torch') if x in sys.modules]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pretrained, architectures, loaded = json.loads(proc.stdout.split("OUT ", 1)[1])
    assert loaded == []
    from importlib.metadata import version

    from labeler.models import _open_clip_snapshot
    from labeler.models._openclip import open_clip_module

    oc = open_clip_module()
    if version("open_clip_torch") == _open_clip_snapshot.VERSION:
        assert pretrained == oc.list_pretrained(as_str=True) and architectures == oc.list_models()
