"""The `medsynth-kohya` command line: parses options and hands them to the library.

Each command calls one plain function and prints its result; heavy modules are imported
inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from medsynth_kohya import __version__
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.layout import LinkMode
from medsynth_kohya.entry import RESUMABLE

if TYPE_CHECKING:
    from medsynth_kohya.machine.slurm import Job
    from medsynth_kohya.sampling.sample import SampleJob

SdScriptsOption = Annotated[Optional[Path], typer.Option(  # noqa: UP045 (Typer needs Optional)
    "--sd-scripts",
    help="sd-scripts checkout; default $MEDSYNTH_SD_SCRIPTS, else this checkout's "
    "vendor/sd-scripts (editable install), else the copy install-sd-scripts makes.")]
PythonOption = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--python", help="Python that runs sd-scripts; default $MEDSYNTH_SD_PYTHON, else this one.")]
BreakLockOption = Annotated[bool, typer.Option(
    "--break-lock", help="Take the folder's lock although it names a command on another "
    "machine whose heartbeat is recent; only when that command no longer runs (one silent "
    "for 10 minutes is taken over without it).")]
SbatchOption = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--sbatch", metavar="KEY=VALUE",
    help="With --slurm: an #SBATCH setting such as --sbatch partition=gpu or --sbatch "
    "time=24:00:00. Repeatable.")]
ColumnOption = Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
    "--column", metavar="FIELD=COLUMN",
    help="Read a field (id, patient_id, sex, age, site) from another metadata column: "
    "--column site=anatom_site_general_challenge. Repeatable.")]


def _examples(*lines: str) -> str:
    """A command's --help epilog: example command lines, shown as written (click's \\b)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  medsynth-kohya {line}" for line in lines)


def _home(value: object) -> object:
    """A path argument with a leading `~` expanded (also in lists)."""
    if isinstance(value, Path):
        try:
            return value.expanduser()
        except RuntimeError:  # `~nosuchuser/…`: the command's own check says so in one line
            return value
    if isinstance(value, list | tuple):
        return type(value)(_home(item) for item in value)
    return value


_VALIDATOR_PREFIX = "Value error, "
"""How pydantic (Typer converts option values with it) starts its reason for refusing one."""


class _PlainUsage(TyperCommand):
    """A command whose usage line names its arguments as `PREPARED`, not `{PREPARED}`, and
    whose path arguments may start with `~` although no shell expanded it (`--out=~/runs`, a
    notebook form, a batch script)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]

    def invoke(self, ctx: Any) -> Any:
        ctx.params = {name: _home(value) for name, value in ctx.params.items()}
        with _user_errors():  # also what options' own checks refuse before the command's work
            return super().invoke(ctx)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _refuse_empty_paths(self, ctx, args)
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:  # Typer's pydantic checks start theirs "Value error, "
            exc.message = exc.message.removeprefix(_VALIDATOR_PREFIX)
            raise


def _refuse_empty_paths(command: TyperCommand, ctx: Any, args: list[str]) -> None:
    """Refuse a path given as "" (`--images "$DIR"` with DIR unset): Path("") is the current
    folder, which the command would search or write in without a word."""
    import inspect
    import typing

    hints = typing.get_type_hints(inspect.unwrap(command.callback)) if command.callback else {}
    paths = {name for name, hint in hints.items() if Path in (hint, *typing.get_args(hint))}
    params: list[Any] = list(command.params)
    options = {opt: param for param in params if param.param_type_name == "option"
               and not getattr(param, "is_flag", False) for opt in param.opts}
    positional = iter([param for param in params if param.param_type_name == "argument"])
    words, only_positional = iter(args), False
    for word in words:
        name, equals, given = word.partition("=")
        param: Any
        value: str | None
        if only_positional or not word.startswith("-") or word == "-":
            param, value = next(positional, None), word
        elif word == "--":
            only_positional = True
            continue
        elif (word.startswith("--") and name in options and equals) or word in options:
            param = options[name if equals else word]
            value = given if equals else next(words, None)
        else:
            continue
        if value == "" and param is not None and param.name in paths:
            raise typer.BadParameter("is empty (an unset shell variable?); give a path, or . "
                                     "for the current folder", ctx=ctx, param=param)


PIPELINE = ("demo", "doctor", "install-sd-scripts", "fetch-isic", "prepare", "train", "sample",
            "evaluate", "push", "reproduce")
"""The order --help lists the commands in: a first run, then the pipeline's own."""


class _PipelineOrder(TyperGroup):
    """A group whose --help lists its commands in PIPELINE order, any other after them."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: (*PIPELINE, name).index(name))


class _App(typer.Typer):
    """Typer whose commands use the plain usage line."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **kwargs: Any) -> Callable[[_F], _F]:
        return super().command(name, cls=cls or _PlainUsage, **kwargs)


