"""Audited accuracy (labeler.audit): Wilson intervals, the seeded sample, verdicts, the report, training exclusion,
the export sidecar and the CLI round trip. Synthetic projects (rows inserted directly), no models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler import audit
from labeler.errors import InvalidInputError, NotReadyError

from .explore_helpers import add_images, label_run

CLASSES = ["cat", "dog", "car"]


# --- pure statistics --------------------------------------------------------------------------------------
def test_wilson_matches_hand_computed_values():
    # k=8, n=10: p=0.8, z=1.96: centre (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.7168, half-width 0.2266
    lo, hi = audit.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-4) and hi == pytest.approx(0.9433, abs=5e-4)
    lo, hi = audit.wilson_interval(0, 10)  # never (0, 0): Wilson is not the Wald interval
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=5e-4)
    lo, hi = audit.wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=5e-4) and hi == 1.0
    assert audit.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = audit.wilson_interval(80, 100)
    assert (lo, hi) == (pytest.approx(0.7112, abs=5e-4), pytest.approx(0.8666, abs=5e-4))
    with pytest.raises(InvalidInputError):
        audit.wilson_interval(11, 10)


def test_wilson_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 1), (1, 1), (3, 7), (8, 10), (45, 50), (123, 400)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert audit.wilson_interval(k, n) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))


def test_estimate_weights_and_per_class():
    y = [True] * 8 + [False] * 2
    plain = audit.estimate(y)
    assert plain["accuracy"] == 0.8 and plain["n"] == 10
    same = audit.estimate(y, weights=[3.0] * 10)  # equal weights: the plain interval
    assert same["low"] == pytest.approx(plain["low"]) and same["n_eff"] == pytest.approx(10)
    skew = audit.estimate(y, weights=[1.0] * 8 + [4.0] * 2)  # the wrong ones stand for more images
    assert skew["accuracy"] == pytest.approx(8 / 16) and skew["n_eff"] < 10
    pairs = [("cat", "cat")] * 6 + [("cat", "dog")] * 2 + [("dog", "dog")] * 2 + [("car", None)]
    est = audit.accuracy_estimate(pairs, classes=CLASSES)
    assert est["overall"]["accuracy"] == pytest.approx(8 / 11)  # unlabeled counts as wrong
    dog = est["per_class"]["dog"]
    assert dog["precision"]["n"] == 4 and dog["precision"]["accuracy"] == 0.5  # 2 of 4 labeled dog are dogs
    assert dog["recall"]["n"] == 2 and dog["recall"]["accuracy"] == 1.0
    assert est["per_class"]["car"]["precision"]["n"] == 0 and est["per_class"]["car"]["few"]
    multi = audit.accuracy_estimate([(["cat", "dog"], ["dog", "cat"]), (["cat"], ["cat", "dog"])])
    assert multi["overall"]["correct"] == 1  # sets must match exactly


def test_allocate_is_proportional_and_covers_every_stratum():
    take = audit.allocate({"a": 900, "b": 90, "c": 10}, 50)
    assert sum(take.values()) == 50 and take["c"] >= 1 and take["a"] > take["b"] > 0
    assert audit.allocate({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}  # never more than a stratum has
    assert audit.allocate({"a": 5, "b": 5, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}


# --- a project --------------------------------------------------------------------------------------------
def _planted(project, n=100, right=0.8, seed=0):
    """n images, truth cycling through the classes, a label run that is right on a ``right`` fraction."""
    project.set_classes(CLASSES)
    ids = add_images(project, n)
    truth = np.arange(n) % 3
    pred = truth.copy()
    wrong = np.random.default_rng(seed).permutation(n)[: int(round((1 - right) * n))]
    pred[wrong] = (truth[wrong] + 1) % 3
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), pred] = 0.8
    run = label_run(project, ids, probs)
    return ids, {i: CLASSES[t] for i, t in zip(ids, truth, strict=True)}, run


def _check_all(project, truth: dict[int, str]):
    for it in audit.audit_items(project, unchecked=True):
        if it["classes"] == [truth[it["image_id"]]]:
            audit.record_verdict(project, it["image_id"], "confirm")
        else:
            audit.record_verdict(project, it["image_id"], "correct", truth[it["image_id"]])


def test_sample_is_seeded_reproducible_prefix_consistent_and_uniform(project):
    ids = add_images(project, 300)
    a = audit.draw_sample(project, 40, seed=7)
    assert a["added"] == 40 and a["design"]["mode"] == "uniform"
    first = [it["image_id"] for it in audit.audit_items(project)]
    assert audit.draw_sample(project, 40)["added"] == 0  # the same size again draws nothing
    audit.draw_sample(project, 100)
    grown = [it["image_id"] for it in audit.audit_items(project)]
    assert grown[:40] == first and len(set(grown)) == 100
    audit.reset_audit(project)
    audit.draw_sample(project, 100, seed=7)  # all at once: the same 100 images (and the first 40 first)
    assert sorted(it["image_id"] for it in audit.audit_items(project)) == sorted(grown)
    audit.reset_audit(project)
    audit.draw_sample(project, 100, seed=8)
    assert sorted(it["image_id"] for it in audit.audit_items(project)) != sorted(grown)
    with pytest.raises(InvalidInputError, match="seed 8"):
        audit.draw_sample(project, 120, seed=9)
    with pytest.raises(InvalidInputError, match="stratify off"):
        audit.draw_sample(project, 120, stratify=True)
    # uniform: over many seeds, every image is drawn about equally often (1/3 of the time)
    sha = [r[0] for r in project.db.execute("select sha256 from images order by id")]
    assert len(sha) == len(ids)
    hits = np.zeros(len(sha))
    for s in range(200):
        hits[np.argsort(audit.sample_keys(s, sha))[:100]] += 1
    assert hits.std() < 12 and hits.min() > 30  # binomial(200, 1/3): mean 66.7, sd ≈ 6.7


def test_stratified_sample_covers_every_class_and_refuses_changed_labels(project):
    project.set_classes(CLASSES)
    ids = add_images(project, 200)
    pred = np.array([0] * 180 + [1] * 15 + [2] * 5)  # car is rare
    probs = np.full((200, 3), 0.1)
    probs[np.arange(200), pred] = 0.8
    label_run(project, ids, probs)
    res = audit.draw_sample(project, 20, stratify=True, seed=3)
    strata = [it["stratum"] for it in audit.audit_items(project)]
    assert len(strata) == 20 and set(strata) == set(CLASSES)  # uniform would miss car 60 % of the time
    assert res["design"]["strata"] == {"cat": 180, "dog": 15, "car": 5}
    assert audit.draw_sample(project, 30, stratify=True)["sampled"] == 30
    from labeler.labels import set_human_labels

    set_human_labels(project, ids[0], "dog")  # labels changed: the strata no longer match
    with pytest.raises(NotReadyError, match="strata no longer match"):
        audit.draw_sample(project, 40, stratify=True)


def test_report_on_a_planted_case_and_for_a_run(project):
    ids, truth, run = _planted(project, n=100, right=0.8)
    with pytest.raises(NotReadyError, match="no audit sample yet"):
        audit.audit_report(project)
    audit.draw_sample(project, 100)
    rep = audit.audit_report(project)
    assert rep["used"] == 0 and rep["overall"]["accuracy"] is None and rep["unchecked"] == 100
    _check_all(project, truth)
    rep = audit.audit_report(project)
    o = rep["overall"]
    assert rep["used"] == 100 and o["correct"] == 80 and o["accuracy"] == pytest.approx(0.8)
    assert (o["low"], o["high"]) == audit.wilson_interval(80, 100)
    assert set(rep["per_class"]) == set(CLASSES) and not rep["warnings"]
    assert sum(m["precision"]["n"] for m in rep["per_class"].values()) == 100
    # a second run that is always right: the same checks say so, with its own interval
    good = np.full((100, 3), 0.1)
    good[np.arange(100), [CLASSES.index(truth[i]) for i in ids]] = 0.8
    better = label_run(project, ids, good)
    assert audit.audit_report(project, run_id=better)["overall"]["accuracy"] == 1.0
    assert audit.audit_report(project, run_id=run)["overall"]["accuracy"] == pytest.approx(0.8)
    rows = {r["run_id"]: r for r in audit.compare_runs(project)}
    assert rows[better]["accuracy"] == 1.0 and rows[run]["accuracy"] == pytest.approx(0.8)
    assert rows[None]["accuracy"] == 1.0  # the final labels follow the newest run now
    # a check is not a label: no labels row was written
    assert project.db.execute("select count(*) from labels").fetchone()[0] == 0


def test_verdicts_skip_and_errors(project):
    ids, truth, _ = _planted(project, n=30)
    audit.draw_sample(project, 10)
    items = audit.audit_items(project)
    first = items[0]["image_id"]
    with pytest.raises(InvalidInputError, match="not in the audit sample"):
        audit.record_verdict(project, max(ids) + 99, "confirm")
    with pytest.raises(InvalidInputError, match="one of"):
        audit.record_verdict(project, first, "maybe")
    with pytest.raises(InvalidInputError, match="not a class"):
        audit.record_verdict(project, first, "correct", "zebra")
    item = audit.record_verdict(project, first, "correct", "DOG")  # matched ignoring case
    assert item["truth"] == ["dog"] and item["verdict"] == "correct"
    audit.record_verdict(project, items[1]["image_id"], "skip")
    p = audit.audit_progress(project)
    assert p == {"sampled": 10, "checked": 2, "skipped": 1, "unchecked": 8}
    rep = audit.audit_report(project)
    assert rep["used"] == 1 and any("skipped" in w for w in rep["warnings"])
    assert audit.audit_items(project, unchecked=True)[0]["image_id"] == items[2]["image_id"]


def test_audit_images_are_kept_out_of_verified_labels(project):
    from labeler.labels import set_human_labels
    from labeler.train.data import verified_labels, without_audit

    ids, truth, _ = _planted(project, n=60)
    for i in ids:
        set_human_labels(project, i, truth[i])
    audit.draw_sample(project, 15)
    audited = audit.sampled_ids(project)
    verified = verified_labels(project, ids, CLASSES)
    assert len(audited) == 15 and all((verified[r] < 0) == (i in audited) for r, i in enumerate(ids))
    kept = without_audit(project, ids)
    assert kept == [i for i in ids if i not in audited] and len(kept) == 45


def test_a_training_run_never_sees_audit_images(tmp_path):
    """NoLA on 20 images, all labeled by hand, 8 of them in the audit sample: the run's images (train, held-out,
    validation, NoLA's alignment set) are the other 12."""
    from labeler.cli import main
    from labeler.labels import set_human_labels
    from labeler.methods import get_method
    from labeler.project import Project
    from labeler.train import train
    from labeler.train.loop import SETUP, load
    from labeler.train.runs import run_dir

    from .conftest import class_folders

    names = ["cat", "dog", "ship", "truck"]
    src = class_folders(tmp_path / "imgs", per_class=5, classes=names)
    root = tmp_path / "proj"
    assert main(["init", str(root), "--classes", ",".join(names)]) == 0
    assert main(["import", str(root), str(src), "--quiet"]) == 0
    assert main(["features", str(root), "--clip", "tiny-random", "--dino", "tiny-random", "--quiet"]) == 0
    proj = Project(root)
    for im in proj.images():
        set_human_labels(proj, im["id"], im["folder_label"])
    audit.draw_sample(proj, 8, seed=1)
    audited = audit.sampled_ids(proj)
    params = get_method("nola").params_from({"epochs": 1, "batch_size": 8, "tokens": 4})
    res = train(proj, "nola", params)
    setup = res.metrics["setup"]
    assert setup["images"] == 12 and setup["audit_excluded"] == 8 and setup["verified"] == 12
    stored = load(run_dir(proj, res.run_id) / SETUP)
    assert not set(stored["image_ids"].tolist()) & audited


