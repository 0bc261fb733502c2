"""Each rule of the hair, ruler and bubble detectors at its threshold (issue 18).

The scene tests (test_measure.py, test_measure_pins.py) show that the detectors work on
photo-like scenes, but no scene sits at a threshold, so a constant changed by one or a `>=`
turned into `>` passes them. Here each rule gets inputs at its edge: constructed point sets and
stroke tables for the small pure helpers, and plain drawn images (at the reference size, 1024
px, where the tuning lengths are in pixels) for what only the whole line finder decides.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from medsynth_kohya.data import hair

# ---------------------------------------------------------------------------------------------
# normalise, is_hairy


@pytest.mark.parametrize(("size", "expected"), [
    ((6000, 4000), (768, 512)), ((4000, 6000), (512, 768)), ((384, 256), (768, 512)),
    ((768, 500), (768, 500)), ((7680, 4), (768, 1)), ((3, 3072), (1, 768)),
    ((1000, 999), (768, 767))])
def test_normalise_sets_the_long_side_to_the_working_size(size: tuple[int, int],
                                                          expected: tuple[int, int]) -> None:
    """Long side WORK_SIZE, the short side rounded, never below one pixel."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    out = hair.normalise(image)
    assert (out.shape[1], out.shape[0]) == expected


def test_normalise_averages_when_shrinking_and_interpolates_when_enlarging() -> None:
    """Shrinking averages the pixels it merges (no aliasing of thin lines); enlarging
    interpolates linearly."""
    rng = np.random.default_rng(3)
    large = rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    assert np.array_equal(hair.normalise(large),
                          cv2.resize(large, (768, 512), interpolation=cv2.INTER_AREA))
    small = rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)
    assert np.array_equal(hair.normalise(small),
                          cv2.resize(small, (768, 512), interpolation=cv2.INTER_LINEAR))
    # the two differ on these images, so the checks above tell them apart
    assert not np.array_equal(cv2.resize(large, (768, 512), interpolation=cv2.INTER_LINEAR),
                              cv2.resize(large, (768, 512), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(cv2.resize(small, (768, 512), interpolation=cv2.INTER_AREA),
                              cv2.resize(small, (768, 512), interpolation=cv2.INTER_LINEAR))


def test_is_hairy_is_strictly_above_each_detectors_cut_off() -> None:
    assert hair.is_hairy(0.2501, hair.HairMode.auto)
    assert not hair.is_hairy(0.25, hair.HairMode.auto)
    assert hair.is_hairy(4000.01, hair.HairMode.seed)
    assert not hair.is_hairy(4000.0, hair.HairMode.seed)
    assert not hair.is_hairy(3999.0, hair.HairMode.seed)
    assert hair.is_hairy(0.3, hair.HairMode.metadata)  # metadata's images are scanned by auto
    assert hair.HairMode.metadata.detector is hair.HairMode.auto
    assert hair.HairMode.seed.detector is hair.HairMode.seed


# ---------------------------------------------------------------------------------------------
# _axis: the least-squares line through the chosen points


def test_axis_fits_the_chosen_points_and_measures_every_point() -> None:
    points = np.array([[0, 0], [10, 0], [5, 5], [5, -7], [2, 3]], np.float32)
    use = np.array([True, True, False, False, False])
    signed, along = hair._axis(points, use)
    # the line through (0, 0) and (10, 0): distance across is y (up to the sign), along is x - 5
    sign = np.sign(signed[2])
    assert np.allclose(sign * signed, [0, 0, 5, -7, 3], atol=1e-4)
    assert np.allclose(np.abs(along), [5, 5, 0, 0, 3], atol=1e-4)
    assert np.allclose(along[0], -along[1], atol=1e-4)


def test_axis_falls_back_to_all_points_when_fewer_than_two_are_chosen() -> None:
    points = np.array([[0, 0], [10, 10], [20, 20], [30, 30], [5, 0]], np.float32)
    every = hair._axis(points, np.ones(5, dtype=bool))
    for use in (np.zeros(5, dtype=bool), np.array([False, False, False, False, True])):
        signed, along = hair._axis(points, use)
        assert np.allclose(signed, every[0], atol=1e-4)
        assert np.allclose(along, every[1], atol=1e-4)
    # the fit through all five is pulled off the diagonal by (5, 0): not the diagonal's fit
    two = hair._axis(points, np.array([True, True, False, False, False]))
    assert np.allclose(two[0][:4], 0, atol=1e-4)
    assert not np.allclose(every[0][:4], 0, atol=1e-2)


def test_axis_is_a_least_squares_fit() -> None:
    """The line is the total least-squares fit (the points' principal axis, through their
    mean), whatever outliers pull it: a robust fit (L1, Huber) would follow the many points
    on y = x / 2 and leave the three far ones off."""
    xs = np.arange(0.0, 40.0)
    ys = 0.5 * xs + np.where(np.isin(np.arange(40), [5, 6, 7]), 12.0, 0.0)
    points = np.column_stack([xs, ys]).astype(np.float32)
    signed, along = hair._axis(points, np.ones(40, dtype=bool))
    mean = points.astype(np.float64).mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - mean).T))
    direction = vectors[:, 1]
    assert np.allclose(np.abs(along), np.abs((points - mean) @ direction), atol=1e-2)
    across = (points - mean) @ np.array([direction[1], -direction[0]])
    assert np.allclose(np.abs(signed), np.abs(across), atol=1e-2)
    assert np.abs(signed).max() > 5  # the outliers did pull the fit off y = x / 2


