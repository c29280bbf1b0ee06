"""The transformers backend with tiny random models built from configs (offline; gibberish output).

What is tested is the plumbing — chat templates, left padding, decoding only the new tokens,
n samples, images through the processor, caching, loading from a folder, device handling —
not the quality of the text.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from labeler.describe import (  # noqa: E402
    Request,
    TransformersBackend,
    caption_images,
    captions_by_image,
    generate_descriptions,
    get_backend,
    list_descriptions,
)
from labeler.errors import InvalidInputError, ModelUnavailableError  # noqa: E402

from .test_describe import add_images  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>", "<|user|>", "<|system|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        ["Describe what a cat looks like.", "1. A cat has soft fur.\n2. A cat has whiskers.", "a photo of a dog"],
        trainer,
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = _tokenizer()
    text_cfg = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    lm = transformers.LlamaForCausalLM(text_cfg).eval()
    vision_cfg = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    vlm_cfg = transformers.LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    vlm = transformers.LlavaForConditionalGeneration(vlm_cfg).eval()
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=CHAT_TEMPLATE,
    )
    return {"tok": tok, "lm": lm, "vlm": vlm, "processor": processor}


def _scripted_generate(model, tok, answer: str):
    """Make ``model.generate`` append the tokens of ``answer`` (after really running the model once)."""
    real = model.generate
    calls = []

    def generate(**kwargs):
        calls.append(kwargs)
        out = real(**{**kwargs, "max_new_tokens": 1})
        prompt = kwargs["input_ids"].repeat_interleave(kwargs.get("num_return_sequences", 1), dim=0)
        extra = torch.tensor(tok(answer, add_special_tokens=False)["input_ids"]).repeat(prompt.shape[0], 1)
        assert out.shape[0] == prompt.shape[0]
        return torch.cat([prompt, extra.to(prompt.device)], dim=1)

    return generate, calls


def test_random_causal_lm_plumbing_and_cache(project, tiny):
    backend = TransformersBackend(
        model=tiny["lm"], tokenizer=tiny["tok"], device="cpu", name="tiny-llama", batch_size=3
    )
    assert backend.info() == {"backend": "transformers", "model": "tiny-llama", "device": "cpu"}
    assert next(tiny["lm"].parameters()).device.type == "cpu"
    # n samples per request, prompts of different lengths batched together (left padding)
    out = backend.complete(
        [Request(prompt="Describe a cat", n=2, max_tokens=5, temperature=1.0), Request(prompt="hi", n=2, max_tokens=5)]
    )
    assert [len(r.texts) for r in out] == [2, 2]
    assert all(isinstance(t, str) for r in out for t in r.texts)
    calls = {"n": 0}
    real = tiny["lm"].generate

    def counting(**kw):
        calls["n"] += 1
        return real(**kw)

    tiny["lm"].generate = counting
    # A random model writes no real sentence, and unusable answers are neither stored nor cached; this test is
    # about batching and the cache, so here every answer counts as one sentence.
    backend.sentences_from = lambda text: [text]
    try:
        result = generate_descriptions(project, backend, classes=["cat", "dog"], samples_per_prompt=1, max_tokens=6)
        assert result["requests"] == 12 and result["sent"] == 12
        assert calls["n"] == 4  # 12 requests in batches of 3
        rows = project.db.execute("select backend, model, count(*) from llm_cache group by 1, 2").fetchall()
        assert rows == [("transformers", "tiny-llama", 12)]
        again = generate_descriptions(project, backend, classes=["cat", "dog"], samples_per_prompt=1, max_tokens=6)
        assert again["cached"] == 12 and calls["n"] == 4  # nothing generated the second time
    finally:
        del tiny["lm"].generate


def test_decodes_only_new_tokens_and_parses(project, tiny):
    tok = tiny["tok"]
    backend = TransformersBackend(model=tiny["lm"], tokenizer=tok, device="cpu", name="tiny-scripted")
    generate, calls = _scripted_generate(tiny["lm"], tok, "1. A cat has soft fur.\n2. A cat has whiskers.")
    tiny["lm"].generate = generate
    try:
        (resp,) = backend.complete([Request(prompt="Describe what a cat looks like.", system="Be brief.", n=2)])
        assert resp.texts == ["1. A cat has soft fur.\n2. A cat has whiskers."] * 2
        prompt = tok.decode(calls[0]["input_ids"][0])
        assert prompt.startswith("<|system|>Be brief.</s><|user|>Describe what a cat looks like.")
        assert prompt.endswith("<|assistant|>")  # the chat template with the generation prompt
        assert calls[0]["num_return_sequences"] == 2 and calls[0]["do_sample"] is True
        generate_descriptions(project, backend, classes=["cat"], samples_per_prompt=1)
        texts = [r["text"] for r in list_descriptions(project, "cat")]
        assert texts == ["A cat has soft fur.", "A cat has whiskers."]
    finally:
        del tiny["lm"].generate


def test_plain_prompt_without_chat_template(tiny):
    tok = _tokenizer()
    tok.chat_template = None
    backend = TransformersBackend(model=tiny["lm"], tokenizer=tok, device="cpu")
    text, images = backend._render(Request(prompt="Describe a cat.", system="Be brief."))
    assert text == "Be brief.\n\nDescribe a cat.\n" and images == []
    (resp,) = backend.complete([Request(prompt="Describe a cat.", max_tokens=3, temperature=0)])
    assert len(resp.texts) == 1


def test_random_vision_model_captions_and_groups(project, tiny, tmp_path):
    images = add_images(project, tmp_path / "imgs", 5, size=(40, 30))
    class_of = {im["id"]: "cat" for im in images[:4]}
    backend = TransformersBackend(model=tiny["vlm"], processor=tiny["processor"], device="cpu", name="tiny-llava")
    (resp,) = backend.complete([Request(prompt="Describe.", images=[images[0]["path"]], max_tokens=4)])
    assert len(resp.texts) == 1
    generate, calls = _scripted_generate(tiny["vlm"], tiny["tok"], "Sure! A small cat on a sofa.")
    tiny["vlm"].generate = generate
    try:
        result = caption_images(project, backend, groups=True, class_of=class_of, max_tokens=5)
        assert result["sent"] == 5 + 1 and len(calls) == 6
        assert all(c["pixel_values"].shape == (1, 3, 32, 32) for c in calls)  # one image (or one grid) each
        image_tokens = (calls[0]["input_ids"] == tiny["tok"].convert_tokens_to_ids("<image>")).sum().item()
        assert image_tokens == 16  # (32 / 8)² patches
        caps = captions_by_image(project)
        assert caps[images[0]["id"]] == {"image": "A small cat on a sofa.", "group": "A small cat on a sofa."}
        assert caps[images[4]["id"]] == {"image": "A small cat on a sofa."}
        assert caption_images(project, backend, groups=True, class_of=class_of, max_tokens=5)["sent"] == 0
        assert len(calls) == 6
    finally:
        del tiny["vlm"].generate
    # a vision model also answers text-only description requests (a random one writes no real sentence: count
    # every answer as one, since unusable answers would fail the job)
    backend.sentences_from = lambda text: [text]
    assert generate_descriptions(project, backend, classes=["dog"], samples_per_prompt=1, max_tokens=3)["sent"] == 6


def test_load_from_local_folders(project, tiny, tmp_path):
    tiny["lm"].save_pretrained(tmp_path / "lm")
    tiny["tok"].save_pretrained(tmp_path / "lm")
    tiny["vlm"].save_pretrained(tmp_path / "vlm")
    tiny["processor"].save_pretrained(tmp_path / "vlm")
    text = get_backend("transformers", model=str(tmp_path / "lm"), device="cpu", dtype="float32")
    assert text.model == str(tmp_path / "lm")
    (resp,) = text.complete([Request(prompt="Describe a cat.", max_tokens=3)])
    assert text._kind == "causal" and len(resp.texts) == 1
    with pytest.raises(ModelUnavailableError, match="text-only .*cannot take images.*image-text-to-text"):
        text.complete([Request(prompt="Describe.", images=[tmp_path / "nope.png"])])
    vision = get_backend("transformers", model=str(tmp_path / "vlm"), device="cpu")
    add_images(project, tmp_path / "imgs", 1)
    assert caption_images(project, vision, max_tokens=3)["sent"] == 1
    assert vision._kind == "vlm"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="folder .*empty.*config.json"):
        get_backend("transformers", model=str(tmp_path / "empty")).complete([Request(prompt="x")])


def test_missing_model_offline_says_how_to_fix():
    backend = get_backend("transformers", model="labeler-test/definitely-not-a-model", device="cpu")
    fix = r"'labeler-test/definitely-not-a-model'.*hf download.*a local folder holding config.json"
    with pytest.raises(ModelUnavailableError, match=fix):
        backend.complete([Request(prompt="x")])


def test_device_and_option_errors(tiny):
    with pytest.raises(InvalidInputError, match="needs a model"):
        get_backend("transformers")
    with pytest.raises(InvalidInputError, match="tokenizer="):
        TransformersBackend(model=tiny["lm"])
    with pytest.raises(InvalidInputError, match="dtype"):
        get_backend("transformers", model="x", dtype="float8")
    with pytest.raises(InvalidInputError, match="device"):
        get_backend("transformers", model="x", device="tpu-9")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA"):
            get_backend("transformers", model="x", device="cuda")
    mps = getattr(torch.backends, "mps", None)
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
    assert get_backend("transformers", model="x", device="auto").device.type == expected
    assert get_backend("transformers", model="x", device="cpu").device.type == "cpu"