def test_export_writes_the_estimate_beside_csv_and_jsonl(project, tmp_path):
    from labeler.export import export_report, read_csv

    _, truth, _ = _planted(project, n=30)
    rep = export_report(project, "csv", tmp_path / "a.csv")
    assert "audit" not in rep.extra  # no audit: no sidecar
    audit.draw_sample(project, 10)
    _check_all(project, truth)
    for fmt in ("csv", "jsonl"):
        rep = export_report(project, fmt, tmp_path / f"b.{fmt}")
        side = json.loads((tmp_path / f"b.{fmt}.audit.json").read_text())
        assert rep.extra["audit"] == str(tmp_path / f"b.{fmt}.audit.json")
        assert side["used"] == 10 and side["export"] == f"b.{fmt}" and 0 <= side["overall"]["low"] <= 1
    assert len(read_csv(tmp_path / "b.csv")) == 30  # the CSV itself is unchanged


def test_cli_round_trip_with_json(project, capsys):
    from labeler.cli import main

    _, truth, _ = _planted(project, n=40)
    key = str(project.root)

    def run(*args):
        capsys.readouterr()
        code = main(["audit", key, *args, "--json"])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if code == 0 else out.err)

    code, err = run("--report")
    assert code == 2 and "--sample" in err
    code, res = run("--sample", "12", "--seed", "5", "--limit", "3")
    assert code == 0 and res["added"] == 12 and res["progress"]["unchecked"] == 12 and len(res["next"]) == 3
    for _ in range(12):
        code, res = run("--limit", "1")
        it = res["next"][0]
        right = truth[it["image_id"]]
        if it["classes"] == [right]:
            code, done = run("--confirm", str(it["image_id"]))
        else:
            code, done = run("--check", str(it["image_id"]), right)
        assert code == 0 and done["item"]["truth"] == [right]
    code, rep = run("--report")
    assert code == 0 and rep["used"] == 12 and rep["design"]["seed"] == 5
    assert rep["overall"]["low"] <= rep["overall"]["accuracy"] <= rep["overall"]["high"]
    code, runs = run("--report", "--runs")
    assert code == 0 and runs["runs"][0]["labels"] == "final labels"
    code, err = run("--confirm", "1", "--report")
    assert code == 2 and "one of" in err
    code, err = run("--check", "3")
    assert code == 2 and "true class" in err
    assert main(["audit", key, "--report"]) == 0
    assert "audited accuracy of the final labels" in capsys.readouterr().out


