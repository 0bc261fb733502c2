"""Hair detectors: a resolution-independent one (`auto`) and the original 2023 heuristic (`seed`).

`auto` judges a photo normalised to a fixed working size, so the same photo at 640 px and at
6000 px gets the same answer; `seed` is the original heuristic exactly as documented (on the 7
original images it gives 4 of their captions' 7 hair tags, `auto` 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import cv2
    import numpy as np
    from cv2.typing import MatLike

WORK_SIZE = 768
"""Long side, in pixels, of the reduced image every measurement works on."""
DECODE_SHARE = 0.75
"""A photo may be decoded this much smaller than WORK_SIZE, then enlarged: decoding is the
largest cost, and 1/8 of 6000 px (750) loses nothing that 768 px would show."""
REFERENCE = 1024
"""Long side at which the sizes below are given; they scale with the working size."""
KERNEL = 15
"""Black-hat / top-hat kernel: lines thinner than this stand out from the skin."""
DARK_LEVELS = (0.12, 0.07)
"""(seed, grow) hysteresis levels of a dark line: black-hat over the local background."""
DARK_FLOOR = 7
"""Smallest black-hat (0-255) that counts at all, so flat dark areas do not."""
LIGHT_LEVELS = (14, 8)
"""(seed, grow) hysteresis levels of a light hair: top-hat of the darkest channel (0-255)."""
MIN_HAIR_LENGTH = 0.08
"""Shortest line counted as hair, as a share of the long side (ruler ticks are shorter)."""
MAX_HAIR_WIDTH = 7.0
"""Cores this wide or wider (reference pixels) are removed as thick (pen marks, filled network,
bubbles): a pixel more than half of it from the background marks one, so the widest hair kept
is one pixel narrower."""
CELL_AREA = 300.0
"""Holes smaller than this are pigment-network cells and get filled."""
BUBBLE_AREA = 4500.0
"""Round holes smaller than this (in reference pixels squared) are gel bubbles and get filled."""
BUBBLE_ROUNDNESS = 0.55
"""A hole is round when it fills this share of its enclosing circle."""
LESION_RATIO = 0.85
"""Smoothed brightness below this share of the skin's marks the lesion, which is not searched."""
OUTER_SKIN = 0.25
"""The share of the skin in view farthest from the photo's centre: healthy skin where the lesion
fills much of the view (dermoscopy photos are centred on the lesion)."""
LESION_MEDIAN = 0.9
"""A median of the skin in view darker than this share of the outer skin's is the lesion's own
(a lesion filling about half the view or more), so the lesion is judged against the outer skin."""
SKIN_TINT = 0.1
"""Red above blue by more than this share of red is skin-coloured: skin of every ITA category
is (by 0.13 or more from L* 15 to 90); white labels, glare (warm ones too), grey and black are
not."""
INK_MARGIN = 20
"""Blue above red by this much (0-255) is marker ink (blue, purple): skin and hair are redder."""
STRAIGHT_SHARE = 0.3
"""A line with this share of its pixels on one straight band along its whole length ..."""
STRAIGHT_SPAN = 0.85
"""... covering this share of its extent, with ticks on one side, is a ruler; ..."""
SCALE_BAR = 0.3
"""... one no longer than this share of the long side, with end caps, a scale bar."""
BAR_MIN = 0.06
"""Shortest scale bar or ruler baseline, as a share of the long side (a bar is 90-220 px at
1024 px, a graduation of eight ticks 100 px or more)."""
POOL = 2
"""Straight lines are sought on the dark-line response max-pooled by this factor: a quarter of
the cost, and thin lines survive (by 3, more hair pieces passed for scale bars)."""
BAR_GAP = 2.0
"""A straight dark line runs on across gaps this long (reference pixels): a crossing hair's
halo, JPEG blocks."""
CAP_REACH = (6.5, 8.0)
"""A scale bar's end caps reach this far to both sides of it (reference pixels), its middle
does not: a thick pen stroke is dark there all along."""
CAP_CLEAR = (4.0, 16.0)
"""Past each end of a scale bar, from the first to the second distance and as far to either
side (reference pixels), most steps are clear (and searched): a straight stretch of hair runs
on past a crossing hair that looks like a cap ..."""
RUN_ON = 0.5
"""... or, if not, what lies there is less than this share as dark as the bar (the median over
the steps): a thin hair passing by a bar's end does not continue it, a hair stretch's own
continuation, or the hairs crossing there, are as dark as it."""
CAP_FAINT = 0.25
"""In the lesion's margin, which is not searched for lines, a scale bar's cap is whatever is
this share as dark as the bar (a cap is thinner than the bar), and the bar runs on as far as
it is RUN_ON as dark as where it was found."""
TICK_BAND = (3.0, 10.0)
"""Graduations run straight across this band beside their baseline (reference pixels; the
shortest ticks are 13 px long at 1024 px), and most do not go on across the other side, as
a hair crossing the baseline does."""
TICK_LENGTH = 0.03
"""Longest faint stroke taken for a tick, as a share of the long side (a long tick is 26 px at
1024 px); faint strokes are sought apart, among the dark-line pixels below the hair seeds."""
TICK_GAP = 0.08
"""Widest spacing of a row of ruler strokes, as a share of the long side (millimetre marks on
ISIC_4810142 are 7 % apart)."""
TICK_RUN = 6
"""Evenly spaced ticks along one side of a baseline that make a ruler; two missing ticks in a
row (under a crossing hair), or a hair crossing the baseline between two, do not break it."""
BUBBLE_GLOW = 8
"""A patch this much brighter than the skin (0-255), on average, may be under a bubble."""
BUBBLE_RADIUS = (6.0, 45.0)
"""Smallest and largest gel bubble radius, in reference pixels."""
PATCH_ROUNDNESS = 0.35
"""A bright patch this round (share of its enclosing circle) may be bubbles: touching bubbles,
and bubbles crossed by hairs, fill less of their circle than one clean bubble."""
CLUSTER = 2.0
"""Touching bubbles make one patch up to this many times the largest bubble."""
RIM_WIDTH = 3
"""Pixels around a bright patch searched for a bubble's dark rim ..."""
RIM_DARK = 20
"""... a fifth of which is this much darker than the skin (0-255) ..."""
RIM_SECTORS = 8
"""... in all but one of this many sectors around the patch."""
HIGHLIGHT = 35
"""A bubble holds a highlight that outshines the skin by this (0-255) ..."""
GLARE = 245
"""... or is this bright (0-255), whatever the skin (a highlight saturates on light skin)."""
SPOT_AREA = 0.05
"""A bubble's highlight (HIGHLIGHT or GLARE bright) covers at most this share of the square of
the largest bubble's radius ..."""
RAYS = 24
"""... and rays cast from it in this many directions ..."""
RING_SHARE = 0.75
"""... hit a dark rim in this share of them, on one circle of a bubble's radius round it
(a crossing hair, or a touching bubble's rim, takes the rest) ..."""
SPOT_CONTRAST = 15
"""... and it outshines the inside (of that circle, or of a bright patch) by this much (0-255),
or on skin too light for that by half the room left below white: glare on bright skin, as
bright as the skin around it, does not."""
AUTO_THRESHOLD = 0.25
"""`auto` calls a photo hairy when its hairs add up to this many long sides of the image."""
SEED_THRESHOLD = 4000.0
"""The original heuristic's cut-off on summed contour length, in full-resolution pixels."""
SEED_MIN_ARC = 100.0
"""The original heuristic ignored contours shorter than this."""


