"""The two image sets an evaluation compares: the real data and a synthetic set.

Real data is an ISIC source (melanomas and the rest, for the classifier) or a prepared folder
(the exact training images: its own copies of them that sd-scripts trains on, as its manifest
places them; the source it was made from gives the rest).
A synthetic set is `sample`'s output: `metadata.csv` (read by sampling/synthset.py) plus
`images/<id>.png`. Loading reads paths and labels only; `decoded` then yields the images one at
a time.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import files
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling.synthset import (
    IMAGES,
    METADATA,
    SET_FIX,
    image_files,
    made_with,
    read_metadata,
    unlisted,
)
from medsynth_kohya.training.record import RECORD_FILE, RunFolder, RunRecord

if TYPE_CHECKING:
    import pandas as pd
    from cv2.typing import MatLike

    from medsynth_kohya.data.sources import Source

@dataclass(frozen=True)
class RealSet:
    """Real images: `training` (id, path, patient_id) and, when known, `labelled` (+ label)."""

    name: str
    training: pd.DataFrame
    labelled: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    """The prepared folder's manifest (None for an ISIC source): push matches it with a run's."""
    source_sha256: str | None = None
    """An ISIC source's metadata file (None for a prepared folder): push matches it with the
    one the run's data was prepared from."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Rows of the source left out as prepare leaves them out (set "real", id, reason): a
    repeated id, a duplicate photo, a generated image."""
    said: dict[str, str] = field(default_factory=dict)
    """Notes as the user is told them, naming the local paths the shared report leaves out
    (note -> what is said); a note not here is said as it is."""


@dataclass(frozen=True)
class SyntheticSet:
    """Synthetic images (id, path, prompted hairy or None, prompted skin_tone or "", prompt)
    and the ids of rows without a file."""

    root: Path
    frame: pd.DataFrame
    missing: list[str]
    lora_sha256: str | None = None
    """The LoRA that made the set, as sample recorded it (None: not recorded)."""
    repeated: list[str] = field(default_factory=list)
    """Ids of metadata.csv rows that repeat an earlier row's id (left out)."""
    notes: list[str] = field(default_factory=list)
    """What weakens a figure, for the report and the user: rows whose `hairy` is unreadable."""


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(rows, columns=list(columns))
    return frame


def load_synthetic(root: Path) -> SyntheticSet:
    """Read a synthetic set made by `sample`; an error when it has no metadata or no images,
    or holds an image its metadata.csv does not list (push refuses such a set too)."""
    files.ensure_folder(root, SET_FIX, "synthetic set")
    folder = root / IMAGES
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    repeated: list[str] = []
    unread: list[tuple[str, str]] = []
    seen: set[str] = set()
    for row in read_metadata(root):
        if row.id in seen:
            repeated.append(row.id)
            continue
        seen.add(row.id)
        path = folder / f"{row.id}.png"
        if not path.is_file():
            missing.append(row.id)
            continue
        rows.append({"id": row.id, "path": path, "hairy": row.hairy,
                     "skin_tone": row.skin_tone, "prompt": row.prompt})
        if row.unread_hairy:
            unread.append((row.id, row.unread_hairy))
    if not seen:  # its header alone: the images are still to be made
        raise UserError(f"{root} is an empty set: its {METADATA} has no rows, only its header; "
                        f"fill it with `medsynth-kohya sample --out {shlex.quote(str(root))}` "
                        "(and the options that made it)")
    strays = unlisted(image_files(root), seen)
    if strays:  # no check would see them: a near-copy among them would pass unseen
        count = len(strays)
        raise UserError(f"{root}: {files.counted(count, 'image')} in {IMAGES}/ "
                        f"{files.agreeing(count, 'is')} not listed in its {METADATA} (first: "
                        f"{strays[0].name}), so no check would see "
                        f"{files.agreeing(count, 'it')}; re-run the `medsynth-kohya sample` "
                        f"command that made the set to list {files.agreeing(count, 'it')}, or "
                        f"move {files.agreeing(count, 'it')} out of {folder}")
    if not rows:
        raise UserError(_no_images(root, missing))
    return SyntheticSet(root, _frame(rows, ("id", "path", "hairy", "skin_tone", "prompt")), missing,
                        made_with(root), repeated, _unread_hairy(unread))


