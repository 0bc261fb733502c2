"""The `medsynth-kohya` command line: parses options and hands them to the library.

Each command calls one plain function and prints its result; heavy modules are imported
inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth_kohya import __version__
from medsynth_kohya.hair import HairMode

app = typer.Typer(
    name="medsynth-kohya",
    help="ISIC dermoscopy data to an SDXL melanoma LoRA and a synthetic image set, "
    "through kohya-ss sd-scripts.\n\nStart with `medsynth-kohya demo`, then "
    "`medsynth-kohya prepare SOURCE --out DATA` on your ISIC download.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
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
def _user_errors() -> Iterator[None]:
    """Turn a UserError into one red line and exit code 1; Ctrl-C into exit code 130."""
    from medsynth_kohya import ui
    from medsynth_kohya.errors import UserError

    try:
        yield
    except UserError as exc:
        ui.error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        ui.error("interrupted; re-run the same command to continue where it stopped")
        raise typer.Exit(130) from None


@app.command()
def prepare(
    source: Annotated[Optional[Path], typer.Argument(  # noqa: UP045 (Typer needs Optional)
        help="ISIC download: a folder holding train.csv / ISIC_2020_Training_GroundTruth*.csv "
        "(ISIC 2020) or metadata.csv (ISIC Archive), or the CSV itself.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the layout to.")] = Path(
        "prepared"),
    metadata: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Metadata CSV, when it is not found under SOURCE.")] = None,
    images: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Folder of images, when they are not in train/, jpeg/train/ or beside the CSV.")
    ] = None,
    query: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="pandas expression over the metadata columns selecting the rows, instead of "
        "melanomas, e.g. `diagnosis == \"nevus\"`.")] = None,
    class_name: Annotated[str, typer.Option(help="Class folder name: img/<R>_<class>.")] = (
        "melanoma"),
    trigger: Annotated[str, typer.Option(help="Trigger token written into every caption.")] = (
        "me1anoma"),
    caption_template: Annotated[str, typer.Option(
        help="Caption with {sex} {site} {age} {trigger} {hair}; a missing value drops its "
        "clause; `, hairy` is appended when {hair} is not used.")] = (
        "photo of {sex} skin, {trigger} on {site}, at age {age}"),
    hair: Annotated[HairMode, typer.Option(
        help="auto: resolution-independent detector; seed: the original 2023 heuristic "
        "(exact reproduction); off: no hair tag.")] = HairMode.auto,
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
    resolution: Annotated[int, typer.Option(help="Training resolution (multiple of 64).")] = 1024,
    workers: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Processes for image checks; default all cores.")] = None,
    force: Annotated[bool, typer.Option(
        help="Write into a non-empty --out that prepare did not make.")] = False,
) -> None:
    """Build kohya's training layout from ISIC metadata and images.

    Writes `OUT/img/<R>_<class>/<id>.jpg` (hard links) with `<id>.txt` captions,
    `OUT/val/1_<class>/` for `--val-frac`, `OUT/manifest.csv`, `OUT/skipped.csv` (bad or
    missing files, with the reason) and `OUT/dataset.toml` for sd-scripts' `--dataset_config`.
    A re-run on the same OUT only re-checks changed images.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.prepare import PrepareOptions, summary
    from medsynth_kohya.prepare import prepare as run

    options = PrepareOptions(query=query, class_name=class_name, trigger=trigger,
                             caption_template=caption_template, hair=hair, repeats=repeats,
                             target_steps=target_steps, epochs=epochs, batch_size=batch_size,
                             val_frac=val_frac, seed=seed, resolution=resolution)
    with _user_errors(), ui.progress_bar("checking images") as progress:
        result = run(source, out, metadata=metadata, images=images, options=options,
                     workers=workers, force=force, on_progress=progress)
    for warning in result.warnings:
        ui.warn(warning)
    if result.repeats.formula:
        ui.say(result.repeats.formula)
    ui.table(f"prepare: {result.out}", summary(result))
    ui.say(f"Wrote {result.train_dir}, {result.out / 'manifest.csv'}, "
           f"{result.out / 'skipped.csv'} and {result.dataset_config}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo run.")] = Path(
        "medsynth-demo"),
    n: Annotated[int, typer.Option(help="Number of synthetic photos to generate.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
) -> None:
    """Run the pipeline on built-in synthetic ISIC-like data (no download, no GPU).

    Generates `OUT/source` (photos and ISIC 2020 metadata, all marked synthetic) and
    prepares it into `OUT/prepared`.
    """
    from medsynth_kohya import ui
    from medsynth_kohya.demo import run_demo
    from medsynth_kohya.prepare import summary

    if n < 1:
        ui.error("--n must be at least 1")
        raise typer.Exit(1)
    with _user_errors(), ui.progress_bar("checking images") as progress:
        result = run_demo(out, n=n, seed=seed, on_progress=progress)
    ui.say(f"Generated {len(result.source.frame)} synthetic photos in {result.source.root}")
    ui.table(f"prepare: {result.prepared.out}", summary(result.prepared))
    ui.say(f"Training layout ready: {result.prepared.train_dir}")


def main() -> None:
    """Console-script entry point."""
    app()
