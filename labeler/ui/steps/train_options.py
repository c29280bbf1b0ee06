"""The Train step's options form: a method's params as fields, with this device's defaults and what each costs.

The fields and their defaults come from the method's params dataclass (:func:`labeler.methods.method_defaults`);
an option left ``None`` there (filled by the recipe and the device, :func:`labeler.train.recipes.apply_recipe`,
:func:`labeler.train.params.resolve_training`) shows as an empty field whose line says what it becomes here, and
stays ``None`` unless the user types a value — so a recipe picked later still fills it. :func:`options_json` is the
form as the JSON options that Start sends (and the run records).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from ...device import resolve_device
from ...errors import InvalidInputError
from ...methods import get_method, method_defaults
from ...train.params import resolve_training
from ...train.recipes import apply_recipe

#: Shown first; the rest go under "Advanced".
MAIN = ("preset", "groups", "epochs", "batch_size", "lr", "tokens", "patience", "precision")

#: Options with a fixed set of values (a dropdown; "" = the default).
CHOICES = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "schedule": ("cosine", "constant"),
    "descriptions": ("none", "llm", "both"),
    "strong_view": ("labeler", "nola", "lafter"),
    "prompt_init": ("patch", "patch16"),
    "teacher_view": ("dino", "clip"),
    "preset": ("head", "vision", "ln-last", "full"),
    "groups": ("shared", "per-image"),
    "zero_shot": ("auto", "compute"),
    "grad_checkpointing": ("auto", "on", "off"),
}

CHOICES.update({"loss": ("bce", "kl"), "backbone": ("head", "resnet101", "clip")})  # CDUL

#: One line per option: what it does and what it costs.
HELP = {
    "epochs": "passes over the images; time grows with it, more can overfit the pseudo-labels",
    "batch_size": "images per step; larger is faster per epoch on a GPU but needs more memory",
    "lr": "learning rate; too high diverges, too low learns nothing in few epochs",
    "tokens": "learnable prompt tokens; more can fit more, each adds compute to every image",
    "patience": "epochs without improvement before stopping early; lower stops sooner (cheaper)",
    "precision": "auto: bf16/fp16 autocast on a GPU, fp32 on CPU; lower precision is faster, slightly noisier",
    "schedule": "learning-rate schedule: cosine (ours) or constant (the official codes')",
    "weight_decay": "AdamW weight decay (never on biases); regularises, no cost",
    "seed": "random seed: the same seed and options give the same run",
    "device": "auto, cpu, cuda or cuda:N; auto picks a GPU when there is one",
    "workers": "image decoding workers; empty: by image count and device; more uses more CPU and memory",
    "min_delta": "smallest improvement that counts for early stopping",
    "churn_tol": "'settled': at most this fraction of held-out predictions changed in an epoch",
    "holdout": "fraction of unlabeled images held out to watch student–teacher agreement (not trained on)",
    "val_split": "with ≥ 5 of your labels per class: the fraction kept out for validation",
    "features": "CLIP feature-set key (its model is the student); empty: the newest CLIP set",
    "strong_view": "augmentation of the student's view; empty: the recipe's",
    "prompt_init": "prompt init bound: patch (true patch size) or patch16 (the official bound); empty: the recipe's",
    "templates": "prompt templates for the class texts (a name, or a JSON list of templates)",
    "descriptions": "LLM descriptions in the class texts: none, llm or both",
    "label_smoothing": "softens the pseudo-label targets; guards against confident mistakes",
    "dino_features": "DINO feature-set key for the teacher; empty: the newest DINO set",
    "teacher_backbone": "the teacher's backbone: 'features' (cached DINO set) or a DINO model; empty: the recipe's",
    "teacher_view": "what the teacher's backbone sees: dino (its preprocessing) or clip (CLIP's weak view)",
    "k": "pseudo-labels per class for the alignment module; empty: max(16, N/(5·classes))",
    "align_hidden": "hidden width of the DINO alignment module",
    "align_epochs": "epochs of the alignment module (fast: it trains on cached features)",
    "align_lr": "learning rate of the alignment module",
    "align_batch_size": "batch size of the alignment module",
    "text_steps": "full-batch steps of the text-only classifier; empty: the recipe's",
    "text_lr": "learning rate of the text-only classifier; empty: the recipe's",
    "text_noise": "std of the Gaussian noise added to the text embeddings while training the text classifier",
    "preset": "LatteCLIP, what trains: head — an adapter on cached features (minutes on a CPU); vision — the vision "
    "tower (a GPU, ≈ 8 GB at batch 128); ln-last — its LayerNorms + last blocks (4–6 GB); full — both towers, the "
    "paper recipe's (a 24 GB+ GPU)",
    "groups": "LatteCLIP's group descriptions: shared by ~4 images (≈ 1.25 LMM calls per image) or per image as "
    "the paper (≈ 2 calls per image); caption the images first",
    "alpha": "how far each step moves the targets from the class prototypes toward the captions (paper: 0.01)",
    "warmup": "linear learning-rate warmup steps before the cosine; empty: the recipe's",
    "zero_shot": "the frozen zero-shot labels: auto (the active zero-shot run's) or compute (from the features)",
    "grad_checkpointing": "recompute activations in the backward pass: less GPU memory, slower; auto: on for the "
    "tower presets on a GPU",
}
HELP.update(  # CDUL
    {
        "head_features": "what CDUL's head reads: clip (the CLIP set), dino (the newest DINO set) or a feature-set key",
        "backbone": "head: a head on the cached features (minutes on a CPU) · resnet101: the paper's ImageNet "
        "ResNet-101 fine-tuned on the images (a GPU; its weights must be in the torch hub cache) · clip: the "
        "project's CLIP image tower fine-tuned on the images (a GPU); both: lr 1e-5 and batch 8 unless set",
        "backbone_weights": "resnet101: the path of a local ImageNet ResNet-101 state dict on this machine; empty: "
        "the torch hub cache's file (nothing is downloaded; not on a public Space)",
        "hidden": "0: a linear head; more: an MLP with this hidden width",
        "loss": "bce: sigmoid + BCE (multi-label) · kl: softmax + KL, the reproduction's",
        "refine_warmup": "epochs before the first pseudo-label refinement",
        "refine_every": "refine the pseudo-labels in every F-th epoch after the warm-up (0: never)",
        "refine_step": "size of a refinement step (in logit space)",
        "sigma": "width of the Gaussian weighting of a refinement step (undecided labels move most)",
        "grid": "snippets per side: grid² + 1 CLIP forwards per image (computed once, cached)",
        "temperature": "clip: CLIP's logit_scale.exp() (100) · raw: the reproduction's ln 100 (a nearly flat softmax)",
        "threshold": "aggregation: a class's snippet max where it reaches this, else the min; only means something "
        "where snippet scores cross it (0: always the max)",
        "lam": "weight of |global − local| in the pseudo-label",
        "label_threshold": "classes whose score reaches this are in an image's label set (per-class ones win)",
    }
)


@dataclass(frozen=True)
class Field:
    """One option of the form."""

    name: str
    kind: str  # int | float | bool | choice | text
    default: Any  # the params dataclass's default (None: filled by the recipe and the device)
    help: str


def _kind(name: str, hint) -> str:
    if name in CHOICES:
        return "choice"
    args = set(typing.get_args(hint)) or {hint}
    args.discard(type(None))
    if args == {bool}:
        return "bool"
    if args == {int}:
        return "int"
    if args <= {int, float}:
        return "float"
    return "text"


@cache
def method_fields(name: str) -> tuple[Field, ...]:
    """The form's fields for method ``name``: its params in dataclass order, ``recipe`` left out (its own list)."""
    cls = get_method(name).Params
    hints = typing.get_type_hints(cls)
    defaults = method_defaults(name)
    return tuple(
        Field(f.name, _kind(f.name, hints[f.name]), defaults[f.name], HELP.get(f.name, ""))
        for f in dataclasses.fields(cls)
        if f.name != "recipe"
    )