def _unread_hairy(unread: list[tuple[str, str]]) -> list[str]:
    """A note counting the rows (id, cell) whose `hairy` is no boolean word: the hair their
    prompts asked for is not graded."""
    if not unread:
        return []
    count = len(unread)
    return [f"{files.counted(count, 'row')} of {METADATA} {files.agreeing(count, 'has')} a hairy "
            f"value that is not true or false (first: {unread[0][0]}: {unread[0][1]!r}), so the "
            f"hair {'its prompt' if count == 1 else 'their prompts'} asked for is not graded; "
            "write true or false there (1/0 and yes/no are read too)"]


def _no_images(root: Path, ids: list[str]) -> str:
    """Why a set none of whose rows (`ids`) has its images/<id>.png is refused: the file
    looked for, and, where rows have a JPEG instead, that sample's images are PNG."""
    folder = root / IMAGES
    said = (f"{root} has no images for the rows of its {METADATA}: looked for "
            f"{IMAGES}/<id>.png in {folder}")
    again = "re-run the command that made the set"
    jpegs = {path.stem: path.name for path in (folder.iterdir() if folder.is_dir() else ())
             if path.suffix.lower() in {".jpg", ".jpeg"}}
    found = [jpegs[i] for i in ids if i in jpegs]
    if not found:
        return f"{said}; {SET_FIX}, or {again}"
    return (f"{said}, but {files.counted(len(found), 'row')} {files.agreeing(len(found), 'has')} "
            f"a JPEG there (first: {found[0]}); a set's images must be PNG, as "
            f"`medsynth-kohya sample` writes them: convert {files.agreeing(len(found), 'it')} to "
            f"PNG, or {again}")


def _real(identifier: str, reason: str) -> dict[str, str]:
    """A skipped row of the real set, as the report lists it."""
    return {"set": "real", "id": identifier, "reason": reason}


def _from_source(source: Any, training_ids: set[str] | None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[dict[str, str]]]:
    """(training rows, labelled rows, notes, skipped rows) of an ISIC source, by prepare's
    rules: generated images left out, a repeated id and a photo held twice (ISIC 2020's
    duplicates list, identical files) counted once; training = melanomas unless given."""
    from medsynth_kohya.data import duplicates, sources
    from medsynth_kohya.data.sources import GENERATED_SKIP

    raw = sources.read_metadata(source)
    frame, _ = sources.normalise(raw, source)
    melanoma = sources.default_selection(raw, frame, source).fillna(False).astype(bool)
    images = sources.index_images(source.image_dirs)
    labelled: list[dict[str, Any]] = []
    absent: list[str] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for identifier, patient, label, generated in zip(
            frame["id"].astype(str), frame["patient_id"], melanoma, sources.generated_rows(raw),
            strict=True):
        path = images.get(identifier)
        if generated:
            skipped.append(_real(identifier, GENERATED_SKIP))
            continue
        if identifier in seen:
            skipped.append(_real(identifier, duplicates.DUPLICATE_ID))
            continue
        seen.add(identifier)
        if path is None:
            absent.append(identifier)
            continue
        patient_id = "" if patient is None or str(patient) in {"<NA>", "nan"} else str(patient)
        labelled.append({"id": identifier, "path": path, "patient_id": patient_id,
                         "label": int(bool(label))})
    table = _frame(labelled, ("id", "path", "patient_id", "label"))
    paths = dict(zip(table["id"], table["path"], strict=True))
    twins: duplicates.Twins = {}
    notes: list[str] = []
    if training_ids is None:  # as prepare picks among the melanomas alone
        melanomas = table.loc[table["label"] == 1, "id"]
        twins, notes = duplicates.twins({i: paths[i] for i in melanomas}, source)
        training_ids = set(melanomas) - set(twins)
    others, unlisted = duplicates.twins(paths, source, preferred=training_ids)
    twins = {**others, **twins}
    skipped += [_real(i, duplicates.twin_reason(*twins[i])) for i in sorted(twins)]
    table = table.loc[~table["id"].isin(twins)]
    training = table.loc[table["id"].isin(training_ids), ["id", "path", "patient_id"]]
    name = Path(source.metadata).name
    unusable = sources.unusable_files(source.image_dirs)
    notes = [*dict.fromkeys([*notes, *unlisted]),
             *_dropped(name, [i for i in absent if i not in unusable], skipped, twins),
             *_unusable(name, [(i, unusable[i][1]) for i in absent if i in unusable])]
    return training.reset_index(drop=True), table.reset_index(drop=True), notes, skipped


