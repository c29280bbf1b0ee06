"""The ``transformers`` backend: a local Hugging Face model on the chosen device.

A causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``) writes class
descriptions; an image-text-to-text model (``AutoModelForImageTextToText`` +
``AutoProcessor``) writes captions, and can write descriptions too. Give a Hub
id (downloaded once, then read from the cache), a local folder, or — in code —
an already-built model with its tokenizer or processor.

torch and transformers are imported only when the first request arrives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import Hint, InvalidInputError, ModelUnavailableError
from .base import Backend, BackendError, Request, Response, load_image

_TEXT_EXAMPLE = "Qwen/Qwen2.5-0.5B-Instruct"
_VISION_EXAMPLE = "HuggingFaceTB/SmolVLM-256M-Instruct"


def _hub_context():
    try:
        from ..models import hub_mode
    except ImportError:
        return contextlib.nullcontext()
    return hub_mode()


def _unavailable(model_id: str, what: str, exc: Exception) -> ModelUnavailableError:
    local = Path(model_id).expanduser()
    detail = " ".join(str(exc).split()).split(". ")[0]
    if local.exists():
        return ModelUnavailableError(
            f"cannot load {what} from the folder {local}: {type(exc).__name__}: {detail[:300]}. The folder needs "
            "config.json, the weights and the tokenizer/processor files (save_pretrained writes them)"
        )
    return ModelUnavailableError(
        f"cannot load {what} {model_id!r}: it is not in the Hugging Face cache and cannot be downloaded "
        f"({type(exc).__name__}: {detail[:200]}). Download it once with `hf download {model_id}` on a machine "
        "with internet (or unset HF_HUB_OFFLINE), or give a local folder holding config.json and the weights as "
        "the model",
        hint=Hint(option="model"),
    )


def _is_vision_config(config: Any) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or [])
    return bool(
        getattr(config, "vision_config", None) is not None
        or "ImageTextToText" in archs
        or "VisionText" in archs
        or ("ForConditionalGeneration" in archs and "VL" in archs.upper())
    )


class TransformersBackend(Backend):
    """A local Hugging Face model.

    Parameters
    ----------
    model : str or torch.nn.Module
        Hub id or local folder, e.g. ``Qwen/Qwen2.5-0.5B-Instruct`` (descriptions) or
        ``HuggingFaceTB/SmolVLM-256M-Instruct`` (captions and descriptions); or a built model.
    tokenizer : optional
        The tokenizer of a built causal LM.
    processor : optional
        The processor of a built image-text-to-text model.
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    dtype : str
        ``auto`` (bfloat16/float16 on GPU, float32 on CPU), ``float32``, ``float16`` or ``bfloat16``.
    batch_size : int
        Text prompts generated together (images go one request at a time).
    seed : int
        Base seed of sampling; each request adds its sample index.
    name : str, optional
        Model name for the cache key and records (default: the id, or the built model's ``name_or_path``).
    trust_remote_code : bool
        Passed to ``from_pretrained`` (only for models you trust).
    """

    name = "transformers"
    summary = "a local Hugging Face model (causal LM for descriptions, image-text-to-text for captions)"
    source = "llm"
    supports_images = True  # checked when the model loads: a text-only model says so

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        processor: Any = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        seed: int = 0,
        name: str | None = None,
        trust_remote_code: bool = False,
    ):
        if model is None or (isinstance(model, str) and not model.strip()):
            raise InvalidInputError(
                f"the transformers backend needs a model: a Hugging Face id (e.g. {_TEXT_EXAMPLE} for descriptions, "
                f"{_VISION_EXAMPLE} for captions) or a local folder",
                hint=Hint(option="model"),
            )
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise InvalidInputError(f"dtype {dtype!r} is not one of auto, float32, float16, bfloat16")
        from ..device import resolve_device

        self.device = resolve_device(device)
        self.dtype_name = dtype
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.trust_remote_code = bool(trust_remote_code)
        self._id: str | None = None
        self._model = None
        self._tokenizer = tokenizer
        self._processor = processor
        self._kind: str | None = None  # causal | vlm
        if isinstance(model, (str, os.PathLike)):
            self._id = os.fspath(model)
            self.model = name or self._id
        else:
            if tokenizer is None and processor is None:
                raise InvalidInputError("a built model needs its tokenizer= (causal LM) or processor= (vision model)")
            self._model = model
            self._kind = "vlm" if processor is not None else "causal"
            self.model = name or getattr(model, "name_or_path", "") or type(model).__name__
            self._place(model)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "device": str(self.device)}

    def close(self) -> None:
        self._model = None

    # --- loading ------------------------------------------------------------------------------------------------
    def _torch_dtype(self):
        import torch

        if self.dtype_name != "auto":
            return getattr(torch, self.dtype_name)
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def _place(self, model) -> None:
        model.to(self.device)
        if self.dtype_name != "auto":
            model.to(self._torch_dtype())
        model.eval()

    def _load(self) -> None:
        if self._model is not None:
            return
        import transformers

        assert self._id is not None
        kw = {"trust_remote_code": self.trust_remote_code}
        with _hub_context():
            try:
                config = transformers.AutoConfig.from_pretrained(self._id, **kw)
            except (OSError, ValueError) as exc:
                raise _unavailable(self._id, "the model", exc) from None
            kind = "vlm" if _is_vision_config(config) else "causal"
            try:
                if kind == "vlm":
                    model = transformers.AutoModelForImageTextToText.from_pretrained(
                        self._id, dtype=self._torch_dtype(), **kw
                    )
                    self._processor = self._processor or transformers.AutoProcessor.from_pretrained(self._id, **kw)
                else:
                    model = transformers.AutoModelForCausalLM.from_pretrained(self._id, dtype=self._torch_dtype(), **kw)
                    self._tokenizer = self._tokenizer or transformers.AutoTokenizer.from_pretrained(self._id, **kw)
            except (OSError, ValueError) as exc:
                what = "the image-text-to-text model" if kind == "vlm" else "the causal language model"
                raise _unavailable(self._id, what, exc) from None
        self._kind = kind
        self._model = model
        self._place(model)

    # --- generation ---------------------------------------------------------------------------------------------
    def complete(self, requests: Sequence[Request]) -> list[Response]:
        if not requests:
            return []
        self._load()
        out: list[Response | None] = [None] * len(requests)
        text_idx = [i for i, r in enumerate(requests) if not r.images]
        image_idx = [i for i, r in enumerate(requests) if r.images]
        if image_idx and self._kind != "vlm":
            raise ModelUnavailableError(
                f"model {self.model!r} is a text-only language model and cannot take images: for captions pick an "
                f"image-text-to-text model, e.g. {_VISION_EXAMPLE}",
                hint=Hint(option="model"),
            )
        try:
            for idx in self._batches(requests, text_idx):
                for i, texts in zip(idx, self._generate([requests[i] for i in idx]), strict=True):
                    out[i] = Response(texts)
            for i in image_idx:
                out[i] = Response(self._generate([requests[i]])[0])
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise BackendError(
                    f"out of memory on {self.device} running {self.model!r}: lower the batch size, pick a smaller "
                    "model, or use the CPU",
                    hint=Hint(option="batch_size"),
                ) from None
            raise
        return [r for r in out if r is not None]

    def _batches(self, requests: Sequence[Request], idx: list[int]) -> list[list[int]]:
        """Runs of at most ``batch_size`` requests sharing n, temperature and max_tokens (one generate call each)."""
        batches: list[list[int]] = []
        for i in idx:
            r = requests[i]
            if batches:
                head = requests[batches[-1][0]]
                same = (head.n, head.temperature, head.max_tokens) == (r.n, r.temperature, r.max_tokens)
                if same and len(batches[-1]) < self.batch_size:
                    batches[-1].append(i)
                    continue
            batches.append([i])
        return batches

    def _render(self, r: Request) -> tuple[str, list]:
        """The prompt text (chat template when the tokenizer/processor has one) and the request's images."""
        images = [load_image(im) for im in r.images]
        if self._kind == "vlm":
            proc = self._processor
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": r.prompt}]
            messages = []
            if r.system:
                messages.append({"role": "system", "content": [{"type": "text", "text": r.system}]})
            messages.append({"role": "user", "content": content})
            if getattr(proc, "chat_template", None):
                try:
                    return proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), images
                except Exception:  # templates without a system role: fold it into the user turn
                    merged = [{"type": "image"} for _ in images] + [
                        {"type": "text", "text": f"{r.system}\n\n{r.prompt}" if r.system else r.prompt}
                    ]
                    return proc.apply_chat_template(
                        [{"role": "user", "content": merged}], add_generation_prompt=True, tokenize=False
                    ), images
            token = getattr(proc, "image_token", None) or "<image>"
            text = (r.system + "\n\n" if r.system else "") + token * len(images) + r.prompt
            return text, images
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            messages = r.messages()
            try:
                return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), images
            except Exception:  # e.g. Gemma: no system role
                user = f"{r.system}\n\n{r.prompt}" if r.system else r.prompt
                return tok.apply_chat_template(
                    [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
                ), images
        return (f"{r.system}\n\n" if r.system else "") + f"{r.prompt}\n", images

    def _generate(self, reqs: Sequence[Request]) -> list[list[str]]:
        """Generate for requests that share the first one's sampling settings: ``n`` texts per request."""
        import torch

        rendered = [self._render(r) for r in reqs]
        texts = [t for t, _ in rendered]
        images = [im for _, ims in rendered for im in ims]
        templated = bool(getattr(self._processor if self._kind == "vlm" else self._tokenizer, "chat_template", None))
        tok = self._processor.tokenizer if self._kind == "vlm" else self._tokenizer
        old_side = getattr(tok, "padding_side", "right")
        tok.padding_side = "left"  # decoder-only generation pads on the left
        if tok.pad_token_id is None and tok.eos_token_id is not None:
            tok.pad_token = tok.eos_token
        try:
            if self._kind == "vlm":
                kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
                if images:
                    kwargs["images"] = images
                inputs = self._processor(**kwargs)
            else:
                inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        finally:
            tok.padding_side = old_side
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        first = reqs[0]
        n = max(1, int(first.n))
        gen: dict[str, Any] = {
            "max_new_tokens": int(first.max_tokens),
            "num_return_sequences": n,
            "pad_token_id": tok.pad_token_id,
            "do_sample": first.temperature > 0,
        }
        if first.temperature > 0:
            gen["temperature"] = float(first.temperature)
            gen["top_p"] = 0.95
        torch.manual_seed(self.seed + int(first.sample))
        with torch.inference_mode():
            out = self._model.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1] :]
        decoded = tok.batch_decode(new, skip_special_tokens=True)
        return [[d.strip() for d in decoded[i * n : (i + 1) * n]] for i in range(len(reqs))]
