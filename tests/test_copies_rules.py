"""The near-copy rules one by one: the hash, the views a training photo is indexed under, the
lookup's distances and the threshold, and the record of a check (copycheck)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from medsynth_kohya.evaluation import copies

from .eval_data import photo


def _square(image: Any, position: float, side: int = 1024) -> Any:
    """The largest square of `image` at `position` (0 to 1) along its long side, resized to
    `side` px as a square generation would frame it."""
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (int((height - short) * position), int((width - short) * position))
    return cv2.resize(image[top:top + short, left:left + short], (side, side),
                      interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (600, 400)])
def test_a_square_crop_anywhere_along_the_long_side_is_a_near_copy(size: tuple[int, int]
                                                                   ) -> None:
    """A training photo reframed as a square (what a square generation reproduces) is
    flagged wherever the square lies, landscape or portrait, 4:3 or 3:2."""
    training = [photo(40 + i, hairy=i % 2 == 0, size=size) for i in range(6)]
    index = copies.HashIndex()
    for i, image in enumerate(training):
        index.add(f"T{i}", image)
    for i, image in enumerate(training):
        for position in np.linspace(0, 1, 11):
            matches = index.nearest(copies.query_hash(_square(image, position)))
            assert matches[0].training_id == f"T{i}", position
            assert copies.is_copy(matches), (position, matches[0].distance)
