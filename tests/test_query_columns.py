"""`--query` on what real exports hold: true/false columns with blanks are conditions, and a
mistake on a measurement is named before any image is scanned."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.measure import TONES
from medsynth_kohya.data.prepare import CACHE_FILE, PrepareOptions, prepare
from medsynth_kohya.data.prepared import STATE_DIR
from medsynth_kohya.data.synth import SyntheticSet, make_dataset

from .conftest import invoke

FLAGS = ("True", "", "FALSE", "true", None, "false", "True", "", "false", "TRUE")
"""An Archive export's true/false column as written: blanks and any letter case."""


def _with_column(made: SyntheticSet, name: str, values: tuple[str | None, ...]) -> list[str]:
    """Set column `name` of the export's metadata; returns the ids in row order."""
    frame = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    frame[name] = pd.Series(values, dtype=object)
    frame.to_csv(made.metadata, index=False)
    return list(frame["isic_id"])


def _prepared(runner: CliRunner, made: SyntheticSet, out: Path, query: str) -> set[str]:
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out, "--workers", 1,
                             "--hair", "off", "--query", query)
    assert code == 0, stderr
    return set(manifest.read(out / "manifest.csv")["id"])


@pytest.mark.parametrize("name", ["concomitant_biopsy", "hairy"])
def test_a_true_false_column_with_blanks_is_a_condition(runner: CliRunner, archive: SyntheticSet,
                                                        tmp_path: Path, name: str) -> None:
    """A blank is neither true nor false: it matches neither the column nor its negation."""
    ids = _with_column(archive, name, FLAGS)
    said = [None if not value else value.lower() == "true" for value in FLAGS]
    true = {i for i, flag in zip(ids, said, strict=True) if flag is True}
    false = {i for i, flag in zip(ids, said, strict=True) if flag is False}
    assert _prepared(runner, archive, tmp_path / "yes", name) == true
    assert _prepared(runner, archive, tmp_path / "no", f"not {name}") == false
    assert _prepared(runner, archive, tmp_path / "eq", f"{name} == False") == false


def test_a_column_with_other_words_stays_text(runner: CliRunner, archive: SyntheticSet,
                                              tmp_path: Path) -> None:
    """Only true/false columns turn boolean: one that also holds `maybe` is compared as text."""
    ids = _with_column(archive, "reviewed", ("true", "maybe", *FLAGS[2:]))
    assert _prepared(runner, archive, tmp_path / "out", 'reviewed == "maybe"') == {ids[1]}


def _refused(runner: CliRunner, made: SyntheticSet, out: Path, query: str) -> str:
    """The one error line of a prepare refused before any image was scanned."""
    code, stdout, stderr = invoke(runner, "prepare", made.root, "--out", out, "--workers", 1,
                                  "--query", query)
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert not (out / STATE_DIR / CACHE_FILE).exists()  # nothing was measured
    return lines[0]


@pytest.mark.parametrize(("query", "wrong"), [
    ('skin_tone == "very dark"', "very dark"), ('"Tan" != skin_tone', "Tan"),
    ('sex == "male" and skin_tone in ["tan", "black"]', "black"),
    ('skin_tone not in ("light", "olive")', "olive")])
def test_a_skin_tone_no_image_can_have_names_the_tones(runner: CliRunner, archive: SyntheticSet,
                                                       tmp_path: Path, query: str,
                                                       wrong: str) -> None:
    line = _refused(runner, archive, tmp_path / "out", query)
    assert f"skin_tone is never {wrong!r}" in line
    assert ", ".join(name for name, _ in TONES) in line


def test_every_tone_is_accepted(runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    tones = ", ".join(repr(name) for name, _ in TONES)
    code, _, stderr = invoke(runner, "prepare", archive.root, "--out", tmp_path / "out",
                             "--workers", 1, "--query", f"skin_tone in [{tones}]")
    assert code == 0, stderr


@pytest.mark.parametrize(("query", "fixed"), [
    ("skin_tone == dark", 'skin_tone == "dark"'), ("sex == female", 'sex == "female"'),
    ("not ruler and age_approx > 40 and sex != male", 'sex != "male"')])
def test_an_unquoted_text_value_is_named_with_the_quoted_query(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path, query: str,
        fixed: str) -> None:
    line = _refused(runner, archive, tmp_path / "out", query)
    assert "quote text values" in line and fixed in line and "UndefinedVariableError" not in line


def test_a_misspelt_column_is_named_with_the_closest(runner: CliRunner, archive: SyntheticSet,
                                                     tmp_path: Path) -> None:
    line = _refused(runner, archive, tmp_path / "out", 'sexx == "male"')
    assert "sexx is neither a column nor a measurement" in line and "closest: sex" in line


def _ages(made: SyntheticSet, ages: list[str]) -> list[str]:
    """Give `made`'s rows these age_approx values (the rest blank); returns the ids in order."""
    frame = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    frame["age_approx"] = [*ages, *[""] * (len(frame) - len(ages))][:len(frame)]
    frame.to_csv(made.metadata, index=False)
    return list(frame["image_name"])


def test_an_age_column_with_words_is_compared_as_its_numbers(isic2020: SyntheticSet,
                                                            tmp_path: Path) -> None:
    ids = _ages(isic2020, ["unknown", "85+", "100", "55.0", "45", "70,0"])
    result = prepare(isic2020.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(query="age_approx > 50"))
    assert sorted(result.manifest["id"]) == sorted([ids[2], ids[3]])


@pytest.mark.parametrize(("text", "said"), [
    ('age_approx > "50"', "--query 'age_approx > \"50\"' orders age_approx against the text "
     "\"50\", which compares letter by letter (\"100\" < \"50\"): write the number without "
     "quotes (--query 'age_approx > 50')"),
    ('"7" <= patient_id', "orders patient_id against the text \"7\""),
    ("patient_id > 5", "--query 'patient_id > 5': column patient_id holds text, not numbers "
     "(e.g. 'SYNP_"),
])
def test_text_ordered_against_a_number_is_refused_in_one_line(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, text: str, said: str) -> None:
    _ages(isic2020, ["unknown", "100", "55"])
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--query", text)
    message = " ".join(stderr.split())
    assert code == 1 and said in message and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "TypeError" not in message


def test_the_small_photo_warning_s_query_works_where_the_metadata_has_a_width_column(
        tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=6, melanoma_fraction=1.0,
                        sizes=((640, 480), (1200, 1000)))
    frame = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    frame["width"], frame["height"] = "6000", "4000"  # Kaggle's: the original photo's size
    frame.to_csv(made.metadata, index=False)
    first = prepare(made.root, tmp_path / "out", workers=1,
                    options=PrepareOptions(resolution=1536))
    advice = next(w for w in first.warnings if "smaller than a quarter" in w)
    asked = advice.split("--query '")[1].split("'")[0]
    assert asked == "width * height >= 589824"
    again = prepare(made.root, tmp_path / "out", workers=1,
                    options=PrepareOptions(resolution=1536, query=asked))
    assert set(again.manifest["width"]) == {1200} and len(again.manifest) == 2
    assert not [w for w in again.warnings if "smaller than a quarter" in w]
