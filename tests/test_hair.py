"""Hair detectors: `auto` is resolution-independent and right on the seed photos; `seed` exact."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya.data import hair
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import encode_jpeg, lesion_image

from . import photo_cache

SIZES = ((640, 427), (1600, 1067), (6000, 4000))


def _write(folder: Path, name: str, image: np.ndarray) -> Path:
    path = folder / name
    path.write_bytes(encode_jpeg(image))
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hairy", [False, True])
def test_auto_gives_the_same_tag_at_three_resolutions(photos: Path, seed: int,
                                                      hairy: bool) -> None:
    tags = set()
    for width, height in SIZES:
        path = photo_cache.lesion_jpeg(photos, width, height, hairy=hairy, seed=seed)
        result = scan(str(path), HairMode.auto)
        assert result.reason == "" and (result.width, result.height) == (width, height)
        assert result.hair_score is not None
        tags.add(hair.is_hairy(result.hair_score, HairMode.auto))
    assert tags == {hairy}


def test_auto_is_deterministic(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.jpg", lesion_image(800, 600, hairy=True, seed=9))
    assert scan(str(path), HairMode.auto) == scan(str(path), HairMode.auto)


def test_auto_tags_the_hairy_seed_photos(seed_images: Path) -> None:
    """The two photos the original run captioned hairy are hairy; the bare ones are not.
    ISIC_4874581 (captioned without hair) shows three strands, and `auto` counts them."""
    tags = {}
    for photo in sorted(seed_images.glob("*.jpg")):
        result = scan(str(photo), HairMode.auto)
        assert result.hair_score is not None
        tags[photo.stem] = hair.is_hairy(result.hair_score, HairMode.auto)
    assert sorted(name for name, tag in tags.items() if tag) == [
        "ISIC_4525317", "ISIC_4649440", "ISIC_4874581"]


def test_ruler_marks_are_not_hair(seed_images: Path) -> None:
    result = scan(str(seed_images / "ISIC_4810142.jpg"), HairMode.auto)
    assert result.hair_score is not None and result.hair_score < hair.AUTO_THRESHOLD / 2


def _original_heuristic(path: Path) -> float:
    """The 2023 heuristic as its description reads, written out independently of the package."""
    image = cv2.imread(str(path))
    assert image is not None
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lengths = [cv2.arcLength(c, False) for c in contours]
    return float(sum(length for length in lengths if length >= 100))


def test_seed_mode_is_the_original_heuristic(tmp_path: Path) -> None:
    for index, (width, height) in enumerate(((640, 480), (1600, 1200))):
        path = _write(tmp_path, f"{index}.jpg", lesion_image(width, height, hairy=True,
                                                             seed=index))
        result = scan(str(path), HairMode.seed)
        assert result.hair_score == pytest.approx(_original_heuristic(path), abs=1e-3)
        assert result.hair_score is not None
        assert hair.is_hairy(result.hair_score, HairMode.seed) == (
            _original_heuristic(path) > 4000)


def test_seed_mode_on_the_seed_photos(seed_images: Path) -> None:
    for photo in sorted(seed_images.glob("*.jpg")):
        result = scan(str(photo), HairMode.seed)
        assert result.hair_score == pytest.approx(_original_heuristic(photo), abs=1e-3)


def test_off_checks_the_file_without_a_score(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.jpg", lesion_image(300, 200, hairy=True, seed=1))
    result = scan(str(path), HairMode.off)
    assert result.reason == "" and result.hair_score is None and result.width == 300


@pytest.mark.parametrize(("longest", "factor"), [
    (640, 1), (1151, 1), (1152, 2), (1872, 2), (2303, 2), (2304, 4), (4607, 4), (4608, 8),
    (6000, 8), (24000, 8)])
def test_the_reduced_decode_keeps_three_quarters_of_the_working_size(longest: int,
                                                                     factor: int) -> None:
    """The largest of 1/2, 1/4, 1/8 that leaves the long side at least 576 px (0.75 x 768), on
    either side of each step and whichever side is the long one; `full` never reduces. The
    stored pixels always: EXIF orientation is not applied."""
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    stored = cv2.IMREAD_IGNORE_ORIENTATION
    assert hair.decode_flag(longest, longest * 2 // 3) == flags[factor] | stored
    assert hair.decode_flag(longest * 2 // 3, longest) == flags[factor] | stored
    assert hair.decode_flag(longest, longest, full=True) == cv2.IMREAD_COLOR | stored
