"""The skin-tone and artefact rules of `measure` at their edges, on photos drawn here: which
pixels count as skin, how much of it an ITA needs, dark corners and the median they are judged
against."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya.data import hair
from medsynth_kohya.data import measure as measuring
from medsynth_kohya.data.measure import measure
from medsynth_kohya.data.synth import lab_to_bgr

from .conftest import png_header_only

SKIN = (150, 170, 200)
"""A light skin colour (BGR): L* 71.7, b* 14.4."""
DARK = (40, 45, 55)
"""Darker than 0.35 of the skin's brightness, but not black: only a vignette keeps it out."""


def _graded(edge: str = "bottom", side: int = 768) -> np.ndarray:
    """Square skin whose L* runs from 45 to 75 along `edge` (ITA from -16 to 54 degrees), so
    that every pixel wrongly read as skin, or skin wrongly left out, moves the median."""
    along = np.array([lab_to_bgr((lightness, 10, 18))
                      for lightness in np.linspace(45, 75, side)])
    photo = np.broadcast_to(along[None], (side, side, 3)).round().astype(np.uint8)
    return np.ascontiguousarray(photo.transpose(1, 0, 2) if edge in ("left", "right")
                                else photo)


def _skin_ita(bgr: tuple[int, int, int]) -> float:
    lightness, yellow = measuring.lightness_yellow(np.array([bgr], np.uint8))
    return round(measuring.ita_degrees(float(lightness[0]), float(yellow[0])), 2)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 255, 256, 1001])
def test_an_evenly_lit_photo_s_skin_level_is_numpys_median(size: int) -> None:
    """Taken from the histogram, but the same median as numpy's, for odd and even counts."""
    values = np.random.default_rng(size).integers(0, 256, (size, 3), dtype=np.uint8)
    assert measuring.skin_level(values, np.ones_like(values)) == np.median(values)
    pair = np.array([[10, 20]], np.uint8)
    assert measuring.skin_level(pair, np.ones_like(pair)) == 15


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


@pytest.mark.parametrize(("dark", "vignette"), [(50, False), (51, True)])
def test_a_corner_is_dark_when_more_than_half_of_its_patch_is(dark: int, vignette: bool) -> None:
    """A 768 x 500 photo's corners are 10 x 10 patches (a fiftieth of the short side). The
    bottom right one is dark; the top left one on its outer row and column and on inner pixels
    up to `dark` of its 100, and its outer row and column count as much as the rest."""
    photo = np.full((500, 768, 3), SKIN, np.uint8)
    photo[-10:, -10:] = DARK
    patch = np.zeros((10, 10), bool)
    patch[0, :] = patch[:, 0] = True
    inner = np.argwhere(~patch)[:dark - 19]
    patch[inner[:, 0], inner[:, 1]] = True
    photo[:10, :10][patch] = DARK
    assert measure(photo).vignette is vignette


@pytest.mark.parametrize(("dark", "vignette"), [(2, False), (3, True)])
def test_a_strip_photo_s_corners_are_two_pixels_square(dark: int, vignette: bool) -> None:
    """A photo 120 px high at working size still has corners: 2 x 2 patches, dark when 3 of
    their 4 pixels are (2 is only half)."""
    photo = np.full((120, 768, 3), SKIN, np.uint8)
    for row, col in ((0, 0), (0, 1), (1, 0), (1, 1))[:dark]:
        photo[row, col] = photo[-1 - row, -1 - col] = DARK
    assert measure(photo).vignette is vignette


@pytest.mark.parametrize(("colour", "ink"), [((170, 185, 150), False), ((171, 185, 150), True)])
def test_blue_above_red_by_more_than_20_is_ink_not_skin(colour: tuple[int, int, int],
                                                        ink: bool) -> None:
    """A cool grey over most of the photo: skin while its blue exceeds its red by 20 (then it
    is the median, so its ITA is the photo's), marker ink from 21 on (left out)."""
    photo = np.full((576, 768, 3), SKIN, np.uint8)
    photo[:, :430] = colour
    assert measure(photo).ita == _skin_ita(SKIN if ink else colour) != _skin_ita(colour if ink
                                                                                 else SKIN)


