"""`train` (its dry run too) refuses a prepared folder whose class folder lacks images its
manifest lists (deleted or moved since prepare): sd-scripts would silently train on the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .fakes import FakeSd


def _train(runner: CliRunner, prepared: Path, fake_sd: FakeSd, run: Path) -> tuple[int, str, str]:
    return invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable, "--dry-run")


@pytest.mark.parametrize("removed", [1, None])
def test_missing_training_images_stop_train(runner: CliRunner, prepared: Path, fake_sd: FakeSd,
                                            tmp_path: Path, removed: int | None) -> None:
    images = sorted((prepared / "img").glob("*/*.jpg"))
    listed = pd.read_csv(prepared / "manifest.csv", dtype=str)
    train = int((listed["split"] == "train").sum())
    assert len(images) == train > 1
    code, _, stderr = _train(runner, prepared, fake_sd, tmp_path / "before")
    assert code == 0, stderr
    for image in images[:removed]:
        image.unlink()
    code, stdout, stderr = _train(runner, prepared, fake_sd, tmp_path / "run")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    gone = len(images[:removed])
    assert (f"{gone} of {train} training images listed in {prepared / 'manifest.csv'} are "
            f"missing from {images[0].parent} (first: {images[0].name}): run prepare "
            "again") in line
    assert not (tmp_path / "run").exists()
