"""`--query` is a comparison of columns, checked before pandas sees it: pandas' Python engine
would run calls, attributes and `@` variables, i.e. any Python code, even in a dry run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest, query
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke, one_line_error
from .fake_gen import PYTHON, FakeGen

ALLOWED = "a query compares columns: "
"""The start of what every refusal of a forbidden form says a query may contain."""


def _exploits(target: Path) -> list[str]:
    """The report's queries that wrote or read a file through pandas, writing `target`."""
    return [f"@pd.DataFrame([1]).to_csv({str(target)!r}) or target == 1",
            f"@frame.to_csv({str(target)!r}) or target == 1",
            f"target.to_csv({str(target)!r}) is None",
            "target == 1 and target.str.__class__.__init__.__globals__ is None",
            "@pd.read_csv('/etc/passwd')"]


def test_an_exploit_is_refused_by_prepare_and_writes_nothing(isic2020: SyntheticSet,
                                                             tmp_path: Path) -> None:
    target = tmp_path / "pwned.csv"
    for text in _exploits(target):
        with pytest.raises(UserError) as caught:
            prepare(isic2020.root, tmp_path / "out", options=PrepareOptions(query=text),
                    workers=1)
        assert f"--query {text!r}: " in str(caught.value) and ALLOWED in str(caught.value)
        assert not target.exists()


def test_an_exploit_is_refused_by_the_cli_in_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                                      tmp_path: Path) -> None:
    target = tmp_path / "pwned.csv"
    for text in _exploits(target):
        line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                                 "--workers", 1, "--query", text))
        assert "is not allowed" in line and ALLOWED in line, line
        assert not target.exists()


def test_an_exploit_is_refused_by_a_sample_dry_run(runner: CliRunner, trained: Path,
                                                   fake_gen: FakeGen, tmp_path: Path) -> None:
    target = tmp_path / "pwned.csv"
    text = f"@pd.DataFrame([1]).to_csv({str(target)!r}) is None"
    line = one_line_error(*invoke(runner, "sample", "--lora", trained, "--out", tmp_path / "synth",
                             "--n", 2, "--query", text, "--dry-run", "--sd-scripts",
                             fake_gen.sd_scripts, "--python", PYTHON))
    assert "@ (a Python variable) is not allowed" in line and not target.exists()


def _frame() -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame({
        "sex": pd.array(["male", "female", None], dtype="string"),
        "age": pd.array([30, None, 50], dtype="Int64"), "clin size": [1.0, 4.0, 2.5]})
    return frame


@pytest.mark.parametrize(("text", "part"), [
    ("abs(age) > 1", "abs(age)"), ("age.__class__ == 1", "age.__class__"),
    ("age[0] == 1", "age[0]"), ("(lambda: 1)() == 1", "(lambda: 1)()"),
    ("[x for x in age] == 1", "[x for x in age]"), ("age ** 2 > 1", "age ** 2"),
    ("age is None", "age is None"), ("f'{age}' == 'x'", "f'{age}'"),
    ("sex.str.contains(sex)", "sex.str.contains(sex)"),
    ("sex.str.lower().to_csv('x') > 1", "sex.str.lower().to_csv('x')"),
    ("sex.str.lower().str.cat(sex) == 'x'", "sex.str.lower().str.cat(sex)"),
    ("sex.str.contains('a', **{'na': 1})", "sex.str.contains('a', **{'na': 1})"),
    ("`clin size`.to_csv('x') > 1", "`clin size`.to_csv('x')")])
def test_anything_but_a_comparison_is_refused_naming_it(text: str, part: str) -> None:
    with pytest.raises(UserError) as caught:
        query.evaluate(_frame(), text, example="age > 40")
    assert str(caught.value).startswith(f"--query {text!r}: {part} is not allowed; {ALLOWED}")


