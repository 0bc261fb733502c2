"""`evaluate`: a synthetic set against the real data: near-copies, adherence, fidelity, utility.

Flow: real data + synthetic set -> one pass over the training photos (hashes, hair, features)
-> one pass over the synthetic images (nearest training photos, hair, features) -> one pass over
the other labelled real photos (features) -> figures -> REPORT/report.json + report.html (and
report-public.html, the page without training photos that push publishes).
Images are decoded one at a time, so memory grows with the number of images only by their
hashes and feature vectors. Without the `eval` extra, sections 1 and 2 still run.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import __version__, arguments, files, locks, outputs
from medsynth_kohya.data.measure import Measurement, measure
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copies, report, sets
from medsynth_kohya.evaluation.adherence import Prompted, adherence, asked_for
from medsynth_kohya.evaluation.features import INCEPTION, INSTALL
from medsynth_kohya.evaluation.finetune import EPOCHS
from medsynth_kohya.sampling.machines import ensure_made

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from medsynth_kohya.evaluation.features import Extractor
    from medsynth_kohya.evaluation.utility import Classifier
    from medsynth_kohya.training.record import RunRecord

StageProgress = Callable[[str, int, int], None]
"""(stage, done, total) callback."""
MARKER = outputs.EVALUATE_MARKER
"""File that marks REPORT as written by evaluate (so a re-run may replace its files)."""
OWN_FILES = (report.JSON_NAME, report.HTML_NAME, report.PUBLIC_HTML_NAME, MARKER)
SHOWN_PAIRS = 60
"""Image pairs embedded in the page: every flagged pair first, then the nearest others."""
DEFAULT_MIXES = (0.0, 0.5, 1.0, 2.0)
ADHERENCE_PASS = 0.8
"""Share of images whose measured attribute matches the prompt for a pass."""
MAX_LABELLED = 4000
"""Real images the classifier section reads at most (both classes kept, by patient)."""
LOGISTIC, FINETUNE, NO_CLASSIFIER = "logistic", "finetune", "none"
CLASSIFIERS = (LOGISTIC, FINETUNE, NO_CLASSIFIER)
NOT_ASKED = "not asked for (--classifier none)"
"""Section 4's skip reason under --classifier none, whatever else is missing."""


@dataclass(frozen=True)
class EvaluateOptions:
    """What to compute and how."""

    mixes: tuple[float, ...] = DEFAULT_MIXES
    repeats: int = 3
    threshold: float = copies.THRESHOLD
    deep_threshold: float | None = None
    features: str = INCEPTION
    batch_size: int = 32
    max_labelled: int = MAX_LABELLED
    classifier: str = LOGISTIC
    epochs: int = EPOCHS
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        arguments.check_fields(self)


@dataclass
class EvaluateResult:
    """Where the report is and its verdict rows (check, status, detail)."""

    out: Path
    verdict: list[dict[str, str]]
    flagged: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What weakens a figure (also in the report): the real set's notes, such as training
    photos gone or left out, and real photos without a patient id."""

    @property
    def page(self) -> Path:
        """The local page, training photos included."""
        return self.out / report.HTML_NAME

    @property
    def public_page(self) -> Path:
        """The page `push --eval` publishes, without the training photos."""
        return self.out / report.PUBLIC_HTML_NAME


def _claim(out: Path, force: bool) -> None:
    """Refuse a REPORT folder holding files evaluate did not write, or an earlier report."""
    if not locks.foreign_entries(out):
        return
    if not (out / MARKER).is_file():
        raise UserError(f"--out {out} holds files evaluate did not write; give an empty or "
                        "new folder")
    if not force and report.written(out):  # one stopped before its figures is replaced
        raise UserError(f"{out} already holds a report; add --force to replace it")


def _pairs(nearest: list[tuple[str, str, float]], flagged: set[str],
           training: dict[str, Path], synthetic: dict[str, Path]) -> list[report.Pair]:
    """Embedded thumbnails of the shown pairs, flagged first, then by distance (decoded again:
    only these few)."""
    shown = []
    ordered = sorted(nearest, key=lambda pair: (pair[0] not in flagged, pair[2]))
    for synthetic_id, training_id, distance in ordered[:SHOWN_PAIRS]:
        left, right = sets.decode(synthetic[synthetic_id]), sets.decode(training[training_id])
        if left is None or right is None:
            continue
        shown.append(report.Pair(report.thumbnail(left), report.thumbnail(right),
                                 f"{synthetic_id} ~ {training_id}: {distance:.3f}",
                                 synthetic_id in flagged))
    return shown


def _cosine_nearest(synthetic: NDArray[np.float32], real: NDArray[np.float32]
                    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Highest cosine similarity of each synthetic feature to a real one, and its index."""
    import numpy as np

    def unit(a: NDArray[np.float32]) -> NDArray[np.float64]:
        a64 = a.astype(np.float64)
        norms: NDArray[np.float64] = np.linalg.norm(a64, axis=1, keepdims=True)
        return a64 / np.maximum(norms, 1e-12)

    similarity = unit(synthetic) @ unit(real).T
    return similarity.max(axis=1), similarity.argmax(axis=1)


