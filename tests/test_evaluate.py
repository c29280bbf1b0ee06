"""Evaluation against folder names (labeler.evaluate)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from labeler.errors import InvalidInputError, NotReadyError
from labeler.evaluate import classification_report, confusion_matrix, evaluate, match_folder_labels
from labeler.jobs import Job
from labeler.labels import set_active_run, set_human_labels, write_predictions
from labeler.project import Project
from store import now


def add_images(project, root, rel_paths, folder_labels):
    ids = []
    for k, (rel, folder) in enumerate(zip(rel_paths, folder_labels, strict=True)):
        data = f"image {rel} {k}".encode()
        row = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(root / rel),
            "rel_path": rel,
            "root": str(root),
            "folder_label": folder,
            "width": 8,
            "height": 8,
            "format": "PNG",
            "bytes": len(data),
            "status": "ok",
            "added_at": now(),
        }
        with project.db.conn:
            ids.append(project.db["images"].insert(row).last_pk)
    return ids


def label_run(project, ids, top, classes=None, multi=False, labels=None):
    classes = classes or project.classes
    probs = np.full((len(ids), len(classes)), 0.1, dtype=np.float32)
    probs[np.arange(len(ids)), top] = 0.8
    with Job.start(project, "label", method="zeroshot", params={"classes": classes, "multi_label": multi}) as job:
        write_predictions(project, job.id, ids, probs, labels)
    return job.id


# truth:      cat cat cat cat dog dog dog car car
# predicted:  cat cat dog car dog dog cat car dog
TRUTH_FOLDERS = ["Cat", "cat", "CAT", "cat", "dog", "DOG", "dog", "car", "Car"]
PRED = [0, 0, 1, 2, 1, 1, 0, 2, 1]
CONFUSION = [[2, 1, 1], [1, 2, 0], [0, 1, 1]]


def test_confusion_matrix_and_report_on_arrays():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array(PRED)
    assert confusion_matrix(y_true, y_pred, 3).tolist() == CONFUSION
    assert confusion_matrix(y_true, y_pred, 4).tolist() == [r + [0] for r in CONFUSION] + [[0, 0, 0, 0]]
    rep = classification_report(y_true, y_pred, ["cat", "dog", "car"])
    assert rep["n"] == 9 and rep["accuracy"] == pytest.approx(5 / 9)
    cat, dog, car = (rep["per_class"][c] for c in ("cat", "dog", "car"))
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(2 / 3), 0.5, 4)
    assert (dog["precision"], dog["recall"], dog["support"]) == (0.5, pytest.approx(2 / 3), 3)
    assert (car["precision"], car["recall"], car["support"]) == (0.5, 0.5, 2)
    assert cat["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert rep["macro"]["recall"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)

    # A class never predicted has precision 0; a class absent from both is left out of the macro average.
    rep = classification_report([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert rep["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rep["per_class"]["a"]["precision"] == pytest.approx(2 / 3) and rep["per_class"]["a"]["recall"] == 1.0
    assert rep["macro"]["recall"] == pytest.approx(0.5)
    assert classification_report([], [], ["a", "b"])["accuracy"] is None

    with pytest.raises(InvalidInputError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(InvalidInputError):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(InvalidInputError):
        classification_report([0.5], [0], ["a", "b"])


def test_match_folder_labels():
    classes = ["golden retriever", "Tabby_Cat", "car"]
    got = match_folder_labels(["Golden_Retriever", "tabby cat", "CAR", "truck", None, "", "golden  retriever"], classes)
    assert got.tolist() == [0, 1, 2, -1, -1, -1, 0]


def test_evaluate_run_on_planted_labels(project, tmp_path):
    folders = TRUTH_FOLDERS + ["truck", None, "cat"]
    ids = add_images(project, tmp_path, [f"{i}.png" for i in range(len(folders))], folders)
    # The last image has ground truth but no prediction; "truck" and None have no ground truth.
    run = label_run(project, ids[:-1], PRED + [0, 1])
    res = evaluate(project, run)
    assert res["run_id"] == run and res["classes"] == ["cat", "dog", "car"]
    assert res["confusion"] == CONFUSION
    assert (res["n"], res["n_unlabeled"], res["n_ground_truth"]) == (9, 1, 10)
    assert res["accuracy"] == pytest.approx(5 / 9) and res["top1_accuracy"] == pytest.approx(5 / 9)
    assert res["per_class"]["cat"]["precision"] == pytest.approx(2 / 3)
    assert res["per_class"]["cat"]["recall"] == pytest.approx(0.5)
    assert res["per_class"]["dog"]["precision"] == pytest.approx(0.5)
    assert res["per_class"]["dog"]["recall"] == pytest.approx(2 / 3)
    assert res["per_class"]["car"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}

    # Final labels: the same, until a human corrects an error.
    assert evaluate(project)["confusion"] == CONFUSION
    set_human_labels(project, ids[2], "cat")
    res = evaluate(project)
    assert res["accuracy"] == pytest.approx(6 / 9) and res["run_id"] == run
    assert res["confusion"] == [[3, 0, 1], [1, 2, 0], [0, 1, 1]]
    assert res["by_source"] == {
        "pseudo": {"n": 8, "accuracy": pytest.approx(5 / 8)},
        "human": {"n": 1, "accuracy": 1.0},
    }
    # ...and the run's own evaluation is unchanged by human labels.
    assert evaluate(project, run)["accuracy"] == pytest.approx(5 / 9)


def test_evaluate_uses_the_runs_class_list_and_the_active_run(project, tmp_path):
    ids = add_images(project, tmp_path, [f"{i}.png" for i in range(9)], TRUTH_FOLDERS)
    perfect = label_run(project, ids, [0, 0, 0, 0, 1, 1, 1, 2, 2])
    # A run over a different class order: its indices are its own.
    other = label_run(project, ids, [2, 2, 0, 1, 0, 0, 2, 1, 0], classes=["car", "cat", "dog"])
    res = evaluate(project, other)
    assert res["classes"] == ["car", "cat", "dog"]
    # truth in run order (car, cat, dog): cat cat cat cat dog dog dog car car -> 1 1 1 1 2 2 2 0 0
    # predicted:                                                              2 2 0 1 0 0 2 1 0
    assert res["confusion"] == [[1, 1, 0], [1, 1, 2], [2, 0, 1]]
    assert res["accuracy"] == pytest.approx(3 / 9)
    assert evaluate(project)["run_id"] == other and evaluate(project)["accuracy"] == pytest.approx(3 / 9)
    set_active_run(project, perfect)
    assert evaluate(project)["accuracy"] == 1.0


def test_evaluate_multi_label(tmp_path):
    project = Project.create(tmp_path / "m", ["a", "b", "c"], multi_label=True)
    ids = add_images(project, tmp_path, ["1.png", "2.png", "3.png", "4.png"], ["a", "b", "c", "c"])
    run = label_run(project, ids, [1, 0, 2, 0], multi=True, labels=[[0, 1], [0], [2], []])
    for res in (evaluate(project, run), evaluate(project)):
        assert res["multi_label"]
        assert res["accuracy"] == pytest.approx(2 / 3)  # a in {b, a}, b not in {a}, c in {c}
        assert res["top1_accuracy"] == pytest.approx(1 / 3)  # top-1: b, a, c
        assert res["confusion"] == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
        assert (res["n"], res["n_unlabeled"]) == (3, 1)  # an empty predicted set is unlabeled


def test_evaluate_needs_ground_truth(project, tmp_path):
    ids = add_images(project, tmp_path, ["1.png", "2.png"], [None, "truck"])
    run = label_run(project, ids, [0, 1])
    for arg in (None, run):
        with pytest.raises(NotReadyError, match="subfolders named after the classes"):
            evaluate(project, arg)


def test_evaluate_needs_labels(project, tmp_path):
    add_images(project, tmp_path, ["1.png"], ["cat"])
    with pytest.raises(NotReadyError, match="run labeling first"):
        evaluate(project)
    with pytest.raises(InvalidInputError):
        evaluate(project, 42)


# --- multi-label: mAP, AP, F1 against ground truth sets ---------------------------------------------------
ML_PROBS = [[0.9, 0.6, 0.1], [0.8, 0.7, 0.2], [0.3, 0.2, 0.9], [0.1, 0.5, 0.4]]
ML_SETS = [[0, 1], [0], [2], [1]]
ML_FOLDERS = ["a+b", "a", "c", "b+c"]  # truth: a = 1100, b = 1001, c = 0011


def ml_project(tmp_path):
    from labeler.evaluate import evaluate_multi_label  # noqa: F401 - imported where used

    project = Project.create(tmp_path / "ml", ["a", "b", "c"], multi_label=True)
    ids = add_images(project, tmp_path, [f"{f}/{k}.png" for k, f in enumerate(ML_FOLDERS)], ML_FOLDERS)
    probs = np.array(ML_PROBS, dtype=np.float32)
    with Job.start(
        project, "label", method="zeroshot", params={"classes": ["a", "b", "c"], "multi_label": True}
    ) as job:
        write_predictions(project, job.id, ids, probs, ML_SETS)
    return project, ids, job.id


def test_multi_label_report_on_arrays():
    from labeler.evaluate import multi_label_report, predicted_sets

    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]], dtype=bool)
    scores = np.array(ML_PROBS)
    sets = np.zeros((4, 3), dtype=bool)
    for k, s in enumerate(ML_SETS):
        sets[k, s] = True
    res = multi_label_report(scores, sets, truth, ["a", "b", "c"])
    # AP by hand: a ranks its positives 1st and 2nd (1.0); b ranks them 2nd and 3rd ((1/2 + 2/3) / 2); c 1.0
    assert res["ap"] == pytest.approx({"a": 1.0, "b": 7 / 12, "c": 1.0})
    assert res["map"] == pytest.approx(31 / 36)
    assert res["ap_bars"] == [{"class": "a", "ap": 1.0}, {"class": "b", "ap": pytest.approx(7 / 12)},
                              {"class": "c", "ap": 1.0}]  # fmt: skip
    c = res["per_class"]["c"]
    assert (c["precision"], c["recall"], c["f1"], c["support"], c["predicted"]) == (
        1.0,
        0.5,
        pytest.approx(2 / 3),
        2,
        1,
    )
    assert res["macro_f1"] == pytest.approx(8 / 9)
    assert res["micro"] == pytest.approx({"precision": 1.0, "recall": 5 / 6, "f1": 10 / 11})
    assert res["exact_match"] == 0.75 and res["n"] == 4 and res["n_scored"] == 4

    # thresholds where set, the run's sets elsewhere
    t = np.array([np.nan, 0.65, 0.35])
    pred = predicted_sets(scores, sets, t)
    assert pred[:, 0].tolist() == sets[:, 0].tolist()
    assert pred[:, 1].tolist() == [False, True, False, False] and pred[:, 2].tolist() == [False, False, True, True]
    with pytest.raises(InvalidInputError):
        predicted_sets(scores, sets, np.array([0.5, 2.0, np.nan]))
    with pytest.raises(InvalidInputError):
        predicted_sets(scores, sets[:2], t)

    # rows without scores count for F1 only; a class without a positive has no AP (None, not NaN)
    res = multi_label_report(scores, sets, truth[:, [0, 1, 1]] & [True, True, False], ["a", "b", "x"],
                             scored=np.array([True, True, True, False]))  # fmt: skip
    assert res["n_scored"] == 3 and res["ap"]["x"] is None and res["per_class"]["x"]["recall"] is None
    assert res["ap"]["b"] == pytest.approx(0.5)  # b's positive img 1 ranks 2nd among the three scored images
    assert json.loads(json.dumps(res)) == res  # JSON-safe: no NaN


def test_evaluate_multi_label_a_run_and_the_final_labels(tmp_path):
    from labeler.evaluate import evaluate_multi_label
    from labeler.truth import import_truth

    project, ids, run = ml_project(tmp_path)
    res = evaluate_multi_label(project, run)
    assert res["map"] == pytest.approx(31 / 36) and res["macro_f1"] == pytest.approx(8 / 9)
    assert res["exact_match"] == res["accuracy"] == 0.75
    assert res["truth_sources"] == {"file": 0, "folder": 4} and res["n_ground_truth"] == 4
    assert res["thresholds"] == {"a": None, "b": None, "c": None}
    assert res["labels"] == f"run {run} (zeroshot)"

    # the project's thresholds apply where set (and explicit ones override them)
    project.set_thresholds({"c": 0.35})
    res = evaluate_multi_label(project, run)
    assert res["exact_match"] == 1.0 and res["macro_f1"] == 1.0 and res["thresholds"]["c"] == 0.35
    assert res["map"] == pytest.approx(31 / 36)  # the ranking does not depend on thresholds
    assert evaluate_multi_label(project, run, thresholds={"b": 0.65})["per_class"]["b"]["f1"] == 0.0
    with pytest.raises(InvalidInputError, match="unknown class"):
        evaluate_multi_label(project, run, thresholds={"z": 0.5})
    project.set_thresholds({}, replace=True)

    # final labels: a human label replaces the run's set; mAP still ranks the active run's scores
    set_human_labels(project, ids[3], ["b", "c"])
    res = evaluate_multi_label(project)
    assert res["exact_match"] == 1.0 and res["by_source"] == {"pseudo": 3, "human": 1}
    assert res["map"] == pytest.approx(31 / 36) and res["run_id"] == run and res["labels"] == "final labels"

    # a truth file wins over the folder names: image 3 is truly {a}
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": ids[2], "labels": ["a"]}) + "\n", encoding="utf-8")
    import_truth(project, f)
    res = evaluate_multi_label(project, run)
    assert res["truth_sources"] == {"file": 1, "folder": 3}
    assert res["per_class"]["a"]["support"] == 3 and res["per_class"]["c"]["support"] == 1
    assert res["ap"]["c"] == pytest.approx(1 / 2)  # c's one positive (img 4, 0.4) ranks 2nd behind img 3 (0.9)


def test_evaluate_multi_label_counts_a_human_none_as_all_negative(tmp_path):
    """A person's "none of the classes" is scored as a prediction of no class (not skipped, not unlabeled), against
    a truth file that may say an image holds none of the classes too."""
    from labeler.evaluate import evaluate_multi_label
    from labeler.truth import import_truth

    project, ids, run = ml_project(tmp_path)
    base = evaluate_multi_label(project)  # 3 of 4 sets right; image 3 ({c} truly) is right
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": ids[2], "labels": []}) + "\n", encoding="utf-8")
    assert import_truth(project, f).empty == 1
    wrong = evaluate_multi_label(project)  # image 3 truly holds nothing; its pseudo-label {c} is wrong
    assert wrong["exact_match"] == base["exact_match"] - 0.25 and wrong["n"] == 4
    set_human_labels(project, ids[2], [])
    res = evaluate_multi_label(project)
    assert res["by_source"] == {"pseudo": 3, "human": 1} and res["n"] == 4
    assert res["exact_match"] == base["exact_match"]  # the empty set is right
    assert res["per_class"]["c"]["predicted"] == wrong["per_class"]["c"]["predicted"] - 1


def test_evaluate_multi_label_needs_truth_and_labels(tmp_path):
    from labeler.evaluate import evaluate_multi_label

    project = Project.create(tmp_path / "m", ["a", "b"], multi_label=True)
    add_images(project, tmp_path, ["x/1.png"], ["x"])
    with pytest.raises(NotReadyError, match="ground truth sets"):
        evaluate_multi_label(project)
    add_images(project, tmp_path, ["a+b/2.png"], ["a+b"])
    with pytest.raises(NotReadyError, match="run labeling first"):
        evaluate_multi_label(project)


def test_cli_eval_of_a_multi_label_project(tmp_path, capsys):
    from labeler.cli import main

    project, ids, run = ml_project(tmp_path)
    root = str(project.root)
    assert main(["eval", root, "--run", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["map"] == pytest.approx(31 / 36) and res["multi_label"]
    assert main(["eval", root]) == 0
    out = capsys.readouterr().out
    assert "mAP 0.861" in out and "exact-set accuracy 0.750" in out and "micro F1 0.909" in out
    assert "b: AP 0.583" in out.replace("  ", "")
    f = tmp_path / "t.csv"
    f.write_text("path,labels\na/1.png,b\nnope.png,a\n", encoding="utf-8")
    assert main(["truth", root, str(f)]) == 2
    assert "line 3" in capsys.readouterr().err
    assert main(["truth", root, str(f), "--skip-unknown-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 1
    assert main(["truth", root]) == 0
    assert "1 from files" in capsys.readouterr().out
    assert main(["truth", root, "--clear"]) == 0


def test_a_multi_label_project_end_to_end_through_the_cli(tmp_path, capsys):
    """Images in folders cat/, dog/ and cat+dog/ → tiny features → zero-shot → multi-hot CSV → mAP."""
    from labeler.cli import main
    from labeler.export import read_csv

    from .conftest import class_folders

    images = class_folders(tmp_path / "imgs", 4, ["cat", "dog", "cat+dog"])
    root = str(tmp_path / "proj")
    assert main(["init", root, "--classes", "cat,dog", "--multi-label"]) == 0
    assert main(["import", root, str(images), "--quiet"]) == 0
    assert main(["features", root, "--clip", "tiny-random", "--quiet"]) == 0
    assert main(["label", root, "--quiet"]) == 0
    out = tmp_path / "labels.csv"
    assert main(["export", root, "--format", "csv", "--one-hot", "--scores", "-o", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 12 and list(rows[0])[7:] == ["cat", "dog", "score:cat", "score:dog"]
    for r in rows:
        assert {c for c in ("cat", "dog") if r[c] == "1"} == set(filter(None, r["label"].split(";")))
        assert all(0.0 <= float(r[f"score:{c}"]) <= 1.0 for c in ("cat", "dog"))
    capsys.readouterr()
    assert main(["eval", root, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["truth_sources"] == {"file": 0, "folder": 12} and res["n_scored"] == 12
    assert res["per_class"]["cat"]["support"] == 8 and res["per_class"]["dog"]["support"] == 8
    assert 0.0 <= res["map"] <= 1.0 and [b["class"] for b in res["ap_bars"]] == ["cat", "dog"]
    assert main(["export", root, "--format", "imagefolder", "-o", str(tmp_path / "folders")]) == 2
    assert "multi-label" in capsys.readouterr().err