def _dark_disc(radius: int, centre: tuple[int, int] = (384, 575)) -> np.ndarray:
    """A working-size brightness image: skin at 200, a disc of `radius` at 10 (its half inside
    the photo when centred on the bottom edge, as by default)."""
    value = np.full((576, 768), 200, np.uint8)
    cv2.circle(value, centre, radius, 10, -1)
    return value


WORKING_SCALE = hair.WORK_SIZE / hair.REFERENCE
"""The scale `measure` hands `_vignette`: every photo is measured at WORK_SIZE."""
_TINTED = np.ones((576, 768), np.uint8)
"""Every pixel of a `_dark_disc` image skin-coloured (it has no colour of its own)."""


@pytest.mark.parametrize(("radius", "kept"), [(20, False), (28, True)])
def test_a_vignette_covers_a_fifth_of_a_percent_of_the_photo(radius: int, kept: bool) -> None:
    """A dark half disc on an edge: 649 px (radius 20) is under 0.2% of 768 x 576 (885 px), a
    shadow or a mark; 1255 px (radius 28) is over (on the quarter-size copy the rule is judged
    on, 40 and 78 of its 192 x 144 pixels, against 55)."""
    mask, _ = measuring._vignette(_dark_disc(radius), _TINTED, WORKING_SCALE)
    assert bool(mask.any()) is kept


def test_a_large_dark_region_away_from_the_edges_is_no_vignette() -> None:
    """A lesion in the middle is as dark as a vignette; only regions reaching the edge are."""
    mask, corners = measuring._vignette(_dark_disc(150, (384, 288)), _TINTED, WORKING_SCALE)
    assert not mask.any() and corners == 0


@pytest.mark.parametrize("radius", [100, 150, 200])
def test_a_vignette_is_grown_over_its_dim_rim(radius: int) -> None:
    """The mask covers the dark region and 10 to 15 px past it (3 pixels of the quarter-size
    copy, about the hair kernel at working size, 11), straight up from the disc's centre and at
    45 degrees alike (grown by a disc, not a square): the dim rim is not skin either, the skin
    beyond it is."""
    value = _dark_disc(radius)
    mask, _ = measuring._vignette(value, _TINTED, WORKING_SCALE)
    assert mask[value < 100].all()
    for step in ((-1.0, 0.0), (-0.5**0.5, -0.5**0.5)):
        ray = [bool(mask[round(575 + step[0] * t), round(384 + step[1] * t)])
               for t in range(400)]
        reach = ray.index(False)
        assert not any(ray[reach:])
        assert 10 <= reach - radius <= 15


@pytest.mark.parametrize(("side", "has_ita"), [(15, False), (16, True)])
def test_an_ita_needs_two_percent_of_the_photo_as_skin(side: int, has_ita: bool) -> None:
    """Skin is read on every sixth pixel: 16 x 16 of them on a 768 x 576 photo is over 2% of
    its 128 x 96 grid, 15 x 15 is under."""
    photo = np.zeros((576, 768, 3), np.uint8)
    photo[240:240 + 6 * side - 5, 300:300 + 6 * side - 5] = SKIN
    found = measure(photo)
    assert found.ita == (_skin_ita(SKIN) if has_ita else None)
    assert found.skin_tone == ("very light" if has_ita else None)


@pytest.mark.parametrize(("rows", "has_ita"), [(11, False), (12, True)])
def test_exactly_two_percent_is_enough(rows: int, has_ita: bool) -> None:
    """768 x 450 is 128 x 75 grid pixels: 2% of them is 192, 16 x 12."""
    photo = np.zeros((450, 768, 3), np.uint8)
    photo[120:120 + 6 * rows - 5, 300:300 + 6 * 16 - 5] = SKIN
    assert measure(photo).ita == (_skin_ita(SKIN) if has_ita else None)