def _limit(labelled: Any, limit: int, seed: int) -> Any:
    """At most `limit` rows, all melanomas first, whole patients only, reproducibly."""
    if len(labelled) <= limit:
        return labelled
    positive = labelled.loc[labelled["label"] == 1]
    rest = labelled.loc[labelled["label"] == 0].sample(frac=1.0, random_state=seed)
    keep = rest.iloc[:max(0, limit - len(positive))]
    return labelled.loc[labelled.index.isin(positive.index.union(keep.index))]


@arguments.checked
def evaluate(real: arguments.PathArg | None, synthetic: arguments.PathArg,
             out: arguments.PathArg, options: EvaluateOptions | None = None, *,
             lora: arguments.PathArg | None = None,
             break_lock: bool = False, on_progress: StageProgress | None = None
             ) -> EvaluateResult:
    """Evaluate `synthetic` against `real` (or the prepared data of run `lora`) into `out`,
    holding OUT's lock; a synthetic set, real data or run still being written is refused."""
    real, lora = arguments.optional_path(real, "real"), arguments.optional_path(lora, "lora")
    synthetic, out = arguments.path(synthetic, "synthetic"), arguments.path(out, "out")
    options = _checked(arguments.options(options, EvaluateOptions))
    with locks.hold(out, "evaluate", break_lock=break_lock):
        if lora is not None:
            locks.ensure_idle(lora, "evaluate", break_lock=break_lock)
        source, trained = _real_source(real, lora)
        # marked before they are checked: prepare and sample take their lock, then refuse a
        # folder marked read, so one starting in between is refused, not read half-written
        with locks.reading(source, "evaluate"), locks.reading(synthetic, "evaluate"):
            ensure_made(synthetic, "evaluate", "--synthetic", break_lock=break_lock)
            # an ISIC download or a prepared folder (--real, or the run's) still being written
            locks.ensure_idle(source, "evaluate", writers=("prepare", "fetch-isic"),
                              break_lock=break_lock)
            return _evaluate(source, synthetic, out, options, on_progress, trained)


@dataclass(frozen=True)
class EvaluatePlan:
    """What `evaluate` would read, compute and write (--dry-run): rows of (what, how)."""

    out: Path
    rows: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)


