"""Photos a data set holds more than once: ids ISIC 2020's duplicates list pairs, and files with
the same bytes. prepare and evaluate keep one copy of each by these rules, so no photo is
trained or counted twice, nor falls on both sides of a patient split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.data.sources import Source, listed_duplicates
from medsynth_kohya.errors import UserError

DUPLICATE_ID = "duplicate id"
"""Skip reason of a metadata row whose id an earlier row has (the first row is kept)."""
IDENTICAL = "identical file"
"""How an image found twice by its content is named where it is skipped."""
DUPLICATE_IMAGE = "duplicate image of "
"""Start of the skip reason of an image another id holds too; the reason goes on with the id
kept and how the two are known to be one image."""

Twins = dict[str, tuple[str, str]]
"""Each id left out -> (the id kept, how the two are known to be one image)."""


def _kept(group: Iterable[str], preferred: Collection[str]) -> list[str]:
    """`group` with the id to keep first: a preferred one, else the first in sorted order."""
    return sorted(group, key=lambda identifier: (identifier not in preferred, identifier))


def groups(pairs: Iterable[tuple[str, str]]) -> list[set[str]]:
    """The ids that `pairs` join, directly or through others, as groups."""
    joined_groups: list[set[str]] = []
    for pair in pairs:
        joined = [group for group in joined_groups if group & set(pair)]
        merged = set(pair).union(*joined)
        joined_groups = [group for group in joined_groups if group not in joined] + [merged]
    return joined_groups


def listed_twins(ids: Iterable[str], source: Source, preferred: Collection[str] = ()
                 ) -> tuple[Twins, list[str]]:
    """Each of `ids` that ISIC 2020's duplicates list pairs with another of them, directly or
    through ids not among them, with the id kept (a `preferred` one, else the first in sorted
    order); needs no image. A warning when the list cannot be read."""
    try:
        pairs, listed = listed_duplicates(source)
    except UserError as exc:
        return {}, [f"{exc}: its duplicates are not skipped"]
    if listed is None:
        return {}, []
    present = set(ids)
    twin: Twins = {}
    how = f"listed in {listed.name}"
    # joined before the absent are left out: a ~ b ~ c makes a ~ c without b's file
    for group in (group & present for group in groups(pairs)):
        if group:
            first, *others = _kept(group, preferred)
            twin.update((other, (first, how)) for other in others)
    return twin, []


def identical_twins(paths: Mapping[str, Path], preferred: Collection[str] = ()) -> Twins:
    """Each of `paths` (id -> file) whose file has the same bytes as another's, with the id
    kept (a `preferred` one, else the first in sorted order). Only files of equal size are
    hashed; empty files (all alike, and all broken) are left to the decoder."""
    by_size: dict[int, list[str]] = {}
    for identifier in sorted(paths):
        size = paths[identifier].stat().st_size
        if size:
            by_size.setdefault(size, []).append(identifier)
    twin: Twins = {}
    for same in (group for group in by_size.values() if len(group) > 1):
        by_content: dict[str, list[str]] = {}
        for identifier in same:
            by_content.setdefault(files.sha256(paths[identifier]), []).append(identifier)
        for group in by_content.values():
            first, *others = _kept(group, preferred)
            twin.update((other, (first, IDENTICAL)) for other in others)
    return twin


def twins(paths: Mapping[str, Path], source: Source, preferred: Collection[str] = ()
          ) -> tuple[Twins, list[str]]:
    """Both kinds of twin among `paths` (id -> file), as prepare judges them: the listed ones
    first, then identical files among the rest; warnings as `listed_twins` gives them."""
    twin, warnings = listed_twins(paths, source, preferred)
    twin.update(identical_twins({identifier: path for identifier, path in paths.items()
                                 if identifier not in twin}, preferred))
    return twin, warnings


def twin_reason(kept: str, how: str) -> str:
    """The skip reason of a twin: the id kept and how the two are known to be one image."""
    return f"{DUPLICATE_IMAGE}{kept} ({how})"


def counted(twin: Mapping[str, tuple[str, str]]) -> str:
    """How many of `twin` each way found, e.g. "1 identical file, 2 listed in X.csv"."""
    hows = Counter(how for _, how in twin.values())
    return ", ".join(files.counted(count, how) if how == IDENTICAL else f"{count} {how}"
                     for how, count in sorted(hows.items()))
