"""The classifier's 95 % intervals: a cluster bootstrap over the held-out patients (each drawn
with all its photos), the image bootstrap where no patient is known, the same draws where each
patient has one photo, and every resample the method sentence counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from .test_evaluate_classifier import count_scores

pytest.importorskip("sklearn")


def _first_feature(train: Any, targets: Any, test: Any, seed: int) -> Any:
    """A classifier whose melanoma probability of a held-out row is its first feature."""
    return test.take(np.arange(len(test)))[:, 0].astype(np.float64)


def _held_out_with_one_patient_photographed_often() -> tuple[Any, list[int], list[str], Any]:
    """60 held-out photos: patient BIG's 30 near-identical melanomas, all scored low (0.3),
    beside 10 one-photo patients with melanomas scored high and 20 with other lesions scored
    in between; the training side, 20 one-photo patients, is never scored. Returns (rows,
    labels, patients, the held-out positions)."""
    rng = np.random.default_rng(12)
    labels = [1] * 30 + [1] * 10 + [0] * 20 + [1, 0] * 10
    scores = np.concatenate([0.3 + rng.normal(scale=1e-3, size=30),
                             rng.uniform(0.65, 0.75, size=10), rng.uniform(0.4, 0.6, size=20),
                             rng.uniform(size=20)])
    patients = ["BIG"] * 30 + [f"P{i}" for i in range(50)]
    rows = np.column_stack([scores, rng.normal(size=80)])
    return rows, labels, patients, np.arange(60)


@pytest.mark.parametrize("seed", [0, 1])
def test_one_patients_many_photos_widen_the_interval_the_image_bootstrap_gives(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same held-out side resampled by patient and by image: drawn by patient, BIG is in a
    resample zero, one or more times with all 30 photos (ROC-AUC from about 0.1 to 1), where
    drawn by image its photos count as 30 independent cases and the interval is less than half
    as wide (a third, at these seeds); the figures say which bootstrap made them."""
    from medsynth_kohya.evaluation import utility

    rows, labels, patients, test = _held_out_with_one_patient_photographed_often()
    train = np.arange(60, 80)
    monkeypatch.setattr(utility, "BOOTSTRAP", 200)
    monkeypatch.setattr(utility, "_split", lambda *_: (train, test))
    by_patient, by_image = (
        utility.utility(rows, labels, names, rows[:1], [0.0], repeats=1, seed=seed,
                        classifier=_first_feature)
        for names in (patients, [""] * len(patients)))
    assert (by_patient.bootstrap, by_image.bootstrap) == ("patient", "image")
    wide, narrow = by_patient.mixes[0].auc, by_image.mixes[0].auc
    assert wide.value == narrow.value
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)
    assert wide.high == 1.0 and wide.low < 0.2


@pytest.mark.parametrize("seed", range(4))
def test_one_photo_per_patient_resamples_as_the_image_bootstrap_does(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patients named as the split names photos without one (image-0, image-1, ...): the same
    splits, and the cluster bootstrap over one-photo patients draws exactly the image
    bootstrap's resamples, so every figure is the same."""
    from medsynth_kohya.evaluation import utility

    rng = np.random.default_rng(100 + seed)
    size = int(rng.integers(30, 80))
    labels = [int(v) for v in rng.uniform(size=size) < rng.uniform(0.2, 0.6)]
    labels[:4] = [0, 0, 1, 1]
    rows = rng.normal(size=(size, 3)) + np.array(labels)[:, None] * rng.uniform(0, 1)
    monkeypatch.setattr(utility, "BOOTSTRAP", 60)
    by_patient, by_image = (
        utility.utility(rows, labels, names, rows[:5], [0.0, 1.0], repeats=2, seed=seed,
                        classifier=_first_feature)
        for names in ([f"image-{i}" for i in range(size)], [""] * size))
    assert (by_patient.bootstrap, by_image.bootstrap) == ("patient", "image")
    assert by_patient.mixes == by_image.mixes
    assert by_patient.mixes[0].auc.low < by_patient.mixes[0].auc.high


@pytest.mark.parametrize("seed", range(4))
def test_a_resample_holding_one_class_is_drawn_again_so_every_interval_has_its_count(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fourteen one-photo patients leave four or five held out, so about one resample in eight
    holds one class (no ROC-AUC): it is drawn again, not dropped, and each split scores the
    resamples the method sentence names."""
    from medsynth_kohya.evaluation import utility

    scored = count_scores(monkeypatch, 60)
    labels = [i % 2 for i in range(14)]
    rows = np.random.default_rng(seed).normal(size=(14, 2))
    utility.utility(rows, labels, [f"P{i}" for i in range(14)], rows[:2], [0.0], repeats=2,
                    seed=seed, classifier=_first_feature)
    assert scored[0] == 2 + 60


@pytest.mark.parametrize("seed", range(3))
def test_each_resample_draws_whole_patients_as_many_as_are_held_out(seed: int) -> None:
    """Every resample holds each patient's photos all as often as that patient was drawn, the
    number of patients drawn is the number held out, both classes are there, and over many
    resamples every patient, the first included, is drawn; held-out rows of one class (which
    the split never leaves) are refused, not resampled for ever."""
    from medsynth_kohya.evaluation.utility import resamples

    rng = np.random.default_rng(seed)
    groups = np.array([f"P{int(g)}" for g in rng.integers(0, 9, size=40)])
    truth = np.array([int(g in {"P0", "P3", "P7"}) for g in groups])
    drawn: set[str] = set()
    count = 0
    for sample in resamples(truth, groups, 200, np.random.default_rng(seed)):
        count += 1
        times = np.bincount(sample, minlength=len(groups))
        per_patient = [set(times[groups == g].tolist()) for g in set(groups)]
        assert all(len(seen) == 1 for seen in per_patient)
        assert sum(min(seen) for seen in per_patient) == len(set(groups))
        assert set(truth[sample].tolist()) == {0, 1}
        drawn |= set(groups[sample].tolist())
    assert count == 200 and drawn == set(groups)
    with pytest.raises(ValueError, match=r"^the held-out rows hold one class only: no resample "
                                         r"can hold both$"):
        next(resamples(np.ones(4, dtype=np.int64), groups[:4], 1, np.random.default_rng(0)))