@arguments.checked
def plan(real: arguments.PathArg | None, synthetic: arguments.PathArg,
         out: arguments.PathArg, options: EvaluateOptions | None = None, *,
         lora: arguments.PathArg | None = None, break_lock: bool = False) -> EvaluatePlan:
    """What `evaluate` with the same arguments would do, refused where it would be refused,
    from the sets' metadata alone: no image is decoded, no network loaded, nothing written."""
    real, lora = arguments.optional_path(real, "real"), arguments.optional_path(lora, "lora")
    synthetic, out = arguments.path(synthetic, "synthetic"), arguments.path(out, "out")
    options = _checked(arguments.options(options, EvaluateOptions))
    if out.exists():
        files.ensure_folder(out, "give a new or empty folder", "--out")
        locks.ensure_idle(out, "evaluate", writers=("evaluate",), break_lock=break_lock)
        _claim(out, options.force)
    if lora is not None:
        locks.ensure_idle(lora, "evaluate", break_lock=break_lock)
    source, trained = _real_source(real, lora)
    ensure_made(synthetic, "evaluate", "--synthetic", break_lock=break_lock)
    locks.ensure_idle(source, "evaluate", writers=("prepare", "fetch-isic"),
                      break_lock=break_lock)
    real_set = sets.load_real(source)
    again = _prepared_again(trained, real_set, options.force)
    synthetic_set = sets.load_synthetic(synthetic)
    images = files.counted(len(synthetic_set.frame), "synthetic image")
    missing = (f" ({files.counted(len(synthetic_set.missing), 'row')} of metadata.csv without "
               "an image file left out)" if synthetic_set.missing else "")
    rows = [("real data", f"{source}: {files.counted(len(real_set.training), 'training photo')}"),
            ("synthetic set", f"{synthetic}: {images}{missing}"),
            ("near-copies", f"every synthetic image against every training photo, hash "
                            f"distance at most {options.threshold:g}"),
            ("prompt adherence", "hair and skin tone measured on every image"),
            *_network_rows(real_set, options)]
    rows.append(("writes", f"{out / report.HTML_NAME}, {report.PUBLIC_HTML_NAME} and "
                           f"{report.JSON_NAME}"))
    return EvaluatePlan(out, rows, [*again, *(real_set.said.get(note, note)
                                              for note in real_set.notes),
                                    *synthetic_set.notes])


def _network_rows(real_set: sets.RealSet, options: EvaluateOptions) -> list[tuple[str, str]]:
    """The plan's rows for sections 3 and 4, which need the `eval` extra: what each would run
    on (the device the feature network would use), or why it would be skipped."""
    from medsynth_kohya.evaluation import features as feature_module

    absent = feature_module.missing(options.features, options.classifier != NO_CLASSIFIER)
    if absent:
        reason = f"skipped: needs {', '.join(absent)}: {INSTALL}"
        return [("fidelity (FID/KID)", reason),
                ("classifier utility", f"skipped: {NOT_ASKED}"
                 if options.classifier == NO_CLASSIFIER else reason)]
    import torch

    if options.features != INCEPTION:
        feature_module.factory_of(options.features)
    device = "a CUDA GPU" if torch.cuda.is_available() else "the CPU (no CUDA GPU)"
    rows = [("fidelity (FID/KID)", f"{options.features} features of both sets on {device}")]
    labelled = real_set.labelled
    if options.classifier == NO_CLASSIFIER:
        return [*rows, ("classifier utility", f"skipped: {NOT_ASKED}")]
    if labelled is None:
        return [*rows, ("classifier utility", "skipped: no labelled real data")]
    labelled = _limit(labelled, options.max_labelled, options.seed)
    melanomas = int((labelled["label"] == 1).sum())
    fits = len(options.mixes) * options.repeats
    how = (f"{fits} fine-tunings of the {options.features} network, {options.epochs} epochs "
           f"each, on {device}" if options.classifier == FINETUNE else
           f"{fits} logistic regressions on frozen {options.features} features")
    photos = files.counted(len(labelled), "real photo")
    return [*rows, ("classifier utility",
                    f"{how}: mixes {', '.join(f'{m:g}' for m in options.mixes)} x "
                    f"{options.repeats} patient splits, on {photos} ({melanomas} melanomas)")]


