"""Near-copies: synthetic images that reproduce a training photo, found by a perceptual hash.

The hash is a 255-bit DCT hash (the 16x16 lowest frequencies but the mean, each compared with
their median, on a 64x64 grey thumbnail of the photo reduced to a 128 px long side). A training
photo is indexed under itself, its crops of 90-95 % of its sides and its largest square crops
(the framing of a square generation), each at positions at most 2.5 % of the crop's side apart
(about 70 hashes for a 4:3 photo). A synthetic image is looked up under 8: each of its quarter
turns, each also mirrored (dermoscopy has no up), so a copy that was resized, re-encoded,
flipped, turned, cropped by up to about 10 % or cropped to a square lands near one of the
training hashes. It is a near-copy when its nearest training hash differs in at most
`THRESHOLD` of the bits. Measured on the 7 real ISIC 2020 photos of the seed set: copies
(cropped to 90 % of each side at a random position, in each of the 8 orientations, resized
0.2-1.2x, JPEG quality 60) differ in at most 0.19 of the bits, square crops at any position in
at most 0.10; different patients' photos, in any orientation, in at least 0.33.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from cv2.typing import MatLike
    from numpy.typing import NDArray

HASH_SIDE = 16
"""DCT coefficients per side: 16 x 16 - 1 = 255 bits."""
HASH_BITS = HASH_SIDE * HASH_SIDE - 1
THRESHOLD = 0.25
"""Largest fraction of differing bits that still makes a near-copy."""
UNRELATED = 0.5
"""The fraction of bits two unrelated images' hashes differ in (each bit is a coefficient
against the median, so half are set): a threshold this high flags any image."""
CROP_SCALES = (0.95, 0.9)
CROP_STEP = 0.025
"""Largest shift between neighbouring crops, as a fraction of the crop's side: a copy shifted
by half of it from the nearest crop still differs in few enough bits."""
WORK_SIDE = 128
"""Long side images are reduced to before hashing."""
NEAREST = 3
"""Training images kept per synthetic image in the report."""


def _hash(grey: MatLike) -> NDArray[np.uint8]:
    """The packed 255-bit DCT hash of a grey image (any size)."""
    import cv2
    import numpy as np

    side = HASH_SIDE * 4
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    coefficients = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE].flatten()[1:]
    packed: NDArray[np.uint8] = np.packbits(coefficients > np.median(coefficients))
    return packed


def _grey(image: MatLike) -> MatLike:
    """Grey, long side at most WORK_SIDE: crops of it are hashed as well as the full size."""
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = grey.shape[:2]
    scale = WORK_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


def _orientations(grey: MatLike) -> Iterator[MatLike]:
    """The 8 ways a photo can lie (the dihedral group): each quarter turn, and its mirror.
    Dermoscopy has no up, so a copy may be turned or flipped any of these ways."""
    import numpy as np

    for turns in range(4):
        turned = np.rot90(grey, turns)
        yield np.ascontiguousarray(turned)
        yield np.ascontiguousarray(turned[:, ::-1])


def query_hash(image: MatLike) -> NDArray[np.uint8]:
    """The hashes a synthetic image is looked up by, one row per orientation: whichever way a
    training photo was flipped or turned, one row is the hash of it upright."""
    import numpy as np

    return np.stack([_hash(view) for view in _orientations(_grey(image))])


def _positions(room: int, side: int) -> list[int]:
    """Offsets from 0 to `room` at most CROP_STEP of the crop's `side` apart."""
    import math

    import numpy as np

    count = math.ceil(room / (side * CROP_STEP)) + 1
    return sorted({int(offset) for offset in np.linspace(0, room, count)})


def _views(grey: MatLike) -> Iterator[MatLike]:
    """The photo, its crops of the same shape and its largest square crops (a square
    generation's framing), at positions CROP_STEP apart (orientations are the query's side)."""
    height, width = grey.shape[:2]
    shapes = [(height, width)] + [(max(1, int(height * scale)), max(1, int(width * scale)))
                                  for scale in CROP_SCALES] + [(min(height, width),) * 2]
    for crop_h, crop_w in dict.fromkeys(shapes):
        for top in _positions(height - crop_h, crop_h):
            for left in _positions(width - crop_w, crop_w):
                yield grey[top:top + crop_h, left:left + crop_w]


def reference_hashes(image: MatLike) -> NDArray[np.uint8]:
    """Every hash a training photo is indexed under, one row each."""
    import numpy as np

    return np.stack([_hash(view) for view in _views(_grey(image))])


@dataclass(frozen=True)
class Match:
    """A training image near a synthetic one, and their hash distance (fraction of bits)."""

    training_id: str
    distance: float


class HashIndex:
    """Training hashes in one array; lookups compare a query with all of them at once."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._blocks: list[NDArray[np.uint8]] = []
        self._owners: list[NDArray[np.int64]] = []

    def add(self, identifier: str, image: MatLike) -> None:
        """Index one training photo under all its views."""
        import numpy as np

        hashes = reference_hashes(image)
        self._blocks.append(hashes)
        self._owners.append(np.full(len(hashes), len(self._ids), dtype=np.int64))
        self._ids.append(identifier)

    def __len__(self) -> int:
        return len(self._ids)

    def nearest(self, query: NDArray[np.uint8], k: int = NEAREST) -> list[Match]:
        """The `k` training images whose closest view is nearest to a row of `query` (the
        hashes of `query_hash`)."""
        import numpy as np

        if not self._ids:
            return []
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
            self._owners = [np.concatenate(self._owners)]
        popcount = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
            1, dtype=np.uint8)
        bits = np.min([popcount[self._blocks[0] ^ row].sum(axis=1, dtype=np.int64)
                       for row in query], axis=0)
        best = np.full(len(self._ids), HASH_BITS + 1, dtype=np.int64)
        np.minimum.at(best, self._owners[0], bits)
        order = np.argsort(best, kind="stable")[:k]
        return [Match(self._ids[i], float(best[i]) / HASH_BITS) for i in order]


def is_copy(matches: list[Match], threshold: float = THRESHOLD) -> bool:
    """Whether the nearest training image is within the threshold."""
    return bool(matches) and matches[0].distance <= threshold
