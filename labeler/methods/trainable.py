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
        from ..train.runs import relabel_with, train_method, train_run

        result = train_method(project, self, params, resume=resume, on_progress=on_progress)
        if not relabel:
            return RunResult(result.run_id, {"train_run_id": result.run_id, **result.metrics})
        run = train_run(project, result.run_id)
        device = run["params"].get("device") or "auto"
        labeled = relabel_with(project, self, run, device=device, on_progress=on_progress)
        train_summary = {k: v for k, v in result.metrics.items() if k != "epochs"}
        return RunResult(
            labeled.run_id,
            {**labeled.metrics, "train_run_id": result.run_id, "train": train_summary, "resumed": result.resumed},
        )