_F = TypeVar("_F", bound=Callable[..., Any])
app = _App(
    name="medsynth-kohya",
    help="ISIC dermoscopy data to an SDXL melanoma LoRA and a synthetic image set, "
    "through kohya-ss sd-scripts.\n\nStart with `medsynth-kohya demo` (no download, no "
    "GPU). Then `medsynth-kohya reproduce SOURCE` runs the original 2023 experiment on your "
    "ISIC download in one command, or step by step: `medsynth-kohya prepare SOURCE --out "
    "DATA`, then train, sample, evaluate and push.",
    cls=_PipelineOrder,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsynth-kohya {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """ISIC dermoscopy data to an SDXL melanoma LoRA, through kohya-ss sd-scripts."""


@contextmanager
def _stops_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, a batch scheduler's cancel) and SIGHUP (a closed terminal) stop the
    command as Ctrl-C does: its children stopped in turn, its records saying "interrupted",
    one line and exit code 130, where the default would end it at once and leave a run
    "running"."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    before = [signal.signal(kind, interrupt) for kind in kinds]
    try:
        yield
    finally:
        for kind, handler in zip(kinds, before, strict=True):
            signal.signal(kind, signal.SIG_DFL if handler is None else handler)


@contextmanager
def _user_errors(interrupted: str = RESUMABLE) -> Iterator[None]:
    """Turn a UserError into one red line and exit code 1; Ctrl-C (or SIGTERM, SIGHUP) into
    `interrupted` and exit code 130. A write the machine refuses (permission, read-only file
    system, disk full, a name too long: files.REFUSED) is one line too; any other OSError is a
    bug and keeps its traceback."""
    from medsynth_kohya import files, ui
    from medsynth_kohya.errors import UserError

    try:
        with _stops_as_ctrl_c():
            yield
    except UserError as exc:
        ui.error(str(exc))
        raise typer.Exit(1) from None
    except OSError as exc:
        if exc.errno not in files.REFUSED:
            raise
        named = files.failed_file(exc)
        where = f"{named}: " if named else ""
        there = "there" if named else "on the disk of the folder this command writes to"
        fix = (f"free space {there}" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
               else "choose a shorter path" if exc.errno == errno.ENAMETOOLONG
               else "check its permissions or choose another folder")
        ui.error(f"{where}{exc.strerror}; {fix}, then run this again")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        ui.error(interrupted)
        raise typer.Exit(130) from None


@app.command(epilog=_examples(
    "prepare isic2020 --out prepared",
    "prepare ~/isic2020 --out data/melanoma --target-steps 7200 --epochs 50"))
def prepare(
    source: Annotated[Optional[Path], typer.Argument(  # noqa: UP045 (Typer needs Optional)
        metavar="SOURCE",
        help="ISIC download: a folder holding its metadata CSV, or the CSV itself (also "
        "compressed): train.csv or ISIC_2020_Training_GroundTruth*.csv (ISIC 2020), "
        "ISIC_2019_Training_GroundTruth.csv (ISIC 2019), "
        "ISIC2018_Task3_Training_GroundTruth.csv (ISIC 2018 task 3), HAM10000_metadata.csv "
        "(HAM10000), train-metadata.csv (ISIC 2024), ISIC-2017_Training_Part3_GroundTruth.csv "
        "(ISIC 2017), ISBI2016_ISIC_Part3_Training_GroundTruth.csv (ISIC 2016) or "
        "metadata.csv (an ISIC Archive export).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the layout to.")] = Path(
        "prepared"),
    metadata: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Metadata CSV, when it is not found under SOURCE.")] = None,
    images: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder of images, searched with its subfolders (not hidden ones or --out), when "
             "they are not in train/, jpeg/train/ or beside the CSV.")
    ] = None,
    query: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Comparison of the metadata columns (== < in, and/or/not, .isna(), "
        ".str.contains(...); no other code) selecting the rows, instead of "
        "melanomas, e.g. `diagnosis == \"nevus\"`; it may name the image measurements "
        "(hair_score, hairy, ita, skin_tone, vignette, ruler, bubbles, width, height), e.g. "
        "`target == 1 and not ruler`; terms on measurements alone narrow the melanomas.")] = None,
    diagnosis: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Select by the ISIC Archive's diagnosis hierarchy, any level (e.g. \"Melanoma "
        "Invasive\", \"Nevus\", \"Malignant\"); with --query, rows must match both.")] = None,
    class_name: Annotated[str, typer.Option(help="Class folder name: img/<R>_<class>.")] = (
        "melanoma"),
    trigger: Annotated[str, typer.Option(help="Trigger token written into every caption.")] = (
        "me1anoma"),
    caption_template: Annotated[str, typer.Option(
        help="Caption with {sex} {site} {age} {trigger} {hair}, and {tone} (skin-tone "
        "category) and {artefacts} (e.g. `dark corners, ruler marks`) measured on the image; a "
        "missing value drops its clause; `, hairy` is appended when {hair} is not used.")] = (
        "photo of {sex} skin, {trigger} on {site}, at age {age}"),
    hair: Annotated[HairMode, typer.Option(
        help="auto: resolution-independent detector; seed: the original 2023 heuristic "
        "exactly (resolution-dependent); metadata: the ISIC Archive's own `hairy` tag where "
        "the source has one, auto elsewhere; off: no hair tag.")] = HairMode.auto,
    repeats: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Repeats per image per epoch (folder prefix R). Default 1.")] = None,
    target_steps: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Choose repeats to reach this many steps: "
        "R = ceil(steps x batch / (epochs x images)).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs assumed by --target-steps.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 1,
    val_frac: Annotated[float, typer.Option(
        help="Share of images held out in val/ by patient (no patient on both sides).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    resolution: Annotated[int, typer.Option(
        help="Training resolution (multiple of 64, at most 4096).")] = 1024,
    column: ColumnOption = None,
    challenge_sites: Annotated[bool, typer.Option(
        help="Write the Archive's anterior/posterior/lateral torso as the 2020 challenge's "
        "`torso` in the manifest and captions, as the original run's captions have it.")] = False,
    link: Annotated[LinkMode, typer.Option(
        help="copy: img/ holds its own copy of each image (a copy-on-write clone where the "
        "file system can); hard: hard links, no extra disk, but editing an image in img/ "
        "changes your source image too.")] = LinkMode.copy,
    workers: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Processes for image checks; default all cores.")] = None,
    force: Annotated[bool, typer.Option(
        help="Write into a non-empty --out that prepare did not make, or replace one "
        "prepared from another source.")] = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Build kohya's training layout from ISIC metadata and images.

    Writes `OUT/img/<R>_<class>/<id>.jpg` (copies, or hard links with `--link hard`) with
    `<id>.txt` captions, `OUT/val/1_<class>/` for `--val-frac`, `OUT/manifest.csv`,
    `OUT/skipped.csv` (bad or missing files, with the reason) and `OUT/dataset.toml` for
    sd-scripts' `--dataset_config`.
    A re-run on the same OUT only re-checks changed images.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.data.prepare import PrepareOptions, summary
    from medsynth_kohya.data.prepare import prepare as run
    from medsynth_kohya.data.prepared import PreparedFolder
    from medsynth_kohya.data.sources import parse_columns

    with _user_errors():
        columns = parse_columns(column or [])
    options = PrepareOptions(query=query, diagnosis=diagnosis, class_name=class_name,
                             trigger=trigger, caption_template=caption_template, hair=hair,
                             repeats=repeats, target_steps=target_steps, epochs=epochs,
                             batch_size=batch_size, val_frac=val_frac, seed=seed,
                             resolution=resolution, columns=columns,
                             challenge_sites=challenge_sites, link=link)
    with _user_errors(), ui.progress_bar("checking images") as progress:
        result = run(source, out, metadata=metadata, images=images, options=options,
                     workers=workers, force=force, break_lock=break_lock,
                     on_progress=progress)
    for warning in result.warnings:
        ui.warn(warning)
    if result.repeats.formula:
        ui.say(result.repeats.formula)
    ui.table(f"prepare: {result.out}", summary(result))
    made = PreparedFolder(result.out)
    ui.say(f"Wrote {result.train_dir}, {made.manifest}, {made.skipped} and "
           f"{result.dataset_config}")


