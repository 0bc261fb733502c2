"""How a user's metadata is read onto the ISIC Archive's terms, function by function: the rules
the end-to-end tests in test_archive.py reach only through whole prepare runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import archive as vocab
from medsynth_kohya.data import manifest
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke

MISSING = frozenset({"", "nan", "unknown"})
MELANOCYTIC = "Benign:Benign melanocytic proliferations"
NEVUS = f"{MELANOCYTIC}:Nevus"
INVASIVE = f"{vocab.MELANOMA}:Melanoma Invasive"
METASTASIS = f"{vocab.MELANOMA}:Melanoma metastasis"
SPILUS = f"{NEVUS}:Nevus, Spilus"


def _listed(series: pd.Series) -> list[object]:
    """The values of `series`, blanks as None."""
    return [None if pd.isna(value) else value for value in series.tolist()]


def test_the_vocabularies_come_from_the_archive_package() -> None:
    assert vocab.sex_terms() == ("male", "female")
    assert vocab.fitzpatrick_terms() == ("I", "II", "III", "IV", "V", "VI")
    assert vocab.site_terms()[-1] == "torso" and "anterior torso" in vocab.site_terms()
    assert vocab.MELANOMA in vocab.diagnoses() and NEVUS in vocab.diagnoses()


@pytest.mark.parametrize(("term", "path"), [
    (f"  {NEVUS.upper()} ", NEVUS), (" nevus ", NEVUS), ("Nevus, Spilus", SPILUS),
    ("nevus spilus", SPILUS), ("Melanoma Metastasis", METASTASIS), ("AIMP", vocab.diagnosis_path(
        "Atypical intraepithelial melanocytic proliferation")),
    (f"{MELANOCYTIC.replace(':', ' : ')}: Nevus ", NEVUS), ("no such lesion", None), ("", None)])
def test_a_term_names_its_node_whole_by_level_or_as_a_legacy_word(term: str,
                                                                   path: str | None) -> None:
    assert vocab.diagnosis_path(term) == path


@pytest.mark.parametrize(("value", "node"), [
    (f"{vocab.MELANOMA}:Melanoma, brand new kind", vocab.MELANOMA),
    (f"{INVASIVE}:New : Newer", INVASIVE),
    (" Malignant : Something unheard of ", "Malignant"),
    ("Unknown top:Nevus", NEVUS),
    ("Unknown top:Malignant:Nevus:Unheard", NEVUS),
    ("nevus", NEVUS), ("Unknown top:Unheard", None)])
def test_an_unknown_subtype_reads_as_its_deepest_known_node(value: str, node: str | None) -> None:
    assert vocab.known_ancestor(value) == node


def test_levels_fill_the_five_diagnosis_columns() -> None:
    assert vocab.levels(INVASIVE) == ("Malignant", "Malignant melanocytic proliferations "
                                      "(Melanoma)", "Melanoma Invasive", None, None)
    assert vocab.levels(None) == (None,) * vocab.LEVELS == vocab.levels("")


@pytest.mark.parametrize(("path", "legacy"), [
    (INVASIVE, "melanoma"), (vocab.MELANOMA, "melanoma"), (METASTASIS, "melanoma metastasis"),
    (SPILUS, "nevus spilus"), (f"{NEVUS}:Nevus, Acral", "nevus"), (NEVUS, "nevus"),
    (MELANOCYTIC, None), ("Malignant", None), (None, None), ("", None)])
def test_the_closest_legacy_term_above_a_node(path: str | None, legacy: str | None) -> None:
    assert vocab.legacy_diagnosis(path) == legacy


def test_a_legacy_term_is_matched_at_a_level_boundary_only() -> None:
    """A node whose name merely starts with a legacy node's name is not below it."""
    assert vocab.legacy_diagnosis(f"{NEVUS}x") is None


@pytest.mark.parametrize(("term", "path"), [
    (" mel ", vocab.MELANOMA), ("MEL", vocab.MELANOMA), ("Nv", NEVUS), ("akiec",
     vocab.class_path("AK")), ("vasc", vocab.class_path("VASC")),
    ("SCC", vocab.diagnosis_path("Squamous cell carcinoma, NOS")),
    ("Melanoma Invasive", INVASIVE)])
def test_a_class_code_or_any_level_selects(term: str, path: str) -> None:
    assert path is not None and vocab.resolve_selection(term) == path