# ---------------------------------------------------------------------------------------------
# _components: labels and statistics from the set pixels alone


def test_components_statistics() -> None:
    mask = np.zeros((12, 16), np.uint8)
    mask[2, 3:10] = 1  # a horizontal bar of 7 pixels
    mask[5:9, 12] = 1  # a vertical bar of 4
    mask[9, 13] = 1  # touching it diagonally: the same component (8-connected)
    mask[11, 0] = 1  # a single pixel
    parts = hair._components(mask)
    assert parts.count == 4
    by_size = {int(parts.area[label]): label for label in range(1, 4)}
    assert sorted(by_size) == [1, 5, 7]
    bar, post, dot = by_size[7], by_size[5], by_size[1]
    assert parts.area[0] == 0  # the background's pixels are not counted
    assert [int(parts.extent[label]) for label in (bar, post, dot)] == [7, 5, 1]
    assert np.allclose(parts.centre[bar], [6, 2])
    assert np.allclose(parts.centre[dot], [0, 11])
    xs, ys = np.array([12, 12, 12, 12, 13.0]), np.array([5, 6, 7, 8, 9.0])
    assert np.allclose(parts.centre[post], [xs.mean(), ys.mean()])
    assert np.allclose(parts.spread[bar], [float(np.var(np.arange(3, 10))), 0.0, 0.0])
    assert np.allclose(parts.spread[post], [np.var(xs), np.var(ys),
                                            np.mean(xs * ys) - xs.mean() * ys.mean()])
    assert np.allclose(parts.spread[dot], 0)
    for label in range(parts.count):
        ys_, xs_ = np.nonzero(parts.labels == label)
        assert sorted(map(tuple, parts.points[label].tolist())) == sorted(zip(xs_.tolist(),
                                                                              ys_.tolist(),
                                                                              strict=True)) \
            or label == 0
    assert parts.points[0].size == 0  # the background's pixels are not listed
    assert parts.points[bar].tolist() == [[x, 2] for x in range(3, 10)]


def test_components_of_an_empty_mask() -> None:
    parts = hair._components(np.zeros((5, 7), np.uint8))
    assert parts.count == 1
    assert parts.area.tolist() == [0] and parts.extent.tolist() == [0]
    assert parts.centre.shape == (1, 2) and parts.spread.shape == (1, 3)
    assert not parts.centre.any() and not parts.spread.any()
    assert len(parts.points) == 1 and parts.points[0].shape == (0, 2)


# ---------------------------------------------------------------------------------------------
# _ruler_ticks: rows of evenly spaced parallel strokes


def _strokes(rows: list[tuple[float, float, float, float, float]]) -> hair._Parts:
    """A component table of straight strokes (cx, cy, angle in degrees, major variance, minor
    variance), label 0 the background; extent 13 (a short ruler tick)."""
    count = len(rows) + 1
    centre, spread = np.zeros((count, 2)), np.zeros((count, 3))
    for label, (cx, cy, angle, major, minor) in enumerate(rows, start=1):
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        centre[label] = cx, cy
        spread[label] = (major * c * c + minor * s * s, major * s * s + minor * c * c,
                         (major - minor) * s * c)
    extent = np.full(count, 13)
    return hair._Parts(count, np.zeros((1, 1), np.int32), [np.zeros((0, 2))] * count,
                       np.full(count, 13), extent, centre, spread)


def _row(gaps: list[float], *, major: float = 14.0, minor: float = 0.0, x: float = 100.0,
         angles: dict[int, float] | None = None, shifts: dict[int, float] | None = None
         ) -> hair._Parts:
    """Horizontal strokes stacked down the image `gaps` apart, some turned or shifted along."""
    ys = np.concatenate([[50.0], 50.0 + np.cumsum(gaps)])
    angles, shifts = angles or {}, shifts or {}
    return _strokes([(x + shifts.get(i, 0.0), float(y), angles.get(i, 0.0), major, minor)
                     for i, y in enumerate(ys)])


def _ticks(parts: hair._Parts, longest: int = 1000) -> int:
    return hair._ruler_ticks(parts, list(range(1, parts.count)), longest)


def test_five_evenly_spaced_strokes_are_a_ruler_four_are_not() -> None:
    assert _ticks(_row([20.0] * 4)) == 5
    assert _ticks(_row([20.0] * 3)) == 0
    assert _ticks(_row([20.0] * 11)) == 12
    # only the chosen strokes count
    parts = _row([20.0] * 5)
    assert hair._ruler_ticks(parts, [1, 2, 3, 4, 5, 6], 1000) == 6
    assert hair._ruler_ticks(parts, [1, 2, 3, 4], 1000) == 0


@pytest.mark.parametrize(("gap", "ticks"), [
    (10.0, 7), (6.0, 7), (5.9, 0), (14.0, 7), (14.1, 0), (15.5, 0), (16.9, 0), (17.0, 7),
    (20.0, 7), (23.0, 7), (23.1, 0), (30.0, 0)])
def test_one_gap_in_a_row_of_seven(gap: float, ticks: int) -> None:
    """Gaps 0.6-1.4 times the typical one are regular, 1.7-2.3 times a lost tick; any other
    gap splits the row (into runs of four and three strokes: no ruler)."""
    assert _ticks(_row([10.0, 10.0, 10.0, gap, 10.0, 10.0])) == ticks


