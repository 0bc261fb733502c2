"""SLURM batch scripts that run this tool on a cluster's machines, and their submission.

The scripts are plain `sbatch` files: `#SBATCH` lines (ours, then the user's `--sbatch`
settings, which SLURM lets the later line win; a value with spaces, quotes or # quoted as sbatch
reads it), a strict bash prologue, and one `srun` line
whose command is single-quoted so that each task expands SLURM's variables (`SLURM_NODEID`,
`SLURM_ARRAY_TASK_ID`) in its own environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sdscripts import launch

_SETTING = re.compile(r"^[a-z][a-z0-9-]*$")
_SHAPE = frozenset({"array", "nodes", "ntasks", "ntasks-per-node"})
"""#SBATCH settings of the job's shape, which each task's command is written for (its --shard
K/N, its machine rank): another value, or one of these the script leaves to SLURM, would run
tasks for shards or ranks that do not exist, or leave some out."""
_GPUS = frozenset({"gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"})
"""#SBATCH settings of the GPUs each task's command is written for (its --gpus G, its
--num-gpus G): the user may name their type on the script's own one (`a100:8`), not another
count, nor ask for more GPUs through another of them (nor through --gres=gpu:N, another N)."""
_CHECKED = _SHAPE | _GPUS | {"gres", "chdir"}
"""The #SBATCH settings `script` checks the user's against; sbatch reads an option as
getopt_long does, so a unique start of one of these names (`arr`) would be read as it."""
_PLAIN = re.compile(r"[^\s\"'\\#]*")
"""An #SBATCH value sbatch reads as it is written: no whitespace, quote, backslash or #."""


_CPUS = frozenset({"cpus-per-task", "cpus-per-gpu", "mincpus"})
"""#SBATCH settings that give a task more than SLURM's default of one CPU."""
FEW_CPUS = ("the job asks SLURM for no CPUs: unless the cluster gives more by default (per "
            "GPU, or whole nodes), each machine's training processes and their data loaders "
            "share one CPU; add --sbatch cpus-per-task=N (the cores of each machine the job "
            "may use)")
"""The warning of a training job written without a CPU setting."""


def asks_cpus(settings: Mapping[str, str]) -> bool:
    """Whether the user's #SBATCH settings ask for CPUs beyond SLURM's default one."""
    return any(key in _CPUS for key in settings)


_JOB_ID = re.compile(r"(\d+)(?:;.*)?")
"""What `sbatch --parsable` prints: JOBID[;CLUSTER]."""


@dataclass(frozen=True)
class Job:
    """A batch script: its text, where it was written (None: only shown), whether sbatch took
    it, and the job id sbatch printed (None: none could be read, though it may be queued)."""

    text: str
    path: Path | None = None
    job_id: str | None = None
    submitted: bool = False


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """`--sbatch KEY=VALUE` items (`partition=gpu`, `time=24:00:00`) as #SBATCH settings."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not _SETTING.match(key) or not value.strip() or "\n" in value:
            raise UserError(f"--sbatch {item!r} must look like KEY=VALUE, e.g. --sbatch "
                            "partition=gpu or --sbatch time=24:00:00")
        settings[key] = value.strip()
    return settings


def script(settings: Mapping[str, str], extra: Mapping[str, str], task: Sequence[str], *,
           srun: Sequence[str] = ("srun",), before: Sequence[str] = ()) -> str:
    """The batch script: #SBATCH settings, then `before` (shell lines), then `srun` running
    `task` (a shell line that may use SLURM's variables) in every task."""
    for key in extra:
        longer = sorted(name for name in _CHECKED if name.startswith(key))
        if longer and key not in _CHECKED:
            raise UserError(f"--sbatch {key}=… may be read by sbatch as --{' or --'.join(longer)}"
                            " (it takes the start of a name for the whole name), which the "
                            "script checks; write the setting's full name")
    fixed = sorted(key for key in extra if key in _SHAPE)
    if fixed:
        shape = " ".join(f"--{key}={value}" for key, value in settings.items() if key in _SHAPE)
        raise UserError(f"--sbatch {fixed[0]}=… would change the job's shape, which the tasks "
                        f"follow (#SBATCH {shape}); leave it out and set the count with "
                        "--slurm / --num-machines")
    if "chdir" in extra and "chdir" in settings:
        raise UserError(f"--sbatch chdir=… would move the job out of {settings['chdir']}, the "
                        "folder its paths are read from (#SBATCH --chdir); leave it out and "
                        "run the command from the folder the job should start in")
    ours = [key for key in settings if key in _GPUS]
    for key in sorted(key for key in extra if (key in _GPUS or key == "gres") and ours):
        mine, count = ours[0], settings[ours[0]]
        if key == "gres":
            wrong = _gres_gpus(extra[key]) not in (None, count)
        else:
            wrong = key != mine or extra[key].rpartition(":")[2] != count
        if wrong:
            raise UserError(f"--sbatch {key}={extra[key]} asks for other GPUs than the {count} "
                            f"each task is written for (#SBATCH --{mine}={count}); set the "
                            "count with --gpus (train) or --num-gpus (sample), and a type as "
                            f"--sbatch {mine}=TYPE:{count}")
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{key}={directive(key, value)}"
              for key, value in {**settings, **extra}.items()]
    lines += ["set -euo pipefail", *before,
              shlex.join([*srun, "bash", "-c", " ".join(["exec", *task])])]
    return "\n".join(lines) + "\n"


