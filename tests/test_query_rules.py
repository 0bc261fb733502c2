"""`--query`'s rules, function by function: what a query selects, each refusal word for word,
and how a query is cut into what can be judged before and after the images are measured."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest, query
from medsynth_kohya.data.measure import TONES
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke

COLUMNS = ("sex", "age", "hairy")
"""Metadata columns of the split tests; `hairy` is also a measurement's name."""
EXAMPLE = 'sex == "male" and age > 40'
"""The example a broken query on `_metadata` is shown."""


def _metadata() -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame({"sex": pd.array(["male", "female", None], dtype="string"),
                         "age": pd.array([30, None, 50], dtype="Int64")})
    return frame


def _refusal(frame: pd.DataFrame, text: str) -> str:
    with pytest.raises(UserError) as caught:
        query.evaluate(frame, text, example=EXAMPLE)
    return str(caught.value)


def test_a_query_picks_rows_and_a_blank_result_is_false() -> None:
    picked = query.evaluate(_metadata(), "age > 20", example=EXAMPLE)
    assert picked.tolist() == [True, False, True] and picked.dtype == bool
    longer = query.evaluate(_metadata(), 'sex.str.len() > 4', example=EXAMPLE)
    assert longer.tolist() == [False, True, False]


@pytest.mark.parametrize(("text", "message"), [
    ("age + 1", "--query 'age + 1' must give one True/False per row"),
    ("1 == 1", "--query '1 == 1' must give one True/False per row"),
    ("age = 3", "--query 'age = 3' assigns instead of comparing: write == for equals"),
    ("sex.str.nosuch() == 1", "--query 'sex.str.nosuch() == 1': sex.str.nosuch() is not "
                              "allowed; a query compares columns: "),
    ("age >", "--query 'age >' is not a valid expression (invalid syntax): compare columns, "
              "e.g. --query 'sex == \"male\" and age > 40'")])
def test_a_query_that_is_no_row_filter_is_refused_word_for_word(text: str, message: str) -> None:
    refusal = _refusal(_metadata(), text)
    assert refusal == message if not message.endswith(": ") else refusal.startswith(message)


@pytest.mark.parametrize(("text", "message"), [
    ("sex == male", "--query 'sex == male': male is neither a column nor a measurement; quote "
                    'text values (sex == "male")'),
    ("male == sex or male != 'x'", "--query \"male == sex or male != 'x'\": male is neither a "
                                   "column nor a measurement; quote text values (\"male\" == sex "
                                   "or \"male\" != 'x')"),
    ("sexx == 'male'", "--query \"sexx == 'male'\": sexx is neither a column nor a measurement; "
                       "quote text values (\"sexx\" == 'male'), or name a column (closest: sex)"),
    ("widht > 3", "--query 'widht > 3': widht is neither a column nor a measurement; name a "
                  "column (closest: width)"),
    ("3 < hieght", "--query '3 < hieght': hieght is neither a column nor a measurement; name a "
                   "column (closest: height)"),
    ("zzz > 1", "--query 'zzz > 1': zzz is neither a column nor a measurement; name a column "
                "(one of: sex, age, width, height, hair_score, hairy, ita, skin_tone, vignette, "
                "ruler, bubbles)"),
    ("zzz\n", "--query 'zzz\\n': zzz is neither a column nor a measurement; quote text "
               "values")])
def test_an_unknown_word_is_named_with_the_query_quoted_and_the_closest_column(
        text: str, message: str) -> None:
    assert _refusal(_metadata(), text) == message


@pytest.mark.parametrize(("text", "message"), [
    ("@age > 3", "--query '@age > 3': @ marks a Python variable, which a query has none of; name "
                 "the column without it (age > 3)"),
    ("@width > 3", "--query '@width > 3': @ marks a Python variable, which a query has none of; "
                   "name the column without it (width > 3)"),
    ("sex == @male", "--query 'sex == @male': male is neither a column nor a measurement; drop "
                     'the @ and quote text values (sex == "male")'),
    ("@agex > 3", "--query '@agex > 3': agex is neither a column nor a measurement; drop the @ "
                  "and name a column (closest: age)")])
