"""Find and read ISIC metadata: the ISIC 2020 challenge CSV or an ISIC Archive export.

Both are normalised to one frame in the ISIC Archive's terms (`id, patient_id, sex, age, site,
diagnosis, fitzpatrick_skin_type, metadata_hairy, marker_pen`; see `archive`) next to the raw
columns, which `--query` expressions are written against. Each field is read from its
layout's column unless `--column FIELD=COLUMN` names another; a column the run needs must be
present.
"""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.data.query import evaluate
from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

ISIC2020 = "isic2020"
ARCHIVE = "isic-archive"
OWN = "own"
"""Where data with neither layout's id column comes from: the user's own (`origin`)."""
LICENCE_COLUMNS = ("copyright_license", "attribution")
"""The columns of an ISIC Archive export that give each image's licence and credit."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Image files found, in any letter case."""
_ID_SUFFIX = re.compile("(" + "|".join(map(re.escape, IMAGE_SUFFIXES)) + ")$", re.IGNORECASE)
"""An image suffix on an id (`ISIC_4525317.jpg`), ignored when matching files."""
CHALLENGE_METADATA = "train.csv"
ARCHIVE_METADATA = "metadata.csv"
"""The metadata file of an ISIC 2020 challenge download and of an ISIC Archive export (not a
synthetic set's metadata.csv, which sampling/synthset.py owns)."""
_METADATA_PATTERNS = (CHALLENGE_METADATA, "ISIC_2020_Training_GroundTruth*.csv",
                      ARCHIVE_METADATA)
_COLUMNS = {
    ISIC2020: {"id": "image_name", "patient_id": "patient_id", "sex": "sex",
               "age": "age_approx", "site": "anatom_site_general_challenge"},
    ARCHIVE: {"id": "isic_id", "patient_id": "patient_id", "sex": "sex",
              "age": "age_approx", "site": "anatom_site_general"},
}
FIELDS = ("id", "patient_id", "sex", "age", "site")
"""Fields read from the metadata; `--column FIELD=COLUMN` maps any of them to another column."""
CAPTION_FIELDS = ("sex", "age", "site")
"""The fields a caption template may use; their columns are required when it does."""
_SELECTION_COLUMNS = {ISIC2020: ("target", "diagnosis"), ARCHIVE: ("diagnosis_3", "diagnosis")}
_MISSING_TEXT = frozenset({"", "nan", "none", "null", "na", "n/a", "unknown", "?"})
_SEX = {"m": "male", "f": "female", "man": "male", "woman": "female"}


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


def _find_metadata(root: Path) -> Path:
    """The metadata CSV under `root` (or one folder below it), by the names ISIC uses."""
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for pattern in _METADATA_PATTERNS:
            found = sorted(folder.glob(pattern))
            if found:
                return found[-1]
    raise UserError(f"no ISIC metadata found in {root}: expected train.csv, "
                    "ISIC_2020_Training_GroundTruth*.csv or metadata.csv; "
                    "pass --metadata CSV --images DIR")


