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


def test_evaluate_is_told_its_own_option_for_a_folder_named_as_the_csv(tmp_path: Path) -> None:
    """evaluate has no --metadata: its --real takes the CSV itself."""
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.evaluation.sets import load_real

    (tmp_path / "d" / "train.csv").mkdir(parents=True)
    with pytest.raises(UserError) as refused:
        load_real(tmp_path / "d")
    assert str(refused.value) == (f"{tmp_path / 'd' / 'train.csv'} is a folder, not a metadata "
                                  "CSV: put the CSV itself there, or give --real the CSV file")


@pytest.mark.parametrize("end", [".gz", ".bz2", ".xz", ".zst"])
def test_a_compressed_csv_beside_the_one_read_is_named(isic2020: SyntheticSet, end: str) -> None:
    """The files named as not read were only the plain ones, though the search takes a
    compressed CSV too (the file is only looked at, so any bytes do)."""
    from medsynth_kohya.data.sources import locate

    beside = isic2020.root / f"ISIC_2020_Training_GroundTruth.csv{end}"
    beside.write_bytes(gzip.compress(isic2020.metadata.read_bytes()))
    assert (f"train.csv is read as the metadata; also in {isic2020.root} and not read: "
            f"{beside.name} (give another with --metadata FILE)") in locate(
                isic2020.root).warnings


@pytest.mark.parametrize(("truth_end", "metadata_end"), [
    (".gz", ""), ("", ".bz2"), (".xz", ".gz"), (".gz", ".gz")])
def test_the_isic_2019_pair_is_found_whatever_each_csv_s_compression(
        archive: SyntheticSet, tmp_path: Path, truth_end: str, metadata_end: str) -> None:
    """The other CSV of the pair was looked for with the first one's ending only: a gzipped
    ground truth beside a plain metadata CSV was refused as a lone half."""
    from medsynth_kohya.data.sources import locate

    from .test_sources import _isic2019

    root = tmp_path / "isic2019"
    _isic2019(archive, root)
    for name, end in (("ISIC_2019_Training_GroundTruth.csv", truth_end),
                      ("ISIC_2019_Training_Metadata.csv", metadata_end)):
        if end:
            plain = root / name
            (root / (name + end)).write_bytes(_PACKS[end](plain.read_bytes()))
            plain.unlink()
    truth = root / f"ISIC_2019_Training_GroundTruth.csv{truth_end}"
    metadata = root / f"ISIC_2019_Training_Metadata.csv{metadata_end}"
    for given, partner in ((root, metadata), (truth, metadata), (metadata, truth)):
        located = locate(given)
        assert (located.metadata, located.partner) == (truth if given == root else given,
                                                       partner), given
        assert "lesion_id" in located.header and "MEL" in located.header
        assert not [w for w in located.warnings if "not read" in w], located.warnings


_PACKS: dict[str, Callable[[bytes], bytes]] = {".gz": gzip.compress, ".bz2": bz2.compress,
                                               ".xz": lzma.compress}
