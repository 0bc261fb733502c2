"""Launch sd-scripts' SDXL LoRA training under accelerate, follow its output, find what it wrote.

The one place that builds command lines. Commands run as argument lists (never through a
shell) in their own process group, so Ctrl-C reaches this process first and is passed on as a
graceful SIGINT, then SIGTERM and SIGKILL if the training does not stop.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.errors import UserError

SCRIPT = "sdxl_train_network.py"
LAUNCHER = "accelerate.commands.launch"
"""`python -m accelerate.commands.launch` is `accelerate launch` (same parser and function)."""
MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")
"""The values `accelerate launch --mixed_precision` accepts."""
ENV = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
"""Set for sd-scripts: its log lines arrive as written, in the encoding we decode, and 200
columns wide (its rich log handler, writing to a pipe, would otherwise wrap them at 80)."""
NO_DATA = "No data found"
"""How sd-scripts' message starts when the dataset is empty; it still exits 0."""
TAIL_LINES = 40
STOP_GRACE_S = 30.0
"""How long an interrupted training may take to stop after SIGINT, before SIGTERM."""
TERM_GRACE_S = 10.0
"""How long after SIGTERM before SIGKILL."""
KILL_GRACE_S = 5.0
DEFAULT_PORT = 29500
"""accelerate's own default for --main_process_port."""

_T = TypeVar("_T")
_BREAK = re.compile(r"\r\n|\r|\n")
_PROGRESS = re.compile(
    r"^\s*steps:\s*(?:\d+%)?\s*(?:\|[^|]*\|)?\s*(?P<step>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[^<\]]*)<(?P<remaining>[^,\]]*),\s*(?P<rate>[^,\]]*)(?P<postfix>[^\]]*)\]")
_RATE = re.compile(r"^(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>s/it|it/s)$")
_CLOCK = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)$")
_LOSS = re.compile(r"(?:^|,)\s*avr_loss=(?P<loss>[^,\s]+)")
_STEP_NAME = re.compile(r"-step(\d{8,})")
_RANK = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
"""torch's prefix on each line of a multi-process run's output."""
_LOGGED_ERROR = re.compile(r"(?:^|\s)ERROR\s+(?P<message>.+?)(?:\s{2,}\S+\.py:\d+)?$")
TRACEBACK = "Traceback (most recent call last):"
LAUNCHER_ERRORS = ("subprocess.CalledProcessError", "torch.distributed.elastic.multiprocessing."
                   "errors.ChildFailedError")
"""What `accelerate launch` raises when its training process fails: not the reason itself."""


class StartError(UserError):
    """A program that could not be started at all (missing, not executable): nothing ran."""


@dataclass(frozen=True)
class Command:
    """A program to run: argument list, working folder and the variables added to the env."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    first: str = ""
    """A shell step that makes `cwd` before the line goes there (install-sd-scripts, where the
    checkout is missing); shown, never run."""

    def shell(self) -> str:
        """The command as one copy-pasteable shell line (for display; it never runs in a shell)."""
        words = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        first = f"{self.first} && " if self.first else ""
        return f"{first}cd {shlex.quote(str(self.cwd))} && {' '.join([*words, self.line()])}"

    def where(self) -> str:
        """Where the command runs, as its heading names it: "in CWD", and what makes CWD."""
        return f"in {self.cwd}" + (f", which `{self.first}` makes first" if self.first else "")

    def line(self) -> str:
        """The arguments alone as a shell line (no folder, no variables): a step to suggest."""
        return shlex.join(self.argv)


@dataclass
class StepProgress:
    """One update of sd-scripts' "steps" bar; None where the bar shows "?" or nothing."""

    step: int
    total: int
    loss: float | None
    seconds_per_step: float | None
    eta_seconds: float | None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: exit status, whether we stopped it, its last progress and lines."""

    returncode: int
    interrupted: bool
    last: StepProgress | None
    tail: list[str]
    error: str | None = None
    """The last error the program printed: a Python exception's last line, else a logged
    ERROR; None when it printed none."""


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Machines:
    """The machines of one training run, as accelerate's multi-node options name them: how
    many, which one this is (rank 0 hosts the rendezvous) and where rank 0 listens."""

    count: int = 1
    rank: int = 0
    main_ip: str | None = None
    main_port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        arguments.check_fields(self)

    def problems(self) -> list[str]:
        """What `accelerate launch` would reject, or would start and then hang on."""
        found = []
        if self.count < 1:
            found.append(f"--num-machines {self.count}: need at least 1 machine")
        elif not 0 <= self.rank < self.count:
            found.append(f"--machine-rank {self.rank} is out of range for {self.count} "
                         f"{'machine' if self.count == 1 else 'machines'}: use 0 to "
                         f"{self.count - 1}")
        if self.count > 1 and not self.main_ip:
            found.append(f"{self.count} machines need --main-process-ip, the address of the "
                         "machine of rank 0 that every machine can reach")
        if not 0 < self.main_port < 65536:
            found.append(f"--main-process-port {self.main_port} is not a TCP port (1-65535)")
        return found


def _checked_gpu_ids(num_processes: int, mixed_precision: str,
                     gpu_ids: Sequence[int | str] | None,
                     machines: Machines) -> list[int | str] | None:
    """The GPU ids a launch names (one per process when it starts more than one), refusing
    what `accelerate launch` would reject."""
    if num_processes < 1:
        raise UserError(f"need at least 1 process (got {num_processes})")
    if mixed_precision not in MIXED_PRECISION:
        raise UserError(f"mixed_precision {mixed_precision!r} is not one of "
                        f"{', '.join(MIXED_PRECISION)}")
    if gpu_ids is None and num_processes > 1:
        gpu_ids = range(num_processes)
    if gpu_ids is not None and len(gpu_ids) != num_processes:
        raise UserError(f"{num_processes} processes need {num_processes} GPU ids "
                        f"(got {list(gpu_ids)})")
    problems = machines.problems()
    if problems:
        raise UserError(problems[0])
    return None if gpu_ids is None else list(gpu_ids)


def accelerate_args(*, num_processes: int, mixed_precision: str,
                    gpu_ids: Sequence[int | str] | None, cpu_threads: int,
                    machines: Machines = Machines()) -> list[str]:
    """`accelerate launch` flags that leave nothing to its defaults or warnings.

    `num_processes` counts this machine's processes; every machine runs as many, so accelerate
    is given their total."""
    if num_processes < 1 or cpu_threads < 1:
        raise UserError(f"need at least 1 process and 1 CPU thread per process "
                        f"(got {num_processes} and {cpu_threads})")
    ids = _checked_gpu_ids(num_processes, mixed_precision, gpu_ids, machines)
    total = num_processes * machines.count
    args = ["--num_processes", str(total), "--num_machines", str(machines.count),
            "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--num_cpu_threads_per_process", str(cpu_threads)]
    if machines.count > 1:
        args += ["--machine_rank", str(machines.rank), "--main_process_ip",
                 str(machines.main_ip), "--main_process_port", str(machines.main_port)]
    if total > 1:
        args.append("--multi_gpu")
    if ids is not None:
        args += ["--gpu_ids", ",".join(str(gpu) for gpu in ids)]
    return args


def accelerate_config(*, num_processes: int, mixed_precision: str,
                      gpu_ids: Sequence[int | str] | None, machines: Machines = Machines(),
                      ) -> dict[str, Any]:
    """The run's own accelerate config file (JSON, which accelerate reads by its .json name):
    the settings of `accelerate_args`' flags, and the launch's kind (no DeepSpeed, FSDP or
    other plugin; every GPU visible to a single process). Given as `--config_file`, it is read
    instead of the user's default config (`user_configs`), which would otherwise fill in what
    no flag sets. Each machine's rank stays its own flag."""
    ids = _checked_gpu_ids(num_processes, mixed_precision, gpu_ids, machines)
    total = num_processes * machines.count
    document: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if total > 1 else "NO",
        "num_processes": total, "num_machines": machines.count,
        "gpu_ids": "all" if ids is None else ",".join(str(gpu) for gpu in ids),
        "mixed_precision": mixed_precision, "dynamo_config": {}, "use_cpu": False,
        "debug": False}
    if machines.count > 1:
        document |= {"main_process_ip": machines.main_ip,
                     "main_process_port": machines.main_port}
    return document