def test_a_vignette_is_found_at_every_edge_alike() -> None:
    """A dark half disc at the middle of each edge in turn, the skin graded along that edge:
    the same photo turned, so the same ITA."""
    found = []
    for edge, centre in (("top", (384, 0)), ("bottom", (384, 767)), ("left", (0, 384)),
                         ("right", (767, 384))):
        photo = _graded(edge)
        cv2.circle(photo, centre, 200, DARK, -1)
        found.append(measure(photo).ita)
    assert found[0] is not None and found == pytest.approx([found[0]] * 4, abs=0.1)


@pytest.mark.parametrize("blur", [2, 4])
def test_a_vignettes_soft_edge_is_left_out_with_it(blur: float) -> None:
    """A vignette fades into the skin over a few pixels; the fade is dim skin, not skin, so the
    ITA is the one of the same vignette drawn with a hard edge."""
    shade = np.zeros((768, 768), np.float32)
    cv2.circle(shade, (384, 767), 200, 1.0, -1)
    hard = _graded()
    hard[shade > 0] = DARK
    soft = cv2.GaussianBlur(shade, (0, 0), blur)[..., None]
    faded = (_graded() * (1 - soft) + np.array(DARK) * soft).round().astype(np.uint8)
    assert measure(faded).ita == pytest.approx(measure(hard).ita, abs=0.1)


@pytest.mark.parametrize(("dark", "ita"), [((12, 16, 19), _skin_ita(SKIN)),
                                           ((12, 16, 20), _skin_ita((12, 16, 20)))])
def test_pixels_darker_than_20_are_never_skin(dark: tuple[int, int, int], ita: float) -> None:
    """Nine tenths of the photo nearly black (too much for the rest to be a round field, so
    no vignette): left out below 20 on every channel, its median read as the skin's at 20."""
    photo = np.full((480, 640, 3), SKIN, np.uint8)
    photo[:, :590] = dark
    assert measure(photo).ita == ita


@pytest.mark.parametrize(("blur", "within"), [(0, 0.1), (2, 0.5)])
def test_pen_marks_and_their_edges_are_not_skin(blur: float, within: float) -> None:
    """Blue pen lines placed alike on both sides of the graded skin's middle: left out with
    the pixels around them (a blurred line's fringe too), they leave the median where it was."""
    lines = np.zeros((768, 768), np.float32)
    for x in range(84, 384, 60):
        for column in (x, 767 - x):
            cv2.line(lines, (column, 100), (column, 668), 1.0, 6)
    ink = np.asarray(cv2.GaussianBlur(lines, (0, 0), blur) if blur else lines)[..., None]
    marked = (_graded() * (1 - ink) + np.array((170, 60, 40)) * ink).round().astype(np.uint8)
    plain, found = measure(_graded()).ita, measure(marked).ita
    assert plain is not None and found == pytest.approx(plain, abs=within)


def test_a_photo_one_pixel_wide_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    assert cv2.imwrite(str(path), np.full((64, 1, 3), SKIN, np.uint8))
    assert measure(path).ita == _skin_ita(SKIN)


def test_a_dark_grey_is_on_both_linear_segments() -> None:
    """sRGB 8 is below 0.04045 (linear: 8 / 255 / 12.92) and its Y below CIE's 216/24389
    (L* = 24389/27 Y): L* 2.19, and grey has no b*."""
    lightness, yellow = measuring.lightness_yellow(np.array([[8, 8, 8]], np.uint8))
    assert lightness[0] == pytest.approx(24389 / 27 * 8 / 255 / 12.92, abs=1e-3)
    assert yellow[0] == pytest.approx(0, abs=1e-9)