def test_a_python_variable_is_named_as_such_with_the_query_written_without_it(
        text: str, message: str) -> None:
    assert _refusal(_metadata(), text) == message


def test_a_measurement_already_a_column_is_suggested_once() -> None:
    frame = _metadata().assign(width=[1, 2, 3], widths=[1, 2, 3])
    assert _refusal(frame, "widht > 3").endswith("; name a column (closest: width, widths)")
    three = _metadata().assign(agea=1, ageb=2, agec=3)
    closest = _refusal(three, "agex > 3").split("(closest: ")[1].rstrip(")").split(", ")
    assert len(closest) == 3 and set(closest) <= {"agea", "ageb", "agec", "age"}


def test_a_column_that_begins_as_the_word_typed_is_offered_first() -> None:
    """difflib alone ranks `target` above `age_approx` for `agee`: ISIC 2020's own columns."""
    frame = pd.DataFrame({"target": [1], "age_approx": [45.0]})
    assert _refusal(frame, "agee > 50").endswith("; name a column (closest: age_approx, "
                                                 "target)")


def _checked(text: str, frame: pd.DataFrame | None = None) -> None:
    query.check(_metadata() if frame is None else frame, text, example=EXAMPLE)


@pytest.mark.parametrize("text", [
    "skin_tone == 'lght'", "'lght' != skin_tone", "skin_tone in ['tan', 'lght']",
    "skin_tone not in ('lght',)", "skin_tone != 'lght' and width > 3",
    "(skin_tone == 'lght')", "skin_tone in [['tan'], 'lght']", "skin_tone in {'tan', 'lght'}",
    "skin_tone in ('tan', 'lght') and age > 3"])
def test_a_skin_tone_no_image_can_have_is_refused_with_the_tones(text: str) -> None:
    with pytest.raises(UserError) as caught:
        _checked(text)
    tones = ", ".join(name for name, _ in TONES)
    assert str(caught.value) == (f"--query {text!r}: skin_tone is never 'lght'; it is one of "
                                 f"{tones}")


@pytest.mark.parametrize("text", [
    "skin_tone == 'tan'", "'dark' == skin_tone", "skin_tone in ['tan', 'very light']",
    "skin_tone not in ('brown',)", "skin_tone > 'lght' or age > 3",
    "age > 3 or 'lght' > skin_tone", "skin_tone.str.len() > 2",
    "skin_tone == 'tan' and sex == 'lght'", "skin_tone in ['tan'] and sex == 'lght'",
    "skin_tone in ('tan',) and sex == 'lght'"])
def test_tones_that_exist_or_are_not_compared_as_equal_pass(text: str) -> None:
    _checked(text)


def test_the_strings_after_a_set_of_tones_are_not_tones() -> None:
    """`sex == 'lght'` after a set of tones is no tone (a set is a list of values)."""
    _checked("skin_tone in {'tan'} and sex == 'lght'")


def test_a_skin_tone_column_of_the_metadata_is_not_checked_against_the_tones() -> None:
    _checked("skin_tone == 'any words'", _metadata().assign(skin_tone="any words"))


@pytest.mark.parametrize(("text", "needle"), [
    ("width > 'a'", "failed: UFuncTypeError"), ("ruler", None), ("hair_score + 1", "must give"),
    ("skin_tone == tan", 'quote text values (skin_tone == "tan")')])
def test_a_mistake_on_a_measurement_is_found_on_typical_values(text: str,
                                                              needle: str | None) -> None:
    if needle is None:
        _checked(text)
        return
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _checked(text)


def test_every_measurement_is_tried_with_its_own_type() -> None:
    for name, dtype in query.DTYPES.items():
        text = {"Int64": f"{name} > 3", "Float64": f"{name} > 0.25", "boolean": f"~{name}",
                "string": f"{name}.str.len() > 2"}[dtype]
        _checked(text)
    assert set(query.MEASURED) == set(query.DTYPES) and "skin_tone" in query.MEASURED
    with pytest.raises(UserError, match="hairy holds true/false values, not text"):
        _checked("hairy.str.len() > 2")