def test_a_version_5_database_gains_the_audit_table(project):
    import store
    from labeler.project import Project

    root = project.root
    project.db.execute("drop table audit")
    project.db.execute("pragma user_version = 5")
    project.db.conn.commit()
    project.close()
    again = Project(root)
    assert store.schema_version(again.db) == store.SCHEMA_VERSION >= 6
    assert {"image_id", "position", "seed", "stratum", "verdict", "truth", "checked_at"} <= set(
        again.db["audit"].columns_dict
    )


# --- multi-label: label sets ------------------------------------------------------------------------------
ML_PAIRS = [  # (truth, predicted)
    (["cat", "dog"], ["cat", "dog"]),
    (["cat"], ["cat", "dog"]),
    (["dog"], ["dog"]),
    (["cat", "car"], ["car"]),
    ([], []),
    (["car"], []),
]


def test_multi_label_estimate_per_label_micro_and_exact_set():
    est = audit.accuracy_estimate(ML_PAIRS, classes=CLASSES, multi_label=True)
    o = est["overall"]
    assert (o["correct"], o["n"]) == (3, 6)  # exact sets: 1, 3 and the empty 5
    assert (o["low"], o["high"]) == audit.wilson_interval(3, 6)
    got = {c: (m["precision"]["correct"], m["precision"]["n"], m["recall"]["correct"], m["recall"]["n"])
           for c, m in est["per_class"].items()}  # fmt: skip
    assert got == {"cat": (2, 2, 2, 3), "dog": (2, 3, 2, 2), "car": (1, 1, 1, 2)}
    dog = est["per_class"]["dog"]["precision"]
    assert (dog["low"], dog["high"]) == audit.wilson_interval(2, 3)
    micro = est["micro"]
    assert (micro["precision"]["correct"], micro["precision"]["n"]) == (5, 6)
    assert (micro["recall"]["correct"], micro["recall"]["n"]) == (5, 7)
    assert (micro["recall"]["low"], micro["recall"]["high"]) == audit.wilson_interval(5, 7)
    # design weights: the last image stands for 3
    w = audit.accuracy_estimate(ML_PAIRS, weights=[1, 1, 1, 1, 1, 3], classes=CLASSES, multi_label=True)
    assert w["micro"]["recall"]["accuracy"] == pytest.approx(5 / 9)
    assert w["per_class"]["car"]["recall"]["accuracy"] == pytest.approx(1 / 4)
    assert w["overall"]["accuracy"] == pytest.approx(3 / 8)
    # single-label pairs: no micro, an empty prediction is wrong, as before
    single = audit.accuracy_estimate([("cat", "cat"), ("dog", None)])
    assert "micro" not in single and single["overall"]["correct"] == 1


