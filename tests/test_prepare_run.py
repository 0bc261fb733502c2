"""A `prepare` re-run whose source photos changed: what it measures again, copies again and
keeps, as the manifest, the layout and the summary's counts show it."""

from __future__ import annotations

import os
import re
import shlex
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.layout import LinkMode
from medsynth_kohya.data.prepare import PrepareOptions, default_workers, prepare
from medsynth_kohya.data.synth import encode_jpeg, lesion_image, make_dataset
from medsynth_kohya.errors import UserError

from .conftest import invoke
from .test_sources import zipped_download


def _padded(data: bytes, length: int) -> bytes:
    """The JPEG `data` grown to `length` bytes by comment segments after its start marker
    (a viewer shows the same photo)."""
    assert len(data) + 4 <= length
    segments = b""
    missing = length - len(data)
    while missing:
        size = min(missing, 65535 + 2)
        if 0 < missing - size < 4:  # leave room for one more whole segment
            size -= 4
        segments += b"\xff\xfe" + (size - 2).to_bytes(2, "big") + b"\0" * (size - 4)
        missing -= size
    return data[:2] + segments + data[2:]


def _rewrite_keeping_size_and_time(path: Path, width: int, height: int) -> bytes:
    """Write another photo (`width` x `height`) over `path` in place with the same byte size,
    then set its times back, as `cp -p` or `touch -r` leave a file."""
    before = path.stat()
    data = _padded(encode_jpeg(lesion_image(width, height, hairy=True, seed=11)),
                   before.st_size)
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return data


@pytest.mark.parametrize("link", list(LinkMode))
def test_a_photo_rewritten_with_its_size_and_time_restored_is_measured_and_placed_again(
        tmp_path: Path, link: LinkMode) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=5, melanoma_fraction=1.0, sizes=((640, 480),))
    out = tmp_path / "out"
    options = PrepareOptions(link=link)
    first = prepare(made.root, out, workers=1, options=options)
    identifier = str(first.manifest["id"].iloc[0])
    source = Path(str(first.manifest["source"].iloc[0]))
    new = _rewrite_keeping_size_and_time(source, 320, 256)

    second = prepare(made.root, out, workers=1, options=options)
    row = second.manifest.set_index("id").loc[identifier]
    assert (int(row["width"]), int(row["height"])) == (320, 256)
    assert (first.train_dir / f"{identifier}.jpg").read_bytes() == new
    assert (second.scanned, second.reused) == (1, 3)
    written = pd.read_csv(out / "manifest.csv").set_index("id").loc[identifier]
    assert (int(written["width"]), int(written["height"])) == (320, 256)


def test_a_re_run_after_linking_reuses_every_scan(tmp_path: Path) -> None:
    """Hard links made or removed by a run change the sources' ctime only: the next run
    measures nothing again."""
    made = make_dataset(tmp_path / "src", 4, seed=5, melanoma_fraction=1.0)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1, options=PrepareOptions(link=LinkMode.hard))
    again = prepare(made.root, out, workers=1, options=PrepareOptions(link=LinkMode.hard))
    copied = prepare(made.root, out, workers=1)
    last = prepare(made.root, out, workers=1)
    assert (first.scanned, first.reused) == (4, 0)
    assert [(run.scanned, run.reused) for run in (again, copied, last)] == [(0, 4)] * 3


def test_the_images_option_a_warning_offers_works_pasted_for_a_folder_with_spaces(
        runner: CliRunner, tmp_path: Path) -> None:
    """A photo in a subfolder of the metadata's folder is named with the --images that takes
    it, quoted as a shell reads it: pasted, it prepares every photo."""
    made = make_dataset(tmp_path / "my isic ~photos", 4, seed=3, layout="archive",
                        melanoma_fraction=1.0)
    photo = sorted(made.images.glob("*.jpg"))[0]
    (made.root / "batch 2").mkdir()
    photo.rename(made.root / "batch 2" / photo.name)
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "out",
                             "--workers", "1")
    assert code == 0, stderr
    offered = re.search(r"pass (--images .+) to take them", " ".join(stderr.split()))
    assert offered is not None, stderr
    code, _, stderr = invoke(runner, "prepare", "--metadata", made.metadata,
                             *shlex.split(offered[1]), "--out", tmp_path / "again",
                             "--workers", "1")
    assert code == 0, stderr
    assert len(pd.read_csv(tmp_path / "again" / "manifest.csv")) == 4