def write_accelerate_config(document: Mapping[str, Any], path: Path) -> None:
    """Write an `accelerate_config` document atomically, as the JSON accelerate reads."""
    files.write_json(path, dict(document), sort_keys=True)


def user_configs() -> list[Path]:
    """The user's own accelerate config files, where `accelerate launch` looks for one when no
    `--config_file` is given: `default_config.yaml` (or an older `default_config.json`) in
    $HF_HOME/accelerate, else $XDG_CACHE_HOME/huggingface/accelerate, else
    ~/.cache/huggingface/accelerate; those that exist."""
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    named = "$HF_HOME" if os.environ.get("HF_HOME") else "$XDG_CACHE_HOME"
    home = arguments.path(os.environ.get("HF_HOME") or Path(cache) / "huggingface", named)
    return [path for path in (home / "accelerate" / f"default_config.{kind}"
                              for kind in ("yaml", "json")) if path.is_file()]


def train_command(python: str, sd_scripts: Path, config: Path, dataset: Path, *,
                  accelerate_config: Path, given: bool = False, num_processes: int = 1,
                  mixed_precision: str = "no", gpu_ids: Sequence[int | str] | None = None,
                  cpu_threads: int | None = None, resume: Path | None = None,
                  machines: Machines = Machines(), first: str = "") -> Command:
    """`accelerate launch --config_file ACCELERATE_CONFIG sdxl_train_network.py` with our
    config, dataset and optional state.

    `accelerate_config` is the run's own (`write_accelerate_config` of the same values), and
    the flags after it say them again; a user's config (`given`, --accelerate-config) is
    passed alone and untouched. Either way no user's default config is read. Every path is
    made absolute: the command runs inside `sd_scripts`, where a relative one names nothing.
    `first`: the step that installs sd-scripts there, where it is missing (shown only)."""
    launcher = ["--config_file", str(accelerate_config.resolve())]
    if not given:
        threads = cpu_threads or max(1, _cpu_count() // num_processes)
        launcher += accelerate_args(num_processes=num_processes, mixed_precision=mixed_precision,
                                    gpu_ids=gpu_ids, cpu_threads=threads, machines=machines)
    argv = [python, "-m", LAUNCHER, *launcher,
            SCRIPT, "--config_file", str(config.resolve()), "--dataset_config",
            str(dataset.resolve())]
    if resume is not None:
        argv += ["--resume", str(resume.resolve())]
    return Command(argv, sd_scripts, dict(ENV), first)


def own_command(*args: str) -> list[str]:
    """This tool's command line, run by this Python (as on a cluster node sharing its files)."""
    return [sys.executable, "-m", "medsynth_kohya", *args]


def tool_command(*args: str) -> Command:
    """This tool's command as a user types it here (`medsynth-kohya ARGS`), to show."""
    return Command(["medsynth-kohya", *args], Path.cwd())


def resume_command(prepared: str | None, run_dir: Path) -> Command:
    """`medsynth-kohya train PREPARED --run-dir RUN --resume`: how a run that stopped is
    finished (PREPARED as the run recorded it, the placeholder when it did not)."""
    return tool_command("train", prepared or "PREPARED", "--run-dir", str(run_dir), "--resume")


def sbatch_command(script: Path) -> Command:
    """`sbatch --parsable SCRIPT`: submits a SLURM batch script and prints the job id alone."""
    return Command(["sbatch", "--parsable", str(script)], script.parent)


SHORT_TIMEOUT_S = 120.0
"""Seconds a short command (`run_captured`: sbatch) may take before it is given up."""


def run_captured(command: Command, unanswered: str = "") -> str:
    """Run a short command and return its output; a failure is one line with its message,
    one that did not answer in SHORT_TIMEOUT_S with `unanswered` (what it may have done)."""
    try:
        done = subprocess.run(command.argv, cwd=command.cwd, env={**os.environ, **command.env},
                              capture_output=True, text=True, check=False,
                              timeout=SHORT_TIMEOUT_S)
    except FileNotFoundError:
        raise UserError(f"{command.argv[0]} is not installed or not on PATH (run this on the "
                        "cluster's login node)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{command.argv[0]} did not answer within {SHORT_TIMEOUT_S:g} s"
                        f"{unanswered}") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise UserError(f"{shlex.join(command.argv)} failed ({done.returncode}): "
                        f"{said[-1] if said else 'no message'}")
    return done.stdout


def _seconds(clock: str) -> float | None:
    match = _CLOCK.match(clock.strip())
    if not match:
        return None
    return int(match["h"] or 0) * 3600 + int(match["m"]) * 60 + float(match["s"])


def _seconds_per_step(rate: str) -> float | None:
    match = _RATE.match(rate.strip())
    if not match or float(match["value"]) == 0:
        return None
    value = float(match["value"])
    return value if match["unit"] == "s/it" else 1 / value


def parse_progress(line: str) -> StepProgress | None:
    """The training bar's state from one tqdm line (`steps:  10%|█  | 1/10 [00:05<00:45, ...]`)."""
    match = _PROGRESS.match(line)
    if not match:
        return None
    loss_match = _LOSS.search(match["postfix"])
    loss = None
    if loss_match:
        try:
            loss = float(loss_match["loss"])
        except ValueError:
            loss = None
    return StepProgress(int(match["step"]), int(match["total"]), loss,
                        _seconds_per_step(match["rate"]), _seconds(match["remaining"]))


class _Errors:
    """Follows a program's lines for the last error it printed (see RunOutcome.error)."""

    def __init__(self) -> None:
        self.exception: str | None = None
        self.logged: str | None = None
        self._in_traceback = False
        self._column = 0
        """Where the message of the ERROR just logged begins (0: none): rich wraps a long
        one onto lines blank up to there."""

    def see(self, line: str) -> None:
        line = _RANK.sub("", line)
        column, self._column = self._column, 0
        if line.startswith(TRACEBACK):
            self._in_traceback = True
        elif self._in_traceback and line.strip() and not line[0].isspace():
            self._in_traceback = False  # the exception: the first line left unindented
            if not line.startswith(LAUNCHER_ERRORS):
                self.exception = line.strip()
        elif column and self.logged and len(line) > column and not line[:column].strip() \
                and not line[column].isspace():
            self.logged, self._column = f"{self.logged} {line.strip()}", column
        elif not self._in_traceback:
            logged = _LOGGED_ERROR.search(line)
            self.logged = logged["message"].strip() if logged else self.logged
            self._column = logged.start("message") if logged else 0

    @property
    def last(self) -> str | None:
        return self.exception or self.logged


class _Stream:
    """The child's bytes as lines (a line ends at \\r or \\n): logged, kept, reported."""

    def __init__(self, sink: IO[str], on_progress: Callable[[StepProgress], None] | None,
                 on_line: Callable[[str], None] | None) -> None:
        self.sink = sink
        self.on_progress = on_progress
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.last: StepProgress | None = None
        self.closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._tail_is_progress = False
        self.errors = _Errors()

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._pending + self._decoder.decode(data, final)
        hold = "\r" if text.endswith("\r") and not final else ""
        *lines, rest = _BREAK.split(text[:len(text) - len(hold)])
        self._pending = rest + hold
        if final:
            lines.append(self._pending)
            self._pending, self.closed = "", True
        for line in lines:
            if line:
                self._line(line)
        self.sink.flush()

    def _line(self, line: str) -> None:
        bar = _PROGRESS.match(line)
        if bar and line[bar.end():].strip():  # a log line written right after a bar update
            self._line(line[:bar.end()])
            self._line(line[bar.end():].lstrip())
            return
        self.sink.write(line + "\n")
        progress = parse_progress(line)
        if progress is None:
            self.errors.see(line)
            self.tail.append(line)
            self._tail_is_progress = False
            if self.on_line is not None:
                self.on_line(line)
            return
        if self._tail_is_progress:
            self.tail[-1] = line
        else:
            self.tail.append(line)
        self._tail_is_progress = True
        self.last = progress
        if self.on_progress is not None:
            self.on_progress(progress)


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the child's process group (accelerate, the training and its workers)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def run(command: Command, log: Path, on_progress: Callable[[StepProgress], None] | None = None,
        on_line: Callable[[str], None] | None = None) -> RunOutcome:
    """Run `command`, appending its output to `log`; Ctrl-C stops it and returns interrupted."""
    return run_many(
        [command], [log], on_line=None if on_line is None else lambda _, line: on_line(line),
        on_progress=None if on_progress is None else lambda _, step: on_progress(step))[0]