@app.command(epilog=_examples("demo", "demo --out medsynth-demo --n 24 --seed 0"))
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo run.")] = Path(
        "medsynth-demo"),
    n: Annotated[int, typer.Option(
        help="Number of synthetic photos to generate, 8 to 10,000 (each takes about 0.2 s to "
        "draw, more to prepare: the demo only shows the pipeline).")] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data, 0 to 2**32 - 1.")] = 0,
    dry_run: Annotated[bool, typer.Option(
        help="Generate, prepare, render and check the training run as always, but launch "
        "nothing, even on a machine that could train.")] = False,
) -> None:
    """Run the pipeline on built-in synthetic ISIC-like data (no download needed).

    Generates `OUT/source` (photos and ISIC 2020 metadata, all marked synthetic), prepares
    it into `OUT/prepared`, then renders and checks a t4-16gb training run in `OUT/run` and
    prints the exact command a GPU machine would run. With a CUDA GPU, sd-scripts and the
    SDXL base model in the Hugging Face cache, it trains for real (not with --dry-run).
    """
    from medsynth_kohya import ui
    from medsynth_kohya.data.prepare import summary
    from medsynth_kohya.pipeline.demo import run_demo

    with (_user_errors(), ui.progress_bar("drawing photos") as drawing,
          ui.progress_bar("checking images") as progress, ui.training_bar() as step):
        result = run_demo(out, n=n, seed=seed, on_progress=progress, on_step=step,
                          on_draw=drawing, dry_run=dry_run)
    ui.say(f"Generated {len(result.source.frame)} synthetic photos in {result.source.root}")
    ui.table(f"prepare: {result.prepared.out}", summary(result.prepared))
    training = result.training
    for warning in training.warnings:
        ui.warn(warning)
    if training.status == "dry-run":
        where = ("--dry-run launched nothing. Without --dry-run, this machine runs"
                 if result.can_train else "On a GPU machine it runs")
        ui.say(f"Training run rendered and checked in {training.run_dir} "
               f"({training.expected_steps} steps). {where} ({training.command.where()}):")
        ui.say(training.command.shell())
    elif training.status == "succeeded":
        ui.say(f"Training {training.status}: {training.message}")
    else:
        log = f" (log: {training.log})" if training.log else ""
        fix = "" if training.status == "interrupted" else "see the log, then "
        ui.error(f"training {training.status}: {training.message}{log}; {fix}run the same "
                 "demo again to go on from its last saved state (or over, if it saved none)")
        raise typer.Exit(130 if training.status == "interrupted" else 1)


@app.command(epilog=_examples(
    "train data/melanoma --preset t4-16gb --dry-run",
    "train data/melanoma --preset t4-16gb --run-dir runs/t4",
    "train data/melanoma --run-dir runs/t4 --resume"))