def test_a_selection_of_many_other_diagnoses_names_five_and_counts_the_rest(
        tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 8, seed=5, melanoma_fraction=1.0)
    frame = pd.read_csv(made.metadata)
    others = ["nevus", "seborrheic keratosis", "solar lentigo", "lentigo NOS", "dermatofibroma",
              "verruca", "scar"]
    frame.loc[1:, "diagnosis"] = others
    frame.to_csv(made.metadata, index=False)
    result = prepare(made.root, tmp_path / "out", workers=1)
    (warning,) = [w for w in result.warnings if "class folder says" in w]
    counts = re.search(r" but (.*) and 2 more, while ", warning)
    assert warning.startswith(f"{len(others)} of 8 prepared images are not ") and counts
    assert len(counts[1].split(", ")) == 5 and all(n.endswith(" 1") for n in counts[1].split(", "))


@pytest.mark.parametrize(("extra", "said"), [
    ((), "the default selection (melanomas)"),
    (("--query", "age_approx > 500", "--diagnosis", "nevus"),
     "--query 'age_approx > 500' and --diagnosis 'nevus'")])
def test_a_selection_that_matches_no_row_says_which_in_one_line(
        runner: CliRunner, tmp_path: Path, extra: tuple[str, ...], said: str) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=6, melanoma_fraction=0.0)
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "out", *extra)
    assert code == 1 and "Traceback" not in stderr
    assert (f"no images were prepared: {said} matched none of the 4 rows of {made.metadata}; "
            "choose rows with --query or --diagnosis") in " ".join(stderr.split())


def test_image_files_named_otherwise_than_the_ids_are_said_not_to_match(
        runner: CliRunner, tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=6, melanoma_fraction=1.0)
    for photo in made.images.glob("*.jpg"):
        photo.rename(photo.with_name(f"photo_{photo.name}"))
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "out")
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr
    assert "no images were prepared from 4 selected rows: 4 ids with no image file" in message
    assert re.search(r"file names \(e\.g\. photo_\w+\) do not match the ids \(e\.g\. \w+\) of "
                     r"column image_name: map another with --column id=COLUMN", message)


@pytest.mark.parametrize(("width", "like"), [(0, "for file 1"),
                                             (4, "where the files are named like 0001")])
def test_ids_a_spreadsheet_wrote_as_decimals_say_so(runner: CliRunner, tmp_path: Path,
                                                     width: int, like: str) -> None:
    """Ids 1.0, 2.0 (an integer column with blanks, saved from a spreadsheet or pandas) against
    files 1.jpg, 2.jpg were told to map another column, which no column fixes."""
    made = make_dataset(tmp_path / "src", 4, seed=6, melanoma_fraction=1.0)
    table = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    for number, name in enumerate(table["image_name"], 1):
        (made.images / f"{name}.jpg").rename(made.images / f"{number:0{width}d}.jpg")
    table["image_name"] = [f"{number}.0" for number in range(1, len(table) + 1)]
    table.to_csv(made.metadata, index=False)
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert " ".join(stderr.split()).endswith(
        f"; the ids of column image_name look like numbers a spreadsheet reformatted (1.0 "
        f"{like}): save that column as text, the digits as the file names have them, and run "
        "this again"), stderr
    with pytest.raises(UserError, match="look like numbers a spreadsheet reformatted"):
        prepare(made.root, tmp_path / "out")


def test_one_worker_per_cpu_where_no_cpu_affinity_is_known(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no sched_getaffinity: prepare scans with every CPU there too."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_workers() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_workers() == 1


def test_the_unzip_command_offered_for_a_download_not_extracted_extracts_it(
        runner: CliRunner, tmp_path: Path) -> None:
    """Metadata beside its images' zip, in a folder with a space: the refusal gives the unzip
    command, quoted; extracting as it says (zip, then -d folder) lets the next prepare run."""
    made = make_dataset(tmp_path / "made", 4, seed=6, melanoma_fraction=1.0)
    download = tmp_path / "isic download"
    packed = zipped_download(made, download)
    code, _, stderr = invoke(runner, "prepare", download, "--out", tmp_path / "out")
    offered = re.search(r"extract it \((unzip .+)\) and run this again", " ".join(stderr.split()))
    assert code == 1 and offered is not None, stderr
    command, archive, flag, folder = shlex.split(offered[1])
    assert (command, Path(archive), flag, Path(folder)) == ("unzip", packed, "-d", download)
    with zipfile.ZipFile(archive) as reading:
        reading.extractall(folder)
    code, _, stderr = invoke(runner, "prepare", download, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 4