def _separator(path: Path) -> str:
    """The CSV's field separator: "," unless its header line has none and has ";" (Excel's
    export where the decimal mark is a comma, read with that mark) or a tab."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            line = file.readline()
    except OSError:
        return ","
    return next((mark for mark in (";", "\t") if "," not in line and mark in line), ",")


def _header(path: Path) -> list[str]:
    """Column names of a CSV, or a UserError saying why it is unusable."""
    import pandas as pd

    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0, sep=_separator(path)).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read metadata {path}: {reason}") from None


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


def _closest(names: Sequence[str], header: Sequence[str]) -> list[str]:
    """Up to three columns of `header` like any of `names`: containing one, or spelled alike."""
    wanted = [name.lower() for name in names if len(name) >= 3]
    pool = {column.lower(): column for column in reversed(header) if len(column) >= 3}
    found = [column for low, column in pool.items()
             if any(name in low or low in name for name in wanted)]
    found += [pool[m] for name in wanted
              for m in difflib.get_close_matches(name, list(pool), n=3, cutoff=0.6)]
    return sorted(dict.fromkeys(found), key=header.index)[:3]


def _absent(metadata: Path, header: Sequence[str], wanted: Mapping[str, Sequence[str]],
            why: str, advice: str, taken: Iterable[str] = ()) -> UserError:
    """One line naming every absent column, what looks like it, and the --column that maps it.

    Columns in `taken` (read for other fields) are never offered.
    """
    free = [c if c.isprintable() else repr(c) for c in header if c not in set(taken)]
    parts, fixes = [], []
    for name, columns in wanted.items():
        closest = _closest([*columns, name], free)
        shown = (f"closest: {', '.join(closest)}" if closest else
                 "present: " + ", ".join(free[:8]) + (", …" if len(free) > 8 else ""))
        parts.append(f"{' or '.join(columns)} for {name} ({shown})")
        fixes.append(f"--column {name}={closest[0] if closest else 'COLUMN'}")
    return UserError(f"{metadata} has no column {'; nor '.join(parts)}, {why}; "
                     f"map {'it' if len(fixes) == 1 else 'them'} with {' '.join(fixes)}{advice}")


def _kind(metadata: Path, header: Sequence[str], columns: Mapping[str, str]) -> str:
    """ISIC 2020 or Archive, by the id column; with --column id=…, by the layout's other names."""
    if "image_name" in header:
        return ISIC2020
    if "isic_id" in header:
        return ARCHIVE
    if "id" in columns:
        def score(kind: str) -> int:
            names = (*_COLUMNS[kind].values(), *_SELECTION_COLUMNS[kind])
            return sum(name in header for name in names)
        return ISIC2020 if score(ISIC2020) > score(ARCHIVE) else ARCHIVE
    raise _absent(metadata, header, {"id": ("image_name", "isic_id")},
                  "which holds the image ids (ISIC 2020: image_name, ISIC Archive: isic_id)", "")


def origin(kind: str, columns: Mapping[str, str]) -> str:
    """Where a source of this layout `kind` with these --column mappings comes from: the ISIC
    2020 challenge or an ISIC Archive export when its ids are in the layout's own id column,
    else (`--column id=…`, e.g. HAM10000's image_id) the user's OWN data."""
    own_id = _COLUMNS.get(kind, {}).get("id")
    return kind if own_id is not None and columns.get("id", own_id) == own_id else OWN


def require(source: Source, fields: Iterable[str], why: str, advice: str = "") -> None:
    """Raise a UserError naming each of `fields` whose column the metadata file lacks."""
    missing = {name: (source.columns[name],) for name in fields
               if source.columns[name] not in source.header}
    if missing:
        taken = [column for name, column in source.columns.items() if name not in missing]
        raise _absent(source.metadata, source.header, missing, why, advice, taken)


