"""A source that prepare or evaluate cannot read is refused in one line that ends with how to
fix it: a missing folder, a header-only CSV, a metadata file named in other letter case, and
a sex column under another name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke, one_line_error


def _refusal(runner: CliRunner, *args: object) -> str:
    """The one line of a refused command, whitespace squeezed."""
    return " ".join(one_line_error(*invoke(runner, *args)).split())


def test_a_missing_source_says_what_to_give(runner: CliRunner, tmp_path: Path) -> None:
    line = _refusal(runner, "prepare", tmp_path / "nosuch", "--out", tmp_path / "p")
    assert line == (f"Error: source {tmp_path / 'nosuch'} does not exist; give the folder of "
                    "an ISIC download (`medsynth-kohya fetch-isic --out DIR` downloads one), "
                    "or --metadata CSV --images DIR"), line


def test_a_missing_source_names_the_folder_spelled_in_other_case(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    asked = isic2020.root.with_name("ISIC2020")
    line = _refusal(runner, "prepare", asked, "--out", tmp_path / "p")
    assert line.startswith(f"Error: source {asked} does not exist (did you mean "
                           f"{isic2020.root}?); give the folder of an ISIC download"), line


def test_a_header_only_csv_says_so_to_prepare_and_evaluate(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    header = isic2020.metadata.read_text(encoding="utf-8").splitlines()[0]
    isic2020.metadata.write_text(header + "\n", encoding="utf-8")
    line = _refusal(runner, "prepare", isic2020.root, "--out", tmp_path / "p")
    assert line == (f"Error: no images were prepared: {isic2020.metadata} holds only a header, "
                    "no rows; give the complete metadata CSV of the download"), line
    (tmp_path / "syn").mkdir()
    line = _refusal(runner, "evaluate", "--real", isic2020.root, "--synthetic",
                    tmp_path / "syn", "--out", tmp_path / "ev")
    assert line == (f"Error: {isic2020.root} has no training images to compare with "
                    f"({isic2020.metadata} holds only a header, no rows); give --real a "
                    "complete ISIC download"), line


def test_a_metadata_file_named_in_other_case_is_named(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    upper = isic2020.metadata.rename(isic2020.metadata.with_name("TRAIN.CSV"))
    line = _refusal(runner, "prepare", isic2020.root, "--out", tmp_path / "p")
    assert line.startswith(f"Error: no ISIC metadata found in {isic2020.root}: "), line
    assert line.endswith(f"; {upper} differs from train.csv in letter case alone: rename it "
                         "train.csv, or pass --metadata CSV --images DIR"), line


@pytest.mark.parametrize("column", ["gender", "Gender"])
def test_a_sex_column_under_a_synonym_is_offered(runner: CliRunner, isic2020: SyntheticSet,
                                                 tmp_path: Path, column: str) -> None:
    lines = isic2020.metadata.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0] = lines[0].replace("sex,", f"{column},")
    isic2020.metadata.write_text("".join(lines), encoding="utf-8")
    line = _refusal(runner, "prepare", isic2020.root, "--out", tmp_path / "p")
    assert f"no column sex for sex (closest: {column})" in line, line
    assert f"map it with --column sex={column}," in line, line
