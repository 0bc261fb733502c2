"""Image measurements: hair, skin tone and artefacts, from one reduced decode of a photo.

`measure` is the one public entry point: `prepare` calls it once per image, and an evaluation
of generated images calls the same function, so real and synthetic sets are measured alike.
Everything is judged on the photo resized to `hair.WORK_SIZE` on its long side, so the same
photo gets the same figures at 640 px and at 6000 px.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.data import hair

if TYPE_CHECKING:
    import numpy as np
    from cv2.typing import MatLike

VERSION = 20
"""Changes whenever a measurement would give other figures (or the scan finds more, such as
a PNG's transparency, what Pillow refuses, what the JPEG decoder fills in, the EXIF
orientation, or no colour), so cached scans are redone."""
TONES = (("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0),
         ("brown", -30.0), ("dark", -math.inf))
"""ITA categories, lightest first, each with the angle (degrees) it lies above."""
ARTEFACTS = ("vignette", "ruler", "bubbles")
"""The artefact fields of a Measurement (and manifest columns), in caption order."""
VIGNETTE_LEVEL = 0.35
"""A pixel darker than this share of the skin's brightness (`skin_level`) may be vignette."""
SURROUNDINGS = 60
"""A photo whose median is at most this bright (0-255) may be mostly dark surroundings: those
of a dermoscope's field are near black, while very dark skin (L* 20) is 61 or more."""
FIELD_SHARE = 10
"""Percent of the photo the brightest skin-coloured pixels must make to count as the skin of a
round field in wide dark surroundings (more than a bubble's highlights make)."""
VIGNETTE_SIZE = 21
"""Dark regions thinner than this (reference pixels) are not vignette (hair, ruler marks)."""
BLACK = 20
"""Pixels whose brightest channel is below this (0-255) are never skin."""
SKIN_STEP = 6
"""The skin colour is the median of every sixth pixel in each direction (plenty for a median)."""
MIN_SKIN_SHARE = 0.02
"""Below this share of healthy-skin pixels the photo gets no ITA."""
MIN_YELLOW = 2.0
"""Below this median b* of the skin the photo gets no ITA: skin of every ITA category is
yellowish (b* about 5 to 30), so a lower b* means a grey photo or a blue/magenta white-balance
cast, where arctan((L* - 50) / b*) only says ~90 degrees ("very light") whatever the skin."""


_Y_Z_FROM_BGR = ((0.072169, 0.715160, 0.212671),
                 (0.950227 / 1.088754, 0.119193 / 1.088754, 0.019334 / 1.088754))
"""CIE Y and Z over the D65 white's from linear sRGB (IEC 61966-2-1), in BGR order."""
_EPSILON, _SLOPE = (6 / 29) ** 3, 3 * (6 / 29) ** 2
"""Below _EPSILON, CIE L*a*b* uses the straight line t / _SLOPE + 4/29 instead of t's cube root."""


@dataclass(frozen=True)
class Measurement:
    """What one photo shows: hair, skin tone (ITA and its category) and artefacts."""

    hair_score: float
    """Total hair length in long sides of the photo."""
    hairy: bool
    ita: float | None
    """Individual Typology Angle of the healthy skin, degrees; None with no skin visible."""
    skin_tone: str | None
    vignette: bool
    """Dark corners: the round field of a contact dermoscope."""
    ruler: bool
    """Ruler graduations or a scale bar."""
    bubbles: bool
    """Gel or air bubbles under the dermoscope's glass."""


def tone_category(ita: float) -> str:
    """The standard ITA category: very light > 55 > light > 41 > intermediate > 28 > tan > 10
    > brown > -30 > dark (degrees)."""
    return next(name for name, above in TONES if ita > above)


def ita_degrees(lightness: float, yellow: float) -> float:
    """ITA = arctan((L* - 50) / b*) in degrees; b* at or below 0 (bluish white balance) counts
    as barely positive, so the angle stays within -90..90."""
    return math.degrees(math.atan((lightness - 50.0) / max(yellow, 1e-6)))


