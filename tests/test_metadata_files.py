"""The metadata CSV's own faults, each one line naming the file and the fix: an empty file, a
row with more fields than the header, a folder where the CSV should be, and a compressed CSV
in the source folder, which is read as when it is given directly."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
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


def test_a_folder_named_as_the_csv_is_said_to_be_a_folder(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    (tmp_path / "d" / "train.csv").mkdir(parents=True)
    assert _error(runner, tmp_path / "d", tmp_path / "out") == (
        f"Error: {tmp_path / 'd' / 'train.csv'} is a folder, not a metadata CSV: put the CSV "
        "itself there, or pass --metadata CSV")


def test_a_folder_named_as_the_csv_is_passed_over_for_a_csv(runner: CliRunner,
                                                            archive: SyntheticSet,
                                                            tmp_path: Path) -> None:
    assert archive.metadata.name == "metadata.csv"
    (archive.root / "train.csv").mkdir()  # the first name searched for
    code, _, stderr = invoke(runner, "prepare", archive.root, "--out", tmp_path / "out",
                             "--workers", 1)
    assert code == 0, stderr


@pytest.mark.parametrize(("end", "pack"), [(".gz", gzip.compress), (".bz2", bz2.compress),
                                           (".xz", lzma.compress)])
def test_a_compressed_csv_in_the_source_folder_is_read(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, end: str,
        pack: Callable[[bytes], bytes]) -> None:
    plain = tmp_path / "plain"
    invoke(runner, "prepare", isic2020.root, "--out", plain, "--workers", 1)
    packed = isic2020.metadata.with_name(isic2020.metadata.name + end)
    packed.write_bytes(pack(isic2020.metadata.read_bytes()))
    isic2020.metadata.unlink()
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1)
    assert code == 0, stderr
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == (plain / "manifest.csv"
                                                                ).read_bytes()


def test_the_plain_csv_is_read_before_a_compressed_one(runner: CliRunner,
                                                       isic2020: SyntheticSet,
                                                       tmp_path: Path) -> None:
    packed = isic2020.metadata.with_name(isic2020.metadata.name + ".gz")
    packed.write_bytes(gzip.compress(b"not,the,metadata\n1,2,3\n"))
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                             "--workers", 1)
    assert code == 0, stderr
