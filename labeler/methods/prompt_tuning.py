"""The machinery NoLA and LaFTer share: a prompt-tuned CLIP student trained against a teacher's hard labels.

:class:`PromptTuningMethod` resolves the params (the newest CLIP feature set's model is the student's
base unless ``features`` names one), builds the class texts (templates and/or LLM descriptions, as for
zero-shot) and their classifier T, splits the images (:mod:`labeler.train.data`), asks the subclass for
its teacher (:meth:`PromptTuningMethod.prepare_teacher`), and trains
:class:`labeler.train.student.PromptTuningTask`. Subclasses set ``name``, ``Params``, ``default_tokens``,
``default_lr`` and implement ``prepare_teacher`` (and ``head_init`` / ``make_teacher`` if they differ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import Hint, InvalidInputError, NotReadyError
from ..prompts import DEFAULT_TEMPLATES
from ..train.params import TrainParams, resolve_training
from .trainable import TrainableMethod

if TYPE_CHECKING:
    from ..jobs import Job
    from ..project import Project


@dataclass
class PromptTuningParams(TrainParams):
    """Options of prompt-tuning methods (plus :class:`labeler.train.params.TrainParams`)."""

    recipe: str = "labeler"  # labeler (ours) | paper (the official code's settings): fills every option left None
    features: str | None = None  # CLIP feature-set key: its model is the student; the newest CLIP set when None
    tokens: int | None = None  # prompt tokens; None: the recipe's (NoLA 16, LaFTer 50)
    strong_view: str | None = None  # labeler | nola | lafter (labeler.train.views.STRONG_VIEWS); None: the recipe's
    prompt_init: str | None = None  # patch (true patch size) | patch16 (the official bound); None: the recipe's
    templates: str | list[str] = DEFAULT_TEMPLATES  # prompt templates for the class texts
    descriptions: str = "both"  # none | llm | both: LLM descriptions in the class texts (see zero-shot)
    label_smoothing: float = 0.1


@dataclass
class SetupContext:
    """What :meth:`PromptTuningMethod.prepare_teacher` gets: rows are positions in ``image_ids``."""

    classes: list[str]
    image_ids: list[int]
    clip_features: np.ndarray  # (N, D) cached CLIP features of the weak view
    text_embeddings: list[np.ndarray]  # per class (T_c, D), L2-normalised
    text_classifier: np.ndarray  # T (C, D)
    logit_scale: float
    verified: np.ndarray  # (N,) class index of human/accepted labels, -1 where none
    rows: dict  # train / holdout / val row arrays (labeler.train.data.split_rows); val: human labels only
    params: dict
    progress: Callable[[str], None]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def warn(self, text: str) -> None:
        """Something that makes the trained model untrustworthy (shown as a warning by the CLI and the app)."""
        self.warnings.append(text)


class PromptTuningMethod(TrainableMethod):
    """Base of NoLA and LaFTer (see the module docstring)."""

    Params: ClassVar[type] = PromptTuningParams
    default_tokens: ClassVar[int] = 16
    default_lr: ClassVar[float] = 0.004

    # --- hooks -----------------------------------------------------------------------------------
    def resolve_extra(self, project: Project, values: dict) -> dict:
        """Method-specific params (e.g. NoLA's DINO feature set)."""
        return values

    def select_images(self, project: Project, params: dict, image_ids: list[int]) -> list[int]:
        """Restrict the training images (default: every image with CLIP features)."""
        return image_ids

    def prepare_teacher(self, project: Project, params: dict, ctx: SetupContext) -> dict:
        """``{"labels": (N,) int array}`` (fixed teacher) or ``{"head": (C, D) array}`` (head teacher), plus
        an optional ``"head_init"`` (C, D) for the student and a JSON-able ``"report"``."""
        raise NotImplementedError

    # --- TrainableMethod ---------------------------------------------------------------------------
    def resolve(self, project: Project, params: Any) -> dict:
        from ..device import resolve_device
        from ..train.prompt import PROMPT_INITS
        from ..train.recipes import apply_recipe
        from ..train.views import STRONG_VIEWS

        if not isinstance(params, self.Params):
            raise InvalidInputError(f"{self.name} takes {self.Params.__name__}, got {type(params).__name__}")
        classes = project.classes
        if len(classes) < 2:
            raise NotReadyError("the project needs at least two classes", hint=Hint("classes"))
        if project.multi_label:
            raise InvalidInputError(
                f"{self.name} trains a single-label classifier; this project is multi-label (use zeroshot for now)"
            )
        device = resolve_device(params.device)
        values = apply_recipe(asdict(params), self.name, device.type)
        values = resolve_training(values, device.type, self.default_lr)
        values["tokens"] = int(values["tokens"]) if values.get("tokens") is not None else self.default_tokens
        if values["tokens"] < 0:
            raise InvalidInputError(f"tokens must be 0 or more, got {values['tokens']}")
        values["strong_view"] = values.get("strong_view") or "labeler"
        if values["strong_view"] not in STRONG_VIEWS:
            raise InvalidInputError(
                f"strong_view must be one of {', '.join(STRONG_VIEWS)}, got {values['strong_view']!r}"
            )
        values["prompt_init"] = values.get("prompt_init") or "patch"
        if values["prompt_init"] not in PROMPT_INITS:
            raise InvalidInputError(
                f"prompt_init must be one of {', '.join(PROMPT_INITS)}, got {values['prompt_init']!r}"
            )
        if not 0 <= float(values["label_smoothing"]) < 1:
            raise InvalidInputError(f"label_smoothing must be in [0, 1), got {values['label_smoothing']}")
        return self.resolve_extra(project, self.pin_clip_base(project, values))

    def setup(self, project: Project, params: dict, job: Job) -> dict:
        import torch

        from ..describe import class_texts_report
        from ..device import resolve_device
        from ..features import feature_matrix
        from ..train.data import training_split, without_audit
        from .zeroshot import encode_class_texts, text_classifier

        classes = params["classes"]
        job.progress(0, 1, "encoding class texts", force=True)
        clip = self._clip(params, resolve_device(params["device"]))
        texts, text_report = class_texts_report(project, params["descriptions"], params["templates"], classes)
        embeddings = encode_class_texts(clip, texts)
        classifier = text_classifier(embeddings)
        ids, feats = feature_matrix(project, params["features"])
        selected = set(self.select_images(project, params, ids))
        keep = set(without_audit(project, selected))  # the audit sample is a test set: never trained on
        rows_kept = [r for r, i in enumerate(ids) if i in keep]
        if len(rows_kept) < 2:
            raise NotReadyError(
                f"{self.name} needs at least 2 images with features to train on, found {len(rows_kept)}",
                hint=Hint("features"),
            )
        ids = [ids[r] for r in rows_kept]
        feats = feats[rows_kept]
        verified, rows = training_split(project, ids, classes, params)
        ctx = SetupContext(
            classes=list(classes),
            image_ids=list(ids),
            clip_features=np.asarray(feats, dtype=np.float32),
            text_embeddings=[np.asarray(e, dtype=np.float32) for e in embeddings],
            text_classifier=classifier,
            logit_scale=float(clip.logit_scale),
            verified=verified,
            rows=rows,
            params=params,
            progress=lambda msg: job.progress(0, 1, msg, force=True),
        )
        teacher = self.prepare_teacher(project, params, ctx)
        report = {
            "images": len(ids),
            "train": int(len(rows["train"])),
            "holdout": int(len(rows["holdout"])),
            "val": int(len(rows["val"])),
            "val_optimistic": bool(rows["optimistic"]),
            "verified": rows["verified"],
            "audit_excluded": len(selected) - len(keep),
            "val_reason": rows["val_reason"],
            "texts": text_report["message"],
            "texts_per_class": text_report["texts_per_class"],
            **teacher.get("report", {}),
            "notes": ctx.notes,
            "warnings": ctx.warnings,
        }
        setup = {
            "image_ids": torch.tensor(ids, dtype=torch.long),
            "rows": {k: torch.from_numpy(np.asarray(rows[k], dtype=np.int64)) for k in ("train", "holdout", "val")},
            "verified": torch.from_numpy(verified),
            "text_classifier": torch.from_numpy(classifier),
            "teacher": {k: torch.as_tensor(np.asarray(v)) for k, v in teacher.items() if k != "report"},
            "report": report,
        }
        return setup

    def build_task(self, project: Project, params: dict, setup: dict, job: Job):
        from ..device import resolve_device
        from ..train.prompt import student_from_clip
        from ..train.student import FixedTeacher, HeadTeacher, PromptTuningTask
        from ..train.views import strong_transform

        device = resolve_device(params["device"])
        clip = self._clip(params, device)
        self._clip_cache = None  # the student adopts (and changes) this model's vision tower
        ids = setup["image_ids"].tolist()
        path_of = dict(project.db.execute("select id, path from images").fetchall())
        paths = [path_of.get(i, "") for i in ids]
        teacher_state = setup["teacher"]
        head_init = teacher_state.get("head_init", setup["text_classifier"])
        student = student_from_clip(
            clip,
            len(params["classes"]),
            params["tokens"],
            head_init=head_init,
            seed=params["seed"],
            prompt_init=params.get("prompt_init", "patch"),
        ).to(device)
        if "labels" in teacher_state:
            teacher = FixedTeacher(teacher_state["labels"])
        elif "head" in teacher_state:
            teacher = HeadTeacher(student, teacher_state["head"], device)
        else:
            raise InvalidInputError(f"{self.name}: the run's setup has no teacher (labels or head)")
        rows = {k: v.numpy() for k, v in setup["rows"].items()}
        info = {
            "method": self.name,
            "base": params["base"],
            "classes": list(params["classes"]),
            "image_size": clip.image_size,
            "recipe": params.get("recipe", "labeler"),
        }
        return PromptTuningTask(
            student,
            paths,
            rows,
            setup["verified"].numpy(),
            teacher,
            clip.preprocess,
            strong_transform(clip.model.visual.preprocess_cfg, params.get("strong_view", "labeler")),
            params,
            device,
            info,
        )

    def load_predictor(self, project: Project, run: dict, device: str = "auto"):
        from ..train.loop import BEST
        from ..train.runs import run_dir
        from ..train.student import TrainedModel

        path = run_dir(project, run["id"]) / BEST
        if not path.is_file():
            raise NotReadyError(f"run {run['id']} has no trained model yet (no epoch finished): resume or rerun it")
        return TrainedModel.load(path, device)