def _unusable(name: str, found: list[tuple[str, str]]) -> list[str]:
    """A note counting the rows of metadata file `name` whose only file evaluate cannot take
    (another format, a broken symlink), naming the first with what to do, as prepare does."""
    if not found:
        return []
    return [f"{files.counted(len(found), 'row')} of {name} {files.agreeing(len(found), 'has')} "
            f"only a file evaluate does not take and {files.agreeing(len(found), 'is')} left "
            f"out (first: {found[0][0]}: {found[0][1]})"]


def _dropped(name: str, absent: list[str], skipped: list[dict[str, str]],
             twins: Mapping[str, tuple[str, str]]) -> list[str]:
    """Notes counting the rows of metadata file `name` left out of the real set, and why."""
    from medsynth_kohya.data import duplicates
    from medsynth_kohya.data.sources import GENERATED_SKIP

    notes = [f"{files.counted(len(absent), 'row')} of {name} "
             f"{files.agreeing(len(absent), 'has')} no image file and "
             f"{files.agreeing(len(absent), 'is')} left out (first: {absent[0]})"
             ] if absent else []
    for reason in (duplicates.DUPLICATE_ID, GENERATED_SKIP):
        ids = [row["id"] for row in skipped if row["reason"] == reason]
        if ids:
            notes.append(f"{files.counted(len(ids), 'row')} of {name} left out: {reason} "
                         f"(first: {ids[0]})")
    if twins:
        count = len(twins)
        notes.append(f"{files.counted(count, 'photo')} duplicate{'s' if count == 1 else ''} "
                     f"another ({duplicates.counted(twins)}) and "
                     f"{files.agreeing(count, 'is')} left out: each photo counts once, on one "
                     "side of the classifier's patient split (see skipped)")
    return notes


def _trained_on(prepared: PreparedFolder, rows: pd.DataFrame
                ) -> tuple[list[Path | None], list[str]]:
    """The file of each training row to compare with: the folder's own copy in
    img/<R>_<class>/, which sd-scripts trains on (the download may have changed or gone since
    prepare); where that copy is gone, the download's file it was made from; else None. The
    notes count the rows of either kind, naming files, never a local path."""
    sources = [Path(str(source)) for source in rows["source"]]
    try:
        folder = prepared.train_folder()[0]
        copies: list[Path | None] = list(prepared.placed_images(rows, folder))
    except UserError:  # img/ gone, or holding other folders than prepare's one
        folder, copies = prepared.train_root, [None] * len(sources)
    paths: list[Path | None] = []
    borrowed: list[str] = []
    gone: list[str] = []
    for copy, source in zip(copies, sources, strict=True):
        if copy is not None and copy.is_file():
            paths.append(copy)
        elif source.is_file():
            paths.append(source)
            borrowed.append(source.name)
        else:
            paths.append(None)
            gone.append(source.name)
    where = f"{prepared.path.name}/{folder.relative_to(prepared.path).as_posix()}"
    listing = f"{prepared.path.name}/{prepared.manifest.name}"
    notes = [f"{files.counted(len(borrowed), 'training image')} of {listing} "
             f"{files.agreeing(len(borrowed), 'is')} not in {where} and "
             f"{files.agreeing(len(borrowed), 'is')} read from the ISIC download it was "
             f"prepared from, which may have changed since (first: {borrowed[0]})"
             ] if borrowed else []
    if gone:
        notes.append(f"{files.counted(len(gone), 'training image')} named by {listing} "
                     f"{files.agreeing(len(gone), 'is')} gone from {where} and from the ISIC "
                     f"download (first: {gone[0]})")
    return paths, notes