def test_a_file_with_an_image_header_but_no_image_raises(tmp_path: Path) -> None:
    """imagesize reads the size from the header; OpenCV then finds no pixels."""
    path = tmp_path / "cut.png"
    path.write_bytes(png_header_only(64, 48))
    with pytest.raises(ValueError, match="cannot be decoded as an image"):
        measure(path)


@pytest.mark.parametrize("axes", [(350, 270), (420, 330), (480, 370), (520, 400)])
def test_a_lesion_filling_most_of_the_photo_is_not_skin(axes: tuple[int, int]) -> None:
    """A lesion covering 38, 55, 71 and 82% of the photo (up to its edges): judged against the
    outer skin when the median falls in it, so the ITA is the skin's."""
    photo = np.full((768, 1024, 3), SKIN, np.uint8)
    cv2.ellipse(photo, (512, 384), axes, 0, 0, 360, lab_to_bgr((45, 20, 25)).round().tolist(), -1)
    assert measure(photo).ita == _skin_ita(SKIN)


def test_hairs_over_a_lesion_filling_most_of_the_photo_are_still_sought() -> None:
    """Eight dark hairs, all on a lesion covering 71% of the photo: the skin tone leaves the
    lesion out, but the hair search keeps to what the median calls lesion (nothing here), as
    such a lesion carries most of the hairs."""
    photo = np.full((768, 1024, 3), SKIN, np.uint8)
    cv2.ellipse(photo, (512, 384), (480, 370), 0, 0, 360,
                lab_to_bgr((45, 20, 25)).round().tolist(), -1)
    rng = np.random.default_rng(3)
    for _ in range(8):
        middle = rng.integers((250, 200), (774, 568))
        angle = rng.uniform(0, np.pi)
        reach = (np.array([np.cos(angle), np.sin(angle)]) * 120).astype(int)
        cv2.line(photo, tuple(middle - reach), tuple(middle + reach), (25, 22, 20), 2,
                 cv2.LINE_AA)
    found = measure(photo)
    assert found.hairy and found.ita == _skin_ita(SKIN)


@pytest.mark.parametrize(("field", "surroundings"), [
    (330, (30, 32, 36)), (300, (30, 32, 36)), (250, (30, 32, 36)), (200, (30, 32, 36)),
    (300, (20, 30, 45)), (250, (20, 30, 45)), (200, (20, 30, 45))])
def test_a_lesion_in_a_dermoscopes_round_field_is_not_skin(
        field: int, surroundings: tuple[int, int, int]) -> None:
    """Skin seen through a round field with dark surroundings (42, 52, 67 and 79% of the
    photo; grey, or brownish and skin-coloured where they cover more than half): the
    surroundings are vignette and the lesion is judged against the skin's brightness, not the
    surroundings', so it is found and left out whatever its size (up to a fifth of the
    field). Covering less than half, brownish surroundings at 45 levels are not darker than
    0.35 of a median the lesion lifts, as before."""
    found = []
    for radius in (0, round(field * 0.36), round(field * 0.45)):
        photo = _graded()
        surround = np.ones((768, 768), np.uint8)
        cv2.circle(surround, (384, 384), field, 0, -1)
        photo[surround == 1] = surroundings
        if radius:
            cv2.circle(photo, (384, 384), radius, lab_to_bgr((35, 20, 25)).round().tolist(), -1)
        result = measure(photo)
        assert result.vignette
        found.append(result.ita)
    assert found[0] is not None and found[1] is not None
    assert found[2] == pytest.approx(found[1], abs=0.5)


