"""The skin-tone and artefact rules of `measure` at their edges, on photos drawn here: which
pixels count as skin, how much of it an ITA needs, dark corners and the median they are judged
against."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medsynth_kohya.data import measure as measuring
from medsynth_kohya.data.measure import measure

SKIN = (150, 170, 200)
"""A light skin colour (BGR): L* 72.6, b* 18.4."""


def _skin_ita(bgr: tuple[int, int, int]) -> float:
    lightness, yellow = measuring.lightness_yellow(np.array([bgr], np.uint8))
    return round(measuring.ita_degrees(float(lightness[0]), float(yellow[0])), 2)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 255, 256, 1001])
def test_the_histogram_median_is_numpys(size: int) -> None:
    values = np.random.default_rng(size).integers(0, 256, (size, 3), dtype=np.uint8)
    assert measuring.median_u8(values) == np.median(values)
    assert measuring.median_u8(np.array([[10, 20]], np.uint8)) == 15


def test_plain_skin_has_its_own_ita_and_no_artefacts() -> None:
    found = measure(np.full((480, 640, 3), SKIN, np.uint8))
    assert found.ita == _skin_ita(SKIN) and found.skin_tone == "very light"
    assert not (found.vignette or found.ruler or found.bubbles or found.hairy)
    assert found.hair_score == 0.0


@pytest.mark.parametrize(("dark", "corners", "vignette"), [
    ((5, 5, 5), 0, False), ((5, 5, 5), 1, False), ((5, 5, 5), 2, True), ((5, 5, 5), 4, True),
    ((60, 60, 60), 4, True), ((90, 90, 90), 4, False)])
def test_two_dark_corners_make_a_vignette(dark: tuple[int, int, int], corners: int,
                                          vignette: bool) -> None:
    """Dark means below 0.35 of the photo's median brightness (200 here: 70)."""
    photo = np.full((480, 640, 3), SKIN, np.uint8)
    for centre in [(0, 0), (639, 479), (639, 0), (0, 479)][:corners]:
        cv2.circle(photo, centre, 120, dark, -1)
    found = measure(photo)
    assert found.vignette is vignette
    assert found.ita == _skin_ita(SKIN) and not found.ruler


@pytest.mark.parametrize(("side", "has_ita"), [(15, False), (16, True)])
def test_an_ita_needs_two_percent_of_the_photo_as_skin(side: int, has_ita: bool) -> None:
    """Skin is read on every sixth pixel: 16 x 16 of them on a 768 x 576 photo is over 2% of
    its 128 x 96 grid, 15 x 15 is under."""
    photo = np.zeros((576, 768, 3), np.uint8)
    photo[240:240 + 6 * side - 5, 300:300 + 6 * side - 5] = SKIN
    found = measure(photo)
    assert found.ita == (_skin_ita(SKIN) if has_ita else None)
    assert found.skin_tone == ("very light" if has_ita else None)


@pytest.mark.parametrize(("dark", "ita"), [((12, 16, 19), _skin_ita(SKIN)),
                                           ((12, 16, 20), _skin_ita((12, 16, 20)))])
def test_pixels_darker_than_20_are_never_skin(dark: tuple[int, int, int], ita: float) -> None:
    """Three fifths of the photo nearly black: left out below 20 on every channel, its median
    read as the skin's at 20."""
    photo = np.full((480, 640, 3), SKIN, np.uint8)
    photo[:, :384] = dark
    assert measure(photo).ita == ita
