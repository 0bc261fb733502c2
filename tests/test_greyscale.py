"""A photo with no colour (greyscale, or a 1-bit PNG) is prepared with a warning naming it: its
skin tone cannot be measured, and a LoRA trained on it draws grey skin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, lesion_image

from .conftest import invoke


def _rgb() -> np.ndarray:
    return np.ascontiguousarray(lesion_image(320, 240, hairy=False, seed=6)[:, :, ::-1])


@pytest.mark.parametrize(("mode", "suffix", "expected"), [
    pytest.param("L", ".jpg", True, id="greyscale JPEG"),
    pytest.param("L", ".png", True, id="greyscale PNG"),
    pytest.param("1", ".png", True, id="1-bit PNG"),
    pytest.param("RGB", ".jpg", False, id="colour JPEG"),
])
def test_the_scan_finds_a_photo_with_no_colour(tmp_path: Path, mode: str, suffix: str,
                                               expected: bool) -> None:
    path = tmp_path / f"a{suffix}"
    image = Image.fromarray(_rgb())
    (image if mode == "RGB" else image.convert(mode)).save(path)
    found = scan(str(path), HairMode.auto)
    assert found.reason == "" and found.colourless is expected


def test_grey_as_rgb_has_no_colour(tmp_path: Path) -> None:
    """A greyscale photo saved as a colour JPEG (three equal channels) has none either."""
    path = tmp_path / "a.jpg"
    Image.fromarray(_rgb()).convert("L").convert("RGB").save(path, quality=90)
    assert scan(str(path), HairMode.off).colourless


def test_prepare_warns_of_images_with_no_colour(runner: CliRunner, isic2020: SyntheticSet,
                                                tmp_path: Path) -> None:
    ids = sorted(str(i) for i in isic2020.frame["image_name"])
    for identifier in ids[3:5]:
        jpeg = isic2020.images / f"{identifier}.jpg"
        Image.open(jpeg).convert("L").save(jpeg)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    said = " ".join((stdout + stderr).split())
    assert (f"2 of {len(ids)} images have no colour (greyscale, first: {ids[3]}): skin tone "
            "cannot be measured") in said