def _prepared(folder: Path) -> RealSet:
    """The training images of a prepared folder, and the source it was prepared from; the
    notes name files, never a local path (the report is meant to be shared)."""
    from medsynth_kohya.data import manifest, sources

    prepared = PreparedFolder(folder)
    prepared.ensure_finished()
    table, digest = manifest.read_hashed(prepared.manifest)
    train = table.loc[table["split"].astype(str) == "train"]
    paths, notes = _trained_on(prepared, train)
    training = _frame([{"id": str(r.id), "path": path,
                        "patient_id": "" if str(r.patient_id) in {"<NA>", "nan"}
                        else str(r.patient_id)}
                       for r, path in zip(train.itertuples(), paths, strict=True) if path],
                      ("id", "path", "patient_id"))
    if training.empty:
        count = len(train)
        reason = (f"the {files.counted(count, 'training image')} of its {prepared.manifest.name} "
                  f"{files.agreeing(count, 'is')} gone from its img/ folder and from the ISIC "
                  "download it was prepared from" if count
                  else f"its {prepared.manifest.name} lists none")
        raise UserError(f"{folder} has no training images to compare with ({reason}); prepare "
                        "it again from the download, or evaluate with the download as --real")
    labelled = None
    skipped: list[dict[str, str]] = []
    said: dict[str, str] = {}
    metadata = None
    try:
        state = prepared.state()
        metadata = state.source_metadata
        if metadata is None:
            raise ValueError("its prepare record names no download")
        dirs = tuple(folder for folder in state.source_images if folder.is_dir())
        located = sources.locate(None, metadata=metadata,  # as prepare read it
                                 images=dirs[0] if dirs else None,
                                 columns=state.columns or None)
        # every folder prepare searched (HAM10000's two), not the first one's tree alone
        source = replace(located, image_dirs=dirs or located.image_dirs)
        _, labelled, dropped, skipped = _from_source(source, set(train["id"].astype(str)))
        notes += dropped
    except (OSError, KeyError, ValueError, UserError) as exc:
        note, said_note = _source_unread(folder.name, metadata, exc)
        notes.append(note)
        said[note] = said_note
    return RealSet(str(folder), training.reset_index(drop=True), labelled, notes, digest,
                   skipped=skipped, said=said)


def _source_unread(name: str, metadata: Path | None, exc: Exception) -> tuple[str, str]:
    """The note (no local path: the report is shared) and the warning (naming the file, and
    why) that the ISIC download prepared folder `name` was made from, at `metadata`, cannot
    give the classifier its labelled photos, and what the evaluation does without them."""
    meaning = ("the classifier section, which needs the download's labelled photos, is "
               f"skipped (the other checks compare with {name}'s own copies of the training "
               "photos)")
    start = f"the ISIC download {name} was prepared from"
    if metadata is not None and not metadata.exists():
        gone = (f"{start} is gone ({{}} does not exist): {meaning}; put it back there, or "
                "pass the download as --real")
        return gone.format(f"{metadata.parent.name}/{metadata.name}"), gone.format(metadata)
    reason = (f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror
              else str(exc).strip("'\"") or type(exc).__name__)
    return (f"{start} could not be read: {meaning}; pass the download as --real",
            f"{start} could not be read ({reason}): {meaning}; pass the download as --real")