RUN_STEP = "-run"
"""Between the output name and `-step00000100` in the name a step save has while a resumed
launch runs (`name_by_run_step`): the run's step, out of that launch's way."""


def _saves(output_dir: Path, output_name: str, suffix: str) -> list[Path]:
    """What sd-scripts saved in `output_dir` under names ending in `suffix`: `NAME-000002`
    (epoch), `NAME-step00000100` (step; `NAME-run-step00000100` once named by the run's step)
    and the final `NAME`."""
    if not output_dir.is_dir():
        return []
    saved = re.compile(rf"^{re.escape(output_name)}(?:-\d{{6,}}|(?:{RUN_STEP})?-step\d{{8,}})?"
                       rf"{re.escape(suffix)}$")
    return [path for path in output_dir.iterdir() if saved.match(path.name)]


def _launch_named(path: Path, output_name: str) -> bool:
    """Whether a save's name holds the step of the launch that saved it (`NAME-step00000100`,
    as sd-scripts names it), not the run's (`NAME-run-step00000100`)."""
    return path.name.startswith(f"{output_name}-step")


def _save_rank(path: Path, output_name: str, suffix: str, step: int) -> tuple[int, bool, str]:
    """What orders saves (LoRA files, state folders): the step each recorded, then the final
    one (written after a save at the same step), then the name; never the time, which a copy
    rewrites."""
    return (step, path.name == f"{output_name}{suffix}", path.name)


