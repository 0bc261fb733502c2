"""`demo`: the whole pipeline on built-in synthetic data, runnable on any machine.

It generates an ISIC 2020-like set (marked synthetic), prepares it, then renders and checks
the training run and shows the exact command a GPU machine would run; where a CUDA GPU,
sd-scripts and the SDXL base model are present, it trains for real (unless `dry_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya import arguments, locks
from medsynth_kohya.data.prepare import PrepareOptions, PrepareResult, Progress, prepare
from medsynth_kohya.data.sources import CHALLENGE_METADATA
from medsynth_kohya.data.synth import (
    SyntheticSet,
    dataset_frame,
    is_synthetic_set,
    make_dataset,
)
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, detect_gpus
from medsynth_kohya.sdscripts import checkout, launch
from medsynth_kohya.sdscripts.launch import StepProgress
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import RunFolder
from medsynth_kohya.training.train import TrainResult, at_end, finished, train

if TYPE_CHECKING:
    import pandas as pd

PRESET = "t4-16gb"
MIN_PHOTOS = 8
"""Fewer photos may hold no melanoma to prepare (a quarter of them are not)."""
MAX_PHOTOS = 10_000
"""More only makes the demo slower: each photo takes about 0.2 s to draw and more to prepare,
so 10,000 already take about an hour."""
OPTIONS = PrepareOptions(val_frac=0.15, target_steps=200, epochs=10)
"""How the demo prepares its photos: about 200 steps, to see a training through quickly."""
NAME = OPTIONS.class_name
"""The class the demo trains, which names its run's LoRA and saved states."""


@dataclass(frozen=True)
class DemoResult:
    """The generated source set, the prepared training folder and the training run;
    `can_train`: whether this machine has what real training needs (--dry-run aside)."""

    source: SyntheticSet
    prepared: PrepareResult
    training: TrainResult
    can_train: bool = False


def base_model_cached(repo_id: str = BASE_MODEL) -> bool:
    """Whether the SDXL base model is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def _claim(out: Path) -> None:
    """Refuse, before writing anything, an --out that holds more than an earlier demo's run."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and not is_synthetic_set(out / "source") and locks.foreign_entries(out):
        raise UserError(f"--out {out} is not empty ({locks.holds(locks.foreign_entries(out))}) "
                        "and was not made by medsynth-kohya demo; "
                        "choose a new or empty folder")


def _trained(out: Path) -> tuple[str, int | None] | None:
    """How OUT/run's real training stands ("running" also when its process died) and the
    steps it was to train; None where OUT/run holds no record, an unreadable one, or a dry
    run's."""
    try:
        record = RunFolder(out / "run").load()
    except (OSError, ValueError):
        return None
    status = record.status
    return None if status in (None, "dry-run") else (status, record.expected_steps)


def _keep_trained(out: Path, n: int, seed: int) -> None:
    """Refuse, before writing anything, an --n or --seed that would redraw the photos a run in
    OUT/run trained on for real: the run could no longer go on nor be evaluated."""
    if _trained(out) is None:
        return
    try:
        drawn = (out / "source" / CHALLENGE_METADATA).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return
    if _csv(dataset_frame(n, seed=seed)) == drawn:
        return
    rows = drawn.splitlines()[1:]
    named = f"--n {len(rows):,} and the --seed it was made with"
    mark = rows[0][len("SYN_"):len("SYN_000")] if rows else ""
    if mark.isdigit() and _csv(dataset_frame(len(rows), seed=int(mark))) == drawn:
        named = f"--n {len(rows):,} --seed {int(mark)}"
    raise UserError(f"{out / 'run'} trained on the photos of another demo ({named}), which "
                    f"--n {n:,} --seed {seed} would redraw; run demo with {named} to go on "
                    "from that training, or choose another --out")


def _leave_trained(out: Path, missing: str) -> None:
    """Refuse, before writing anything, a demo that cannot train here (`missing`) where OUT/run
    trained for real: its dry run would replace the run's record, which only train's --force
    may do."""
    trained = _trained(out)
    if trained is None:
        return
    status, run = trained[0], out / "run"
    what = (f"sample it (`medsynth-kohya sample --lora {run}`), push it (`medsynth-kohya push "
            f"{run} --repo-id USER/REPO`)" if status == "succeeded" else
            "run this demo again on a machine that can train, to go on from it")
    raise UserError(f"{run} holds a real training ({status}), which demo keeps: this machine "
                    f"cannot train ({missing}) and would only render a dry run over it; {what}, "
                    "or choose another --out")


def _refuse_over(out: Path) -> None:
    """Refuse a dry run where OUT/run's real training stopped before its first save: a demo
    would train it over, and a dry run can show that only by replacing the run's record."""
    raise UserError(f"{out / 'run'} holds a real training that stopped before it saved a state "
                    "to go on from, whose record --dry-run would replace; run demo without "
                    "--dry-run to train it over, or choose another --out")


