"""What a hostile `--query` prints: one line saying what is wrong and how to fix it, never a
traceback, a Python warning or pandas' words alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.synth import SyntheticSet

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