def test_an_unknown_selection_names_up_to_three_close_terms_and_how_to_fix_it() -> None:
    with pytest.raises(UserError) as caught:
        vocab.resolve_selection("Nevus spilu")
    message = str(caught.value)
    assert message.startswith("--diagnosis 'Nevus spilu' is not an ISIC Archive diagnosis "
                              "(did you mean ")
    suggested = ast.literal_eval(f"[{message.split('(did you mean ')[1].split('?)')[0]}]")
    names = {path.rsplit(":", 1)[-1] for path in vocab.diagnoses()} | set(vocab.LEGACY_DIAGNOSES)
    assert len(suggested) == 3 and set(suggested) <= names and "Nevus, Spilus" in suggested
    assert message.endswith('give any level of the hierarchy, e.g. "Melanoma Invasive", '
                            '"Malignant melanocytic proliferations (Melanoma)" or "Nevus"')
    with pytest.raises(UserError) as far:
        vocab.resolve_selection("qqqqqqqqqqqq")
    assert "did you mean" not in str(far.value)
    assert str(far.value).startswith("--diagnosis 'qqqqqqqqqqqq' is not an ISIC Archive "
                                     "diagnosis; give any level")


@pytest.mark.parametrize(("paths", "node"), [
    ([INVASIVE, f"{vocab.MELANOMA}:Melanoma in situ", None], vocab.MELANOMA),
    ([INVASIVE, INVASIVE], INVASIVE), ([vocab.MELANOMA, INVASIVE], vocab.MELANOMA),
    ([INVASIVE, vocab.MELANOMA], vocab.MELANOMA),
    ([INVASIVE, NEVUS], None), ([INVASIVE, "Malignant:Other"], "Malignant"),
    ([None, None], None), ([], None)])
def test_the_common_node_is_the_deepest_every_path_shares(paths: list[str | None],
                                                          node: str | None) -> None:
    assert vocab.common_node(pd.Series(paths, dtype="string")) == node


def test_under_is_a_node_or_below_it_never_a_sibling_with_a_longer_name() -> None:
    paths = pd.Series(["A:B", "A:B:C", "A:BC", "A", None, "X:A:B"], dtype="string")
    found = vocab.under(paths, "A:B")
    assert found.tolist() == [True, True, False, False, False, False]
    assert found.dtype == bool


def test_terms_read_in_any_case_or_through_aliases_and_name_the_rest() -> None:
    raw = pd.Series([" Male", "FEMALE", "m", "Unknown", None, "other ", "nan"])
    read, rejected = vocab.terms(raw, ("male", "female"), MISSING, {"M": "male"})
    assert _listed(read) == ["male", "female", "male", None, None, None, None]
    assert _listed(rejected) == [None, None, None, None, None, "other", None]
    assert str(read.dtype) == str(rejected.dtype) == "string"


def test_flags_read_every_word_and_keep_the_unreadable() -> None:
    raw = pd.Series(["TRUE", "1", "yes", "Y", "t", "1.0", "false", "0", "No", "n", "F", "0.0",
                     "unknown", None, "perhaps"])
    read, rejected = vocab.flags(raw, MISSING)
    assert _listed(read) == [True] * 6 + [False] * 6 + [None, None, None]
    assert str(read.dtype) == "boolean"
    assert _listed(rejected) == [None] * 14 + ["perhaps"]


@pytest.mark.parametrize(("raw", "read"), [
    ("II", "II"), ("ii", "II"), ("2", "II"), ("2.0", "II"), ("type 3", "III"),
    ("Fitzpatrick Type IV", "IV"), ("fitzpatrick  v", "V"), ("6", "VI"), (" 1 ", "I"),
    ("unknown", None)])
def test_fitzpatrick_reads_numbers_and_type_words(raw: str, read: str | None) -> None:
    found, rejected = vocab.fitzpatrick(pd.Series([raw]), MISSING)
    assert _listed(found) == [read] and rejected.isna().all()


@pytest.mark.parametrize("raw", ["7", "VII", "2.5", "type", "20"])
def test_fitzpatrick_outside_one_to_six_is_rejected(raw: str) -> None:
    found, rejected = vocab.fitzpatrick(pd.Series([raw]), MISSING)
    assert found.isna().all() and rejected.notna().all()


def test_diagnosis_levels_are_joined_skipping_blanks_and_read_case_blind() -> None:
    frame = pd.DataFrame({
        "diagnosis_1": ["malignant", "Benign", "Benign", None, "Malignant"],
        "diagnosis_2": ["Malignant melanocytic proliferations (Melanoma)",
                        "Benign melanocytic proliferations", "unknown", None,
                        "Malignant melanocytic proliferations (Melanoma)"],
        "diagnosis_3": ["Melanoma Invasive", "Nevus", None, None, "Brand new"],
        "diagnosis": ["Nevus", "Nevus", "Nevus", "Nevus", "Nevus"]})
    paths, rejected = vocab.diagnosis_column(frame, MISSING)
    assert _listed(paths) == [INVASIVE, NEVUS, "Benign", None, vocab.MELANOMA]
    assert _listed(rejected) == [None, None, None, None, f"{vocab.MELANOMA}:Brand new"]
    assert str(paths.dtype) == str(rejected.dtype) == "string"


