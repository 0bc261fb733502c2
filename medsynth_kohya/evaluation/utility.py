"""Downstream utility: does adding synthetic melanomas help a classifier on held-out patients?

Real images (melanoma and not) are split by patient (no patient on both sides, scikit-learn's
GroupShuffleSplit); a classifier is trained on the real training side plus `mix` x (its
melanoma count) synthetic melanomas, for each `mix`, and scored on the held-out real patients:
ROC-AUC and balanced accuracy, with 95 % bootstrap intervals pooled over `repeats` splits: a
cluster bootstrap that draws held-out patients with all their photos (one patient's photos are
not independent cases), by image where no photo records a patient. The classifier is a
logistic regression on frozen features (standardised, class-balanced) or any other
`Classifier`, such as the fine-tuned network of `finetune`, on the same splits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsynth_kohya import files

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

TEST_SHARE = 0.3
BOOTSTRAP = 1000
MIN_PER_CLASS = 2
"""Patients of each class needed on each side of a split."""


class TooFewError(ValueError):
    """The real data cannot be split into two sides that both hold both classes."""


@dataclass(frozen=True)
class Rows:
    """Chosen rows of the real and the synthetic array (feature rows, or network inputs on
    disk), read only when taken: real rows first, then synthetic ones."""

    real: Any
    real_index: NDArray[np.int64]
    synthetic: Any
    synthetic_index: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.real_index) + len(self.synthetic_index)

    def take(self, positions: Sequence[int] | NDArray[np.int64]) -> NDArray[Any]:
        """The rows at `positions`, stacked in that order."""
        import numpy as np

        cut = len(self.real_index)
        return np.stack([self.real[self.real_index[p]] if p < cut
                         else self.synthetic[self.synthetic_index[p - cut]] for p in positions])


Classifier = Callable[["Rows", "NDArray[np.int64]", "Rows", int], "NDArray[np.float64]"]
"""(training rows, their labels, test rows, seed) -> melanoma probability of each test row."""


def logistic(train: Rows, targets: NDArray[np.int64], test: Rows,
             seed: int) -> NDArray[np.float64]:
    """Logistic regression (standardised, class-balanced) on frozen feature rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(
        max_iter=2000, class_weight="balanced", random_state=seed))
    model.fit(train.take(np.arange(len(train))), targets)
    probability: NDArray[np.float64] = model.predict_proba(test.take(np.arange(len(test))))[:, 1]
    return probability


@dataclass(frozen=True)
class Interval:
    """A point estimate (mean over repeats) and its 95 % bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class MixResult:
    """One mix ratio's figures and its pooled ROC curve (false/true positive rates)."""

    mix: float
    synthetic_used: int
    """The most synthetic images one split trained on (splits differ in their melanomas)."""
    auc: Interval
    balanced_accuracy: Interval
    fpr: list[float]
    tpr: list[float]


@dataclass(frozen=True)
class Utility:
    """Every mix's result and the sizes they rest on."""

    mixes: list[MixResult]
    repeats: int
    bootstrap: str
    """What each resample draws: "patient" (held-out patients, each with all its photos) or
    "image" (no photo records a patient)."""
    n_train: int
    n_test: int
    n_test_melanoma: int
    n_patients: int
    """Groups split whole: patients, with a photo lacking a patient id counted as one."""
    notes: list[str]
    unit: str = "patient"
    """What the splits kept whole (`split_unit`): "patient", or "image" where no photo records
    a patient id."""


def _split(labels: NDArray[np.int64], groups: NDArray[np.str_], seed: int,
           unit: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Train/test indices by group (a patient, or an image where no patient is recorded: the
    `unit` its refusal names), both sides holding both classes (tries a few seeds)."""
    import numpy as np
    from sklearn.model_selection import GroupShuffleSplit

    level = f"{'an' if unit == 'image' else 'a'} {unit}-level split"
    if len(np.unique(groups)) < 2 * MIN_PER_CLASS:  # GroupShuffleSplit cannot split it
        raise TooFewError(f"{files.counted(len(np.unique(groups)), unit)}: too few for {level}")
    for attempt in range(20):
        splitter = GroupShuffleSplit(n_splits=1, test_size=TEST_SHARE,
                                     random_state=seed * 1000 + attempt)
        try:
            train, test = next(splitter.split(labels, labels, groups))
        except ValueError:  # a side would be empty at this share
            break
        sides_ok = all(len(np.unique(groups[side][labels[side] == c])) >= MIN_PER_CLASS
                       for side in (train, test) for c in (0, 1))
        if sides_ok:
            return train, test
    raise TooFewError(f"too few {unit}s of each class for {level}")


def split_unit(patients: Sequence[str]) -> str:
    """What a split keeps whole: "patient", or "image" when no photo records a patient id;
    `evaluate`'s report names the same unit."""
    return "patient" if any(patients) else "image"


def missing_patients(patients: Sequence[str]) -> str | None:
    """What the split does with photos that have no patient id; None when every photo has one."""
    blank = sum(not p for p in patients)
    if not blank:
        return None
    if blank == len(patients):
        return ("the real data records no patient ids: images are split one by one, so one "
                "patient's photos may fall on both sides")
    return (f"{blank} of {files.counted(len(patients), 'real photo')} "
            f"{files.agreeing(blank, 'has')} no patient id: {'it' if blank == 1 else 'each'} is "
            "split as a patient of its own")


def resamples(truth: NDArray[np.int64], groups: NDArray[np.str_], count: int,
              rng: np.random.Generator) -> Iterator[NDArray[np.int64]]:
    """`count` bootstrap resamples (positions) of held-out rows: as many groups as are held out,
    drawn with replacement, each with all its rows (with one row a group, the image bootstrap's
    own draws); one holding one class only is drawn again, as ROC-AUC needs both."""
    import numpy as np

    if len(np.unique(truth)) < 2:
        raise ValueError("the held-out rows hold one class only: no resample can hold both")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))  # groups numbered by their first row
    cluster = rank[inverse.ravel()]
    members = np.argsort(cluster, kind="stable")
    sizes = np.bincount(cluster)
    starts = np.cumsum(sizes) - sizes
    made = 0
    while made < count:
        drawn = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[drawn]
        shift = np.repeat(starts[drawn] - (np.cumsum(lengths) - lengths), lengths)
        sample = members[np.arange(len(shift)) + shift]
        if len(np.unique(truth[sample])) == 2:
            made += 1
            yield sample


