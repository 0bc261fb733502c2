"""kohya's DreamBooth folder layout on disk: `img/<repeats>_<class>/<id>.jpg` + `<id>.txt`.

Images are hard-linked (copied across file systems); files are replaced by unlinking first,
so a link never lets a write reach the source image.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.data.images import output_suffix

TRAIN_ROOT = "img"
VAL_ROOT = "val"


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


def place(source: Path, target: Path) -> None:
    """Hard-link the file `source` names at `target` (copy when a link is impossible); keep it if
    already there. A symlinked source (git-annex, DVC, the HF cache) is followed to its file: a
    link to the link itself would dangle when relative. A symlink at `target` is replaced."""
    real = source.resolve()
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        if target.samefile(real):
            return
        same = real.stat()
        there = target.stat()
        if (same.st_size, same.st_mtime_ns) == (there.st_size, there.st_mtime_ns):
            return
        target.unlink()
    try:
        os.link(real, target)
    except OSError:
        shutil.copy2(real, target)


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
