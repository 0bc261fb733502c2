"""The ISIC Archive's vocabularies, taken from its own `isic-metadata` package.

The one place that knows ISIC terms: sites (`anatom_site_general`), sex, the diagnosis
hierarchy (`diagnosis_1..5`), `fitzpatrick_skin_type` and the acquisition flags. Reading maps
both ISIC layouts onto the Archive's terms (keeping an ISIC 2020 challenge value that has no
Archive equivalent, `torso`), captions turn the terms into words, and `sample` writes rows that
the Archive's `MetadataRow` accepts. `isic_metadata` imports pydantic, so it is imported
inside the functions, never when the CLI starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING

from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

FIELDS_URL = ("https://github.com/ImageMarkup/isic-metadata/blob/main/isic_metadata/"
              "metadata.py")
"""The Archive's field definitions (`MetadataRow`), linked from the README's column tables."""
CHALLENGE_ONLY_SITES = ("torso",)
"""ISIC 2020 challenge sites with no single Archive term (the Archive splits the torso into
anterior, posterior and lateral): kept as the challenge wrote them."""
SITE_WORDS: Mapping[str, str] = {
    "head/neck": "head/neck",
    "upper extremity": "upper extremity",
    "lower extremity": "lower extremity",
    "anterior torso": "anterior torso",
    "posterior torso": "posterior torso",
    "lateral torso": "lateral torso",
    "palms/soles": "palms/soles",
    "oral/genital": "oral/genital",
    "torso": "torso",
}
"""Caption word of each site term. The words the ISIC 2020 challenge uses stay as they are, so
the original 2023 run's captions come out byte for byte; a term missing here is its own word."""
CHALLENGE_SITE = {"anterior torso": "torso", "posterior torso": "torso", "lateral torso": "torso"}
"""Archive site -> ISIC 2020 challenge site, where they differ (for `--metadata-style 2020`)."""
LEGACY_DIAGNOSES: Mapping[str, str] = {
    "melanoma": "Malignant melanocytic proliferations (Melanoma)",
    "melanoma metastasis": "Melanoma metastasis",
    "nevus": "Nevus",
    "nevus spilus": "Nevus, Spilus",
    "atypical melanocytic proliferation": "Indeterminate melanocytic proliferations",
    "AIMP": "Atypical intraepithelial melanocytic proliferation",
    "seborrheic keratosis": "Seborrheic keratosis",
    "pigmented benign keratosis": "Pigmented benign keratosis",
    "lichenoid keratosis": "Lichen planus like keratosis",
    "solar lentigo": "Solar lentigo",
    "lentigo simplex": "Lentigo simplex",
    "lentigo NOS": "Lentigo NOS",
    "cafe-au-lait macule": "Cafe au lait macule or patch",
    "ephelis": "Ephelis",
    "actinic keratosis": "Solar or actinic keratosis",
    "basal cell carcinoma": "Basal cell carcinoma",
    "dermatofibroma": "Dermatofibroma",
    "angiokeratoma": "Angiokeratoma",
    "pyogenic granuloma": "Pyogenic granuloma",
    "clear cell acanthoma": "Clear cell acanthoma",
    "sebaceous adenoma": "Sebaceous adenoma",
    "sebaceous hyperplasia": "Sebaceous hyperplasia",
    "epidermal nevus": "Epidermal nevus",
    "neurofibroma": "Neurofibroma",
    "scar": "Scar",
    "verruca": "Verruca",
    "squamous cell carcinoma": "Squamous cell carcinoma, NOS",
    "merkel cell carcinoma": "Merkel cell carcinoma",
    "atypical spitz tumor": "Atypical Spitz tumor",
    "vascular lesion": "Benign soft tissue proliferations - Vascular",
    "angioma": "Benign soft tissue proliferations - Vascular",
    "angiofibroma or fibrous papule": "Angiofibroma",
    "acrochordon": "Fibroepithelial polyp",
}
"""Legacy `diagnosis` values (ISIC 2020 CSV, old Archive exports) -> the Archive term they
certainly mean, at the deepest level they allow (a legacy "melanoma" does not say invasive or
in situ, so it maps to the melanoma node; "vascular lesion" is benign, as ISIC 2019's VASC).
Legacy terms not listed (adnexal tumor, mucosal melanosis, other) fall back to
`benign_malignant`."""
CLASSES_2019: Mapping[str, str] = {
    "MEL": "Malignant melanocytic proliferations (Melanoma)",
    "NV": "Nevus",
    "BCC": "Basal cell carcinoma",
    "AK": "Solar or actinic keratosis",
    "BKL": "Benign epidermal proliferations",
    "DF": "Dermatofibroma",
    "VASC": "Benign soft tissue proliferations - Vascular",
    "SCC": "Squamous cell carcinoma, NOS",
}
"""The ISIC 2019 challenge's ground-truth columns (one-hot: 1 marks a row's class) -> the
Archive node each certainly means; UNK means none."""
HAM_DX: Mapping[str, str] = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK",
                             "bkl": "BKL", "df": "DF", "vasc": "VASC"}
