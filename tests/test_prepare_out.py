"""`prepare`'s --out: another source's prepared folder is replaced only with --force, a full
disk is one line naming the folder, and --out may not be the images' own folder."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke, one_line_error
from .disk import checksums


def test_a_folder_prepared_from_another_source_is_replaced_only_with_force(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet,
        archive: SyntheticSet) -> None:
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    before = checksums(out)
    line = one_line_error(*invoke(runner, "prepare", archive.root, "--out", out))
    assert str(isic2020.metadata.resolve()) in line and str(archive.metadata.resolve()) in line
    assert "--force" in line
    assert checksums(out) == before, "a refused prepare changes nothing"
    with pytest.raises(UserError, match="--force"):
        prepare(archive.root, out, workers=1)
    assert checksums(out) == before
    code, _, stderr = invoke(runner, "prepare", archive.root, "--out", out, "--force")
    assert code == 0, stderr
    ids = set(pd.read_csv(out / "manifest.csv")["id"])
    assert ids and ids <= set(archive.frame["isic_id"])


def test_the_same_source_edited_or_moved_re_prepares_without_force(
        tmp_path: Path, isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    prepare(isic2020.root, out, workers=1)
    frame = pd.read_csv(isic2020.metadata)
    frame.iloc[1:].to_csv(isic2020.metadata, index=False)  # the user's edit of the same CSV
    edited = prepare(isic2020.root, out, workers=1)
    assert len(edited.manifest) == len(frame) - 1
    moved = tmp_path / "moved"
    shutil.move(isic2020.root, moved)  # the same download, somewhere else: same metadata bytes
    again = prepare(moved, out, workers=1)
    assert len(again.manifest) == len(frame) - 1


def test_a_disk_too_full_for_the_captions_is_one_line_naming_the_folder(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The images fit, the captions do not: the error named a caption's temporary file."""
    written = Path.write_text

    def full(path: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if files.writer(path) is not None and path.suffix == ".txt":  # a caption's temporary
            written(path, data[:1], *args, **kwargs)  # the disk fills half-way through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return written(path, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    line = stderr.splitlines()[-1]  # after the scan's progress
    assert line == (f"Error: no space left under {out} for the captions and lists prepare "
                    "writes there: free space there, or choose another --out; then run this "
                    "again"), line
    assert not [path for path in out.rglob("*") if files.writer(path) is not None]
    with pytest.raises(UserError, match=f"no space left under {re.escape(str(out))}"):
        prepare(isic2020.root, out, workers=1)
    monkeypatch.undo()  # space freed: the same command finishes the folder
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr


@pytest.mark.parametrize("exists", [False, True])
def test_out_as_the_images_folder_is_refused_before_anything_is_made(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet, exists: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--images oi --out oi` made oi, then said it held no images."""
    monkeypatch.chdir(tmp_path)
    folder = isic2020.images if exists else Path("oi")
    before = sorted(tmp_path.rglob("*"))
    line = one_line_error(*invoke(runner, "prepare", "--metadata", isic2020.metadata,
                                  "--images", folder, "--out", f"{folder}/"))
    assert line == (f"Error: --images {folder} and --out {folder} are the same folder: "
                    "prepare writes its layout beside the images it reads, not among them; "
                    f"give another --out, such as {folder}-prepared, or pass --force to "
                    "write it among them"), line
    assert sorted(tmp_path.rglob("*")) == before, "nothing made"
    with pytest.raises(UserError, match="are the same folder"):
        prepare(isic2020.root, isic2020.root, workers=1)
    assert sorted(tmp_path.rglob("*")) == before


def test_one_image_without_a_patient_id_is_counted_in_the_singular(tmp_path: Path,
                                                                     isic2020: SyntheticSet
                                                                     ) -> None:
    """"1 of 12 images have no patient id" was the warning."""
    frame = pd.read_csv(isic2020.metadata)
    frame.loc[frame.index[:1], "patient_id"] = ""
    frame.to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.3))
    (warning,) = [w for w in result.warnings if "no patient id" in w]
    assert warning.startswith(f"1 of {len(frame)} images has no patient id (column patient_id "
                              "is blank): --val-frac splits such images one by one"), warning
