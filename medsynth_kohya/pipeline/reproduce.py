"""`reproduce`: the original 2023 experiment in one command, safe to interrupt and re-run.

Stages: prepare (original captions, hair tagged by the mode closest to them) -> train (preset
medsynthx-2023, or another one such as t4-16gb) -> sample (original prompt settings) -> push
(when asked). Each stage records in WORKDIR/reproduce.json a digest of its inputs; a re-run
skips a stage whose inputs have not changed and resumes an interrupted training from its last
saved state.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import arguments, errors, files, locks
from medsynth_kohya.data import layout
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import PrepareOptions, PrepareResult, reason_counted, reason_for
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import Source
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, detect_gpus, visible
from medsynth_kohya.sdscripts import checkout, launch, presets
from medsynth_kohya.training.record import RECORD_FILE, RunFolder

if TYPE_CHECKING:
    from medsynth_kohya.hub.push import PushResult

PRESET = "medsynthx-2023"
STATE_FILE = "reproduce.json"
STAGE_FOLDERS = ("prepared", "run", "synthetic")
"""The folders inside WORKDIR that the stages write (and lock)."""
SECONDS_PER_STEP = {"T4": 3.0, "V100": 1.6, "L4": 1.5, "A10": 1.3, "RTX 3090": 1.0,
                    "RTX 4090": 0.6, "A100": 0.55, "H100": 0.35, "H200": 0.35}
"""Rough s/step of the original config (1024 px, batch 1, fp16, gradient checkpointing)."""
HAIR_MATCHES = {HairMode.auto: 6, HairMode.seed: 4}
"""How many of the 7 original captions' hair tags each detector gives on the 7 original images
(measured by tests/test_original_hair.py). The 2023 heuristic itself (`seed`) gives only 4: the
original captions were evidently made on other copies of the images."""
HAIR = max(HAIR_MATCHES, key=HAIR_MATCHES.__getitem__)
"""The hair mode whose tags match the original captions best."""
ORIGINAL = PrepareOptions(hair=HAIR, repeats=1, challenge_sites=True)
"""The original run's captions (default template and trigger, the 2020 challenge's sites, also
from an Archive download), hair tagged by HAIR."""


@dataclass(frozen=True)
class Stage:
    """One stage: what it does on this run, and what it reads and writes."""

    name: str
    action: str
    """"run", "resume", "skip (inputs unchanged)", FINISHED (train only) or "off"."""
    inputs: str
    outputs: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    detail: str = ""
    outcome: str = ""
    """What the stage did on a run (empty in a plan): its figures, or that it was already done."""


@dataclass(frozen=True)
class ReproduceResult:
    """The stages in order (with their outcomes once run), the expected training length and its
    estimated duration."""

    workdir: Path
    stages: tuple[Stage, ...]
    expected_steps: int | None
    estimate: str
    dry_run: bool
    status: str = "planned"
    """"planned" (a dry run, or the plan shown before the stages run) or "succeeded"."""
    lora: Path | None = None
    url: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def listing(self) -> list[str]:
        """What a dry run prints under its plan: the files each stage that will run writes and
        the commands it runs, or one line when none will (a skipped stage writes nothing)."""
        running = [stage for stage in self.stages if stage.action in ("run", "resume")]
        if not running:
            return ["nothing would run: every stage's inputs are unchanged since it last ran"]
        return [f"{stage.name} {line}" for stage in running for line in (
            *(f"writes {path}" for path in stage.outputs),
            *(f"runs: {command}" for command in stage.commands))]


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _source_digests(located: Source, options: PrepareOptions) -> tuple[str, str | None]:
    """The content of every file read besides the images (the metadata, ISIC 2019's other
    CSV, ISIC 2020's duplicates list) plus every image's name, size and mtime: what prepare
    reads; and, for a source of the metadata alone, the older digest of the same inputs."""
    from medsynth_kohya.data.sources import IMAGE_SUFFIXES, read_files

    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for folder in located.image_dirs for p in folder.iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES)
    read = [(path.name, files.sha256(path)) for path in read_files(located)]
    earlier = _digest(read[0][1], listing, str(options)) if len(read) == 1 else None
    return _digest(read, listing, str(options)), earlier


def _layout(root: Path) -> list[tuple[str, Any]]:
    """What training reads of the prepared layout: each caption's text and each image's size
    and mtime (a copy keeps its source's, so an image edited since tells, and an unchanged one
    prepared again does not); sd-scripts' latent caches are left out."""
    from medsynth_kohya.data.sources import IMAGE_SUFFIXES

    found = sorted(path for path in root.rglob("*") if path.is_file()) if root.is_dir() else []
    return [(str(path.relative_to(root)), files.sha256(path) if path.suffix == ".txt"
             else layout.stamp(path)) for path in found
            if path.suffix == ".txt" or path.suffix.lower() in IMAGE_SUFFIXES]


def _whole(prepared: PreparedFolder) -> bool:
    """Whether the prepared folder still holds what training reads (a finished prepare's
    manifest, dataset config, class folder, and every listed image and caption): a part
    deleted since makes the prepare stage run again instead of training failing on it."""
    from medsynth_kohya.data import manifest as manifest_file

    if not (prepared.is_prepared() and not prepared.unfinished_file.exists()
            and prepared.manifest.is_file() and prepared.dataset_config.is_file()):
        return False
    try:
        folder, _ = prepared.train_folder()
        rows = manifest_file.read(prepared.manifest)
    except UserError:
        return False
    return not (prepared.missing_images(rows, folder) or prepared.missing_captions(rows, folder))


def hair_choice() -> str:
    """The hair mode reproduce uses, and why: its match with the original captions' tags."""
    others = "; ".join(f"--hair {mode.value} {count} of 7" for mode, count in HAIR_MATCHES.items()
                       if mode is not HAIR)
    return (f"--hair {HAIR.value} (matches {HAIR_MATCHES[HAIR]} of the 7 original captions' "
            f"hair tags; {others})")


def estimate(steps: int | None, gpus: Sequence[Gpu]) -> str:
    """A rough duration of the training on the first of `gpus` (those it may run on), from
    SECONDS_PER_STEP: the family its name holds as a whole model (an A100 is no A10); in
    minutes below an hour, so a short run does not read "about 0.0 h"."""
    if not steps:
        return "unknown"
    if not gpus:
        return f"{files.counted(steps, 'step')}; no GPU found here to estimate for"
    rate = next((s for key, s in SECONDS_PER_STEP.items()
                 if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![0-9])", gpus[0].name)),
                None)
    if rate is None:
        return f"{files.counted(steps, 'step')}; no estimate for {gpus[0].name}"
    seconds = steps * rate
    length = ("under a minute" if seconds < 60 else f"about {round(seconds / 60)} min"
              if seconds < 3600 else f"about {seconds / 3600:.1f} h")
    return f"{length} on {gpus[0].name} ({rate:g} s/step, rough)"


def _claim(workdir: Path) -> None:
    """Refuse a WORKDIR that reproduce did not make: one holding anything but reproduce.json,
    lock files and stage folders that bear their stage's mark or hold only lock files (those
    of a first run killed before it wrote reproduce.json). Runs before anything is written."""
    from medsynth_kohya.data.prepared import STATE_DIR
    from medsynth_kohya.sampling import synthset

    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file; choose a folder")
    if not workdir.is_dir() or (workdir / STATE_FILE).is_file():
        return
    marks = {"prepared": STATE_DIR, "run": RECORD_FILE, "synthetic": synthset.STATE_DIR}

    def stage_folder(path: Path) -> bool:
        return path.name in marks and path.is_dir() and (
            (path / marks[path.name]).exists() or not locks.foreign_entries(path))

    foreign = sorted(path.name for path in locks.foreign_entries(workdir)
                     if not stage_folder(path))
    if foreign:
        raise UserError(f"--workdir {workdir} is not empty and was not made by medsynth-kohya "
                        f"reproduce (no {STATE_FILE}; it holds {foreign[0]}); choose an empty "
                        "or new --workdir")


def _makeable(workdir: Path) -> None:
    """Refuse, making nothing, a WORKDIR or stage folder that locks.hold could not make (a
    file or a broken symlink on its path), in make_folder's words: a dry run says what the
    run would, and the run says it before the first stage rather than at the stage."""
    for folder in (workdir, *(workdir / name for name in STAGE_FOLDERS)):
        if (blocked := files.unmakeable(folder)) is not None:
            raise blocked


def _hub_ready(repo_id: str, dry_run: bool) -> tuple[str, list[str], str | None]:
    """The URL the push stage writes, once the Hub has been asked about the token: refuse a
    push that could only fail after hours of training (a malformed repo id, no Hub token, a
    token the Hub rejects or that cannot write to the namespace; hub.access); a dry run warns
    instead, and without a token asks nothing. With the URL, what a dry run would stop at and
    the token the Hub accepted (None when it did not)."""
    from medsynth_kohya.hub.access import hub_api, read_token, writer
    from medsynth_kohya.hub.contents import check_repo_id
    from medsynth_kohya.hub.push import hub_client, resolve_endpoint

    repo_id = check_repo_id(repo_id, "--push")
    endpoint = resolve_endpoint(None)
    try:
        token = read_token()
        if not token:
            raise UserError("--push needs a Hub token: run `hf auth login` or export "
                            "HF_TOKEN, then run this again")
        with hub_client():
            writer(hub_api(endpoint, token), repo_id, option="--push", secrets=(token,))
    except UserError as exc:
        if not dry_run:
            raise
        return f"{endpoint}/{repo_id}", [str(exc)], None
    return f"{endpoint}/{repo_id}", [], token


def _replace_check(repo_id: str, token: str, lora: Path, n: int,
                   force: bool) -> tuple[str | None, list[str]]:
    """What the push stage would refuse to replace in `repo_id` (files put there by hand or
    edited on the Hub at the paths it uploads), asked before any stage so the refusal comes
    before hours of training; and warnings: the files --force-push will replace, or that the
    repo could not be read (the push stage checks again, so that goes on)."""
    from medsynth_kohya.hub.contents import paths_before
    from medsynth_kohya.hub.push import ReplaceRefused, replaced_before, resolve_endpoint
    from medsynth_kohya.sampling.plan import image_id
    from medsynth_kohya.sampling.sample import SampleOptions

    prefix = SampleOptions().id_prefix
    paths = paths_before(lora.name, [f"{image_id(prefix, i)}.png" for i in range(n)])
    try:
        replaced = replaced_before(repo_id, paths, endpoint=resolve_endpoint(None), token=token,
                                   option="--push", force=force)
    except ReplaceRefused as refused:
        return _replace_refusal(repo_id, refused.replaced), []
    except UserError as exc:
        return None, [f"could not check before training which files of {repo_id} the push "
                      f"would replace ({exc}); the push stage checks again"]
    return None, [f"--force-push: the push will replace {files.counted(len(replaced))} of "
                  f"{repo_id} ({', '.join(replaced)})"] if replaced else []


class _State:
    """WORKDIR/reproduce.json: per stage, the digest of the inputs it last completed with."""

    def __init__(self, workdir: Path, write: bool) -> None:
        self.path = workdir / STATE_FILE
        self.write = write
        self.data: dict[str, Any] = {"stages": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                self.data = {}
            stages = self.data.get("stages") if isinstance(self.data, dict) else None
            if not isinstance(stages, dict) or not all(isinstance(entry, dict)
                                                       for entry in stages.values()):
                raise UserError(f"{self.path} is damaged (not the JSON record reproduce writes): "
                                "restore it, or delete it to run every stage again")

    def done(self, stage: str, digest: str) -> bool:
        entry = self.data["stages"].get(stage, {})
        return bool(entry.get("digest") == digest and entry.get("status") == "done")

    def adopt(self, stage: str, earlier: str, digest: str) -> None:
        """Take `stage`'s `earlier` digest (of an older way to digest the same inputs) for
        `digest`, so an upgrade alone never runs a stage again."""
        entry = self.data["stages"].get(stage, {})
        if entry.get("digest") == earlier:
            entry["digest"] = digest

    def claim(self) -> None:
        """Mark WORKDIR as reproduce's before any stage writes in it."""
        if self.write and not self.path.is_file():
            files.write_json(self.path, self.data)

    def record(self, stage: str, digest: str, status: str, **extra: Any) -> None:
        if not self.write:
            return
        self.data["stages"][stage] = {"digest": digest, "status": status,
                                      "at": datetime.now(timezone.utc).isoformat(), **extra}
        files.write_json(self.path, self.data)


FINISHED = "skip (its LoRA was finished before training stopped)"
"""The train stage's action when a run not recorded as done left its complete final LoRA."""


def _train_action(run: Path, digest: str, state: _State, name: str,
                  steps: int | None) -> tuple[str, str]:
    """"skip…" (done with these inputs and its LoRA still there, or stopped once its final
    LoRA of `steps` was whole), "resume" (an interrupted run with a state sd-scripts can go on
    from) or "run"; and a warning when a finished run's LoRA is gone or training starts over."""
    from medsynth_kohya.training import train

    folder = RunFolder(run)
    if state.done("train", digest):
        if folder.final_lora(name).is_file():
            return "skip (inputs unchanged)", ""
        return "run", (f"the finished training's LoRA {folder.final_lora(name)} is gone: "
                       "training again")
    if folder.exists() and state.data["stages"].get("train", {}).get("digest") == digest:
        try:
            record = folder.load()
        except (OSError, ValueError):  # _record_refusal says so before any stage runs
            return "run", ""
        steps = record.expected_steps or steps
        if train.finished_lora(folder.final_lora(name), steps):
            return FINISHED, ""
        saved, end = train.newest_state(run, record, steps)
        if record.status == "succeeded" or saved is None:
            return "run", ""
        if not end:
            return "resume", ""
        return "run", (f"the earlier training's newest state, {saved.name}, {end}, and it left "
                       "no complete final LoRA: training again from step 0 (its files are kept "
                       f"in {folder.output}.replaced-…)")
    return "run", ""


def _record_refusal(run: Path) -> str | None:
    """Why the train stage would refuse `run`, known before any stage runs: a run record
    there that cannot be read, which train --resume refuses too (nothing then says what the
    earlier training was, so it is neither continued nor set aside over it)."""
    folder = RunFolder(run)
    if not folder.exists():
        return None
    try:
        folder.readable(f"reproduce needs it to continue or set aside the earlier training: "
                        f"mend it, or move {run} elsewhere to train again from step 0")
    except UserError as exc:
        return f"train: {exc}"
    return None


def _complete_set(synthetic: Path, n: int) -> bool:
    """Whether the synthetic set holds all `n` images and its metadata.csv."""
    from medsynth_kohya.sampling.sample import SampleOptions
    from medsynth_kohya.sampling.synthset import IMAGES, METADATA, present_images

    prefix = SampleOptions().id_prefix
    return ((synthetic / METADATA).is_file()
            and set(range(n)) <= set(present_images(synthetic / IMAGES, prefix)))


def _set_lora(state: _State, synthetic: Path) -> str | None:
    """The sha256 of the LoRA that made the set in `synthetic`: as reproduce.json records it,
    else as the set itself says (a reproduce.json deleted since); None where there is no set.
    A UserError for a set whose record cannot say (sample refuses such a set too)."""
    from medsynth_kohya.sampling.synthset import made_with

    recorded = state.data["stages"].get("sample", {}).get("lora")
    if recorded is not None or not synthetic.is_dir():
        return None if recorded is None else str(recorded)
    return made_with(synthetic)


def _sample_refusal(state: _State, synthetic: Path, n: int, lora: str | None) -> str | None:
    """Why the sample stage would refuse `synthetic`, known before any stage runs (`lora`: the
    LoRA it will use, None while training is to make it; a new LoRA's set is set aside): a
    set whose record cannot be read, files sample did not make, or a set of this LoRA holding
    images beyond --n, which metadata.csv would leave out."""
    from medsynth_kohya.sampling.sample import SampleOptions
    from medsynth_kohya.sampling.synthset import (
        IMAGES,
        beyond_n,
        held_beyond,
        others,
        present_images,
        read_state,
    )

    try:
        made = _set_lora(state, synthetic)
        if made is not None and made != lora:
            return None
        record = read_state(synthetic)
    except UserError as exc:
        return f"sample: {exc}"
    if record is None:
        found = others(synthetic)
        return (f"sample: {synthetic} was not made by medsynth-kohya sample "
                f"({locks.holds(found)}); move that out of it, then run this again"
                if found else None)
    prefix = str(record["identity"].get("id_prefix", SampleOptions().id_prefix))
    held = held_beyond(present_images(synthetic / IMAGES, prefix), n)
    if held is None:
        return None
    return (f"sample: {beyond_n(synthetic, held, n)}, or move {synthetic} elsewhere to make a "
            f"set of {n}")


def _prepared(made: PrepareResult) -> str:
    """What prepare did: the images prepared, and those it skipped, why, and where listed."""
    text = f"done, {files.counted(len(made.manifest), 'image')} prepared"
    if len(made.skipped):
        reasons = made.skipped["reason"].value_counts()
        why = (reason_for(len(made.skipped), str(reasons.index[0])) if len(reasons) == 1 else
               ", ".join(reason_counted(count, str(reason)) for reason, count in reasons.items()))
        text += (f" ({len(made.skipped)} skipped: {why}; see "
                 f"{PreparedFolder(made.out).skipped})")
    return text


def _already(stage: Stage, what: str) -> Stage:
    """`stage` as a re-run skipped it: done by an earlier run, with what it left."""
    return replace(stage, outcome=f"already done (inputs unchanged): {what}")


@dataclass(frozen=True)
class _Plan:
    """Each stage's action from what WORKDIR holds now, the input digests, the LoRA a
    skipped training left, and warnings."""

    stages: dict[str, Stage]
    digests: dict[str, str]
    lora: Path | None
    warnings: tuple[str, ...]


PREPARE_COUNT, SAMPLE_COUNT = "checking images", "generating images"
"""The stages `on_count` reports (stage, done, total) for, beside training's steps."""


def _counting(on_count: Callable[[str, int, int], None] | None,
              stage: str) -> Callable[[int, int], None] | None:
    """A stage's (done, total) callback that reports to `on_count` under the stage's name."""
    if on_count is None:
        return None
    return lambda done, total: on_count(stage, done, total)


@arguments.checked
def reproduce(source: arguments.PathArg | None, workdir: arguments.PathArg, *,
              push_repo: str | None = None, n: int = 100, preset_name: str = PRESET,
              metadata: arguments.PathArg | None = None,
              images: arguments.PathArg | None = None, columns: Mapping[str, str] | None = None,
              overrides: Sequence[str] = (), sd_scripts: arguments.PathArg | None = None,
              python: str | None = None, dry_run: bool = False, break_lock: bool = False,
              force_push: bool = False,
              detect: Callable[[], list[Gpu]] = detect_gpus,
              on_progress: Callable[[launch.StepProgress], None] | None = None,
              on_plan: Callable[[ReproduceResult], None] | None = None,
              on_count: Callable[[str, int, int], None] | None = None,
              ) -> ReproduceResult:
    """Run (or, with `dry_run`, only plan, writing nothing) the whole original experiment,
    holding WORKDIR's lock (locks.py) throughout; a training still running in it is refused.
    `break_lock` reaches the folders inside WORKDIR that the stages lock; `force_push` lets the
    push replace files of the repo that push keeps without --force. `columns` maps
    metadata fields to other column names, as prepare's `--column` does; `source` may be None
    when `metadata` names the CSV, as prepare's may. `on_plan` gets the
    plan once the checks pass, before the first stage runs (a stage after one that runs is
    planned to run; the result says what each did)."""
    source = arguments.optional_path(source, "source")
    workdir = arguments.path(workdir, "workdir")
    metadata = arguments.optional_path(metadata, "metadata")
    images = arguments.optional_path(images, "images")
    sd_scripts = arguments.optional_path(sd_scripts, "sd_scripts")
    overrides = arguments.texts(overrides, "overrides")

    def run() -> ReproduceResult:
        return _reproduce(source, workdir, push_repo, n, preset_name, metadata, images,
                          dict(columns or {}), overrides, sd_scripts, python, dry_run, detect,
                          on_progress, on_plan, break_lock, on_count, force_push)

    if dry_run:
        planned = run()
        held = [line for folder in (workdir, *(workdir / name for name in STAGE_FOLDERS))
                if (line := locks.report(folder)) is not None]
        return replace(planned, warnings=(*planned.warnings, *held))
    locks.ensure_idle(workdir / "run", "reproduce", break_lock=break_lock)
    with locks.hold(workdir, "reproduce", break_lock=break_lock) as lock:
        result = run()
    return result if lock.note is None else replace(result, warnings=(lock.note,
                                                                       *result.warnings))


@contextmanager
def _recorded(state: _State, stage: str, digest: str, **extra: Any) -> Iterator[None]:
    """Record `stage` running, and interrupted on Ctrl-C, so reproduce.json never keeps a
    stage `running` that no process runs."""
    state.record(stage, digest, "running", **extra)
    try:
        yield
    except KeyboardInterrupt:
        state.record(stage, digest, "interrupted", **extra)
        raise


def _publish(run: Path, repo_id: str, synthetic: Path, break_lock: bool,
             force: bool) -> PushResult:
    """The push stage; push's refusal to replace files edited or put in the repo by hand is
    said as reproduce's, whose --force-push lets it finish."""
    from medsynth_kohya.hub.push import ReplaceRefused, push

    try:
        return push(run, repo_id, samples=synthetic, break_lock=break_lock, option="--push",
                    force=force)
    except ReplaceRefused as refused:
        raise UserError(_replace_refusal(repo_id, refused.replaced)) from None


def _replace_refusal(repo_id: str, kept: Sequence[str]) -> str:
    """push's refusal to replace `kept` in `repo_id`, said as reproduce's (--force-push)."""
    return (f"--push {repo_id} holds {files.counted(len(kept))} that the push would replace "
            f"({', '.join(kept)}) in another version than medsynth-kohya pushed (edited on "
            "the Hub, or put there by hand); keep a copy of what you need, then run the same "
            "reproduce command again with --force-push to replace them")


def _reproduce(source: Path | None, workdir: Path, push_repo: str | None, n: int, preset_name: str,
               metadata: Path | None, images: Path | None, columns: dict[str, str],
               overrides: Sequence[str],
               sd_scripts: Path | None, python: str | None, dry_run: bool,
               detect: Callable[[], list[Gpu]],
               on_progress: Callable[[launch.StepProgress], None] | None,
               on_plan: Callable[[ReproduceResult], None] | None,
               break_lock: bool,
               on_count: Callable[[str, int, int], None] | None,
               force_push: bool) -> ReproduceResult:
    from medsynth_kohya.data import prepare
    from medsynth_kohya.sampling import sample
    from medsynth_kohya.sampling.plan import check_options as check_sample_options
    from medsynth_kohya.sampling.synthset import GRID, IMAGES, METADATA
    from medsynth_kohya.training import train

    check_sample_options(sample.SampleOptions(n=n))  # the sample stage's, before any stage
    _claim(workdir)
    _makeable(workdir)
    state = _State(workdir, write=not dry_run)
    prepared, run, synthetic = (workdir / name for name in STAGE_FOLDERS)
    preset = presets.load(preset_name)
    gpus = detect()
    overridden = train.parse_overrides(overrides)
    options = {**preset.options, **overridden}
    steps = options.get("max_train_steps")
    location = checkout.find(sd_scripts)
    sd_dir = location.path
    original = replace(ORIGINAL, columns=columns)
    located = prepare.locate_source(source, metadata, images, original, prepared,
                                    fixed_captions=True)
    selected = prepare.selected_images(located, original)
    # every check a later stage would refuse on runs now, before the first stage writes
    problems, warnings = train.check(preset_name, overrides, run,
                                     class_name=original.class_name,
                                     target_steps=original.target_steps,
                                     images=selected,
                                     repeats=original.repeats or 1, sd_scripts=sd_scripts,
                                     python=python, detect=lambda: gpus)
    if checkout.present(sd_dir) and not checkout.present(sd_dir, launch.GEN_SCRIPT):
        problems.append(f"sample: {sd_dir} has no {launch.GEN_SCRIPT} to generate the "
                        f"synthetic set with: {checkout.missing_fix(location)}")
    if problems and not dry_run:
        training = ("the original training" if preset_name == PRESET
                    else f"the training of --preset {preset_name}")
        raise UserError(files.problems_line(
            f"this machine cannot run {training}", problems,
            "run reproduce on a machine that can (--dry-run plans it here)", alone=False))
    push_url, refused, token = (("", [], None) if push_repo is None
                                else _hub_ready(push_repo, dry_run))
    problems += refused
    prepared_folder = PreparedFolder(prepared)
    manifest = prepared_folder.manifest
    name = ORIGINAL.class_name
    folder = RunFolder(run)
    final = folder.final_lora(name)
    command = launch.train_command(checkout.python(python), sd_dir.resolve(),
                                   folder.config.resolve(), folder.dataset_config.resolve(),
                                   accelerate_config=folder.accelerate_config,
                                   mixed_precision=str(options.get("mixed_precision")),
                                   first=checkout.install_step(location))

    # the sample command shown runs with the sd-scripts and Python reproduce was given
    given = [*(["--sd-scripts", str(sd_scripts)] if sd_scripts is not None else []),
             *(["--python", python] if python is not None else [])]
    skip = "skip (inputs unchanged)"
    source_digest, earlier = _source_digests(located, original)  # no stage writes the source
    if earlier is not None:
        state.adopt("prepare", earlier, source_digest)
    preset_digest = files.sha256(preset.path)
    hashed: dict[tuple[Path, int, int, int], str] = {}

    def digest(path: Path) -> str:
        """The sha256 of the manifest or the LoRA, hashed again only once a stage has
        rewritten it (another file, size or time): plan() runs before and after each stage."""
        stat = path.stat()
        key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in hashed:
            hashed[key] = files.sha256(path)
        return hashed[key]

    def plan() -> _Plan:
        """Every stage's action from WORKDIR as it is now: a stage whose input an earlier
        stage remakes runs (its digest cannot match)."""
        prepare_action = (skip if state.done("prepare", source_digest)
                          and _whole(prepared_folder) else "run")
        read = source or located.metadata
        stages = {"prepare": Stage(
            "prepare", prepare_action, f"{read} (digest {source_digest[:12]})",
            (str(prepared_folder.train_root), str(manifest), str(prepared_folder.dataset_config)),
            detail=(f"{files.counted(selected, 'image')} to prepare, original captions, "
                    f"{hair_choice()}, repeats 1"))}
        train_input = (digest(manifest) if prepare_action == skip and manifest.is_file()
                       else source_digest)
        train_digest = _digest(train_input, _layout(prepared_folder.train_root)
                               if prepare_action == skip else None, preset_digest, overridden)
        state.adopt("train", _digest(train_input, preset_digest, list(overrides)), train_digest)
        train_action, gone = _train_action(run, train_digest, state, name,
                                           steps if isinstance(steps, int) else None)
        stages["train"] = Stage("train", train_action, f"{manifest}, preset {preset.name}",
                                (str(final), str(folder.record_file)), (command.shell(),),
                                detail=files.counted(steps, "step") if isinstance(steps, int)
                                else f"{steps} steps")
        lora = final if train_action in (skip, FINISHED) else None
        sample_digest = _digest(digest(lora) if lora else train_digest, n)
        sample_action = (skip if state.done("sample", sample_digest)
                         and _complete_set(synthetic, n) else "run")
        stages["sample"] = Stage(
            "sample", sample_action, f"{final}, {files.counted(n, 'image')}, seed 0",
            (str(synthetic / IMAGES), str(synthetic / METADATA), str(synthetic / GRID)),
            (launch.tool_command("sample", "--lora", str(run), "--n", str(n),
                                 "--out", str(synthetic), *given).shell(),),
            detail="1024x1024, scale 12, 28 steps, euler_a")
        digests = {"prepare": source_digest, "train": train_digest, "sample": sample_digest}
        if push_repo is None:
            stages["push"] = Stage("push", "off", "", detail="pass --push REPO_ID to publish")
        else:
            digests["push"] = _digest(sample_digest, push_repo)
            stages["push"] = Stage("push", skip if state.done("push", digests["push"])
                                   else "run", f"{run} -> {push_repo}", (push_url,))
        return _Plan(stages, digests, lora, (gone,) if gone else ())

    def result(stages: Sequence[Stage], lora: Path | None = None, url: str | None = None,
               notes: Sequence[str] = (), planned: bool = True) -> ReproduceResult:
        said = (*errors.would_stop(problems), *warnings, *notes)
        return ReproduceResult(workdir, tuple(stages), steps if isinstance(steps, int) else None,
                               estimate(steps if isinstance(steps, int) else None,
                                        visible(gpus)),
                               dry_run, status="planned" if planned else "succeeded",
                               lora=lora, url=url, warnings=tuple(dict.fromkeys(said)))

    first = plan()
    if first.stages["train"].action != skip and (refused_run := _record_refusal(run)):
        if not dry_run:
            raise UserError(refused_run)
        problems.append(refused_run)
    if first.stages["sample"].action == "run":
        refusal = _sample_refusal(state, synthetic, n, digest(first.lora) if first.lora else None)
        if refusal is not None and not dry_run:
            raise UserError(refusal)
        problems += [refusal] if refusal is not None else []
    if push_repo is not None and token and first.stages["push"].action == "run":
        replacing, checked = _replace_check(push_repo, token, final, n, force_push)
        if replacing is not None and not dry_run:
            raise UserError(replacing)
        problems += [replacing] if replacing is not None else []
        warnings += checked
    state.claim()
    if on_plan is not None:
        on_plan(result(list(first.stages.values()), notes=first.warnings))
    if dry_run:
        return result(list(first.stages.values()), notes=first.warnings)
    if first.stages["prepare"].action == "run":
        try:
            made_ready = prepare.prepare(source, prepared, metadata=metadata, images=images,
                                         options=original, break_lock=break_lock,
                                         on_progress=_counting(on_count, PREPARE_COUNT))
        except prepare.EditedLayout as edited:
            raise UserError(f"{files.counted(len(edited.edited))} that reproduce prepared "
                            f"under {prepared} {files.agreeing(len(edited.edited), 'was')} "
                            f"changed by hand since (first: {edited.edited[0]}); preparing "
                            "again would replace them: copy them elsewhere, or delete "
                            f"{prepared} to prepare it again") from None
        except prepare.OtherSource as other:
            raise UserError(f"{prepared} holds the data reproduce prepared from "
                            f"{other.earlier}, not from {other.given}: give another --workdir, "
                            f"or delete {prepared} to prepare it again") from None
        state.record("prepare", first.digests["prepare"], "done")
        warnings += made_ready.warnings
        done = [replace(first.stages["prepare"], outcome=_prepared(made_ready))]
    else:
        from medsynth_kohya.data import manifest as manifest_file

        kept = files.counted(len(manifest_file.read(manifest)), "image")
        done = [_already(first.stages["prepare"], f"{kept} in {prepared}")]

    now = plan()
    warnings += now.warnings
    if now.stages["train"].action == skip:
        done.append(_already(now.stages["train"], f"LoRA {final}"))
    elif now.stages["train"].action == FINISHED:
        state.record("train", now.digests["train"], "done")
        done.append(replace(now.stages["train"], outcome=f"done before it stopped, LoRA {final}"))
    else:
        train_digest = now.digests["train"]
        with _recorded(state, "train", train_digest):
            trained = train.train(prepared, preset_name, overrides=overrides, run_dir=run,
                                  sd_scripts=sd_scripts, python=python,
                                  resume=now.stages["train"].action == "resume",
                                  force=now.stages["train"].action == "run",
                                  break_lock=break_lock, detect=lambda: gpus,
                                  on_progress=on_progress)
            if trained.status == "interrupted":
                raise KeyboardInterrupt  # the CLI says: re-run the same command
        if trained.status != "succeeded":
            state.record("train", train_digest, trained.status)
            saved, end = train.newest_state(run, RunFolder(run).load())
            again = ("to resume" if saved is not None and not end
                     else "to train over (no state was saved to resume from)" if saved is None
                     else f"to train over (its newest state, {saved.name}, {end})")
            raise UserError(f"training {trained.status}: {trained.message}; run the same "
                            f"reproduce command again {again} (log: {trained.log})")
        state.record("train", train_digest, "done")
        warnings += trained.warnings
        resumed = now.stages["train"].action == "resume"
        how = " (resumed from its last saved state)" if resumed else ""
        length = trained.plan.steps if trained.plan is not None else trained.expected_steps
        trained_for = "" if length is None else f", {files.counted(length, 'step')}"
        done.append(replace(now.stages["train"],
                            outcome=f"done{how}{trained_for}, LoRA {trained.lora or final}"))
        if trained.stopped:  # it finished before the stop reached it: stop before sampling
            raise KeyboardInterrupt

    now = plan()
    lora = now.lora
    if lora is None:
        raise UserError(f"training ended without its LoRA {final}; run the same reproduce "
                        "command again to train it")
    if now.stages["sample"].action == skip:
        done.append(_already(now.stages["sample"],
                             f"{files.counted(n, 'image')} in {synthetic / IMAGES}"))
    else:
        lora_digest = digest(lora)
        earlier = _set_lora(state, synthetic)
        if earlier not in (None, lora_digest) and synthetic.is_dir():
            aside = workdir / f"synthetic.replaced-{datetime.now():%Y%m%d-%H%M%S}"
            synthetic.rename(aside)
            warnings.append(f"the synthetic set of the earlier LoRA is kept in {aside}")
        sample_digest = now.digests["sample"]
        with _recorded(state, "sample", sample_digest, lora=lora_digest):
            made = sample.sample(run, synthetic, sample.SampleOptions(n=n),
                                 sd_scripts=sd_scripts, python=python, detect=lambda: gpus,
                                 break_lock=break_lock,
                                 on_progress=_counting(on_count, SAMPLE_COUNT))
            if made.status == "interrupted":
                raise KeyboardInterrupt
        if made.status != "succeeded":
            state.record("sample", sample_digest, made.status, lora=lora_digest)
            raise UserError(f"sampling {made.status}: {made.message}; run the same reproduce "
                            "command again to continue")
        state.record("sample", sample_digest, "done", lora=lora_digest)
        warnings += made.warnings
        new = "" if made.generated == made.set_present else f" ({made.generated} new)"
        done.append(replace(now.stages["sample"], outcome=(
            f"done, {files.counted(made.set_present, 'image')} in {synthetic / IMAGES}{new}")))

    now = plan()
    url = None
    pushing = now.stages["push"]
    if pushing.action == "run":
        pushed = _publish(run, str(push_repo), synthetic, break_lock, force_push)
        url = pushed.url
        state.record("push", now.digests["push"], "done", url=url)
        pushing = replace(pushing, outcome=f"done, published at {url}")
    elif pushing.action == skip:
        pushing = _already(pushing, f"published to {push_repo}")
    done.append(pushing)
    return result(done, lora=lora, url=url, planned=False)