def _checked(options: EvaluateOptions) -> EvaluateOptions:
    """`options` once checked, with the real-only mix 0 added (the baseline every other mix is
    compared with) and each mix once, in increasing order."""
    if options.repeats < 1:
        raise UserError("--repeats must be at least 1")
    arguments.check_seed(options.seed)
    if options.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not options.mixes or not all(math.isfinite(m) and m >= 0 for m in options.mixes):
        raise UserError("--mix: give one or more ratios of 0 or more, like 0,0.5,1,2")
    if options.classifier not in CLASSIFIERS:
        raise UserError(f"--classifier {options.classifier!r}: give one of "
                        f"{', '.join(CLASSIFIERS)}")
    if options.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not 0 <= options.threshold < copies.UNRELATED:
        raise UserError(f"--threshold {options.threshold:g}: give a hash distance from 0 to "
                        f"below {copies.UNRELATED:g}, the fraction of the {copies.HASH_BITS} "
                        "bits that differ (near-copies differ in at most 0.19, different "
                        f"patients in at least 0.33; at {copies.UNRELATED:g} and above "
                        "unrelated images count as copies)")
    if options.deep_threshold is not None and not 0 < options.deep_threshold <= 1:
        raise UserError(f"--deep-threshold {options.deep_threshold:g}: give a cosine "
                        "similarity above 0 and at most 1")
    return replace(options, mixes=tuple(sorted({0.0, *options.mixes})))


@dataclass(frozen=True)
class _Run:
    """The training run of --lora, as given, and its record."""

    given: Path
    record: RunRecord


def _real_source(real: Path | None, lora: Path | None) -> tuple[Path, _Run | None]:
    """The real data to compare with: `real`, or the prepared folder run `lora` trained on
    (with the run)."""
    if real is not None and lora is not None:
        raise UserError("give --real or --lora, not both: --lora RUN compares with the "
                        "prepared data the run was trained on, --real with the data you name")
    if real is not None:
        return real, None
    if lora is None:
        raise UserError("give --real (an ISIC source or a prepared folder) or --lora RUN")
    prepared, record = sets.training_run(lora)
    return prepared, _Run(lora, record)


def _prepared_again(run: _Run | None, real_set: sets.RealSet, force: bool) -> list[str]:
    """Refuse the prepared folder of the --lora run when it was prepared again since the run
    trained on it: its photos are not the ones the LoRA saw, so the near-copy check would miss
    those. With `force`, a note instead (the report and the result carry it)."""
    if run is None or not run.record.prepared_again(real_set.manifest_sha256):
        return []
    name = Path(real_set.name).name
    if not force:
        raise UserError(f"{real_set.name} was prepared again since {run.given} trained on it "
                        "(manifest changed), so its photos are not the ones the LoRA saw: "
                        "evaluate with --real <the ISIC download it was prepared from> or train "
                        "again (--force compares with the folder as it is now)")
    return [f"{name} was prepared again since the run trained on it (manifest changed): the "
            "near-copy check and the figures use its photos now, not the ones the LoRA was "
            "trained on (--force)"]


