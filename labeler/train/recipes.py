"""Training recipes: the official codes' settings (``paper``) side by side with ours (``labeler``).

A :class:`Recipe` fills every option a run leaves unset (params that are None); options given explicitly
(CLI flags, the app's JSON) always win. Each field names where the official code sets it
(``sources``) and, for ``labeler``, why ours differs (``why``). :func:`recipe_table` renders one
method's comparison as the Markdown table ``docs/methods.md`` carries (a test keeps the two equal).

Official code read: NoLA — github.com/fazliimam/NoLA (``trainers/NoLA.py``, ``utils/model_utils.py``,
``utils/misc.py``, ``config.yml``); LaFTer — github.com/jmiemirza/LaFTer (``trainers/LaFTer.py``,
``LaFTer.py``, ``utils/utils.py``, ``utils/model_utils.py``, ``scripts/LaFTer.sh``); LatteCLIP —
github.com/astra-vision/LatteCLIP (``src/training/train.py``, ``src/training/main.py``,
``scripts/unsupervised/*_fine_tune_multiclass.sh``); CDUL (no official code) — the
reproduction github.com/cs-mshah/CDUL (``src/train.py``, ``src/models/resnet101.py``, ``configs/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Hint, InvalidInputError
from .params import CPU_BATCH, CPU_EPOCHS, GPU_BATCH, GPU_EPOCHS

RECIPE_NAMES = ("labeler", "paper")
DEFAULT_RECIPE = "labeler"

#: Teacher backbone value meaning "the project's cached DINO feature set" (``dino_features``).
FEATURE_SET = "features"

#: Recipe fields in table order, with the step each one sets (a field a method does not use is None there).
FIELDS = {
    "schedule": "LR schedule",
    "batch_size": "batch size",
    "epochs": "epochs",
    "tokens": "prompt tokens",
    "lr": "learning rate",
    "strong_view": "strong view",
    "text_lr": "text head lr",
    "text_steps": "text head steps",
    "teacher_backbone": "teacher backbone",
    "teacher_view": "teacher input",
    "prompt_init": "prompt init bound",
    "preset": "what trains",
    "warmup": "warmup steps",
    "weight_decay": "weight decay",
    "backbone": "model trained",
    "loss": "loss",
    "refine_warmup": "refinement warm-up (epochs)",
    "refine_every": "refinement every F epochs",
}


@dataclass(frozen=True)
class Recipe:
    """Settings one recipe gives a method's run (None: the method does not use the field).

    ``batch_size`` / ``epochs`` None in a recipe that uses them: by device (GPU 512 / 50, CPU 16 / 3).
    ``sources``: field → official ``file:function`` (and what it sets); ``why``: field → why ours differs.
    """

    method: str
    name: str
    schedule: str
    batch_size: int | None
    epochs: int | None
    tokens: int | None = None
    lr: float | None = None  # None in a recipe that uses lr: by preset (LatteCLIP; ``shown`` says how)
    strong_view: str | None = None  # a name in labeler.train.views.STRONG_VIEWS
    prompt_init: str | None = None  # labeler.train.prompt.PROMPT_INITS: patch | patch16
    text_lr: float | None = None
    text_steps: int | None = None
    teacher_backbone: str | None = None  # FEATURE_SET (the cached DINO set) or a DINO model to run
    teacher_view: str | None = None  # dino: its own preprocessing (cached set) | clip: CLIP's weak view
    preset: str | None = None  # LatteCLIP: what trains (labeler.train.latte.PRESETS); None there: by device
    warmup: int | None = None  # LatteCLIP: linear warmup steps before the cosine
    weight_decay: float | None = None  # AdamW weight decay (LatteCLIP: on >= 2-D weights); None: the default
    shown: dict = field(default_factory=dict)  # field -> how the table shows a None that is decided later
    backbone: str | None = None  # CDUL: head (on frozen cached features) | resnet101 | clip (fine-tuned)
    loss: str | None = None  # CDUL: bce (sigmoid + BCE) | kl (softmax + KL)
    refine_warmup: int | None = None  # CDUL: epochs before the first refinement
    refine_every: int | None = None  # CDUL: F, refine in every F-th epoch after the warm-up
    sources: dict = field(default_factory=dict)
    why: dict = field(default_factory=dict)

    def values(self, device_type: str) -> dict:
        """The params this recipe fills on ``device_type`` (``cuda``, ``cpu``, ``mps``), without None fields."""
        gpu = device_type == "cuda"
        out = {}
        for name in FIELDS:
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                value = GPU_BATCH if gpu else CPU_BATCH
            elif name == "epochs" and value is None:
                value = GPU_EPOCHS if gpu else CPU_EPOCHS
            if value is not None:
                out[name] = value
        return out


_NOLA_SRC = {
    "schedule": "`trainers/NoLA.py:NoLA.setup_optim` — `MultiStepLR(milestones=None)`: constant",
    "batch_size": "`config.yml` `DATALOADER.TRAIN_X.BATCH_SIZE`: 512",
    "epochs": "`config.yml` `OPTIM.MAX_EPOCH`: 50",
    "tokens": "`utils/misc.py:extend_cfg` `NUM_TOKENS`: 16",
    "lr": "`config.yml` `OPTIM.LR`: 0.004",
    "strong_view": "`utils/model_utils.py:get_random_transform`",
    "teacher_backbone": "`trainers/NoLA.py:Taal.__init__` — `torch.hub` `dino_vitb16` (DINO v1 ViT-B/16)",
    "teacher_view": "`trainers/NoLA.py:NoLA.forward_backward` — DINO gets `te_transform`, CLIP's view and "
    "normalisation",
    "prompt_init": "`trainers/NoLA.py:NoLAUFT.__init__` — `patch_size = (16, 16)` hard-coded",
}

_LAFTER_SRC = {
    "schedule": "`utils/utils.py:setup_lafter_training_utils` — `MultiStepLR(args.mile_stones=None)`: constant",
    "batch_size": "`LaFTer.py` `--batch_size` default: 50",
    "epochs": "`LaFTer.py` `--epochs` default: 50",
    "tokens": "`trainers/LaFTer.py:LaFTer.__init__` `num_tokens = 50`",
    "lr": "`scripts/LaFTer.sh` `--lr 0.0005`",
    "strong_view": "`utils/model_utils.py:get_random_transform`",
    "text_lr": "`utils/utils.py:setup_text_training_utils` — AdamW at `args.lr` (0.0005), no schedule step",
    "text_steps": "`utils/utils.py:setup_txt_epochs` — `text_cls_epochs` per dataset: 400 (500 ImageNet, "
    "SUN397, Caltech101, ImageNet-R/A/Sketch; 600 OxfordFlowers)",
    "prompt_init": "`trainers/LaFTer.py:LaFTer.__init__` — `patch_size = (16, 16)` hard-coded",
}

_LATTE_SRC = {
    "schedule": "`src/training/main.py` — open_clip's `cosine_lr`: linear warmup, then cosine per step",
    "batch_size": "`scripts/unsupervised/*_fine_tune_multiclass.sh` `--batch-size 512`",
    "epochs": "`scripts/unsupervised/*_fine_tune_multiclass.sh` `--epochs`: 100 DTD, Pets; 50 Caltech, Aircraft, "
    "Flowers, Cars, UCF; 15 EuroSAT, Food101, SUN397",
    "lr": "`scripts/unsupervised/*_fine_tune_multiclass.sh` `--lr $1` (the paper: 1e-7)",
    "preset": "`src/training/train.py:train_one_epoch_v2` — the whole CLIP trains (text features not detached)",
    "warmup": "`scripts/unsupervised/*_fine_tune_multiclass.sh` `--warmup 10`",
    "weight_decay": "`src/training/params.py` `--wd` default 0.2; `src/training/main.py` excludes gains, biases "
    "and `logit_scale` (weights under 2-D)",
}
_CDUL_SRC = {
    "schedule": "`src/train.py:Trainer` — `Adam` from `configs/train`, no scheduler: constant",
    "batch_size": "`configs/train` `batch_size`: 8",
    "epochs": "`configs/train` `max_epochs`: 100",
    "lr": "`configs/train` `optimizer.lr`: 1e-5 (Adam)",
    "weight_decay": "`configs/config.yaml` `train.optimizer`: `torch.optim.Adam`, default weight decay 0",
    "backbone": "`src/models/resnet101.py` — torchvision ResNet-101, ImageNet weights, fine-tuned end to end "
    "(resize 232, crop 224, no augmentation)",
    "loss": "`src/train.py:Trainer.train` — `softmax` outputs, torchmetrics `KLDivergence(preds, pseudo)`",
    "refine_warmup": "the paper's VOC setting: refinement after 10 warm-up epochs",
    "refine_every": "the paper's VOC setting: every 10th epoch (`src/train.py` refines on every batch)",
}

_BATCH_WHY = "a CPU cannot hold 512 strong views per step: 16 there; 512 keeps a GPU busy"
_EPOCHS_WHY = "3 on a CPU, where an epoch is slow; early stopping and epoch-0 selection guard the GPU's 50"
_SCHEDULE_WHY = (
    "the lr anneals to 0, so the last epochs settle (early stopping waits for settled predictions); "
    "not measured against the constant lr"
)
_INIT_WHY = "VPT's bound for the tower's real patch size (0.0395 on B/32; equal on B/16); the 16 is a B/16 left-over"

RECIPES: dict[tuple[str, str], Recipe] = {
    ("nola", "paper"): Recipe(
        method="nola",
        name="paper",
        schedule="constant",
        batch_size=512,
        epochs=50,
        tokens=16,
        lr=0.004,
        strong_view="nola",
        prompt_init="patch16",
        teacher_backbone="facebook/dino-vitb16",
        teacher_view="clip",
        sources=_NOLA_SRC,
    ),
    ("nola", "labeler"): Recipe(
        method="nola",
        name="labeler",
        schedule="cosine",
        batch_size=None,
        epochs=None,
        tokens=16,
        lr=0.004,
        strong_view="labeler",
        prompt_init="patch",
        teacher_backbone=FEATURE_SET,
        teacher_view="dino",
        sources=_NOLA_SRC,
        why={
            "schedule": _SCHEDULE_WHY,
            "batch_size": _BATCH_WHY,
            "epochs": _EPOCHS_WHY,
            "strong_view": "one colour jitter, as SimCLR and LaFTer: the second, always-on jitter distorts every "
            "image's colours; one strong view for both methods keeps their runs comparable",
            "teacher_backbone": "the project's DINO features (DINOv2, default `facebook/dinov2-small`): computed "
            "once and cached, no DINO pass per run, small enough for a CPU",
            "teacher_view": "DINO's own resize, crop and ImageNet normalisation, as it was trained (the official "
            "code feeds it CLIP-normalised pixels); exactly the cached features",
            "prompt_init": _INIT_WHY,
        },
    ),
    ("lafter", "paper"): Recipe(
        method="lafter",
        name="paper",
        schedule="constant",
        batch_size=50,
        epochs=50,
        tokens=50,
        lr=0.0005,
        strong_view="lafter",
        prompt_init="patch16",
        text_lr=0.0005,
        text_steps=400,
        sources=_LAFTER_SRC,
    ),
    ("lafter", "labeler"): Recipe(
        method="lafter",
        name="labeler",
        schedule="cosine",
        batch_size=None,
        epochs=None,
        tokens=50,
        lr=0.0005,
        strong_view="labeler",
        prompt_init="patch",
        text_lr=0.001,
        text_steps=300,
        sources=_LAFTER_SRC,
        why={
            "schedule": _SCHEDULE_WHY,
            "batch_size": _BATCH_WHY + "; at the same lr that is ≈ 10× fewer updates than the official 50 — "
            "use `--recipe paper` or `--batch-size 50` to match",
            "epochs": _EPOCHS_WHY,
            "strong_view": "the same strong view as NoLA, so the two methods' runs differ only in the teacher",
            "text_lr": "a faster, shorter fit of the text head (fewer steps on a CPU); it ends with a ≈ 33 % larger "
            "norm, i.e. a sharper student at the start",
            "text_steps": "see the text head lr; one value for every project (the official per-dataset counts "
            "need the dataset's name)",
            "prompt_init": _INIT_WHY,
        },
    ),
    ("latteclip", "paper"): Recipe(
        method="latteclip",
        name="paper",
        schedule="cosine",
        batch_size=512,
        epochs=50,
        lr=1e-7,
        preset="full",
        warmup=10,
        weight_decay=0.2,
        sources=_LATTE_SRC,
    ),
    ("latteclip", "labeler"): Recipe(
        method="latteclip",
        name="labeler",
        schedule="cosine",
        batch_size=None,
        epochs=None,
        lr=None,
        preset=None,
        warmup=10,
        weight_decay=0.2,
        sources=_LATTE_SRC,
        shown={
            "batch_size": "head 256; else GPU 512, CPU 16",
            "epochs": "head 30; else GPU 50, CPU 3",
            "lr": "head 1e-4, vision 1e-6, ln-last 1e-5, full 1e-7",
            "preset": "`head` on a CPU, `vision` on a GPU",
        },
        why={
            "batch_size": "the head preset trains on cached features, so 256 in-batch negatives cost nothing; "
            + _BATCH_WHY,
            "epochs": "an epoch of the head preset takes seconds on a CPU; " + _EPOCHS_WHY,
            "lr": "an adapter initialised to the identity needs a far larger step than the whole CLIP at 1e-7 (in the "
            "synthetic test 1e-4 gains over zero-shot, 1e-3 learns the zero-shot stream's errors); the tower presets' "
            "rates are a guess, not measured",
            "preset": "the whole CLIP (151 M parameters at batch 512) needs a large GPU; the head runs anywhere",
        },
    ),
}


RECIPES[("cdul", "paper")] = Recipe(
    method="cdul",
    name="paper",
    schedule="constant",
    batch_size=8,
    epochs=100,
    tokens=None,
    lr=1e-5,
    strong_view=None,
    prompt_init=None,
    backbone="resnet101",
    weight_decay=0.0,
    loss="kl",
    refine_warmup=10,
    refine_every=10,
    sources=_CDUL_SRC,
)
RECIPES[("cdul", "labeler")] = Recipe(
    method="cdul",
    name="labeler",
    schedule="cosine",
    batch_size=64,
    epochs=30,
    tokens=None,
    lr=1e-2,
    strong_view=None,
    prompt_init=None,
    backbone="head",
    weight_decay=0.01,
    loss="bce",
    refine_warmup=5,
    refine_every=5,
    sources=_CDUL_SRC,
    why={
        "schedule": _SCHEDULE_WHY,
        "batch_size": "a head on cached features: 64 rows a step cost nothing",
        "epochs": "a head converges in tens of epochs (seconds on a CPU); refinement needs several epochs past the "
        "warm-up",
        "lr": "a freshly initialised head on standardised features, not a pretrained backbone: 1e-2 (on the "
        "synthetic benchmark 1e-3 left the head underfit after 30 epochs; 1e-5 barely moves it)",
        "weight_decay": "AdamW's 0.01 (NoLA's and LaFTer's default here too; never on biases) regularises a fresh "
        "head; not measured against 0",
        "backbone": "a head on the project's frozen CLIP (or DINO) features: minutes on a CPU, no image decoding "
        "per epoch; `--recipe paper` fine-tunes a ResNet-101 on a GPU (`--backbone clip`: the project's CLIP "
        "image tower)",
        "loss": "sigmoid + BCE, the natural multi-label loss: on the synthetic benchmark (bench/cdul.py) its "
        "trained classifier and refined labels score a higher mAP than softmax + KL, whose outputs sum to 1 "
        "and so cannot say that an image holds two classes",
        "refine_warmup": "scaled with the 30 epochs (the paper's 10 of 100 would leave two refinement epochs)",
        "refine_every": "scaled with the 30 epochs: refinement in epochs 10, 15, 20, 25, 30",
    },
)


def get_recipe(method: str, name: str | None) -> Recipe:
    """The recipe ``name`` (default ``labeler``) of ``method``; raises InvalidInputError for an unknown one."""
    name = DEFAULT_RECIPE if name is None else str(name)
    recipe = RECIPES.get((method, name))
    if recipe is None:
        known = sorted(n for m, n in RECIPES if m == method)
        raise InvalidInputError(
            f"recipe {name!r} is not one of {', '.join(known) or '(none)'} for {method}: labeler is ours, paper the "
            "official code's settings",
            hint=Hint(option="recipe", value="labeler"),
        )
    return recipe


def apply_recipe(values: dict, method: str, device_type: str) -> dict:
    """Fill the unset (None) params in ``values`` from its ``recipe`` (a new dict; explicit values win).

    ``values["recipe"]`` is set to the recipe's name (recorded with the run).
    """
    recipe = get_recipe(method, values.get("recipe"))
    out = dict(values)
    out["recipe"] = recipe.name
    for name, value in recipe.values(device_type).items():
        if name in out and out[name] is None:
            out[name] = value
    return out


def _fmt(name: str, value, recipe: Recipe | None = None) -> str:
    from .views import STRONG_VIEWS

    if value is None and recipe is not None and name in recipe.shown:
        return recipe.shown[name]
    if value is None:
        return {"batch_size": "GPU 512, CPU 16", "epochs": "GPU 50, CPU 3"}.get(name, "—")
    if name == "strong_view":
        return f"`{value}`: {STRONG_VIEWS[value]}"
    if name == "teacher_backbone" and value == FEATURE_SET:
        return "the project's DINO feature set (DINOv2)"
    if name == "teacher_view":
        return {"clip": "CLIP's weak view (CLIP normalisation)", "dino": "DINO's own preprocessing"}[value]
    if name == "prompt_init":
        return {"patch": "true patch size", "patch16": "16×16 patch"}[value]
    if name == "backbone":
        return {"head": "a head on frozen cached features", "resnet101": "ResNet-101, fine-tuned"}.get(value, value)
    if name == "loss":
        return {"bce": "sigmoid + BCE", "kl": "softmax + KL(preds ‖ pseudo)"}.get(value, value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def recipe_table(method: str) -> str:
    """Markdown table: step | official code | `--recipe paper` | `--recipe labeler` | why we differ."""
    paper, ours = get_recipe(method, "paper"), get_recipe(method, "labeler")
    lines = [
        "| step | official code | `--recipe paper` | `--recipe labeler` (ours) | why we differ |",
        "|---|---|---|---|---|",
    ]
    for name, step in FIELDS.items():
        a, b = getattr(paper, name), getattr(ours, name)
        if a is None and b is None:
            continue
        same = a == b
        why = "same" if same else ours.why.get(name, "")
        if not same and not why:
            raise InvalidInputError(f"recipe {method}/labeler differs in {name} without saying why")
        source = paper.sources.get(name) or ours.sources.get(name) or "—"
        lines.append(f"| {step} | {source} | {_fmt(name, a, paper)} | {_fmt(name, b, ours)} | {why} |")
    return "\n".join(lines)