def _multi_project(tmp_path, n_copies=1):
    from labeler.jobs import Job
    from labeler.labels import write_predictions
    from labeler.project import Project

    project = Project.create(tmp_path / "ml", CLASSES, multi_label=True)
    pairs = ML_PAIRS * n_copies
    ids = add_images(project, len(pairs))
    probs = np.full((len(pairs), 3), 0.1)
    for k, (_, pred) in enumerate(pairs):
        for c in pred:
            probs[k, CLASSES.index(c)] = 0.9 - 0.1 * pred.index(c)
    sets = [[CLASSES.index(c) for c in pred] for _, pred in pairs]
    with Job.start(project, "label", method="zeroshot", params={"classes": CLASSES, "multi_label": True}) as job:
        write_predictions(project, job.id, ids, probs, sets)
    return project, ids, pairs


def test_multi_label_audit_records_true_sets_and_reports_per_label(tmp_path):
    project, ids, pairs = _multi_project(tmp_path)
    audit.draw_sample(project, len(ids))
    for image_id, (truth, pred) in zip(ids, pairs, strict=True):
        if truth == pred and truth:
            audit.record_verdict(project, image_id, "confirm")
        else:
            item = audit.record_verdict(project, image_id, "correct", truth)
            assert item["truth"] == truth  # [] : the image has none of the classes
    rep = audit.audit_report(project)
    assert rep["multi_label"] and rep["used"] == 6
    want = audit.accuracy_estimate(ML_PAIRS, classes=CLASSES, multi_label=True)
    assert rep["overall"] == want["overall"] and rep["per_class"] == want["per_class"] and rep["micro"] == want["micro"]
    with pytest.raises(InvalidInputError, match="true class"):
        audit.record_verdict(project, ids[0], "correct", None)


