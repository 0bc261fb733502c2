"""`sample`: a synthetic image set from a trained LoRA, through sd-scripts' sdxl_gen_img.py.

Flow: LoRA (run folder or file) + prompt source -> plan (image i: id, prompt, seed S + i) ->
checks -> one prompt file per shard -> one sdxl_gen_img.py per GPU -> images renamed to
OUT/images/<id>.png -> OUT/metadata.csv (ISIC Archive rows) and OUT/grid.jpg. A re-run
with the same settings generates only the images that are missing.

The modules beside this one hold the parts: `lora` (the LoRA and its run), `plan` (options,
ids, prompts, seeds), `generator` (sdxl_gen_img.py's options), `shards` (GPU shards and the
harvest), `synthset` (the output folder and metadata.csv), `grid` (the contact sheet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medsynth_kohya import __version__, arguments, files, locks
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.errors import UserError, would_stop
from medsynth_kohya.evaluation import copycheck
from medsynth_kohya.evaluation.copycheck import CopyCheck
from medsynth_kohya.machine import slurm
from medsynth_kohya.machine.gpus import Gpu, detect_gpus, visible
from medsynth_kohya.sampling.generator import (
    SCRIPT,
    gen_options,
    parse_overrides,
    preflight,
    recorded_base_model,
    resolve_base_model,
)
from medsynth_kohya.sampling.grid import write_grid
from medsynth_kohya.sampling.lora import (
    check_lora,
    local_or_hub,
    lora_run,
    lora_source,
    training_captions,
)
from medsynth_kohya.sampling.machines import (
    FINAL_PART,
    MachineShard,
    create_state,
    ensure_alone,
)
from medsynth_kohya.sampling.plan import (
    Plan,
    SampleOptions,
    check_options,
    generation_settings,
    like_manifest,
    prompt_source,
)
from medsynth_kohya.sampling.shards import (
    Progress,
    Shard,
    clear_shards,
    counter,
    harvest,
    prompts_file,
    shard_devices,
    split,
    write_shard_files,
)
from medsynth_kohya.sampling.synthset import (
    GRID,
    IMAGES,
    METADATA,
    STATE_DIR,
    STATE_FILE,
    claim,
    damaged,
    other_settings,
    outputs,
    present_images,
    read_state,
    record_outputs,
    recorded_n,
    schema_rows,
    write_metadata,
)
from medsynth_kohya.sdscripts import checkout, launch, sdopts

__all__ = ["Plan", "SampleJob", "SampleOptions", "SampleResult", "sample", "sample_job"]


@dataclass(frozen=True)
class SampleResult:
    """What `sample` planned, ran and wrote."""

    out: Path
    status: str
    """"dry-run", "succeeded", "failed", "interrupted" or "incomplete" (a whole-set run, such
    as --finalize, that ended without every image of the set)."""
    plan: Plan
    present_before: int
    present: int
    shards: tuple[Shard, ...]
    metadata: Path | None
    """OUT/metadata.csv; None after a --shard run that left the set incomplete (the shard that
    completes it writes it)."""
    grid: Path | None
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    copies: CopyCheck | None = None
    """The near-copy check (`check_copies`), also recorded as OUT/copies.json."""
    machine_shard: MachineShard | None = None
    """With --shard K/N: the part of the set this run makes (`present` counts its images)."""
    set_present: int = 0
    """Images of the whole set in OUT after the run."""

    @property
    def generated(self) -> int:
        return self.present - self.present_before

    @property
    def wanted(self) -> int:
        """The images this run is for: its shard's, or the whole set's."""
        shard = self.machine_shard
        return self.plan.n if shard is None else len(shard.indices(self.plan.n))


@arguments.checked
def sample(lora: arguments.PathArg, out: arguments.PathArg,
           options: SampleOptions | None = None, *, sd_scripts: arguments.PathArg | None = None,
           python: str | None = None, dry_run: bool = False,
           force: bool = False, break_lock: bool = False,
           shard: MachineShard | None = None, finalize: bool = False,
           detect: Callable[[], list[Gpu]] = detect_gpus, job_gpus: int | None = None,
           on_progress: Progress | None = None, check_copies: bool = False,
           on_launch: Callable[[tuple[str, ...]], None] | None = None) -> SampleResult:
    """Generate (or, with `dry_run`, plan and show) the synthetic set in `out`, holding its
    lock (locks.py) throughout and marking the run it reads (`locks.reading`); a run still
    training, or a set an evaluate reads, is refused. With `check_copies`, a finished set is
    checked for near-copies of the run's training images (copies.json). With `shard`, only
    that part of the set, side by side with the other shards (sampling/machines.py); with
    `finalize`, nothing is generated: metadata.csv and grid.jpg are written for the images
    there. `lora` is a run folder, a LoRA file or a Hub id (USER/REPO[:FILE.safetensors]); as
    a str, the text as typed (see `local_or_hub`). With `job_gpus`, the run is planned for a
    task of a `--slurm` job given that many GPUs elsewhere: `detect` is not asked.
    `on_launch` sees the warnings before any image is generated (they may change the plan)."""
    lora, out = local_or_hub(arguments.fspath(lora, "lora")), arguments.path(out, "out")
    sd_scripts = arguments.optional_path(sd_scripts, "sd_scripts")
    options = arguments.options(options, SampleOptions)
    if job_gpus is not None and job_gpus < 1:
        raise UserError(f"job_gpus must be at least 1 (got {job_gpus}): the GPUs each task of "
                        "the job is given")
    if shard is not None and finalize:
        raise UserError("--finalize writes the whole set's files: leave out --shard")
    if finalize and not (out / STATE_DIR / STATE_FILE).is_file():
        raise UserError(f"--finalize: {out} holds no set made by sample yet; run its shards "
                        "first")
    run_dir = lora_run(lora)
    if run_dir is not None and (resolved := run_dir.resolve()) == out.resolve():
        raise UserError(f"--out {out} is the run folder --lora samples from: sample writes the "
                        "set into a folder of its own; give another --out, such as "
                        f"{resolved.with_name(f'{resolved.name}-samples')}")
    with (locks.reading(run_dir, "sample") if run_dir else contextlib.nullcontext(),
          locks.hold(out, "sample", part=None if shard is None else shard.part,
                     break_lock=break_lock) as lock, contextlib.ExitStack() as marks):
        if run_dir:  # after marking it read: a train starting now refuses to change its LoRA
            locks.ensure_idle(run_dir, "sample", break_lock=break_lock)
        ensure_alone(out, shard)
        notes = [] if dry_run else locks.ensure_unread(out, "sample", break_lock=break_lock)
        notes = [note for note in (lock.note, *notes) if note]
        result = _sample(lora, out, options, sd_scripts, python, dry_run,
                         force, break_lock, shard, finalize, detect, job_gpus, on_progress,
                         marks if check_copies else None, None if on_launch is None
                         else lambda found: on_launch((*notes, *found)))
    return replace(result, warnings=(*notes, *result.warnings))


def _sample(lora: Path, out: Path, options: SampleOptions, sd_scripts: Path | None,
            python: str | None, dry_run: bool, force: bool, break_lock: bool,
            shard: MachineShard | None, finalize: bool, detect: Callable[[], list[Gpu]],
            job_gpus: int | None, on_progress: Progress | None,
            check_copies: contextlib.ExitStack | None,
            on_launch: Callable[[tuple[str, ...]], None] | None) -> SampleResult:
    """The run `sample` holds its locks for; with `check_copies`, the stack that keeps the
    training photos marked read until the set is checked (`copycheck.training_folder`)."""
    check_options(options)
    options = replace(options, like=like_manifest(options.like))
    settings = generation_settings(options)
    overrides = parse_overrides(options.overrides)
    found = lora_source(lora, options.revision)
    lora_file, record, pulled = found.file, found.record, found.pulled
    options = replace(options, base_model=options.base_model
                      or (pulled.base_model if pulled else None))
    check_lora(lora_file)
    training = None if check_copies is None else check_copies.enter_context(
        copycheck.training_folder(record, break_lock=break_lock))
    names = training_captions(record, options.like)
    source, n = prompt_source(options, options.n, record, names, break_lock=break_lock)
    arguments.check_seed(options.seed, n)
    location = checkout.find(sd_scripts)
    sd_dir = location.path
    base_model, absent = resolve_base_model(options.base_model, record, sd_dir)
    shared = recorded_base_model(base_model, sd_dir)  # metadata.csv is shared: no home folder
    gpus = visible(detect()) if job_gpus is None else slurm.task_gpus(job_gpus)
    devices = shard_devices(options.num_gpus, gpus, own=job_gpus is None)
    gen = gen_options(record, base_model, lora_file, settings, overrides, sd_dir, bool(gpus))
    errors = sdopts.check(SCRIPT, gen)
    if errors:
        raise UserError(files.problems_line("the generation cannot run with these settings",
                                            errors))
    runner = checkout.python(python)

    digest = files.sha256(lora_file)
    identity = {**source.identity, "seed": options.seed, "id_prefix": options.id_prefix,
                **asdict(settings), "base_model": base_model, "lora_sha256": digest,
                "generator": {k: v for k, v in gen.items() if k != "network_weights"}}
    plan = Plan(n=n, seed=options.seed, id_prefix=options.id_prefix, drawn=source.drawn,
                settings=settings, lora=lora_file, lora_sha256=digest, base_model=shared,
                diagnosis=names.diagnosis, lora_hub=pulled.origin if pulled else None)
    schema_rows(plan, options.metadata_style)  # metadata.csv can hold every row: before any image
    written = [*outputs(plan, len(devices), "" if shard is None else f"{shard.name}."),
               *([copycheck.NAME] if check_copies is not None else [])]
    same = claim(out, identity, plan, written, force)
    problems, warnings = preflight(location, runner, out, gpus, gen)
    problems = [*absent, *problems]
    warnings = [*found.notes, *source.warnings, *warnings]
    if names.diagnosis is None:
        warnings.append("the training class has no single ISIC Archive diagnosis (prepare "
                        "found none its images share): metadata.csv leaves it blank")
    if not names.known and source.identity["kind"] == "like":
        warnings.append(f"no train run or prepared folder found: prompts use prepare's default "
                        f"template and trigger {names.trigger!r}")
    if problems and not dry_run:
        raise UserError(files.problems_line(
            "this machine cannot run the generation", problems,
            "sample on a machine that can (--dry-run plans it here)"))

    state_path = out / STATE_DIR / STATE_FILE
    wanted = set(range(n) if shard is None else shard.indices(n))
    highres = gen.get("highres_fix_scale") is not None
    tag = None if shard is None else f"{shard.name}."  # this machine's shard files (--shard)

    def commands(missing: list[int], write: bool) -> list[Shard]:
        """One sdxl_gen_img.py per GPU for the `missing` images (prompt files written when
        `write`; a dry run only shows where they would go)."""
        shards = []
        for k, indices in enumerate(split(missing, len(devices))):
            folder = out / STATE_DIR / "shards" / f"{tag or ''}{k}"
            prompts_path = (write_shard_files(plan, folder, indices, highres) if write
                            else prompts_file(folder))
            command = launch.gen_command(runner, sd_dir.resolve(), {
                **gen, "from_file": str(prompts_path.resolve()),
                "outdir": str((folder / "out").resolve())}, device=devices[k],
                first="" if k else checkout.install_step(location))  # installed once
            shards.append(Shard(k, devices[k], tuple(indices), command,
                                out / "logs" / f"shard-{tag or ''}{k}.log",
                                machine="" if shard is None else f"{shard.k}/{shard.count}"))
        return shards

    if dry_run:  # writes nothing: images finished by a killed run are counted as missing
        placed = read_state(out)
        if shard is not None and placed is not None:
            _same_settings(placed, identity, out, n, options.metadata_style.value)
        present_now = [i for i in present_images(out / IMAGES, plan.id_prefix) if i in wanted]
        present_now = sorted(set(present_now) - set(damaged(out / IMAGES, plan, present_now)))
        shown = commands([] if finalize else sorted(wanted - set(present_now)),
                         write=False)
        return SampleResult(out, "dry-run", plan, len(present_now), len(present_now),
                            tuple(shown), out / METADATA, None,
                            warnings=(*warnings, *would_stop(problems)), machine_shard=shard)

    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"tool": "medsynth-kohya", "command": "sample",
                             "version": __version__, "identity": identity, "n": n,
                             "metadata_style": options.metadata_style.value,
                             "lora": str(lora_file.resolve()), "status": "planned"}
    if pulled is not None:  # the cache path above is this machine's; this names it anywhere
        state["lora_hub"] = asdict(pulled.origin)
    if shard is not None:  # sample.json is the first shard's; each keeps its own record
        placed = create_state(state_path, {**state, "status": "sharded"})
        _same_settings(placed, identity, out, n, options.metadata_style.value)
        state_path = shard.record(out, ".json")
    record_outputs(out, written)  # a refused shard adds none
    files.write_json(state_path, state)
    if same:
        harvest(out, tag)
    clear_shards(out, tag)
    present_before = [i for i in present_images(out / IMAGES, plan.id_prefix) if i in wanted]
    broken = [] if finalize else damaged(out / IMAGES, plan, present_before)
    for index in broken:  # emptied or cut short: the same seed makes the image again
        (out / IMAGES / f"{plan.image_id(index)}.png").unlink()
    if broken:
        warnings.append(f"{files.counted(len(broken), 'image')} in {out / IMAGES} "
                        f"{files.agreeing(len(broken), 'was')} not whole (emptied or cut "
                        f"short since made: {plan.image_ids(broken)}); made again")
    present_before = sorted(set(present_before) - set(broken))
    missing = [] if finalize else sorted(wanted - set(present_before))
    shards = commands(missing, write=True)
    state.update(commands=[s.command.argv for s in shards], cwd=str(sd_dir.resolve()))
    result = SampleResult(out, "running", plan, len(present_before), len(present_before),
                          tuple(shards), out / METADATA, None, warnings=tuple(warnings),
                          machine_shard=shard)

    outcomes: list[launch.RunOutcome] = []
    if shards:
        if on_launch is not None:
            on_launch(tuple(warnings))
        state.update(status="running", start=_now())
        files.write_json(state_path, state)
        outcomes = launch.run_many([s.command for s in shards], [s.log for s in shards],
                                   on_line=counter(out, len(missing), on_progress, tag))
    harvest(out, tag)
    in_set = [i for i in present_images(out / IMAGES, plan.id_prefix) if i < n]
    present = [i for i in in_set if i in wanted]
    done = set(present)
    finished = tuple(replace(s, made=sum(1 for i in s.images if i in done),
                             returncode=o.returncode, interrupted=o.interrupted,
                             tail=tuple(o.tail)) for s, o in zip(shards, outcomes, strict=True))
    made = sum(s.made for s in finished)
    if on_progress is not None and shards:
        on_progress(made, len(missing))
    grid, metadata = None, None
    if shard is not None:
        write_metadata(plan, present, shard.record(out, ".csv"), options.metadata_style)
    if shard is None or len(in_set) == n:  # whichever run finds the set complete
        grid = _write_final(plan, in_set, out, options.metadata_style, shard is not None)
        metadata = out / METADATA
    if any(s.interrupted for s in finished):
        status = "interrupted"
        message = f"stopped with {len(present)} of {files.counted(len(wanted), 'image')}"
    elif any(s.failed for s in finished):
        bad = [s for s in finished if s.failed]
        status = "failed"
        message = "; ".join(f"{s.label}: sdxl_gen_img.py exited with {s.returncode} after "
                            f"{s.made}/{len(s.images)} images (log: {s.log})" for s in bad)
    else:
        status = "succeeded"
        message = _made(out, shard, made if shards else None, len(wanted), len(in_set), n,
                        finalize)
    if status == "succeeded" and len(in_set) < n:
        message += ("; " + (
            f"{out / METADATA} lists those (re-run the missing shards, then --finalize)"
            if shard is None else f"{METADATA} and {GRID} are written"
            f"{' and the set checked for near-copies' if training is not None else ''} by the "
            "shard that completes it (or run sample --finalize)"))
        if shard is None:  # the set's own record: push and evaluate must not take it as done
            status = "incomplete"
    state.update(status=status, end=_now(), message=message, present=len(present),
                 shards=[{"index": s.index, "device": s.device, "images": len(s.images),
                          "made": s.made, "returncode": s.returncode,
                          "interrupted": s.interrupted, "log": str(s.log.absolute())}
                         for s in finished])
    files.write_json(state_path, state)
    copies = None
    if training is not None and status == "succeeded" and len(in_set) == n:  # the whole set
        copies = copycheck.check(out, training)
        copycheck.write(out, copies)
    return replace(result, status=status, present=len(present), shards=finished, grid=grid,
                   metadata=metadata, message=message, warnings=tuple(warnings), copies=copies,
                   set_present=len(in_set))


def _made(out: Path, shard: MachineShard | None, made: int | None, wanted: int, in_set: int,
          n: int, finalize: bool) -> str:
    """What a run that succeeded did (`made` None: it had nothing to make) and how many of the
    set's `n` images OUT holds now; a --shard run also says when the set is complete."""
    if made is not None:
        did = f"{files.counted(made, 'image')} made"
    elif finalize:
        did = f"wrote {METADATA} and {GRID}"
    else:
        did = (f"{'the' if wanted == 1 else 'all'} {files.counted(wanted, 'image')} "
               f"{files.agreeing(wanted, 'was')} already there")
    if shard is not None and not wanted:  # --shard 6/8 of 4 images
        did = (f"shard {shard.k}/{shard.count} has none of the set's "
               f"{files.counted(n, 'image')} (more shards than images): nothing to do")
    elif shard is not None:
        did = f"shard {shard.k}/{shard.count}: {did}"
    if in_set < n:
        return f"{did}; the set has {in_set} of {n} in {out / IMAGES}"
    complete = "" if shard is None else f": the set is complete ({METADATA}, {GRID} written)"
    return f"{did}; {files.counted(n, 'image')} in {out / IMAGES}{complete}"