def test_a_path_written_with_spaces_after_its_colons_is_the_node_it_names() -> None:
    """A hand-typed `Benign: Benign melanocytic proliferations: Nevus` is a nevus, neither its
    parent nor a value to warn of."""
    spaced = NEVUS.replace(":", ": ")
    paths, rejected = vocab.diagnosis_column(pd.DataFrame({"diagnosis": [spaced]}), MISSING)
    assert _listed(paths) == [NEVUS] and _listed(rejected) == [None]
    assert vocab.resolve_selection(spaced) == NEVUS


def test_diagnosis_selects_paths_written_with_spaces_through_the_cli(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    frame = pd.read_csv(isic2020.metadata, dtype=str)
    nevi = list(frame["image_name"][::2])
    frame.loc[frame["image_name"].isin(nevi), "diagnosis"] = NEVUS.replace(":", ": ")
    frame.to_csv(isic2020.metadata, index=False)
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--workers", 1,
                                  "--hair", "off", "--diagnosis", "Nevus")
    assert code == 0, stderr
    assert sorted(manifest.read(out / "manifest.csv")["id"]) == sorted(nevi)
    assert "not an ISIC Archive value" not in " ".join((stdout + stderr).split())


def test_an_inconsistent_path_reads_as_its_longest_leading_node() -> None:
    """The leading levels of a path win over a deeper level's name found after an unknown one."""
    assert vocab.known_ancestor(f"{NEVUS}:Melanoma Invasive") == NEVUS
    assert vocab.known_ancestor(f"{MELANOCYTIC}:Unheard:Melanoma Invasive") == MELANOCYTIC
    assert vocab.known_ancestor("Malignant:Unheard:Nevus") == "Malignant"


def test_diagnosis_reads_the_single_column_when_there_are_no_levels() -> None:
    frame = pd.DataFrame({"diagnosis": [" melanoma ", "unknown", "nevus spilus", "made up"]})
    paths, rejected = vocab.diagnosis_column(frame, MISSING)
    assert _listed(paths) == [vocab.MELANOMA, None, SPILUS, None]
    assert _listed(rejected) == [None, None, None, "made up"]


def test_benign_malignant_fills_only_the_rows_without_a_node() -> None:
    frame = pd.DataFrame({"diagnosis": ["nevus", "made up", None, "unknown", None],
                          "benign_malignant": ["malignant", "MALIGNANT", "benign",
                                               "indeterminate/benign", "nonsense"]})
    paths, rejected = vocab.diagnosis_column(frame, MISSING)
    assert _listed(paths) == [NEVUS, "Malignant", "Benign", "Indeterminate", None]
    assert _listed(rejected) == [None, "made up", None, None, None]


def test_no_diagnosis_column_and_no_rows_read_blank() -> None:
    paths, rejected = vocab.diagnosis_column(pd.DataFrame({"sex": ["male"]}), MISSING)
    assert _listed(paths) == [None] and _listed(rejected) == [None]
    empty = pd.DataFrame({"diagnosis_1": pd.Series([], dtype=object)})
    paths, rejected = vocab.diagnosis_column(empty, MISSING)
    assert paths.empty and str(paths.dtype) == "string"


def test_dx_codes_read_as_nodes_and_other_values_stay_as_written() -> None:
    read = vocab.dx_diagnosis(pd.Series([" MEL", "nv", "bkl", "Melanoma Invasive ", None]))
    assert _listed(read) == [vocab.MELANOMA, NEVUS, vocab.class_path("BKL"),
                             "Melanoma Invasive", None]
    assert str(read.dtype) == "string"


def test_the_first_marked_one_hot_class_wins_and_unk_is_blank() -> None:
    frame = pd.DataFrame({"MEL": ["1.0", "0", "1", "x", "0"], "NV": [1, 1, 1, 0, 0],
                          "UNK": [0, 0, 0, 0, 1]})
    read = vocab.one_hot_diagnosis(frame)
    assert _listed(read) == [vocab.MELANOMA, NEVUS, vocab.MELANOMA, None, None]
    assert str(read.dtype) == "string"


def test_rejections_are_one_warning_per_column_word_for_word() -> None:
    rejected = pd.DataFrame({
        "sex": ["x", "x", "y", None, None, None, None],
        "site": [None] * 7,
        "diagnosis": ["a", "b", "c", "d", "e", "f", "g"]})
    allowed = {"sex": ("male", "female"), "site": ("head",),
               "diagnosis": vocab.diagnoses()}
    warnings = vocab.rejections(rejected, allowed, {"sex": "no sex in the caption"})
    assert warnings == [
        "sex 'x' (2 rows), 'y' (1 row) is not an ISIC Archive value; left blank (no sex in the "
        "caption). Allowed: male, female",
        "diagnosis 'a' (1 row), 'b' (1 row), 'c' (1 row), 'd' (1 row), 'e' (1 row) and 2 more "
        "is not an ISIC Archive value; read as its deepest known level (a new subtype stays "
        f"under its parent). Allowed: any level of the diagnosis hierarchy "
        f"({len(vocab.diagnoses())} nodes, see {vocab.FIELDS_URL})"]