def test_a_median_at_seven_eighths_of_the_outer_skin_is_the_lesions() -> None:
    """A lesion of 55% of the photo, its core (40%, 0.8 of the skin's brightness) ringed by a
    paler halo (15%, 0.875): the median is the halo's, under 0.9 of the outer skin's, so the
    core is judged against the skin and left out, and the median of what is left is the
    skin's."""
    photo = np.full((768, 1024, 3), SKIN, np.uint8)
    cv2.ellipse(photo, (512, 384), (420, 330), 0, 0, 360, (130, 150, 175), -1)
    cv2.ellipse(photo, (512, 384), (360, 280), 0, 0, 360, (115, 135, 160), -1)
    assert measure(photo).ita == _skin_ita(SKIN)


def _round_corners(photo: np.ndarray, radius: int, colour: tuple[int, int, int]) -> None:
    """Paint a quarter disc of `radius` into each corner of `photo`."""
    height, width = photo.shape[:2]
    for corner in ((0, 0), (width, 0), (0, height), (width, height)):
        cv2.circle(photo, corner, radius, colour, -1)


@pytest.mark.parametrize(("lightness", "white", "colour"), [
    (25, "strip", (245, 245, 245)), (25, "strip", (240, 250, 250)), (25, "strip", (215, 240, 250)),
    (25, "glare", (250, 250, 250)), (40, "glare", (225, 245, 250)),
    (60, "corners", (250, 250, 250)), (60, "sides", (250, 250, 250)),
    (25, "corners", (250, 250, 250)), (40, "corners", (240, 250, 250))])
def test_white_labels_and_glare_are_no_skin_to_judge_by(
        lightness: int, white: str, colour: tuple[int, int, int]) -> None:
    """White, warm white or cream (BGR `colour`) covering a fifth of the photo: a label strip
    along the bottom, glare spots, round corners or strips down both sides. Very dark skin
    (L* 25) is far below 0.35 of white, but it is no near-black surroundings; nor is white at
    the edges the outer skin a lesion is judged against. The skin keeps its ITA and no
    vignette is found."""
    skin = lab_to_bgr((lightness, 12, 20)).round().astype(np.uint8)
    photo = np.full((768, 1024, 3), skin, np.uint8)
    if white == "strip":
        photo[-154:] = colour
    elif white == "sides":
        photo[:, :103] = photo[:, -103:] = colour
    elif white == "corners":
        _round_corners(photo, 250, colour)
    else:
        rng = np.random.default_rng(1)
        while (photo == colour).all(axis=2).mean() < 0.2:
            cv2.circle(photo, tuple(rng.integers((60, 60), (964, 708)).tolist()),
                       int(rng.integers(8, 25)), colour, -1)
    found = measure(photo)
    assert found.ita == _skin_ita(tuple(skin.tolist())) and not found.vignette


@pytest.mark.parametrize(("lightness", "radius"), [(25, 170), (40, 174), (60, 178)])
def test_white_corners_on_half_the_outer_skin_leave_the_skin_alone(lightness: int,
                                                                   radius: int) -> None:
    """White corners covering about half of the outer quarter of the photo: only the
    skin-coloured outer pixels give the outer skin's brightness, so the skin is not taken for
    lesion."""
    skin = lab_to_bgr((lightness, 12, 20)).round().astype(np.uint8)
    photo = np.full((768, 1024, 3), skin, np.uint8)
    _round_corners(photo, radius, (250, 250, 250))
    assert measure(photo).ita == _skin_ita(tuple(skin.tolist()))


def test_a_white_label_beside_a_round_field_of_very_dark_skin_is_no_skin_to_judge_by() -> None:
    """Very dark skin (L* 25, 84 levels) in a round field with black surroundings (over half
    the photo) and a white label strip (16%): the skin, not the label, is the brightest tenth
    the surroundings are judged against, so only they are vignette (0.35 of 245 is above
    84)."""
    skin = lab_to_bgr((25, 12, 20)).round().astype(np.uint8)
    photo = np.full((768, 1024, 3), 4, np.uint8)
    cv2.circle(photo, (512, 384), 250, skin.tolist(), -1)
    photo[-120:] = 245
    found = measure(photo)
    assert found.vignette and found.ita == _skin_ita(tuple(skin.tolist()))


