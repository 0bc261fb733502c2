"""`evaluate`'s classifier section: the patient-level splits, and `--classifier finetune`."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth_kohya.evaluation import features

from .conftest import invoke
from .eval_data import build, isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
pytestmark = pytest.mark.skipif(bool(features.missing(TINY)), reason="the eval extra (torch, "
                                "torchmetrics, scikit-learn) is not installed")


class _Recorder:
    """A classifier that records the rows it is given and scores by the first feature."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[int], list[int], int]] = []

    def __call__(self, train: Any, targets: Any, test: Any, seed: int) -> Any:
        self.calls.append((train.real_index.tolist(), train.synthetic_index.tolist(),
                           test.real_index.tolist(), len(targets)))
        assert len(test.synthetic_index) == 0
        return test.take(np.arange(len(test)))[:, 0].astype(np.float64)


def test_every_classifier_gets_the_same_patient_level_splits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 40)
    rng = np.random.default_rng(0)
    labels = [int(i % 3 == 0) for i in range(60)]
    patients = [f"P{i % 20}" for i in range(60)]
    real = rng.normal(size=(60, 4)) + np.array(labels)[:, None]
    synthetic = rng.normal(size=(10, 4)) + 1
    first, second = _Recorder(), _Recorder()
    for recorder in (first, second):
        utility.utility(real, labels, patients, synthetic, [0.0, 0.5], repeats=2, seed=4,
                        classifier=recorder)
    assert first.calls == second.calls and len(first.calls) == 4
    for train, synthetic_rows, test, count in first.calls:
        assert not {patients[i] for i in train} & {patients[i] for i in test}
        assert count == len(train) + len(synthetic_rows)
    melanomas = sum(labels[i] for i in first.calls[1][0])
    assert len(first.calls[1][1]) == round(0.5 * melanomas) and first.calls[0][1] == []


class _Targets(_Recorder):
    """A recorder that also keeps the labels, rows and seed each classifier is trained with
    and the rows it is tested on."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[list[int]] = []
        self.tests: list[list[int]] = []
        self.rows: list[Any] = []
        self.seeds: list[int] = []

    def __call__(self, train: Any, targets: Any, test: Any, seed: int) -> Any:
        assert targets.dtype == np.int64  # the labels `Classifier` is given
        self.targets.append(targets.tolist())
        self.tests.append(test.real_index.tolist())
        self.rows.append(train.take(np.arange(len(train))))
        self.seeds.append(seed)
        return super().__call__(train, targets, test, seed)


def test_synthetic_rows_train_as_melanomas_and_each_repeat_splits_anew(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every synthetic row is labelled melanoma, each repeat draws its own split, and a mix
    wanting more synthetic images than the set holds uses them all, said once."""
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 30)
    rng = np.random.default_rng(2)
    labels = [int(i % 3 == 0) for i in range(60)]
    patients = [f"P{i % 20}" for i in range(60)]
    real = rng.normal(size=(60, 4)) + np.array(labels)[:, None]
    recorder = _Targets()
    result = utility.utility(real, labels, patients, rng.normal(size=(3, 4)) + 1, [0.0, 2.0],
                             repeats=3, seed=1, classifier=recorder)
    for (train, synthetic_rows, _, _), targets in zip(recorder.calls, recorder.targets,
                                                      strict=True):
        assert targets == [labels[i] for i in train] + [1] * len(synthetic_rows)
    assert len(recorder.calls[1][1]) == 3 and result.mixes[1].synthetic_used == 3
    assert len({tuple(test) for test in recorder.tests[::2]}) == 3
    wanting = [note for note in result.notes if note.startswith("mix 2 wants")]
    assert len(wanting) == 1 and wanting[0].endswith("the set has 3: all were used")