def test_a_human_none_label_can_be_confirmed_and_is_right_against_an_empty_truth(tmp_path):
    from labeler.labels import set_human_labels

    project, ids, pairs = _multi_project(tmp_path)
    audit.draw_sample(project, len(ids))
    set_human_labels(project, ids[0], [])  # "none of the classes"
    item = audit.record_verdict(project, ids[0], "confirm")
    assert item["truth"] == [] and item["verdict"] == "confirm"
    rep = audit.audit_report(project)
    assert rep["used"] == 1 and rep["overall"]["correct"] == 1


def test_multi_label_stratified_audit_weighs_labels_by_stratum(tmp_path):
    project, ids, pairs = _multi_project(tmp_path, n_copies=6)  # 36 images
    audit.draw_sample(project, 7, stratify=True, seed=1)  # not proportional: at least one per stratum
    items = audit.audit_items(project)
    truth = dict(zip(ids, pairs, strict=True))
    for it in items:
        audit.record_verdict(project, it["image_id"], "correct", truth[it["image_id"]][0])
    rep = audit.audit_report(project)
    sizes = audit.design(project)["strata"]
    per = {}
    for it in items:
        per[it["stratum"]] = per.get(it["stratum"], 0) + 1
    weights = [sizes[it["stratum"]] / per[it["stratum"]] for it in items]
    assert len(set(weights)) > 1  # unequal weights: they matter
    got_pairs = [(truth[it["image_id"]][0], truth[it["image_id"]][1]) for it in items]
    want = audit.accuracy_estimate(got_pairs, weights, classes=CLASSES, multi_label=True)
    assert rep["micro"] == want["micro"] and rep["per_class"] == want["per_class"]
    assert rep["overall"]["accuracy"] == pytest.approx(want["overall"]["accuracy"])
    plain = audit.accuracy_estimate(got_pairs, classes=CLASSES, multi_label=True)
    assert rep["micro"]["recall"]["accuracy"] != pytest.approx(plain["micro"]["recall"]["accuracy"])