@pytest.mark.parametrize(("bgr", "coloured"), [
    ((211, 222, 245), True), ((27, 34, 50), True), ((224, 240, 250), True),
    ((225, 240, 250), False), ((240, 250, 250), False), ((128, 128, 128), False),
    ((0, 0, 0), False), ((12, 16, 20), True), ((250, 240, 200), False)])
def test_skin_coloured_is_red_above_blue_by_more_than_a_tenth_of_red(
        bgr: tuple[int, int, int], coloured: bool) -> None:
    """The lightest and darkest skin drawn (L* 90 and 15 at a* 6, b* 8), red above blue by 26
    and 25 where a tenth of red is 25 (cream paper is skin-coloured, warm white is not),
    grey, black, near-black brown and blue."""
    pixel = np.array([[bgr]], np.uint8)
    assert bool(hair.skin_coloured(pixel[..., 0], pixel[..., 2])[0, 0]) is coloured


def test_a_photo_with_no_skin_colour_measures_without_warnings() -> None:
    """Grey with a darker grey disc: no pixel is skin-coloured, so there is no outer skin to
    judge by, and no empty median (numpy's warning) is taken."""
    photo = np.full((768, 1024, 3), 160, np.uint8)
    cv2.circle(photo, (512, 384), 330, (90, 90, 90), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = measure(photo)
    assert found.ita is None and not found.vignette


@pytest.mark.parametrize(("counts", "level"), [
    ({10: 600, 100: 400}, 100), ({10: 400, 100: 600}, 100), ({10: 500, 100: 500}, 55),
    ({10: 490, 34: 20, 100: 490}, 100), ({10: 480, 35: 40, 100: 480}, 35),
    ({10: 890, 100: 110}, 100), ({10: 899, 100: 101}, 100), ({10: 900, 100: 100}, 10),
    ({10: 490, 35: 10, 36: 10, 101: 490}, 35.5), ({10: 490, 35: 20, 101: 490}, 101),
    ({10: 550, 36: 250, 101: 200}, 36), ({10: 550, 35: 250, 101: 200}, 101),
    ({0: 600, 100: 400}, 100), ({10: 600, 100: 200, 200: 200}, 150),
    ({10: 490, 60: 20, 250: 490}, 250), ({10: 490, 61: 20, 250: 490}, 61),
    ({70: 910, 250: 90}, 70), ({84: 800, 250: 200}, 84), ({10: 899, 255: 101}, 255),
    ({10: 700, 70: 150, 150: 50, 255: 100}, 110)])
def test_vignette_is_judged_against_the_skin_not_wide_dark_surroundings(
        counts: dict[int, int], level: float) -> None:
    """The photo's median, unless it is near black (60 or less) and darker than 0.35 of the
    photo's brightest tenth (35 of 100; 35.35 of 101, which a median of 35.5 is not): then the
    median of the rest, from the first level not darker. A tenth of the photo is too little to
    judge by (100 of 1000 pixels; 101 are enough); very dark skin (84) is no surroundings,
    whatever white lies beside it."""
    value = np.concatenate([np.full(count, shade, np.uint8)
                            for shade, count in counts.items()])[None]
    assert measuring.skin_level(value, np.ones_like(value)) == level


@pytest.mark.parametrize(("coloured", "level"), [(100, 10), (101, 200)])
def test_the_bright_tenth_must_be_skin_coloured(coloured: int, level: float) -> None:
    """600 dark pixels and 400 bright ones, of which only `coloured` have skin's colour: 100
    are too few to be the skin of a round field (the rest may be labels or glare), 101 make
    the tenth of the photo it takes."""
    value = np.array([[10] * 600 + [200] * 400], np.uint8)
    tinted = np.zeros_like(value)
    tinted[0, 600:600 + coloured] = 1
    assert measuring.skin_level(value, tinted) == level