def _interval(points: list[float], boots: list[float]) -> Interval:
    import numpy as np

    mean = float(np.mean(points))
    if not boots:
        return Interval(mean, mean, mean)
    low, high = np.percentile(boots, [2.5, 97.5])
    return Interval(mean, float(low), float(high))


def utility(real: Any, labels: Sequence[int], patients: Sequence[str], synthetic: Any,
            mixes: Sequence[float], repeats: int = 3, seed: int = 0,
            classifier: Classifier = logistic) -> Utility:
    """Train and score `classifier` for each mix over `repeats` patient splits; `real` and
    `synthetic` hold one row per image (features, or what `classifier` reads)."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

    y = np.asarray(labels, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise TooFewError("the real data holds one class only: the classifier needs melanomas "
                          "and other lesions (give the whole ISIC source as --real)")
    groups = np.array([p or f"image-{i}" for i, p in enumerate(patients)])
    unit = split_unit(patients)
    rng = np.random.default_rng(seed)
    notes = [note for note in (missing_patients(patients),) if note]
    scores: dict[float, dict[str, list[float]]] = {m: {"auc": [], "ba": [], "bauc": [],
                                                       "bba": []} for m in mixes}
    pooled: dict[float, tuple[list[int], list[float]]] = {m: ([], []) for m in mixes}
    used: dict[float, int] = {}
    short: dict[float, int] = {}
    sizes = (0, 0, 0)
    for repeat in range(repeats):
        train, test = _split(y, groups, seed + repeat, unit)
        sizes = (len(train), len(test), int(y[test].sum()))
        melanomas = int(y[train].sum())
        for mix in mixes:
            wanted = round(mix * melanomas)
            count = min(wanted, len(synthetic))
            if count < wanted:
                short[mix] = max(short.get(mix, 0), wanted)
            used[mix] = max(used.get(mix, 0), count)
            pick = rng.choice(len(synthetic), size=count, replace=False)
            targets = np.concatenate([y[train], np.ones(count, dtype=np.int64)])
            probability = classifier(Rows(real, train, synthetic, pick), targets,
                                     Rows(real, test, synthetic, pick[:0]), seed + repeat)
            truth = y[test]
            entry = scores[mix]
            entry["auc"].append(float(roc_auc_score(truth, probability)))
            entry["ba"].append(float(balanced_accuracy_score(truth, probability >= 0.5)))
            for sample in resamples(truth, groups[test],
                                    BOOTSTRAP // repeats + (repeat < BOOTSTRAP % repeats), rng):
                entry["bauc"].append(float(roc_auc_score(truth[sample], probability[sample])))
                entry["bba"].append(float(balanced_accuracy_score(
                    truth[sample], probability[sample] >= 0.5)))
            pooled[mix][0].extend(truth.tolist())
            pooled[mix][1].extend(probability.tolist())
    notes += [f"mix {mix:g} wants {short[mix]} synthetic images, the set has "
              f"{len(synthetic)}: all were used" for mix in mixes if mix in short]
    results = []
    for mix in mixes:
        fpr, tpr, _ = roc_curve(pooled[mix][0], pooled[mix][1])
        entry = scores[mix]
        results.append(MixResult(mix, used[mix], _interval(entry["auc"], entry["bauc"]),
                                 _interval(entry["ba"], entry["bba"]),
                                 [float(v) for v in fpr], [float(v) for v in tpr]))
    return Utility(results, repeats, unit, sizes[0], sizes[1], sizes[2], len(np.unique(groups)),
                   notes, unit)