def train(
    prepared: Annotated[Path, typer.Argument(metavar="PREPARED",
        help="Folder written by `medsynth-kohya prepare`.")],
    preset: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="A preset in configs/ (medsynthx-2023, t4-16gb, a100-80gb, h100-80gb, cpu-smoke) "
        "or a preset .toml file; default t4-16gb, and with --resume the run's own.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", metavar="KEY=VALUE",
        help="Override an sd-scripts option: --set learning_rate=1e-4 (TOML value; "
        "empty removes the key). Repeatable.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--run-dir", "-o", help="Run folder; default runs/<preset>-<time> (-2, -3, … for runs "
        "started in the same second).")] = None,
    dry_run: Annotated[bool, typer.Option(
        help="Write and check the files, print the exact command, launch nothing.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --run-dir (default: the newest run of PREPARED under "
        "runs/) from its last saved state.")] = False,
    gpus: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--gpus", "--num-gpus", help="Number of GPUs (one process each); default from the "
        "preset. --num-gpus, as sample spells it, is the same.")] = None,
    sd_scripts: SdScriptsOption = None,
    python: PythonOption = None,
    force: Annotated[bool, typer.Option(
        help="Start over in a --run-dir that holds a run; with --resume, from step 0 with that "
        "run's own preset and --set values.")] = False,
    break_lock: BreakLockOption = False,
    num_machines: Annotated[int, typer.Option(
        help="Machines training together (accelerate's --num_machines); run this on each, "
        "with the same --run-dir on a shared file system.")] = 1,
    machine_rank: Annotated[int, typer.Option(help="This machine's rank, 0 to "
                                              "--num-machines minus 1.")] = 0,
    main_process_ip: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Address of the machine of rank 0.")] = None,
    main_process_port: Annotated[int, typer.Option(help="Port on the machine of rank 0.")
    ] = 29500,
    accelerate_config: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="An `accelerate config` file, passed to accelerate untouched (instead of the "
        "four options above).")] = None,
    slurm: Annotated[bool, typer.Option(
        help="A flag: check the run here and write RUN/train.sbatch, one SLURM job whose "
        "--num-machines tasks train this one LoRA together, each starting `accelerate launch` "
        "with its rank from SLURM (sample's --slurm N instead splits a set into N independent "
        "tasks).")
    ] = False,
    submit: Annotated[bool, typer.Option(help="With --slurm: submit it with sbatch.")] = False,
    sbatch: SbatchOption = None,
) -> None:
    """Train an SDXL LoRA with sd-scripts on a prepared folder.

    Renders `RUN/config.toml`, `RUN/dataset.toml` and `RUN/sample_prompts.toml` from the
    preset and `--set` overrides, checks every key and value against sd-scripts' own options
    and the GPUs found. Steps: `--set max_train_steps` wins, else the folder's `prepare
    --target-steps`, else the preset's; the table says which, with epochs, saves, sample
    rounds and the disk the saves need (refused when they would not fit). Then it runs
    `accelerate launch sdxl_train_network.py` (log in `RUN/train.log`, record in
    `RUN/run.json`). Ctrl-C stops cleanly; `--resume` continues. On several machines, rank
    0 waits for the others, checks every machine's GPUs and records them in run.json.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.sdscripts.launch import Machines
    from medsynth_kohya.training.train import Cluster, TrainResult
    from medsynth_kohya.training.train import train as run

    if (submit or sbatch) and not slurm:
        ui.error("--submit and --sbatch are for the --slurm script: add --slurm")
        raise typer.Exit(2)
    cluster = Cluster(Machines(num_machines, machine_rank, main_process_ip, main_process_port),
                      accelerate_config, tuple(sbatch or ()) if slurm else None,
                      submit and not dry_run)

    shown: set[str] = set()

    def plan_table(result: TrainResult) -> None:
        """The plan, with its warnings first: before hours of training, while they can help."""
        _warn_once(result.warnings, shown)
        rows = [("run folder", str(result.run_dir)), ("status", result.status),
                ("config", str(result.config)), ("dataset config", str(result.dataset_config)),
                ("sample prompts", str(result.sample_prompts))]
        ui.table(f"train: {result.run_dir.name}", rows + (result.plan.rows() if result.plan
                                                           else []))

    with _user_errors(), ui.training_bar() as progress:
        result = run(prepared, preset, overrides=set_ or [], run_dir=run_dir,
                     sd_scripts=sd_scripts, python=python, gpus=gpus, dry_run=dry_run,
                     resume=resume, force=force, break_lock=break_lock, cluster=cluster,
                     on_progress=progress, on_launch=plan_table)
    _warn_once(result.warnings, shown)
    if result.job is not None:
        _show_job(result.job)
        return
    if result.status == "dry-run":
        plan_table(result)
    else:
        ui.table(f"train: {result.run_dir.name}", result.outcome_rows())
    if result.status == "dry-run":
        ui.say(f"Command (run {result.command.where()}):")
        ui.say(result.command.shell())
        return
    if result.status != "succeeded":
        for line in result.tail[-15:]:
            ui.say(line)
        ui.error(f"training {result.status}: {result.message}; {result.advice} (log: "
                 f"{result.log})")
        raise typer.Exit(130 if result.status == "interrupted" else 1)
    ui.say(result.message)


def _warn_once(warnings: Sequence[str], shown: set[str]) -> None:
    """Print the warnings not in `shown` and add them to it: a command that warns before its
    long work does not repeat them after."""
    from medsynth_kohya import ui

    for warning in warnings:
        if warning not in shown:
            ui.warn(warning)
            shown.add(warning)


def _show_job(job: Job) -> None:
    """A SLURM script: printed when only shown, else where it is and its job id (a job sbatch
    took without printing one may be queued: never offered for submitting again)."""
    import shlex

    from medsynth_kohya import ui

    if job.path is None:
        ui.say(job.text.rstrip("\n"))
    elif job.job_id is not None:
        ui.say(f"Submitted {job.path} as SLURM job {job.job_id}")
    elif job.submitted:
        ui.say(f"Handed {job.path} to sbatch, which succeeded but printed no job id: the job "
               "may well be queued; check with squeue --me")
    else:
        ui.say(f"Wrote {job.path}; submit it with: {shlex.join(['sbatch', str(job.path)])}")


@app.command(epilog=_examples("doctor", "doctor --workdir medsynthx-2023"))
def doctor(
    sd_scripts: SdScriptsOption = None,
    python: PythonOption = None,
    workdir: Annotated[Path, typer.Option(
        help="Folder whose free disk is checked (one not made yet: where it would be made).")
    ] = Path(),
) -> None:
    """Check whether this machine can train: Python, torch and CUDA, GPUs, sd-scripts and its
    packages, xformers, bitsandbytes, accelerate, the Hub token and free disk.

    Exits non-zero when training cannot run; every failing row says how to fix it.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.machine.doctor import diagnose

    with _user_errors():
        report = diagnose(sd_scripts=sd_scripts, python=python, workdir=workdir)
    ui.checks_table(report.checks)
    if not report.ok:
        ui.error("training cannot run here: fix the failing rows above")
        raise typer.Exit(1)


@app.command("install-sd-scripts", epilog=_examples(
    "install-sd-scripts", "install-sd-scripts --pip"))