class HairMode(str, Enum):
    """How the hair tag is decided."""

    auto = "auto"
    seed = "seed"
    off = "off"
    metadata = "metadata"
    """The source's own `hairy` tag (ISIC Archive) where it has one, `auto` elsewhere."""

    @property
    def detector(self) -> HairMode:
        """The detector that scans the images in this mode."""
        return HairMode.auto if self is HairMode.metadata else self


def decode_flag(width: int, height: int, *, full: bool = False) -> int:
    """OpenCV imread flag that decodes in colour at 1/2, 1/4 or 1/8 scale while keeping at
    least DECODE_SHARE x WORK_SIZE pixels on the long side (JPEG's cheap reduced decode) and a
    pixel on the short one (OpenCV reduces a PNG by resizing it, which fails at 0), or whole
    when `full`. The pixels as stored, EXIF orientation not applied: sd-scripts trains them so
    (PIL's open), and what is measured and compared must be what is trained on."""
    import cv2

    longest, shortest = max(width, height), min(width, height)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    factor = 1
    for candidate in () if full else (2, 4, 8):
        if longest / candidate >= DECODE_SHARE * WORK_SIZE and shortest >= candidate:
            factor = candidate
    return flags[factor] | cv2.IMREAD_IGNORE_ORIENTATION


def normalise(image: MatLike) -> MatLike:
    """Resize so the long side is WORK_SIZE: the step that makes `auto` resolution-independent."""
    import cv2

    height, width = image.shape[:2]
    scale = WORK_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


@dataclass(frozen=True)
class Lines:
    """What the line finder saw on one working image."""

    score: float
    """Total hair length in long sides of the image (0 for no hair)."""
    hair: np.ndarray
    """uint8 mask of the hair pixels, for the skin-tone measurement."""
    straight_marks: int
    """Scale bars: short straight lines capped across both ends (`_capped`)."""
    bubbles: int
    """Gel bubbles: bright round patches with a highlight, and highlights ringed by a rim."""
    ticks: int
    """Ticks in the longest evenly spaced row, beside a baseline or not: ruler graduations (0
    when no row is long enough)."""
    lesion: np.ndarray
    """uint8 mask of the lesion (and its border), which is not skin. Where the lesion fills
    about half the view, it is judged against the outer skin (`_outer_level`) here, but the
    hairs are still sought over all of it but its darkest: most of them lie on it."""


def _odd(value: float) -> int:
    size = max(3, round(value))
    return size if size % 2 else size + 1


def _disc(size: int) -> MatLike:
    """A square structuring element: separable, so far faster than a disc at these sizes."""
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))