@pytest.mark.parametrize(("text", "picked"), [
    ("age > 20 and sex == 'male'", [True, False, False]), ("age > 20 & ~(sex == 'male')",
                                                             [False, False, False]),
    ("not age > 40 or sex in ['female', 'x']", [True, True, False]),
    ("-age < -40", [False, False, True]), ("age * 2 + 1 - 1 / 1 > 60", [False, False, True]),
    ("sex not in ('male',)", [False, True, False]), ("`clin size` >= 2.5", [False, True, True]),
    ("sex.str.contains('ale', na=False)", [True, True, False]), ("sex.isna()",
                                                                [False, False, True]),
    ("age.notna() and sex.str.startswith('m')", [True, False, False]),
    ("sex.str.lower().str.len() > 4", [False, True, False]),
    ("sex.str.strip().str.upper() == 'MALE'", [True, False, False])])
def test_comparisons_of_columns_still_work(text: str, picked: list[bool]) -> None:
    assert query.evaluate(_frame(), text, example="age > 40").tolist() == picked


@pytest.mark.parametrize(("text", "message"), [
    ("", "--query is empty: give a condition on the metadata columns, e.g. --query 'target == "
         "1 and age_approx > 50'"),
    ("  ", "--query is empty: give a condition on the metadata columns, e.g. --query 'target "
           "== 1 and age_approx > 50'"),
    ("target == 1 or", "--query 'target == 1 or' is not a valid expression (invalid syntax): "
                       "compare columns, e.g. --query 'target == 1 and age_approx > 50'"),
    ("age > 1; age < 3", "--query 'age > 1; age < 3' is not one expression: compare columns, "
                         "e.g. --query 'target == 1 and age_approx > 50'")])
def test_an_empty_or_broken_query_is_refused_with_an_example(runner: CliRunner,
                                                              isic2020: SyntheticSet,
                                                              tmp_path: Path, text: str,
                                                              message: str) -> None:
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1, "--query", text))
    assert line == f"Error: {message}"


def _example(line: str) -> str:
    """The query a refusal offers as its example (`e.g. --query '...'`)."""
    return shlex.split(line.split("e.g. --query ", 1)[1])[0]


def test_sample_shows_and_takes_an_example_on_the_manifest_columns(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """sample --query reads the manifest (sex, age), not prepare's source columns (target,
    age_approx): the example a broken query is shown works when followed."""
    def sample(text: str) -> tuple[int, str, str]:
        return invoke(runner, "sample", "--lora", trained, "--out", tmp_path / "synth", "--n", 2,
                      "--query", text, "--dry-run", "--sd-scripts", fake_gen.sd_scripts,
                      "--python", PYTHON)

    example = _example(one_line_error(*sample("sex ==")))
    assert query.names(example) - {"and", "or", "not"} <= set(manifest.COLUMNS), example
    code, stdout, stderr = sample(example)
    assert code == 0 or "matches no rows" in stderr, stdout + stderr


def test_prepare_shows_an_example_on_its_own_source_columns(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """An ISIC Archive export has no `target`: its example names its own columns, and works."""
    def prepare(text: str) -> tuple[int, str, str]:
        return invoke(runner, "prepare", archive.root, "--out", tmp_path / "out", "--workers", 1,
                      "--query", text)

    example = _example(one_line_error(*prepare("sex ==")))
    header = pd.read_csv(archive.root / "metadata.csv", nrows=0).columns
    assert query.names(example) - {"and", "or", "not", "notna"} <= set(header), example
    code, stdout, stderr = prepare(example)
    assert code == 0, stdout + stderr


def test_a_column_of_another_command_is_not_offered_quoted(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """`target == 1` on a manifest: quoting target would compare two constants; the refusal
    names the manifest's closest column instead."""
    line = one_line_error(*invoke(runner, "sample", "--lora", trained, "--out", tmp_path / "s",
                                  "--n", 2, "--query", "target == 1", "--dry-run",
                                  "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON))
    assert "target is neither a column nor a measurement; name a column (closest: age)" in line
    assert "quote text values" not in line