def install_sd_scripts(
    dir_: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--dir", "-o", help="Folder to clone into; default the per-user folder "
        "(~/.local/share/medsynth-kohya/sd-scripts on Linux), found without options.")] = None,
    pip: Annotated[bool, typer.Option(
        "--pip", help="Also run the pip install line for sd-scripts' requirements.")] = False,
    url: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Repository to clone, or to fetch the release from into a clone at another "
        "commit; default $MEDSYNTH_SD_SCRIPTS_URL, else kohya-ss/sd-scripts on GitHub (the "
        "clone's origin for a fetch).")] = None,
    python: PythonOption = None,
) -> None:
    """Clone kohya-ss/sd-scripts at the pinned release with git and check its commit.

    Prints the `pip install` line for its requirements (`--pip` runs it; install torch for
    your CUDA first). Safe to re-run: a clone already at the pin is left alone, one at another
    commit is moved to it; a non-empty folder that is not an sd-scripts clone is refused.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.sdscripts.install import install

    with _user_errors():
        result = install(dir_, url=url, python=python, run_pip=pip)
    found = (f"found by {result.found_by}" if result.found_by else
             f"not found by default: pass --sd-scripts {result.path} or export "
             f"MEDSYNTH_SD_SCRIPTS={result.path}")
    ui.table("install-sd-scripts", [("folder", str(result.path)), ("commit", result.commit),
                                    ("action", result.action), ("search", found)])
    if not result.pip_ran:
        ui.say("Install its requirements (torch for your CUDA first) with:")
        ui.say(result.pip.shell())


@app.command("fetch-isic", epilog=_examples(
    "fetch-isic --out isic2020", "fetch-isic --out isic2020 --limit 20 --dry-run"))
def fetch_isic(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to download into.")] = Path(
        "isic2020"),
    limit: Annotated[int, typer.Option(help="Download at most this many images (0: all).")] = 0,
    dry_run: Annotated[bool, typer.Option(help="Print the isic-cli command only.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Give up after this many seconds without a new file or byte in OUT.")] = 120.0,
    break_lock: BreakLockOption = False,
) -> None:
    """Download the ISIC 2020 training melanomas with metadata and attribution (isic-cli).

    Runs `isic image download` (install it with `pip install 'medsynth-kohya[fetch]'`); the
    folder it writes is what `medsynth-kohya prepare` reads. The images are CC-BY-NC 4.0:
    keep the attribution.txt it writes with anything you publish.
    """
    from medsynth_kohya import files, ui
    from medsynth_kohya.data.fetch import fetch_isic as run

    with _user_errors():
        result = run(out, limit=limit, dry_run=dry_run, break_lock=break_lock, timeout=timeout,
                     on_wait=ui.note)
    for warning in result.warnings:
        ui.warn(warning)
    if not result.ran:
        ui.say(result.command.shell())
        return
    ui.say(f"Downloaded {files.counted(result.images, 'image')} to {result.out}; "
           f"next: {result.next_step}")


@app.command(epilog=_examples(
    "push runs/t4 --repo-id YOUR_NAME/medsynth-melanoma-lora --dry-run",
    "push medsynthx-2023/run --repo-id YOUR_NAME/medsynth-melanoma-lora "
    "--samples medsynthx-2023/synthetic"))
def push(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR",
        help="Run folder written by `medsynth-kohya train`.")],
    repo_id: Annotated[str, typer.Option(
        "--repo-id", help="Hub repository, namespace/name (your user or an organisation).")],
    private: Annotated[bool, typer.Option(
        "--private/--public", help="Visibility of a repository this creates; an existing one "
        "keeps its own.")] = True,
    license_: Annotated[str, typer.Option(
        "--license", help="Licence id in the card (default CC-BY-NC 4.0, the ISIC 2020 "
        "images' terms: the most restrictive of the Archive's); give your data's own for "
        "other data. The base model's own licence applies as well.")] = "cc-by-nc-4.0",
    all_checkpoints: Annotated[bool, typer.Option(
        help="Also upload the epoch/step saves under checkpoints/.")] = False,
    samples: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder written by `medsynth-kohya sample` (images/, metadata.csv, grid.jpg): "
        "its first 8 images (metadata.csv order) and grid.jpg are published; default the last "
        "training-time samples in RUN/output/sample.")] = None,
    endpoint: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Hub URL; default $HF_ENDPOINT, else https://huggingface.co.")] = None,
    dry_run: Annotated[bool, typer.Option(
        help="List every file with its size, print the card, run the privacy scan and (with a "
        "token) read the repo to list the files the push would delete; send nothing.")] = False,
    show: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--show", metavar="FILE", help="Print one file (e.g. README.md, the model card) exactly "
        "as it would be uploaded (of a LoRA its metadata, of a PNG its text chunks); send "
        "nothing.")] = None,
    evaluation: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--eval", metavar="REPORT", help="An `evaluate` --out folder: its figures go into the "
        "card (model-index), its page without training photos and report.json into evaluation/.")
    ] = None,
    allow_copies: Annotated[bool, typer.Option(
        help="Publish sample images flagged as near-copies of training photos (by `sample "
        "--check-copies` or the --eval report); refused without it.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace files the repo holds in another version than medsynth-kohya "
        "pushed (put there by hand or another tool, or edited on the Hub); refused without "
        "it.")] = False,
    base_model: Annotated[Optional[str], typer.Option(  # noqa: UP045
        metavar="OWNER/NAME", help="Hub id of the local checkpoint the run trained on, for the "
        "card's base_model (it cannot know it from the file).")] = None,
    break_lock: BreakLockOption = False,
) -> None:
    """Publish a run's LoRA to the Hugging Face Hub with a model card, in one commit.

    Uploads the final LoRA, the rendered sd-scripts files and run record (training/), sample
    images (samples/) and a README.md card (base model, trigger, licence, data attribution and
    its sex/age/site spread, settings, usage). The token comes from HF_TOKEN or `hf auth login`
    and is never printed or written. Pushing the same run again makes no new commit.
    Secrets are redacted and local paths hidden; a last scan of every byte refuses the push
    if a token, secret, home folder, user name or local path is left. Each request waits at
    most MEDSYNTH_HUB_TIMEOUT seconds (default 60) for each read or write of its answer.
    """
    from medsynth_kohya import files, ui
    from medsynth_kohya.hub.push import push as run

    if show is not None:
        from medsynth_kohya.hub.contents import show as one_file

        with _user_errors():
            data, finding = one_file(run_dir, repo_id, show, license=license_,
                                     all_checkpoints=all_checkpoints, samples=samples,
                                     evaluation=evaluation, allow_copies=allow_copies,
                                     base=base_model)
        if finding:
            ui.warn(f"{show} would publish {finding}: push refuses it as it is")
        typer.echo(data, nl=False)
        return
    with _user_errors():
        result = run(run_dir, repo_id, private=private, license=license_,
                     all_checkpoints=all_checkpoints, dry_run=dry_run, samples=samples,
                     endpoint=endpoint, break_lock=break_lock, evaluation=evaluation,
                     allow_copies=allow_copies, force=force, base_model=base_model)
    for warning in result.warnings:
        ui.warn(warning)
    total = sum(size for _, size in result.files)
    if result.dry_run:
        ui.table(f"push --dry-run: {result.repo_id} ({files.counted(len(result.files))}, "
                 f"{total} B)",
                 [(path, f"{size} B") for path, size in result.files])
        ui.say(result.card)
        ui.say(f"Privacy scan passed: {files.counted(len(result.files))}, {result.scanned} B "
               "searched; "
               "no token, secret, home folder, user name, patient id or local path.")
        as_user = f" as {result.user}" if result.user else ""
        visibility = "private" if result.private else "public"
        ui.say(f"Would push to {result.url}{as_user} (" + (
            f"an existing {visibility} repo)" if result.exists else f"{visibility} if created)"))
        if result.listed:
            ui.say(f"Would delete from {result.repo_id}: "
                   + (", ".join(result.deleted) if result.deleted else "nothing"))
            if result.replaced and force:
                ui.say(f"Would replace in {result.repo_id}: " + ", ".join(result.replaced))
        return
    commit = (f"{result.commit} (new)" if result.changed
              else f"{result.commit} (unchanged: the Hub already had these files)")
    rows = [("repository", result.repo_id), ("as", result.user or "?"),
            ("files", f"{len(result.files)} ({total} B)"), ("commit", commit)]
    rows += [("removed", path) for path in result.deleted]
    rows += [("replaced", path) for path in result.replaced]
    ui.table(f"push: {result.repo_id}", rows)
    ui.say(result.url)


@app.command(epilog=_examples(
    "sample --lora runs/t4 --n 500 --out synthetic",
    "sample --lora runs/t4 --n 100 --query 'sex == \"female\"' --out women"))
def sample(
    ctx: typer.Context,
    lora: Annotated[str, typer.Option(  # the text as typed: ./runs/x is no Hub id
        metavar="<path>",
        help="A `train` run folder (its final LoRA), a LoRA .safetensors file, or a LoRA "
        "pushed to the Hub: USER/REPO (its top-level LoRA) or USER/REPO:FILE.safetensors.")],
    revision: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Branch, tag or commit of a Hub --lora; default main.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the set.")] = Path(
        "synthetic"),
    n: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Number of images (ids 0..n-1), at most 10,000,000 (ids have 7 digits, and the "
        "plan holds every image's prompt in memory); required, except with --prompts (default: "
        "one per line) or --prompt (default: 1).")
    ] = None,
    like: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Draw sex, age, site and hair from this prepare manifest.csv (or the folder "
        "prepare wrote), in its proportions; default: the run's prepared manifest.")] = None,
    prompt: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="One prompt for every image, instead of --like.")] = None,
    prompts: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="A file of prompts, one per line (# comments), used in turn.")] = None,
    query: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Comparison of the --like columns choosing the rows to draw from, e.g. "
        "`sex == \"female\"`.")] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the set: image i gets its prompt from it and the seed S + i (all 0 to "
        "2**32 - 1).")] = 0,
    width: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Image width, a multiple of 32 from 64 to 4096 (default 1024).")] = None,
    height: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Image height, a multiple of 32 from 64 to 4096 (default 1024).")] = None,
    steps: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Sampling steps (default 28).")] = None,
    scale: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="Guidance scale (default 12).")] = None,
    sampler: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="sdxl_gen_img.py sampler (default euler_a).")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Negative prompt (default: the original run's).")] = None,
    base_model: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="SDXL checkpoint or Hub id; default: the run's base model.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", metavar="KEY=VALUE",
        help="Any other sdxl_gen_img.py option: --set network_mul=0.8 (TOML value; "
        "empty removes an option taken from the run). Repeatable.")] = None,
    num_gpus: Annotated[int, typer.Option(
        "--num-gpus", "--gpus", help="Processes, one GPU each (CUDA_VISIBLE_DEVICES), sharing "
        "the images. --gpus, as train spells it, is the same.")] = 1,
    id_prefix: Annotated[str, typer.Option(help="Prefix of the image ids.")] = "SYN_",
    metadata_style: Annotated[MetadataStyle, typer.Option(
        help="metadata.csv schema: archive (ISIC Archive fields, each row a valid Archive "
        "MetadataRow, image_manipulation=synthetic) or 2020 (the ISIC 2020 challenge CSV's "
        "columns).")] = MetadataStyle.archive,
    sd_scripts: SdScriptsOption = None,
    python: PythonOption = None,
    dry_run: Annotated[bool, typer.Option(
        help="Print the plan and the exact commands; write nothing, run nothing.")
    ] = False,
    force: Annotated[bool, typer.Option(
        help="Write into a non-empty --out that sample did not make.")] = False,
    check_copies: Annotated[bool, typer.Option(
        help="Check the finished set for near-copies of the run's training images (evaluate's "
        "perceptual hash); flags go to OUT/copies.json, and push refuses flagged images.")
    ] = False,
    break_lock: BreakLockOption = False,
    part: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--shard", metavar="K/N", help="Make only part K of N of the set (K from 1), side "
        "by side with the other parts on other machines, into the same --out.")] = None,
    finalize: Annotated[bool, typer.Option(
        help="Generate nothing: write metadata.csv and grid.jpg for the images in --out.")
    ] = False,
    slurm: Annotated[Optional[int], typer.Option(  # noqa: UP045
        metavar="N", help="Write OUT/.medsynth/sample.sbatch, a SLURM array job of N "
        "independent tasks, task K running this command with --shard K/N (train's --slurm is "
        "a flag: one job of --num-machines tasks training one LoRA together).")] = None,
    submit: Annotated[bool, typer.Option(help="With --slurm: submit it with sbatch.")] = False,
    sbatch: SbatchOption = None,
) -> None:
    """Generate a synthetic image set with a trained LoRA through sd-scripts' sdxl_gen_img.py.

    Writes `OUT/images/<id>.png`, `OUT/metadata.csv` (ISIC Archive fields, then prompt, seed
    and generation settings) and `OUT/grid.jpg`. Image i always gets the same prompt and the
    seed S + i; re-running the same command generates only the missing images. A LoRA on the
    Hub comes through huggingface_hub's cache; its base model, trigger and caption template
    come from the run record push uploaded with it.
    """
    from medsynth_kohya import files, ui
    from medsynth_kohya.evaluation import copycheck
    from medsynth_kohya.sampling.machines import MachineShard
    from medsynth_kohya.sampling.sample import SampleOptions, sample_job
    from medsynth_kohya.sampling.sample import sample as run

    if (submit or sbatch) and slurm is None:
        ui.error("--submit and --sbatch are for the --slurm script: add --slurm N")
        raise typer.Exit(2)
    options = SampleOptions(n=n, like=like, prompt=prompt, prompts_file=prompts, query=query,
                            seed=seed, width=width, height=height, steps=steps, scale=scale,
                            sampler=sampler, negative_prompt=negative_prompt,
                            base_model=base_model, overrides=tuple(set_ or ()),
                            num_gpus=num_gpus, id_prefix=id_prefix, revision=revision,
                            metadata_style=metadata_style)
    if slurm is not None:
        _sample_job(ctx, slurm, lambda task: sample_job(
            lora, out, task, slurm, options, sbatch=tuple(sbatch or ()), submit=submit,
            dry_run=dry_run, sd_scripts=sd_scripts, python=python, force=force,
            break_lock=break_lock, check_copies=check_copies))
        return
    shown: set[str] = set()
    with _user_errors(), ui.progress_bar("generating images") as progress:
        result = run(lora, out, options, sd_scripts=sd_scripts, python=python,
                     dry_run=dry_run, force=force, break_lock=break_lock,
                     shard=None if part is None else MachineShard.parse(part),
                     finalize=finalize, on_progress=progress, check_copies=check_copies,
                     on_launch=lambda found: _warn_once(found, shown))
    _warn_once(result.warnings, shown)
    plan = result.plan
    missing = result.wanted - result.present
    machine = result.machine_shard
    rows = [("out", str(result.out)), ("status", result.status),
            ("images", f"{result.present} of {result.wanted} present" + (
                "" if machine is None else f" (shard {machine.k}/{machine.count})") + (
                f", {result.generated} made now" if result.status != "dry-run" else "")),
            ("LoRA", plan.lora_shown),
            ("base model", plan.base_model),
            ("settings", f"{plan.settings.width}x{plan.settings.height}, "
                         f"{files.counted(plan.settings.steps, 'step')}, "
                         f"scale {plan.settings.scale:g}, "
                         f"{plan.settings.sampler}, seeds {plan.seed}..{plan.seed + plan.n - 1}")]
    rows += [(s.label, f"{files.counted(len(s.images), 'image')}: "
              + plan.image_ids(s.images) + ("" if s.returncode is None else f", made {s.made}"))
             for s in result.shards]
    if result.status != "dry-run":
        later = "written when the set is complete"
        rows.append(("metadata", str(result.metadata or later)))
        rows.append(("grid", str(result.grid or (later if result.metadata is None
                                                 else "none (no images yet)"))))
    ui.table(f"sample: {result.out}", rows)
    if result.status == "dry-run":
        if result.shards:
            ui.say(f"Commands ({files.counted(missing, 'image')} to make):")
        for shard in result.shards:
            ui.say(shard.command.shell())
        return
    if result.status != "succeeded":
        for shard in result.shards:
            if shard.failed or shard.interrupted:
                ui.say(f"--- {shard.label}, last lines of {shard.log}:")
                for line in shard.tail[-15:]:
                    ui.say(line)
        rest = "make the rest" if missing else "finish the set (its metadata, grid and checks)"
        ui.error(f"sample {result.status}: {result.message}" + (
            "" if result.status == "incomplete" else "; finished images are kept, re-run the "
            f"same command to {rest}"))
        raise typer.Exit(130 if result.status == "interrupted" else 1)
    ui.say(result.message)
    if result.copies is not None:
        if result.copies.flagged:
            ui.error(f"{result.copies.summary()}; recorded in {result.out / copycheck.NAME}: "
                     "push refuses them unless --allow-copies")
            raise typer.Exit(1)
        ui.say(result.copies.summary())


def _sample_job(ctx: typer.Context, count: int,
                make: Callable[[tuple[str, ...]], SampleJob]) -> None:
    """`sample --slurm N`: `make` the array job running this same command as shards 1..N of
    N, and show it."""
    from medsynth_kohya import ui
    from medsynth_kohya.sdscripts.launch import own_command

    params = ctx.params
    if count < 1 or params["part"] or params["finalize"]:
        ui.error("--slurm N needs N >= 1 and makes the shards itself: leave out --shard and "
                 "--finalize")
        raise typer.Exit(2)
    task = own_command("sample", *_words(ctx, {"slurm", "submit", "sbatch", "dry_run"}))
    with _user_errors():
        made = make(tuple(task))
    for warning in made.warnings:
        ui.warn(warning)
    _show_job(made.job)


def _words(ctx: typer.Context, leave_out: set[str]) -> list[str]:
    """The command's options as given, as command-line words (paths as typed, so a batch
    script run from the same folder reads the same files), except those in `leave_out`."""
    import enum

    words: list[str] = []
    for param in ctx.command.params:
        name, value = param.name or "", ctx.params.get(param.name or "")
        if name in leave_out or value is None or value == [] or value == ():
            continue
        option = param.param_type_name == "option"
        if option and getattr(param, "is_flag", False):
            if value != param.default:
                words.append(param.opts[0] if value else param.secondary_opts[0])
            continue
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            text = str(item.value if isinstance(item, enum.Enum) else item)
            words += [param.opts[0], text] if option else [text]
    return words


@app.command(epilog=_examples(
    "reproduce isic2020 --workdir medsynthx-2023 --set vae=stabilityai/sdxl-vae --dry-run",
    "reproduce isic2020 --workdir medsynthx-2023 --set vae=stabilityai/sdxl-vae"))
def reproduce(
    source: Annotated[Optional[Path], typer.Argument(  # noqa: UP045 (Typer needs Optional)
        metavar="SOURCE",
        help="ISIC download, as prepare reads it (ISIC 2020's is the original run's); "
        "optional with --metadata.")] = None,
    workdir: Annotated[Path, typer.Option(
        "--workdir", "-o", help="Folder for every stage's output.")] = Path("medsynthx-2023"),
    push: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--push", help="Also publish to this Hub repo (namespace/name).")] = None,
    n: Annotated[int, typer.Option(
        help="Synthetic images to generate, at most 10,000,000 (as sample).")] = 100,
    preset: Annotated[str, typer.Option(
        help="Training preset (see train); default the original run's.")] = "medsynthx-2023",
    set_: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", metavar="KEY=VALUE",
        help="Override an sd-scripts option of the training (see train).")] = None,
    metadata: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Metadata CSV, when it is not found under SOURCE (as prepare).")] = None,
    images: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder of images, when they are not beside the metadata (as prepare).")] = None,
    column: ColumnOption = None,
    sd_scripts: SdScriptsOption = None,
    python: PythonOption = None,
    dry_run: Annotated[bool, typer.Option(
        help="Write nothing; print the stages, files, commands, steps and a time estimate.")
    ] = False,
    break_lock: BreakLockOption = False,
    force_push: Annotated[bool, typer.Option(
        "--force-push", help="Let the push replace files of the Hub repo edited there or put "
        "there by hand (as push --force; the repo's history keeps the old versions).")] = False,
) -> None:
    """Re-run the original 2023 experiment: prepare, train (medsynthx-2023), sample, push.

    `--preset` trains with another preset (e.g. t4-16gb) through the same stages.

    Each stage records a digest of its inputs in WORKDIR/reproduce.json: a re-run skips the
    stages whose inputs have not changed and resumes an interrupted training.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.data.sources import parse_columns
    from medsynth_kohya.pipeline.reproduce import PREPARE_COUNT, SAMPLE_COUNT, ReproduceResult
    from medsynth_kohya.pipeline.reproduce import reproduce as run

    shown: list[str] = []

    def show(result: ReproduceResult, title: str) -> None:
        """Print the warnings not shown yet and the stages' table: the plan, or what each
        stage did once they ran."""
        for warning in result.warnings:
            if warning not in shown:
                ui.warn(warning)
                shown.append(warning)
        rows = [(stage.name, stage.outcome or f"{stage.action}: {stage.detail}".rstrip(": "))
                for stage in result.stages]
        if result.status == "planned":
            rows += [("training steps", str(result.expected_steps)), ("time", result.estimate)]
        ui.table(f"{title}: {result.workdir}", rows)

    with (_user_errors(), ui.training_bar() as progress,
          ui.progress_bar(PREPARE_COUNT) as checking, ui.progress_bar(SAMPLE_COUNT) as making):
        bars = {PREPARE_COUNT: checking, SAMPLE_COUNT: making}
        result = run(source, workdir, push_repo=push, n=n, preset_name=preset,
                     metadata=metadata, images=images,
                     overrides=set_ or [], columns=parse_columns(column or []),
                     sd_scripts=sd_scripts, python=python, dry_run=dry_run,
                     break_lock=break_lock, force_push=force_push, on_progress=progress,
                     on_plan=None if dry_run else lambda plan: show(plan, "reproduce plan"),
                     on_count=lambda stage, done, total: bars[stage](done, total))
    show(result, "reproduce")
    if result.dry_run:
        for line in result.listing():
            ui.say(line)
        return
    ui.say(f"LoRA: {result.lora}" + (f"; published at {result.url}" if result.url else ""))