"""HAM10000's (ISIC 2018's) `dx` codes -> the ISIC 2019 class its images went to (ISIC 2019
took HAM10000 whole), whose node in CLASSES_2019 each is read as."""
ONE_HOT: Mapping[str, str] = {**{name: name for name in CLASSES_2019}, "AKIEC": "AK"}
"""The one-hot ground truths' columns (ISIC 2019's; ISIC 2018 Task 3's, the same but AKIEC,
actinic keratosis and intraepithelial carcinoma) -> the CLASSES_2019 class each is read as
(AKIEC as AK, like HAM10000's `akiec`)."""
PART3: Mapping[str, str] = {"melanoma": "Malignant melanocytic proliferations (Melanoma)",
                            "seborrheic_keratosis": "Seborrheic keratosis"}
"""The columns of ISIC 2017's Part 3 ground truth (1 marks a row's class; a row with neither is a
nevus) and of ISIC 2016's (melanoma alone, read so) -> the Archive node each means."""
HAM_SITES: Mapping[str, str] = {
    "back": "posterior torso", "chest": "anterior torso", "abdomen": "anterior torso",
    "trunk": "torso", "face": "head/neck", "scalp": "head/neck", "ear": "head/neck",
    "neck": "head/neck", "hand": "upper extremity", "foot": "lower extremity",
    "acral": "palms/soles", "genital": "oral/genital"}
"""HAM10000's `localization` words -> the Archive's `anatom_site_general` term each lies in
(`trunk`, which spans front and back, is the 2020 challenge's `torso`)."""
MELANOMA = "Malignant:Malignant melanocytic proliferations (Melanoma)"
"""The node every melanoma diagnosis sits under: prepare's default selection."""
LEVELS = 5
_BENIGN_MALIGNANT = {"benign": "Benign", "malignant": "Malignant",
                     "indeterminate": "Indeterminate"}
BOOLEANS = {"true": True, "false": False}
"""The words a flag is written as (lower case); `flags` also reads the others of _FLAG_WORDS."""
_FLAG_WORDS = {**dict.fromkeys(("true", "1", "yes", "y", "t", "1.0"), "true"),
               **dict.fromkeys(("false", "0", "no", "n", "f", "0.0"), "false")}
_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI"}


@cache
def site_terms() -> tuple[str, ...]:
    """Allowed sites: the Archive's `anatom_site_general` terms, then the challenge-only ones."""
    from isic_metadata.fields import AnatomSiteGeneralEnum

    return (*(member.value for member in AnatomSiteGeneralEnum), *CHALLENGE_ONLY_SITES)


@cache
def sex_terms() -> tuple[str, ...]:
    """The Archive's `sex` values, read from `MetadataRow`'s annotation."""
    from typing import get_args

    from isic_metadata.metadata import MetadataRow

    found: list[str] = []
    pending = [MetadataRow.model_fields["sex"].annotation]
    while pending:
        for arg in get_args(pending.pop()):
            if isinstance(arg, str):
                found.append(arg)
            else:
                pending.append(arg)
    return tuple(found)