def test_the_figures_are_the_classifiers_scores_on_each_held_out_side(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mix's ROC-AUC and balanced accuracy are the means over repeats of sklearn's scores
    of the probabilities on the held-out rows, inside their bootstrap interval; the ROC curve
    pools every repeat; sizes are the last split's; notes name photos without a patient id and
    a mix the set is too small for, once."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 60)
    rng = np.random.default_rng(5)
    labels = [int(i % 3 == 0) for i in range(60)]
    patients = ["" if i % 10 == 7 else f"P{i % 20}" for i in range(60)]
    real = rng.normal(size=(60, 3))
    real[:, 0] = rng.uniform(size=60) * 0.8 + 0.3 * np.array(labels)  # overlapping classes
    recorder, synthetic = _Targets(), rng.normal(size=(20, 3))
    result = utility.utility(real, labels, patients, synthetic, [0.0, 1.0, 9.0], repeats=2,
                             seed=3, classifier=recorder)
    for (train, picked, _, _), rows in zip(recorder.calls, recorder.rows, strict=True):
        assert rows.tolist() == np.concatenate([real[train], synthetic[picked]]).tolist()
    assert recorder.seeds == [3] * 3 + [4] * 3  # a split's seed: fine-tuning repeats with it
    for number, mix in enumerate(result.mixes):
        tests = recorder.tests[number::3]
        truths = [[labels[i] for i in test] for test in tests]
        scores = [real[test, 0] for test in tests]
        auc = np.mean([roc_auc_score(t, p) for t, p in zip(truths, scores, strict=True)])
        accuracy = np.mean([balanced_accuracy_score(t, p >= 0.5)
                            for t, p in zip(truths, scores, strict=True)])
        assert (mix.auc.value, mix.balanced_accuracy.value) == pytest.approx((auc, accuracy))
        for interval in (mix.auc, mix.balanced_accuracy):
            assert interval.low <= interval.value <= interval.high and interval.low < interval.high
        fpr, tpr, _ = roc_curve(np.concatenate(truths), np.concatenate(scores))
        assert (mix.fpr, mix.tpr) == (fpr.tolist(), tpr.tolist())
    last_train, last_test = recorder.calls[-1][0], recorder.tests[-1]
    melanomas = [sum(labels[i] for i in train) for train, *_ in recorder.calls[::3]]
    assert [m.synthetic_used for m in result.mixes] == [0, max(melanomas), 20]
    assert (result.n_train, result.n_test, result.n_test_melanoma, result.repeats) == (
        len(last_train), len(last_test), sum(labels[i] for i in last_test), 2)
    blank = patients.count("")
    assert result.n_patients == len(set(patients) - {""}) + blank and result.unit == "patient"
    assert result.notes == [
        f"{blank} of 60 real photos have no patient id: each is split as a patient of its own",
        f"mix 9 wants {9 * max(melanomas)} synthetic images, the set has 20: all were used"]
    with pytest.raises(utility.TooFewError, match=r"^the real data holds one class only: the "
                       r"classifier needs melanomas and other lesions \(give the whole ISIC "
                       r"source as --real\)$"):
        utility.utility(real, [1] * 60, patients, real[:2], [0.0], classifier=recorder)


@pytest.mark.parametrize(("seed", "size"), [(2, 20), (0, 25)])
def test_a_mix_counts_the_synthetic_images_of_every_split_not_only_one(
        seed: int, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Splits differ in their training melanomas: seed 2 wants 18, 18 then 24 of a set of 20
    (only the last split runs short), seed 0 wants 21, 21 then 18 of 25. "synthetic used" is
    the most any split used, and a split that ran short is said, whichever it was."""
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 6)
    labels = [int(i % 3 == 0) for i in range(90)]
    patients = [f"P{i % 30}" for i in range(90)]
    recorder = _Targets()
    result = utility.utility(np.random.default_rng(0).normal(size=(90, 3)), labels, patients,
                             np.zeros((size, 3)), [1.0], repeats=3, seed=seed,
                             classifier=recorder)
    wanted = max(sum(labels[i] for i in train) for train, *_ in recorder.calls)
    assert result.mixes[0].synthetic_used == max(len(c[1]) for c in recorder.calls)
    assert result.mixes[0].synthetic_used == min(wanted, size)
    assert result.notes == ([f"mix 1 wants {wanted} synthetic images, the set has {size}: all "
                             "were used"] if wanted > size else [])


def count_scores(monkeypatch: pytest.MonkeyPatch, bootstrap: int) -> list[int]:
    """With BOOTSTRAP at `bootstrap`, a one-item list counting the ROC-AUCs utility computes
    from now on (one per split, then one per resample)."""
    import sklearn.metrics

    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", bootstrap)
    scored = [0]
    roc_auc = sklearn.metrics.roc_auc_score

    def counted(*args: Any, **kwargs: Any) -> Any:
        scored[0] += 1
        return roc_auc(*args, **kwargs)

    monkeypatch.setattr(sklearn.metrics, "roc_auc_score", counted)
    return scored


@pytest.mark.parametrize(("bootstrap", "repeats"), [(10, 3), (2, 3), (9, 3), (4, 1)])
def test_the_intervals_draw_every_resample_the_method_says_whatever_the_repeats(
        bootstrap: int, repeats: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each split drew BOOTSTRAP // repeats resamples: 999 of the 1000 the report names at 3
    repeats, and none at all past 1000 repeats, so the intervals collapsed to their means."""
    from medsynth_kohya.evaluation import utility

    scored = count_scores(monkeypatch, bootstrap)
    labels = [int(i % 2 == 0) for i in range(120)]
    utility.utility(np.random.default_rng(1).normal(size=(120, 3)), labels,
                    [f"P{i % 60}" for i in range(120)], np.zeros((10, 3)), [0.0],
                    repeats=repeats, seed=0, classifier=_Recorder())
    assert scored[0] == repeats + bootstrap  # one score per split, then one per resample


@pytest.mark.parametrize("seed", range(6))
def test_both_sides_of_a_split_hold_patients_of_both_classes(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four patients with benign lesions among thirty with melanomas: each side of every
    split still holds two of each."""
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 20)  # the split is judged, not the intervals
    patients = [f"M{i}" for i in range(30) for _ in range(2)] + [f"B{i}" for i in range(4)]
    labels = [1] * 60 + [0] * 4
    recorder = _Targets()
    utility.utility(np.random.default_rng(seed).normal(size=(64, 4)), labels, patients,
                    np.zeros((1, 4)), [0.0], repeats=1, seed=seed, classifier=recorder)
    train, test = recorder.calls[0][0], recorder.tests[0]
    for side in (train, test):
        assert len({patients[i] for i in side if labels[i] == 0}) >= utility.MIN_PER_CLASS
        assert len({patients[i] for i in side if labels[i] == 1}) >= utility.MIN_PER_CLASS


def test_an_interval_spans_the_middle_95_percent_of_the_bootstrap() -> None:
    from medsynth_kohya.evaluation.utility import _interval

    interval = _interval([0.5, 0.7], [i / 400 for i in range(401)])
    assert (interval.value, interval.low, interval.high) == pytest.approx((0.6, 0.025, 0.975))
    assert _interval([0.4], []) == type(interval)(0.4, 0.4, 0.4)


def test_rows_are_the_chosen_real_rows_then_the_chosen_synthetic_ones() -> None:
    from medsynth_kohya.evaluation.utility import Rows

    real, synthetic = np.arange(12).reshape(6, 2), -np.arange(8).reshape(4, 2)
    rows = Rows(real, np.array([4, 1]), synthetic, np.array([3, 0, 2]))
    assert len(rows) == 5
    assert rows.take([4, 0, 2, 1, 3]).tolist() == [synthetic[2].tolist(), real[4].tolist(),
                                                   synthetic[3].tolist(), real[1].tolist(),
                                                   synthetic[0].tolist()]


def test_photos_without_any_patient_id_are_said_to_be_split_one_by_one() -> None:
    from medsynth_kohya.evaluation import utility

    note = utility.missing_patients(["", ""])
    assert note is not None and note.startswith("the real data records no patient ids: ")
    assert note.endswith(" may fall on both sides") and utility.missing_patients(["P1"]) is None
    assert utility.missing_patients(["", "P1", "P2"]) == (
        "1 of 3 real photos has no patient id: it is split as a patient of its own")


def test_the_logistic_regression_does_not_depend_on_the_features_units() -> None:
    """Features standardised first: one column in other units (x 1000) gives the same
    probabilities, as no penalty falls harder on a column for its scale."""
    from medsynth_kohya.evaluation.utility import Rows, logistic

    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 30, dtype=np.int64)
    rows = rng.normal(size=(60, 3)) + labels[:, None] * [0.2, 0.1, 0.0]
    other = rows * [1000.0, 1.0, 0.001]
    every, none = np.arange(60), np.zeros(0, dtype=np.int64)
    probabilities = [logistic(Rows(r, every, r, none), labels, Rows(r, every, r, none), 0)
                     for r in (rows, other)]
    assert probabilities[0] == pytest.approx(probabilities[1], abs=1e-6)


def test_the_logistic_regression_weighs_the_rare_melanomas_up() -> None:
    """One melanoma in twenty, its feature shifted by one standard deviation: unweighted, no
    row reaches 0.5; class-balanced, melanomas are found (balanced accuracy past chance)."""
    from sklearn.metrics import balanced_accuracy_score

    from medsynth_kohya.evaluation.utility import Rows, logistic

    rng = np.random.default_rng(0)
    labels = np.array([1] * 10 + [0] * 190, dtype=np.int64)
    rows = rng.normal(size=(200, 2))
    rows[:, 0] += labels
    every, none = np.arange(200), np.zeros(0, dtype=np.int64)
    probability = logistic(Rows(rows, every, rows, none), labels, Rows(rows, every, rows, none),
                           0)
    assert balanced_accuracy_score(labels, probability >= 0.5) > 0.65


def test_fine_tuning_trains_a_copy_of_the_network_and_scores_held_out_rows() -> None:
    from medsynth_kohya.evaluation.features import to_input
    from medsynth_kohya.evaluation.finetune import FineTune, InputStore
    from medsynth_kohya.evaluation.utility import Rows

    network = build()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    labels = np.array([i % 2 for i in range(12)], dtype=np.int64)
    with InputStore() as store:
        for i, label in enumerate(labels):
            store.add(photo(600 + i, melanoma=bool(label), size=(160, 120)))
        inputs = store.rows()
        assert inputs.shape == (12, 3, 299, 299) and isinstance(inputs, np.memmap)
        assert (inputs[3] == to_input(photo(603, melanoma=True, size=(160, 120)))).all()
        seen: list[Any] = []
        tuned = FineTune(network, "cpu", epochs=3, batch_size=4,
                         on_fit=lambda: seen.append(True))
        empty = np.zeros(0, dtype=np.int64)
        train, test = np.arange(8), np.arange(8, 12)
        probability = tuned(Rows(inputs, train, inputs, empty), labels[train],
                            Rows(inputs, test, inputs, empty), 0)
    assert probability.shape == (4,) and ((probability >= 0) & (probability <= 1)).all()
    assert probability[labels[test] == 1].min() > probability[labels[test] == 0].max()
    assert seen == [True]
    assert all((network.state_dict()[k] == v).all() for k, v in before.items())


def test_cli_fine_tunes_on_the_same_splits_as_the_logistic_regression(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 100)
    isic_source(tmp_path / "isic", 10, 14, seed=5, patients=12)
    synthetic_set(tmp_path / "syn", [photo(6100 + i, size=(320, 240)) for i in range(6)])
    sections = {}
    for classifier in ("logistic", "finetune"):
        code, stdout, stderr = invoke(
            runner, "evaluate", "--real", tmp_path / "isic", "--synthetic", tmp_path / "syn",
            "--out", tmp_path / classifier, "--features", TINY, "--mix", "0,1",
            "--repeats", "2", "--classifier", classifier, "--epochs", "2", "--batch-size", "8")
        assert code == 0, stderr
        assert "classifier utility" in stdout
        document = json.loads((tmp_path / classifier / "report.json").read_text("utf-8"))
        sections[classifier] = document["sections"]["utility"]
    tuned, plain = sections["finetune"], sections["logistic"]
    assert tuned["classifier"] == "finetune" and "fine-tuned" in tuned["method"]
    assert "logistic regression" in plain["method"]
    sizes = ("n_train", "n_test", "n_test_melanoma", "n_patients")
    assert [tuned["figures"][k] for k in sizes] == [plain["figures"][k] for k in sizes]
    mixes = tuned["figures"]["mixes"]
    assert [(m["mix"], m["synthetic_used"]) for m in mixes] == [
        (m["mix"], m["synthetic_used"]) for m in plain["figures"]["mixes"]]
    for mix in mixes:
        assert mix["auc"]["low"] <= mix["auc"]["value"] <= mix["auc"]["high"]
        assert mix["auc"]["value"] > 0.8
    assert "fine-tuned" in (tmp_path / "finetune" / "report.html").read_text("utf-8")


def test_an_unknown_classifier_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    isic_source(tmp_path / "isic", 2, 2, seed=6)
    synthetic_set(tmp_path / "syn", [photo(6200)])
    code, _, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "r", "--classifier", "forest")
    assert code == 1 and "--classifier 'forest': give one of logistic, finetune, none" in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("patients", [1, 3])
def test_too_few_patients_for_a_split_is_a_reason_not_a_crash(patients: int) -> None:
    from medsynth_kohya.evaluation import utility

    rng = np.random.default_rng(1)
    labels = [int(i % 2 == 0) for i in range(12)]
    real = rng.normal(size=(12, 4))
    with pytest.raises(utility.TooFewError,
                       match=r"too few (patients of each class )?for a patient-level split"):
        utility.utility(real, labels, [f"P{i % patients}" for i in range(12)],
                        rng.normal(size=(3, 4)), [0.0, 1.0], repeats=1, seed=0,
                        classifier=_Recorder())
    with pytest.raises(utility.TooFewError, match=r"^3 images: too few for an image-level"):
        utility.utility(real[:3], labels[:3], ["", "", ""], rng.normal(size=(3, 4)), [0.0],
                        repeats=1, seed=0, classifier=_Recorder())  # no patient recorded


@pytest.mark.parametrize(("patients", "unit"), [(["P1", "", "P1"], "patient"),
                                                 (["", "", ""], "image")])
def test_the_split_keeps_patients_whole_unless_no_photo_records_one(patients: list[str],
                                                                     unit: str) -> None:
    from medsynth_kohya.evaluation import utility

    assert utility.split_unit(patients) == unit


def _without_patients(root: Path, how: str) -> None:
    """ROOT/train.csv with its patient_id column dropped ("absent") or emptied ("blank")."""
    import pandas as pd

    table = pd.read_csv(root / "train.csv")
    table = table.drop(columns=["patient_id"]) if how == "absent" else table.assign(patient_id="")
    table.to_csv(root / "train.csv", index=False)


@pytest.mark.parametrize("how", ["absent", "blank"])
def test_real_data_without_patient_ids_is_said_to_be_split_by_image(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 20)
    isic_source(tmp_path / "isic", 8, 8, seed=7)
    _without_patients(tmp_path / "isic", how)
    synthetic_set(tmp_path / "syn", [photo(6300 + i, size=(320, 240)) for i in range(3)])
    code, _, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "r", "--features", TINY,
                             "--mix", "0,1", "--repeats", "1")
    assert code == 0, stderr
    section = json.loads((tmp_path / "r" / "report.json").read_text("utf-8"))["sections"][
        "utility"]
    assert section["method"].startswith("Image-level split (30% of images held out)")
    assert "Patient-level" not in section["method"] and "patient-level" not in section["method"]
    assert section["figures"]["bootstrap"] == "image"
    assert ("95% intervals by an image-level bootstrap: resamples of the held-out images, no "
            "patient being known (20 resamples") in section["method"]
    assert section["figures"]["unit"] == "image"
    assert "Patient-level" not in section["method"]
    assert any("no patient ids" in note for note in section["figures"]["notes"])
    assert "images are split one by one" in " ".join(stderr.split())
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert all(f"<p class='warn'>{html.escape(note)}</p>" in page
               for note in section["figures"]["notes"])


def test_a_mix_list_without_0_still_scores_real_only(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 20)
    isic_source(tmp_path / "isic", 8, 8, seed=8, patients=8)
    synthetic_set(tmp_path / "syn", [photo(6400 + i, size=(320, 240)) for i in range(6)])
    code, _, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "r", "--features", TINY,
                             "--mix", "2,1,1", "--repeats", "1")
    assert code == 0, stderr
    document = json.loads((tmp_path / "r" / "report.json").read_text("utf-8"))
    mixes = document["sections"]["utility"]["figures"]["mixes"]
    assert [m["mix"] for m in mixes] == [0, 1, 2] and mixes[0]["synthetic_used"] == 0
    row = next(r for r in document["verdict"] if r["check"] == "classifier utility")
    assert row["detail"].startswith(f"ROC-AUC {mixes[0]['auc']['value']:.3f} real only")


def _mix(mix: float, value: float, low: float) -> dict[str, Any]:
    return {"mix": mix, "auc": {"value": value, "low": low, "high": 1.0}}


@pytest.mark.parametrize(("mixes", "status", "detail"), [
    ([_mix(0, 1.0, 1.0), _mix(1, 1.0, 1.0)], "warn",
     "ROC-AUC 1.000 real only; best with synthetic images 1.000 [1.000, 1.000] at mix 1"),
    ([_mix(0, 0.7, 0.6), _mix(1, 0.9, 0.8), _mix(2, 0.8, 0.75)], "pass",
     "ROC-AUC 0.700 real only; best with synthetic images 0.900 [0.800, 1.000] at mix 1"),
    ([_mix(0, 0.8, 0.7), _mix(0.5, 0.6, 0.5)], "warn",
     "ROC-AUC 0.800 real only; best with synthetic images 0.600 [0.500, 1.000] at mix 0.5"),
    ([_mix(0, 0.8, 0.7)], "warn",
     "ROC-AUC 0.800 real only; no mix with synthetic images was asked (--mix)")])
def test_the_verdict_compares_the_best_synthetic_mix_with_the_real_only_baseline(
        mixes: list[dict[str, Any]], status: str, detail: str) -> None:
    """A tie, or a baseline better than every mix, never reads as the baseline 'at mix 0'."""
    from medsynth_kohya.evaluation.evaluate import _utility_row

    assert _utility_row({"figures": {"mixes": mixes}}) == {
        "check": "classifier utility", "status": status, "detail": detail}