def _evaluate(real: Path, synthetic: Path, out: Path, options: EvaluateOptions,
              on_progress: StageProgress | None, run: _Run | None) -> EvaluateResult:
    from medsynth_kohya.evaluation import features as feature_module

    progress = on_progress or (lambda stage, done, total: None)
    _claim(out, options.force)
    real_set = sets.load_real(real)
    again = _prepared_again(run, real_set, options.force)
    synthetic_set = sets.load_synthetic(synthetic)
    skipped = [{"set": "synthetic", "id": i, "reason": "in metadata.csv, no image file"}
               for i in synthetic_set.missing]
    absent = feature_module.missing(options.features, options.classifier != NO_CLASSIFIER)
    extractor: Extractor | None = None
    if not absent:
        extractor = feature_module.Extractor(options.features, options.batch_size)

    index = copies.HashIndex()
    real_measured: list[Measurement] = []
    training_ids: list[str] = []
    training_stream = extractor.stream() if extractor is not None else None
    for identifier, image in sets.decoded(real_set.training, "real", skipped,
                                          lambda d, t: progress("training photos", d, t)):
        index.add(identifier, image)
        real_measured.append(measure(image))
        training_ids.append(identifier)
        if training_stream is not None:
            training_stream.add(image)
    if not len(index):
        raise UserError(f"none of the training photos of {real} could be decoded: "
                        "give a download or prepared folder whose photos open as images")

    nearest: list[tuple[str, list[copies.Match]]] = []
    synthetic_measured: list[Measurement] = []
    prompted: list[Prompted] = []
    synthetic_stream = extractor.stream() if extractor is not None else None
    asked = {str(row.id): asked_for(str(row.prompt),
                                    row.hairy if isinstance(row.hairy, bool) else None,
                                    str(row.skin_tone) or None)
             for row in synthetic_set.frame.itertuples()}
    for identifier, image in sets.decoded(synthetic_set.frame, "synthetic", skipped,
                                          lambda d, t: progress("synthetic images", d, t)):
        nearest.append((identifier, index.nearest(copies.query_hash(image))))
        synthetic_measured.append(measure(image))
        prompted.append(asked[identifier])
        if synthetic_stream is not None:
            synthetic_stream.add(image)
    if not nearest:
        raise UserError(f"none of the images of {synthetic} could be decoded: re-run the "
                        "`medsynth-kohya sample` command that made it, which makes them again")
    skipped += [{"set": "synthetic", "id": i, "reason": "a repeated row of metadata.csv (its "
                 "first row is used)"} for i in synthetic_set.repeated]

    flagged = [{"synthetic_id": s, "training_id": m[0].training_id, "distance": m[0].distance}
               for s, m in nearest if copies.is_copy(m, options.threshold)]
    synthetic_paths = dict(zip(synthetic_set.frame["id"], synthetic_set.frame["path"],
                               strict=True))
    copies_section: dict[str, Any] = {
        "method": f"Perceptual hash ({copies.HASH_BITS}-bit DCT hash of a 64x64 grey thumbnail; "
                  "each training photo indexed with crops of 90-95% of its sides and its "
                  "largest square crops, at positions 2.5% of the crop's side apart; "
                  "each synthetic image looked up in all 8 orientations: quarter turns, each "
                  "also mirrored). Distance = fraction of differing bits to the nearest view of "
                  f"each training photo; a near-copy is at or below {options.threshold:g} "
                  "(on real ISIC photos, copies resized, re-encoded, flipped, turned or cropped "
                  "by up to 10% score at most 0.19, square crops at most 0.10; different "
                  "patients' photos at least 0.33).",
        "threshold": options.threshold, "n_synthetic": len(nearest),
        "distances": [m[0].distance for _, m in nearest],
        "nearest": [{"synthetic_id": s, "sha256": files.sha256(Path(synthetic_paths[s])),
                     "matches": [asdict(x) for x in m]} for s, m in nearest],
        "flagged": flagged,
    }
    adherence_section = adherence(real_measured, synthetic_measured, prompted)
    sections: dict[str, Any] = {"copies": copies_section, "adherence": adherence_section}
    fidelity_section: dict[str, Any]
    utility_section: dict[str, Any]
    if extractor is None or training_stream is None or synthetic_stream is None:
        reason = f"needs {', '.join(absent)}: {INSTALL}"
        fidelity_section = {"skipped": reason}
        utility_section = {"skipped": NOT_ASKED if options.classifier == NO_CLASSIFIER
                           else reason}
    else:
        features = _Features(training_ids, training_stream.result(),
                             [s for s, _ in nearest], synthetic_stream.result(),
                             synthetic_set.frame)
        fidelity_section, utility_section = _with_features(
            extractor, features, real_set, options, skipped, progress, copies_section)
    sections["fidelity"] = fidelity_section
    sections["utility"] = utility_section
    skipped += real_set.skipped  # after every decoding pass: a repeated id is decoded once

    training_paths = dict(zip(real_set.training["id"], real_set.training["path"], strict=True))
    pairs = _pairs([(s, m[0].training_id, m[0].distance) for s, m in nearest],
                   {f["synthetic_id"] for f in copies_section["flagged"]}, training_paths,
                   synthetic_paths)
    verdict = _verdict(sections, options)
    document = {
        "tool": "medsynth-kohya", "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"real": Path(real).name, "synthetic": synthetic.resolve().name,
                   "n_training": len(index), "n_synthetic": len(nearest),
                   "lora_sha256": synthetic_set.lora_sha256,
                   "manifest_sha256": real_set.manifest_sha256,
                   "source_sha256": real_set.source_sha256,
                   "features": None if extractor is None else options.features,
                   "packages": _versions()},
        "notes": [*again, *real_set.notes, *synthetic_set.notes], "skipped": skipped,
        "sections": sections,
        "verdict": verdict,
    }
    files.write_text(out / MARKER, "written by medsynth-kohya evaluate\n")
    report.write(out, document, pairs)
    warnings = [*again, *(real_set.said.get(note, note) for note in real_set.notes),
                *synthetic_set.notes, *utility_section.get("figures", {}).get("notes", [])]
    return EvaluateResult(out, verdict, flagged, skipped, warnings)


