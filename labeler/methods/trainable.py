"""What a *training* method adds to :class:`~labeler.methods.base.Method` (NoLA, LaFTer; later LatteCLIP, CDUL).

A trainable method resolves its params (device-dependent defaults filled in, everything recorded in
the ``runs`` row), sets a run up once (:meth:`setup`, saved for resumes), turns that into a
:class:`labeler.train.loop.TrainTask` (:meth:`build_task`), and can rebuild its trained model for
labeling (:meth:`load_predictor`). :meth:`run` is the registry's entry point: train (continuing an
interrupted run with the same params), then label every image with the trained model as a new,
active label run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import Hint, NotReadyError
from .base import Method, RunResult

if TYPE_CHECKING:
    from ..jobs import Job, ProgressCallback
    from ..project import Project


class TrainableMethod(Method):
    """Base class of methods that train a model in a ``train`` job."""

    default_lr: ClassVar[float] = 1e-3

    # --- to implement ------------------------------------------------------------------------------
    def resolve(self, project: Project, params: Any) -> dict:
        """Fully resolved, JSON-able params (defaults filled in, feature sets and classes pinned)."""
        raise NotImplementedError

    def setup(self, project: Project, params: dict, job: Job) -> dict:
        """Everything fixed before the first step (tensors and plain values; saved as ``setup.pt``).

        Should hold a JSON-able ``report`` (recorded in the run's ``metrics["setup"]``).
        """
        raise NotImplementedError

    def build_task(self, project: Project, params: dict, setup: dict, job: Job):
        """The :class:`labeler.train.loop.TrainTask` for a run (new or resumed)."""
        raise NotImplementedError

    def load_predictor(self, project: Project, run: dict, device: str = "auto"):
        """The trained model of a train run: ``.classes``, ``.transform`` (weak view), ``.device``,
        ``.image_size``, ``.info`` and ``.predict_proba(batch) -> (B, C)``."""
        raise NotImplementedError

    # --- shared by the methods that train on a project's CLIP ------------------------------------------
    _clip_cache: tuple[str, Any] | None = None

    @staticmethod
    def pin_clip_base(project: Project, values: dict) -> dict:
        """Pin the CLIP feature set ``values["features"]`` (the newest CLIP set when None) as the run's base
        model, the class list, and ``multi_label=False``; returns ``values``.

        Raises
        ------
        NotReadyError
            No such CLIP feature set (or none at all).
        """
        from ..features import latest_set

        fset = project.features.get_set(values["features"]) if values.get("features") else latest_set(project, "clip")
        if fset is None or fset["kind"] != "clip":
            what = f"CLIP feature set {values['features']!r}" if values.get("features") else "CLIP features"
            raise NotReadyError(f"no {what} in this project", hint=Hint("features", option="clip"))
        values["features"] = fset["key"]
        values["base"] = {"model": fset["model"], "pretrained": fset["pretrained"] or None, "key": fset["key"]}
        values["classes"] = list(project.classes)
        values["multi_label"] = False
        return values

    def _clip(self, params: dict, device):
        """The run's base CLIP (``params["base"]``) on ``device``, loaded once per method object."""
        from ..models import load_clip

        key = f"{params['base']['key']}@{device}"
        if self._clip_cache is None or self._clip_cache[0] != key:
            base = params["base"]
            self._clip_cache = (
                key,
                load_clip(base["model"], base.get("pretrained") or None, device=device, precision="fp32"),
            )
        return self._clip_cache[1]

    def relabel(
        self,
        project: Project,
        run: dict,
        *,
        device: str = "auto",
        batch_size: int = 64,
        workers: int | None = None,
        on_progress: ProgressCallback | None = None,
        activate: bool = True,
    ) -> RunResult:
        """Label every ok image with the model trained in ``run``: a new label run (active by default).

        By default the images go through :meth:`load_predictor` (:func:`labeler.train.runs.relabel_with`); a
        method that labels its own way (CDUL: multi-label sets from cached features) overrides this.
        """
        from ..train.runs import relabel_with

        return relabel_with(
            project,
            self,
            run,
            device=device,
            batch_size=batch_size,
            workers=workers,
            on_progress=on_progress,
            activate=activate,
        )

    # --- the registry entry point ------------------------------------------------------------------
    def run(
        self,
        project: Project,
        params: Any = None,
        on_progress: ProgressCallback | None = None,
        *,
        resume: int | str | None = "auto",
        relabel: bool = True,
    ) -> RunResult:
        """Train, then (``relabel``) label every image with the trained model as the new active run.

        Returns the label run (``run_id``) with ``metrics["train_run_id"]`` and ``metrics["train"]``;
        with ``relabel=False`` the train run itself.
        """
        from ..train.runs import train_method, train_run

        result = train_method(project, self, params, resume=resume, on_progress=on_progress)
        if not relabel:
            return RunResult(result.run_id, {"train_run_id": result.run_id, **result.metrics})
        run = train_run(project, result.run_id)
        labeled = self.relabel(project, run, device=run["params"].get("device") or "auto", on_progress=on_progress)
        train_summary = {k: v for k, v in result.metrics.items() if k != "epochs"}
        return RunResult(
            labeled.run_id,
            {**labeled.metrics, "train_run_id": result.run_id, "train": train_summary, "resumed": result.resumed},
        )
