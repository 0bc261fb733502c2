"""`sample` on many machines at once: shard K of N, the rules of the shared folder, and the
SLURM array job that runs one shard per task.

Shard K/N (K from 1) makes the images of a fixed part of 0..n-1 (contiguous near-equal runs,
whatever is already there), so the union over K is the one-machine set: same ids, prompts,
seeds. Each shard holds its own part-lock on OUT (`shard-K-of-N`), so any number of them run at
once on a shared file system, while a whole-set `sample` waits for them and they for it.
Their generator folders are `.medsynth/shards/K-of-N.<gpu>/`; their records
`.medsynth/machines/K-of-N.json` and their metadata rows `.medsynth/machines/K-of-N.csv`,
each written atomically; their images land in OUT/images by rename. The first to arrive
creates sample.json (the settings), so a shard with other settings is refused; one that finds a
whole-set run's, or one of a smaller --n, makes it the shards' (with its n), so the set stays
unfinished until they have all run. Each reads and replaces sample.json under a short lock
(`sample.json.lock` beside it). metadata.csv and grid.jpg are written by whichever run finds
the set complete, or by `sample --finalize`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling.synthset import SET_FIX, STATE_DIR, recorded_n, unfinished

FINAL_PART = "final-files"
"""The part-lock of OUT held while a shard writes the set's metadata.csv and grid.jpg."""
RECORDS = "machines"
"""OUT/.medsynth/machines/: each shard's record and metadata rows."""
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PART = re.compile(r"^shard-\d+-of-\d+$")


@dataclass(frozen=True)
class MachineShard:
    """Shard `k` of `count` (k from 1): the part of the set one machine makes."""

    k: int
    count: int

    def __post_init__(self) -> None:
        """Refuse, as --shard does, a K outside 1..N before `sample` reads or writes."""
        arguments.check_fields(self)
        if self.count < 1 or not 1 <= self.k <= self.count:
            raise UserError(f"--shard {self.k}/{self.count}: K counts from 1 to N (got "
                            f"{self.k} of {self.count})")

    @classmethod
    def parse(cls, text: str) -> MachineShard:
        """`K/N` as typed after --shard (or given by SLURM: $SLURM_ARRAY_TASK_ID/N)."""
        match = _SHARD.match(text)
        if not match:
            raise UserError(f"--shard {text!r} must look like K/N, e.g. --shard 2/4 (shard 2 "
                            "of 4)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        return f"{self.k}-of-{self.count}"

    @property
    def part(self) -> str:
        """Its part-lock on OUT."""
        return f"shard-{self.name}"

    def indices(self, total: int) -> range:
        """Its images among 0..total-1: the k-th of `count` contiguous near-equal runs."""
        size, extra = divmod(total, self.count)
        start = (self.k - 1) * size + min(self.k - 1, extra)
        return range(start, start + size + (1 if self.k - 1 < extra else 0))

    def record(self, out: Path, suffix: str) -> Path:
        """Its record (`.json`) or metadata rows (`.csv`) in OUT."""
        return out / STATE_DIR / RECORDS / f"{self.name}{suffix}"


def running(out: Path) -> list[str]:
    """The shards that hold their part-lock on OUT now, by name."""
    if not out.is_dir():
        return []
    parts = sorted(path.name.removeprefix(f"{locks.LOCK_NAME}.") for path in out.iterdir()
                   if locks.is_lock_file(path) and path.name != locks.LOCK_NAME)
    return [part.removeprefix("shard-") for part in parts
            if _PART.match(part) and locks.holder(out, part) is not None]


def ensure_made(out: Path, command: str, option: str = "synthetic set", *,
                break_lock: bool = False) -> None:
    """Refuse, with one line, to read a set that is no folder (given as `option`), one that
    `sample` (whole, or any shard) still makes, or one it left unfinished (interrupted,
    failed, killed, shards missing)."""
    files.ensure_folder(out, SET_FIX, option)
    locks.ensure_idle(out, command, writers=("sample",), break_lock=break_lock)
    busy = running(out)
    if busy:
        raise UserError(f"{out} is still being made by sample shards {', '.join(busy)}; "
                        f"`{command}` needs the set finished: run it when they have ended")
    problem = unfinished(out)
    if problem:
        raise UserError(f"{problem}; `{command}` needs the set finished: re-run the same "
                        f"`medsynth-kohya sample` command to make the rest, then `{command}` "
                        "again")


def ensure_alone(out: Path, shard: MachineShard | None) -> None:
    """A shard waits for a whole-set `sample` on OUT to end, and that for every shard."""
    if shard is not None:
        whole = locks.holder(out)
        if whole is not None:
            raise UserError(f"{out} is in use by {whole.describe()}; run the shard when it "
                            "has finished")
        return
    busy = running(out)
    if busy:
        raise UserError(f"shards {', '.join(busy)} are still writing {out}; wait for them to "
                        "finish, then run this again")


def create_state(path: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """Create sample.json (status "sharded") unless another run did first; returns the one in
    place. A found one is kept when it is another shard's with other settings (the caller
    refuses those) or when it covers this shard's n with these settings; any other (a dry
    run's, a whole-set run's that stopped, or one of a smaller n: the set is being extended)
    is replaced, so the set counts as unfinished until every shard of this n has run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = files.temporary(path)
    text = json.dumps(state, indent=2, default=str)
    temporary.write_text(text, encoding="utf-8")
    mine: dict[str, Any] = json.loads(text)
    try:  # shards of different n side by side: each reads and replaces it in turn
        with locks.briefly(path.with_name(f"{path.name}.lock")):
            if path.is_file():
                found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                status, same = found.get("status"), found.get("identity") == mine["identity"]
                if (status == "sharded" and not same) or (status in ("sharded", "succeeded")
                                                          and same
                                                          and recorded_n(found) >= mine["n"]):
                    return found
            temporary.replace(path)
            return mine
    finally:
        temporary.unlink(missing_ok=True)


def array_script(words: Sequence[str], count: int, gpus: int, out: Path,
                 sbatch: Mapping[str, str]) -> str:
    """The sbatch array job of `count` shards: task K runs `words` with --shard K/count."""
    from medsynth_kohya.machine import slurm

    settings = {"job-name": f"medsynth-sample-{out.resolve().name}", "array": f"1-{count}",
                "ntasks": "1", "gpus": str(gpus), "chdir": str(Path.cwd()),
                "output": slurm.log_file(out / STATE_DIR / "slurm", "%A_%a.out")}
    task = [*words, "--shard", slurm.Variable(f"$SLURM_ARRAY_TASK_ID/{count}")]
    return slurm.script(settings, sbatch, slurm.quote(task))