def test_the_most_complete_row_is_the_one_tried() -> None:
    frame = pd.DataFrame({"sex": ["male", None, "female"], "age": [None, None, 40]})
    _checked("age.astype('int64') > 3 and sex.str.len() > 2", frame)
    _checked("width.astype('int64') > 3 and ita.astype('float64') > 3", frame)


def test_no_metadata_means_nothing_to_check() -> None:
    query.check(pd.DataFrame({"sex": pd.Series([], dtype="string")}), "skin_tone == 'lght'",
                example=EXAMPLE)


@pytest.mark.parametrize(("text", "metadata", "measured", "everything"), [
    ('sex == "male" and width > 3', '(sex == "male")', True, False),
    ('sex == "male" & (width > 3 and ita < 2)', '(sex == "male")', True, False),
    ("width > 3", None, True, False),
    ('sex=="a"', 'sex=="a"', False, False),
    ('(sex == "a" and age > 3) and hairy', '(sex == "a" and age > 3) and hairy', False, False),
    ('sex == "a" and [width][0] > 3 and {"k": age}["k"] > 2', '(sex == "a") and '
     '({"k": age}["k"] > 2)', True, False),
    ('sex == "and" and width>1', '(sex == "and")', True, False),
    ('sex ==\n "a" and width > 1', '(sex ==\n "a")', True, False),
    ('age > 1 and\nwidth > 1 and\nsex == "b"', '(age > 1) and (sex == "b")', True, False),
    ('sex == "a" or width > 3', None, True, True),
    ('sex == "a" or width > 3 and age > 2', None, True, True),
    ('age > 2 and width > 3 | sex == "a"', None, True, True),
    ('age > 2 and (width > 3 or sex == "a")', "(age > 2)", True, False),
    ('(sex == "a" or width > 3) and age > 2', "(age > 2)", True, False),
    ('hairy and width > 3', "(hairy)", True, False),
    ('width > 3 and ruler', None, True, False),
    ("width>3&age>2", "(age>2)", True, False),
    ("age>2&width>3", "(age>2)", True, False),
    ("a b c (", "a b c (", False, False)])
def test_a_query_is_cut_at_its_top_level_ands(text: str, metadata: str | None, measured: bool,
                                              everything: bool) -> None:
    assert query.split(text, COLUMNS) == query.Split(metadata, measured, everything)


def test_a_measurement_named_by_the_metadata_is_metadata_but_the_size() -> None:
    assert query.split("ita > 3 and age > 2", ("ita", "age")) == query.Split(
        "ita > 3 and age > 2", False, False)
    assert query.split("width > 3 and age > 2", ("width", "age")) == query.Split(
        "(age > 2)", True, False)


def test_a_skin_tone_beside_an_f_string_is_still_checked() -> None:
    """An f-string cannot be read before pandas runs it; the tones after it are checked all
    the same."""
    with pytest.raises(UserError, match="skin_tone is never 'lght'"):
        _checked("skin_tone == f'x' or skin_tone == 'lght'")


@pytest.mark.parametrize("text", ['sex == "male" or width > 0 and age_approx > 1000',
                                  'age_approx > 1000 & width > 0 | sex == "male"'])
def test_an_or_beside_an_and_keeps_every_row_its_other_side_picks(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, text: str) -> None:
    """`and` binds tighter than `or`: the men are picked whatever their age, so the `and`'s
    metadata term must not narrow the images scanned to those over 1000 (none)."""
    frame = pd.read_csv(isic2020.metadata)
    men = set(frame.loc[frame["sex"] == "male", "image_name"])
    assert men and len(men) < len(frame)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--workers", 1,
                             "--hair", "off", "--query", text)
    assert code == 0, stderr
    assert set(manifest.read(out / "manifest.csv")["id"]) == men
