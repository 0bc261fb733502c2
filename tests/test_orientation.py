"""A photo with an EXIF orientation is measured, copied and trained as its pixels are stored
(sd-scripts opens it with Pillow and never applies the tag), and prepare says so, naming it:
a viewer shows it turned."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke

_ORIENTATION = 0x0112
"""The EXIF tag that tells viewers to turn or mirror the stored pixels (1: as stored)."""


def _tagged(path: Path, orientation: int, fmt: str) -> Path:
    """`path` re-saved (as `fmt`, beside it) with its EXIF orientation set."""
    with Image.open(path) as image:
        exif = image.getexif()
        exif[_ORIENTATION] = orientation
        target = path.with_suffix(".png" if fmt == "PNG" else path.suffix)
        image.convert("RGB").save(target, fmt, exif=exif.tobytes())
    if target != path:
        path.unlink()
    return target


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_prepare_names_photos_a_viewer_shows_turned(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fmt: str) -> None:
    ids = sorted(str(i) for i in isic2020.frame["image_name"])
    turned = [ids[1], ids[3]]
    for identifier, orientation in zip(turned, (6, 3), strict=True):
        _tagged(isic2020.images / f"{identifier}.jpg", orientation, fmt)
    _tagged(isic2020.images / f"{ids[0]}.jpg", 1, fmt)  # as stored: nothing to say
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    said = " ".join((stdout + stderr).split())
    assert (f"2 of {len(ids)} images have an EXIF orientation (first: {turned[0]}, turned "
            "90° clockwise)") in said, said
    assert "sd-scripts trains them as stored, as prepare measures them" in said
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str}).set_index("id")
    for identifier in turned:
        copy = next(path for path in (out / "img").glob(f"*/{identifier}.*")
                    if path.suffix != ".txt")
        with Image.open(copy) as image:  # sd-scripts' load_image: Image.open, convert("RGB")
            assert image.size == (manifest.at[identifier, "width"],
                                  manifest.at[identifier, "height"])


def test_no_orientation_no_warning(runner: CliRunner, isic2020: SyntheticSet,
                                   tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "EXIF orientation" not in stdout + stderr