@dataclass(frozen=True)
class _Features:
    """Feature rows of the training photos and of the synthetic images, with their ids."""

    training_ids: list[str]
    training: NDArray[np.float32]
    synthetic_ids: list[str]
    synthetic: NDArray[np.float32]
    synthetic_frame: Any
    """The synthetic set's rows (id, path, ...)."""


def _with_features(extractor: Extractor, features: _Features, real_set: sets.RealSet,
                   options: EvaluateOptions, skipped: list[dict[str, str]],
                   progress: StageProgress, copies_section: dict[str, Any],
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sections 3 and 4, and the deep-feature half of section 1."""
    from medsynth_kohya.evaluation import fidelity

    training_ids, real_features = features.training_ids, features.training
    synthetic_ids, synthetic_features = features.synthetic_ids, features.synthetic
    similarity, where = _cosine_nearest(synthetic_features, real_features)
    deep: dict[str, Any] = {
        "method": f"Cosine similarity of {options.features} features to the nearest training "
                  "photo" + (f"; flagged at or above {options.deep_threshold:g}"
                             if options.deep_threshold is not None else
                             " (shown, not used to flag: pass --deep-threshold to flag)"),
        "threshold": options.deep_threshold,
        "similarities": [float(s) for s in similarity],
        "nearest": [{"synthetic_id": s, "training_id": training_ids[int(w)],
                     "similarity": float(v)}
                    for s, w, v in zip(synthetic_ids, where, similarity, strict=True)]}
    if options.deep_threshold is not None:
        known = {f["synthetic_id"] for f in copies_section["flagged"]}
        for entry in deep["nearest"]:
            if entry["similarity"] >= options.deep_threshold and entry["synthetic_id"] not in known:
                copies_section["flagged"].append({"synthetic_id": entry["synthetic_id"],
                                                  "training_id": entry["training_id"],
                                                  "similarity": entry["similarity"]})
    copies_section["deep"] = deep
    fidelity_method = (f"{options.features} features of the {len(training_ids)} training photos "
                       f"and {files.counted(len(synthetic_ids), 'synthetic image')}; "
                       "FID and KID by torchmetrics (KID: mean and std over "
                       f"{fidelity.KID_SUBSETS} random subsets of each set, of "
                       f"{fidelity.KID_SUBSET_SIZE} images or half the smaller set if less, so "
                       "that subsets differ; with fewer than "
                       f"{2 * fidelity.KID_MIN_SUBSET} images on a side, one estimate and no "
                       "std), precision and recall after Kynkäänniemi et al. 2019 "
                       "(k-nearest-neighbour balls).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            figures = fidelity.fidelity(real_features, synthetic_features, seed=options.seed)
        fidelity_section: dict[str, Any] = {"method": fidelity_method, "figures": asdict(figures)}
    except ValueError as exc:
        fidelity_section = {"skipped": str(exc)}

    return fidelity_section, _utility_section(extractor, features, real_set, options, skipped,
                                              progress)


def _utility_section(extractor: Extractor, features: _Features, real_set: sets.RealSet,
                     options: EvaluateOptions, skipped: list[dict[str, str]],
                     progress: StageProgress) -> dict[str, Any]:
    """Section 4 with the classifier `options` names, on the same patient-level splits."""
    import numpy as np

    from medsynth_kohya.evaluation import utility

    labelled = real_set.labelled
    if options.classifier == NO_CLASSIFIER:
        return {"skipped": NOT_ASKED}
    if labelled is None:
        return {"skipped": "no labelled real data (see notes)"}
    labelled = _limit(labelled, options.max_labelled, options.seed)
    if options.classifier == FINETUNE:
        return _fine_tuned(extractor, features, labelled, options, skipped, progress)
    known_rows = {i: features.training[n] for n, i in enumerate(features.training_ids)}
    stream = extractor.stream()
    other_ids = []
    others = labelled.loc[~labelled["id"].isin(known_rows)]
    for identifier, image in sets.decoded(others, "real", skipped,
                                          lambda d, t: progress("labelled photos", d, t)):
        stream.add(image)
        other_ids.append(identifier)
    other_features = stream.result()
    rows = {**known_rows, **{i: other_features[n] for n, i in enumerate(other_ids)}}
    usable = labelled.loc[labelled["id"].isin(rows)]
    matrix = (np.stack([rows[i] for i in usable["id"]]) if len(usable)
              else np.zeros((0, 1), dtype=np.float32))
    return _scored(usable, matrix, features.synthetic, options,
                   f"logistic regression on frozen {options.features} features",
                   utility.logistic)


def _fine_tuned(extractor: Extractor, features: _Features, labelled: Any,
                options: EvaluateOptions, skipped: list[dict[str, str]],
                progress: StageProgress) -> dict[str, Any]:
    """Section 4 with the feature network fine-tuned: inputs decoded once onto disk."""
    from medsynth_kohya.evaluation.finetune import FineTune, InputStore

    fits, done = options.repeats * len(options.mixes), itertools.count(1)
    with InputStore() as real_inputs, InputStore() as synthetic_inputs:
        usable_ids = []
        for identifier, image in sets.decoded(labelled, "real", skipped,
                                              lambda d, t: progress("labelled photos", d, t)):
            real_inputs.add(image)
            usable_ids.append(identifier)
        wanted = set(features.synthetic_ids)
        frame = features.synthetic_frame
        for _, image in sets.decoded(frame.loc[frame["id"].isin(wanted)], "synthetic", [],
                                     lambda d, t: progress("synthetic inputs", d, t)):
            synthetic_inputs.add(image)
        usable = labelled.set_index("id").loc[usable_ids].reset_index()
        classifier = FineTune(extractor.network, extractor.device, epochs=options.epochs,
                              batch_size=options.batch_size,
                              on_fit=lambda: progress("fine-tuning", next(done), fits))
        method = (f"the {options.features} network fine-tuned (all layers, a new linear head, "
                  f"{options.epochs} epochs, random flips, class-balanced loss, AdamW) for "
                  "every split and mix")
        return _scored(usable, real_inputs.rows(), synthetic_inputs.rows(), options, method,
                       classifier)


def _scored(usable: Any, real: Any, synthetic: Any, options: EvaluateOptions, model: str,
            classifier: Classifier) -> dict[str, Any]:
    """The utility figures of `classifier` (described by `model`) on `usable` real photos."""
    from medsynth_kohya.evaluation import utility

    patients = usable["patient_id"].tolist()
    unit = utility.split_unit(patients)
    try:
        result = utility.utility(real, usable["label"].tolist(), patients, synthetic,
                                 options.mixes, options.repeats, options.seed, classifier)
    except utility.TooFewError as exc:
        return {"skipped": str(exc)}
    drawn = ("a patient-level (cluster) bootstrap: resamples of the held-out patients, each "
             "with all its photos" if result.bootstrap == "patient" else
             "an image-level bootstrap: resamples of the held-out images, no patient being known")
    method = (f"{unit.capitalize()}-level split ({int(utility.TEST_SHARE * 100)}% of {unit}s "
              f"held out) of {len(usable)} real photos (melanoma vs other); {model}, trained on "
              "real + mix x (real training melanomas) synthetic melanomas; "
              f"{options.repeats} splits; 95% intervals by {drawn} ({utility.BOOTSTRAP} "
              "resamples pooled over splits; one holding a single class is drawn again).")
    return {"method": method, "classifier": options.classifier, "figures": asdict(result)}


def _skipped_row(check: str, section: dict[str, Any]) -> dict[str, str]:
    return {"check": check, "status": "skipped", "detail": section["skipped"]}


def _verdict(sections: dict[str, Any], options: EvaluateOptions) -> list[dict[str, str]]:
    """One row per section: pass / warn / fail / skipped, with the figure that decided it."""
    rows = []
    flagged = sections["copies"]["flagged"]
    total = sections["copies"]["n_synthetic"]
    deep = sections["copies"].get("deep", {}).get("threshold")  # None: features not compared
    rows.append({"check": "near-copies of training photos",
                 "status": "fail" if flagged else "pass",
                 "detail": f"{len(flagged)} of {files.counted(total, 'synthetic image')} within "
                           f"{options.threshold:g} of a training photo"
                           + ("" if deep is None else
                              f", or at a feature similarity of {deep:g} or more")})
    for attribute, words in (("hair", "hair"), ("skin_tone", "skin tone")):
        figures = sections["adherence"][attribute]
        agreement = figures["agreement"]
        rows.append({"check": f"prompt adherence ({words})",
                     "status": "skipped" if agreement is None else
                     ("pass" if agreement >= ADHERENCE_PASS else "warn"),
                     "detail": f"no prompt names the {words}" if agreement is None else
                     f"{files.percent(agreement)} of "
                     f"{files.counted(figures['n_prompted'], 'image')} match their "
                     f"prompt's {words}"})
    fidelity_section = sections["fidelity"]
    if "skipped" in fidelity_section:
        rows.append(_skipped_row("fidelity (FID/KID)", fidelity_section))
    else:
        f = fidelity_section["figures"]
        rows.append({"check": "fidelity (FID/KID)", "status": "info",
                     "detail": f"FID {f['fid']:.2f}, KID {f['kid_mean']:.4f}"
                               + ("" if f["kid_std"] is None else f" ± {f['kid_std']:.4f}")
                               + f", precision {f['precision']:.2f}, recall {f['recall']:.2f} "
                               f"(n = {f['n_real']} real, {f['n_synthetic']} synthetic)"})
    utility_section = sections["utility"]
    rows.append(_skipped_row("classifier utility", utility_section)
                if "skipped" in utility_section else _utility_row(utility_section))
    return rows


def _utility_row(section: dict[str, Any]) -> dict[str, str]:
    """The classifier's verdict: a pass when the best mix with synthetic images beats the real
    only baseline (mix 0) beyond its 95% interval's low end; the baseline is never the best."""
    mixes = section["figures"]["mixes"]
    base = next(m for m in mixes if m["mix"] == 0)
    synthetic = [m for m in mixes if m["mix"] > 0]
    best = max(synthetic, key=lambda m: m["auc"]["value"]) if synthetic else None
    real_only = f"ROC-AUC {base['auc']['value']:.3f} real only; "
    if best is None:
        return {"check": "classifier utility", "status": "warn",
                "detail": real_only + "no mix with synthetic images was asked (--mix)"}
    return {"check": "classifier utility",
            "status": "pass" if best["auc"]["low"] > base["auc"]["value"] else "warn",
            "detail": real_only + f"best with synthetic images {best['auc']['value']:.3f} "
                      f"[{best['auc']['low']:.3f}, {best['auc']['high']:.3f}] at mix "
                      f"{best['mix']:g}"}


def _versions() -> dict[str, str]:
    """Versions of the packages the figures depend on."""
    found = {}
    for name in ("numpy", "opencv-python", "torch", "torchmetrics", "scikit-learn"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