def test_multi_label_cli_check_with_a_set_and_none(tmp_path, capsys):
    from labeler.cli import main

    project, ids, pairs = _multi_project(tmp_path)
    key = str(project.root)
    assert main(["audit", key, "--sample", "6"]) == 0
    capsys.readouterr()
    assert main(["audit", key, "--check", str(ids[3]), "cat", "car", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["item"]["truth"] == ["cat", "car"]
    assert main(["audit", key, "--check", str(ids[4]), "-"]) == 0
    assert "truth: none of the classes" in capsys.readouterr().out
    assert main(["audit", key, "--report"]) == 0
    out = capsys.readouterr().out
    assert "audited exact-set accuracy of the final labels" in out and "all labels pooled" in out


def test_the_audit_step_takes_a_true_label_set(tmp_path):
    from labeler.ui.steps import audit as step

    from .conftest import make_ctx

    project, ids, pairs = _multi_project(tmp_path)
    ctx = make_ctx(tmp_path)
    key = str(project.root)
    out = step.draw(ctx, key, 6, False, 0)
    assert out.truth_set.visible and not out.truth.visible and out.truth_set.choices[0][1] == "cat"
    truth = dict(zip(ids, pairs, strict=True))
    first = out.current
    out = step.correct(ctx, key, first, None, truth[first][0])
    assert audit.audit_items_for(project, [first])[0]["truth"] == truth[first][0]
    while out.current is not None:
        out = step.correct(ctx, key, out.current, None, truth[out.current][0])
    assert "exact-set accuracy of the final labels: 50.0%" in out.estimate and "All labels pooled" in out.estimate
    from labeler.project import Project

    plain = step.view(Project.create(tmp_path / "single", CLASSES))
    assert plain.truth.visible and not plain.truth_set.visible


def test_a_persons_none_of_the_classes_is_its_own_stratum_not_unlabeled(tmp_path):
    from labeler.labels import set_human_labels

    project, ids, pairs = _multi_project(tmp_path)  # 6 images; ML_PAIRS[4] and [5] predict no class: unlabeled
    more = add_images(project, 4, start=len(ids))  # no prediction: unlabeled too
    set_human_labels(project, [ids[0], ids[1]], [])  # "none of the classes": decided
    audit.draw_sample(project, 5, stratify=True, seed=2)
    sizes = audit.design(project)["strata"]
    assert sizes[audit.NONE_OF_THE_CLASSES] == 2 and sizes[audit.UNLABELED] == 2 + len(more)
    assert sum(sizes.values()) == len(ids) + len(more)
    strata = {it["image_id"]: it["stratum"] for it in audit.audit_items(project)}
    assert audit.NONE_OF_THE_CLASSES in strata.values()  # the stratum gets at least one image
    assert all(s == audit.NONE_OF_THE_CLASSES for i, s in strata.items() if i in (ids[0], ids[1]))
    for image_id, s in strata.items():  # check all but the "none" stratum: the report says which one is missing
        if s != audit.NONE_OF_THE_CLASSES:
            audit.record_verdict(project, image_id, "correct", ["cat"])
    warnings = " ".join(audit.audit_report(project)["warnings"])
    assert "strata not checked yet ((none of the classes))" in warnings