def _counts(path: Path) -> dict[str, int]:
    """The whole-number values of a LoRA file's metadata (`ss_steps`, `ss_epoch`, ...)."""
    metadata = (files.safetensors_header(path) or {}).get("__metadata__")
    return {key: int(value) for key, value in metadata.items()
            if isinstance(value, str) and value.isdigit()} if isinstance(metadata, dict) else {}


def _lora_step(path: Path) -> int:
    """The run's step a LoRA save was made at, from its header: the epochs done (`ss_epoch`)
    and the place in the epoch of `ss_steps`, which sd-scripts counts from 0 again on each
    --resume (at an epoch's start); else `ss_steps`, else the number in its name (without
    metadata an epoch's save orders among the epochs only)."""
    said = _counts(path)
    named = _STEP_NAME.search(path.stem)
    if "ss_steps" not in said:
        return int(named[1] if named else path.stem.rpartition("-")[2])
    steps, epoch = said["ss_steps"], said.get("ss_epoch")
    batches, accumulation = (said.get(key) for key in ("ss_num_batches_per_epoch",
                                                       "ss_gradient_accumulation_steps"))
    if not (steps and epoch is not None and batches and accumulation):
        return steps
    per_epoch = -(-batches // accumulation)
    if named:  # made inside epoch `epoch` + 1
        return epoch * per_epoch + (steps - 1) % per_epoch + 1
    return epoch * per_epoch  # at the end of epoch `epoch`


def lora_files(output_dir: Path, output_name: str) -> list[Path]:
    """LoRA files sd-scripts saved: `NAME-000002` (epoch) and `NAME-step00000100` (step) saves
    by the step they were made at, then the final `NAME.safetensors`."""
    suffix = ".safetensors"
    final = output_dir / f"{output_name}{suffix}"
    saves = [path for path in _saves(output_dir, output_name, suffix)
             if path.is_file() and path != final]
    saves.sort(key=lambda path: _save_rank(path, output_name, suffix, _lora_step(path)))
    return [*saves, final] if final.is_file() else saves


STATE_WRITTEN_LAST = "random_states_0.pkl"
"""accelerate's save_state writes the main process's RNG state after the weights, optimizer
and scheduler (sd-scripts writes train_state.json first, in its pre-hook): a state folder
without it is still being written, or was cut short, and cannot be resumed from."""


REMOVING = ".medsynth-removing"
"""Put in a state folder before `prune_states` empties it: a removal cut short is finished
later, and a folder sd-scripts is still writing (its train_state.json empty for an instant)
is never taken for one."""


STEP_OFFSET = ".medsynth-step-offset.json"
"""In sd-scripts' output folder: the steps the latest launch's own count leaves out. sd-scripts
(v0.10.1) resumes at the start of the epoch holding the state's step but counts its steps from
0 again, so the states it then writes record steps from that epoch's start."""

COUNTED_FROM = "medsynth_counted_from"
"""The key `settle_states` adds to a state's train_state.json once its current_step counts
from the run's start (the steps it added); sd-scripts reads current_step alone."""

BATCHES_LINE = re.compile(r"num batches per epoch / \S+: (\d+)")
"""The line in which sd-scripts says its batches per epoch, before it trains (train_network.py)."""


def _train_state(folder: Path) -> dict[str, Any] | None:
    """A complete state folder's train_state.json; None when incomplete or unreadable."""
    try:
        if not (folder / STATE_WRITTEN_LAST).is_file() or (folder / REMOVING).exists():
            return None
        data = json.loads((folder / "train_state.json").read_text())
        return data if isinstance(data, dict) and type(data.get("current_step")) is int else None
    except (OSError, ValueError):
        return None


def _step_offset(output_dir: Path) -> int:
    """The steps the latest launch into `output_dir` did not count (STEP_OFFSET), 0 if none."""
    try:
        offset = json.loads((output_dir / STEP_OFFSET).read_text()).get("offset")
    except (OSError, ValueError, AttributeError):
        return 0
    return offset if type(offset) is int and offset > 0 else 0


def final_steps(final: Path) -> int | None:
    """The run's steps a final LoRA was saved after: its `ss_steps`, which a resumed sd-scripts
    counts from the start of the epoch it went on at, plus the steps that launch left out
    (STEP_OFFSET beside it); None where its header records no steps."""
    steps = _counts(final).get("ss_steps")
    return None if steps is None else steps + _step_offset(final.parent)


def state_step(folder: Path) -> int:
    """The run's step a complete state folder was saved at: its train_state.json's, plus the
    steps its launch did not count where `settle_states` has not added them yet; -1 when it is
    incomplete or unreadable."""
    data = _train_state(folder)
    if data is None:
        return -1
    return int(data["current_step"]) + (0 if COUNTED_FROM in data else
                                        _step_offset(folder.parent))


def settle_states(output_dir: Path, output_name: str) -> None:
    """Make each complete state's train_state.json count from the run's start (`state_step`),
    once: what a resumed sd-scripts reads, as a user's own `--resume` of it would too.
    sd-scripts writes train_state.json before the rest of a state, so is done with it here."""
    for folder in _state_folders(output_dir, output_name):
        data = _train_state(folder)
        if data is not None and COUNTED_FROM not in data:
            offset = _step_offset(output_dir)
            with contextlib.suppress(OSError):  # settled next time
                files.write_json(folder / "train_state.json", {
                    **data, "current_step": data["current_step"] + offset,
                    COUNTED_FROM: offset}, indent=None)


def name_by_run_step(output_dir: Path, output_name: str, resumed: Path | None, *,
                     refused_ok: bool = False) -> Path | None:
    """Before a resumed launch: give the step saves named by the step of their launch
    (`NAME-step00000100`, as sd-scripts names them) the run's step, out of its way
    (`NAME-run-step00000580`): sd-scripts counts from 0 again and would write over them, the
    state it resumes from among them. An earlier save that holds the name already (a resumed
    launch trains again from the start of its epoch) is kept in SUPERSEDED; a LoRA file without
    its steps or a state not yet complete stays, for sd-scripts to write again. Returns where
    `resumed` is now (resolved, once moved). With `refused_ok`, a rename the disk refuses is
    left for the next resume to make."""
    settle_states(output_dir, output_name)
    wanted = None if resumed is None else resumed.resolve()

    def take_name(path: Path, named: Path) -> None:
        try:
            _take_name(path, named)
        except OSError:
            if not refused_ok:
                raise
    for path in _saves(output_dir, output_name, ".safetensors"):
        if path.is_file() and _launch_named(path, output_name) and "ss_steps" in _counts(path):
            take_name(path, path.with_name(
                f"{output_name}{RUN_STEP}-step{_lora_step(path):08d}.safetensors"))
    for folder in _state_folders(output_dir, output_name):
        data = _train_state(folder)
        if data is None or COUNTED_FROM not in data or not _launch_named(folder, output_name):
            continue
        named = out_of_the_way(folder, output_name)
        if wanted is not None and wanted in (folder.resolve(), named.resolve()):
            resumed = named.resolve()
        take_name(folder, named)
    return resumed


SUPERSEDED = "superseded"
"""The folder beside the saves that keeps an earlier save whose name a later one of the same
run step took, under its own name (`-2`, `-3`, ... where that is taken too)."""


def _take_name(path: Path, named: Path) -> None:
    """Rename `path` to `named`, first moving what holds that name into SUPERSEDED."""
    if named.exists():
        kept = named.parent / SUPERSEDED
        kept.mkdir(exist_ok=True)
        target, count = kept / named.name, 1
        while target.exists():
            count += 1
            target = kept / f"{named.stem}-{count}{named.suffix}"
        named.rename(target)
    path.rename(named)


def out_of_the_way(state: Path, output_name: str) -> Path:
    """Where `name_by_run_step` puts a complete state folder: what a resumed launch's command
    names, its dry run's too."""
    return state.with_name(f"{output_name}{RUN_STEP}-step{state_step(state):08d}-state"
                           ) if _launch_named(state, output_name) else state


def name_as_one_run(output_dir: Path, output_name: str) -> None:
    """After a resumed launch: its step saves and the earlier ones take sd-scripts' names by
    the run's step (`name_by_run_step`, then back where the name is free), as a run never
    stopped names them. A rename the disk refuses (full, say) is left for the next resume:
    the run's end is recorded all the same."""
    name_by_run_step(output_dir, output_name, None, refused_ok=True)
    for path in _saves(output_dir, output_name, ".safetensors") + _state_folders(
            output_dir, output_name):
        plain = path.with_name(path.name.replace(f"{output_name}{RUN_STEP}-step",
                                                 f"{output_name}-step", 1))
        if plain != path and not plain.exists():
            with contextlib.suppress(OSError):
                path.rename(plain)


@contextlib.contextmanager
def run_step_names(output_dir: Path, output_name: str, resumed: Path | None,
                   ) -> Iterator[Path | None]:
    """Around a launch resumed from `resumed`: the run's step saves out of its way
    (`name_by_run_step`; yields where `resumed` is then) until it ends, however it ends,
    a failed start or an error before it included (`name_as_one_run`). Without a state to
    resume, the states of the new launch are settled after it."""
    moved = None if resumed is None else name_by_run_step(output_dir, output_name, resumed)
    try:
        yield moved
    finally:
        if resumed is None:
            settle_states(output_dir, output_name)
        else:
            name_as_one_run(output_dir, output_name)


def _step_saves(output_dir: Path, output_name: str, suffix: str) -> list[Path]:
    """The step saves under names ending in `suffix` (`NAME-step00000100`,
    `NAME-run-step00000100`), and those kept in SUPERSEDED."""
    kept = output_dir / SUPERSEDED
    return [path for path in _saves(output_dir, output_name, suffix)
            if path.name.startswith((f"{output_name}-step", f"{output_name}{RUN_STEP}-step"))
            ] + ([path for path in kept.iterdir() if path.name.startswith(output_name) and
                  _STEP_NAME.search(path.name) and (path.name.endswith(suffix) or (
                      suffix == "-state" and path.is_dir()))] if kept.is_dir() else [])


def keep_last_steps(output_dir: Path, output_name: str, options: Mapping[str, Any],
                    ) -> list[Path]:
    """After a resumed launch: remove the step saves (LoRA files, states) that
    `save_last_n_steps` (`save_last_n_steps_state` for states) keeps no longer, counted back
    from the newest by the run's step, and the earlier copies in SUPERSEDED, as a run never
    stopped keeps none (its states are replaced ones, never resumed: always); sd-scripts removes
    only the names of its own launch, which counts from 0 again. Returns those removed."""
    def last_n(key: str) -> int | None:  # sd-scripts' rule: 0 keeps the newest alone
        value = options.get(key)
        return value if type(value) is int and value >= 0 else None
    kept = output_dir / SUPERSEDED
    loras = [path for path in _step_saves(output_dir, output_name, ".safetensors")
             if path.is_file()]
    states = [path for path in _step_saves(output_dir, output_name, "-state")
              if path.is_dir() and state_step(path) >= 0]
    removed: list[Path] = []
    # states: save_last_n_steps_state where it is set and not 0 (sd-scripts' `or`)
    for n, saves, step in ((last_n("save_last_n_steps"), loras, _lora_step),
                           (last_n("save_last_n_steps_state") or last_n("save_last_n_steps"),
                            states, state_step)):
        newest = max(map(step, saves), default=0)
        for path in saves:
            if (path.parent == kept and (n is not None or path.is_dir())) or (
                    n is not None and step(path) < newest - n):
                with contextlib.suppress(OSError):  # left for the next resume to remove
                    if path.is_file():
                        path.unlink()
                    else:
                        _remove_state(path)
                    removed.append(path)
    return removed


def count_steps(output_dir: Path, output_name: str, resumed: Path | None,
                accumulation: int) -> Callable[[str], None]:
    """Before a launch into `output_dir`: settle the states earlier launches wrote, then note
    that this one's states count from 0, or (resumed from `resumed`) from the start of its
    epoch once sd-scripts says its batches per epoch (of `accumulation` steps) in the log line
    given to the handler returned."""
    settle_states(output_dir, output_name)
    step = 0 if resumed is None else state_step(resumed)
    output_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(output_dir / STEP_OFFSET, {"offset": 0})

    def on_line(line: str) -> None:
        said = BATCHES_LINE.search(line)
        if step > 0 and said and int(said[1]) > 0:
            per_epoch = -(-int(said[1]) // accumulation)
            files.write_json(output_dir / STEP_OFFSET,
                             {"offset": step // per_epoch * per_epoch})
    return on_line


def from_run_start(output_dir: Path, on_progress: Callable[[StepProgress], None] | None,
                   ) -> Callable[[StepProgress], None] | None:
    """`on_progress` told the run's own step and the time left to its end, where a resumed
    sd-scripts counts from 0 again (STEP_OFFSET): its bar would stop short of its total."""
    if on_progress is None:
        return None

    def shifted(progress: StepProgress) -> None:
        offset = _step_offset(output_dir)
        if offset:
            step = min(progress.step + offset, progress.total)
            rate = progress.seconds_per_step
            progress = replace(progress, step=step, eta_seconds=None if rate is None
                               else (progress.total - step) * rate)
        on_progress(progress)
    return shifted


def _state_folders(output_dir: Path, output_name: str) -> list[Path]:
    """sd-scripts' `--save_state` folders: `NAME-000002-state`, `NAME-step00000100-state`,
    `NAME-state`."""
    return [path for path in _saves(output_dir, output_name, "-state") if path.is_dir()]


def final_state(folder: Path, output_name: str) -> bool:
    """Whether `folder` is the state sd-scripts saves only when training ends (`NAME-state`)."""
    return folder.name == f"{output_name}-state"


def latest_state(output_dir: Path, output_name: str) -> Path | None:
    """The most advanced complete state folder, to give `--resume`; by recorded step, then the
    final one (written after a save at the same step), then name. None when none is complete."""
    complete = [path for path in _state_folders(output_dir, output_name)
                if state_step(path) >= 0]
    return max(complete, key=lambda path: _state_rank(path, output_name)) if complete else None


def _state_rank(folder: Path, output_name: str) -> tuple[int, bool, str]:
    """What orders state folders: `_save_rank` by the step recorded in train_state.json."""
    return _save_rank(folder, output_name, "-state", state_step(folder))


def _emptied(folder: Path) -> bool:
    """Whether a state folder was being emptied by a removal that did not finish."""
    return (folder / REMOVING).exists()


def prune_states(output_dir: Path, output_name: str) -> list[Path]:
    """Remove the complete state folders the newest one has replaced (`--resume` needs only
    it), emptying their files first: a synced folder such as Google Drive keeps what is deleted
    in its trash, counted against the quota, and an emptied file costs nothing there. Folders
    still being written (or cut short, to be written again) are left, those in SUPERSEDED (a
    later state of their step replaced them) are not; returns those removed."""
    newest = latest_state(output_dir, output_name)
    if newest is None:
        return []
    rank = _state_rank(newest, output_name)
    # a state completed since `newest` was chosen (the final one, just written) ranks above it
    replaced = [path for path in _state_folders(output_dir, output_name)
                if path != newest and (_emptied(path) or (state_step(path) >= 0 and
                                       _state_rank(path, output_name) < rank))]
    kept = output_dir / SUPERSEDED
    replaced += sorted(path for path in kept.iterdir() if path.is_dir()) if kept.is_dir() else []
    for folder in replaced:
        with contextlib.suppress(OSError):  # what is left is emptied: removed next time
            _remove_state(folder)
    return replaced


def _remove_state(folder: Path) -> None:
    """Empty a state folder's files, then remove it: unresumable from the first change, and
    nothing left in a synced folder's trash. A link to a folder elsewhere is only unlinked:
    what it points to is the user's."""
    if folder.is_symlink():
        folder.unlink()
        return
    (folder / REMOVING).touch()
    marker = folder / "train_state.json"
    for file in [marker, *sorted(folder.rglob("*"))]:
        if file.is_file() and not file.is_symlink():
            os.truncate(file, 0)
    shutil.rmtree(folder)


ISIC_MELANOMA_SEARCH = 'diagnosis_2:"Malignant melanocytic proliferations (Melanoma)"'
"""isic-cli search for melanomas (every diagnosis_3 "Melanoma …" sits under this diagnosis_2)."""
ISIC_2020_TRAINING = 70
"""The ISIC Archive collection id of the ISIC 2020 Challenge training set."""


def isic_download_command(out: Path, *, search: str = ISIC_MELANOMA_SEARCH,
                          collections: Sequence[int] = (ISIC_2020_TRAINING,), limit: int = 0,
                          program: str = "isic") -> Command:
    """`isic image download`: images, metadata.csv, attribution.txt and licenses/ into `out`."""
    argv = [program, "image", "download", "--search", search]
    if collections:
        argv += ["--collections", ",".join(str(c) for c in collections)]
    if limit:
        argv += ["--limit", str(limit)]
    return Command([*argv, str(out)], Path.cwd())


def _footprint(folder: Path) -> tuple[int, int]:
    """Files under `folder` and their total size: changes while a download makes progress."""
    count = size = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(root) / name).stat().st_size
                count += 1
    return count, size


def run_watched(command: Command, folder: Path, *, stall_s: float,
                on_wait: Callable[[float], None] | None = None) -> int | None:
    """Run a command on this terminal (its own progress bars) and return its exit code, or
    stop it and return None once `folder` has gained no file and no byte for `stall_s` seconds;
    `on_wait` hears how long it has been idle, about every 30 s (or half of `stall_s`, when
    shorter). It runs in a session of its own, so stopping it stops the children of a wrapper
    script too; the user's Ctrl-C, which reaches only this process then, is passed on."""
    report_every = min(30.0, stall_s / 2)
    try:
        process: subprocess.Popen[bytes] = subprocess.Popen(
            command.argv, cwd=command.cwd, env={**os.environ, **command.env},
            start_new_session=True, pass_fds=locks.held_fds())
    except FileNotFoundError:
        raise UserError(f"{command.argv[0]} is not installed or not on PATH") from None
    interrupted = False
    try:
        seen, since, reported = _footprint(folder), time.monotonic(), 0
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return process.wait(timeout=min(1.0, report_every))
            now = _footprint(folder)
            if now != seen:
                seen, since, reported = now, time.monotonic(), 0
                continue
            idle = time.monotonic() - since
            if idle >= stall_s:
                return None
            if on_wait is not None and idle >= (reported + 1) * report_every:
                reported += 1
                on_wait(idle)
    except KeyboardInterrupt:
        interrupted = True
        raise UserError(f"{command.argv[0]} was interrupted; run the same command again to "
                        "continue (files already downloaded are kept)") from None
    finally:
        if process.poll() is None:
            _stop_all([process], [None], interruptible=interrupted)


GEN_SCRIPT = "sdxl_gen_img.py"
"""sd-scripts' SDXL image generator, which `sample` runs once per GPU."""


def gen_flags(options: Mapping[str, object]) -> list[str]:
    """sdxl_gen_img.py flags for option values, in the given order.

    True is a bare flag, False and None are left out, a list gives the flag then its items.
    Every name must be one of the script's options (sdopts' snapshot), else ValueError.
    """
    from medsynth_kohya.sdscripts import sdopts

    known = sdopts.load("sdxl_gen_img")
    args: list[str] = []
    for name, value in options.items():
        option = known.get(name)
        if option is None:
            raise ValueError(f"{GEN_SCRIPT} has no option {name!r}")
        if value is None or value is False:
            continue
        if value is True:
            args.append(option.flags[0])
            continue
        items = value if isinstance(value, list | tuple) else [value]
        args += [option.flags[0], *(str(item) for item in items)]
    return args


def gen_command(python: str, sd_scripts: Path, options: Mapping[str, object], *,
                device: str | None = None, first: str = "") -> Command:
    """`python sdxl_gen_img.py` with `options`, run in the checkout; `device` becomes
    CUDA_VISIBLE_DEVICES, so the process sees that one GPU only. `first`: the step that
    installs sd-scripts there, where it is missing (shown only)."""
    env = dict(ENV)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return Command([python, GEN_SCRIPT, *gen_flags(options)], sd_scripts, env, first)


def _start(command: Command) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group, output piped, no input."""
    try:
        return subprocess.Popen(command.argv, cwd=command.cwd, env={**os.environ, **command.env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=locks.held_fds())
    except OSError as exc:
        raise StartError(f"cannot start {command.argv[0]}: {exc}") from exc


def _pump_all(processes: Sequence[subprocess.Popen[bytes]],
              streams: Sequence[_Stream | None], grace: float | None) -> bool:
    """Stream every child's output until all close it and exit (True) or `grace` passes; a
    child whose stream is None writes to the terminal itself."""
    deadline = None if grace is None else time.monotonic() + grace

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    pending: dict[int, _Stream] = {}
    for process, stream in zip(processes, streams, strict=True):
        if stream is not None and not stream.closed and process.stdout is not None:
            pending[process.stdout.fileno()] = stream
    while pending:
        ready, _, _ = select.select(list(pending), [], [], left())
        if not ready:
            return False
        for fd in ready:
            data = os.read(fd, 65536)
            stream = pending[fd]
            stream.feed(data, final=not data)
            if stream.closed:
                del pending[fd]
    for process in processes:
        try:
            process.wait(left())
        except subprocess.TimeoutExpired:
            return False
    return True


def _ignored(_signum: int, _frame: object) -> None:
    """SIGINT's handler while children start: ignores it, as this process was told to."""


@contextlib.contextmanager
def _interruptible() -> Iterator[bool]:
    """Start children inside with SIGINT at its default though this process ignores it (a
    shell starts background jobs so, and exec keeps an ignored signal ignored but resets a
    handled one): `_ignored` stands in meanwhile. Yields whether the children can take SIGINT
    (not where it stays ignored: outside the main thread no handler can be set)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        with contextlib.suppress(ValueError):  # outside the main thread no handler can be set
            signal.signal(signal.SIGINT, _ignored)
    standing_in = ignored and signal.getsignal(signal.SIGINT) is _ignored
    try:
        yield standing_in or not ignored
    finally:
        if standing_in:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_all(processes: Sequence[subprocess.Popen[bytes]], streams: Sequence[_Stream | None],
              interruptible: bool = True) -> None:
    """SIGINT (when the children can take it), then SIGTERM, then SIGKILL to every child still
    running, each after its grace."""
    stages = ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, TERM_GRACE_S),
              (signal.SIGKILL, KILL_GRACE_S))[0 if interruptible else 1:]
    for sig, grace in stages:
        for process in processes:
            _signal(process, sig)  # also when only its group still runs, holding the output
        try:
            if _pump_all(processes, streams, grace):
                return
        except KeyboardInterrupt:
            continue
    for process in processes:
        process.wait()


def run_many(commands: Sequence[Command], logs: Sequence[Path],
             on_line: Callable[[int, str], None] | None = None,
             on_progress: Callable[[int, StepProgress], None] | None = None) -> list[RunOutcome]:
    """Run `commands` side by side, each appending its output to its log.

    `on_line(k, line)` sees command k's lines, `on_progress(k, progress)` its "steps" bar. One
    child failing leaves the others running. Ctrl-C stops every child still running (its
    process or its output open: SIGINT, SIGTERM, SIGKILL) and returns; those come back
    `interrupted`.
    """
    if len(commands) != len(logs):
        raise ValueError("one log per command")
    processes: list[subprocess.Popen[bytes]] = []
    streams: list[_Stream] = []
    with contextlib.ExitStack() as stack:
        sinks = []
        for command, log in zip(commands, logs, strict=True):
            log.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(log.open("a", encoding="utf-8"))
            sink.write(f"# {datetime.now().isoformat(timespec='seconds')} $ {command.shell()}\n")
            sink.flush()
            sinks.append(sink)
        interruptible = True
        try:
            with _interruptible() as interruptible:
                for index, (command, sink) in enumerate(zip(commands, sinks, strict=True)):
                    processes.append(_start(command))
                    streams.append(_Stream(sink, _tagged(on_progress, index),
                                           _tagged(on_line, index)))
        except BaseException:
            _stop_all(processes, streams, interruptible)
            raise
        running: list[bool] = []
        try:
            _pump_all(processes, streams, None)
        except KeyboardInterrupt:
            running = [not stream.closed or process.poll() is None
                       for process, stream in zip(processes, streams, strict=True)]
            _stop_all(processes, streams, interruptible)
        except BaseException:
            for stream in streams:
                stream.on_progress = stream.on_line = None
            _stop_all(processes, streams, interruptible)
            raise
        finally:
            for process in processes:
                if process.stdout is not None:
                    process.stdout.close()
        codes = [process.wait() for process in processes]
    stopped = running or [False] * len(processes)
    return [RunOutcome(code, was_running, stream.last, list(stream.tail), stream.errors.last)
            for code, was_running, stream in zip(codes, stopped, streams, strict=True)]


def _tagged(hook: Callable[[int, _T], None] | None, index: int) -> Callable[[_T], None] | None:
    """`hook` with its first argument fixed to `index` (None stays None)."""
    if hook is None:
        return None

    def tagged(value: _T) -> None:
        hook(index, value)

    return tagged
