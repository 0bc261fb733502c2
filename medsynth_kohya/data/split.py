"""Patient-level train/validation split: no patient's images on both sides."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _rank(seed: int, group: str) -> str:
    """A stable pseudo-random order of groups that does not depend on row order."""
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def patient_split(frame: pd.DataFrame, fraction: float, seed: int = 0) -> pd.Series:
    """'train' or 'val' per row; whole patients go to 'val' until `fraction` of rows is reached.

    A row without patient_id is its own group.
    """
    import pandas as pd

    split = pd.Series("train", index=frame.index, dtype="string")
    if fraction <= 0 or frame.empty:
        return split
    groups = frame["patient_id"].fillna("\0" + frame["id"]).astype(str)
    sizes = groups.value_counts()
    target = max(1, round(fraction * len(frame)))
    chosen: set[str] = set()
    taken = 0
    for group in sorted(sizes.index, key=lambda g: _rank(seed, g)):
        if taken >= target:
            break
        if taken + sizes[group] >= len(frame):
            continue
        chosen.add(group)
        taken += int(sizes[group])
    split[groups.isin(chosen)] = "val"
    return split