def training_run(run: Path) -> tuple[Path, RunRecord]:
    """The prepared folder a training run was made from (its run record says), and the
    record."""
    files.ensure_folder(run, "pass the run folder that `medsynth-kohya train` wrote, or give "
                        "--real instead", "--lora")
    try:
        record: RunRecord | None = RunFolder(run).load()
    except (OSError, ValueError):
        record = None
    prepared = record.prepared if record else None
    if record is None or prepared is None:
        raise UserError(f"{run} is not a training run (no readable {RECORD_FILE} naming its "
                        "prepared data); give --real instead")
    return prepared, record


def load_real(path: Path) -> RealSet:
    """An ISIC source (folder or CSV) or a prepared folder, read as a `RealSet`."""
    from medsynth_kohya.data import sources

    if not path.exists():
        raise UserError(f"real data {path} does not exist{files.near_name(path)}; give an ISIC "
                        "download or a folder made by `medsynth-kohya prepare`")
    if (path / RECORD_FILE).is_file():
        raise UserError(f"{path} is a training run, not real data: give --lora {path} to "
                        "compare with the data it was trained on, or --real with an ISIC "
                        "download or a prepared folder")
    if path.is_dir() and PreparedFolder(path).manifest.is_file():
        return _prepared(path)
    located = sources.locate(path, no_metadata_fix="give a folder holding one of those CSVs, "
                             "or a folder made by `medsynth-kohya prepare`",
                             csv_fix="give --real the CSV file")
    training, labelled, notes, skipped = _from_source(located, None)
    if training.empty:
        raise UserError(_no_training(path, located))
    return RealSet(str(path), training, labelled, notes,
                   source_sha256=files.sha256(located.metadata), skipped=skipped)


def _no_training(path: Path, source: Source) -> str:
    """Why ISIC download `path` gives no training image to compare with, and what to give:
    a metadata CSV without rows, or no melanoma with an image file."""
    from medsynth_kohya.data import sources

    if sources.read_metadata(source).empty:
        return (f"{path} has no training images to compare with ({source.metadata} holds only "
                "a header, no rows); give --real a complete ISIC download")
    return (f"{path} has no training images to compare with (no melanoma with an image file); "
            "give --real a download holding melanoma photos")


@cache
def _quiet_opencv() -> None:
    """Silence OpenCV's own log, once per process (the setting is process-wide). OpenCV 4.11
    and later set it in cv2.utils.logging, earlier ones (sd-scripts' pin, 4.10) in cv2 itself;
    0 is LOG_LEVEL_SILENT in both."""
    import cv2

    getattr(cv2.utils, "logging", cv2).setLogLevel(0)


def decode(path: Path) -> MatLike | None:
    """A BGR image reduced while decoding as prepare's measurements decode it, or None: also
    for a header claiming more pixels than prepare takes (OpenCV would decode such a PNG whole,
    or raise). OpenCV logs nothing (a broken file is reported once, by the caller, in one
    line)."""
    import cv2

    from medsynth_kohya.data.images import past_pillow_limit
    from medsynth_kohya.data.measure import decode as reduced
    from medsynth_kohya.data.measure import pixel_size

    _quiet_opencv()
    try:
        size = pixel_size(path)
        return None if size is None or past_pillow_limit(*size) else reduced(path, *size)
    except (OSError, ValueError, cv2.error):
        return None


def decoded(frame: Any, kind: str, skipped: list[dict[str, str]],
            on_progress: Callable[[int, int], None]) -> Iterator[tuple[str, MatLike]]:
    """(id, image) of each row (id, path) that decodes; the others are listed in `skipped`,
    once: a row `skipped` already lists is passed over (a later pass over the same photos)."""
    known = {(entry["set"], entry["id"]) for entry in skipped}
    total = len(frame)
    for done, (identifier, path) in enumerate(zip(frame["id"], frame["path"], strict=True), 1):
        image = None if (kind, str(identifier)) in known else decode(Path(path))
        if image is not None:
            yield str(identifier), image
        elif (kind, str(identifier)) not in known:
            skipped.append({"set": kind, "id": str(identifier), "reason": "undecodable"})
        on_progress(done, total)