def _axis(points: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance across and position along the least-squares line through points[use]
    (all points if too few are left)."""
    import cv2

    chosen = points[use] if use.sum() >= 2 else points
    vx, vy, cx, cy = cv2.fitLine(chosen, cv2.DIST_L2, 0, 0.01, 0.01).ravel()
    return ((points[:, 0] - cx) * vy - (points[:, 1] - cy) * vx,
            (points[:, 0] - cx) * vx + (points[:, 1] - cy) * vy)


def _ruled(along: np.ndarray, signed: np.ndarray, band: float, width: float,
           longest: int) -> bool:
    """Whether a line is a ruler or scale bar rather than a hair: straight along its whole
    length, and either with ticks (four or more narrow groups of far pixels, on one side), or
    short with end caps across both sides and little else off the line (a scale bar)."""
    import numpy as np

    across = np.abs(signed)
    inliers = across <= band
    share = float(inliers.mean())
    if share < STRAIGHT_SHARE or np.ptp(along[inliers]) < STRAIGHT_SPAN * np.ptp(along):
        return False
    far = across > 2 * band
    positions = np.sort(along[far])
    groups = np.split(positions, np.nonzero(np.diff(positions) > band)[0] + 1)
    ticks = sum(1 for group in groups if group.size and group[-1] - group[0] <= 2 * band)
    if (far.mean() >= 0.1 and ticks >= 4 and ticks >= 0.4 * len(groups)
            and max((signed[far] > 0).mean(), (signed[far] < 0).mean()) >= 0.75):
        return True
    low, high = float(along.min()), float(along.max())
    margin = 0.1 * (high - low)
    wide = band + width / 2
    beside = along[across > wide + 1]
    cap = 3 * longest / REFERENCE
    ends = [(along <= low + margin), (along >= high - margin)]
    capped = all(np.count_nonzero(end & (side * signed > wide)) >= cap
                 for end in ends for side in (1, -1))
    return bool(float((across <= wide).mean()) >= 0.7 and high - low <= SCALE_BAR * longest
                and capped and np.count_nonzero((beside > low + margin)
                                                & (beside < high - margin)) <= 0.15 * along.size)


def _ruler_ticks(parts: _Parts, short: list[int], longest: int) -> int:
    """The longest run of parallel short strokes, evenly spaced across their direction: the
    graduations of a ruler (0 when there is no run of five)."""
    import numpy as np

    chosen = np.array(short, dtype=np.int64)
    vxx, vyy, vxy = parts.spread[chosen].T
    mean, half_gap = (vxx + vyy) / 2, np.hypot((vxx - vyy) / 2, vxy)
    angle = np.arctan2(2 * vxy, vxx - vyy) / 2
    elongated = mean + half_gap > 4 * np.maximum(mean - half_gap, 1e-6)
    strokes = np.column_stack([parts.centre[chosen], np.cos(angle), np.sin(angle),
                               parts.extent[chosen]])[elongated]
    if len(strokes) < 5:
        return 0
    table = strokes
    best = 0
    for cx, cy, dx, dy, size in table:
        offsets = table[:, :2] - (cx, cy)
        parallel = np.abs(table[:, 2] * dx + table[:, 3] * dy) >= np.cos(np.radians(12))
        across = np.abs(offsets[:, 0] * dx + offsets[:, 1] * dy)
        row = parallel & (across <= 0.5 * size + 2)
        positions = np.sort(offsets[row, 0] * -dy + offsets[row, 1] * dx)
        gaps = np.diff(positions)
        if gaps.size < 4:
            continue
        typical = float(np.median(gaps))
        close = gaps <= TICK_GAP * longest
        regular = (gaps >= 0.6 * typical) & (gaps <= 1.4 * typical) & close
        skipped = (gaps >= 1.7 * typical) & (gaps <= 2.3 * typical) & close  # one tick lost
        run = longest_run = 0
        for ok in regular | skipped:
            run = run + 1 if ok else 0
            longest_run = max(longest_run, run)
        best = max(best, longest_run + 1)
    return best if best >= 5 else 0


@cache
def _segment_detector() -> cv2.LineSegmentDetector:
    """OpenCV's line-segment detector (LSD), made once per process."""
    import cv2

    return cv2.createLineSegmentDetector(cv2.LSD_REFINE_NONE)


def _scale_marks(dark: MatLike, line: np.ndarray, searched: np.ndarray, longest: int
                 ) -> tuple[int, int, list[tuple[np.ndarray, np.ndarray]]]:
    """Scale bars and graduated baselines among the straight dark lines, found before thick
    cores are removed (which eats a bar's junctions with its caps) and whatever crosses them.

    Straight segments come from a line-segment detector run on the dark-line response,
    max-pooled by POOL; each is recentred on its line and followed along `line` (dark-line
    pixels, False where not `searched`) to its ends. A scale bar is short, capped across
    both sides at both ends and thin in between (`_capped`); a baseline carries a row of
    evenly spaced ticks on one side (`_comb`). Returns (scale bars, longest tick row, and the
    ends of each bar and of each baseline with a row of TICK_RUN: these lines are no hair).
    """
    import cv2
    import numpy as np

    scale = longest / REFERENCE
    pooled = cv2.dilate(dark, np.ones((POOL, POOL), np.uint8))[::POOL, ::POOL]
    found = _segment_detector().detect(pooled)[0]
    if found is None:
        return 0, 0, []
    segments = found[:, 0].astype(np.float64) * POOL + (POOL - 1) / 2
    spans = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    height, width = line.shape
    grid = np.pad(line.astype(np.uint8) | (~searched).astype(np.uint8) << 1, 1).ravel()
    shades = np.asarray(dark).ravel()

    def look(points: np.ndarray) -> np.ndarray:
        """At each (x, y) point: 1 on a dark line, 2 not searched (the lesion, marker ink or
        vignette), 0 neither or outside the image."""
        return np.asarray(grid.take(_nearest(points, 1, (width + 1, height + 1))))

    def on(points: np.ndarray) -> np.ndarray:
        """Whether each (x, y) point lies on a dark line (False outside the image)."""
        return np.asarray(look(points) == 1)

    def depth(points: np.ndarray) -> np.ndarray:
        """The dark-line response at each (x, y) point (the nearest pixel's, at the border)."""
        return np.asarray(shades.take(_nearest(points, 0, (width - 1, height - 1))))

    band = np.arange(TICK_BAND[0] * scale, TICK_BAND[1] * scale + 1)
    beside = np.concatenate([band, -band])
    chosen = segments[spans >= BAR_MIN * longest]
    half = np.hypot(chosen[:, 2] - chosen[:, 0], chosen[:, 3] - chosen[:, 1])[:, None] / 2
    along = (chosen[:, 2:] - chosen[:, :2]) / (2 * half)
    normal = np.column_stack([-along[:, 1], along[:, 0]])
    middle = (chosen[:, :2] + chosen[:, 2:]) / 2
    # each end quarter of a segment, recentred on the dark line it lies along
    offsets = np.arange(-6.0, 7.0)
    quarters = np.stack([np.linspace(-1, -0.5, 8), np.linspace(0.5, 1, 8)])
    cover = on(middle[:, None, None, None] + (quarters[None, :, None, :, None]
                                                * half[:, :, None, None, None])
               * along[:, None, None, None] + offsets[None, None, :, None, None]
               * normal[:, None, None, None]).mean(axis=3)
    peak = cover.max(axis=2, keepdims=True)
    near = cover >= 0.9 * peak
    shift = (near * offsets).sum(axis=2) / near.sum(axis=2)
    solid = peak[..., 0] >= 0.6  # a quarter in the lesion's margin takes the other's shift
    shift = np.where(solid, shift, shift[:, ::-1])
    ends = (middle[:, None] + quarters.mean(axis=1)[None, :, None] * half[:, :, None]
            * along[:, None] + shift[:, :, None] * normal[:, None])
    along = (ends[:, 1] - ends[:, 0]) / np.hypot(*(ends[:, 1] - ends[:, 0]).T)[:, None]
    normal = np.column_stack([-along[:, 1], along[:, 0]])
    centre = ends.mean(axis=1)
    reach = np.arange(-SCALE_BAR * longest, SCALE_BAR * longest + 1)
    middle_index = int(np.argmin(np.abs(reach)))
    across = np.array([-1.0, 0.0, 1.0])
    bars, best = 0, 0
    marked: list[tuple[np.ndarray, np.ndarray]] = []
    followed = np.zeros((0, 4))  # each line followed: its start, then its far end
    for index in np.argsort(-half[:, 0]):
        if not solid[index].any():
            continue
        if followed.size:  # the other edge of a line followed, or a piece of it
            span = followed[:, 2:] - followed[:, :2]
            length = np.hypot(span[:, 0], span[:, 1])
            relative = ends[index][None] - followed[:, None, :2]
            ahead = (relative * span[:, None]).sum(axis=2) / length[:, None]
            off = np.abs(relative[..., 0] * span[:, None, 1] - relative[..., 1] * span[:, None, 0]
                         ) / length[:, None]
            if np.any((off.max(axis=1) < 3) & (ahead.min(axis=1) > -3)
                      & (ahead.max(axis=1) < length + 3)):
                continue
        line_points = (centre[index] + reach[None, :, None] * along[index]
                       + across[:, None, None] * normal[index])
        cells = look(line_points)
        ray = np.any(cells == 1, axis=0)
        if np.any(cells == 2):  # not searched (the lesion's margin): on while half as dark
            shade = depth(line_points)
            detected = np.abs(reach) <= half[index, 0]  # the segment found: how dark it is
            level = np.median(np.where(cells == 1, shade, 0)[:, detected].max(axis=0))
            ray |= np.any((cells == 2) & (shade >= RUN_ON * level), axis=0)
        start, end = _run(ray, middle_index, BAR_GAP * scale + 1)
        first = centre[index] + reach[start] * along[index]
        last = centre[index] + reach[end] * along[index]
        if end > start:
            followed = np.vstack([followed, np.concatenate([first, last])])
        if end - start < BAR_MIN * longest:
            continue
        ahead, side = along[index], normal[index]
        capped = (end - start <= SCALE_BAR * longest
                  and _capped(look, depth, first, last, ahead, side, scale))
        bars += capped
        marks = on(centre[index] + reach[start:end + 1][None, :, None] * ahead
                   + beside[:, None, None] * side)
        row = 0
        for tick, other in ((marks[:band.size], marks[band.size:]),
                            (marks[band.size:], marks[:band.size])):
            cover = tick.mean(axis=0)
            if np.count_nonzero(np.diff((cover >= 0.8).astype(np.int8)) == 1) >= TICK_RUN - 1:
                row = max(row, _comb(cover, other.mean(axis=0) >= 0.8, scale))
        best = max(best, row)
        if capped or row >= TICK_RUN:
            marked.append((first, last))
    return bars, best if best >= TICK_RUN else 0, marked


def _nearest(points: np.ndarray, offset: int, limit: tuple[int, int]) -> np.ndarray:
    """The flat index, in an image `limit` (x, y) + 1 in size, of the pixel nearest each (x, y)
    point plus `offset`, held within it. Clamped in place (np.clip's own overhead is several
    times the work on the few points looked up) and one flat take is faster than two indices."""
    import numpy as np

    cells: np.ndarray = np.rint(points).astype(np.intp)
    cells += offset
    np.maximum(cells, 0, out=cells)
    np.minimum(cells, limit, out=cells)
    return np.asarray(cells[..., 1] * (limit[0] + 1) + cells[..., 0])


def _run(ray: np.ndarray, middle: int, gap: float) -> tuple[int, int]:
    """First and last index of the run of True in `ray` through index `middle`, bridging
    gaps up to `gap` long."""
    import numpy as np

    off = np.flatnonzero(~ray)
    if off.size == 0:
        return 0, ray.size - 1
    breaks = np.flatnonzero(np.diff(off) > 1)
    starts = np.concatenate([[off[0]], off[breaks + 1]])
    ends = np.concatenate([off[breaks], [off[-1]]])
    wide = (ends - starts + 1) > gap
    before = ends[wide & (ends < middle)]
    after = starts[wide & (starts > middle)]
    return (int(before.max()) + 1 if before.size else 0,
            int(after.min()) - 1 if after.size else ray.size - 1)


def _capped(look: Callable[..., np.ndarray], depth: Callable[..., np.ndarray], first: np.ndarray,
            last: np.ndarray, along: np.ndarray, normal: np.ndarray, scale: float) -> bool:
    """Whether a straight line from `first` to `last` is a scale bar: at both ends a cap
    across both sides and nothing as dark as the line (`depth`) straight ahead, thin along its
    middle. Where not searched (`look` says 2: the lesion's margin), what is CAP_FAINT as dark
    as the line counts as a line, and what lies ahead is as dark as it is."""
    import numpy as np

    ends, inward = np.stack([first, last]), np.stack([along, -along])[:, None]
    reach = np.array(CAP_REACH) * scale
    across = np.concatenate([reach, np.arange(CAP_REACH[1] + 4, CAP_REACH[1] + 8) * scale])
    inner = first + np.linspace(0.2, 0.8, 25)[:, None] * (last - first)

    @cache
    def line() -> float:
        """How dark the line is: the median along its middle."""
        return float(np.median(depth(inner[:, None] + np.array([-1.0, 0.0, 1.0])[:, None]
                                     * normal).max(axis=1)))

    shifts = np.arange(-3 * scale - 1, 2)
    points = ((ends[:, None] - shifts[None, :, None] * inward)[:, :, None, None]
              + np.array([1.0, -1.0])[:, None, None] * across[:, None] * normal)
    cells = look(points)
    hits = cells == 1
    if np.any(cells == 2):
        hits |= (cells == 2) & (depth(points) >= CAP_FAINT * line())
    caps = np.all(hits[..., :reach.size], axis=(2, 3))
    crossing = np.all(np.any(hits[..., reach.size:], axis=3), axis=2)  # a line across, on
    if not np.all(np.any(caps & ~crossing, axis=1)):
        return False
    clear = np.arange(CAP_CLEAR[0] * scale, CAP_CLEAR[1] * scale + 1)
    wide = np.arange(-CAP_CLEAR[1] * scale, CAP_CLEAR[1] * scale + 1)
    past = ends[:, None, None] - clear[:, None, None] * inward[:, None] + wide[:, None] * normal
    ahead = look(past) > 0
    close = np.all(np.any(ahead[:, :2, np.abs(wide) <= CAP_CLEAR[0] * scale], axis=2), axis=1)
    close &= ahead.any(axis=2).mean(axis=1) >= 0.6
    if close.any():
        strength = np.where(ahead, depth(past), 0).max(axis=2)  # how dark, step by step
        if (close & (np.median(strength, axis=1) >= RUN_ON * line())).any():
            return False
    beside = look(inner[None, None] + np.array([1.0, -1.0])[:, None, None, None]
                  * reach[:, None, None] * normal) == 1
    return bool((beside.mean(axis=2) < 0.35).all())


def _comb(cover: np.ndarray, runs_on: np.ndarray, scale: float) -> int:
    """The longest row of evenly spaced ticks beside a baseline, from `cover` (the share of
    the band beside it that is dark, at each position along) and `runs_on` (dark across the
    band on the other side). A tick is a narrow run across the band with clear skin next to
    it; each at its place, a whole number of steps from the first, within a fifth of a step,
    two places missed at most in a row (a hair crossing there adds a run off the step, which is
    skipped); half of them not running on. The step is refitted to all the ticks found (least
    squares), so one tick off its place shifts the places after it by a share of its error."""
    import numpy as np

    edges = np.flatnonzero(np.diff(np.concatenate([[0], (cover >= 0.8).astype(np.int8), [0]])))
    starts, stops = edges[::2], edges[1::2]
    padded = np.concatenate([[0.0, 0.0], cover, [0.0, 0.0]])
    flanked = (padded[starts] <= 0.3) & (padded[stops + 3] <= 0.3)
    past = np.concatenate([[0], np.cumsum(runs_on)])
    alone = past[np.minimum(stops + 1, cover.size)] == past[np.maximum(starts - 1, 0)]
    keep = (stops - starts <= 4 * scale + 3) & flanked
    centres, alone = ((starts + stops - 1) / 2)[keep], alone[keep]
    best = 0
    for index in range(centres.size - 1):
        for following in (index + 1, index + 2):
            if following >= centres.size or centres[following] - centres[index] < 6 * scale:
                continue
            step = centres[following] - centres[index]
            chain, places, rises, place, missed = [index, following], [1], [step], 1, 0
            while missed < 3:
                place += 1
                near = np.abs(centres - centres[index] - step * place)
                nearest = int(np.argmin(near))
                if near[nearest] > 0.2 * step:
                    missed += 1
                    continue
                chain.append(nearest)
                places.append(place)
                rises.append(centres[nearest] - centres[index])
                step, missed = float(np.dot(places, rises) / np.dot(places, places)), 0
            if 2 * alone[chain].sum() >= len(chain):
                best = max(best, len(chain))
    return best


def find_lines(small: MatLike, ink: MatLike, exclude: MatLike, tinted: MatLike) -> Lines:
    """Hairs, rulers and bubbles on a working-size BGR image.

    Dark hairs are a black-hat of the brightest channel (red vessels and brown pigment stay
    bright there), light hairs a top-hat of the darkest; both grow by hysteresis from strong
    seeds. Marker ink (by colour), the lesion (smoothed dark area, with its network and border)
    and `exclude` (vignette) are not searched. Round holes (network cells, bubbles) are filled
    and thick cores removed, so pen strokes, blobs and bubble rims drop out; long thin lines
    remain, except straight ones with ticks or end caps (`_ruled`). Rulers are found apart:
    scale bars and graduated baselines on the dark lines before thick cores are removed
    (`_scale_marks`), and rows of short strokes (`_ruler_ticks`); a line `_ruled` is not hair
    but does not make a ruler (a straight hair crossed by others passes for one). Bubbles are
    found apart too (`_bubbles`). The scale bars and baselines found, and the circles ringing a
    highlight (a bubble's rim, broken where too faint to close), are erased before hairs are
    measured (`_hairs`), so what they join (another rim) is not one long line. `tinted`
    (`skin_coloured`) is the skin the outer skin's brightness is taken from (`_outer_level`).
    """
    import cv2
    import numpy as np

    height, width = small.shape[:2]
    longest = max(height, width)
    scale = longest / REFERENCE
    blue, green, red = cv2.split(small)
    value = cv2.GaussianBlur(cv2.max(cv2.max(blue, green), red), (3, 3), 0)
    low = cv2.GaussianBlur(cv2.min(cv2.min(blue, green), red), (3, 3), 0)
    size = _odd(KERNEL * scale)
    closed = cv2.morphologyEx(value, cv2.MORPH_CLOSE, _disc(size))
    dark = cv2.subtract(closed, value)
    # closed first: the skin between two dark lines (ruler ticks) is no light hair
    light = cv2.morphologyEx(cv2.morphologyEx(low, cv2.MORPH_CLOSE, _disc(size)),
                             cv2.MORPH_TOPHAT, _disc(size))
    strong = ((dark >= np.maximum(cv2.convertScaleAbs(closed, alpha=DARK_LEVELS[0]),
                                  2 * DARK_FLOOR)) | (light >= LIGHT_LEVELS[0]))
    dark_line = dark >= np.maximum(cv2.convertScaleAbs(closed, alpha=DARK_LEVELS[1]),
                                   DARK_FLOOR)
    weak = dark_line | (light >= LIGHT_LEVELS[1])

    if ink.any():
        ink = cv2.dilate(ink, _disc(size))
    quarter = cv2.resize(value, (max(1, width // 4), max(1, height // 4)),
                         interpolation=cv2.INTER_AREA)
    smooth = cv2.GaussianBlur(quarter, (0, 0), 1.5 * scale)
    skin = cv2.resize(exclude, smooth.shape[::-1], interpolation=cv2.INTER_NEAREST) == 0
    level = float(np.median(smooth[skin])) if skin.any() else float(np.median(smooth))
    lesion = _lesion(smooth, skin, level, scale, (width, height))
    searched = cv2.bitwise_or(cv2.bitwise_or(ink, lesion), exclude) == 0
    weak &= searched
    line = searched & dark_line
    bars, combs, marked = _scale_marks(dark, line, searched, longest)
    faint = _components(line.astype(np.uint8))  # 1 px ticks on dark skin are only here
    strokes = np.flatnonzero((faint.extent >= 0.008 * longest)
                             & (faint.extent <= TICK_LENGTH * longest)
                             & (faint.area <= 3 * scale * faint.extent))
    combs = max(combs, _ruler_ticks(faint, strokes[strokes > 0].tolist(), longest))

    count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    seeded = np.zeros(count, dtype=np.uint8)  # a lookup table: which components hold a seed
    seeded[labels[strong & weak]] = 1
    mask = np.asarray(cv2.morphologyEx(seeded.take(np.asarray(labels)), cv2.MORPH_CLOSE, _disc(3)),
                      dtype=np.uint8)  # take: twice as fast as seeded[labels]
    filled = np.zeros_like(mask)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    for index, contour in enumerate(contours):
        if hierarchy[0, index, 3] < 0:
            continue
        area = cv2.contourArea(contour)
        if area < CELL_AREA * scale**2:
            cv2.drawContours(filled, [contour], -1, 1, -1)
        elif area < BUBBLE_AREA * scale**2:
            x, y, w, h = cv2.boundingRect(contour)
            hole = np.zeros((h, w), np.uint8)
            cv2.drawContours(hole, [contour], -1, 1, -1, offset=(-x, -y))
            inside = value[y:y + h, x:x + w][hole > 0]
            _, radius = cv2.minEnclosingCircle(contour)
            round_ = area >= BUBBLE_ROUNDNESS * np.pi * radius**2
            bright = inside.size > 0 and float(inside.mean()) >= level + BUBBLE_GLOW
            if round_ or bright:
                filled[y:y + h, x:x + w] |= hole
    mask |= filled
    raw = cv2.max(dark, light)
    half = cv2.convertScaleAbs(cv2.dilate(raw, _disc(_odd(9 * scale))), alpha=0.5)
    core = ((raw >= half) & (mask > 0)).astype(np.uint8) | filled
    thick = (cv2.distanceTransform(core, cv2.DIST_L2, 3) > MAX_HAIR_WIDTH * scale / 2
             ).astype(np.uint8)
    for spot in cv2.findContours(thick, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
        _, _, w, h = cv2.boundingRect(spot)
        if w * h < MAX_HAIR_WIDTH * scale:  # where two thin lines cross: a scale bar's caps
            cv2.drawContours(thick, [spot], -1, 0, -1)
    mask[cv2.dilate(thick, _disc(_odd(2 * MAX_HAIR_WIDTH * scale))) > 0] = 0

    for first, last in marked:  # no hair; erased, it joins no bubble's rim into a long line
        cv2.line(mask, _pixel(first), _pixel(last), 0, _odd(MAX_HAIR_WIDTH * scale + 2))
    hair, total, parts, short = _hairs(mask, longest)
    ticks = max(_ruler_ticks(parts, short.tolist(), longest), combs)
    bubbles, rims = _bubbles(value, closed, ink, dark_line, hair, level, scale)
    if len(rims):  # the rim round a highlight is no hair, nor what it joins (another bubble's)
        for x, y, radius in rims:
            cv2.circle(mask, (round(x), round(y)), round(radius + RIM_WIDTH * scale / 2), 0,
                       _odd(3 + 0.3 * radius + RIM_WIDTH * scale))
        hair, total, _, _ = _hairs(mask, longest)
    outer = _outer_level(smooth, skin, cv2.resize(tinted, smooth.shape[::-1],
                                                  interpolation=cv2.INTER_AREA) > 0, level)
    return Lines(round(total / longest, 4), hair, bars, bubbles, ticks,
                 lesion if outer == level else _lesion(smooth, skin, outer, scale, (width, height)))


def _lesion(smooth: np.ndarray, skin: np.ndarray, level: float, scale: float,
            size: tuple[int, int]) -> np.ndarray:
    """uint8 mask, at `size` (width, height), of the smoothed skin darker than LESION_RATIO of
    `level`, opened (hairs and network drop out) and grown over the lesion's border."""
    import cv2
    import numpy as np

    found = cv2.morphologyEx((smooth < LESION_RATIO * level).astype(np.uint8) & skin,
                             cv2.MORPH_OPEN, _disc(_odd(8 * scale)))
    return np.asarray(cv2.dilate(cv2.resize(found, size, interpolation=cv2.INTER_NEAREST),
                                 _disc(2 * _odd(KERNEL * scale) + 1)), dtype=np.uint8)


def _outer_level(smooth: np.ndarray, skin: np.ndarray, tinted: np.ndarray, level: float
                 ) -> float:
    """The skin brightness the lesion is judged against: `level`, the median of the skin in
    view, or the median of the skin-coloured (`tinted`) pixels of the skin's outer part
    (OUTER_SKIN) where `level` is darker than LESION_MEDIAN of that: the median is then the
    lesion's own. White labels, glare and black surroundings at the edges are no skin."""
    import numpy as np

    height, width = skin.shape
    rows = ((np.arange(height) + 0.5) / height - 0.5) ** 2
    reach = (rows[:, None] + ((np.arange(width) + 0.5) / width - 0.5)[None] ** 2)[skin]
    if not reach.size:
        return level
    rank = math.ceil((1 - OUTER_SKIN) * (reach.size - 1))
    outer = reach >= np.partition(reach, rank)[rank]
    coloured = smooth[skin][outer][tinted[skin][outer]]
    if not coloured.size:
        return level
    outer_level = float(np.median(coloured))
    return outer_level if level < LESION_MEDIAN * outer_level else level


def skin_coloured(blue: MatLike, red: MatLike) -> np.ndarray:
    """uint8 mask of the pixels whose red exceeds their blue by more than SKIN_TINT of the red
    (rounded to a level): black is not skin-coloured either."""
    import cv2
    import numpy as np

    return np.asarray(cv2.subtract(red, blue) > cv2.convertScaleAbs(red, alpha=SKIN_TINT),
                      dtype=np.uint8)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    """The nearest pixel to an (x, y) point, as OpenCV's drawing functions take it."""
    return round(float(point[0])), round(float(point[1]))


def _hairs(mask: np.ndarray, longest: int) -> tuple[np.ndarray, float, _Parts, np.ndarray]:
    """The hairs among the lines left in `mask`: long, thin and not `_ruled`. Returns their
    mask, their total length, the components and the labels of the short thin ones (a ruler's
    ticks, for `_ruler_ticks`)."""
    import cv2
    import numpy as np

    height, width = mask.shape
    scale = longest / REFERENCE
    parts = _components(mask)
    outline = np.zeros(parts.count, dtype=np.float64)
    for contour in cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]:
        x, y = contour[0, 0]
        outline[parts.labels[y, x]] += cv2.arcLength(contour, True)
    lengths = outline / 2
    areas = parts.area
    thin = (lengths > 0) & (areas <= 1.5 * MAX_HAIR_WIDTH * scale * lengths)
    long = (parts.extent >= MIN_HAIR_LENGTH * longest) & (lengths >= MIN_HAIR_LENGTH * longest)
    short = np.flatnonzero(~long & thin & (lengths >= 0.008 * longest))
    total = 0.0
    hair = np.zeros((height, width), np.uint8)
    band = 2 * scale + 1.5
    for label in np.flatnonzero(long[1:]) + 1:
        points = parts.points[label]
        floats = points.astype(np.float32)
        signed, along = _axis(floats, np.ones(len(points), dtype=bool))
        for reach in (4 * band, 2 * band):
            signed, along = _axis(floats, np.abs(signed) <= reach)
        if thin[label] and not _ruled(along, signed, band, areas[label] / lengths[label],
                                      longest):
            hair[points[:, 1], points[:, 0]] = 1
            total += lengths[label]
    return hair, total, parts, short[short > 0]


def _bubbles(value: MatLike, closed: MatLike, ink: MatLike, dark_line: np.ndarray,
             hair: np.ndarray, level: float, scale: float) -> tuple[int, np.ndarray]:
    """How many gel bubbles (or touching clusters of them): roundish patches brighter than their
    surroundings (a top-hat, at half size, of the photo with its dark lines closed), with a
    highlight that outshines the patch (`_outshines`: glare on bright skin between hairs does
    not), no marker ink (blue and purple are bright in the brightest channel), and either
    ringed all round by a dark rim (`_rimmed`) or, no larger than one bubble, as round and
    brighter than the skin on average (a bubble over the lesion is darker than the skin;
    whitish skin, skin between hairs and crossing light hairs make bright patches as bright,
    but larger or less round, and without a rim all round); and bubbles found from their
    highlight (`_ringed`). Returns the count and `_ringed`'s rims."""
    import cv2
    import numpy as np

    height, width = value.shape[:2]
    half = cv2.resize(closed, (max(1, width // 2), max(1, height // 2)),
                      interpolation=cv2.INTER_AREA)
    glow = cv2.morphologyEx(half, cv2.MORPH_TOPHAT, _disc(_odd(BUBBLE_RADIUS[1] * scale)))
    patches = cv2.morphologyEx((glow >= BUBBLE_GLOW).astype(np.uint8), cv2.MORPH_OPEN,
                               np.ones((2, 2), np.uint8))
    found = 0
    for patch in cv2.findContours(patches, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]:
        _, radius = cv2.minEnclosingCircle(patch)
        roundness = cv2.contourArea(patch) / (np.pi * radius**2) if radius else 0.0
        if (not BUBBLE_RADIUS[0] <= 2 * radius / scale <= CLUSTER * BUBBLE_RADIUS[1]
                or roundness < PATCH_ROUNDNESS):
            continue
        x, y, w, h = cv2.boundingRect(patch)
        left, top = max(0, 2 * x - RIM_WIDTH), max(0, 2 * y - RIM_WIDTH)
        box = (slice(top, min(height, 2 * (y + h) + RIM_WIDTH)),
               slice(left, min(width, 2 * (x + w) + RIM_WIDTH)))
        inside = np.zeros_like(value[box])
        cv2.drawContours(inside, [2 * patch], -1, 1, -1, offset=(-left, -top))
        ring = cv2.subtract(cv2.dilate(inside, _disc(2 * RIM_WIDTH + 1)), inside)
        shade = value[box][inside > 0]
        found += int(shade.size > 0
                     and int(shade.max()) >= min(level + HIGHLIGHT, GLARE)
                     and _outshines(int(shade.max()), float(np.median(shade)))
                     and float(ink[box][inside > 0].mean()) < 0.2
                     and (_rimmed(value[box], ring, level)
                          or (roundness >= BUBBLE_ROUNDNESS
                              and 2 * radius / scale <= BUBBLE_RADIUS[1]
                              and float(shade.mean()) >= level + BUBBLE_GLOW)))
    ringed, rims = _ringed(value, dark_line, hair, level, scale)
    return found + ringed, rims


def _ringed(value: MatLike, dark_line: np.ndarray, hair: np.ndarray, level: float, scale: float
            ) -> tuple[int, np.ndarray]:
    """Bubbles found from their highlight: a small bright spot, off the hair, from which rays
    hit a dark rim (`dark_line` pixels) mostly on one circle of a bubble's radius well
    round the spot (`_circles`), which outshines the circle's inside, itself brighter than
    what lies past the rim (`_lit`), and whose glow stays inside (`_confined`). Finds bubbles
    in clusters, over the lesion and crossed by hairs or pen, whose bright patches `_bubbles`
    cannot tell from skin. Returns the count, and each circle (x, y, radius) that rings a spot
    off the hair, lit or not: a rim, whether or not the bubble glows enough to be counted."""
    import cv2
    import numpy as np

    none = np.zeros((0, 3))
    spots = cv2.threshold(value, min(level + HIGHLIGHT, GLARE) - 1, 1, cv2.THRESH_BINARY)[1]
    x, y, w, h = cv2.boundingRect(spots)
    if w == 0:
        return 0, none
    parts = _components(spots[y:y + h, x:x + w])  # labelled within the spots' bounding box
    largest = BUBBLE_RADIUS[1] * scale
    small = np.flatnonzero((parts.area <= SPOT_AREA * largest**2) & (parts.extent <= largest))
    small = small[small > 0]
    if small.size == 0:
        return 0, none
    height, width = value.shape[:2]
    angles = np.linspace(0, 2 * np.pi, RAYS, endpoint=False)
    steps = np.arange(1.0, 2 * largest)  # the far rim is up to 5/3 of a radius off the spot
    rays = (np.stack([np.cos(angles), np.sin(angles)], 1)[:, None] * steps[:, None]
            ).astype(np.float32)
    start = (parts.centre[small] + (x, y)).astype(np.float32)
    xs = np.rint(start[:, None, None, 0] + rays[..., 0]).astype(np.int32)  # (spot, ray, step)
    ys = np.rint(start[:, None, None, 1] + rays[..., 1]).astype(np.int32)
    within = (xs.astype(np.uint32) < width) & (ys.astype(np.uint32) < height)
    xs, ys = xs * within, ys * within
    hit = dark_line.ravel().take(ys * width + xs) & within  # one flat take: faster than two
    reach, radius, ringed, centre = _circles(hit, steps, angles, scale)
    found, rims = 0, []
    for index in np.flatnonzero(ringed):
        pixels = parts.points[small[index]] + (x, y)
        if hair[pixels[:, 1], pixels[:, 0]].any():  # a light hair's brightest stretch
            continue
        rims.append((*(start[index] + centre[index]), radius[index]))
        peak = int(value[pixels[:, 1], pixels[:, 0]].max())
        inside = _lit(value[ys[index], xs[index]], hit[index], reach[index], steps, peak)
        found += inside is not None and _confined(
            value, (inside + peak) / 2, parts.centre[small[index]] + (x, y), radius[index])
    return found, np.array(rims).reshape(-1, 3)


def _circles(hit: np.ndarray, steps: np.ndarray, angles: np.ndarray, scale: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From `hit` (spot, ray, step: on a dark line), how far each ray runs to its first hit,
    the radius of the circle fitted to the hits (refitted to those near it), whether it rings
    the spot (RING_SHARE of the rays hit it, of a bubble's radius, the spot well inside) and
    its centre (x, y) from the spot."""
    import numpy as np

    seen = hit.any(axis=2)
    reach = np.where(seen, steps[hit.argmax(axis=2)], 0.0)
    hx, hy = reach * np.cos(angles), reach * np.sin(angles)  # each hit, from the spot
    design = np.stack([hx, hy, np.ones_like(hx)], axis=2)
    weight = seen.astype(np.float64)
    for _ in range(3):  # weighted least squares of x^2 + y^2 + d x + e y + f = 0, per spot
        normal = np.einsum("sr,sri,srj->sij", weight, design, design) + 1e-6 * np.eye(3)
        target = np.einsum("sr,sri,sr->si", weight, design, -(hx**2 + hy**2))
        d, e, f = np.linalg.solve(normal, target[..., None])[..., 0].T
        cx, cy = -d / 2, -e / 2
        radius = np.sqrt(np.maximum(cx**2 + cy**2 - f, 0))
        off = np.abs(np.hypot(hx - cx[:, None], hy - cy[:, None]) - radius[:, None])
        weight = (seen & (off <= 1.5 + 0.15 * radius[:, None])).astype(np.float64)  # on it
    # a highlight lies well inside its rim (drawn at two thirds of the radius), not on it as
    # a glint beside a hair that the circle follows
    ringed = ((weight.mean(axis=1) >= RING_SHARE) & (np.hypot(cx, cy) < 0.8 * radius)
              & (radius >= BUBBLE_RADIUS[0] * scale) & (radius <= BUBBLE_RADIUS[1] * scale))
    return reach, radius, ringed, np.column_stack([cx, cy])


def _lit(shades: np.ndarray, hit: np.ndarray, reach: np.ndarray, steps: np.ndarray,
         peak: int) -> float | None:
    """The inside's brightness if a spot `peak` bright lights a bubble, else None; from
    `shades` along its rays (ray, step) and where each first `hit` the rim (`reach`). The spot
    outshines the inside (`_outshines`), the inside is BUBBLE_GLOW brighter than past the rim,
    and past the rim at most one ray is half as bright as the spot over the inside (a light
    hair runs on through the rim)."""
    import numpy as np

    seen = (reach > 0)[:, None]
    inner = (steps >= 2) & (steps < 0.8 * reach[:, None]) & seen  # off the spot and the rim
    past = ~hit & (steps > reach[:, None])
    leave = steps[past.argmax(axis=1)][:, None]  # where each ray leaves the rim
    outer = (steps >= leave + 1) & (steps <= leave + 4) & past.any(axis=1, keepdims=True) & seen
    if not inner.any() or not outer.any():
        return None
    inside = float(np.median(shades[inner]))
    lit = np.count_nonzero((outer & (shades >= (inside + peak) / 2)).any(axis=1))
    glows = inside - float(np.median(shades[outer])) >= BUBBLE_GLOW
    return inside if _outshines(peak, inside) and glows and lit < 2 else None


def _confined(value: MatLike, level: float, spot: np.ndarray, radius: float) -> bool:
    """Whether the pixels at least `level` bright joined to the spot at `spot` (x, y) stay
    within `radius` of it: a highlight does, a light hair crossing a rimmed cell of the
    lesion's network runs on."""
    import cv2
    import numpy as np

    height, width = value.shape[:2]
    reach = int(radius) + 2
    x, y = round(float(spot[0])), round(float(spot[1]))
    left, top = max(0, x - reach), max(0, y - reach)
    window = value[top:min(height, y + reach + 1), left:min(width, x + reach + 1)] >= level
    _, labels = cv2.connectedComponents(window.astype(np.uint8), connectivity=8)
    near = labels[max(0, y - top - 1):y - top + 2, max(0, x - left - 1):x - left + 2]
    joined = np.isin(labels, near[near > 0])
    return not np.concatenate([joined[0], joined[-1], joined[:, 0], joined[:, -1]]).any()


def _outshines(peak: int, inside: float) -> bool:
    """Whether a highlight `peak` outshines the bubble's `inside`: by SPOT_CONTRAST, or by half
    the room left below white on skin so light that a highlight cannot (glare on skin, as
    bright as the skin around it, does neither)."""
    return peak - inside >= min(SPOT_CONTRAST, (255 - inside) / 2)


def _rimmed(value: np.ndarray, ring: np.ndarray, level: float) -> bool:
    """Whether a dark rim runs all round: in nearly every sector of the ring around a patch, a
    fifth of the pixels is RIM_DARK darker than the skin (hairs bounding a bright patch of skin
    darken only some sides)."""
    import numpy as np

    ys, xs = np.nonzero(ring)
    if ys.size == 0:
        return False
    angle = np.arctan2(ys - ys.mean(), xs - xs.mean())
    sector = ((angle + np.pi) / (2 * np.pi) * RIM_SECTORS).astype(int) % RIM_SECTORS
    shades = value[ys, xs]
    dark = [bool(np.any(sector == k)) and float(np.percentile(shades[sector == k], 20))
            <= level - RIM_DARK for k in range(RIM_SECTORS)]
    return sum(dark) >= RIM_SECTORS - 1


@dataclass(frozen=True)
class _Parts:
    """The 8-connected components of a mask, label 0 the background, with their statistics."""

    count: int
    labels: np.ndarray
    points: list[np.ndarray]
    """Each label's (x, y) pixels."""
    area: np.ndarray
    extent: np.ndarray
    """Larger side of the bounding box."""
    centre: np.ndarray
    """(x, y) centroid."""
    spread: np.ndarray
    """Variance of x, of y, and their covariance."""


def _components(mask: np.ndarray) -> _Parts:
    """The components of `mask` and their statistics, computed from the set pixels alone: OpenCV's
    own statistics cost several times the labelling."""
    import cv2
    import numpy as np

    count, labels = cv2.connectedComponents(mask, connectivity=8)
    found = cv2.findNonZero(mask)  # (x, y) in row order, as np.nonzero but several times faster
    pixels = np.zeros((0, 2), np.int64) if found is None else found[:, 0].astype(np.int64)
    owner = labels.ravel().take(pixels[:, 1] * labels.shape[1] + pixels[:, 0])
    order = np.argsort(owner, kind="stable")
    points = np.take(pixels, order, axis=0)  # pixels[order] takes row by row, many times slower
    starts = np.searchsorted(owner[order], np.arange(count))
    area = np.diff(np.append(starts, len(points)))
    if len(points) == 0:
        zeros = np.zeros((count, 2))
        return _Parts(count, labels, [points] * count, area, area, zeros, np.zeros((count, 3)))
    extent = (np.maximum.reduceat(points, starts)
              - np.minimum.reduceat(points, starts)).max(axis=1) + 1
    xs, ys = points.astype(np.float64).T
    share = np.maximum(area, 1)

    def mean(values: np.ndarray) -> np.ndarray:
        """Each label's mean of `values` (one per pixel), column by column: stacking the
        columns first copies every pixel's."""
        return np.asarray(np.add.reduceat(values, starts) / share)

    cx, cy = mean(xs), mean(ys)
    centre = np.column_stack([cx, cy])
    spread = np.column_stack([mean(xs * xs) - cx * cx, mean(ys * ys) - cy * cy,
                              mean(xs * ys) - cx * cy])
    return _Parts(count, labels, np.split(points, starts[1:]), area, extent, centre, spread)


def auto_score(image: MatLike) -> float:
    """Total length of hair found on `image`, in long sides of the image (0 for no hair)."""
    from medsynth_kohya.data.measure import measure

    return measure(image).hair_score


def seed_score(gray: MatLike) -> float:
    """The original heuristic on a full-resolution grayscale image: summed open arc length.

    Grayscale, 5x5 Gaussian blur, Canny 50/250, external contours, open arc length of each
    contour of at least 100 px, summed.
    """
    import cv2

    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lengths = (cv2.arcLength(contour, False) for contour in contours)
    return round(float(sum(length for length in lengths if length >= SEED_MIN_ARC)), 4)


def is_hairy(score: float, mode: HairMode) -> bool:
    """Apply the cut-off that belongs to the detector that produced `score`."""
    threshold = SEED_THRESHOLD if mode is HairMode.seed else AUTO_THRESHOLD
    return bool(score > threshold)  # a plain bool, also for a NumPy score: records are JSON