def all_fields(methods: list[str]) -> list[Field]:
    """Every field any of ``methods`` has (one component each; a method's own are shown), main ones first."""
    seen: dict[str, Field] = {}
    for m in methods:
        for f in method_fields(m):
            seen.setdefault(f.name, f)
    return sorted(seen.values(), key=lambda f: (f.name not in MAIN, MAIN.index(f.name) if f.name in MAIN else 0))


def device_defaults(name: str, recipe: str | None) -> dict:
    """What every option of ``name`` becomes on this device with ``recipe`` when left unset."""
    device_type = resolve_device("auto").type
    values = {**method_defaults(name), "recipe": recipe or "labeler"}
    method = get_method(name)
    if hasattr(method, "preset_defaults"):  # LatteCLIP: the preset decides lr, batch size and epochs
        values = method.preset_defaults(values, device_type)
    values = apply_recipe(values, name, device_type)
    return resolve_training(values, device_type, get_method(name).default_lr)


def field_info(f: Field, resolved: dict) -> str:
    """A field's line: what it does and costs, and (for an option the recipe fills) what it is here."""
    here = resolved.get(f.name)
    tail = f" · empty: {here} here" if f.default is None and here is not None else ""
    return f"{f.help}{tail}"


def form_value(f: Field) -> Any:
    """A field's starting value: the dataclass default (empty for None; a list of templates as JSON)."""
    if f.default is None:
        return ""  # (a number field for it is a textbox: gr.Number shows an empty value as 0)
    return json.dumps(f.default) if isinstance(f.default, list) else f.default


def _coerce(f: Field, value: Any) -> Any:
    if f.kind in ("int", "float"):
        try:
            return int(value) if f.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"training option {f.name} must be a number, got {value!r}") from None
    if f.kind == "bool":
        return bool(value)
    text = str(value).strip()
    if f.name == "templates" and text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text  # the method says what is wrong with it
    return text


def options_from_form(name: str, recipe: str | None, fields: list[Field], values: list) -> dict:
    """The options of method ``name`` the form says: its defaults, with every filled field of the method applied
    (an empty field keeps the default; fields of other methods are ignored)."""
    own = {f.name for f in method_fields(name)}
    out = {**method_defaults(name), "recipe": recipe or "labeler"}
    for f, value in zip(fields, values, strict=True):
        if f.name in own and value is not None and value != "":
            out[f.name] = _coerce(f, value)
    return out


def options_json(name: str | None, recipe: str | None, fields: list[Field], values: list) -> str:
    """:func:`options_from_form` as the JSON text Start sends ("" without a method)."""
    return json.dumps(options_from_form(name, recipe, fields, values), indent=2) if name else ""