def _csv(frame: pd.DataFrame) -> str:
    """The text `make_dataset` writes for a metadata frame."""
    return str(frame.to_csv(index=False))


@arguments.checked
def run_demo(out: arguments.PathArg, *, n: int = 24, seed: int = 0, workers: int | None = None,
             on_progress: Progress | None = None,
             on_step: Callable[[StepProgress], None] | None = None,
             detect: Callable[[], list[Gpu]] = detect_gpus,
             on_draw: Progress | None = None, dry_run: bool = False) -> DemoResult:
    """Generate `out/source` (`on_draw` gets each photo drawn), prepare `out/prepared`, and
    plan (or run, where this machine can and not `dry_run`) training in `out/run`."""
    out = arguments.path(out, "out")
    if not MIN_PHOTOS <= n <= MAX_PHOTOS:
        raise UserError(f"--n must be {MIN_PHOTOS} to {MAX_PHOTOS:,} (got {n:,})")
    arguments.check_seed(seed)
    _claim(out)
    with locks.hold(out, "demo", has_force=False):  # one demo per folder, from its first photo on
        _keep_trained(out, n, seed)
        gpus = detect()
        missing = _missing_for_training(gpus)
        if missing:
            _leave_trained(out, missing)
        earlier = _earlier(out, NAME) if not missing else AFRESH
        if dry_run and earlier == OVER:
            _refuse_over(out)
        # a finished run is only reported, and refused before anything is written if its
        # LoRA is gone
        done = finished(out / "run", NAME, AGAIN.format(run=out / "run")) if (
            earlier == FINISHED) else None
        synthetic = make_dataset(out / "source", n, seed=seed,
                                 sizes=((640, 480), (1024, 768), (1600, 1067)),
                                 on_progress=on_draw)
        _drop_stale_photos(synthetic)
        prepared = prepare(synthetic.root, out / "prepared", options=OPTIONS, workers=workers,
                           on_progress=on_progress)
        going_on = earlier == RESUME
        training = done if done is not None else train(
            prepared.out, None if going_on else PRESET, run_dir=out / "run",
            dry_run=dry_run or bool(missing), resume=going_on, force=earlier == OVER,
            detect=lambda: gpus, on_progress=on_step)
    if gpus and missing:  # a GPU machine that only plans: say why
        training = replace(training, warnings=(
            *training.warnings, f"not training on this GPU machine: {missing}"))
    if earlier == OVER:
        training = replace(training, warnings=(
            f"the earlier training in {out / 'run'} stopped leaving no state to go on from: it "
            "started over", *training.warnings))
    return DemoResult(synthetic, prepared, training, can_train=not missing)


def _missing_for_training(gpus: list[Gpu]) -> str:
    """What keeps the demo from training for real here ("" when nothing does)."""
    if not gpus:
        return "no CUDA GPU"
    if not checkout.present(checkout.locate()):
        return "no sd-scripts checkout (`medsynth-kohya install-sd-scripts`)"
    if not base_model_cached():
        return (f"the SDXL base model is not in the Hugging Face cache (`hf download "
                f"{BASE_MODEL}`)")
    return ""


def _drop_stale_photos(synthetic: SyntheticSet) -> None:
    """Remove photos an earlier demo of another --n or --seed drew and this one did not: its
    metadata has no row for them (prepare would list each as skipped)."""
    kept = {f"{identifier}.jpg" for identifier in synthetic.frame.iloc[:, 0]}
    for photo in synthetic.images.glob("SYN_*.jpg"):
        if photo.name not in kept:
            photo.unlink()


AFRESH, RESUME, OVER, FINISHED = "afresh", "resume", "over", "finished"
"""How a demo trains after an earlier one: as a new run (none trained for real), going on
from it, over again in its place (it left no state to go on from), or not at all (it
succeeded: the demo only says so)."""
AGAIN = "to train it again from step 0, choose another --out or delete {run}"
"""How a demo's user trains a finished run again: demo has no --force."""


def _earlier(out: Path, name: str) -> str:
    """How to train after what an earlier demo left in OUT/run: a run that trained for real
    goes on (or, when it finished, says so) instead of refusing the folder; one that left no
    state to go on from (the demo's run saves once, at its end: stopped before it, or its LoRA
    lost after it) starts over."""
    trained = _trained(out)
    if trained is None:
        return AFRESH
    status, steps = trained
    if status == "succeeded":
        return FINISHED
    saved = launch.latest_state(RunFolder(out / "run").output, name)
    if saved is not None and at_end(saved, steps, name):  # saved as it ended, its LoRA lost
        return OVER
    if status == "running" or saved:
        return RESUME  # "running": left by a process that died; train says so and goes on
    return OVER
