"""`--query` on what real exports hold: true/false columns with blanks are conditions, and a
mistake on a measurement is named before any image is scanned."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.synth import SyntheticSet

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
