"""Find and read ISIC metadata: the ISIC 2020 challenge CSV or an ISIC Archive export.

Both are normalised to one frame (`id, patient_id, sex, age, site`) next to the raw columns,
which `--query` expressions are written against.
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


def default_selection(frame: pd.DataFrame, source: Source) -> pd.Series:
    """Melanomas: target == 1 or diagnosis "melanoma" (ISIC 2020); diagnosis_3 "Melanoma…"."""
    import pandas as pd

    if source.kind == ISIC2020:
        if "target" in frame.columns:
            return pd.to_numeric(frame["target"], errors="coerce").eq(1)
        if "diagnosis" in frame.columns:
            return frame["diagnosis"].astype("string").str.strip().str.lower().eq("melanoma")
        raise UserError(f"{source.metadata} is missing column target (or diagnosis) "
                        "to select melanomas; add it or pass --query")
    if "diagnosis_3" in frame.columns:
        text = frame["diagnosis_3"].astype("string").str.strip()
        return text.str.startswith("Melanoma").fillna(False).astype(bool)
    if "diagnosis" in frame.columns:
        return frame["diagnosis"].astype("string").str.strip().str.lower().eq("melanoma")
    raise UserError(f"{source.metadata} is missing column diagnosis_3 to select melanomas; "
                    "add it or pass --query")


def select(frame: pd.DataFrame, source: Source, query: str | None) -> pd.DataFrame:
    """Rows picked by `query` (a pandas expression over the raw columns) or the melanoma default."""
    import pandas as pd

    if query is None:
        mask = default_selection(frame, source)
    else:
        try:
            evaluated = frame.eval(query, engine="python")
        except Exception as exc:  # pandas raises many types for a bad user expression
            raise UserError(f"--query {query!r} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(evaluated, pd.Series) or evaluated.dtype.kind != "b":
            raise UserError(f"--query {query!r} must give one True/False per row")
        mask = evaluated
    selected: pd.DataFrame = frame.loc[mask.fillna(False).astype(bool)]
    return selected


def _text(series: pd.Series) -> pd.Series:
    """Strip text and turn the spellings of 'unknown' into missing values."""
    import pandas as pd

    text = series.astype("string").str.strip()
    cleaned: pd.Series = text.mask(text.str.lower().isin(_MISSING_TEXT), pd.NA)
    return cleaned


def normalise(frame: pd.DataFrame, source: Source) -> pd.DataFrame:
    """Canonical columns id, patient_id, sex, age, site from either format."""
    import pandas as pd

    names = _COLUMNS[source.kind]

    def column(key: str) -> pd.Series:
        name = names[key]
        if name in frame.columns:
            found: pd.Series = frame[name]
        else:
            found = pd.Series(pd.NA, index=frame.index, dtype="string")
        return found

    sex = _text(column("sex")).str.lower()
    age = pd.to_numeric(column("age"), errors="coerce")
    age = age.where((age >= 0) & (age < 150)).round()
    normalised: pd.DataFrame = pd.DataFrame({
        "id": column("id").astype("string").str.strip().fillna(""),
        "patient_id": _text(column("patient_id")),
        "sex": sex.replace(_SEX),
        "age": age.astype("Int64"),
        "site": _text(column("site")).str.lower(),
    }, index=frame.index)
    return normalised


def index_images(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Map file stem to image path across `dirs` (the first folder wins a clash)."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found
