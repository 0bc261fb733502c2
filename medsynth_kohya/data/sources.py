"""Find and read ISIC metadata: the ISIC 2020 challenge CSV, the ISIC 2019 and ISIC 2017
challenges' pairs of CSVs (ground truth and metadata, merged on the image id), ISIC 2016's
headerless ground truth, an ISIC Archive export or HAM10000's metadata CSV.

Each is normalised to one frame in the ISIC Archive's terms (`id, patient_id, sex, age, site,
diagnosis, fitzpatrick_skin_type, metadata_hairy, marker_pen`; see `archive`) next to the raw
columns, which `--query` expressions are written against. Each field is read from its
layout's column unless `--column FIELD=COLUMN` names another; a column the run needs must be
present.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from medsynth_kohya import files, outputs
from medsynth_kohya.data.archive import SYNTHETIC
from medsynth_kohya.data.layout import TRAIN_ROOT, VAL_ROOT
from medsynth_kohya.data.query import evaluate
from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import zipfile

    import pandas as pd

ISIC2020 = "isic2020"
ISIC2019 = "isic2019"
ISIC2018 = "isic2018"
"""ISIC 2018 Task 3's ground truth: HAM10000's images, one-hot like ISIC 2019 (AKIEC for AK)."""
ISIC2017 = "isic2017"
"""ISIC 2017's Part 3 ground truth (`image_id, melanoma, seborrheic_keratosis`), merged with its
data folder's metadata CSV (`image_id, age_approximate, sex`)."""
ISIC2016 = "isic2016"
"""ISIC 2016's Part 3 ground truth: no header row, each image's id and benign/malignant (its
test set's: 0.0/1.0), read as columns `image_id, melanoma`."""
HAM10000_PAGE = "https://doi.org/10.7910/DVN/DBW86T"
"""Where HAM10000 (its images and HAM10000_metadata.csv) is published."""
ARCHIVE = "isic-archive"
HAM10000 = "ham10000"
OWN = "own"
"""Where data with neither layout's id column comes from: the user's own (`origin`)."""
LICENCE_COLUMNS = ("copyright_license", "attribution")
"""The columns of an ISIC Archive export that give each image's licence and credit."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Image files found, in any letter case."""
OTHER_FORMATS = (".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".avif", ".dcm")
"""Image formats an id's file may come in that prepare does not take: named when skipped."""
_MACOS_EXTRAS = "__MACOSX"
"""The folder macOS's Archive Utility zips the ._ files of the files it zips into."""
_ID_SUFFIX = re.compile("(" + "|".join(map(re.escape, IMAGE_SUFFIXES)) + ")$", re.IGNORECASE)
"""An image suffix on an id (`ISIC_4525317.jpg`), ignored when matching files."""
CHALLENGE_METADATA = "train.csv"
ARCHIVE_METADATA = "metadata.csv"
"""The metadata file of an ISIC 2020 challenge download and of an ISIC Archive export (not a
synthetic set's metadata.csv, which sampling/synthset.py owns)."""
SLICE3D_METADATA = "train-metadata.csv"
"""ISIC 2024's (SLICE-3D, Kaggle's isic-2024-challenge) training metadata: the Archive's column
names, but its diagnosis levels named `iddx_1..5` (SLICE3D_LEVELS)."""
SLICE3D_LEVELS = {f"diagnosis_{level}": f"iddx_{level}" for level in range(1, 6)}
"""The Archive's diagnosis level -> ISIC 2024's name for it (the same hierarchy's terms)."""
SLICE3D_FULL = "iddx_full"
"""ISIC 2024's whole diagnosis path, its levels joined by `::`: read as `diagnosis_1..5` where
the file holds no `iddx_1..5` (a trimmed copy of Kaggle's)."""
DUPLICATES_PATTERN = "ISIC_2020_Training_Duplicates*.csv"
"""The ISIC 2020 challenge's list of images it holds twice (DUPLICATES_COLUMNS)."""
DUPLICATES_COLUMNS = ("image_name_1", "image_name_2")
"""The columns of ISIC 2020's duplicates list: the two ids of each image held twice."""
_METADATA_PATTERNS = (CHALLENGE_METADATA, "ISIC_2020_Training_GroundTruth*.csv",
                      "ISIC_2019_*GroundTruth*.csv", "HAM10000_metadata*.csv",
                      ARCHIVE_METADATA, SLICE3D_METADATA, "ISIC_2019_*Metadata*.csv",
                      "ISIC2018_Task3_Training_GroundTruth*.csv",
                      "ISIC2018_Task3_*GroundTruth*.csv",
                      "ISIC-2017_Training_Part3_GroundTruth*.csv",
                      "ISIC-2017_*_Part3_GroundTruth*.csv", "ISIC-2017_*_Data_metadata*.csv",
                      "ISBI2016_ISIC_Part3_Training_GroundTruth*.csv",
                      "ISBI2016_ISIC_Part3_*_GroundTruth*.csv")
"""Metadata file names searched for, in this order (within one, the last in sorted order first:
a _v2 before its first version); ISIC 2018's, 2017's and 2016's training ground truth before
their validation and test ones."""
_ONE_HOT_COLUMNS = {"id": "image", "patient_id": "lesion_id", "sex": "sex", "age": "age_approx",
                    "site": "anatom_site_general"}
"""ISIC 2019's column of each field (its ground truth and metadata merged); ISIC 2018's too."""
_COLUMNS = {
    ISIC2020: {"id": "image_name", "patient_id": "patient_id", "sex": "sex",
               "age": "age_approx", "site": "anatom_site_general_challenge"},
    ARCHIVE: {"id": "isic_id", "patient_id": "patient_id", "sex": "sex",
              "age": "age_approx", "site": "anatom_site_general"},
    ISIC2019: _ONE_HOT_COLUMNS,
    ISIC2018: _ONE_HOT_COLUMNS,
    HAM10000: {"id": "image_id", "patient_id": "lesion_id", "sex": "sex", "age": "age",
               "site": "localization"},
    ISIC2017: {"id": "image_id", "patient_id": "patient_id", "sex": "sex",
               "age": "age_approximate", "site": "anatom_site_general"},
    ISIC2016: {"id": "image_id", "patient_id": "patient_id", "sex": "sex", "age": "age_approx",
               "site": "anatom_site_general"},
}
"""Each layout's column of each field. ISIC 2019 and HAM10000 name no patient: their lesion
groups the split. ISIC 2018 Task 3's ground truth has the id column alone: its sex, age, site
and lesion are HAM10000's metadata. ISIC 2017 and 2016 lack some fields (_LACKS): theirs are the
Archive's names, read should the user add such a column."""
_LACKS = {ISIC2017: ("ISIC 2017", ("patient_id", "site")),
          ISIC2016: ("ISIC 2016", ("patient_id", "sex", "age", "site"))}
"""The layouts whose download holds no column for some fields anywhere, by their name: a caption
goes without such a field, and --val-frac splits image by image, rather than being refused."""
PART3_2016_COLUMNS = ("image_id", "melanoma")
"""The names ISIC 2016's headerless ground truth is read with (its label as 2017's: 1.0 for a
melanoma, so --query 'melanoma == 1' reads both)."""
_ISIC_ID = re.compile(r"ISIC_\d+(\.jpe?g|\.png)?", re.IGNORECASE)
_PART3_LABELS = {"malignant": 1.0, "benign": 0.0}
"""ISIC 2016's training labels, read as its test set's 1.0 and 0.0."""
_COMPANIONS = re.compile(r"_superpixels$", re.IGNORECASE)
"""File stems of the per-image maps ISIC 2017 puts among its photos (`ISIC_0000000_superpixels
.png`): no photos, never taken for one nor named as an image without a row."""
FIELDS = ("id", "patient_id", "sex", "age", "site")
"""Fields read from the metadata; `--column FIELD=COLUMN` maps any of them to another column."""
CAPTION_FIELDS = ("sex", "age", "site")
"""The fields a caption template may use; their columns are required when it does."""
_SELECTION_COLUMNS = {ISIC2020: ("target", "diagnosis"), ARCHIVE: ("diagnosis_3", "diagnosis"),
                      ISIC2019: ("MEL", "NV"), ISIC2018: ("MEL", "NV"), HAM10000: ("dx",),
                      ISIC2017: ("melanoma", "seborrheic_keratosis"), ISIC2016: ("melanoma",)}
_MELANOMA_TERMS = {ISIC2020: "target == 1", ARCHIVE: 'diagnosis_3 == "Melanoma Invasive"',
                   ISIC2019: "MEL == 1", ISIC2018: "MEL == 1", HAM10000: 'dx == "mel"',
                   ISIC2017: "melanoma == 1", ISIC2016: "melanoma == 1"}
"""Each layout's --query term for (some of) its melanomas, prepare's default choice: the start
of the example a broken --query is shown."""
_IMAGE_FOLDERS = ("train", "jpeg/train", "images", "ISIC_2019_Training_Input",
                  "ISIC_2019_Training_Input/ISIC_2019_Training_Input", "HAM10000_images",
                  "HAM10000_images_part_1", "HAM10000_images_part_2",
                  "ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Validation_Input",
                  "ISIC2018_Task3_Test_Input", "train-image", "ISIC-2017_Training_Data",
                  "ISIC-2017_Validation_Data", "ISIC-2017_Test_v2_Data",
                  "ISBI2016_ISIC_Part3_Training_Data", "ISBI2016_ISIC_Part3_Test_Data")
"""Where each layout keeps its images, below its metadata's folder (or SOURCE)."""
_MISSING_TEXT = frozenset({"", "nan", "none", "null", "na", "n/a", "unknown", "?"})
PANDAS_MISSING = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                  "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
"""What pandas reads as missing by default: so read in every column but the ids, whose file
stems (the user's own photos) may be any of these words."""
MAX_AGE = 150
"""Ages at or above this (years) are taken for typing errors and left blank."""
_SEX = {"m": "male", "f": "female", "man": "male", "woman": "female"}
IMAGE_TYPE = "image_type"
"""The Archive's column of each photo's kind: dermoscopic, clinical: close-up, TBP tile: ..."""
DERMOSCOPIC = "dermoscopic"
"""The image type this tool's LoRA is made for: the one a mixed set's warning suggests."""
_KNOWN = ("target", "diagnosis", *(f"diagnosis_{i}" for i in range(1, 6)), "benign_malignant",
          "hairy", "marker_pen", "fitzpatrick_skin_type", "lesion_id", "image_manipulation",
          IMAGE_TYPE)
"""Columns read by their layout's name besides FIELDS' (selection, vocabulary, grouping)."""
_MANIPULATION = "image_manipulation"
_GENERATED = ("{} describes generated images (image_manipulation is synthetic in every row, as "
              "medsynth-kohya sample writes), not real data: training on it would feed a model "
              "its own output, and comparing against it measures nothing; give the real ISIC "
              "download")
_HEAD = 64 * 1024
"""Bytes read to tell a CSV from a spreadsheet, an archive or binary data."""
_SPREADSHEETS = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods", ".numbers")
_SPREADSHEET = "a spreadsheet"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
"""The start of an old Excel (.xls) file."""
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
               (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"))
"""Magic numbers of the compressions pandas reads a one-file CSV from."""
_ARCHIVES = ((b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"Rar!\x1a\x07", "a RAR archive"))
_COMPRESSED_ENDS = (".gz", ".bz2", ".xz", ".zst")
"""The endings of a compressed metadata CSV searched for in a SOURCE folder, after the plain
name (its compression is told by its first bytes, as for one given directly)."""
_TAR_SUFFIXES = (".tar", ".tgz", ".tbz2", ".txz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")


@dataclass(frozen=True)
class CsvFormat:
    """How a metadata file is read: its compression, text encoding and field separator."""

    compression: str | None = None
    encoding: str = "utf-8"
    separator: str = ","


@dataclass(frozen=True)
class Source:
    """Where a data set's metadata and images are, and which format it is."""

    kind: str
    metadata: Path
    image_dirs: tuple[Path, ...]
    columns: Mapping[str, str] = field(default_factory=dict)
    """Field -> column of the metadata file that holds it (the layout's names, or --column)."""
    header: tuple[str, ...] = ()
    """The metadata file's column names."""
    text: CsvFormat = field(default_factory=CsvFormat)
    """How the metadata file is read (compression, encoding, separator)."""
    repeated: tuple[str, ...] = ()
    """Column names the metadata file's header holds more than once."""
    warnings: tuple[str, ...] = ()
    """What the user should know about how the source was read (a non-UTF-8 file)."""
    images: Path | None = None
    """The --images folder, when one was given."""
    partner: Path | None = None
    """ISIC 2019's or 2017's other CSV (metadata for ground truth), merged with `metadata` on
    the id."""
    searched: bool = False
    """Whether `metadata` was found in a SOURCE folder (not named by --metadata or SOURCE), so
    another file put beside it is found in its place."""
    headerless: bool = False
    """Whether the metadata file's first line is a row (ISIC 2016's ground truth): `header` holds
    the names it is read with."""
    lacking: tuple[str, ...] = ()
    """Fields the layout holds no column for anywhere (`_LACKS`), left blank, not refused."""


@dataclass(frozen=True)
class _Pair:
    """A challenge whose metadata comes in two CSVs named alike, its ground truth and its
    metadata, merged on the image id."""

    challenge: str
    prefix: str
    truth: str
    """The part of the ground truth's name that the metadata CSV's name holds in its place."""
    metadata: str
    truth_holds: str
    metadata_holds: str
    in_images: bool
    """Whether the metadata CSV lies in the images' folder (its own name less `_metadata`), not
    beside the ground truth."""


_PAIRS = (_Pair("ISIC 2019", "ISIC_2019_", "GroundTruth", "Metadata",
                "the diagnoses, one-hot MEL, NV, …",
                "age_approx, anatom_site_general, lesion_id and sex", in_images=False),
          _Pair("ISIC 2017", "ISIC-2017_", "_Part3_GroundTruth", "_Data_metadata",
                "the diagnoses, melanoma and seborrheic_keratosis", "age_approximate and sex",
                in_images=True))


def _half(metadata: Path) -> tuple[_Pair, bool] | None:
    """The pair `metadata` is one CSV of, and whether it is the metadata CSV; None if neither."""
    for pair in _PAIRS:
        for word, is_metadata in ((pair.truth, False), (pair.metadata, True)):
            if metadata.name.startswith(pair.prefix) and word in metadata.name:
                return pair, is_metadata
    return None


def _partner_paths(metadata: Path) -> tuple[Path, ...]:
    """Where the CSV that completes `metadata` (the other of its pair, named alike, plain or
    compressed whatever `metadata` is) may be: the folder it is downloaded into first, and in
    each folder `metadata`'s own ending first; none when `metadata` is of no pair."""
    found = _half(metadata)
    if found is None:
        return ()
    pair, is_metadata = found
    mine, theirs = (pair.metadata, pair.truth) if is_metadata else (pair.truth, pair.metadata)
    ending = next((end for end in _COMPRESSED_ENDS if metadata.name.endswith(end)), "")
    other = metadata.name.removesuffix(ending).replace(mine, theirs)
    if not pair.in_images:
        folders: tuple[Path, ...] = (metadata.parent,)
    elif is_metadata:
        folders = (metadata.parent.parent, metadata.parent)
    else:
        folders = (metadata.parent / other.rsplit("_metadata", 1)[0], metadata.parent)
    endings = (ending, *(end for end in ("", *_COMPRESSED_ENDS) if end != ending))
    return tuple(folder / (other + end) for folder in folders for end in endings)


def _partner(metadata: Path) -> Path | None:
    """The first of `_partner_paths` that is there, else None."""
    return next((path for path in _partner_paths(metadata) if path.is_file()), None)


def pair_challenge(source: Source) -> str:
    """The challenge whose two CSVs `source` reads (ISIC 2019, ISIC 2017); '' when it reads
    one."""
    found = _half(source.metadata) if source.partner is not None else None
    return found[0].challenge if found else ""


def _lone_half(metadata: Path) -> UserError:
    """The error for one CSV of a pair found without the other: download it."""
    pair, is_metadata = cast("tuple[_Pair, bool]", _half(metadata))
    other = _partner_paths(metadata)[0]
    holds = pair.truth_holds if is_metadata else pair.metadata_holds
    return UserError(f"{other.name} is missing beside {metadata} ({pair.challenge}'s metadata "
                     f"comes in two CSVs; that one holds {holds}): download it into "
                     f"{other.parent}")


def _metadata_names() -> Iterator[str]:
    """The file names (glob patterns) of a metadata CSV searched for, in order: each of
    _METADATA_PATTERNS plain, then compressed."""
    for pattern in _METADATA_PATTERNS:
        yield pattern
        yield from (pattern + end for end in _COMPRESSED_ENDS)


def _find_metadata(root: Path, fix: str, csv_fix: str) -> Path:
    """The metadata CSV under `root` (or one folder below it), by the names ISIC uses; never
    one this tool wrote (a synthetic set, or any file in another of its output folders).
    `fix` ends the message when there is none, `csv_fix` the one for a folder by a CSV's name:
    the calling command's ways to give one."""
    generated: list[Path] = []
    misnamed: list[Path] = []
    folders = [p for p in sorted(root.iterdir()) if p.is_dir()]
    ours = [p for p in folders if tool_output(p)]
    searched = (root, *(p for p in folders if p not in ours))
    for folder in searched:
        for name in _metadata_names():
            for path in sorted(folder.glob(name), reverse=True):
                if path.is_dir():
                    misnamed.append(path)
                elif not _generated_file(path):
                    return path
                else:
                    generated.append(path)
    if generated:
        raise UserError(_GENERATED.format(generated[0]))
    if misnamed:
        raise UserError(f"{misnamed[0]} is a folder, not a metadata CSV: put the CSV itself "
                        f"there, or {csv_fix}")
    if tool_output(root):
        raise UserError(f"{root} is a folder medsynth-kohya wrote (prepared data, a synthetic "
                        "set, a run or a report), not an ISIC download: give the ISIC "
                        "download's folder")
    from medsynth_kohya.data import fetch  # not at the top: fetch imports this module

    unfinished = fetch.again(root)
    if unfinished is not None:
        raise UserError(f"{root} is an unfinished fetch-isic download: run "
                        f"`{unfinished.line()}` again to finish it")
    passed = f" (passed over {ours[0].name}, which medsynth-kohya wrote)" if ours else ""
    packed = [p.name for p in sorted(root.iterdir()) if p.is_file()
              and p.name.lower().endswith((*_SPREADSHEETS, *_TAR_SUFFIXES, ".zip", ".7z", ".rar"))]
    if packed:
        passed += (f" ({packed[0]} is a spreadsheet: export it as CSV)"
                   if packed[0].lower().endswith(_SPREADSHEETS) else
                   f" ({packed[0]} is an archive: extract it here)")
    cased = _cased_metadata(searched)
    if cased is not None:
        fix = (f"{cased[0]} differs from {cased[1]} in letter case alone: rename it "
               f"{cased[1]}, or {fix}")
    raise UserError(f"no ISIC metadata found in {root}{passed}: expected train.csv, "
                    "ISIC_2020_Training_GroundTruth*.csv, ISIC_2019_Training_GroundTruth.csv, "
                    "HAM10000_metadata.csv, ISIC2018_Task3_Training_GroundTruth.csv, "
                    "ISIC-2017_Training_Part3_GroundTruth.csv, "
                    "ISBI2016_ISIC_Part3_Training_GroundTruth.csv, train-metadata.csv or "
                    f"metadata.csv; {fix}")


def _cased_metadata(folders: Iterable[Path]) -> tuple[Path, str] | None:
    """The first file in `folders` named as a metadata CSV in another letter case, and that
    name as ISIC spells it (other files' names, such as a pair's partner, are read by their
    exact spelling, so such a file is named for renaming, not read as it is)."""
    ends = tuple(".csv" + end for end in ("", *_COMPRESSED_ENDS))
    for folder in folders:
        try:
            names = sorted(p.name for p in folder.iterdir()
                           if p.name.lower().endswith(ends) and p.is_file())
        except OSError:  # a subfolder that cannot be listed holds none that can be read
            continue
        for pattern in _metadata_names():
            parts = pattern.split("*")
            shape = re.compile("(.*)".join(map(re.escape, parts)), re.IGNORECASE | re.DOTALL)
            for name in names:
                found = shape.fullmatch(name)
                if found:
                    spelled = parts[0] + "".join(
                        text + part for text, part in zip(found.groups(), parts[1:], strict=True))
                    return folder / name, spelled
    return None


def _other_metadata(chosen: Path, partner: Path | None) -> list[Path]:
    """The other files beside `chosen` that _find_metadata could have taken (the other CSV of
    its pair aside): a user may have meant one of them."""
    return sorted({path for name in _metadata_names()
                   for path in chosen.parent.glob(name)
                   if path.is_file() and path not in (chosen, partner)
                   and not _generated_file(path)})


def tool_output(folder: Path) -> bool:
    """Whether `folder` is an output of this tool: a prepared folder or synthetic set (their
    state folder), a training run (its record, read as one) or an evaluate report (its
    marker). Their images are links to sources or generated, never data to prepare."""
    if (folder / outputs.STATE_DIR).is_dir() or (folder / outputs.EVALUATE_MARKER).is_file():
        return True
    from medsynth_kohya.training.record import RunFolder  # the format's owner, no command

    run = RunFolder(folder)
    try:
        return run.record_file.is_file() and run.load().tool == outputs.TOOL
    except (OSError, ValueError):
        return False


def _generated_file(metadata: Path) -> bool:
    """`_generated` for a file found while searching (an unreadable one is not: it is picked
    and then refused with why)."""
    try:
        text = _csv_format(metadata)
        return _generated(metadata, text, _header(metadata, text))
    except UserError:
        return False


def _generated(metadata: Path, text: CsvFormat, header: Sequence[str]) -> bool:
    """Whether `metadata` describes generated images: `image_manipulation` is the Archive's
    `synthetic` in every row (what `sample` writes; a partly generated one is read, its
    generated rows skipped)."""
    column = _match(_MANIPULATION, header)
    if column is None:
        return False
    values = _read(metadata, text, usecols=lambda name: str(name).strip() == column,
                   dtype=str, keep_default_na=False)[column]
    values = values.str.strip().str.lower()
    return bool(len(values)) and bool((values == SYNTHETIC).all())


def _csv_format(path: Path) -> CsvFormat:
    """How to read `path` as CSV, or a UserError in one line saying what it is instead (a
    spreadsheet, an archive of several files, binary data); decided once per version of the
    file (the search and `locate` both ask, and the answer reads the whole file)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"cannot read metadata {path}: {exc.strerror or exc}") from None
    return _format_of(path, stat.st_size, stat.st_mtime_ns)


@cache
def _format_of(path: Path, size: int, modified: int) -> CsvFormat:
    """`_csv_format` of one version of a file: `size` and `modified` key the cache."""
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD)
    except OSError as exc:
        raise UserError(f"cannot read metadata {path}: {exc.strerror or exc}") from None
    other = _SPREADSHEET if path.suffix.lower() in _SPREADSHEETS or head.startswith(_OLE2) \
        else next((kind for magic, kind in _ARCHIVES if head.startswith(magic)), None)
    compression = next((kind for magic, kind in _COMPRESSED if head.startswith(magic)), None)
    if other is None and compression == "zip":
        other = _zip_kind(path)
    if other is None:
        with _opened(path, compression) as stream:
            head = stream.read(_HEAD)
        if path.name.lower().endswith(_TAR_SUFFIXES) or head[257:262] == b"ustar":
            other = "a tar archive"
    if other == _SPREADSHEET:
        raise UserError(f"{path} is a spreadsheet, not a CSV file: export it as CSV (UTF-8) "
                        "and pass that file")
    if other is not None:
        raise UserError(f"{path} is {other}: extract it and pass the folder (or its "
                        "metadata CSV)")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif _binary(head):
        raise UserError(f"{path} is not a CSV file (it holds binary data): give the ISIC "
                        "metadata CSV")
    else:
        encoding = _encoding(path, compression)
    lines = head.decode(encoding, errors="replace").lstrip("\ufeff").splitlines()
    return CsvFormat(compression, encoding, _separator(lines))


def _binary(head: bytes) -> bool:
    """Whether a file's first bytes are binary data rather than text: a NUL byte, or more
    than one in a hundred control bytes other than tab and line ends."""
    controls = head.translate(None, bytes(range(32, 256)) + b"\t\n\r\f")
    return b"\0" in head or len(controls) * 100 > len(head)


def _zip_kind(path: Path) -> str | None:
    """None for a zip file that holds one CSV (read as it is), else what it is instead."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = _members(archive)
    except (zipfile.BadZipFile, OSError):
        return "a damaged zip archive"
    if any(name.startswith(("xl/", "word/", "ppt/")) or name == "mimetype" for name in names):
        return _SPREADSHEET
    if len(names) == 1 and names[0].lower().endswith((".csv", ".tsv", ".txt")):
        return None
    return "a zip archive"


def _members(archive: zipfile.ZipFile) -> list[str]:
    """The files of a zip archive, without folders and macOS's resource forks."""
    return [info.filename for info in archive.infolist()
            if not info.is_dir() and not info.filename.startswith("__MACOSX/")]


@contextmanager
def _opened(path: Path, compression: str | None) -> Iterator[IO[bytes]]:
    """`path`'s bytes, decompressed; a UserError when they cannot be read."""
    import bz2
    import gzip
    import lzma
    import zipfile

    openers: dict[str, Callable[[IO[bytes]], Any]] = {
        "gzip": lambda raw: gzip.GzipFile(fileobj=raw), "bz2": bz2.BZ2File,
        "xz": lzma.LZMAFile, "zstd": lambda raw: _zstandard(path).ZstdDecompressor()
        .stream_reader(raw)}
    try:
        with ExitStack() as stack:
            stream: IO[bytes] = stack.enter_context(path.open("rb"))
            if compression == "zip":
                archive = stack.enter_context(zipfile.ZipFile(stream))
                stream = stack.enter_context(archive.open(_members(archive)[0]))
            elif compression is not None:
                stream = stack.enter_context(openers[compression](stream))
            yield stream
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read metadata {path}: {_reason(exc)}") from None


def _zstandard(path: Path) -> Any:
    """The zstandard package, or a UserError saying how to read the zstd file `path`."""
    import importlib

    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise UserError(f"{path} is zstd-compressed and the zstandard package is not "
                        "installed: pip install zstandard, or decompress it (zstd -d) and "
                        "pass the CSV") from None


def _encoding(path: Path, compression: str | None) -> str:
    """UTF-8 when the whole file is; else Windows' cp1252 (Excel's Western export), or
    Latin-1 for the few bytes cp1252 leaves undefined."""
    for encoding in ("utf-8", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        with _opened(path, compression) as stream:
            try:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                continue
        return encoding
    return "latin-1"


def _separator(lines: Sequence[str]) -> str:
    """The CSV's field separator: "," unless its header line (the first of `lines` that is no
    `#` comment, which may hold another mark) has none and has ";" (Excel's export where the
    decimal mark is a comma, read with that mark), a tab or "|" (a database's export)."""
    line = next((line for line in lines if not line.startswith("#")), "")
    return next((mark for mark in (";", "\t", "|") if "," not in line and mark in line), ",")


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, cut short."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"


def _header(path: Path, text: CsvFormat) -> list[str]:
    """Column names of a CSV (unnamed and repeated ones as pandas names them), or a UserError
    saying why it is unusable."""
    return [str(c).strip() for c in _read(path, text, nrows=0).columns]


def _repeated(path: Path, text: CsvFormat) -> tuple[str, ...]:
    """Column names that the CSV's header line holds more than once."""
    first = _read(path, text, header=None, nrows=1, dtype=str, keep_default_na=False)
    counts = Counter(str(name).strip() for name in first.iloc[0]) if len(first) else Counter()
    return tuple(name for name, count in counts.items() if count > 1)


def _read(path: Path, text: CsvFormat, **options: Any) -> pd.DataFrame:
    """pandas' read_csv of `path` as `text` says, or a UserError in one line."""
    import pandas as pd

    with _opened(path, text.compression) as stream:
        try:
            frame = cast("pd.DataFrame", pd.read_csv(stream, sep=text.separator,
                                                     encoding=text.encoding, **options))
        except pd.errors.EmptyDataError:
            raise UserError(f"metadata {path} is empty (not even a header line): give the "
                            "metadata CSV as downloaded, its first line naming the columns"
                            ) from None
        except _read_errors() as exc:
            raise UserError(_unreadable(path, text, exc)) from None
    if not text.encoding.startswith("utf") and len(frame.columns):  # a UTF-8 file, but for a
        mark = codecs.BOM_UTF8.decode(text.encoding)  # stray Western byte: its BOM, as read
        first = frame.columns[0]
        if isinstance(first, str) and first.startswith(mark):
            frame = frame.rename(columns={first: first.removeprefix(mark)})
    return frame


def _unreadable(path: Path, text: CsvFormat, exc: Exception) -> str:
    """Why `path` cannot be read as CSV, in one line; a row with more fields than the header
    names its line and the fix."""
    extra = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if extra is None:
        return f"cannot read metadata {path}: {_reason(exc)}"
    expected, line, saw = extra.groups()
    return (f"cannot read metadata {path}: line {line} has {saw} fields where the lines before "
            f"it have {expected}: put quotes around a value that holds {text.separator!r}, or "
            "remove the extra fields")


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading a file as CSV may raise for a file that is none: one line, no traceback."""
    import csv

    import pandas as pd

    return (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError, OSError, EOFError,
            ValueError, ImportError, csv.Error)


def _match(name: str, header: Sequence[str]) -> str | None:
    """`name` if the header holds it, else the one column spelled alike in another letter
    case (None when there is none, or several)."""
    if name in header:
        return name
    alike = [column for column in header if column.lower() == name.lower()]
    return alike[0] if len(alike) == 1 else None


def parse_columns(pairs: Sequence[str]) -> dict[str, str]:
    """`--column FIELD=COLUMN` values as a field -> column mapping."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not column or name not in FIELDS:
            raise UserError(f"--column {pair!r} must be FIELD=COLUMN with FIELD one of "
                            f"{', '.join(FIELDS)}, e.g. --column site=anatom_site_general")
        if name in mapping:
            raise UserError(f"--column {name}=… is given twice")
        mapping[name] = column
    return mapping


_SYNONYMS = {"sex": ("gender",), "site": ("localization", "location")}
"""Other names a field's column goes by in exports other than ISIC's, offered for --column
when the field's own columns are absent (an age column holds "age" already: age_years, Age)."""


def _closest(names: Sequence[str], header: Sequence[str]) -> list[str]:
    """Up to three columns of `header` like any of `names`: containing one, or spelled alike."""
    wanted = [name.lower() for name in names if len(name) >= 3]
    pool = {column.lower(): column for column in reversed(header) if len(column) >= 3}
    found = [column for low, column in pool.items()
             if any(name in low or low in name for name in wanted)]
    found += [pool[m] for name in wanted
              for m in difflib.get_close_matches(name, list(pool), n=3, cutoff=0.6)]
    return sorted(dict.fromkeys(found), key=header.index)[:3]


def _shown(column: str) -> str:
    """A column name as a message shows it: printable, and at most 40 characters."""
    text = column if column.isprintable() else repr(column)
    return text if len(text) <= 40 else text[:39] + "…"


def _absent(metadata: Path, header: Sequence[str], wanted: Mapping[str, Sequence[str]],
            why: str, advice: str, taken: Iterable[str] = (),
            naming: str | None = None) -> UserError:
    """One line naming every absent column, what looks like it, and the --column that maps it.

    Columns in `taken` (read for other fields) are never offered; `naming`, the column whose
    values name the image files, is offered for the id.
    """
    free = [c for c in header if c not in set(taken)]
    parts, fixes = [], []
    for name, columns in wanted.items():
        named = naming if name == "id" else None
        closest = [named] if named else _closest([*columns, name, *_SYNONYMS.get(name, ())],
                                                 free)
        shown = ""  # no column left to offer: said once, after every part
        if named:
            shown = f" (its values name the image files: {_shown(named)})"
        elif closest:
            shown = f" (closest: {', '.join(map(_shown, closest))})"
        elif free:
            more = ", …" if len(free) > 8 else ""
            shown = f" (present: {', '.join(map(_shown, free[:8]))}{more})"
        parts.append(f"{' or '.join(columns)} for {name}{shown}")
        fixes.append(f"--column {name}={closest[0] if closest else 'COLUMN'}")
    alone = "" if free else " (the file has no other columns)"
    return UserError(f"{metadata} has no column {'; nor '.join(parts)}{alone}, {why}; "
                     f"map {files.agreeing(len(fixes), 'it')} with {' '.join(fixes)}{advice}")


def _kind(metadata: Path, header: Sequence[str], columns: Mapping[str, str],
          naming: Callable[[], str | None]) -> str:
    """ISIC 2020, 2019 (2018 where AKIEC stands for AK), 2017 (2016 without seborrheic
    keratosis), Archive or HAM10000, by the id column; with --column id=…, by the layout's
    other names. Without either, the error offers `naming()`'s column for the ids."""
    if _match("image", header) and _match("MEL", header):
        return ISIC2018 if _match("AKIEC", header) else ISIC2019
    if _match("image_id", header) and _match("melanoma", header):
        return ISIC2017 if _match("seborrheic_keratosis", header) else ISIC2016
    if _match("image_id", header) and _match("dx", header):
        return HAM10000
    if _match("image_name", header):
        return ISIC2020
    if _match("isic_id", header):
        return ARCHIVE
    if "id" in columns:
        def score(kind: str) -> int:
            names = (*_COLUMNS[kind].values(), *_SELECTION_COLUMNS[kind])
            return sum(_match(name, header) is not None for name in names)
        return max((ARCHIVE, ISIC2019, ISIC2020), key=score)
    raise _absent(metadata, header, {"id": ("image_name", "isic_id")},
                  "which holds the image ids (ISIC 2020: image_name, ISIC Archive: isic_id)", "",
                  naming=naming())


def _naming_column(metadata: Path, text: CsvFormat, folder: Path,
                   exclude: Path | None) -> str | None:
    """The column whose values name the most image files in or below `folder` (HAM10000's
    image_id, not its lesion_id), or None when none names any."""
    if not folder.is_dir():
        return None
    stems = set(index_images(_image_tree(folder.resolve(), exclude)))
    frame = _read(metadata, text, dtype=str, keep_default_na=False)
    counts = {str(name).strip(): int(values.str.strip().str.replace(_ID_SUFFIX, "", regex=True)
                                     .str.normalize("NFC").isin(stems).sum())
              for name, values in frame.items()} if stems else {}
    best = max(counts, key=lambda name: counts[name], default=None)
    return best if best is not None and counts[best] else None


def origin(kind: str, columns: Mapping[str, str]) -> str:
    """Where a source of this layout `kind` with these --column mappings comes from: the ISIC
    2020 challenge or an ISIC Archive export when its ids are in the layout's own id column,
    else (`--column id=…`, e.g. HAM10000's image_id) the user's OWN data."""
    own_id = _COLUMNS.get(kind, {}).get("id")
    return kind if own_id is not None and columns.get("id", own_id) == own_id else OWN


def require(source: Source, fields: Iterable[str], why: str,
            advice: Callable[[list[str]], str] | str = "") -> None:
    """Raise a UserError naming each of `fields` whose column the metadata file lacks (or
    holds twice); `advice` ends it, made from the missing fields when it is a function."""
    fields = list(fields)
    twice = [source.columns[name] for name in fields if source.columns[name] in source.repeated]
    if twice:
        raise UserError(f"{source.metadata} has more than one column named {twice[0]!r}, so "
                        "which to read is unclear: rename or remove the copies")
    missing = {name: (source.columns[name],) for name in fields
               if source.columns[name] not in source.header}
    missing = {name: columns for name, columns in missing.items() if name not in source.lacking}
    if missing and source.kind in (ISIC2019, ISIC2017) and source.partner is None \
            and _partner_paths(source.metadata):
        raise _lone_half(source.metadata)
    said = advice(list(missing)) if callable(advice) else advice
    if missing and source.kind == ISIC2018:
        fix = (f"put it in {source.metadata.parent}, where prepare reads it instead"
               if source.searched else
               f"give it in place of {source.metadata.name} (as --metadata or SOURCE)")
        raise UserError(f"{source.metadata} (ISIC 2018 Task 3) holds the diagnoses alone, no "
                        f"{' or '.join(missing)} {why}: its training images' sex, age, site "
                        f"and lesion_id are in HAM10000_metadata.csv ({HAM10000_PAGE}); "
                        f"{fix}{said}")
    if missing:
        taken = [column for name, column in source.columns.items() if name not in missing]
        raise _absent(source.metadata, source.header, missing, why, said, taken)


def locate(source: Path | None, metadata: Path | None = None,
           images: Path | None = None, columns: Mapping[str, str] | None = None,
           exclude: Path | None = None,
           no_metadata_fix: str = "pass --metadata CSV --images DIR",
           csv_fix: str = "pass --metadata CSV") -> Source:
    """Resolve SOURCE (a folder or a CSV) or --metadata/--images into a `Source`.

    `columns` maps fields to other column names (`--column`); each one named must exist.
    `--images`, like a layout's own image folder (`train/`, `images/`…), is searched with its
    subfolders, except hidden ones, `exclude` (the folder being written, whose hard links must
    never be taken for sources) and this tool's other outputs; the metadata's own folder is
    searched alone. Generated data (a synthetic set) is refused. `no_metadata_fix` is the
    caller's advice when a SOURCE folder holds no metadata CSV (prepare's options by default),
    `csv_fix` its way to name the CSV itself, for one that holds a folder by a CSV's name.
    """
    columns = dict(columns or {})
    searched = False
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise UserError(f"--column {unknown[0]}=… is not a field; use one of {', '.join(FIELDS)}")
    if metadata is None:
        if source is None:
            raise UserError("give a SOURCE folder, or --metadata CSV and --images DIR")
        if not source.exists():
            raise UserError(f"source {source} does not exist{files.near_name(source)}; give the "
                            "folder of an ISIC download (`medsynth-kohya fetch-isic --out DIR` "
                            "downloads one), or --metadata CSV --images DIR")
        searched = not source.is_file()  # the metadata is the one _find_metadata chose
        metadata = source if source.is_file() else _find_metadata(source, no_metadata_fix,
                                                                     csv_fix)
    elif metadata.is_dir():
        raise UserError(f"--metadata {metadata} is a folder: give its metadata CSV file, or "
                        "the folder as SOURCE")
    elif source is not None and source.is_file() and not _same_file(source, metadata):
        raise UserError(f"SOURCE {source} is a file and --metadata {metadata} another: give "
                        "one metadata CSV (SOURCE may be the folder of its images instead)")
    if not metadata.is_file():
        raise UserError(f"metadata file {metadata} does not exist")
    if images is not None:
        files.ensure_folder(images, "give the folder that holds the images", "--images")
    text = _csv_format(metadata)
    header = tuple(_header(metadata, text))
    if _generated(metadata, text, header):
        raise UserError(_GENERATED.format(metadata))
    _refuse_preamble(metadata, text, header, columns.get("id"))
    headerless = _headerless(header)
    if headerless:
        header = PART3_2016_COLUMNS
    partner = _partner(metadata)
    if partner is None and (_half(metadata) or (None, False))[1]:
        raise _lone_half(metadata)
    if partner is not None:
        header += tuple(c for c in _header(partner, _csv_format(partner)) if c not in header)
    kind = _kind(metadata, header, columns, lambda: _naming_column(
        metadata, text, images if images is not None else metadata.parent, exclude))
    named = {name: _match(column, header) or column
             for name, column in {**_COLUMNS[kind], **columns}.items()}
    notes: tuple[str, ...] = () if text.encoding.startswith("utf") else (
        f"{metadata.name} is not UTF-8: read as {text.encoding} (Excel's Western export); "
        "check that accented names came out right, or save it as CSV UTF-8",)
    others = _other_metadata(metadata, partner) if searched else []
    if others:
        notes += (f"{metadata.name} is read as the metadata; also in {metadata.parent} and not "
                  f"read: {', '.join(path.name for path in others)} (give another with "
                  "--metadata FILE)",)
    lacking = tuple(name for name in _LACKS.get(kind, ("", ()))[1]
                    if name not in columns and named[name] not in header)
    located = Source(kind, metadata, (), named, header, text,
                     () if headerless else _repeated(metadata, text), notes, partner=partner,
                     searched=searched, headerless=headerless, lacking=lacking)
    require(located, columns, "named by --column")
    require(located, ["id"], "which holds the image ids")
    if images is not None:
        out = _real(exclude) if exclude is not None else None
        ours = next((folder for folder in (images.resolve(), *images.resolve().parents)
                     if folder in _layout(out) or (folder != out and tool_output(folder))),
                    None)
        if ours is not None:
            raise UserError(f"--images {images} is in {ours}, which medsynth-kohya wrote "
                            "(prepared data, a synthetic set, a run or a report): give the "
                            "folder of the ISIC images")
        return replace(located, image_dirs=_image_tree(images.resolve(), exclude),
                       images=images)
    here = metadata.parent
    roots = [here] if source is None or source.is_file() else [here, source]
    own = [r / name for r in roots for name in _IMAGE_FOLDERS if (r / name).is_dir()]
    candidates = [tree for folder in own for tree in _image_tree(folder.resolve(), exclude)]
    candidates += [r for r in roots if r.is_dir()]
    dirs: list[Path] = []
    for folder in candidates:
        if folder.resolve() not in dirs:
            dirs.append(folder.resolve())
    return replace(located, image_dirs=tuple(dirs))


def _refuse_preamble(metadata: Path, text: CsvFormat, header: Sequence[str],
                     named: str | None) -> None:
    """Refuse a first line that is not the header, where no id column is found in it: a
    comment (`# exported by …`), or one field above lines of several (a title), which would be
    read as the column names and the real header as a row."""
    if any(_match(name, header) for name in
           {named or "", *(layout["id"] for layout in _COLUMNS.values())} - {""}):
        return
    comment = header[0].startswith("#")
    if not comment and (len(header) != 1 or len(_read(metadata, text, skiprows=1,
                                                           nrows=0).columns) < 2):
        return
    raise UserError(f"the first line of {metadata} ({_shown(header[0])}) is not its header "
                    "(the column names) but "
                    f"{'a comment' if comment else 'a line above it'}: remove that line, so the "
                    "header is the first, and run this again")


def _headerless(header: Sequence[str]) -> bool:
    """Whether a CSV's first line, read as its header, is a row of ISIC 2016's ground truth (an
    image id and its label), which has no header."""
    return len(header) == 2 and bool(_ISIC_ID.fullmatch(header[0])) \
        and header[1].strip().lower() in {*_PART3_LABELS, "0", "1", "0.0", "1.0"}


def lacked_by(source: Source, name: str) -> str | None:
    """The name of `source`'s layout when it holds no column for field `name` anywhere (ISIC
    2017's site), else None."""
    return _LACKS[source.kind][0] if name in source.lacking else None


def _same_file(one: Path, other: Path) -> bool:
    """Whether both paths name one existing file."""
    try:
        return one.samefile(other)
    except OSError:
        return False


def _merged(frame: pd.DataFrame, partner: Path, identifier: str) -> pd.DataFrame:
    """`frame` with the columns of `partner` (its pair's other CSV) on the rows of the same
    image id (read as written, like the metadata's: a stem may be `NA`); ids that only
    `partner` has are left out."""
    text = _csv_format(partner)
    header = _header(partner, text)
    column = _match(identifier, header)
    if column is None:
        raise UserError(f"{partner} has no column {identifier} to match the rows of its ground "
                        "truth by; it must be the challenge's own CSV of that name")
    ids = (column, _match("lesion_id", header))
    other = _read(partner, text, dtype=str, low_memory=False, keep_default_na=False,
                  na_values={name: list(PANDAS_MISSING) for name in header if name not in ids})
    other.columns = [str(c).strip() for c in other.columns]
    other = other.drop_duplicates(column).rename(columns={column: identifier})
    merged: pd.DataFrame = frame.merge(other[[identifier, *(c for c in other.columns
                                                           if c not in frame.columns)]],
                                       how="left", on=identifier)
    merged.index = frame.index
    return merged


def holding(source: Source, column: str) -> Path:
    """The CSV of `source` whose header holds `column`: the pair's other CSV (ISIC 2019's
    metadata beside its ground truth) where the metadata file's own header lacks it."""
    if source.partner is None or _match(column, _header(source.metadata, source.text)):
        return source.metadata
    return source.partner


def unpartnered(source: Source, ids: Iterable[str]) -> list[str]:
    """Those of `ids` that the pair's other CSV (`source.partner`) has no row for, sorted:
    read with the metadata's blank sex, age and site."""
    if source.partner is None:
        return []
    text = _csv_format(source.partner)
    column = _match(source.columns["id"], _header(source.partner, text))
    if column is None:
        return []
    partner = _read(source.partner, text, dtype=str, keep_default_na=False, usecols=[column])
    return sorted(set(ids) - set(partner[column].str.strip()))


def _duplicates_list(source: Source) -> Path | None:
    """ISIC 2020's duplicates list beside the metadata, when there."""
    return next(iter(sorted(source.metadata.parent.glob(DUPLICATES_PATTERN))), None)


def read_files(source: Source) -> tuple[Path, ...]:
    """Every file besides the images that reading `source` takes in: the metadata, the other CSV
    of its pair and ISIC 2020's duplicates list, when there (what a change to the source is)."""
    return tuple(path for path in (source.metadata, source.partner, _duplicates_list(source))
                 if path is not None)


def listed_duplicates(source: Source) -> tuple[list[tuple[str, str]], Path | None]:
    """The pairs of ids that ISIC 2020's duplicates list (beside the metadata) names as one
    image, and that file; none without one, a UserError when it cannot be read."""
    listed = _duplicates_list(source)
    if listed is None:
        return [], None
    frame = _read(listed, _csv_format(listed), dtype=str, keep_default_na=False)
    header = [str(name).strip() for name in frame.columns]
    columns = [_match(name, header) for name in DUPLICATES_COLUMNS]
    missing = [name for name, column in zip(DUPLICATES_COLUMNS, columns, strict=True)
               if column is None]
    if missing:
        raise UserError(f"{listed} has no column {' nor '.join(missing)} (its columns: "
                        f"{', '.join(map(_shown, header))}), where ISIC 2020's list pairs the "
                        f"ids of one image in {' and '.join(DUPLICATES_COLUMNS)}")
    frame.columns = header
    ids = [frame[column].str.strip().str.replace(_ID_SUFFIX, "", regex=True)
           .str.normalize("NFC") for column in columns]
    return [(a, b) for a, b in zip(*ids, strict=True) if a and b and a != b], listed


def described(source: Source, images: Iterable[str]) -> list[tuple[str, str]]:
    """Summary rows naming the metadata file and the folder the prepared `images` (paths)
    came from (the commonest first), else the first folder searched; both as absolute paths,
    as the images are recorded, whatever was typed."""
    folders = Counter(str(Path(path).parent) for path in images).most_common()
    first = folders[0][0] if folders else str(source.image_dirs[0]) if source.image_dirs else "none"
    more = f" (and {files.counted(len(folders) - 1, 'more folder')})" if len(folders) > 1 else ""
    return [("metadata", str(source.metadata.resolve())), ("images", first + more)]


def read_metadata(source: Source) -> pd.DataFrame:
    """The raw metadata table, ids as text; a UserError when the file cannot be parsed."""
    from medsynth_kohya.data import archive

    header = list(source.header)
    text = {name: str for name in (source.columns["id"], source.columns["patient_id"],
                                   _match("lesion_id", header)) if name}
    unnamed = {"header": None, "names": header} if source.headerless else {}
    frame = _read(source.metadata, source.text, dtype=text, low_memory=False,
                  decimal="," if source.text.separator == ";" else ".", keep_default_na=False,
                  na_values={name: list(PANDAS_MISSING) for name in header if name not in text},
                  **unnamed)
    frame.columns = [str(c).strip() for c in frame.columns]
    if source.headerless:
        frame = frame.assign(**{header[1]: _part3_label(frame[header[1]])})
    if source.partner is not None:
        frame = _merged(frame, source.partner, source.columns["id"])
    if source.kind in (ISIC2019, ISIC2018) and "diagnosis" not in frame:
        frame["diagnosis"] = archive.one_hot_diagnosis(frame)
    if source.kind in (ISIC2017, ISIC2016) and "diagnosis" not in frame:
        frame["diagnosis"] = archive.part3_diagnosis(frame)
    dx = _match("dx", list(frame.columns))
    if dx and not {"diagnosis", *(f"diagnosis_{i}" for i in range(1, 6))} & set(frame.columns):
        frame["diagnosis"] = archive.dx_diagnosis(frame[dx])
    frame = frame.assign(**{name: flags for name in frame.columns if name not in text
                            and (flags := _true_false(frame[name])) is not None})
    aliases = {name: _match(name, header) for name in _KNOWN if name not in header}
    if not any(aliases.get(name, name) in header for name in SLICE3D_LEVELS):
        aliases.update({name: _match(level, header) for name, level in SLICE3D_LEVELS.items()})
    read: pd.DataFrame = frame.assign(**{name: frame[column]
                                         for name, column in aliases.items() if column})
    full = _match(SLICE3D_FULL, header)
    if full and not {"diagnosis", *SLICE3D_LEVELS} & set(read.columns):
        read = read.assign(**_full_levels(read[full]))
    return read


def _full_levels(full: pd.Series) -> dict[str, pd.Series]:
    """ISIC 2024's `iddx_full` paths (`Malignant::…::Melanoma Invasive`) as `diagnosis_1..5`,
    so the selection, --diagnosis and --query read them as its `iddx_1..5`."""
    from medsynth_kohya.data import archive

    parts = full.astype("string").str.split(r"\s*:+\s*", regex=True, expand=True)
    parts = parts.reindex(columns=range(archive.LEVELS)).astype("string")
    return {f"diagnosis_{level + 1}": parts[level] for level in range(archive.LEVELS)}


def _slice3d(source: Source) -> bool:
    """Whether `source` is ISIC 2024's metadata: a train-metadata.csv, or any `iddx_` column."""
    return source.metadata.name.lower().startswith(SLICE3D_METADATA.removesuffix(".csv")) \
        or any(column.lower().startswith("iddx_") for column in source.header)


def _part3_label(label: pd.Series) -> pd.Series:
    """ISIC 2016's label as numbers: `malignant` 1.0 and `benign` 0.0 (its training set's words),
    as its test set writes them; another word is blank."""
    import pandas as pd

    words = label.astype("string").str.strip().str.lower()
    numbers: pd.Series = pd.to_numeric(words.map(lambda word: _PART3_LABELS.get(word, word)
                                                 if isinstance(word, str) else word),
                                       errors="coerce")
    return numbers


def _true_false(column: pd.Series) -> pd.Series | None:
    """A column of only true/false (any case) and blanks as pandas' nullable booleans, so a
    query can use it as a condition (a blank matches neither it nor its negation); else None.
    Only text columns are looked at: a numeric or boolean one is a condition as it is."""
    import pandas as pd

    from medsynth_kohya.data import archive

    if not (pd.api.types.is_object_dtype(column.dtype) or isinstance(column.dtype,
                                                                      pd.StringDtype)):
        return None
    words = {str(value).strip().lower() for value in column.dropna().unique()} - {""}
    if not words or not words <= archive.BOOLEANS.keys():
        return None
    return archive.booleans(column.astype("string").str.strip().str.lower())


GENERATED_SKIP = "generated image (image_manipulation = synthetic)"
"""Skip reason of a row describing a sampled image: a model must not train on its own output."""


def generated_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows whose `image_manipulation` is the Archive's `synthetic` (a sampled image merged
    into real metadata): never training data, or a model would learn its own output."""
    import pandas as pd

    generated: pd.Series = pd.Series(False, index=frame.index)
    if _MANIPULATION in frame.columns:
        values = frame[_MANIPULATION].astype("string").str.strip().str.lower()
        generated = values.eq(SYNTHETIC).fillna(False).astype(bool)
    return generated


def target_numbers(target: pd.Series) -> pd.Series:
    """ISIC 2020's target as numbers, True/False (as read_metadata reads true/false text too)
    as 1/0, anything else blank: what the default selection and its warning both go by."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(target.dtype):
        return target.astype("Float64").astype(float)
    numbers: pd.Series = pd.to_numeric(target, errors="coerce")
    return numbers


def default_selection(frame: pd.DataFrame, rows: pd.DataFrame, source: Source) -> pd.Series:
    """Melanomas: `target == 1` in ISIC 2020, else a diagnosis under the Archive's melanoma node."""
    from medsynth_kohya.data import archive

    if source.kind == ISIC2020 and "target" in frame.columns:
        return target_numbers(frame["target"]).eq(1)
    if not {"diagnosis", "diagnosis_3", "diagnosis_2"} & set(frame.columns):
        slice3d = _slice3d(source)
        level = SLICE3D_LEVELS if slice3d else {name: name for name in SLICE3D_LEVELS}
        missing = ("column target (or diagnosis)" if source.kind == ISIC2020 else
                   f"column {SLICE3D_FULL + ', ' if slice3d else ''}{level['diagnosis_2']} or "
                   f"{level['diagnosis_3']}" + (
                       f" ({level['diagnosis_1']} says only benign or malignant)"
                       if "diagnosis_1" in frame.columns else ""))
        raise UserError(f"{source.metadata} is missing {missing} to select melanomas; "
                        "add it or pass --query or --diagnosis")
    return archive.under(rows["diagnosis"], archive.MELANOMA)


def select(frame: pd.DataFrame, rows: pd.DataFrame, source: Source, query: str | None,
           diagnosis: str | None, everything: bool) -> pd.DataFrame:
    """Rows picked by `query` (a pandas expression over the raw columns) and `diagnosis` (any
    level of the Archive's hierarchy, matched on the normalised rows), else melanomas (else
    all rows, with `everything`)."""
    import pandas as pd

    from medsynth_kohya.data import archive

    mask = pd.Series(True, index=frame.index)
    if query is None and diagnosis is None and not everything:
        mask = default_selection(frame, rows, source)
    if diagnosis is not None:
        mask &= archive.under(rows["diagnosis"], archive.resolve_selection(diagnosis))
    if query is not None:
        mask &= evaluate(frame, query, example=query_example(source, list(frame.columns)))
    selected: pd.DataFrame = frame.loc[mask.fillna(False).astype(bool)]
    return selected


def query_example(source: Source, columns: Sequence[str]) -> str:
    """A --query on `source`'s metadata that names only its `columns`: its melanomas over 50,
    as far as it has the columns for them, else its first column's known values."""
    term = _MELANOMA_TERMS.get(source.kind)
    terms = [term] if term is not None and term.split()[0] in columns else []
    age = source.columns.get("age")
    if age is not None and age in columns:
        terms.append(f"{age if age.isidentifier() else f'`{age}`'} > 50")
    first = columns[0] if columns[0].isidentifier() else f"`{columns[0]}`"
    return " and ".join(terms) or f"{first}.notna()"


def queried(frame: pd.DataFrame, rows: pd.DataFrame, source: Source) -> pd.DataFrame:
    """`frame` as --query reads it: an age column holding text ('unknown', '85+', '70,0') is
    the whole years `normalise` read from it (`rows`; blank where none, as in the captions),
    so `age_approx > 50` compares numbers, not text."""
    import pandas as pd

    column = source.columns["age"]
    if column not in frame.columns or pd.api.types.is_numeric_dtype(frame[column]):
        return frame
    cleaned: pd.DataFrame = frame.assign(**{column: rows["age"]})
    return cleaned


def _text(series: pd.Series) -> pd.Series:
    """Strip text and turn the spellings of 'unknown' into missing values."""
    import pandas as pd

    text = series.astype("string").str.strip()
    cleaned: pd.Series = text.mask(text.str.lower().isin(_MISSING_TEXT), pd.NA)
    return cleaned


def normalise(frame: pd.DataFrame, source: Source) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical columns from either format, in the Archive's terms, and the values rejected.

    The second frame holds, under the source's column names, each value that is not an Archive
    term (blank in the first); `archive.rejections` words the warnings with `allowed_terms`.
    """
    import pandas as pd

    from medsynth_kohya.data import archive

    names = source.columns

    def column(name: str) -> pd.Series:
        if name in frame.columns:
            found: pd.Series = frame[name]
        else:
            found = pd.Series(pd.NA, index=frame.index, dtype="string")
        return found

    checked = {
        "age": _age(column(names["age"])),
        "sex": archive.terms(column(names["sex"]), archive.sex_terms(), _MISSING_TEXT, _SEX),
        "site": archive.terms(column(names["site"]), archive.site_terms(), _MISSING_TEXT,
                              archive.HAM_SITES),
        "diagnosis": archive.diagnosis_column(frame, _MISSING_TEXT),
        "fitzpatrick_skin_type": archive.fitzpatrick(column("fitzpatrick_skin_type"),
                                                     _MISSING_TEXT),
        "metadata_hairy": archive.flags(column("hairy"), _MISSING_TEXT),
        "marker_pen": archive.flags(column("marker_pen"), _MISSING_TEXT),
    }
    normalised: pd.DataFrame = pd.DataFrame({
        "id": column(names["id"]).astype("string").str.strip().fillna("")
              .str.replace(_ID_SUFFIX, "", regex=True).str.normalize("NFC"),
        "patient_id": _text(column(names["patient_id"])),
        **{name: value for name, (value, _) in checked.items()},
        IMAGE_TYPE: _text(column(IMAGE_TYPE)),
    }, index=frame.index)
    rejected = pd.DataFrame({_source_name(source, name): bad
                             for name, (_, bad) in checked.items()}, index=frame.index)
    return normalised, rejected


def _age(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Whole years from 0 to MAX_AGE - 1, and the values that are none (`90+`, `-5`, `abc`)."""
    import pandas as pd

    age = pd.to_numeric(raw, errors="coerce")
    age = age.where((age >= 0) & (age < MAX_AGE)).round()
    text = raw.astype("string").str.strip()
    given = text.notna() & ~text.str.lower().isin(_MISSING_TEXT)
    return age.astype("Int64"), text.where(given & age.isna()).astype("string")


def _source_name(source: Source, name: str) -> str:
    """The source column a normalised vocabulary column is read from."""
    return source.columns.get(name, {"metadata_hairy": "hairy"}.get(name, name))


def allowed_terms(source: Source) -> dict[str, tuple[str, ...]]:
    """The Archive's terms for each vocabulary column (by source name), as warnings list them."""
    from medsynth_kohya.data import archive

    flags = tuple(archive.BOOLEANS)
    terms = {"age": (f"a number of years from 0 to {MAX_AGE - 1}",),
             "sex": archive.sex_terms(), "site": archive.site_terms(),
             "diagnosis": archive.diagnoses(),
             "fitzpatrick_skin_type": archive.fitzpatrick_terms(),
             "metadata_hairy": flags, "marker_pen": flags}
    return {_source_name(source, name): values for name, values in terms.items()}


def blank_effects(source: Source, captioned: Iterable[str], hair_tags: bool) -> dict[str, str]:
    """What a value left blank in each column does (by source name): the caption clause of a
    field the template uses is dropped; the source's `hairy` tag, when `hair_tags` reads it,
    falls back to the detector. Other columns feed no caption."""
    effects = {_source_name(source, name): "its caption clause is dropped" for name in captioned}
    if hair_tags:
        effects[_source_name(source, "metadata_hairy")] = "the hair detector tags that image"
    return effects


def _layout(out: Path | None) -> set[Path]:
    """The folders of `out` (the folder being prepared) that prepare fills with links."""
    return set() if out is None else {out / TRAIN_ROOT, out / VAL_ROOT}


def _hidden(name: str) -> bool:
    """Whether a file or folder is no one's data: hidden (macOS's ._ AppleDouble files beside
    each photo copied to a non-Mac disk among them) or macOS's zip extras."""
    return name.startswith(".") or name == _MACOS_EXTRAS


def _real(path: Path) -> Path:
    """`path` resolved; a symlink loop on it (so no folder is there to search or skip) kept as
    its absolute path, as the search passes over other links that lead nowhere."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a symlink loop
        return path.absolute()


def _image_tree(root: Path, exclude: Path | None) -> tuple[Path, ...]:
    """`root`, then each folder below it that holds an image file, in sorted order; symlinked
    folders are followed (each real folder once), hidden ones (`_hidden`), `exclude` (and its
    layout, should `root` be `exclude` itself) and this tool's outputs (`tool_output`) are
    not; nor is the layout of `root` itself when prepare wrote into it (the images folder used
    as --out), or its links would be found as second copies of its images."""
    skip = _real(exclude) if exclude is not None else None
    found = [root]
    own = root.resolve() if tool_output(root) else None
    seen = {root.resolve(), *_layout(skip), *_layout(own)}
    for folder, names, filenames in os.walk(root, followlinks=True):
        here = Path(folder)
        kept = []
        for name in sorted(names):
            real = (here / name).resolve()
            if not _hidden(name) and real != skip and real not in seen \
                    and not tool_output(here / name):
                seen.add(real)
                kept.append(name)
        names[:] = kept
        if here != root and any(Path(n).suffix.lower() in IMAGE_SUFFIXES
                                and not _COMPANIONS.search(Path(n).stem) for n in filenames):
            found.append(here)
    return tuple(found)


def images_below(source: Source, exclude: Path | None) -> dict[str, Path]:
    """The image files in subfolders of the folders `source` searched alone (the metadata's own
    folder, where --images was not given), by NFC stem: where a missing id's file may lie."""
    searched = set(source.image_dirs)
    below = tuple(tree for folder in source.image_dirs
                  for tree in _image_tree(folder, exclude)[1:] if tree.resolve() not in searched)
    return index_images(below)


HIDDEN_SKIP = "only a hidden file (its name begins with a dot): rename it without the dot"
"""Skip reason of an id whose only image file is hidden, which the search passes over."""
HIDDEN_ID_SKIP = ("only a hidden file (its name begins with a dot), which is never read: "
                  "remove the dot from the file's name and the id")
"""Skip reason of an id that begins with a dot itself (`.x`, its file `.x.jpg` hidden)."""


def unusable_files(dirs: tuple[Path, ...]) -> dict[str, tuple[Path, str]]:
    """Files in `dirs` an id may name that prepare and evaluate cannot take, with why and how
    to fix it, by NFC stem, so a skipped id can say what it found: a format they do not take
    (OTHER_FORMATS), a symlink whose target is missing (a git-annex or DVC file not fetched),
    a folder or other non-file by an image's name, or a hidden image file (`.ID.jpg`, for
    ID and for `.ID`; macOS's `._ID.jpg` extras are no one's image)."""
    found: dict[str, tuple[Path, str]] = {}
    for folder in dirs:
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            stem = path.stem
            if suffix in IMAGE_SUFFIXES and stem.startswith(".") \
                    and not stem.startswith("._") and path.is_file():
                found.setdefault(unicodedata.normalize("NFC", stem), (path, HIDDEN_ID_SKIP))
                stem = stem.lstrip(".")
                reason = HIDDEN_SKIP
            elif suffix in OTHER_FORMATS:
                reason = f"only a {path.suffix} file: convert it to .jpg or .png"
            elif suffix in IMAGE_SUFFIXES and path.is_symlink() and not path.exists():
                reason = ("symlink to a missing file: fetch its target (git annex get, dvc "
                          "pull) or remove the link")
            elif suffix in IMAGE_SUFFIXES and not _hidden(path.name) and path.exists() \
                    and not path.is_file():
                reason = (f"only {_no_file(path)} where its image file should be (see source): "
                          "put the image file in its place")
            else:
                continue
            found.setdefault(unicodedata.normalize("NFC", stem), (path, reason))
    return found


def _no_file(path: Path) -> str:
    """What stands at `path` where an image file is wanted: a folder, a FIFO, something else."""
    if path.is_dir():
        return "a folder"
    return "a named pipe (FIFO)" if path.is_fifo() else "a socket or a device"


def index_images(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Map file stem (Unicode NFC, as ids are: macOS names files in NFD) to image path across
    `dirs` (the first folder wins a clash)."""
    return find_images(dirs)[0]


def find_images(dirs: tuple[Path, ...]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """`index_images`, and the other files of the ids found as different files, in the order
    found: two in one folder (X.jpg and X.png: the first by name is used) or in two folders
    (the first folder's is), unless only a later file's content is the format its extension
    says (`content_fits`)."""
    from medsynth_kohya.data.images import content_fits

    found: dict[str, Path] = {}
    others: dict[str, list[Path]] = {}
    for folder in dirs:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path.name) \
                    and not _COMPANIONS.search(path.stem) and path.is_file():
                stem = unicodedata.normalize("NFC", path.stem)
                first = found.setdefault(stem, path)
                if first != path and not first.samefile(path):
                    if not content_fits(first) and content_fits(path):
                        found[stem], path = path, first
                    others.setdefault(stem, []).append(path)
    return found, others


def clash_warnings(found: Mapping[str, Path], others: Mapping[str, Sequence[Path]]
                   ) -> list[str]:
    """Warnings naming the ids of `found` with other files (`find_images`), the file used and
    how to choose another: one for those in one folder, one for those in two."""
    clashes = [(stem, path) for stem, paths in others.items() for path in paths]
    beside = [(stem, path) for stem, path in clashes if found[stem].parent == path.parent]
    apart = [clash for clash in clashes if clash not in beside]
    warnings = []
    if beside:
        stem, other = beside[0]
        warnings.append(f"{files.counted(len(beside), 'image id')} "
                        f"{files.agreeing(len(beside), 'has')} two files in one folder; the "
                        "first by "
                        "name whose content fits its extension is used (e.g. "
                        f"{stem}: {found[stem].name}, not {other.name} in {other.parent}): "
                        f"remove or rename the {'file' if len(beside) == 1 else 'files'} not "
                        "to train on")
    if apart:
        stem, other = apart[0]
        warnings.append(f"{files.counted(len(apart), 'image id')} "
                        f"{files.agreeing(len(apart), 'has')} files in two folders; the first "
                        "folder's whose content fits its extension is used (e.g. "
                        f"{stem}: {found[stem]}, not {other}): remove the copies or pass "
                        "--images the one folder to use")
    return warnings