@cache
def fitzpatrick_terms() -> tuple[str, ...]:
    """The Archive's `fitzpatrick_skin_type` values, I to VI."""
    from isic_metadata.fields import FitzpatrickSkinType

    return tuple(member.value for member in FitzpatrickSkinType)


@cache
def diagnoses() -> tuple[str, ...]:
    """Every node of the Archive's diagnosis hierarchy, as a colon-joined path."""
    from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

    return tuple(member.value for member in DiagnosisEnum)


@cache
def _by_last_level() -> dict[str, tuple[str, ...]]:
    """Lower-cased name of a hierarchy node -> the paths that end in it."""
    found: dict[str, list[str]] = {}
    for path in diagnoses():
        found.setdefault(path.rsplit(":", 1)[-1].lower(), []).append(path)
    return {name: tuple(paths) for name, paths in found.items()}


@cache
def _by_path() -> dict[str, str]:
    """Lower-cased hierarchy path -> the path as the Archive spells it."""
    return {path.lower(): path for path in diagnoses()}


def diagnosis_path(term: str) -> str | None:
    """The hierarchy path a term names, in any letter case and spacing around its colons: a
    whole path, any level's name, a legacy term, or an ISIC 2019/2018 class or HAM10000 `dx`
    code (MEL, nv, AKIEC…)."""
    text = ":".join(part.strip() for part in term.split(":"))
    if text.lower() in _by_path():
        return _by_path()[text.lower()]
    paths = _by_last_level().get(text.lower(), ())
    if len(paths) == 1:
        return paths[0]
    legacy = {key.lower(): value for key, value in LEGACY_DIAGNOSES.items()}.get(text.lower())
    if legacy:
        return diagnosis_path(legacy)
    codes = {**{code.lower(): name for code, name in ONE_HOT.items()}, **HAM_DX}
    code = codes.get(text.lower())
    return class_path(code) if code else None


def known_ancestor(value: str) -> str | None:
    """The deepest hierarchy node a diagnosis value names: the value itself, else its longest
    leading path that is a node (an unknown subtype stays under its known parent), else its
    deepest level that names one."""
    path = diagnosis_path(value)
    if path is not None:
        return path
    parts = [part.strip() for part in value.split(":")]
    for depth in range(len(parts) - 1, 0, -1):
        found = _by_path().get(":".join(parts[:depth]).lower())
        if found is not None:
            return found
    return next((found for part in reversed(parts) if (found := diagnosis_path(part))), None)


def levels(path: str | None) -> tuple[str | None, ...]:
    """`diagnosis_1..5` of a hierarchy path (None below its depth)."""
    names: list[str | None] = list(path.split(":")) if path else []
    return tuple(names + [None] * (LEVELS - len(names)))


def legacy_diagnosis(path: str | None) -> str | None:
    """The legacy (ISIC 2020) term closest above `path`: "melanoma" for any melanoma."""
    if not path:
        return None
    best: tuple[int, str | None] = (0, None)
    for legacy, term in LEGACY_DIAGNOSES.items():
        target = diagnosis_path(term)
        if target and (path == target or path.startswith(target + ":")):
            best = max(best, (len(target), legacy), key=lambda pair: pair[0])
    return best[1]