@app.command(epilog=_examples(
    "evaluate --real ~/isic2020 --synthetic synthetic --out report",
    "evaluate --lora medsynthx-2023/run --synthetic medsynthx-2023/synthetic --out report",
    "evaluate --real ~/isic2020 --synthetic synthetic --out report --classifier finetune "
    "--dry-run"))
def evaluate(
    synthetic: Annotated[Path, typer.Option(
        help="Synthetic set: the --out folder of `sample` (metadata.csv + images/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: report.html, "
                                      "report-public.html (without training photos) and "
                                      "report.json.")],
    real: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Real data: an ISIC download (melanomas and the rest) or a prepared folder "
        "(its training images; the classifier reads the source it was prepared from).")
    ] = None,
    lora: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Training run: compare with the prepared data it was trained on (instead of "
        "--real).")] = None,
    mix: Annotated[str, typer.Option(
        help="Synthetic : real melanoma ratios the classifier is trained at, comma-separated "
        "(0, real photos only, is always scored as the baseline).")
    ] = "0,0.5,1,2",
    repeats: Annotated[int, typer.Option(help="Patient splits the classifier is scored on.")
                       ] = 3,
    classifier: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Classifier of the report's section \"4. Downstream utility\" (a melanoma "
        "classifier trained on real photos plus synthetic ones): `logistic` (on frozen "
        "features, the default), `finetune` (the feature network fine-tuned; GPU when "
        "present) or `none`.")] = None,
    no_classifier: Annotated[bool, typer.Option(
        "--no-classifier", help="Same as --classifier none.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs of each fine-tuning (--classifier "
                                        "finetune).")] = 5,
    threshold: Annotated[float, typer.Option(
        help="Hash distance (fraction of 255 bits, 0 to below 0.5) at or below which an "
        "image is a near-copy."
    )] = 0.25,
    deep_threshold: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="Also flag images whose deep-feature cosine similarity to a training photo is at "
        "least this (above 0, at most 1).")] = None,
    features: Annotated[str, typer.Option(
        help="Feature network: `inception` (FID's, downloaded on first use) or "
        "MODULE:FACTORY returning a torch module.")] = "inception",
    batch_size: Annotated[int, typer.Option(help="Images per network batch.")] = 32,
    seed: Annotated[int, typer.Option(
        help="Seed of splits, subsets and bootstraps, 0 to 2**32 - 1.")] = 0,
    force: Annotated[bool, typer.Option(
        help="Replace an earlier report in --out; with --lora, also compare with its prepared "
        "folder when it was prepared again since the run trained on it.")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="Print what would be read and computed (image counts, sections, classifier fits "
        "and the device) without decoding an image or writing the report.")] = False,
    break_lock: BreakLockOption = False,
) -> None:
    """Evaluate a synthetic set: near-copies, prompt adherence, FID/KID, classifier utility.

    Writes OUT/report.html (one self-contained page), OUT/report-public.html (the same without
    the training photos: what `push --eval` publishes) and OUT/report.json (every figure).
    Near-copies and adherence need nothing more; fidelity and the classifier need the `eval`
    extra (pip install 'medsynth-kohya[eval]') and say so when it is missing. Exits 1 when a
    synthetic image is a near-copy of a training photo.
    """
    from medsynth_kohya import files, ui
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.evaluation.evaluate import LOGISTIC, NO_CLASSIFIER, EvaluateOptions, plan
    from medsynth_kohya.evaluation.evaluate import evaluate as run

    with _user_errors("interrupted; no report was written: run the command again to start the "
                      "evaluation over"):
        try:
            mixes = tuple(float(part) for part in mix.split(",") if part.strip())
        except ValueError:
            raise UserError(f"--mix {mix!r}: give ratios like 0,0.5,1,2") from None
        if no_classifier and classifier not in (None, NO_CLASSIFIER):
            raise UserError(f"--no-classifier and --classifier {classifier} contradict each "
                            "other: give one of them")
        options = EvaluateOptions(mixes=mixes, repeats=repeats,
                                  classifier=NO_CLASSIFIER if no_classifier
                                  else LOGISTIC if classifier is None else classifier,
                                  epochs=epochs, threshold=threshold,
                                  deep_threshold=deep_threshold, features=features,
                                  batch_size=batch_size, seed=seed, force=force)
        if dry_run:
            planned = plan(real, synthetic, out, options, lora=lora, break_lock=break_lock)
            for warning in planned.warnings:
                ui.warn(warning)
            ui.table(f"evaluate --dry-run: {planned.out} (nothing written)", planned.rows)
            return
        with ui.stage_bars() as progress:
            result = run(real, synthetic, out, options, lora=lora, break_lock=break_lock,
                         on_progress=progress)
    if result.skipped:
        ui.warn(f"{files.counted(len(result.skipped))} left out (listed in the report), "
                f"first: {result.skipped[0]['set']} {result.skipped[0]['id']}: "
                f"{result.skipped[0]['reason']}")
    for warning in result.warnings:
        ui.warn(warning)
    ui.table(f"evaluate: {result.out}", [(row["check"], f"{row['status']}: {row['detail']}")
                                         for row in result.verdict])
    ui.say(f"report: {result.page} (keep it private: it shows training photos)")
    ui.say(f"what `push --eval` publishes, without them: {result.public_page}")
    if result.flagged:
        flagged = len(result.flagged)
        ui.error(f"{files.counted(flagged, 'synthetic image')} "
                 f"{'is a near-copy' if flagged == 1 else 'are near-copies'} of training photos; "
                 "see the report before publishing them")
        raise typer.Exit(1)