def _gres_gpus(value: str) -> str | None:
    """The GPU count a --gres value asks for on each node (`gpu`, `gpu:4`, `gpu:a100:4`, in a
    comma list, flags in parentheses after it), or None when it asks for no GPU."""
    for item in value.split(","):
        name, *rest = item.partition("(")[0].strip().split(":")
        if name == "gpu":
            return rest[-1] if rest and rest[-1].isdigit() else "1"
    return None


def directive(key: str, value: str) -> str:
    """`value` as an #SBATCH line must hold it for sbatch to read it back whole: as it is when
    plain, else double-quoted with `\\` and `"` escaped (sbatch splits a line at unquoted
    whitespace, strips quotes and ends it at an unquoted #). A line break cannot be held."""
    if "\n" in value or "\r" in value:
        raise UserError(f"#SBATCH --{key}={value!r} cannot hold a line break: rename the "
                        "folder or choose a value without one")
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_file(folder: Path, pattern: str) -> str:
    """An --output path: `folder` with each `%` doubled (sbatch reads `%` in a file name as
    the start of a pattern), then SLURM's `pattern` (`slurm-%j.out`)."""
    return str(folder.resolve()).replace("%", "%%") + "/" + pattern


class Variable(str):
    """A task word that holds a variable each task expands for itself (`$SLURM_NODEID`,
    `$SLURM_ARRAY_TASK_ID/4`): the tool's own words, never a value the user gave."""


def quote(words: Sequence[str]) -> list[str]:
    """Words for a task line: quoted for the shell, `Variable`s double-quoted so each task
    expands its own; a `$` in anything else (a prompt, a path) stays as written."""
    return [f'"{word}"' if isinstance(word, Variable) else shlex.quote(word) for word in words]


def write(text: str, path: Path, *, submit: bool) -> Job:
    """Write the script to `path` (executable) and, with `submit`, hand it to `sbatch`."""
    files.write_text(path, text)
    path.chmod(0o755)
    if not submit:
        return Job(text, path)
    unsure = (f"; it may have queued the job all the same: check squeue --me before "
              f"submitting {path} again")
    said = launch.run_captured(launch.sbatch_command(path.resolve()), unsure).strip().splitlines()
    found = _JOB_ID.fullmatch(said[-1].strip()) if said else None
    return Job(text, path, found[1] if found else None, submitted=True)


def task_gpus(count: int) -> list[Gpu]:
    """The `count` GPUs SLURM gives a task of a `--slurm` job, planned where it does not run
    (the task sees them in its own CUDA_VISIBLE_DEVICES, not this shell's): their memory and
    capability are unknown here."""
    return [Gpu("a GPU of the job", None, None)] * count