def locate(source: Path | None, metadata: Path | None = None,
           images: Path | None = None, columns: Mapping[str, str] | None = None,
           exclude: Path | None = None) -> Source:
    """Resolve SOURCE (a folder or a CSV) or --metadata/--images into a `Source`.

    `columns` maps fields to other column names (`--column`); each one named must exist.
    `--images` is searched with its subfolders, except hidden ones and `exclude` (the
    folder being written, whose hard links must never be taken for sources).
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise UserError(f"--column {unknown[0]}=… is not a field; use one of {', '.join(FIELDS)}")
    if metadata is None:
        if source is None:
            raise UserError("give a SOURCE folder, or --metadata CSV and --images DIR")
        if not source.exists():
            raise UserError(f"source {source} does not exist")
        metadata = source if source.is_file() else _find_metadata(source)
    if not metadata.is_file():
        raise UserError(f"metadata file {metadata} does not exist")
    header = tuple(_header(metadata))
    kind = _kind(metadata, header, columns)
    located = Source(kind, metadata, (), {**_COLUMNS[kind], **columns}, header)
    require(located, columns, "named by --column")
    require(located, ["id"], "which holds the image ids")
    if images is not None:
        if not images.is_dir():
            raise UserError(f"images folder {images} does not exist")
        return replace(located, image_dirs=_image_tree(images.resolve(), exclude))
    here = metadata.parent
    roots = [here] if source is None or source.is_file() else [here, source]
    candidates = [d for r in roots for d in (r / "train", r / "jpeg" / "train", r / "images")]
    candidates += roots
    dirs: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in dirs:
            dirs.append(folder.resolve())
    return replace(located, image_dirs=tuple(dirs))


def read_metadata(source: Source) -> pd.DataFrame:
    """The raw metadata table, ids as text; a UserError when the file cannot be parsed."""
    import pandas as pd

    text = {source.columns["id"]: str, source.columns["patient_id"]: str, "lesion_id": str}
    try:
        separator = _separator(source.metadata)
        frame = pd.read_csv(source.metadata, dtype=text, low_memory=False, sep=separator,
                            decimal="," if separator == ";" else ".")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read metadata {source.metadata}: {reason}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def default_selection(frame: pd.DataFrame, rows: pd.DataFrame, source: Source) -> pd.Series:
    """Melanomas: `target == 1` in ISIC 2020, else a diagnosis under the Archive's melanoma node."""
    import pandas as pd

    from medsynth_kohya.data import archive

    if source.kind == ISIC2020 and "target" in frame.columns:
        return pd.to_numeric(frame["target"], errors="coerce").eq(1)
    if not {"diagnosis", "diagnosis_3", "diagnosis_2"} & set(frame.columns):
        missing = "target (or diagnosis)" if source.kind == ISIC2020 else "diagnosis_3"
        raise UserError(f"{source.metadata} is missing column {missing} to select melanomas; "
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
        mask &= evaluate(frame, query)
    selected: pd.DataFrame = frame.loc[mask.fillna(False).astype(bool)]
    return selected


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

    age = pd.to_numeric(column(names["age"]), errors="coerce")
    age = age.where((age >= 0) & (age < 150)).round()
    checked = {
        "sex": archive.terms(column(names["sex"]), archive.sex_terms(), _MISSING_TEXT, _SEX),
        "site": archive.terms(column(names["site"]), archive.site_terms(), _MISSING_TEXT),
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
        "age": age.astype("Int64"),
        **{name: value for name, (value, _) in checked.items()},
    }, index=frame.index)
    rejected = pd.DataFrame({_source_name(source, name): bad
                             for name, (_, bad) in checked.items()}, index=frame.index)
    return normalised, rejected


def _source_name(source: Source, name: str) -> str:
    """The source column a normalised vocabulary column is read from."""
    return source.columns.get(name, {"metadata_hairy": "hairy"}.get(name, name))


def allowed_terms(source: Source) -> dict[str, tuple[str, ...]]:
    """The Archive's terms for each vocabulary column (by source name), as warnings list them."""
    from medsynth_kohya.data import archive

    flags = ("true", "false")
    terms = {"sex": archive.sex_terms(), "site": archive.site_terms(),
             "diagnosis": archive.diagnoses(),
             "fitzpatrick_skin_type": archive.fitzpatrick_terms(),
             "metadata_hairy": flags, "marker_pen": flags}
    return {_source_name(source, name): values for name, values in terms.items()}


def _image_tree(root: Path, exclude: Path | None) -> tuple[Path, ...]:
    """`root`, then each folder below it that holds an image file, in sorted order."""
    skip = exclude.resolve() if exclude is not None else None
    found = [root]
    for folder, names, filenames in os.walk(root):
        here = Path(folder)
        names[:] = sorted(n for n in names if not n.startswith(".") and here / n != skip)
        if here != root and any(Path(n).suffix.lower() in IMAGE_SUFFIXES for n in filenames):
            found.append(here)
    return tuple(found)


def index_images(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Map file stem (Unicode NFC, as ids are: macOS names files in NFD) to image path across
    `dirs` (the first folder wins a clash)."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.setdefault(unicodedata.normalize("NFC", path.stem), path)
    return found