def _write_final(plan: Plan, present: list[int], out: Path, style: MetadataStyle,
                 shared: bool) -> Path | None:
    """metadata.csv and grid.jpg of the images `present`. Of shards that find the set complete
    at the same moment, one writes them (the others' would be the same bytes)."""
    with contextlib.ExitStack() as stack:
        if shared:
            try:
                stack.enter_context(locks.hold(out, "sample", part=FINAL_PART))
            except UserError:
                return out / GRID
        write_metadata(plan, present, out / METADATA, style)
        return write_grid(plan, out / IMAGES, present, out / GRID)


def _same_settings(placed: Mapping[str, Any], identity: Mapping[str, Any], out: Path, n: int,
                   style: str) -> None:
    """Refuse a shard whose settings differ from those the set in `out` was started with: its
    options, its metadata style, or an --n smaller than the set's (a larger one extends it;
    a smaller one would call the set complete short of its images)."""
    changed, fix = other_settings(
        {**placed.get("identity", {}), "metadata_style": placed.get("metadata_style", style)},
        {**identity, "metadata_style": style})
    if changed:
        values = f" (that set's: {fix})" if fix else ""
        raise UserError(f"{out} is being made with other settings ({'; '.join(changed)}): "
                        f"give every shard the same options{values}, or use another --out")
    size = recorded_n(placed)
    if placed.get("status") in ("sharded", "succeeded") and size > n:
        raise UserError(f"{out} is a set of {size} images made by shards: give every shard "
                        f"--n {size} (a larger --n extends it), or use another --out")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SampleJob:
    """`sample --slurm N`: the array job's script (shown, written or submitted) and what the
    first task's dry run warned of."""

    job: slurm.Job
    warnings: tuple[str, ...] = ()