def _suggest(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def class_path(name: str) -> str | None:
    """The hierarchy path of ISIC 2019 class `name` (a CLASSES_2019 key: MEL, NV…)."""
    return diagnosis_path(CLASSES_2019[name])


def resolve_selection(term: str) -> str:
    """The hierarchy path `prepare --diagnosis TERM` selects (diagnosis_path's terms), or a
    UserError saying why not."""
    path = diagnosis_path(term)
    if path is None:
        names = {p.rsplit(":", 1)[-1] for p in diagnoses()} | set(LEGACY_DIAGNOSES)
        raise UserError(f"--diagnosis {term!r} is not an ISIC Archive diagnosis"
                        f"{_suggest(term, names)}; "
                        "give any level of the hierarchy, e.g. \"Melanoma Invasive\", "
                        "\"Malignant melanocytic proliferations (Melanoma)\" or \"Nevus\"")
    return path


def common_node(paths: pd.Series) -> str | None:
    """The deepest hierarchy node that every (non-blank) path is at or below, or None."""
    known = [str(path).split(":") for path in paths.dropna().unique()]
    if not known:
        return None
    shared: list[str] = []
    for names in zip(*known, strict=False):
        if len(set(names)) > 1:
            break
        shared.append(names[0])
    return ":".join(shared) or None


def under(paths: pd.Series, node: str) -> pd.Series:
    """Whether each path is `node` or below it (missing paths: False)."""
    text = paths.astype("string")
    mask = text.eq(node) | text.str.startswith(node + ":")
    return mask.fillna(False).astype(bool)


# --- reading: raw columns -> Archive terms -------------------------------------------------


def _text(series: pd.Series, missing: frozenset[str]) -> pd.Series:
    import pandas as pd

    text = series.astype("string").str.strip()
    cleaned: pd.Series = text.mask(text.str.lower().isin(missing), pd.NA)
    return cleaned


def _lookup(series: pd.Series, table: Mapping[str, str]) -> tuple[pd.Series, pd.Series]:
    """Map values through `table` (keys lower-case); return the mapped and the rejected values."""
    import pandas as pd

    key = series.str.lower()
    mapped = key.map(lambda value: table.get(value) if isinstance(value, str) else pd.NA)
    mapped = mapped.astype("string")
    rejected = series.where(series.notna() & mapped.isna())
    return mapped, rejected.astype("string")


def terms(series: pd.Series, allowed: Iterable[str], missing: frozenset[str],
          aliases: Mapping[str, str] | None = None) -> tuple[pd.Series, pd.Series]:
    """Text normalised to `allowed` (case-insensitively, or through `aliases`), plus the
    values that are not allowed (blank in the first series)."""
    table = {term.lower(): term for term in allowed}
    table.update({key.lower(): value for key, value in (aliases or {}).items()})
    return _lookup(_text(series, missing), table)


def flags(series: pd.Series, missing: frozenset[str]) -> tuple[pd.Series, pd.Series]:
    """An Archive boolean column (`hairy`, `marker_pen`) as true/false, plus unreadable values."""
    mapped, rejected = _lookup(_text(series, missing), _FLAG_WORDS)
    return booleans(mapped), rejected


def flag(text: str) -> bool | None:
    """One boolean cell as `flags` reads it (true/false, 1/0, yes/no, t/f, y/n, any case);
    None when blank or none of those words."""
    return BOOLEANS.get(_FLAG_WORDS.get(text.strip().lower(), ""))


def booleans(words: pd.Series) -> pd.Series:
    """Lower-case BOOLEANS words as pandas' nullable booleans (anything else blank)."""
    found: pd.Series = words.map(BOOLEANS).astype("boolean")
    return found


def fitzpatrick(series: pd.Series, missing: frozenset[str]) -> tuple[pd.Series, pd.Series]:
    """`fitzpatrick_skin_type` as I..VI (also read from 1..6 or "type II")."""
    text = _text(series, missing).str.replace(r"(?i)^(fitzpatrick\s+)?(type\s+)?", "",
                                              regex=True)
    text = text.str.replace(r"\.0$", "", regex=True)
    return terms(text, fitzpatrick_terms(), missing, _ROMAN)


def diagnosis_column(frame: pd.DataFrame, missing: frozenset[str]) -> tuple[pd.Series,
                                                                            pd.Series]:
    """The Archive hierarchy path of each row, plus the diagnosis values that are no node.

    From `diagnosis_1..5` (Archive exports) where present, else `diagnosis` (a path, a
    level's name or a legacy term), in any letter case; a value that is no node is read as its
    deepest known ancestor (`known_ancestor`), else `benign_malignant`'s top level.
    """
    import pandas as pd

    empty = pd.Series(pd.NA, index=frame.index, dtype="string")
    columns = [f"diagnosis_{i}" for i in range(1, LEVELS + 1) if f"diagnosis_{i}" in frame]
    if columns:
        parts = pd.concat([_text(frame[c], missing) for c in columns], axis=1)
        raw = parts.apply(lambda row: ":".join(str(v) for v in row if pd.notna(v)) or pd.NA,
                          axis=1).astype("string") if len(frame) else empty
    elif "diagnosis" in frame:
        raw = _text(frame["diagnosis"], missing)
    else:
        raw = empty
    table = {value: known_ancestor(value) for value in raw.dropna().unique()}
    unknown = {value for value in table if diagnosis_path(value) is None}
    paths = raw.map(lambda value: table.get(value) if isinstance(value, str) else pd.NA)
    paths = paths.astype("string")
    rejected = raw.where(raw.isin(unknown)).astype("string")
    if "benign_malignant" in frame:
        top, _ = terms(_text(frame["benign_malignant"], missing).str.split("/").str[0],
                       (), missing, _BENIGN_MALIGNANT)
        paths = paths.fillna(top)
    return paths, rejected


def dx_diagnosis(dx: pd.Series) -> pd.Series:
    """HAM10000's `dx` column as Archive paths (HAM_DX, any letter case); another value is
    kept as written, so it is read (or warned of) like any diagnosis."""
    paths = {code: class_path(name) for code, name in HAM_DX.items()}
    text = dx.astype("string").str.strip()
    read: pd.Series = text.str.lower().map(paths).astype("string").fillna(text)
    return read


def one_hot_diagnosis(frame: pd.DataFrame) -> pd.Series:
    """The Archive path of each row of a one-hot ground truth (ISIC 2019, ISIC 2018 Task 3): its
    class column's node (ONE_HOT), blank for UNK or no class."""
    return _marked(frame, {column: class_path(name) for column, name in ONE_HOT.items()})


def part3_diagnosis(frame: pd.DataFrame) -> pd.Series:
    """The Archive path of each row of ISIC 2017's or 2016's Part 3 ground truth: its class
    column's node (PART3), else, where its labels are given, 2017's third class (nevus) or
    2016's benign, which says no more; blank where a label is missing."""
    import pandas as pd

    present = [column for column in PART3 if column in frame]
    found = _marked(frame, {column: diagnosis_path(name) for column, name in PART3.items()})
    labelled = pd.concat([pd.to_numeric(frame[column], errors="coerce") for column in present],
                         axis=1).notna().all(axis=1)
    other = diagnosis_path("Nevus" if len(present) == len(PART3) else "Benign")
    return found.mask(found.isna() & labelled, other)


def _marked(frame: pd.DataFrame, paths: Mapping[str, str | None]) -> pd.Series:
    """The path of the first of `paths`' columns whose value is 1 in each row, else blank."""
    import pandas as pd

    found: pd.Series = pd.Series(pd.NA, index=frame.index, dtype="string")
    for column, path in paths.items():
        if column in frame:
            marked = pd.to_numeric(frame[column], errors="coerce").eq(1)
            found = found.mask(marked & found.isna(), path)
    return found


def rejections(rejected: pd.DataFrame, allowed: Mapping[str, Iterable[str]],
               blanked: Mapping[str, str]) -> list[str]:
    """One warning per column with values outside the Archive's vocabulary; `blanked` says,
    by column, what leaving its value blank does to the captions (nothing, if absent)."""
    warnings = []
    for column in rejected.columns:
        values = rejected[column].dropna()
        if values.empty:
            continue
        counts = values.value_counts()
        shown = ", ".join(f"{value!r} ({count} row{'s' if count > 1 else ''})"
                          for value, count in list(counts.items())[:5])
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        terms_ = list(allowed[column])
        listed = ", ".join(terms_) if len(terms_) <= 12 else (
            f"any level of the diagnosis hierarchy ({len(terms_)} nodes, "
            f"see {FIELDS_URL})")
        done = ("read as its deepest known level (a new subtype stays under its parent)"
                if column == "diagnosis" else
                "left blank" + (f" ({blanked[column]})" if column in blanked else ""))
        warnings.append(f"{column} {shown}{more} is not an ISIC Archive value; {done}. "
                        f"Allowed: {listed}")
    return warnings


# --- writing -----------------------------------------------------------------------------


class MetadataStyle(str, Enum):
    """The schema of `sample`'s metadata.csv."""

    archive = "archive"
    """ISIC Archive fields: every row is a valid `MetadataRow` (`age_approx` read as `age`)."""
    challenge = "2020"
    """The ISIC 2020 challenge CSV's columns, for users of that file."""


SYNTHETIC = "synthetic"
"""The Archive's `image_manipulation` value for a generated image."""
SCHEMA_COLUMNS = {
    MetadataStyle.archive: ("isic_id", "image_manipulation", "sex", "age_approx",
                            "anatom_site_general", "anatom_site_general_challenge",
                            *(f"diagnosis_{i}" for i in range(1, LEVELS + 1)), "hairy"),
    MetadataStyle.challenge: ("image_name", "sex", "age_approx",
                              "anatom_site_general_challenge", "diagnosis", "benign_malignant",
                              "target", "image_manipulation", "hairy"),
}
"""metadata.csv's schema columns per style (the id first); generation settings follow them.
In the Archive style, `anatom_site_general_challenge` holds only a challenge site the Archive
has no term for (`torso`), so no value is lost."""


def synthetic_cells(style: MetadataStyle, diagnosis: str | None, sex: str | None,
                    age: int | None, site: str | None, hairy: bool | None) -> tuple[object, ...]:
    """The schema cells after the id of one generated image, checked against `MetadataRow`
    in the Archive style (a value outside the vocabulary is left blank)."""
    sex = sex if sex in sex_terms() else None
    site = site if site in site_terms() else None
    if style is MetadataStyle.challenge:
        top = levels(diagnosis)[0]
        melanoma = None if diagnosis is None else int(diagnosis == MELANOMA
                                                      or diagnosis.startswith(MELANOMA + ":"))
        return (sex, age, None if site is None else CHALLENGE_SITE.get(site, site),
                legacy_diagnosis(diagnosis),
                top.lower() if top in ("Benign", "Malignant") else None, melanoma, SYNTHETIC,
                hairy)
    kept = site if site in CHALLENGE_ONLY_SITES else None
    cells = (SYNTHETIC, sex, age, None if kept else site, kept, *levels(diagnosis), hairy)
    names = ["age" if name == "age_approx" else name
             for name in SCHEMA_COLUMNS[MetadataStyle.archive][1:]]
    problem = validate_row(dict(zip(names, cells, strict=True)))
    if problem:
        raise UserError(f"a synthetic row fails the ISIC Archive schema ({problem}); "
                        "report this as a bug")
    return cells


def validate_row(row: Mapping[str, object]) -> str | None:
    """Why the Archive would refuse `row` (its field names, `age` not `age_approx`), or None:
    each field refused, its value and the start of what it should be."""
    from isic_metadata.metadata import MetadataRow
    from pydantic import ValidationError

    try:  # the constructor, not model_validate: MetadataRow sets up its checks in __init__
        MetadataRow(**{k: v for k, v in row.items() if v not in (None, "")})
    except ValidationError as exc:
        return "; ".join(
            (f"{'.'.join(str(p) for p in e['loc'])} {e['input']!r}" if e["loc"] else "row")
            + f": {_shortened(e['msg'])}" for e in exc.errors())
    return None


_SAID = 120
"""The characters of a schema error a message keeps: the Archive's diagnosis vocabulary, which
an error on a diagnosis lists whole, is about 39 kB."""


def _shortened(said: str) -> str:
    """`said` up to its last whole quoted value within _SAID characters, then ', …'."""
    if len(said) <= _SAID:
        return said
    cut = said.rfind("', '", 0, _SAID)
    return (said[:cut + 1] if cut > 0 else said[:_SAID]) + ", …"
