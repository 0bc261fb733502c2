"""The metadata CSV's own faults, each one line naming the file and the fix: an empty file, a
row with more fields than the header, a folder where the CSV should be, and a compressed CSV
in the source folder, which is read as when it is given directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke


def _error(runner: CliRunner, source: Path, out: Path) -> str:
    """The one error line of a prepare of `source` that is refused."""
    code, stdout, stderr = invoke(runner, "prepare", source, "--out", out, "--workers", 1)
    assert code != 0 and "Traceback" not in stdout + stderr, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_csv_is_named_as_empty(runner: CliRunner, isic2020: SyntheticSet,
                                        tmp_path: Path, content: str) -> None:
    isic2020.metadata.write_text(content, encoding="utf-8")
    assert _error(runner, isic2020.root, tmp_path / "out") == (
        f"Error: metadata {isic2020.metadata} is empty (not even a header line): give the "
        "metadata CSV as downloaded, its first line naming the columns")


def test_a_row_with_too_many_fields_names_its_line(runner: CliRunner, isic2020: SyntheticSet,
                                                   tmp_path: Path) -> None:
    lines = isic2020.metadata.read_text(encoding="utf-8").splitlines()
    fields = len(lines[0].split(","))
    lines[3] += ",one,two"
    isic2020.metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _error(runner, isic2020.root, tmp_path / "out") == (
        f"Error: cannot read metadata {isic2020.metadata}: line 4 has {fields + 2} fields where "
        f"the lines before it have {fields}: put quotes around a value that holds ',', or "
        "remove the extra fields")
