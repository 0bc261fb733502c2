"""`train`: render sd-scripts' config, dataset and sample-prompt files, check them, launch.

Flow: prepared folder + preset + overrides -> resolved options -> checks (config, GPUs,
machine) -> RUN/config.toml, RUN/dataset.toml, RUN/sample_prompts.toml -> accelerate launch
-> the run record (training/record.py). Success is judged by the LoRA file written, never by
the exit code alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from medsynth_kohya import __version__, arguments, errors, files, locks, outputs
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.synth import is_synthetic_set
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine import doctor, slurm
from medsynth_kohya.machine.doctor import WARN
from medsynth_kohya.machine.gpus import Gpu, describe_visible, detect_gpus, devices, visible
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sdscripts import checkout, checks, launch, presets, render, sdopts
from medsynth_kohya.training import nodes
from medsynth_kohya.training import plan as planning
from medsynth_kohya.training.record import (
    RECORD_FILE,
    DatasetRecord,
    GpuRecord,
    RunFolder,
    RunRecord,
    VersionsRecord,
    run_instead,
)

SCRIPT = "sdxl_train_network"
PATH_OPTIONS = ("pretrained_model_name_or_path", "vae", "tokenizer_cache_dir", "network_weights")
"""Options naming files: made absolute when they exist from here (sd-scripts runs elsewhere)."""
SAMPLE_PROMPTS = 4
"""Training-time sample prompts: the first distinct ones of `sample`'s default set."""
PRUNE_S = 5.0
"""How often, at most, a running training's replaced resume states are looked for."""
TOOL = outputs.TOOL
RUNS_ROOT = Path("runs")
"""Where runs go without --run-dir, relative to the current folder."""
DEFAULT_PRESET = "t4-16gb"
"""The preset of a new run when none is given (a resumed run keeps its own)."""


SHOWN_SAVES = 3
"""The saves a run's closing table lists by name (the last ones); one row counts the rest."""


@dataclass(frozen=True)
class TrainResult:
    """What `train` wrote, what it ran (or would run) and how that ended."""

    run_dir: Path
    status: str
    """"dry-run", "succeeded", "failed" or "interrupted"."""
    command: launch.Command
    config: Path
    dataset_config: Path
    sample_prompts: Path
    expected_steps: int | None
    warnings: tuple[str, ...] = ()
    plan: planning.RunPlan | None = None
    """Steps, epochs, saves, sample rounds and their disk, as sd-scripts will run them."""
    lora_files: tuple[Path, ...] = ()
    """Every LoRA file in the run's output: its saves, then the final one when written."""
    lora: Path | None = None
    """The final LoRA file, when sd-scripts wrote it."""
    message: str = ""
    """What happened: the LoRA written, or why the run did not finish."""
    advice: str = ""
    """How to go on after a run that did not finish (--resume or --force)."""
    log: Path | None = None
    tail: tuple[str, ...] = field(default_factory=tuple)
    job: slurm.Job | None = None
    """With --slurm: the batch script that trains on the cluster's machines."""
    stopped: bool = False
    """Whether a stop (Ctrl-C, SIGTERM) came while sd-scripts ran, even one too late to cut
    it short: a pipeline that goes on after training stops there."""

    def outcome_rows(self) -> list[tuple[str, str]]:
        """The status, the last SHOWN_SAVES saves (a row counts the earlier ones: a long run
        saves dozens of times), and the final LoRA: named as the run's result only when the run
        succeeded."""
        saves = [path for path in self.lora_files if path != self.lora]
        earlier = saves[:-SHOWN_SAVES]
        counted = [("save", f"… {files.counted(len(earlier), 'earlier save')} in "
                    f"{earlier[0].parent}")] if earlier else []
        rows = [("status", self.status), *counted,
                *(("save", str(path)) for path in saves[-SHOWN_SAVES:])]
        if self.status == "succeeded":
            return [*rows, ("LoRA", str(self.lora))]
        return [*rows, ("LoRA", "none: the run did not finish" if self.lora is None else
                        f"{self.lora} (written, but the run then {self.status})")]


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; the value is read as TOML (1e-4, true, "x", [..]) else as text.

    An empty value (`vae=`) removes the key.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--set {item!r} must look like key=value, e.g. --set "
                            "learning_rate=1e-4")
        if key in presets.RUN_OWNED:
            raise UserError(f"--set {key} is decided by the run ({key} lives in the run "
                            "folder); use --run-dir to choose where")
        text = text.strip()
        if not text:
            parsed[key] = None
            continue
        if key in presets.REFUSED_OPTIONS:
            raise UserError(f"--set {key} {presets.REFUSED_OPTIONS[key]}")
        parsed[key] = render.value(text)
    return {key: presets.as_written(key, value) for key, value in parsed.items()}


