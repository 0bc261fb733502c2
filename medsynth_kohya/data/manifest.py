"""The manifest: one row per prepared image, the single source of captions and layout.

Schema of `OUT/manifest.csv`, in column order. Vocabulary columns hold the ISIC Archive's terms
(`archive`, through `isic-metadata`), whichever ISIC layout they were read from.

| column         | type              | meaning                                                |
|----------------|-------------------|--------------------------------------------------------|
| id             | text              | ISIC id (image_name / isic_id); also the file stem     |
| source         | text              | absolute path of the source image (never modified)     |
| patient_id     | text, blank       | patient, for the patient-level validation split        |
| sex            | text, blank       | Archive `sex`: "male" / "female"                       |
| age            | integer, blank    | approximate age in years (`age_approx`)                |
| site           | text, blank       | Archive `anatom_site_general`; ISIC 2020's "torso" kept |
| diagnosis      | text, blank       | Archive `diagnosis_1..5`, joined by ":"                |
| fitzpatrick_skin_type | text, blank | Archive skin type, I to VI                           |
| hairy          | true/false        | the caption's hair tag (see `--hair`)                  |
| hair_score     | number, blank     | the detector's score (blank with `--hair off`)         |
| ita            | number, blank     | skin's Individual Typology Angle, degrees (`measure`)  |
| skin_tone      | text, blank       | ITA category: very light ... intermediate ... dark     |
| vignette       | true/false, blank | dark corners of a contact dermoscope's round field     |
| ruler          | true/false, blank | ruler graduations or a scale bar in the photo          |
| bubbles        | true/false, blank | gel or air bubbles under the dermoscope's glass        |
| metadata_hairy | true/false, blank | the source's own Archive `hairy` tag                   |
| marker_pen     | true/false, blank | the source's Archive `marker_pen` flag                 |
| image_type     | text, blank       | the source's Archive `image_type` ("dermoscopic", ...) |
| caption        | text              | the caption written to `<id>.txt`                      |
| width          | integer           | image width in pixels                                  |
| height         | integer           | image height in pixels                                 |
| split          | text              | "train" (under img/) or "val" (under val/)             |
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.errors import UserError
from medsynth_kohya.files import replacing

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("id", "source", "patient_id", "sex", "age", "site", "diagnosis",
           "fitzpatrick_skin_type", "hairy", "hair_score", "ita", "skin_tone", "vignette",
           "ruler", "bubbles", "metadata_hairy", "marker_pen", "image_type",
           "caption", "width", "height", "split")
DTYPES = {"id": "string", "source": "string", "patient_id": "string", "sex": "string",
          "age": "Int64", "site": "string", "diagnosis": "string",
          "fitzpatrick_skin_type": "string", "hairy": "bool", "hair_score": "Float64",
          "ita": "Float64", "skin_tone": "string", "vignette": "boolean", "ruler": "boolean",
          "bubbles": "boolean",
          "metadata_hairy": "boolean", "marker_pen": "boolean", "image_type": "string",
          "caption": "string", "width": "int64", "height": "int64", "split": "string"}
OPTIONAL = ("diagnosis", "fitzpatrick_skin_type", "metadata_hairy", "marker_pen", "ita",
            "skin_tone", "vignette", "ruler", "bubbles", "image_type")
"""Columns a manifest written before them lacks: read as blank."""
QUERY_EXAMPLE = 'sex == "female" and age > 50'
"""A --query on a manifest's columns (sample --like), shown where one is broken."""
SKIPPED_COLUMNS = ("id", "source", "reason")
_MISSING = ("", "NA", "N/A", "NaN", "nan", "<NA>", "null", "None")
"""A missing number or flag as a manifest may spell it. A text column is missing only when
blank: an id (a file stem of the user's own data) may be `NA`, `null` or `None`."""


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The manifest columns, in order, with the schema's types (OPTIONAL ones blank if absent)."""
    absent = [column for column in OPTIONAL if column not in frame.columns]
    if absent:
        frame = frame.assign(**dict.fromkeys(absent, None))
    conformed: pd.DataFrame = frame.loc[:, list(COLUMNS)].astype(DTYPES).reset_index(drop=True)
    return conformed