def lightness_yellow(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIE L* and b* (D65) of 8-bit sRGB pixels (n x 3, BGR), by the standard's formulas.

    Not OpenCV's BGR2Lab: its tabulated gamma puts L* up to 0.2 off, 0.09 low on average over
    skin colours, which moves ITA by a quarter of a degree (opencv/opencv#12808).
    """
    import numpy as np

    code = np.arange(256) / 255
    linear = np.where(code <= 0.04045, code / 12.92, ((code + 0.055) / 1.055) ** 2.4)
    luminance = linear[bgr] @ np.array(_Y_Z_FROM_BGR).T
    cube = np.where(luminance > _EPSILON, np.cbrt(luminance), luminance / _SLOPE + 4 / 29)
    return 116 * cube[:, 0] - 16, 200 * (cube[:, 0] - cube[:, 1])


def pixel_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (a path or the file's bytes), by imagesize as
    sd-scripts sizes its images; None where it finds none. sd-scripts does not catch
    imagesize's error on a header it cannot walk (training stops; a header cut short raises
    ValueError, struct.error or IndexError), and asks Pillow only where the width is 0, which
    Pillow refuses as well."""
    import imagesize

    try:
        width, height = imagesize.get(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (ValueError, IndexError, struct.error):
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


HEARS_DECODERS = os.name == "posix"
"""Whether `decoders_said` can catch the decoders' lines here (a pipe on fd 2)."""


@contextmanager
def decoders_said() -> Iterator[list[str]]:
    """The lines C libraries (libjpeg, libpng) write straight to the process's stderr in the
    block, kept off the terminal (they name no file; the scan reports per file what they
    mean). A pipe takes them whose writing end never blocks: what passes its buffer (64 KiB on
    Linux) is lost. Lines holding terminal controls are a progress bar's, which redraws.
    Elsewhere than POSIX the lines go to the terminal and none are returned. Stderr is the
    caller's again however the block ends (closed again, where it was closed: 2>&-)."""
    said: list[str] = []
    if not HEARS_DECODERS:
        yield said
        return
    import fcntl

    try:
        kept = os.dup(2)
    except OSError:  # stderr closed
        kept = -1
    ends = os.pipe()  # with stderr closed, one end may be 2: both are moved past it
    read, write = (fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 3) for end in ends)
    for end in ends:
        os.close(end)
    try:
        os.set_blocking(write, False)
        os.dup2(write, 2)
        os.close(write)
        write = -1
        yield said
    finally:
        if kept >= 0:
            os.dup2(kept, 2)
            os.close(kept)
        else:
            os.close(2)
        if write >= 0:  # interrupted before it was handed to stderr
            os.close(write)
        with os.fdopen(read, "rb") as pipe:
            text = pipe.read().decode("utf-8", "replace")
        said += [line.strip() for line in text.splitlines()
                 if line.strip() and "\x1b" not in line]


def decode(path: str | Path, width: int, height: int) -> MatLike | None:
    """Decode `path` at the smallest JPEG scale that keeps WORK_SIZE pixels; None if it cannot.
    The decoders' lines are kept off the terminal (the caller reports a file it cannot use)."""
    import cv2
    import numpy as np

    data = np.fromfile(str(path), dtype=np.uint8)
    with decoders_said():
        image = cv2.imdecode(data, hair.decode_flag(width, height))
    return None if image is None or image.size == 0 else image


def _vignette(value: np.ndarray, tinted: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """uint8 mask of large dark regions that touch the border, grown by twice the hair kernel
    (their dim rim is not skin either), and how many corners are dark.

    Found and grown on a quarter-size copy: the regions are large, and this keeps the step cheap.
    """
    import cv2
    import numpy as np

    height, width = value.shape
    dark = (value < VIGNETTE_LEVEL * skin_level(value, tinted)).astype(np.uint8)
    corners = _corners(dark)
    quarter = cv2.resize(dark, (max(1, width // 4), max(1, height // 4)),
                         interpolation=cv2.INTER_AREA)
    size = max(3, round(VIGNETTE_SIZE * scale / 4) | 1)
    opened = cv2.morphologyEx(quarter, cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    big = stats[:, cv2.CC_STAT_AREA] >= 0.002 * opened.size
    keep = np.zeros(count, dtype=bool)
    keep[np.unique(edges)] = True
    keep &= big
    keep[0] = False
    if not keep.any():
        return np.zeros_like(value), corners
    grow = max(3, round(2 * hair.KERNEL * scale / 4) | 1)
    border = cv2.dilate(keep[labels].astype(np.uint8),
                        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    mask = cv2.resize(border, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(mask, dtype=np.uint8), corners


def skin_level(value: np.ndarray, tinted: np.ndarray) -> float:
    """The brightness vignette is judged against: the photo's median, or, where that is near
    black (SURROUNDINGS) and darker than VIGNETTE_LEVEL of the brightest skin-coloured pixels
    (`tinted`, uint8) that make FIELD_SHARE percent of the photo (a dermoscope's round field in
    wide dark surroundings; white labels and glare are no skin), the median of the pixels not
    darker than that."""
    import numpy as np

    counts = _cumulative(value)
    median = _middle(counts, 0)
    if median > SURROUNDINGS:
        return median
    skin = _cumulative(value, tinted)
    top = int(counts[-1]) - (int(counts[-1]) - 1) * (100 - FIELD_SHARE) // 100
    # fewer skin-coloured pixels than that: a rank below 0, level 0, nothing is darker
    bright = VIGNETTE_LEVEL * int(np.searchsorted(skin, int(skin[-1]) - top, side="right"))
    if median >= bright:
        return median
    return _middle(counts, int(counts[math.ceil(bright) - 1]))  # from the first level >= bright


def _cumulative(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """How many of the uint8 `values` (where `mask` is set) lie at or below each level 0-255."""
    import cv2
    import numpy as np

    return np.cumsum(cv2.calcHist([values], [0], mask, [256], [0, 256]).ravel().astype(np.int64))


def _middle(counts: np.ndarray, start: int) -> float:
    """The median of the values ranked `start` and up, from their cumulative histogram (several
    times faster than np.median)."""
    import numpy as np

    rest = int(counts[-1]) - start
    return sum(int(np.searchsorted(counts, start + rank, side="right"))
               for rank in ((rest - 1) // 2, rest // 2)) / 2


def _corners(mask: np.ndarray) -> int:
    """How many of the four corners lie in `mask`."""
    patch = max(2, min(mask.shape) // 50)
    return sum(int(mask[rows, cols].mean() > 0.5) for rows in (slice(0, patch),
               slice(-patch, None)) for cols in (slice(0, patch), slice(-patch, None)))


def _skin_ita(small: MatLike, not_skin: np.ndarray) -> float | None:
    """ITA from the median L* and b* of the healthy-skin pixels; None when too few, or when
    their b* is below MIN_YELLOW."""
    import numpy as np

    pixels = small[::SKIN_STEP, ::SKIN_STEP][not_skin[::SKIN_STEP, ::SKIN_STEP] == 0]
    if len(pixels) < MIN_SKIN_SHARE * not_skin.size / SKIN_STEP**2:
        return None
    lightness, yellow = (float(np.median(channel)) for channel in lightness_yellow(pixels))
    if yellow < MIN_YELLOW:
        return None
    return round(ita_degrees(lightness, yellow), 2)


def measure_reduced(small: MatLike) -> Measurement:
    """Measure a BGR photo already reduced to WORK_SIZE on its long side."""
    import cv2
    import numpy as np

    scale = max(small.shape[:2]) / hair.REFERENCE
    blue, green, red = cv2.split(small)
    value = cv2.max(cv2.max(blue, green), red)
    tinted = hair.skin_coloured(blue, red)
    border, corners = _vignette(value, tinted, scale)
    ink = (cv2.subtract(blue, red) > hair.INK_MARGIN).astype(np.uint8)
    lines = hair.find_lines(small, ink, border, tinted)
    marks = ink | lines.hair
    black = (value < BLACK).astype(np.uint8)
    near = max(3, round(hair.KERNEL * scale) | 1)
    not_skin = (border | lines.lesion | black
                | cv2.dilate(marks, cv2.getStructuringElement(cv2.MORPH_RECT, (near, near))))
    ita = _skin_ita(small, not_skin)
    return Measurement(
        hair_score=float(lines.score), hairy=hair.is_hairy(lines.score, hair.HairMode.auto),
        ita=ita,
        skin_tone=None if ita is None else tone_category(ita),
        vignette=corners >= 2, ruler=lines.straight_marks > 0 or lines.ticks > 0,
        bubbles=lines.bubbles > 0)


def measure(image: MatLike | str | Path) -> Measurement:
    """Hair, skin tone and artefacts of one photo: a file path or a decoded BGR array.

    Raises ValueError for a file OpenCV cannot decode. A path is decoded once, at a reduced
    JPEG scale; an array (e.g. a generated image) is resized the same way.
    """
    if isinstance(image, (str, Path)):
        size = pixel_size(image)
        decoded = None if size is None else decode(image, *size)
        if decoded is None:
            raise ValueError(f"{image} cannot be decoded as an image")
        image = decoded
    if image.ndim == 2:
        import cv2

        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return measure_reduced(hair.normalise(image))