def _merge(preset: presets.Preset, overrides: Mapping[str, Any],
           owned: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The config document: run-owned table, then the preset's tables with overrides applied."""
    document: dict[str, dict[str, Any]] = {}
    run_table = render.render("config.toml", owned)
    for name, table in run_table.items():
        document[name] = dict(table)
    placed: set[str] = set()
    for name, table in preset.tables.items():
        merged = {}
        for key, value in table.items():
            if key in overrides:
                placed.add(key)
                value = overrides[key]
            if value is not None:
                merged[key] = value
        document[name] = merged
    extra = {k: v for k, v in overrides.items() if k not in placed and v is not None}
    if extra:
        document[presets.OVERRIDES_TABLE] = extra
    return document


def _choose_steps(preset: presets.Preset, changes: dict[str, Any],
                  target: Any) -> tuple[dict[str, Any], str]:
    """The run's max_train_steps: an explicit --set, else the prepared target (prepare
    --target-steps), else the preset's; returns the changes to apply and which one won."""
    preset_steps = preset.options.get("max_train_steps")
    if "max_train_steps" in changes:
        return changes, "--set max_train_steps"
    if isinstance(target, int) and target > 0:
        over = (f", over preset {preset.name}'s {preset_steps}"
                if preset_steps not in (None, target) else "")
        return {**changes, "max_train_steps": target}, f"prepare --target-steps{over}"
    if preset_steps is not None:
        return changes, f"preset {preset.name}; prepare recorded no --target-steps"
    return changes, "sd-scripts' default"


def _steps_source(options: Mapping[str, Any], changes: Mapping[str, Any], chosen: str) -> str:
    """`chosen`, unless max_train_epochs is set: sd-scripts then ignores max_train_steps."""
    epochs = options.get("max_train_epochs")
    if not isinstance(epochs, int) or epochs <= 0:
        return chosen
    origin = "--set" if "max_train_epochs" in changes else "the preset"
    return (f"max_train_epochs = {epochs} from {origin}, which sd-scripts puts before "
            "max_train_steps")


def _disk_problem(run: planning.RunPlan, run_dir: Path) -> list[str]:
    """A refusal when the saves would not fit in the free disk."""
    if run.fits or run.disk_bytes is None:
        return []
    one, need = dict(run.rows())["one save"], planning.size(run.disk_bytes)
    return [f"disk: the saves need {need} ({run.saves} saves of {one}) but "
            f"{planning.size(run.free_bytes)} is free in {run_dir}; save less often (--set "
            "save_every_n_steps=N or save_every_n_epochs=N), keep fewer (--set "
            "save_last_n_steps=N or save_last_n_epochs=N), or free space"]


def _pruning(output: Path, name: str, on_progress: Callable[[launch.StepProgress], None] | None,
             ) -> Callable[[launch.StepProgress], None]:
    """`on_progress`, also removing the resume states a newer one replaced (at most every
    PRUNE_S), so a run keeps one state beside its LoRA saves wherever they are written."""
    due = 0.0

    def progress(step: launch.StepProgress) -> None:
        nonlocal due
        if time.monotonic() >= due:
            launch.prune_states(output, name)
            due = time.monotonic() + PRUNE_S
        if on_progress is not None:
            on_progress(step)
    return progress


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists (where a folder not made yet will be)."""
    return next(path for path in (folder, *folder.parents) if path.exists())


def _machine_problems(location: checkout.Location, python: str, options: Mapping[str, Any],
                      preset: presets.Preset, gpus: Sequence[Gpu], run_dir: Path,
                      ) -> tuple[list[str], list[str], dict[str, str]]:
    """The doctor's checks for this run and its model files: failures (refuse a launch),
    warnings, versions."""
    sd_dir = location.path
    needed = checks.needs(options)
    report = doctor.diagnose(sd_scripts=location, python=python, workdir=_existing(run_dir),
                             gpus=gpus, device=preset.device, needs=needed, hub=False)
    problems = [f"{c.name}: {c.detail}; {c.fix}" for c in report.failures()]
    unneeded = set(doctor.OPTIONAL_MODULES) - set(needed)
    warnings = [f"{c.name}: {c.detail}; {c.fix}" for c in report.checks
                if c.status == WARN and c.name not in unneeded]
    return problems + checks.missing_models(options, sd_dir), warnings, report.versions


@dataclass(frozen=True)
class _Config:
    """A run's sd-scripts options, resolved and checked, and the GPUs it runs on."""

    document: dict[str, dict[str, Any]]
    options: dict[str, Any]
    steps_source: str
    gpus: list[Gpu]
    processes: int


def _configure(preset: presets.Preset, changes: Mapping[str, Any], sd_dir: Path, python: str,
               run_dir: Path, class_name: str, target_steps: Any, gpus: int | None,
               seen: Callable[[], list[Gpu]]) -> _Config:
    """Preset, overrides and the run's own keys merged; what sd-scripts or the GPUs present
    would reject is refused here, even under --dry-run."""
    changes = {key: checkout.local_path(value, sd_dir, f"--set {key}")
               if key in PATH_OPTIONS and isinstance(value, str) else value
               for key, value in changes.items()}
    folder = RunFolder(run_dir)
    owned = {"output_dir": str(folder.output.resolve()), "output_name": class_name,
             "logging_dir": str(folder.logs.resolve()),
             "sample_prompts": str(folder.sample_prompts.resolve())}
    changes, chosen = _choose_steps(preset, changes, target_steps)
    document = _merge(preset, changes, owned)
    options = presets.flatten(document)
    errors = (_unset_errors(preset, changes, options) + sdopts.check(SCRIPT, options)
              + checks.config_errors(options, sd_dir, python))
    if "dataset_repeats" in changes:  # sd-scripts takes the dataset config's num_repeats
        errors.append("--set dataset_repeats does not reach a prepared folder: its images repeat "
                      "as the class folder's name says (img/<R>_<class>); choose R with "
                      "`medsynth-kohya prepare --repeats R` (or --target-steps)")
    found_gpus = [] if preset.device == "cpu" else seen()
    processes = _processes(preset, gpus, found_gpus)
    if preset.device == "cpu":
        errors += checks.cpu_errors(options)
    elif found_gpus:
        errors += checks.gpu_errors(options, found_gpus, processes, preset.min_gpu_memory_gib,
                                    found=describe_visible(len(found_gpus)))
    if errors:
        raise UserError(files.problems_line(
            f"the training of --preset {preset.name} cannot run with these settings", errors))
    return _Config(document, options, _steps_source(options, changes, chosen), found_gpus,
                   processes)


def _processes(preset: presets.Preset, gpus: int | None, found: Sequence[Gpu]) -> int:
    """This machine's training processes: --gpus, else the preset's, else one per GPU found;
    a CPU preset runs one, and asking it for more is refused."""
    processes = gpus or preset.num_processes or max(1, len(found))
    if preset.device == "cpu" and processes > 1:
        fix = ("leave out --gpus" if gpus else
               f"set num_processes = 1 in [{presets.OWN_TABLE}] of {preset.path}")
        raise UserError(f"preset {preset.name} runs on the CPU (device = \"cpu\"), in one "
                        f"process, not {processes}: {fix}")
    return processes


def _gpu_ids(processes: int) -> list[str] | None:
    """`accelerate launch --gpu_ids` of this machine's processes (None for one, which sees
    every visible GPU): accelerate sets CUDA_VISIBLE_DEVICES to them, so they are the GPUs
    the shell left visible, never others of the machine."""
    return devices(processes, f"{processes} training processes") if processes > 1 else None


def _unset_errors(preset: presets.Preset, changes: Mapping[str, Any],
                  options: Mapping[str, Any]) -> list[str]:
    """One line naming the options sd-scripts cannot run without that the config lacks, and
    where to give them: the preset file, or the --set that removed one."""
    unset = checks.unset_required(options)
    if not unset:
        return []
    given = [key for key in unset if key in changes]
    if given:
        key, value = given[0], changes[given[0]]
        return [f"--set {key}={'' if value is None else repr(value)} leaves no {key} "
                f"({checks.REQUIRED[key]}), which {SCRIPT}.py cannot run without: leave it "
                f"out or give {key}=VALUE"]
    named = " and no ".join(f"{key} ({checks.REQUIRED[key]})" for key in unset)
    return [f"preset {preset.path.name} sets no {named}, which {SCRIPT}.py cannot run without: "
            f"add {'them' if len(unset) > 1 else 'it'} under [settings] in {preset.path}, or "
            f"--set {unset[0]}=VALUE"]


def _preflight(location: checkout.Location, python: str, preset: presets.Preset,
               config: _Config, run_dir: Path, *, images: int, repeats: int, resume: bool,
               machines: int = 1) -> tuple[list[str], list[str], dict[str, str],
                                           planning.RunPlan]:
    """The machine's and the disk's refusals, the warnings, the versions and the run's plan,
    found without writing anything."""
    problems, warnings, versions = _machine_problems(location, python, config.options, preset,
                                                     config.gpus, run_dir)
    if preset.device != "cpu":
        problems += checks.missing_gpus(config.processes, config.gpus)
    output = RunFolder(run_dir).output
    saved = (sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
             if resume and output.is_dir() else 0)
    run = planning.plan(config.options, images=images, repeats=repeats,
                        processes=config.processes * machines,
                        steps_source=config.steps_source,
                        free_bytes=shutil.disk_usage(_existing(run_dir)).free + saved)
    warmup = checks.warmup_warning(config.options, run.steps, config.processes * machines)
    return (problems + _disk_problem(run, run_dir), warnings + ([warmup] if warmup else []),
            versions, run)


def check(preset_name: str, overrides: Sequence[str], run_dir: Path, *, class_name: str,
          target_steps: int | None, images: int, repeats: int, sd_scripts: Path | None = None,
          python: str | None = None, detect: Callable[[], list[Gpu]] = detect_gpus,
          ) -> tuple[list[str], list[str]]:
    """Every check `train` runs before it writes, for a prepared folder that is not made yet
    (`images` x `repeats` of `class_name`): config errors raise, the machine's and the disk's
    refusals and the warnings are returned. Writes nothing; reproduce runs it before preparing."""
    preset = presets.load(preset_name)
    location = checkout.find(sd_scripts)
    runner = checkout.python(python)
    config = _configure(preset, parse_overrides(overrides), location.path, runner, run_dir,
                        class_name, target_steps, None, lambda: visible(detect()))
    problems, warnings, _, _ = _preflight(location, runner, preset, config, run_dir,
                                          images=images, repeats=repeats, resume=False)
    return problems, warnings


def _died(record: RunRecord) -> str | None:
    """Who left a record `running`. Read under the run folder's lock, which a live run holds
    (with its training), so that process is gone."""
    if record.status != "running":
        return None
    return (f"pid {'?' if record.pid is None else record.pid} on "
            f"{'?' if record.host is None else record.host}, started {record.start or '?'}")


def _claim_run_dir(run_dir: Path, force: bool, resume: bool, dry_run: bool) -> RunRecord:
    """Never overwrite an earlier run unless --force (a dry run may be replaced), nor write
    into a folder that holds no run; returns the earlier run's record (empty when there is
    none). Only checks: the earlier outputs are set aside once every check has passed."""
    folder = RunFolder(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file; choose a folder")
    if not folder.exists() and not resume and run_dir.is_dir() and [
            path for path in locks.foreign_entries(run_dir) if path.name != nodes.FOLDER]:
        raise UserError(f"--run-dir {run_dir} is not empty and holds no training run (no "
                        f"{RECORD_FILE}); choose an empty or new folder")
    previous = RunRecord()
    if folder.exists() and not (force and not resume):
        previous = folder.readable(f"so what {run_dir} holds is unknown: mend it, choose "
                                   "another --run-dir, or pass --force to start over")
    if resume:
        if not folder.exists():
            raise UserError(f"--resume needs an earlier run in {run_dir} (no {RECORD_FILE} "
                            "there)")
        return previous
    if folder.exists() and not force:
        status = previous.status
        died = _died(previous)
        if died:
            raise UserError(f"{run_dir} holds a run left running by {died}, which no longer "
                            "runs; use --resume to continue it, another --run-dir, or --force "
                            "to start over")
        if status != "dry-run":
            again = "" if status == "succeeded" else "use --resume to continue it, "
            raise UserError(f"{run_dir} already holds {_a_run(status)}; {again}choose "
                            "another --run-dir, or pass --force to start over")
    if folder.exists() and dry_run:  # with --force: only a dry run's record may be replaced
        try:
            status = folder.load().status
        except (OSError, ValueError):
            status = None
        if status != "dry-run":
            raise UserError(f"{run_dir} holds {_a_run(status)} whose record a dry run would "
                            "replace; dry-run into another --run-dir")
    return previous


def _a_run(status: str | None) -> str:
    """A run of this status, as a message names it: "a failed run", "an interrupted run"."""
    if status is None:
        return "a run"
    return f"{'an' if status[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {status} run"


@contextmanager
def _record_kept_on_refusal(path: Path) -> Iterator[None]:
    """Put the run record back as it was when the run is refused or stopped before its
    launch."""
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        yield
    except (UserError, KeyboardInterrupt):
        if before is None:
            path.unlink(missing_ok=True)
        else:
            files.write_text(path, before)
        raise


def verdict(outcome: launch.RunOutcome, final: Path) -> tuple[str, str]:
    """The run's status and what happened: "succeeded" needs exit status 0 *and* the final LoRA
    file (also when a stop came too late to cut it short); any other interruption is
    "interrupted" whatever the exit status; a failure says the last error sd-scripts printed."""
    if outcome.returncode == 0 and final.is_file():
        late = " (training finished before the stop reached it)" if outcome.interrupted else ""
        return "succeeded", f"LoRA written to {final}{late}"
    if outcome.interrupted:
        return "interrupted", "stopped"
    said = f": {outcome.error}" if outcome.error else ""
    if final.is_file():
        return "failed", f"sd-scripts exited with {outcome.returncode}{said}"
    return "failed", (f"sd-scripts exited with {outcome.returncode} and wrote no LoRA "
                      f"file{said}")


def next_step(status: str, final: Path, state: Path | None, limit: int | None = None) -> str:
    """How to go on after a run that did not finish: from its newest saved state with --resume,
    else over again (--resume --force keeps the run's settings); the state saved at the end of
    training (before the final LoRA, `final`) or at the step `limit` is no place to go on from."""
    fix = "fix what failed and " if status == "failed" else ""
    over = (f"{fix}start over with --resume --force (same settings) or --force (new ones)")
    if status == "succeeded":
        return ""
    if final.is_file():
        return f"check {final} (written before sd-scripts stopped), or {over}"
    why = _unresumable(state, limit, final.stem)
    if state is None or why:
        return f"{why}: {over}"
    again = ", or fix what failed and start over with --force" if fix else ""
    return f"continue from {state.name} with --resume{again}"


def retrain_advice(record: RunRecord, run_dir: Path) -> str:
    """How to get a run's LoRA files, which it lacks, as train takes it (push and sample say
    it): --resume finishes a run that stopped, but only reports a succeeded one as finished
    (--resume --force trains it again, and trains a dry run with its preset)."""
    demo = _demo_out(record, run_dir)
    if record.status == "dry-run" and demo is not None:
        again = launch.tool_command("demo", "--out", str(demo)).line()
        fresh = launch.tool_command("train", str(record.prepared)).line()
        return ("`medsynth-kohya demo` only rendered this run, as it does on a machine without "
                f"a CUDA GPU: on one with a CUDA GPU, run `{again}` again or `{fresh}`")
    resume = launch.resume_command(record.dataset.prepared if record.dataset else None,
                                   run_dir)
    if record.status == "dry-run":  # --resume keeps its preset and --set; --force starts it
        return f"it was a dry run: train it with `{resume.line()} --force`"
    if record.status == "succeeded":
        return f"the run succeeded: train it again from step 0 with `{resume.line()} --force`"
    return f"the run is {record.status or 'unknown'}: {finish_advice(record, run_dir)}"


def _demo_out(record: RunRecord, run_dir: Path) -> Path | None:
    """The --out of the `demo` whose run `run_dir` is (OUT/run, on the photos it drew in
    OUT/source), else None: its dry run is no `train --dry-run` the user typed."""
    try:
        state = PreparedFolder(record.prepared).state_if_any() if record.prepared else None
    except (OSError, ValueError, UserError):  # gone or unreadable: no telling
        return None
    source = state.source_metadata.parent if state and state.source_metadata else None
    if source is None or not is_synthetic_set(source) \
            or (source.parent / "run").resolve() != run_dir.resolve():
        return None
    return source.parent


def finish_advice(record: RunRecord, run_dir: Path) -> str:
    """How to finish a run that did not succeed, as train's own failure words it: `--resume`
    from its newest saved state, else over again with `--resume --force` (--resume refuses)."""
    resume = launch.resume_command(record.dataset.prepared if record.dataset else None, run_dir)
    state, _ = newest_state(run_dir, record)
    why = _unresumable(state, record_limit(record), record.output_name)
    if not why:
        return f"finish it with `{resume.line()}`"
    fix = "fix what failed and " if record.status == "failed" else ""
    return f"{why}: {fix}start over with `{resume.line()} --force` (same settings)"


def newest_state(run_dir: Path, record: RunRecord, steps: int | None = None,
                 ) -> tuple[Path | None, str]:
    """A recorded run's newest complete state, and why sd-scripts cannot go on from it ("" when
    it can, or there is none; `steps` where the record has none): what its advice and
    reproduce's next action are decided by."""
    name = record.output_name
    state = launch.latest_state(RunFolder(run_dir).output.resolve(), name) if name else None
    if state is None or not name:
        return state, ""
    return state, at_end(state, record_limit(record, steps), name)


def _unresumable(state: Path | None, limit: int | None, name: str) -> str:
    """Why `--resume` cannot go on from `state`, the newest saved state of a run of
    `limit` steps (None: unknown) and output name `name`: none was saved, or it is at the end;
    "" when it can."""
    if state is None:
        return "it saved no training state to resume from"
    end = at_end(state, limit, name)
    return f"its newest state, {state.name}, {end}" if end else ""


def finished_lora(final: Path, steps: int | None) -> bool:
    """Whether `final`, a run's final LoRA, is whole and was saved at its last step of `steps`
    (`launch.final_steps`; a resumed sd-scripts trains on to its last epoch's end, past
    `steps`): the training's result, even when the run was stopped after."""
    done = launch.final_steps(final)
    return steps is not None and done is not None and done >= steps


def record_limit(record: RunRecord, steps: int | None = None) -> int | None:
    """The max_train_steps sd-scripts stops a recorded run at (`steps` where the record has
    none; None when unknown: see plan.step_limit)."""
    return planning.step_limit(record.config or {}, record.expected_steps or steps)


def at_end(state: Path, limit: int | None, name: str) -> str:
    """Why sd-scripts cannot go on from `state`: its step is not below max_train_steps `limit`
    (sd-scripts asserts it; None: unknown), or it is the state sd-scripts saves when training
    ends (output name `name`); "" when it can."""
    step = launch.state_step(state)
    if limit is not None and step >= limit:
        return f"is at step {step} of {limit}, which sd-scripts cannot go on from"
    if launch.final_state(state, name):
        return "was saved at the end of training, which sd-scripts cannot go on from"
    return ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Cluster:
    """Training on more than one machine: accelerate's multi-node values, or its config file
    passed through untouched, or (`slurm`, the #SBATCH settings) a SLURM job to write."""

    machines: launch.Machines = field(default_factory=launch.Machines)
    accelerate_config: Path | None = None
    slurm: tuple[str, ...] | None = None
    submit: bool = False
    wait_s: float = nodes.WAIT_S

    def __post_init__(self) -> None:
        arguments.check_fields(self)


def _settle(cluster: Cluster, gpus: int | None) -> tuple[Cluster, int | None]:
    """The cluster with its machines read from --accelerate-config, and this machine's GPU
    count; refuses what accelerate would reject."""
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus must be at least 1 (got {gpus}); leave it out for the "
                        "preset's")
    if cluster.accelerate_config is not None:
        if cluster.machines != launch.Machines() or cluster.slurm is not None:
            raise UserError("--accelerate-config sets the machines itself: leave out "
                            "--num-machines, --machine-rank, --main-process-ip/-port and --slurm")
        machines, per_machine = nodes.from_accelerate_config(cluster.accelerate_config)
        if gpus is not None and gpus != per_machine:
            raise UserError(f"--gpus {gpus} disagrees with --accelerate-config "
                            f"{cluster.accelerate_config}, which starts {per_machine} "
                            "process(es) per machine")
        return replace(cluster, machines=machines), per_machine
    machines = cluster.machines
    if cluster.slurm is not None:
        if machines.rank or machines.main_ip:
            raise UserError("--slurm gives each machine its rank and rank 0's address: leave "
                            "out --machine-rank and --main-process-ip")
        machines = replace(machines, main_ip="$MEDSYNTH_MAIN_IP")
    problems = machines.problems()
    if problems:
        raise UserError(problems[0])
    return replace(cluster, machines=machines), gpus


@arguments.checked
def train(prepared: arguments.PathArg, preset_name: str | None = None, *,
          overrides: Sequence[str] = (), run_dir: arguments.PathArg | None = None,
          sd_scripts: arguments.PathArg | None = None, python: str | None = None,
          gpus: int | None = None, dry_run: bool = False, resume: bool = False,
          force: bool = False, break_lock: bool = False, cluster: Cluster = Cluster(),
          detect: Callable[[], list[Gpu]] = detect_gpus,
          on_progress: Callable[[launch.StepProgress], None] | None = None,
          on_launch: Callable[[TrainResult], None] | None = None) -> TrainResult:
    """Render, check and launch (or, with `dry_run`, only render, check and show) a training run,
    holding the run folder's lock (locks.py) throughout, and marking `prepared` as read while
    it trains (a prepare into it is refused; one writing it refuses this). `on_launch` sees
    the checked plan just before sd-scripts starts. On several machines (`cluster`), rank 0
    does all this and the others follow it (training/nodes.py); with `cluster.slurm` the run
    is checked here and a batch script written (and submitted) instead. With `resume`, the
    run keeps the preset and overrides it was started with (`preset_name` None, or the
    same) and goes on from its saved state; a finished run is only reported as such; with
    `force` too, the run starts over from step 0."""
    prepared, overrides = arguments.path(prepared, "prepared"), arguments.texts(overrides,
                                                                                "overrides")
    run_dir = arguments.optional_path(run_dir, "run_dir")
    sd_scripts = arguments.optional_path(sd_scripts, "sd_scripts")
    instead = run_instead(prepared)
    if instead is not None:
        raise UserError(f"{instead} (with --run-dir {shlex.quote(str(prepared))} --resume to "
                        "continue this run)")
    if run_dir is not None and run_dir.resolve() == prepared.resolve():
        raise UserError(f"--run-dir {run_dir} is the prepared folder train reads: train writes "
                        "the run into a folder of its own; give another --run-dir, or leave it "
                        f"out for {RUNS_ROOT}/<preset>-<time>")
    cluster, gpus = _settle(cluster, gpus)
    # a dry run and --resume read PREPARED too: a first prepare still writing it is no "not
    # prepared" (one starting later is refused by the check after `reading` below)
    locks.ensure_idle(prepared, "train", writers=("prepare",), break_lock=break_lock)
    notes: list[str] = []
    if resume and run_dir is None and cluster.machines.rank == 0:
        run_dir = newest_run(prepared, RUNS_ROOT)
        notes.append(f"resuming {run_dir}, the newest run of {prepared} (--run-dir chooses "
                     "another)")
    if resume and run_dir is not None:  # every machine runs the run's own settings
        preset_name, overrides = _as_started(run_dir, prepared, preset_name, overrides)
    preset = presets.load(DEFAULT_PRESET if preset_name is None else preset_name)
    sbatch = slurm.parse_settings(cluster.slurm or ())
    if cluster.slurm is not None and gpus is None and not preset.num_processes and (
            preset.device != "cpu"):  # the job would ask SLURM for one GPU per machine
        raise UserError(f"--slurm needs --gpus G, the GPUs of each machine for the job to ask "
                        f"SLURM for: preset {preset.name} starts one process per GPU found, "
                        "which the login node cannot see (e.g. --gpus 8)")
    if cluster.machines.rank > 0:
        if run_dir is None:
            raise UserError("machines other than rank 0 need --run-dir: the run folder rank 0 "
                            "writes, on a file system every machine shares")
        state_dir = _resume_state(prepared, run_dir) if dry_run and resume and not force else None
        return _follow(preset, overrides, run_dir, sd_scripts, python, gpus, dry_run,
                       break_lock, cluster, detect, on_progress, state_dir)
    fresh = run_dir is None
    run_dir = run_dir or _new_run_dir(preset.name)
    launches = not dry_run and cluster.slurm is None
    with (_removed_if_empty(run_dir) if fresh else nullcontext(),
          locks.hold(run_dir, "train", break_lock=break_lock) as lock,
          locks.reading(prepared, "train") if launches else nullcontext(),
          _record_kept_on_refusal(RunFolder(run_dir).record_file)):
        if launches:  # after marking it read: a prepare starting now refuses
            locks.ensure_idle(prepared, "train", writers=("prepare",), break_lock=break_lock)
            # a sample reading the run's LoRA: this would change it (--force moves it aside)
            notes += locks.ensure_unread(run_dir, "train", break_lock=break_lock)
        try:  # under --slurm this machine's GPUs say nothing of the compute nodes': the
            # job's, of unknown kind, stand for them (rank 0 checks them when the job starts)
            job_gpus = gpus or preset.num_processes or 1
            result = _train(prepared, preset, overrides, run_dir, sd_scripts, python, gpus,
                            dry_run or cluster.slurm is not None, resume, force, cluster,
                            (lambda: visible(detect())) if cluster.slurm is None
                            else lambda: slurm.task_gpus(job_gpus), on_progress, on_launch)
        except UserError as exc:
            if cluster.machines.count > 1 and not dry_run and cluster.slurm is None:
                nodes.decide(run_dir, status="refused", message=str(exc).splitlines()[0])
            raise
    notes += [] if lock.note is None else [lock.note]
    if cluster.slurm is not None and result.status == "dry-run":  # not for a finished run
        text = nodes.train_script(
            prepared, DEFAULT_PRESET if preset_name is None else preset_name, overrides, run_dir,
            count=cluster.machines.count,
            gpus=0 if preset.device == "cpu" else gpus or preset.num_processes or 1,
            port=cluster.machines.main_port,
            sd_scripts=sd_scripts, python=python, resume=resume, force=force,
            sbatch=sbatch)
        job = (slurm.Job(text) if dry_run else
               slurm.write(text, run_dir / "train.sbatch", submit=cluster.submit))
        result = replace(result, job=job)
        notes += [] if slurm.asks_cpus(sbatch) else [slurm.FEW_CPUS]
    return replace(result, warnings=(*notes, *result.warnings))


def _new_run_dir(preset: str) -> Path:
    """`runs/<preset>-<start time>`, made here, at once: a run started in the same second
    (two trains side by side) finds it made and takes the next free `-2`, `-3`, …."""
    stamp = f"{preset}-{datetime.now():%Y%m%d-%H%M%S}"
    files.make_folder(RUNS_ROOT)
    number = 1
    while True:
        folder = RUNS_ROOT / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
        except OSError as exc:
            raise files.folder_error(folder, exc) from None


@contextmanager
def _removed_if_empty(folder: Path) -> Iterator[None]:
    """Remove the run folder made for this run, and `runs/`, when the run is refused before
    it writes anything there."""
    try:
        yield
    finally:
        for made in (folder, RUNS_ROOT):
            with suppress(OSError):
                made.rmdir()


def _resume_state(prepared: Path, run_dir: Path) -> Path | None:
    """The saved state machine 0 would resume `run_dir` from now: its newest complete one,
    where it will be once out of the resumed launch's way."""
    name = str(PreparedFolder(prepared).state().class_name)
    state = launch.latest_state(RunFolder(run_dir).output.resolve(), name)
    return None if state is None else launch.out_of_the_way(state, name)


def _as_started(run_dir: Path, prepared: Path, preset_name: str | None,
                overrides: Sequence[str]) -> tuple[str | None, Sequence[str]]:
    """The preset and overrides the run in `run_dir` was started with; a UserError when other
    ones are given, or when it trained on another prepared folder or another manifest."""
    data = PreparedFolder(prepared)
    data.state()  # a UserError when PREPARED is gone or was not prepared
    folder = RunFolder(run_dir)
    if not folder.exists():
        return preset_name, overrides  # _claim_run_dir says what is missing
    previous = folder.readable("--resume needs it to continue the run: mend it, or start "
                               "over with --force (without --resume) or in another --run-dir")
    if previous.config is None:  # stopped before its files were rendered: nothing to keep
        return previous.preset if preset_name is None else preset_name, overrides
    started = [f"--preset {previous.preset}"] + [f"--set {o}" for o in previous.overrides or []]
    if ((preset_name is not None and presets.load(preset_name).name != previous.preset)
            or (overrides and list(overrides) != list(previous.overrides or []))):
        raise UserError(f"{run_dir} was started with {' '.join(started)}; --resume continues "
                        "it with those: leave out --preset and --set (or give the same), or "
                        "start a new run in another --run-dir")
    dataset = previous.dataset
    if dataset is not None and dataset.prepared != str(prepared.resolve()) and not (
            dataset.manifest_sha256 and data.manifest.is_file()
            and files.sha256(data.manifest) == dataset.manifest_sha256):  # moved or copied
        raise UserError(f"{run_dir} trained on {dataset.prepared}, not {prepared} (its "
                        "manifest.csv differs): resume it with that folder, or train "
                        f"{prepared} in another --run-dir")
    if previous.prepared_again():
        raise UserError(f"{prepared} was prepared again since {run_dir} started (its "
                        "manifest.csv changed), so a resumed run would train on other "
                        "images; start a new run in another --run-dir")
    return _started_preset(run_dir, previous, preset_name), previous.overrides or []


def _digest(document: Mapping[str, Any]) -> str:
    """sha256 of a rendered TOML document, its keys in order."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _ensure_same_data(prepared: Path, run_dir: Path, previous: RunRecord,
                      now: DatasetRecord) -> None:
    """Refuse to resume a run on other data than its first steps trained on: what sd-scripts
    gets beyond the manifest (which _as_started compares) changed since the run started,
    named as far as the run recorded it (an older run recorded less)."""
    then = previous.dataset or DatasetRecord()
    numbers = (("repeats", then.repeats, now.repeats),
               ("target steps", then.target_steps, now.target_steps))
    changed = [f"{name} {old} → {new}" for name, old, new in numbers if old not in (None, new)]
    if then.dataset_sha256 not in (None, now.dataset_sha256) and then.repeats == now.repeats:
        changed.append("its dataset config")  # the trigger, or a setting of the dataset's
    changed += [f"its {what}" for what, old, new in (
        ("training images", then.images_sha256, now.images_sha256),
        ("captions", then.captions_sha256, now.captions_sha256)) if old not in (None, new)]
    if changed:
        raise UserError(f"{prepared} changed since {run_dir} started ({', '.join(changed)}), so "
                        "the resumed steps would train on other data than the first ones: "
                        "prepare it back as it was, or start the run over on it with --resume "
                        "--force")


def _keep_preset(preset: presets.Preset, folder: RunFolder) -> None:
    """Copy the preset file into the run folder, alone there, so a resumed run trains with the
    preset it started with however its file (or a shipped preset, by an upgrade) changes."""
    kept = folder.preset_copy(preset.name)
    for other in folder.preset_folder.glob("*.toml"):  # a run started over with another
        if other != kept:
            other.unlink()
    if not kept.is_file() or kept.resolve() != preset.path.resolve():
        with files.replacing(kept) as temporary:
            shutil.copyfile(preset.path, temporary)


def _preset_file(preset: presets.Preset, folder: RunFolder, previous: RunRecord) -> str:
    """The preset file a run records: the one it was started with, when it resumes from the
    copy the run keeps of it."""
    path = preset.path.resolve()
    kept = folder.preset_copy(preset.name)
    return str(previous.preset_file if previous.preset_file and kept.is_file()
               and path == kept.resolve() else path)


def _started_preset(run_dir: Path, previous: RunRecord, given: str | None) -> str:
    """The preset a run was started with: the copy it keeps (a UserError when the one given
    differs from it), else (a run of an earlier version) the file it was started with or the
    one given that has its name; a shipped preset by name when the package has moved since;
    a UserError when the file is gone."""
    kept = RunFolder(run_dir).preset_copy(str(previous.preset))
    if kept.is_file():
        path = None if given is None else presets.load(given).path
        if path is not None and path.resolve() != kept.resolve() and (
                path.read_bytes() != kept.read_bytes()):
            raise UserError(f"preset file {given} changed since {run_dir} started; --resume "
                            f"trains with the preset as it started (kept in {kept}): leave out "
                            "--preset, or start a new run with it in another --run-dir")
        return str(kept)
    recorded = Path(previous.preset_file or "")
    if given is not None:
        return given
    if previous.preset_file and recorded.is_file():
        return str(recorded)
    if recorded.parent.name == "configs" and str(previous.preset) in presets.available():
        return str(previous.preset)
    raise UserError(f"{run_dir} was started with the preset file {recorded}, which is gone; "
                    "give that preset again with --preset FILE")


def newest_run(prepared: Path, root: Path) -> Path:
    """The run folder under `root` that last started training on `prepared` (dry runs aside)."""
    wanted = str(prepared.resolve())
    found: list[tuple[str, float, Path]] = []
    dry: list[tuple[str, float, Path]] = []
    for folder in (RunFolder(p) for p in root.glob("*") if p.is_dir()):
        try:
            record = folder.load()
        except (OSError, ValueError):
            continue
        if not (record.dataset and record.dataset.prepared == wanted):
            continue
        (dry if record.status == "dry-run" else found).append(
            (str(record.start or ""), folder.record_file.stat().st_mtime, folder.path))
    if not found and dry:
        again = launch.resume_command(str(prepared), max(dry)[2]).line()
        raise UserError(f"{root}/ holds only dry runs of {prepared}, nothing to resume: train "
                        f"the newest with `{again} --force`, or train without --dry-run and "
                        "--resume to start a new run")
    if not found:
        raise UserError(f"--resume found no earlier run of {prepared} in {root}/; pass "
                        "--run-dir with the run to continue")
    return max(found)[2]


def _train(prepared: Path, preset: presets.Preset, overrides: Sequence[str], run_dir: Path,
           sd_scripts: Path | None, python: str | None, gpus: int | None, dry_run: bool,
           resume: bool, force: bool, cluster: Cluster, seen: Callable[[], list[Gpu]],
           on_progress: Callable[[launch.StepProgress], None] | None,
           on_launch: Callable[[TrainResult], None] | None) -> TrainResult:
    data = PreparedFolder(prepared)
    state = data.state()
    changes = parse_overrides(overrides)
    # --slurm only checks the run, which its job then replaces (--force) or continues
    previous = _claim_run_dir(run_dir, force, resume, dry_run and cluster.slurm is None)
    folder = RunFolder(run_dir)
    name = str(state.class_name)
    if resume and not force and previous.status == "succeeded":
        result = finished(run_dir, name)
        if cluster.machines.count > 1 and not dry_run:  # the other machines stop waiting
            nodes.decide(run_dir, status="refused", message=result.message)
        return result
    continues = resume and not force
    """Whether training goes on from the run's saved state; --resume --force starts it over."""
    died, started = _died(previous) if continues else None, _now()
    earlier = (folder.record_file.read_bytes()  # kept with the outputs a new start sets aside
               if (force or died) and folder.exists() else None)
    if not dry_run:  # the record exists from the first moment: status, process, start
        folder.save(replace(previous if resume else RunRecord(), tool=TOOL, version=__version__,
                            preset=preset.name, status="running", pid=os.getpid(),
                            host=socket.gethostname(), start=started, end=None))
    train_dir, repeats = data.train_folder()
    table = manifest.read(data.manifest)
    train_rows = table[table["split"] == "train"]
    if train_rows.empty:
        raise UserError(f"{prepared} has no training images (see its skipped.csv); prepare "
                        "a selection with images first")
    missing = data.missing_images(train_rows, train_dir)
    if missing:  # sd-scripts would train on what is left, silently
        raise UserError(f"{len(missing)} of {len(train_rows)} training images listed in "
                        f"{data.manifest} {files.agreeing(len(missing), 'is')} missing from "
                        f"{train_dir} (first: "
                        f"{missing[0].name}): run prepare again (`medsynth-kohya prepare "
                        f"SOURCE --out {prepared}`)")
    uncaptioned = data.missing_captions(train_rows, train_dir)
    if uncaptioned:  # sd-scripts would caption those images with the trigger alone, silently
        raise UserError(f"{len(uncaptioned)} of {len(train_rows)} training images "
                        f"{files.agreeing(len(uncaptioned), 'has')} no caption in "
                        f"{train_dir} (first: {uncaptioned[0].name} is missing), so "
                        "sd-scripts would caption them with the trigger alone: run prepare "
                        f"again (`medsynth-kohya prepare SOURCE --out {prepared}`)")
    unlisted = data.unlisted_images(train_rows, train_dir)
    if unlisted:  # trained on by sd-scripts, but neither counted nor checked for near-copies
        raise UserError(f"{files.counted(len(unlisted), 'image')} in {train_dir} that "
                        f"{data.manifest.name} does not list would be trained on (first: "
                        f"{unlisted[0].name}): move {files.agreeing(len(unlisted), 'it')} "
                        f"out of {train_dir}, or add {files.agreeing(len(unlisted), 'it')} "
                        "to your source and run prepare again")
    location = checkout.find(sd_scripts)
    sd_dir = location.path
    runner = checkout.python(python)
    config = _configure(preset, changes, sd_dir, runner, run_dir, name, state.target_steps, gpus,
                        seen)
    document, options = config.document, config.options
    found_gpus, processes = config.gpus, config.processes

    size = checks.resolution(options.get("resolution", "1024,1024")) or (1024, 1024)
    bucketless = checks.bucketless(options, size, zip(
        train_rows["id"].astype(str), train_rows["width"].astype(int),
        train_rows["height"].astype(int), strict=True))
    if bucketless:
        raise UserError(bucketless)
    rendered = partial(render.dataset_config, repeats=repeats, class_tokens=str(state.trigger),
                       resolution=size, batch_size=int(options.get("train_batch_size", 1)),
                       options=options)
    dataset = rendered(train_dir.resolve())
    images_sha256, captions_sha256 = data.trained_digests(train_rows, train_dir)
    trained = DatasetRecord(prepared=str(prepared.resolve()),
                            manifest_sha256=files.sha256(data.manifest),
                            train_images=len(train_rows), repeats=repeats,
                            trigger=state.trigger, caption_template=state.caption_template,
                            class_name=state.class_name, target_steps=state.target_steps,
                            dataset_sha256=_digest(rendered(Path(train_dir.name))),
                            images_sha256=images_sha256, captions_sha256=captions_sha256)
    if continues:
        _ensure_same_data(prepared, run_dir, previous, trained)
    config_path, dataset_path = folder.config, folder.dataset_config
    prompts_path = folder.sample_prompts

    problems, warnings, versions, run = _preflight(location, runner, preset, config, run_dir,
                                                   images=len(train_rows), repeats=repeats,
                                                   resume=continues,
                                                   machines=cluster.machines.count)
    state_dir = launch.latest_state(folder.output.resolve(), name) if continues else None
    if died:
        warnings.insert(0, f"the run in {run_dir} was left running by {died}, which no longer "
                        "runs; " + (f"resuming from {state_dir.name}" if state_dir else
                                    "it saved no training state, so it starts from step 0")
                        + ("; train first sets its outputs aside, in output.replaced-<time>"
                           if dry_run and not state_dir and folder.output.is_dir() else ""))
    elif continues and state_dir is None:
        raise UserError(f"no saved training state in {folder.output} yet; --resume --force "
                        "starts the run over with its own settings")
    limit = planning.step_limit(options, run.steps)
    if state_dir is not None and at_end(state_dir, limit, name):
        raise UserError(f"the newest saved state in {folder.output}, {state_dir.name}, "
                        f"{at_end(state_dir, limit, name)}; --resume --force starts the run over "
                        "with its own settings")
    side = state.resolution
    if side and size != (side, side) and preset.device != "cpu":  # a CPU smoke run is tiny
        warnings.append(f"{prepared} was prepared for {side}x{side} (prepare --resolution), "
                        f"this run trains at {size[0]}x{size[1]}: prepare's warnings of small "
                        "and elongated photos were for the other size; add --set "
                        f"resolution={side} to train at it, or prepare again at this one")
    machines = cluster.machines
    precision = str(options.get("mixed_precision", "no"))
    gpu_ids = None if cluster.slurm is not None else _gpu_ids(processes)  # not the login
    # node's CUDA_VISIBLE_DEVICES: each machine of the job names its own when it launches

    def command_for(state: Path | None) -> launch.Command:
        return launch.train_command(
            runner, sd_dir.resolve(), config_path.resolve(), dataset_path.resolve(),
            accelerate_config=cluster.accelerate_config or folder.accelerate_config,
            given=cluster.accelerate_config is not None, num_processes=processes,
            mixed_precision=precision, gpu_ids=gpu_ids, resume=state, machines=machines,
            first=checkout.install_step(location))
    moved = None if state_dir is None else launch.out_of_the_way(state_dir, name)
    command = command_for(moved)
    if dry_run and moved != state_dir and state_dir is not None and moved is not None:
        warnings.append(f"the launch resumes from {moved.name}: train first renames the run's "
                        f"step saves by the run's step ({state_dir.name} among them), out of the "
                        "way of the resumed sd-scripts, which counts its steps from 0 again")
    output = folder.output
    steps = run.steps
    record = RunRecord(
        tool=TOOL, version=__version__, preset=preset.name,
        preset_file=_preset_file(preset, folder, previous),
        overrides=list(overrides), config=options, command=command.argv, cwd=str(command.cwd),
        expected_steps=steps, plan=asdict(run),
        versions=VersionsRecord(__version__, checkout.commit(sd_dir)
                                if checkout.present(sd_dir) else None, dict(versions)),
        gpus=[GpuRecord.of(gpu) for gpu in found_gpus],
        dataset=trained, lora_files=[])
    if machines.count > 1:  # every machine's GPUs, checked and recorded (training/nodes.py)
        own = nodes.report(0, found_gpus)
        others = (nodes.present(run_dir, machines.count) if dry_run else
                  nodes.gather(run_dir, machines.count, own, cluster.wait_s)[1:])
        unfit = nodes.mismatches(others, machines) + ([] if preset.device == "cpu" else
                                                      nodes.problems(options, others, processes,
                                                                     preset.min_gpu_memory_gib))
        if unfit:  # like this machine's GPUs, refused even under --dry-run
            raise UserError(files.problems_line(
                f"the other machines cannot run the training of --preset {preset.name}", unfit))
        record = replace(record, machines={
            "count": machines.count, "main_process_ip": machines.main_ip,
            "main_process_port": machines.main_port, "processes_per_machine": processes},
            nodes=[own, *others])
    result = TrainResult(run_dir, "dry-run", command, config_path, dataset_path, prompts_path,
                         steps, warnings=(*warnings, *errors.would_stop(problems)), plan=run)
    if problems and not dry_run:
        raise UserError(files.problems_line(
            f"this machine cannot run the training of --preset {preset.name}", problems,
            "train on a machine that can (--dry-run plans it here)"))
    if dry_run and (resume or (force and cluster.slurm is not None and folder.exists())):
        return result  # the run's files and record stay as they are (--slurm's job replaces them)
    # every check has passed: only now do the earlier outputs move and the files change
    if output.is_dir() and not dry_run and state_dir is None:  # a new start would write over
        kept = folder.set_aside(f"{datetime.now():%Y%m%d-%H%M%S}", earlier)  # its step saves
        warnings.insert(0, f"the run started over from step 0; the earlier run's LoRAs, "
                        f"states and record are kept in {kept}")
    run_dir.mkdir(parents=True, exist_ok=True)
    render.write_toml(document, config_path)
    if not dry_run:  # what a resume trains with: a dry run is never resumed
        _keep_preset(preset, folder)
    render.write_toml(dataset, dataset_path)
    render.write_toml(prompts.training_document(
        table, str(state.caption_template), str(state.trigger),
        size, SAMPLE_PROMPTS), prompts_path)
    if cluster.accelerate_config is None:  # the launch's own, read instead of the user's
        launch.write_accelerate_config(launch.accelerate_config(
            num_processes=processes, mixed_precision=precision, gpu_ids=gpu_ids,
            machines=machines), folder.accelerate_config)
    if dry_run:
        folder.save(replace(record, status="dry-run"))
        return result

    log = folder.log
    pruning = planning.prunes_states(options)
    final = folder.final_lora(name)
    # the resumed sd-scripts counts from 0: it would write over the run's step saves
    with launch.run_step_names(output, name, state_dir) as state_dir:
        if state_dir is not None:
            command = command_for(state_dir)
            result = replace(result, command=command)
        record = replace(record, status="running", start=started, pid=os.getpid(),
                         host=socket.gethostname(), command=command.argv,
                         resumed_from=str(state_dir or "") or None)
        folder.save(record)
        if machines.count > 1:
            nodes.decide(run_dir, status="go", machines=record.nodes or [],
                         processes=processes,
                         mixed_precision=str(options.get("mixed_precision", "no")),
                         resume=None if state_dir is None else str(state_dir))
        if on_launch is not None:
            on_launch(replace(result, status="launching", warnings=tuple(warnings)))
        counting = launch.count_steps(folder.output, name, state_dir,
                                      int(options.get("gradient_accumulation_steps") or 1))
        shown = launch.from_run_start(folder.output, on_progress)
        try:
            outcome: launch.RunOutcome | launch.StartError = launch.run(
                command, log, on_progress=_pruning(folder.output, name, shown) if pruning
                else shown, on_line=counting)
        except launch.StartError as exc:  # nothing ran: a failed run, which --force starts over
            outcome = exc
    if isinstance(outcome, launch.StartError):
        advice = next_step("failed", final, launch.latest_state(output.resolve(), name), limit)
        folder.save(replace(record, status="failed", end=_now(), message=f"{outcome}; {advice}"))
        return replace(result, status="failed", warnings=tuple(warnings), message=str(outcome),
                       advice=advice, log=log)
    if state_dir is not None:
        launch.keep_last_steps(folder.output, name, options)
    if pruning:
        launch.prune_states(folder.output, name)
    loras = launch.lora_files(folder.output, name)
    status, message = verdict(outcome, final)
    advice = next_step(status, final, launch.latest_state(folder.output.resolve(), name), limit)
    folder.save(replace(record, status=status, end=_now(), exit_status=outcome.returncode,
                        interrupted=outcome.interrupted,
                        message="; ".join(filter(None, (message, advice))),
                        lora_files=[str(p.absolute()) for p in loras]))
    return replace(result, status=status, warnings=tuple(warnings), lora_files=tuple(loras),
                   lora=final if final.is_file() else None, message=message, advice=advice,
                   log=log, tail=tuple(outcome.tail), stopped=outcome.interrupted)


RESUME_FORCE = "--resume --force trains it again from step 0 with its own settings"
"""How train's user trains a finished run again."""


def finished(run_dir: Path, name: str, again: str = RESUME_FORCE) -> TrainResult:
    """A run that already succeeded, resumed: nothing to launch (sd-scripts refuses to go on
    from a run's final state), only a note saying so and how to train it again (`again`)."""
    folder = RunFolder(run_dir)
    final = folder.final_lora(name)
    if not final.is_file():
        raise UserError(f"{run_dir} finished, but its LoRA {final} is gone; {again}")
    record = folder.load()
    return TrainResult(
        run_dir, "succeeded", launch.Command(list(record.command or []),
                                             Path(record.cwd or run_dir)),
        folder.config, folder.dataset_config, folder.sample_prompts, record.expected_steps,
        lora_files=tuple(launch.lora_files(folder.output, name)), lora=final,
        message=f"{run_dir} already finished, nothing to resume: its LoRA is {final} "
                f"({again})")


def _follow(preset: presets.Preset, overrides: Sequence[str], run_dir: Path,
            sd_scripts: Path | None, python: str | None, gpus: int | None, dry_run: bool,
            break_lock: bool, cluster: Cluster, detect: Callable[[], list[Gpu]],
            on_progress: Callable[[launch.StepProgress], None] | None,
            state_dir: Path | None) -> TrainResult:
    """A machine of rank > 0: report its GPUs, wait for rank 0's go, run its own `accelerate
    launch` on rank 0's files (resuming from the state rank 0 names, in this machine's view of
    the run folder; a dry run shows `state_dir`). Its log is RUN/train-machine-R.log; rank 0
    writes the LoRA."""
    machines = cluster.machines
    folder = RunFolder(run_dir)
    config, dataset = folder.config, folder.dataset_config
    with locks.hold(run_dir, "train", part=nodes.part(machines.rank),
                    break_lock=break_lock) as lock:
        found = [] if preset.device == "cpu" else visible(detect())
        location = checkout.find(sd_scripts)
        runner = checkout.python(python)
        changes = parse_overrides(overrides)
        decision: dict[str, Any] = {
            "processes": _processes(preset, gpus, found),
            "resume": None if state_dir is None else str(state_dir),
            "mixed_precision": changes.get("mixed_precision",
                                           preset.options.get("mixed_precision", "no"))}
        if not dry_run:
            old = nodes.read_decision(run_dir)
            mine = nodes.write_report(run_dir, machines.rank, found, status="waiting",
                                      num_machines=machines.count,
                                      main_process_port=machines.main_port)
            decision = nodes.await_decision(run_dir, mine, old, cluster.wait_s)
        processes = int(decision["processes"])
        command = launch.train_command(  # rank 0 wrote the run's accelerate config
            runner, location.path.resolve(), config.resolve(), dataset.resolve(),
            accelerate_config=cluster.accelerate_config or folder.accelerate_config,
            given=cluster.accelerate_config is not None, num_processes=processes,
            mixed_precision=str(decision["mixed_precision"]),
            gpu_ids=_gpu_ids(processes),
            resume=folder.output.resolve() / Path(decision["resume"]).name  # as this machine
            if decision["resume"] else None,  # mounts the run folder, maybe elsewhere
            machines=machines, first=checkout.install_step(location))
        notes = tuple(note for note in [lock.note] if note) + (
            (f"machine {machines.rank} waits for machine 0's go in {run_dir / nodes.FOLDER}, "
             "then runs the training command this dry run prints",) if dry_run else ())
        result = TrainResult(run_dir, "dry-run", command, config, dataset,
                             folder.sample_prompts, None, warnings=notes)
        if dry_run:
            return result
        log = run_dir / f"train-{nodes.part(machines.rank)}.log"
        nodes.write_report(run_dir, machines.rank, found, status="running")
        outcome = launch.run(command, log, on_progress=on_progress)
        status = ("interrupted" if outcome.interrupted else
                  "succeeded" if outcome.returncode == 0 else "failed")
        nodes.write_report(run_dir, machines.rank, found, status=status,
                           exit_status=outcome.returncode, end=_now())
        said = f": {outcome.error}" if outcome.error else ""
        message = (f"machine {machines.rank} finished; machine 0 writes the LoRA into "
                   f"{run_dir / 'output'}" if status == "succeeded" else
                   f"accelerate on machine {machines.rank} exited with {outcome.returncode}"
                   f"{said} (log: {log})")
        return replace(result, status=status, message=message, log=log,
                       tail=tuple(outcome.tail))
