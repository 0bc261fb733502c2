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

