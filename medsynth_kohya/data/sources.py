"""Find and read ISIC metadata: the ISIC 2020 challenge CSV or an ISIC Archive export.

Both are normalised to one frame in the ISIC Archive's terms (`id, patient_id, sex, age, site,
diagnosis, fitzpatrick_skin_type, metadata_hairy, marker_pen`; see `archive`) next to the raw
columns, which `--query` expressions are written against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

ISIC2020 = "isic2020"
ARCHIVE = "isic-archive"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Image files found, in any letter case."""
_METADATA_PATTERNS = ("train.csv", "ISIC_2020_Training_GroundTruth*.csv", "metadata.csv")
_COLUMNS = {
    ISIC2020: {"id": "image_name", "patient_id": "patient_id", "sex": "sex",
               "age": "age_approx", "site": "anatom_site_general_challenge"},
    ARCHIVE: {"id": "isic_id", "patient_id": "patient_id", "sex": "sex",
              "age": "age_approx", "site": "anatom_site_general"},
}
_REQUIRED = {
    ISIC2020: ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"),
    ARCHIVE: ("isic_id",),
}
_MISSING_TEXT = frozenset({"", "nan", "none", "null", "na", "n/a", "unknown", "?"})
_SEX = {"m": "male", "f": "female", "man": "male", "woman": "female"}


@dataclass(frozen=True)
class Source:
    """Where a data set's metadata and images are, and which format it is."""

    kind: str
    metadata: Path
    image_dirs: tuple[Path, ...]


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


def _header(path: Path) -> list[str]:
    """Column names of a CSV, or a UserError saying why it is unusable."""
    import pandas as pd

    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read metadata {path}: {reason}") from None


def locate(source: Path | None, metadata: Path | None = None,
           images: Path | None = None) -> Source:
    """Resolve SOURCE (a folder or a CSV) or --metadata/--images into a `Source`."""
    if metadata is None:
        if source is None:
            raise UserError("give a SOURCE folder, or --metadata CSV and --images DIR")
        if not source.exists():
            raise UserError(f"source {source} does not exist")
        metadata = source if source.is_file() else _find_metadata(source)
    if not metadata.is_file():
        raise UserError(f"metadata file {metadata} does not exist")
    columns = _header(metadata)
    if "image_name" in columns:
        kind = ISIC2020
    elif "isic_id" in columns:
        kind = ARCHIVE
    else:
        raise UserError(f"{metadata} is missing column image_name (ISIC 2020) "
                        "or isic_id (ISIC Archive)")
    for column in _REQUIRED[kind]:
        if column not in columns:
            raise UserError(f"{metadata} is missing required column {column}")
    if images is not None:
        if not images.is_dir():
            raise UserError(f"images folder {images} does not exist")
        return Source(kind, metadata, (images,))
    here = metadata.parent
    roots = [here] if source is None or source.is_file() else [here, source]
    candidates = [d for r in roots for d in (r / "train", r / "jpeg" / "train", r / "images")]
    candidates += roots
    dirs: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in {d.resolve() for d in dirs}:
            dirs.append(folder)
    return Source(kind, metadata, tuple(dirs))


def read_metadata(source: Source) -> pd.DataFrame:
    """The raw metadata table, ids as text; a UserError when the file cannot be parsed."""
    import pandas as pd

    id_column = _COLUMNS[source.kind]["id"]
    try:
        frame = pd.read_csv(source.metadata, dtype={id_column: str, "patient_id": str,
                                                    "lesion_id": str}, low_memory=False)
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
           diagnosis: str | None = None) -> pd.DataFrame:
    """Rows picked by `query` (a pandas expression over the raw columns) and `diagnosis` (any
    level of the Archive's hierarchy, matched on the normalised rows), else melanomas."""
    import pandas as pd

    from medsynth_kohya.data import archive

    mask = pd.Series(True, index=frame.index)
    if query is None and diagnosis is None:
        mask = default_selection(frame, rows, source)
    if diagnosis is not None:
        mask &= archive.under(rows["diagnosis"], archive.resolve_selection(diagnosis))
    if query is not None:
        try:
            evaluated = frame.eval(query, engine="python")
        except Exception as exc:  # pandas raises many types for a bad user expression
            raise UserError(f"--query {query!r} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(evaluated, pd.Series) or evaluated.dtype.kind != "b":
            raise UserError(f"--query {query!r} must give one True/False per row")
        mask &= evaluated.fillna(False).astype(bool)
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

    names = _COLUMNS[source.kind]

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
        "id": column(names["id"]).astype("string").str.strip().fillna(""),
        "patient_id": _text(column(names["patient_id"])),
        "age": age.astype("Int64"),
        **{name: value for name, (value, _) in checked.items()},
    }, index=frame.index)
    rejected = pd.DataFrame({_source_name(source, name): bad
                             for name, (_, bad) in checked.items()}, index=frame.index)
    return normalised, rejected


def _source_name(source: Source, name: str) -> str:
    """The source column a normalised vocabulary column is read from."""
    return _COLUMNS[source.kind].get(name, {"metadata_hairy": "hairy"}.get(name, name))


def allowed_terms(source: Source) -> dict[str, tuple[str, ...]]:
    """The Archive's terms for each vocabulary column (by source name), as warnings list them."""
    from medsynth_kohya.data import archive

    flags = ("true", "false")
    terms = {"sex": archive.sex_terms(), "site": archive.site_terms(),
             "diagnosis": archive.diagnoses(),
             "fitzpatrick_skin_type": archive.fitzpatrick_terms(),
             "metadata_hairy": flags, "marker_pen": flags}
    return {_source_name(source, name): values for name, values in terms.items()}


def index_images(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Map file stem to image path across `dirs` (the first folder wins a clash)."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found