def test_a_rejected_column_with_no_caption_effect_and_twelve_terms_lists_them() -> None:
    terms = [f"t{i}" for i in range(12)]
    warnings = vocab.rejections(pd.DataFrame({"colour": ["q"] * 5 + ["r", "s", "t", "u", "v"]}),
                                {"colour": terms}, {})
    assert warnings == ["colour 'q' (5 rows), 'r' (1 row), 's' (1 row), 't' (1 row), "
                        "'u' (1 row) and 1 more is not an ISIC Archive value; left blank. "
                        f"Allowed: {', '.join(terms)}"]
    many = vocab.rejections(pd.DataFrame({"colour": ["q"]}), {"colour": [*terms, "t12"]}, {})
    assert many[0].endswith("Allowed: any level of the diagnosis hierarchy (13 nodes, see "
                            f"{vocab.FIELDS_URL})")


@pytest.mark.parametrize(("diagnosis", "site", "cells"), [
    (INVASIVE, "anterior torso", ("female", 45, "torso", "melanoma", "malignant", 1,
                                  vocab.SYNTHETIC, True)),
    (vocab.MELANOMA, "head/neck", ("female", 45, "head/neck", "melanoma", "malignant", 1,
                                   vocab.SYNTHETIC, True)),
    (NEVUS, "torso", ("female", 45, "torso", "nevus", "benign", 0, vocab.SYNTHETIC, True)),
    ("Indeterminate", "nowhere", ("female", 45, None, None, None, 0, vocab.SYNTHETIC, True)),
    (f"{vocab.MELANOMA}x", None, ("female", 45, None, None, "malignant", 0, vocab.SYNTHETIC,
                                  True)),
    (None, None, ("female", 45, None, None, None, None, vocab.SYNTHETIC, True))])
def test_challenge_cells_of_a_synthetic_row(diagnosis: str | None, site: str | None,
                                            cells: tuple[object, ...]) -> None:
    assert vocab.synthetic_cells(MetadataStyle.challenge, diagnosis, "female", 45, site,
                                 True) == cells


def test_archive_cells_keep_a_challenge_site_in_its_own_column() -> None:
    cells = vocab.synthetic_cells(MetadataStyle.archive, INVASIVE, "male", 30, "torso", False)
    assert cells == (vocab.SYNTHETIC, "male", 30, None, "torso", *vocab.levels(INVASIVE), False)
    cells = vocab.synthetic_cells(MetadataStyle.archive, NEVUS, "other", None, "palms/soles",
                                  None)
    assert cells == (vocab.SYNTHETIC, None, None, "palms/soles", None, *vocab.levels(NEVUS),
                     None)


def test_a_synthetic_row_the_archive_would_refuse_is_a_short_bug_report() -> None:
    """The field, its value and the first allowed values, not the Archive's whole diagnosis
    vocabulary (about 39 kB on one line)."""
    with pytest.raises(UserError) as caught:
        vocab.synthetic_cells(MetadataStyle.archive, "Malignant:Made up", "male", 30, None,
                              None)
    said = str(caught.value)
    assert said.startswith("a synthetic row fails the ISIC Archive schema (diagnosis "
                           "'Malignant:Made up': Input should be 'Benign', 'Indeterminate', "
                           "'Malignant', ") and said.endswith(", …); report this as a bug")
    assert len(said) < 250 and "\n" not in said


def test_a_synthetic_age_is_checked_as_the_archives_age_field() -> None:
    """`age_approx` is checked under the Archive's field name `age`, so a bad age is caught."""
    with pytest.raises(UserError, match=r"\(age -5: Input should be greater than or equal to 0\)"):
        vocab.synthetic_cells(MetadataStyle.archive, NEVUS, "male", -5, None, None)


def test_validate_row_names_each_refused_field_and_ignores_blanks() -> None:
    assert vocab.validate_row({"sex": "male", "age": 40, "hairy": "", "diagnosis_1": None}) \
        is None
    problem = vocab.validate_row({"sex": "other", "age": 40})
    assert problem is not None and problem == "sex 'other': Input should be 'male' or 'female'"
    both = vocab.validate_row({"sex": "other", "anatom_site_general": "moon"})
    assert both is not None and both.count("; ") >= 1
    assert {part.split(" ")[0] for part in both.split("; ")} == {"sex",
                                                                  "anatom_site_general"}
