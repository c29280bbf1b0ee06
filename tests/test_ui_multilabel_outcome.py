"""What the Train and Review steps say about a multi-label (CDUL) project: mAP, F1 at the thresholds, label
cardinality and label-set changes against the ground truth sets — never single-label figures (top-1 accuracy vs.
folder names, ``a → b`` changes, a confusion matrix) — and a degenerate-teacher warning in CDUL's terms.

The project: the 40 mosaics of :mod:`tests.test_cdul_train` (folders such as ``cat+dog``, ground truth set from
them), tiny random models; ``cdul-init`` labels them, then ``cdul`` trains 2 epochs and relabels. The handlers are
called by name.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from labeler.project import Project

from .conftest import make_ctx
from .test_cdul_train import CLASSES, base_project  # noqa: F401  (the module-scoped fixture, reused)

SINGLE_LABEL_TEXT = ("Accuracy vs. folder names", "Most common changes", "NoLA", "LaFTer", "lb-confusion")


@pytest.fixture(scope="module")
def trained(base_project, tmp_path_factory):  # noqa: F811
    """(project dir, cdul-init label run id, cdul train run id): every held-out epoch reads as degenerate."""
    import labeler.train.selection as selection
    from labeler.cli import main
    from labeler.jobs import list_runs
    from labeler.methods import get_method

    dst = tmp_path_factory.mktemp("mlview") / "ml"
    shutil.copytree(base_project, dst, symlinks=True)
    assert main(["label", str(dst), "--method", "cdul-init", "--label-threshold", "0.3", "--quiet"]) == 0
    p = Project(dst)
    init_run = list_runs(p, kind="label")[0]["id"]
    method = get_method("cdul")
    params = {
        "epochs": 2,
        "refine_warmup": 1,
        "refine_every": 1,
        "batch_size": 8,
        "device": "cpu",
        "holdout": 0.2,
        "label_threshold": 0.3,
    }
    with pytest.MonkeyPatch.context() as mp:  # the teacher (and student) collapsed: the warning must show
        mp.setattr(selection, "is_degenerate", lambda *a, **k: True)
        method.run(p, method.params_from(params))
    train_run = list_runs(p, kind="train")[0]["id"]
    p.close()
    return dst, init_run, train_run


def _sets(p: Project, run_id: int) -> dict[int, set[str]]:
    """Image id → the class names a run stored for it."""
    rows = p.db.execute("select image_id, labels from predictions where run_id = ?", [run_id]).fetchall()
    return {int(i): {CLASSES[k] for k in json.loads(labels)} for i, labels in rows}


def test_train_outcome_of_a_cdul_run_is_multi_label(trained):
    from labeler.evaluate import evaluate_multi_label
    from labeler.jobs import get_run
    from labeler.ui.steps import train as train_step

    dst, init_run, train_run = trained
    ctx = make_ctx(dst.parent)
    out = train_step.refresh(ctx, str(dst)).outcome
    p = Project(dst)
    try:
        new_run = p.db.execute("select max(id) from runs where kind = 'label'").fetchone()[0]
        new_eval, old_eval = evaluate_multi_label(p, run_id=new_run), evaluate_multi_label(p, run_id=init_run)
        old_sets, new_sets = _sets(p, init_run), _sets(p, new_run)
        warnings = get_run(p, train_run)["metrics"]["warnings"]
    finally:
        p.close()
    for text in SINGLE_LABEL_TEXT:
        assert text not in out
    assert f"Compared with run {init_run} (cdul-init)" in out
    assert (
        f"mAP (macro) vs. the ground truth sets: {old_eval['map']:.3f} → **{new_eval['map']:.3f}** on 40 images" in out
    )
    assert f"macro {old_eval['macro_f1']:.3f} → **{new_eval['macro_f1']:.3f}**" in out
    assert f"micro {old_eval['micro']['f1']:.3f} → **{new_eval['micro']['f1']:.3f}**" in out
    card_old = np.mean([len(s) for s in old_sets.values()])
    card_new = np.mean([len(s) for s in new_sets.values()])
    assert f"Labels per image: {card_old:.2f} → **{card_new:.2f}**." in out
    assert "Pseudo-labels: global: mAP" in out and "refined: mAP" in out
    # the label-set changes, counted image by image here
    changed = sum(old_sets[i] != new_sets[i] for i in new_sets)
    assert f"the label sets of **{changed} of 40 images** changed" in out
    for c in CLASSES:
        gained = sum(c in new_sets[i] and c not in old_sets[i] for i in new_sets)
        lost = sum(c in old_sets[i] and c not in new_sets[i] for i in new_sets)
        assert bool(re.search(rf"\+{c} on {gained}\b", out)) == (gained > 0)
        assert bool(re.search(rf"−{c} on {lost}\b", out)) == (lost > 0)
    # the degenerate-teacher warning names CDUL's teacher, not NoLA's or LaFTer's
    teacher = [w for w in warnings if w.startswith("the teacher looks degenerate")]
    assert teacher and "CDUL's initial pseudo-labels" in teacher[0] and "NoLA" not in teacher[0]
    assert "CDUL's initial pseudo-labels" in out


def test_without_ground_truth_the_outcome_says_so(trained, tmp_path):
    from labeler.ui.steps import train as train_step

    dst = tmp_path / "bare"
    shutil.copytree(trained[0], dst, symlinks=True)
    p = Project(dst)
    with p.db.conn:
        p.db.execute("delete from ground_truth")
        p.db.execute("update images set folder_label = null")
    p.close()
    out = train_step.refresh(make_ctx(tmp_path), str(dst)).outcome
    assert "no ground truth sets to score against" in out and "Labels per image:" in out
    assert "mAP (macro) vs." not in out and "Accuracy vs. folder names" not in out


def test_review_shows_map_and_ap_bars_not_a_confusion_matrix(trained):
    from labeler.evaluate import evaluate_multi_label
    from labeler.ui.steps import pseudolabels as pl

    dst = trained[0]
    out = pl.refresh(make_ctx(dst.parent), str(dst))
    p = Project(dst)
    try:
        res = evaluate_multi_label(p)
    finally:
        p.close()
    assert f"**mAP (macro): {res['map']:.3f}**" in out.accuracy
    assert f"macro {res['macro_f1']:.3f}, micro {res['micro']['f1']:.3f}" in out.accuracy
    assert "on 40 images with ground truth" in out.accuracy
    assert "Accuracy vs. folder names" not in out.accuracy and "lb-confusion" not in out.confusion
    assert "AP per class" in out.confusion
    for bar in res["ap_bars"]:
        assert f"{bar['class']}</th>" in out.confusion and f"AP {bar['ap']:.2f}" in out.confusion


def test_the_degenerate_teacher_warning_keeps_nola_and_lafter_text_by_default():
    from labeler.train.cdul import CDULTask
    from labeler.train.loop import selection_warnings

    scores = [{"epoch": 0, "class_entropy": 0.9, "teacher_degenerate": True, "teacher_entropy": 0.1, "score": 0.5}]
    (default,) = selection_warnings(scores, 0)
    assert default == (
        "the teacher looks degenerate (epochs 0): its labels on the held-out images concentrate on a few classes "
        "(class entropy 0.10 vs 0.90 for the untrained model); NoLA: the DINO features may not separate these "
        "classes; LaFTer: the teacher shares the student's LayerNorms and collapsed with it. Review a sample of the "
        "labels before trusting them"
    )
    (cdul,) = selection_warnings(scores, 0, CDULTask.teacher_note)
    assert "NoLA" not in cdul and "LaFTer" not in cdul and "CDUL's initial pseudo-labels" in cdul
