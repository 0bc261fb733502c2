"""Hair detectors: a resolution-independent one (`auto`) and the original 2023 heuristic (`seed`).

`auto` judges a photo normalised to a fixed working size, so the same photo at 640 px and at
6000 px gets the same answer; `seed` reproduces the original run's captions exactly.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cv2.typing import MatLike

WORK_SIZE = 512
"""Long side, in pixels, of the image that `auto` judges."""
MIN_HAIR_LENGTH = 0.08
"""Shortest dark line counted as hair, as a share of the long side (ruler ticks are shorter)."""
MAX_HAIR_WIDTH = 5.0
"""Widest mean thickness, in working pixels, of a line counted as a hair."""
BLACKHAT_LEVEL = 14
"""How much darker than its surroundings (0-255) a pixel must be to belong to a hair."""
AUTO_THRESHOLD = 1.0
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


def reduced_decode_flag(width: int, height: int, gray: bool = False) -> int:
    """OpenCV imread flag that decodes at 1/2, 1/4 or 1/8 scale while keeping >= WORK_SIZE px."""
    import cv2

    longest = max(width, height)
    color = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    grey = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    factor = 1
    for candidate in (2, 4, 8):
        if longest / candidate >= WORK_SIZE:
            factor = candidate
    return (grey if gray else color)[factor]


def normalise(image: MatLike) -> MatLike:
    """Resize so the long side is WORK_SIZE: the step that makes `auto` resolution-independent."""
    import cv2

    height, width = image.shape[:2]
    scale = WORK_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def auto_score(image: MatLike) -> float:
    """Total length of thin, long, dark lines, in long sides of the image (0 for no hair).

    Works on the brightest channel, where red vessels and brown pigment stay light and hair
    stays dark; a black-hat transform keeps only lines thinner than its kernel. A connected
    line's length is half its outline (holes included), its width area / length, so crossing
    hairs still count as thin while blobs and short ruler ticks do not.
    """
    import cv2
    import numpy as np

    small = normalise(image)
    if small.ndim == 3:
        blue, green, red = cv2.split(small)
        value = cv2.max(cv2.max(blue, green), red)
    else:
        value = small
    value = cv2.GaussianBlur(value, (3, 3), 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    blackhat = cv2.morphologyEx(value, cv2.MORPH_BLACKHAT, kernel)
    mask = (blackhat >= BLACKHAT_LEVEL).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = np.zeros(count, dtype=np.float64)
    for contour in contours:
        x, y = contour[0, 0]
        outline[labels[y, x]] += cv2.arcLength(contour, True)
    min_length = MIN_HAIR_LENGTH * WORK_SIZE
    total = 0.0
    for label in range(1, count):
        extent = max(stats[label, cv2.CC_STAT_WIDTH], stats[label, cv2.CC_STAT_HEIGHT])
        length = outline[label] / 2
        thin = length > 0 and stats[label, cv2.CC_STAT_AREA] / length <= MAX_HAIR_WIDTH
        if extent >= min_length and length >= min_length and thin:
            total += length
    return round(total / WORK_SIZE, 4)


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
    return score > threshold