@arguments.checked
def sample_job(lora: arguments.PathArg, out: arguments.PathArg, task: tuple[str, ...],
               count: int, options: SampleOptions | None = None, *,
               sbatch: tuple[str, ...] = (), submit: bool = False, dry_run: bool = False,
               sd_scripts: arguments.PathArg | None = None, python: str | None = None,
               force: bool = False, break_lock: bool = False,
               check_copies: bool = False) -> SampleJob:
    """The SLURM array job whose task K runs `task` (a `sample` command line) with --shard
    K/`count`, written to OUT/.medsynth/sample.sbatch (shown only, with `dry_run`; handed to
    sbatch, with `submit`) once the first task's dry run, on the GPUs SLURM gives a task, has
    found nothing that would refuse every task. A run folder that has no LoRA yet (a job
    written ahead of the training that makes it) is left for the tasks to check."""
    from medsynth_kohya.sampling.lora import untrained_run
    from medsynth_kohya.sampling.machines import array_script

    options = arguments.options(options, SampleOptions)
    if count < 1:
        raise UserError(f"--slurm N needs N >= 1 (got {count})")
    settings = slurm.parse_settings(sbatch)
    if untrained_run(arguments.fspath(lora, "lora")):
        check_options(options)
        warnings: tuple[str, ...] = (f"{lora} has no LoRA yet: the tasks check it and their "
                                     "options against it when they run",)
    else:
        warnings = sample(lora, out, options, sd_scripts=sd_scripts, python=python,
                          dry_run=True, force=force, break_lock=break_lock,
                          shard=MachineShard(1, count), job_gpus=options.num_gpus,
                          check_copies=check_copies).warnings
    out = arguments.path(out, "out")
    text = array_script(task, count, options.num_gpus, out, settings)
    if dry_run:
        return SampleJob(slurm.Job(text), warnings)
    files.make_folder(out / STATE_DIR / "slurm")  # SLURM's logs
    return SampleJob(slurm.write(text, out / STATE_DIR / "sample.sbatch", submit=submit),
                     warnings)
