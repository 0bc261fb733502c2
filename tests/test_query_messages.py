"""What a hostile `--query` prints: one line saying what is wrong and how to fix it, never a
traceback, a Python warning or pandas' words alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest, query
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke, one_line_error


def _refused(runner: CliRunner, made: SyntheticSet, out: Path, text: str) -> str:
    """The one line prepare printed refusing `--query text`."""
    return one_line_error(*invoke(runner, "prepare", made.root, "--out", out, "--workers", 1,
                                  "--query", text))


@pytest.mark.parametrize("text", [
    "not " * 600 + "target == 1", "~" * 500 + "target", "-" * 400 + "target > 1",
    " + ".join(["target"] * 3000) + " > 1", "not " * 100_000 + "target == 1"],
    ids=["not", "~", "-", "+", "100000 not"])
def test_a_query_nested_too_deeply_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                               tmp_path: Path, text: str) -> None:
    line = _refused(runner, isic2020, tmp_path / "out", text)
    assert line.startswith("Error: --query is nested too deeply") and "simplify it" in line
    assert "RecursionError" not in line and len(line) < 300


@pytest.mark.parametrize("joined", [" or ", " | "])
def test_a_long_chain_of_ors_selects(runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
                                     joined: str) -> None:
    """3000 `or`s (or `|`s) are a long query, not a deep one: it is evaluated."""
    wanted = sorted(str(i) for i in isic2020.frame["image_name"])[:2]
    text = joined.join([f'(image_name == "{i}")' for i in [*wanted, *["none"] * 3000]])
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1, "--query", text)
    assert code == 0, stderr
    assert sorted(manifest.read(tmp_path / "out" / "manifest.csv")["id"]) == wanted


@pytest.mark.parametrize("pattern", ["(a+)+$", "(SYN)_"])
def test_pandas_warnings_stay_off_the_terminal(runner: CliRunner, isic2020: SyntheticSet,
                                               tmp_path: Path, pattern: str) -> None:
    """pandas warns of a pattern with match groups ("This pattern is interpreted as a regular
    expression, and has match groups"), with a source line; the query still selects."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escapes fails the command
        code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out",
                                      tmp_path / "out", "--workers", 1, "--query",
                                      f'image_name.str.contains("{pattern}")')
    said = stdout + stderr
    assert "Warning" not in said and "match groups" not in said
    assert code == (0 if pattern == "(SYN)_" else 1), said


def _frame() -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame({"target": [1, 0], "class": ["nevus", "melanoma"],
                                        "lesion id": [3.0, None]})
    return frame


def _refusal(text: str) -> str:
    with pytest.raises(UserError) as caught:
        query.evaluate(_frame(), text, example="age > 50")
    return str(caught.value)


@pytest.mark.parametrize(("text", "fixed"), [
    ("class == 'nevus'", "`class` == 'nevus'"),
    ("target == 1 and class.str.len() > 5", "target == 1 and `class`.str.len() > 5"),
    ("`lesion id` > 1 or class == 'nevus'", "`lesion id` > 1 or `class` == 'nevus'")])
def test_a_column_named_like_a_python_word_is_told_to_go_in_backticks(text: str,
                                                                       fixed: str) -> None:
    assert _refusal(text) == (f"--query {text!r} is not a valid expression (invalid syntax): "
                              f"class is a Python word; name the column in backticks "
                              f"(--query {fixed!r})")
    query.evaluate(_frame(), fixed, example="age > 50")


def test_a_python_word_that_is_no_column_gets_the_plain_refusal() -> None:
    assert _refusal("if == 1") == ("--query 'if == 1' is not a valid expression (invalid "
                                   "syntax): compare columns, e.g. --query 'age > 50'")


@pytest.mark.parametrize(("text", "said"), [
    ('target.str.contains("1")', "target holds numbers, not text, so it has no .str: make its "
     "values text first (--query 'target.astype(\"str\").str.contains(\"1\")')"),
    ('`lesion id`.str.startswith("3")', "`lesion id` holds numbers, not text, so it has no "
     ".str: make its values text first (--query '`lesion id`.astype(\"str\").str.startswith"
     "(\"3\")')"),
    ('target.isna().str.len() > 1', "target.isna() holds true/false values, not text, so it "
     "has no .str: make its values text first (--query 'target.isna().astype(\"str\").str.len() "
     "> 1')")])
def test_str_on_a_column_that_is_not_text_names_it(text: str, said: str) -> None:
    refusal = _refusal(text)
    assert refusal == f"--query {text!r}: {said}" and "AttributeError" not in refusal
    if "(--query '" in said:  # the query it suggests works
        query.evaluate(_frame(), said.split("(--query '")[1][:-2], example="age > 50")


def test_the_cli_says_a_column_is_not_text_in_one_line(runner: CliRunner,
                                                       isic2020: SyntheticSet,
                                                       tmp_path: Path) -> None:
    line = _refused(runner, isic2020, tmp_path / "out", 'target.str.contains("1")')
    assert line == ("Error: --query 'target.str.contains(\"1\")': target holds numbers, not "
                    "text, so it has no .str: make its values text first (--query "
                    "'target.astype(\"str\").str.contains(\"1\")')")


def test_the_cli_tells_a_column_named_class_to_go_in_backticks(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    frame = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False)
    frame["class"] = ["a", "b"] * (len(frame) // 2) + ["a"] * (len(frame) % 2)
    frame.to_csv(isic2020.metadata, index=False)
    line = _refused(runner, isic2020, tmp_path / "out", 'class == "a"')
    assert line.endswith("class is a Python word; name the column in backticks (--query "
                         "'`class` == \"a\"')")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1, "--query", '`class` == "a"')
    assert code == 0, stderr


@pytest.mark.parametrize(("text", "expected"), [
    ('target.astype(str) == "1"', [True, False]), ("target.astype(float) > 0.5", [True, False]),
    ('`lesion id`.astype(int) == 3', [True, False]), ('`lesion id`.astype(str) != "3.0"',
                                                     [False, False]),
    ("`lesion id`.astype('int') == 3", [True, False]),
    ('`lesion id`.astype(str).str.startswith("3")', [True, False])])
def test_astype_takes_str_int_and_float_bare_and_a_blank_stays_blank(
        text: str, expected: list[bool]) -> None:
    assert query.evaluate(_frame(), text, example="age > 50").tolist() == expected


@pytest.mark.parametrize("text", ["target.astype(list) == 1", "target.astype(target) == 1",
                                  "target.str.contains(str)", "target.isna(int)"])
def test_no_other_bare_name_is_an_argument(text: str) -> None:
    assert " is not allowed; a query compares columns: " in _refusal(text)


@pytest.mark.parametrize("asked", ["age_approx.astype(int) == {age}",
                                   'age_approx.astype(str).str.startswith("{age}")'])
def test_the_cli_takes_astype_with_a_bare_type(runner: CliRunner, isic2020: SyntheticSet,
                                               tmp_path: Path, asked: str) -> None:
    age = int(isic2020.frame["age_approx"].dropna().iloc[0])
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1, "--query", asked.format(age=age))
    assert code == 0, stderr
    kept = manifest.read(tmp_path / "out" / "manifest.csv")
    assert set(kept["age"]) == {age}
    assert len(kept) == int((isic2020.frame["age_approx"] == age).sum())
