"""kohya's DreamBooth folder layout on disk: `img/<repeats>_<class>/<id>.jpg` + `<id>.txt`.

Each image is the layout's own copy of its source (a copy-on-write clone where the file system
can), so a crop in place never reaches the user's download; `LinkMode.hard` links them instead
for users who want no extra disk. Files are replaced by renaming a new one over them, so a
write never goes through a link into another file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.data.images import output_suffix

TRAIN_ROOT = "img"
VAL_ROOT = "val"


Stamp = tuple[int, int]
"""A placed image's (size, mtime_ns): a copy keeps its source's, and any write changes it."""


class LinkMode(str, Enum):
    """How the layout holds each image."""

    copy = "copy"
    """Its own copy (a copy-on-write clone where the file system can): edits stay in it."""
    hard = "hard"
    """A hard link to the source (no extra disk): an edit of either changes both."""


class Placed(Enum):
    """What `place` did with an image beyond what was asked, which prepare tells the user."""

    as_asked = "as asked"
    unlinked = "unlinked"
    """A hard link to the source (an earlier run's) was replaced by a copy."""
    unlinkable = "unlinkable"
    """`LinkMode.hard`, but no hard link could be made (another file system): a copy."""


@dataclass(frozen=True)
class Repeats:
    """How often each image is seen per epoch, and how that number was reached."""

    repeats: int
    formula: str = ""


def repeats_for(images: int, *, repeats: int | None, target_steps: int | None, epochs: int,
                batch_size: int) -> Repeats:
    """R = ceil(target_steps x batch_size / (epochs x images)), or the given `repeats`."""
    if target_steps is None:
        return Repeats(repeats or 1)
    value = max(1, math.ceil(target_steps * batch_size / (epochs * max(images, 1))))
    formula = (f"repeats = ceil(target_steps x batch_size / (epochs x images)) = "
               f"ceil({target_steps} x {batch_size} / ({epochs} x {images})) = {value}")
    return Repeats(value, formula)


def steps_per_epoch(images: int, repeats: int, batch_size: int) -> int:
    """Optimizer steps in one epoch, as sd-scripts counts them (without bucketing remainders)."""
    return math.ceil(images * repeats / batch_size) if images else 0


def class_folder(out: Path, split: str, repeats: int, class_name: str) -> Path:
    """The folder a split's images go to; validation images are listed once (repeats 1)."""
    if split == "val":
        return out / VAL_ROOT / f"1_{class_name}"
    return out / TRAIN_ROOT / f"{repeats}_{class_name}"


def image_file(folder: Path, image_id: str, source: Path) -> Path:
    """Where the image `image_id` (from `source`) lies in its class folder: `<id>.jpg` or
    `<id>.png` after its format."""
    return folder / f"{image_id}{output_suffix(source)}"


def stamp(path: Path) -> Stamp:
    """`path`'s size and modification time, which tell an untouched copy from an edited one."""
    found = path.stat()
    return found.st_size, found.st_mtime_ns


def place(source: Path, target: Path, link: LinkMode = LinkMode.copy) -> Placed:
    """Put the image `source` names at `target`: a copy of it (a clone where the file system
    can), or with `LinkMode.hard` a hard link (a copy where none can be made). A copy with the
    source's size and time, or the link, is kept. A symlinked source (git-annex, DVC, the HF
    cache) is followed to its file; whatever is at `target` (an earlier run's hard link to the
    source, a symlink) is replaced, never written through."""
    real = source.resolve()
    there = None if target.is_symlink() or not target.exists() else target.stat()
    shared = there is not None and os.path.samestat(there, real.stat())
    if shared and link is LinkMode.hard:
        return Placed.as_asked
    if link is LinkMode.hard:
        try:
            with files.replacing(target, keep_mode=False) as written:
                os.link(real, written)
            return Placed.as_asked
        except OSError:  # another file system, a read-only one, a file we may not link: copy
            pass
    copied = Placed.unlinkable if link is LinkMode.hard else Placed.as_asked
    if there is not None and not shared and stamp(target) == stamp(real):
        return copied
    with files.replacing(target, keep_mode=False) as written:
        files.clone(real, written)
    return Placed.unlinked if shared else copied


def write_text(path: Path, text: str) -> None:
    """Write `text` whole (replacing, never appending, never through a link), and only when
    it changed; atomically, so a run killed mid-write leaves no cut caption behind."""
    if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
        return
    files.write_text(path, text)


def prune(root: Path, keep: set[Path], removable: Callable[[Path], bool]) -> None:
    """Remove the `removable` files under `root` that are not in `keep`, then empty folders.
    Files that are not removable (the user's own) are never touched."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in keep and removable(path):
            path.unlink()