def write(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically, so a crash never leaves half a manifest behind; true/false columns
    as `true`/`false` (the schema's spelling), a missing one blank."""
    from pandas.api.types import is_bool_dtype

    flags = {column: frame[column].map({True: "true", False: "false"})
             for column in frame.columns if is_bool_dtype(frame[column])}
    with replacing(path) as temporary:
        frame.assign(**flags).to_csv(temporary, index=False)


def read(path: Path) -> pd.DataFrame:
    """Read a manifest written by `write`, restoring the schema's types; a missing, unreadable
    or foreign file is one UserError saying which and how to get a good one."""
    return _read(path, None)


def read_hashed(path: Path) -> tuple[pd.DataFrame, str]:
    """`read`, and the sha256 of the bytes it parsed: the file is read once, so the digest is
    the table's even when prepare replaces the file meanwhile."""
    digest = hashlib.sha256()
    return _read(path, digest), digest.hexdigest()


def _read(path: Path, digest: hashlib._Hash | None) -> pd.DataFrame:
    """`read`, parsing the file's bytes held in memory and fed to `digest` when one is given."""
    import pandas as pd

    again = "run `medsynth-kohya prepare` to write it again"
    try:
        content: Path | io.BytesIO = path
        if digest is not None:
            data = path.read_bytes()
            digest.update(data)
            content = io.BytesIO(data)
        frame = pd.read_csv(content, dtype={"id": str, "patient_id": str}, keep_default_na=False,
                            na_values={column: [""] if kind == "string" else list(_MISSING)
                                       for column, kind in DTYPES.items()})
    except FileNotFoundError:
        raise UserError(f"manifest {path} does not exist; {again}") from None
    except (OSError, ValueError) as exc:  # pandas' parser and empty-file errors are ValueErrors
        raise UserError(f"manifest {path} cannot be read ({_first_line(exc)}); {again}") from None
    missing = [column for column in COLUMNS if column not in (*frame.columns, *OPTIONAL)]
    if {"id", "caption"} <= set(missing):  # another CSV, an ISIC download's metadata say
        raise UserError(f"{path} is not a manifest written by prepare (no column id or "
                        "caption): give the manifest.csv that prepare wrote, or "
                        f"{again}")
    if missing:
        raise UserError(f"{path} is not a manifest written by prepare (no column "
                        f"{', '.join(missing)}); {again}")
    try:
        return conform(frame)
    except (ValueError, TypeError) as exc:
        raise UserError(f"manifest {path} holds a value its column cannot take "
                        f"({_first_line(exc)}); {again}") from None


def vocabularies() -> dict[str, tuple[str, ...]]:
    """The values prepare writes in each text column a caption is made from."""
    from medsynth_kohya.data import archive
    from medsynth_kohya.data.measure import TONES

    return {"sex": archive.sex_terms(), "site": archive.site_terms(),
            "skin_tone": tuple(name for name, _ in TONES)}


def value_problem(frame: pd.DataFrame) -> str | None:
    """The first sex, site, skin tone or age in `frame` that prepare could not have written
    (a hand-edited or foreign manifest), said with its row's id and what is allowed; None if
    every value is one."""
    from medsynth_kohya.data.sources import MAX_AGE

    for column, allowed in vocabularies().items():
        values = frame[column].dropna()
        bad = values[~values.isin(allowed)]
        if len(bad):
            return (f"{column} {bad.iloc[0]!r} (id {frame['id'][bad.index[0]]}) is none of "
                    f"{', '.join(allowed)}")
    ages = frame["age"].dropna()
    bad = ages[(ages < 0) | (ages >= MAX_AGE)]
    if len(bad):
        return (f"age {bad.iloc[0]} (id {frame['id'][bad.index[0]]}) is not a number of years "
                f"from 0 to {MAX_AGE - 1}")
    return None


def _first_line(exc: Exception) -> str:
    """The first non-blank line of an exception's message (pandas' often span several)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)

