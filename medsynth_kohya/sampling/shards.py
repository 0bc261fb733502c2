"""GPU shards of a `sample` run: which images each generator process makes, on which device,
its prompt file, and the harvest of its finished images into OUT/images/<id>.png.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import (
    UNHIDE,
    VISIBLE,
    Gpu,
    devices,
    hides_gpus,
    none_seen,
    visible_devices,
)
from medsynth_kohya.sampling.plan import Plan
from medsynth_kohya.sampling.synthset import IMAGES, STATE_DIR, complete_png
from medsynth_kohya.sdscripts import launch

Progress = Callable[[int, int], None]
"""Called as (images present, images wanted) while the generators run."""


@dataclass(frozen=True)
class Shard:
    """One generator process: the images it makes, on which device, and how it ended."""

    index: int
    device: str
    images: tuple[int, ...]
    command: launch.Command
    log: Path
    made: int = 0
    returncode: int | None = None
    interrupted: bool = False
    tail: tuple[str, ...] = ()
    machine: str = ""
    """The part of the set its run makes, as --shard gives it (`1/8`); "" for the whole set."""

    @property
    def where(self) -> str:
        """Its device as a summary names it: `GPU 0`, or `no GPU` where every GPU is hidden."""
        return f"GPU {self.device}" if self.device else "no GPU"

    @property
    def label(self) -> str:
        """How a summary names it: by its device (each process has its own), after the
        --shard K/N of its run (`shard 1/8 (GPU 0)`); never by its index, which counts from 0."""
        return f"shard {self.machine} ({self.where})" if self.machine else self.where

    @property
    def failed(self) -> bool:
        return not self.interrupted and self.returncode is not None and (
            self.returncode != 0 or self.made < len(self.images))


def shard_devices(num_gpus: int, gpus: Sequence[Gpu], own: bool = True) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each shard, as `devices` chooses them: the entries already
    visible (a GPU's index, UUID or MIG instance, each once; MIG instances may outnumber the
    GPUs listed), else 0..N-1 ("" for one where the variable hides every GPU); always 0..N-1
    for GPUs not `own` (another machine's, whose variable is not this one's)."""
    if not own:
        return [str(k) for k in range(num_gpus)]
    asked = f"--num-gpus {num_gpus}"
    if num_gpus > 1 and not gpus:
        fix = f"; {UNHIDE}" if hides_gpus() else ""
        raise UserError(f"{asked}: {none_seen()}{fix}")
    chosen = devices(num_gpus, asked)
    if num_gpus > 1 and len(gpus) < num_gpus and not any(d.startswith("MIG-") for d in chosen):
        shown, given = files.counted(len(gpus), "GPU"), visible_devices()
        raise UserError(f"{asked}: nvidia-smi lists only {shown}" if given is None else
                        f"{asked}: {VISIBLE}={','.join(given)} shows only {shown} of this "
                        "machine (CUDA reads its entries up to the first naming no GPU "
                        "nvidia-smi lists); list GPUs this machine has")
    return chosen


def split(indices: Sequence[int], parts: int) -> list[list[int]]:
    """`indices` in `parts` contiguous runs of near-equal length (empty runs dropped)."""
    size, extra = divmod(len(indices), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        if end > start:
            runs.append(list(indices[start:end]))
        start = end
    return runs


def prompts_file(folder: Path) -> Path:
    """Where a shard's prompt file goes (also shown, unwritten, by a dry run)."""
    return folder / "prompts.txt"


def write_shard_files(plan: Plan, folder: Path, indices: Sequence[int], highres: bool) -> Path:
    """The prompt file of one shard (one line per image, in order) and its id list."""
    (folder / "out").mkdir(parents=True, exist_ok=True)
    path = prompts_file(folder)
    path.write_text("\n".join(plan.line(i) for i in indices) + "\n", encoding="utf-8")
    spec = {"ids": [plan.image_id(i) for i in indices], "highres": highres}
    (folder / "shard.json").write_text(json.dumps(spec), encoding="utf-8")
    return path


def generated_name(position: int, highres: bool) -> str:
    """What sdxl_gen_img.py --sequential_file_name calls the image of its prompt line
    `position` (from 1): `im_000001.png`, with a `1` before the number under highres fix."""
    return f"im_{'1' if highres else ''}{position:06d}.png"


def folders(out: Path, tag: str | None = None) -> list[Path]:
    """The shard folders in OUT: all, or those of one machine's shard (names starting `tag`)."""
    shards = out / STATE_DIR / "shards"
    if not shards.is_dir():
        return []
    return sorted(p for p in shards.iterdir()
                  if p.is_dir() and (tag is None or p.name.startswith(tag)))


def _plain(image_id: object) -> bool:
    """Whether `image_id` is a plain file name (as every plan's id is), so that
    images/<id>.png stays inside images/: no folder, no hidden, empty or NUL-holding name."""
    return (isinstance(image_id, str) and image_id != "" and not image_id.startswith(".")
            and not any(char in image_id for char in "/\\\0"))


def _spec(folder: Path) -> tuple[list[str], bool] | None:
    """A shard's image ids, in prompt order, and whether it generates with highres fix; None
    where its shard.json cannot be read or is not one `write_shard_files` writes (an id that
    is no plain file name would move an image out of images/)."""
    try:
        spec = json.loads((folder / "shard.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ids = spec.get("ids") if isinstance(spec, dict) else None
    if not isinstance(ids, list) or not all(map(_plain, ids)):
        return None
    return ids, bool(spec.get("highres"))


def harvest(out: Path, tag: str | None = None) -> int:
    """Move every finished image of earlier or current shards (those of `tag`, when given)
    to images/<id>.png; a shard whose shard.json is broken is left (its images are made
    again)."""
    images = out / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    moved = 0
    for folder in folders(out, tag):
        spec = _spec(folder)
        if spec is None:
            continue
        ids, highres = spec
        for position, image_id in enumerate(ids, 1):
            made = folder / "out" / generated_name(position, highres)
            target = images / f"{image_id}.png"
            if made.is_file() and not target.exists() and complete_png(made):
                made.replace(target)
                moved += 1
    return moved


def clear_shards(out: Path, tag: str | None = None) -> None:
    """Remove the previous shards' files (after their images were harvested)."""
    for folder in folders(out, tag):
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
        folder.rmdir()


def counter(out: Path, missing: int, on_progress: Progress | None,
            tag: str | None = None) -> Callable[[int, str], None] | None:
    """A line hook that reports the images this run has made so far of the `missing` it makes
    (images already there are not counted), counting files at most twice a second (in the
    shard folders of `tag`, when given)."""
    if on_progress is None:
        return None
    last = [0.0]
    on_progress(0, missing)

    def count(_shard: int, _line: str) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        made = sum(len(list((folder / "out").glob("im_*.png"))) for folder in folders(out, tag))
        assert on_progress is not None
        on_progress(min(made, missing), missing)

    return count
