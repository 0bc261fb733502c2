"""The near-copy check of a synthetic set on its own (`sample --check-copies`), and its record.

The same perceptual-hash index and threshold as evaluate's section 1, without the rest: each
synthetic image against the training photos of the prepared folder it descends from. The
result lives with the set, in `SYNTH/copies.json` (owned here), so that `push` can refuse to
publish a flagged image. It holds ids, distances and folder names, never a local path.

    {"tool": "medsynth-kohya", "threshold": 0.25, "training": "data", "n_training": 584,
     "checked": ["SYN_0000000", ...], "flagged": [{"synthetic_id", "training_id", "distance"}],
     "skipped": [{"set", "id", "reason"}], "created": "...",
     "sha256": {"SYN_0000000": "<digest of images/SYN_0000000.png when checked>", ...}}

An image changed since its check (a digest that no longer matches) counts as unchecked.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medsynth_kohya import files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copies, sets
from medsynth_kohya.sampling.synthset import IMAGES
from medsynth_kohya.training.record import RECORD_FILE, RunRecord

NAME = "copies.json"


@dataclass(frozen=True)
class Flag:
    """A synthetic image and the training photo it nearly copies."""

    synthetic_id: str
    training_id: str
    distance: float


@dataclass(frozen=True)
class CopyCheck:
    """What was checked against what, and which images are near-copies."""

    threshold: float
    training: str
    """The real data's folder name."""
    n_training: int
    checked: tuple[str, ...]
    flagged: tuple[Flag, ...]
    skipped: tuple[dict[str, str], ...] = ()

    def summary(self) -> str:
        """One line: how many images are near-copies, and the first few pairs."""
        if not self.flagged:
            return (f"no near-copies: {files.counted(len(self.checked), 'image')} checked "
                    f"against {files.counted(self.n_training, 'training photo')} of "
                    f"{self.training}")
        pairs = ", ".join(f"{f.synthetic_id} ~ {f.training_id} ({f.distance:.2f})"
                          for f in self.flagged[:5])
        more = f" and {len(self.flagged) - 5} more" if len(self.flagged) > 5 else ""
        return (f"{len(self.flagged)} of {files.counted(len(self.checked), 'image')} are "
                "near-copies of "
                f"training photos of {self.training}: {pairs}{more}")


@contextlib.contextmanager
def training_folder(record: RunRecord | None, *, break_lock: bool = False) -> Iterator[Path]:
    """The prepared folder a LoRA's run record names, which must still be on this machine and
    hold what the run trained on (else the check would look at other photos), marked read by
    `sample` while the block runs: a prepare into it is refused until the set is checked."""
    folder = record.prepared if record else None
    if folder is None:
        raise UserError("--check-copies needs the training images: give --lora a train run "
                        f"folder (its {RECORD_FILE} names the prepared data), not a bare LoRA")
    if not folder.is_dir():
        raise UserError(f"--check-copies needs the training images, but the prepared folder "
                        f"{folder} the run was trained on is not on this machine")
    with locks.reading(folder, "sample"):  # marked, then checked: see locks.ensure_unread
        locks.ensure_idle(folder, "sample", writers=("prepare",), break_lock=break_lock)
        if record is not None and record.prepared_again():
            raise UserError(f"--check-copies needs the photos the LoRA was trained on, but "
                            f"{folder} was prepared again since the run trained on it (manifest "
                            "changed): leave out --check-copies and evaluate the set with --real "
                            "<the ISIC download it was prepared from>, or train again")
        yield folder


def check(synthetic: Path, real: Path, threshold: float = copies.THRESHOLD,
          on_progress: Callable[[str, int, int], None] | None = None) -> CopyCheck:
    """Every image of the synthetic set against the training photos of `real` (a prepared
    folder or an ISIC source)."""
    progress = on_progress or (lambda stage, done, total: None)
    real_set = sets.load_real(real)
    synthetic_set = sets.load_synthetic(synthetic)
    skipped: list[dict[str, str]] = []
    index = copies.HashIndex()
    for identifier, image in sets.decoded(real_set.training, "real", skipped,
                                          lambda d, t: progress("training photos", d, t)):
        index.add(identifier, image)
    if not len(index):
        raise UserError(f"none of the training photos of {real} could be decoded: "
                        "give a download or prepared folder whose photos open as images")
    checked: list[str] = []
    flagged: list[Flag] = []
    for identifier, image in sets.decoded(synthetic_set.frame, "synthetic", skipped,
                                          lambda d, t: progress("near-copy check", d, t)):
        matches = index.nearest(copies.query_hash(image))
        checked.append(identifier)
        if copies.is_copy(matches, threshold):
            flagged.append(Flag(identifier, matches[0].training_id, matches[0].distance))
    return CopyCheck(threshold, Path(real).resolve().name, len(index), tuple(checked),
                     tuple(flagged), tuple(skipped))


def write(synthetic: Path, result: CopyCheck) -> Path:
    """Record `result` as SYNTH/copies.json (atomically); returns its path."""
    path = synthetic / NAME
    files.write_json(path, {
        "tool": "medsynth-kohya", "threshold": result.threshold, "training": result.training,
        "n_training": result.n_training, "checked": list(result.checked),
        "flagged": [asdict(f) for f in result.flagged], "skipped": list(result.skipped),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": {identifier: files.sha256(image) for identifier in result.checked
                   if (image := _image(synthetic, identifier)).is_file()}})
    return path


def _image(synthetic: Path, identifier: str) -> Path:
    """Where a checked image of the set lies."""
    return synthetic / IMAGES / f"{identifier}.png"


def unchanged(synthetic: Path, checked: list[str], digests: dict[str, str] | None
               ) -> tuple[str, ...]:
    """The checked ids whose image in the set `synthetic` is still the one checked (all of them
    in a record written before digests were kept)."""
    if digests is None:
        return tuple(checked)
    return tuple(identifier for identifier in checked
                 if (image := _image(synthetic, identifier)).is_file()
                 and files.sha256(image) == digests.get(identifier))


def read(synthetic: Path, among: Collection[str] | None = None) -> CopyCheck | None:
    """The recorded check of a synthetic set, or None when it was never checked; its checked
    ids leave out images changed since, and with `among`, the ids not in it (only those
    images are hashed: a push publishes a few of a set of thousands)."""
    path = synthetic / NAME
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        checked = unchanged(synthetic, [str(i) for i in data["checked"]
                                         if among is None or str(i) in among],
                             data.get("sha256"))
        return CopyCheck(float(data["threshold"]), str(data["training"]),
                         int(data["n_training"]), checked,
                         tuple(Flag(str(f["synthetic_id"]), str(f["training_id"]),
                                    float(f["distance"])) for f in data["flagged"]),
                         tuple(data.get("skipped", ())))
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable; re-run `medsynth-kohya sample --check-copies` "
                        "to write it again") from None