def test_the_longest_run_counts() -> None:
    """A row broken by an odd gap keeps its longest run, a lost tick included."""
    assert _ticks(_row([10.0] * 5 + [15.5] + [10.0] * 2)) == 6
    assert _ticks(_row([10.0] * 2 + [15.5] + [10.0] * 5)) == 6
    assert _ticks(_row([10.0] * 2 + [15.5] + [10.0, 20.0, 10.0, 10.0])) == 5
    assert _ticks(_row([10.0] * 4 + [20.0, 20.0, 20.0])) == 8


def test_ticks_are_no_further_apart_than_tick_gap() -> None:
    """TICK_GAP (8 %) of the long side at most between two ticks."""
    assert hair.TICK_GAP * 1000 == 80.0
    assert _ticks(_row([80.0] * 4)) == 5
    assert _ticks(_row([80.5] * 4)) == 0
    assert _ticks(_row([80.5] * 4), longest=1010) == 5


def test_ticks_are_parallel_within_twelve_degrees() -> None:
    assert _ticks(_row([20.0] * 4, angles={2: 11.5})) == 5
    assert _ticks(_row([20.0] * 4, angles={2: 12.5})) == 0
    assert _ticks(_row([20.0] * 4, angles={2: -12.5})) == 0
    # all turned alike, they are a row across their own direction
    turned = _strokes([(100 - 20 * i * math.sin(math.radians(30)),
                        50 + 20 * i * math.cos(math.radians(30)), 30.0, 14.0, 0.0)
                       for i in range(5)])
    assert _ticks(turned) == 5


@pytest.mark.parametrize(("shift", "ticks"), [(8.5, 5), (8.6, 0), (-8.5, 5), (-8.6, 0)])
def test_ticks_stand_side_by_side(shift: float, ticks: int) -> None:
    """A stroke shifted along its length by more than half its extent (13) plus 2 is out of
    the row."""
    assert _ticks(_row([20.0] * 4, shifts={2: shift})) == ticks


def test_ticks_are_elongated() -> None:
    """A stroke counts when its long axis's variance is more than four times its short one's;
    a 1 px wide tick (no variance across) however short."""
    assert _ticks(_row([20.0] * 4, major=16.0, minor=3.9)) == 5
    assert _ticks(_row([20.0] * 4, major=16.0, minor=4.0)) == 0
    assert _ticks(_row([20.0] * 4, major=3.0, minor=0.0)) == 5
    blob = _row([20.0] * 4)
    blob.spread[3] = (4.0, 4.0, 0.0)  # one round blob in the row: it is no tick
    assert _ticks(blob) == 0


# ---------------------------------------------------------------------------------------------
# _ruled: a straight line with ticks on one side, or a short capped bar, is no hair

BAND, WIDTH = 2.0, 2.0


def _tick_ruler(*, line: int = 400, span: float = 200.0, line_at: float = 0.0,
                groups: int = 10, per: int = 10, negative: int = 0, wide: int = 0,
                filler_at: float = 3.0, total: int = 1000, last: float = 190.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """A baseline of `line` points (along 0..span, `line_at` across) with `groups` ticks of
    `per` points 5 px off the line (`negative` of them on the other side), each 2 x BAND long;
    `wide` far groups 3 x BAND long (hair crossing, not ticks); filler points `filler_at`
    across (neither on the line nor far from it), spread along it, up to `total` points."""
    along: list[np.ndarray] = [np.linspace(0.0, span, line)]
    signed: list[np.ndarray] = [np.where(np.arange(line) % 2, line_at, -line_at)]
    starts = np.linspace(10.0, last, groups)
    for index, start in enumerate(starts):
        along.append(start + np.arange(per) % 5 * BAND / 2)
        signed.append(np.full(per, -5.0 if index < negative else 5.0))
    for start in (20.0, 30.0, 40.0, 50.0, 80.0, 90.0, 100.0, 110.0)[:wide]:
        along.append(start + np.arange(4) * BAND)
        signed.append(np.full(4, 6.0))
    used = sum(part.size for part in along)
    along.append(np.linspace(0.0, 200.0, total - used))
    signed.append(np.full(total - used, filler_at))
    return np.concatenate(along), np.concatenate(signed)


def _ruled(points: tuple[np.ndarray, np.ndarray], width: float = WIDTH,
           longest: int = 1024) -> bool:
    return hair._ruled(points[0], points[1], BAND, width, longest)


def test_a_baseline_with_ticks_on_one_side_is_ruled() -> None:
    assert _ruled(_tick_ruler())
    assert not _ruled(_tick_ruler(groups=0, per=0))  # the straight line alone
    # a tenth of the points far off the line at least
    assert not _ruled(_tick_ruler(total=1001))
    # four ticks at least
    assert _ruled(_tick_ruler(groups=4, per=25))
    assert not _ruled(_tick_ruler(groups=3, per=34, total=1020))


def test_the_line_holds_three_tenths_of_the_points() -> None:
    assert _ruled(_tick_ruler(line=300))
    assert not _ruled(_tick_ruler(line=299))
    # points at BAND across are on the line, at 2 x BAND not yet far off it
    assert _ruled(_tick_ruler(line=300, line_at=BAND))
    assert _ruled(_tick_ruler(line=300, filler_at=2 * BAND))
    assert not _ruled(_tick_ruler(line=300, filler_at=2 * BAND + 0.1))


def test_the_line_runs_the_whole_length() -> None:
    """The points on the line span 85 % of the whole extent (here 200: the last tick ends
    there)."""
    assert _ruled(_tick_ruler(span=170.0, last=196.0))
    assert not _ruled(_tick_ruler(span=169.5, last=196.0))


def test_ticks_are_most_of_the_far_groups() -> None:
    """Four ticks among ten far groups (hairs crossing make longer ones) are a ruler, among
    eleven not; the far groups' points are split where BAND apart or more."""
    assert _ruled(_tick_ruler(groups=4, per=20, wide=6))
    assert not _ruled(_tick_ruler(groups=4, per=20, wide=7))


def test_ticks_stand_on_one_side() -> None:
    assert _ruled(_tick_ruler(groups=8, per=13, negative=2))
    assert not _ruled(_tick_ruler(groups=8, per=13, negative=3))
    assert _ruled(_tick_ruler(groups=8, per=13, negative=6))
    assert not _ruled(_tick_ruler(groups=8, per=13, negative=4))


def _scale_bar(*, length: float = 100.0, body: int = 234, caps: int = 3,
               cap_at: float = 0.0, cap_end: float | None = None,
               thin: tuple[int, float] | None = None, origin: float = 0.0,
               extra: tuple[float, float, int] = (0.0, 0.0, 0)
               ) -> tuple[np.ndarray, np.ndarray]:
    """A bar 3 px wide from 0 to `length` (`body` points along each of its three rows), capped
    by `caps` points on each side of each end (the first at `cap_at`, the last at `cap_end`;
    if `thin` = (side, across), the far end's cap on that side lies that far across instead),
    and `extra` = (along, across, count) points; everything shifted `origin` along."""
    along: list[np.ndarray] = [np.tile(np.linspace(0.0, length, body), 3)]
    signed: list[np.ndarray] = [np.repeat([-1.0, 0.0, 1.0], body)]
    offsets = np.array([3.6, 3.75, 4.0, 3.7, 3.9])[:caps]
    last = length if cap_end is None else cap_end
    for end, side in ((cap_at, 1), (cap_at, -1), (last, 1), (last, -1)):
        along.append(np.full(caps, end))
        narrow = thin is not None and end == last and side == thin[0]
        signed.append(np.full(caps, thin[1]) if thin is not None and narrow
                      else side * offsets)
    position, across, count = extra
    along.append(np.full(count, position))
    signed.append(np.full(count, across))
    return np.concatenate(along) + origin, np.concatenate(signed)


def test_a_short_capped_bar_is_ruled() -> None:
    assert _ruled(_scale_bar())
    assert not _ruled(_scale_bar(caps=2))  # 3 points across each side of each end
    assert not _ruled(_scale_bar(), longest=2048)  # ... at 1024 px, 6 at 2048
    # one side's cap within the line's band and half its width (3 across at most) is none:
    # a thick line's own corners reach that far when it is tilted
    assert not _ruled(_scale_bar(thin=(-1, -1.5)))
    assert not _ruled(_scale_bar(thin=(1, BAND)))
    assert not _ruled(_scale_bar(thin=(1, BAND + WIDTH / 2)))
    assert _ruled(_scale_bar(thin=(1, BAND + WIDTH / 2 + 0.1)))
    assert not _ruled(_scale_bar(thin=(1, 1.5)))
    assert not _ruled(_scale_bar(caps=0))


def test_caps_lie_within_a_tenth_of_the_length_from_each_end() -> None:
    assert _ruled(_scale_bar(cap_at=10.0))
    assert not _ruled(_scale_bar(cap_at=10.5))
    assert _ruled(_scale_bar(cap_end=90.0))
    assert not _ruled(_scale_bar(cap_end=89.5))
    # a tenth of the bar's own length, wherever it lies
    assert _ruled(_scale_bar(cap_at=10.0, origin=300.0))
    assert not _ruled(_scale_bar(cap_at=10.5, origin=300.0))
    assert not _ruled(_scale_bar(cap_end=89.5, origin=300.0))


def test_a_scale_bar_is_at_most_scale_bar_of_the_long_side() -> None:
    assert hair.SCALE_BAR * 1000 == 300.0
    assert _ruled(_scale_bar(length=300.0), longest=1000)
    assert not _ruled(_scale_bar(length=300.0), longest=999)


def test_most_of_a_scale_bar_lies_on_its_line() -> None:
    """Seven tenths of its points within BAND + half the line's width of it (here 3; the
    702 points of the bar are, its 12 cap points are not)."""
    assert _ruled(_scale_bar(extra=(50.0, 3.5, 288)))
    assert not _ruled(_scale_bar(extra=(50.0, 3.5, 289)))


def test_little_lies_beside_a_scale_bar() -> None:
    """At most 15 % of its points more than a pixel past the line's edge, away from the
    ends (a hair crossing it, a label's glyph)."""
    assert _ruled(_scale_bar(extra=(50.0, 6.0, 126)))
    assert not _ruled(_scale_bar(extra=(50.0, 6.0, 127)))
    assert _ruled(_scale_bar(extra=(10.0, 6.0, 200)))  # at the end's margin: a cap
    assert _ruled(_scale_bar(extra=(90.0, -6.0, 200)))
    assert not _ruled(_scale_bar(extra=(10.5, 6.0, 200)))
    assert not _ruled(_scale_bar(extra=(89.5, 6.0, 200)))
    # the line's own width widens the band
    assert not _ruled(_scale_bar(extra=(50.0, 4.5, 200)))
    assert _ruled(_scale_bar(extra=(50.0, 4.5, 200)), width=3.0)


# ---------------------------------------------------------------------------------------------
# find_lines: hairs on flat skin, drawn at 1000 px (the lengths below are then in pixels and
# the shares of the long side exact); no ink, nothing excluded


def _skin(level: int = 200) -> np.ndarray:
    return np.full((750, 1000, 3), level, np.uint8)


def _lines(image: np.ndarray) -> hair.Lines:
    nothing = np.zeros(image.shape[:2], np.uint8)
    return hair.find_lines(image, nothing, nothing,
                           hair.skin_coloured(image[..., 0], image[..., 2]))


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return (int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1) if xs.size else (0, 0)


def test_a_hair_is_at_least_min_hair_length_long() -> None:
    """A straight 3 px hair drawn 78 px long is 80 px long in the dark-line mask (the blur
    darkens a pixel past each end): 8 % of 1000 px, the shortest hair; one pixel shorter is
    a tick or a speck."""
    assert hair.MIN_HAIR_LENGTH * 1000 == 80.0
    image = _skin()
    image[300:303, 400:478] = 120
    found = _lines(image)
    assert _extent(found.hair) == (80, 5)
    assert found.score == pytest.approx(0.081, abs=0.002)
    shorter = _skin()
    shorter[300:303, 400:477] = 120
    assert _lines(shorter).score == 0 and not _lines(shorter).hair.any()


@pytest.mark.parametrize(("skin", "least"), [(200, 24), (100, 14)])
def test_a_dark_hair_is_seeded_twelve_percent_darker_than_the_skin(skin: int,
                                                                   least: int) -> None:
    """A hair's seed is darker than the skin around it by DARK_LEVELS[0] (12 %) of the skin's
    brightness, and by 2 x DARK_FLOOR (14 levels) at least, on dark skin."""
    assert least == max(round(hair.DARK_LEVELS[0] * skin), 2 * hair.DARK_FLOOR)
    for contrast, hairy in ((least, True), (least - 1, False)):
        image = _skin(skin)
        image[300:303, 300:600] = skin - contrast
        found = _lines(image)
        assert (found.score > 0.29) == hairy and (found.score == 0) != hairy, contrast


@pytest.mark.parametrize(("skin", "least"), [(200, 14), (80, 7)])
def test_a_dark_hair_grows_from_its_seed_seven_percent_darker(skin: int, least: int) -> None:
    """From a seed 40 px long (too short to be hair alone) a hair grows along pixels darker
    than the skin by DARK_LEVELS[1] (7 %) of its brightness, DARK_FLOOR (7 levels) at least."""
    assert least == max(round(hair.DARK_LEVELS[1] * skin), hair.DARK_FLOOR)
    for contrast, hairy in ((least, True), (least - 1, False)):
        image = _skin(skin)
        image[300:303, 300:340] = skin - 40
        image[300:303, 340:600] = skin - contrast
        found = _lines(image)
        assert (found.score > 0.29) == hairy and (found.score == 0) != hairy, contrast


def test_a_light_hair_is_seeded_and_grows_by_its_own_levels() -> None:
    """A light (white, grey) hair stands out of the darkest channel by LIGHT_LEVELS: 14 levels
    to seed it, 8 to grow it."""
    assert hair.LIGHT_LEVELS == (14, 8)
    for contrast, hairy in ((14, True), (13, False)):
        image = _skin(150)
        image[300:303, 300:600] = 150 + contrast
        assert (_lines(image).score > 0.29) == hairy, contrast
    for contrast, hairy in ((8, True), (7, False)):
        image = _skin(150)
        image[300:303, 300:340] = 190
        image[300:303, 340:600] = 150 + contrast
        assert (_lines(image).score > 0.29) == hairy, contrast


def test_thick_dark_lines_are_no_hair() -> None:
    """Lines wider than MAX_HAIR_WIDTH (7 px at 1024 px) are pen strokes, not hair; 6 px wide
    is a (thick) hair. (A 7 px core already counts as thick: its middle lies 4 px from the
    skin, more than half the width.)"""
    for width, hairy in ((5, True), (6, True), (8, False), (10, False)):
        image = _skin()
        image[300:300 + width, 300:600] = 120
        found = _lines(image)
        assert (found.score > 0.29) == hairy and (found.score == 0) != hairy, width


def test_the_lesion_is_not_searched() -> None:
    """An area darker than LESION_RATIO (85 %) of the skin is the lesion: a hair drawn over it
    is not counted; over an area just as light as that, it is."""
    assert hair.LESION_RATIO * 200 == 170
    for shade, hairy in ((170, True), (169, False)):
        image = _skin(200)
        cv2.circle(image, (500, 375), 200, (shade, shade, shade), -1)
        image[370:373, 400:600] = shade - 60
        found = _lines(image)
        assert (found.score > 0.19) == hairy and (found.score == 0) != hairy, shade
        assert found.lesion.any() != hairy


def test_auto_score_is_the_measured_hair_length() -> None:
    image = _skin()
    image[300:303, 300:600] = 120
    assert hair.auto_score(image) == pytest.approx(0.3, abs=0.01)  # 300 px of a 1000 px side
    assert hair.auto_score(_skin()) == 0


def _turned_row(angles: list[float], *, turn: float = 30.0, gap: float = 20.0) -> hair._Parts:
    """Strokes at `angles` (degrees) stacked `gap` apart across the direction `turn`."""
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    return _strokes([(300 - gap * i * s, 50 + gap * i * c, angle, 14.0, 0.0)
                     for i, angle in enumerate(angles)])


def test_a_turned_row() -> None:
    """A row of strokes at 30 degrees, spaced across their direction: 15 degrees off is no
    longer parallel, an uneven gap across still breaks the row, a shift along the strokes is
    measured along them."""
    assert _ticks(_turned_row([30.0] * 6)) == 6
    assert _ticks(_turned_row([30.0] * 2 + [45.0] + [30.0] * 2)) == 0
    assert _ticks(_turned_row([30.0] * 2 + [15.0] + [30.0] * 2)) == 0
    uneven = _turned_row([30.0] * 7)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    uneven.centre[5:] += 10.0 * np.array([-s, c])  # the fifth gap 30 instead of 20
    assert _ticks(uneven) == 0
    shifted = _turned_row([30.0] * 5)
    shifted.centre[3] += 8.0 * np.array([c, s])  # along the stroke: still in the row
    assert _ticks(shifted) == 5
    shifted.centre[3] += 1.0 * np.array([c, s])  # 9 px: past half its extent (13) + 2
    assert _ticks(shifted) == 0


def test_a_lone_stroke_before_a_row_does_not_hide_it() -> None:
    alone = _strokes([(600.0, 400.0, 80.0, 14.0, 0.0)]
                     + [(100.0, 50.0 + 20 * i, 0.0, 14.0, 0.0) for i in range(5)])
    assert _ticks(alone) == 5


# ---------------------------------------------------------------------------------------------
# _run: a straight line followed across short gaps; seed_score's rounding


@pytest.mark.parametrize(("ray", "middle", "expected"), [
    ("TTFTTTFFFTTFFF", 4, (0, 5)),  # one pixel bridged, three not
    ("TTTT", 1, (0, 3)),
    ("FFFTTTTF", 4, (3, 7)),  # a gap of one at the edge is bridged
    ("TTTTFFF", 1, (0, 3)),
    ("FFFTTTT", 4, (3, 6)),
    ("TFFTTTFFT", 4, (0, 8)),  # gaps as long as `gap` are bridged
    ("TTTTTFFF", 2, (0, 4)),  # the last gap, three long, is not
])
def test_run_through_the_middle_bridges_short_gaps(ray: str, middle: int,
                                                   expected: tuple[int, int]) -> None:
    assert hair._run(np.array([c == "T" for c in ray]), middle, 2.0) == expected


def test_seed_score_is_rounded_to_four_places() -> None:
    """The summed arc lengths of the contours of 100 px or more (diagonal steps make
    irrational lengths), rounded to 4 decimal places."""
    gray = np.full((200, 200), 60, np.uint8)
    cv2.circle(gray, (100, 100), 60, 200, -1)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lengths = [cv2.arcLength(contour, False) for contour in contours]
    total = sum(length for length in lengths if length >= 100)
    assert total > 300 and total != round(total, 4)
    assert hair.seed_score(gray) == round(total, 4)


# ---------------------------------------------------------------------------------------------
# scale bars wherever they lie


def _bar(start: tuple[float, float], angle: float, *, caps: bool = True) -> np.ndarray:
    """A scale bar 160 px long and 3 px wide from `start` at `angle` degrees, with end caps
    16 px across (or none), dark on light skin."""
    image = np.full((750, 1000, 3), 190, np.uint8)
    along = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    normal = np.array([-along[1], along[0]])
    first = np.array(start)
    last = first + along * 160

    def point(at: np.ndarray) -> tuple[int, int]:
        x, y = np.rint(at).astype(int)
        return int(x), int(y)

    cv2.line(image, point(first), point(last), (40, 40, 40), 3, cv2.LINE_AA)
    if caps:
        for end in (first, last):
            cv2.line(image, point(end - normal * 8), point(end + normal * 8), (40, 40, 40), 2,
                     cv2.LINE_AA)
    return image


@pytest.mark.parametrize(("start", "angle"), [
    ((120.0, 600.0), 0.0), ((400.0, 600.0), 0.0), ((600.0, 150.0), 0.0), ((500.0, 200.0), 90.0),
    ((300.0, 300.0), 20.0), ((300.0, 300.0), -35.0), ((700.0, 500.0), 60.0)])
def test_a_capped_scale_bar_is_found_wherever_it_lies(start: tuple[float, float],
                                                      angle: float) -> None:
    found = _lines(_bar(start, angle))
    assert found.straight_marks == 1 and found.score == 0
    assert _lines(_bar(start, angle, caps=False)).straight_marks == 0


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_an_uncapped_straight_line_is_hair(angle: float) -> None:
    assert _lines(_bar((300.0, 200.0), angle, caps=False)).score == pytest.approx(0.17,
                                                                                  abs=0.01)


@pytest.mark.parametrize("angle", [10.0, 20.0, 45.0])
def test_a_tilted_straight_hair_is_hair(angle: float) -> None:
    """A thick straight hair's own corners, at a slant, reach across its band: only what
    reaches past the line's width is a scale bar's cap (this was a bug: such a hair, shorter
    than SCALE_BAR, was neither hair nor ruler)."""
    assert _lines(_bar((300.0, 200.0), angle, caps=False)).score > 0.15


def test_each_scale_bar_counts() -> None:
    two = np.minimum(_bar((120.0, 600.0), 0.0), _bar((600.0, 150.0), 0.0))
    assert _lines(two).straight_marks == 2
    assert _lines(np.minimum(two, _bar((300.0, 300.0), 20.0))).straight_marks == 3


@pytest.mark.parametrize("gap", [10, 22, 40])
def test_a_scale_bar_ending_in_the_lesion_s_margin_is_counted_a_straight_line_is_not(
        gap: int) -> None:
    """A capped bar whose end lies in the lesion's margin (not searched: 7 px in, 5 or 25 px
    short of it) is a scale bar (VERSION 9: a cap there counts); the same straight line without
    caps, a hair stretch running on into the lesion, is not."""
    for caps, bars in ((True, 1), (False, 0)):
        image = _bar((300.0, 300.0), 0.0, caps=caps)
        cv2.circle(image, (560 + gap, 300), 100, (90, 90, 90), -1)
        assert _lines(image).straight_marks == bars, caps


@pytest.mark.parametrize("shade", [170, 150])
def test_ticks_are_at_least_eight_tenths_of_a_percent_long(shade: int) -> None:
    """Ten dashes 2 px wide, 16 px apart: 8 px long (0.8 % of 1000 px) they are ruler ticks,
    7 px long specks. Faint (170 on 200: below the hair seeds, found among the dark-line
    pixels) or darker (150: in the hair mask)."""
    for length, ticks in ((8, 10), (7, 0)):
        image = _skin(200)
        for index in range(10):
            image[100 + 16 * index:102 + 16 * index, 300:300 + length] = shade
        found = _lines(image)
        assert (found.ticks, found.score) == (ticks, 0), length


# ---------------------------------------------------------------------------------------------
# _comb: a row of evenly spaced ticks beside a baseline, read from the band's darkness


def _band(positions: list[int], *, width: int = 2, level: float = 1.0, around: float = 0.0,
          running_on: range = range(0), beside: int = 0, scale: float = 1.0,
          size: int = 300) -> int:
    """`_comb` on a band `level` dark over `width` px at each position, `around` elsewhere,
    the ticks `running_on` dark across the other side too, `beside` px from their start."""
    cover = np.full(size, around)
    runs_on = np.zeros(size, bool)
    for index, position in enumerate(positions):
        cover[position:position + width] = level
        if index in running_on:
            runs_on[position + beside] = True
    return hair._comb(cover, runs_on, scale)


def _spaced(count: int, step: int, start: int = 10) -> list[int]:
    return [start + step * k for k in range(count)]


def test_a_comb_counts_its_evenly_spaced_ticks() -> None:
    assert _band(_spaced(8, 10)) == 8
    assert _band(_spaced(8, 10, start=0)) == 8  # a tick at the band's first position
    assert _band(_spaced(8, 10, start=1)) == 8  # or its second: nothing dark before the band
    assert _band(_spaced(8, 10, start=228)) == 8  # the last tick on the band's last position
    assert _band(_spaced(8, 10, start=227)) == 8  # or one before: nothing dark past the band
    assert _band([10]) == 0 and _band([10, 20]) == 2
    assert hair._comb(np.zeros(50), np.zeros(50, bool), 1.0) == 0


@pytest.mark.parametrize(("level", "around", "expected"), [
    (0.8, 0.0, 8), (0.79, 0.0, 0), (1.0, 0.3, 8), (1.0, 0.31, 0)])
def test_a_tick_is_four_fifths_dark_across_the_band_with_clear_skin_by_it(
        level: float, around: float, expected: int) -> None:
    assert _band(_spaced(8, 10), level=level, around=around) == expected


@pytest.mark.parametrize(("where", "shade", "expected"), [
    (-2, 0.31, 7), (-1, 0.7, 8), (3, 0.31, 7), (2, 0.7, 8)])
def test_the_skin_two_pixels_from_a_tick_must_be_clear(where: int, shade: float,
                                                       expected: int) -> None:
    """Two pixels before a tick's first and after its last dark position: a dark smudge there
    makes it no tick (the row goes on past it); one pixel off, the tick's blur, does not."""
    cover = np.zeros(200)
    for position in _spaced(8, 10):
        cover[position:position + 2] = 1.0
    cover[_spaced(8, 10)[3] + where] = shade
    assert hair._comb(cover, np.zeros(200, bool), 1.0) == expected


@pytest.mark.parametrize(("scale", "widest"), [(1.0, 7), (2.0, 11)])
def test_a_tick_is_at_most_four_pixels_and_three_wide_at_the_reference_scale(
        scale: float, widest: int) -> None:
    assert _band(_spaced(8, 14 * round(scale)), width=widest, scale=scale) == 8
    assert _band(_spaced(8, 14 * round(scale)), width=widest + 1, scale=scale) == 0


@pytest.mark.parametrize(("scale", "closest"), [(1.0, 6), (2.0, 12)])
def test_ticks_are_at_least_six_pixels_apart_at_the_reference_scale(scale: float,
                                                                   closest: int) -> None:
    """Closer ticks are read every other one (half the row), from the step to the next but one."""
    assert _band(_spaced(8, closest), width=1, scale=scale) == 8
    assert _band(_spaced(8, closest - 1), width=1, scale=scale) == 4


@pytest.mark.parametrize(("shift", "expected"), [(2, 8), (-2, 8), (3, 7), (-3, 7)])
def test_a_tick_within_a_fifth_of_the_step_of_its_place_belongs_to_the_spaced(
        shift: int, expected: int) -> None:
    positions = _spaced(8, 10)
    positions[-1] += shift
    assert _band(positions) == expected


@pytest.mark.parametrize("tick", [3, 4, 5, 6])
@pytest.mark.parametrize(("shift", "expected"), [(2, 8), (-2, 8), (3, 7), (-3, 7)])
def test_one_tick_off_its_place_does_not_shift_the_rest_of_the_row(tick: int, shift: int,
                                                                   expected: int) -> None:
    """One of eight ticks `shift` px off, after three on their places: within a fifth of the
    step it is counted and the ticks after it are still found at their places (VERSION 10
    sought each from the last one found, so the row broke after it and read 4 to 7); further
    off it is skipped."""
    positions = _spaced(8, 10)
    positions[tick] += shift
    assert _band(positions) == expected


def test_the_step_is_refitted_to_the_ticks_found() -> None:
    """A row whose true step (10.4) is a little longer than its first gap (10) drifts out of a
    fixed step's reach; refitting the step to the ticks found keeps all fourteen."""
    positions = [10 + round(10.4 * k) for k in range(14)]
    positions[1] = positions[0] + 10
    assert _band(positions) == 14


def test_two_ticks_missed_in_a_row_do_not_break_it_three_do() -> None:
    """Lost under a crossing hair: two in a row are bridged, also just after the first two;
    past three the longer part counts."""
    positions = _spaced(10, 10)
    assert _band(positions[:4] + positions[6:]) == 8
    assert _band(positions[:2] + positions[4:]) == 8
    assert _band(positions[:4] + positions[7:]) == 4


@pytest.mark.parametrize(("running", "expected"), [(4, 8), (5, 6)])
def test_half_the_ticks_may_run_on_across_the_baseline(running: int, expected: int) -> None:
    """A hair crossing the baseline runs on across the other side; half a row may: with five
    of eight running on, the longest row with half its ticks alone is the last six."""
    assert _band(_spaced(8, 10), running_on=range(running)) == expected


def test_a_row_from_the_band_s_start_is_read_as_running_on_or_not_there_too() -> None:
    """The first tick at the band's first or second position: alone when nothing runs on (half
    of eight alone is a row), running on when the other side is dark a pixel before it."""
    assert _band(_spaced(8, 10, start=0), running_on=range(4, 8)) == 8
    assert _band(_spaced(8, 10, start=1), running_on=range(5), beside=-1) == 6


@pytest.mark.parametrize(("beside", "expected"), [(-1, 6), (-2, 8), (2, 6), (3, 8)])
def test_running_on_is_read_from_a_pixel_before_a_tick_to_a_pixel_after_it(
        beside: int, expected: int) -> None:
    """A 2 px tick at p, p + 1: dark across the other side at p - 1 to p + 2 runs on."""
    assert _band(_spaced(8, 10), running_on=range(5), beside=beside) == expected


# ---------------------------------------------------------------------------------------------
# _hairs: which lines left in the mask are hairs, and how long


def _blank(longest: int) -> np.ndarray:
    return np.zeros((longest * 3 // 4, longest), np.uint8)


@pytest.mark.parametrize(("pixels", "counted"), [(81, 80.0), (80, 0.0)])
def test_a_hair_is_at_least_min_hair_length_of_the_long_side(pixels: int, counted: float) -> None:
    """MIN_HAIR_LENGTH (0.08) of 1000 px is 80: a 1 px line of 81 pixels is 80 long (half its
    closed outline) and a hair; one pixel shorter it is a short stroke, kept for the ruler."""
    mask = _blank(1000)
    mask[100, 100:100 + pixels] = 1
    found, total, _, short = hair._hairs(mask, 1000)
    assert total == counted
    assert set(np.unique(found)) == ({0, 1} if counted else {0})
    assert short.tolist() == ([] if counted else [1])


@pytest.mark.parametrize(("pixels", "short"), [(9, [1]), (8, [])])
def test_a_short_stroke_is_at_least_eight_thousandths_of_the_long_side(pixels: int,
                                                                       short: list[int]) -> None:
    """0.008 of 1000 px: a 9 pixel stroke (8 long) is a candidate ruler tick, 8 pixels are not."""
    mask = _blank(1000)
    mask[100, 100:100 + pixels] = 1
    assert hair._hairs(mask, 1000)[3].tolist() == short


@pytest.mark.parametrize(("longest", "counted"), [(1024, 0.0), (2048, 210.0)])
def test_a_hair_is_thin_for_the_photo_s_scale(longest: int, counted: float) -> None:
    """At most 1.5 x MAX_HAIR_WIDTH x scale pixels per unit of length: a bar 12 px wide and 200
    long (2400 px, 210 long) is too thick at the reference size (2205) and thin at twice it."""
    mask = _blank(longest)
    mask[100:112, 100:300] = 1
    assert hair._hairs(mask, longest)[1] == counted


@pytest.mark.parametrize(("longest", "reach", "ruled"), [
    (1024, 6, False), (1024, 7, True), (2048, 7, False), (2048, 8, True)])
def test_a_straight_line_with_caps_reaching_past_its_band_is_no_hair(longest: int, reach: int,
                                                                     ruled: bool) -> None:
    """A 150 px line capped across both ends (1 px at the reference size, 2 px at twice it) is
    a scale bar once each cap has 3 x scale pixels beyond the line's band (2 x scale + 1.5) and
    half its width on both sides (`_ruled`), and a hair while it has fewer."""
    factor = longest // 1024
    mask = _blank(longest)
    cv2.line(mask, (100 * factor, 300 * factor), (250 * factor, 300 * factor), 1, factor)
    for x in (100 * factor, 250 * factor):
        cv2.line(mask, (x, 300 * factor - reach), (x, 300 * factor + reach), 1, factor)
    assert bool(hair._hairs(mask, longest)[1] == 0) is ruled
