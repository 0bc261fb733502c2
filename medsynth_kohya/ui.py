"""Terminal presentation shared by the commands: progress bars, tables, messages."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from medsynth_kohya.data.prepare import Progress
    from medsynth_kohya.machine.doctor import Check
    from medsynth_kohya.sdscripts.launch import StepProgress


def console(stderr: bool = False) -> Console:
    """A rich console; tables go to stdout, messages and progress to stderr."""
    from rich.console import Console

    _tolerant(sys.stderr if stderr else sys.stdout)
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _tolerant(stream: TextIO) -> None:
    """Make `stream` write a character its encoding lacks as an escape (`\\xfc`), not fail: a
    terminal or pipe in ASCII or Latin-1 must not stop a command at its summary of a path
    named `ü`."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="backslashreplace")


def _counting_bar() -> RichProgress:
    """A rich progress display on stderr: description, bar, done/total, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    return Bar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), console=console(stderr=True))


def _stop(bar: RichProgress) -> None:
    """End a bar's display, if it was ever shown: rich's stop prints a line break off a
    terminal each time it is called, which left blank lines in logs and piped output."""
    if bar.live.is_started:
        bar.stop()


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A rich progress bar on stderr, driven through a (done, total) callback.

    The bar appears on the first update, so a command that fails before its long work
    prints only its one-line error.
    """
    bar = _counting_bar()
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        if not bar.live.is_started and done < total:
            bar.start()
        bar.update(task, completed=done, total=total)
        if done >= total:
            _stop(bar)  # one live display at a time: the next stage may start its own

    try:
        yield update
    finally:
        _stop(bar)


@contextmanager
def stage_bars() -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr, one per named stage, driven by (stage, done, total)."""
    bar = _counting_bar()
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        _stop(bar)


@contextmanager
def training_bar() -> Iterator[Callable[[StepProgress], None]]:
    """A progress bar for sd-scripts' optimizer steps: step, loss, s/step and ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar("training", BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
              TimeElapsedColumn(), console=console(stderr=True))
    task = bar.add_task("training", total=None, info="")

    def update(progress: StepProgress) -> None:
        if not bar.live.is_started:
            bar.start()
        info = []
        if progress.loss is not None:
            info.append(f"loss {progress.loss:.4f}")
        if progress.seconds_per_step is not None:
            info.append(f"{progress.seconds_per_step:.2f} s/step")
        if progress.eta_seconds is not None:
            minutes, seconds = divmod(int(progress.eta_seconds), 60)
            info.append(f"ETA {minutes}:{seconds:02d}")
        bar.update(task, completed=progress.step, total=progress.total, info=", ".join(info))

    try:
        yield update
    finally:
        _stop(bar)


def table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """Print a two-column summary table to stdout (cells are plain text, never markup). A value
    too long for its line (a path) is folded onto the next, never cut short with an ellipsis."""
    from rich.markup import escape
    from rich.table import Table

    grid = Table(title=escape(title), show_header=False, title_justify="left")
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(escape(label), escape(value))
    console().print(grid)


def checks_table(checks: Sequence[Check]) -> None:
    """The doctor's table: one row per check, coloured by status, with the fix."""
    from rich.markup import escape
    from rich.table import Column, Table

    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    grid = Table("check", "status", Column("detail", overflow="fold"),
                 Column("fix", overflow="fold"), title="medsynth-kohya doctor",
                 title_justify="left")
    for check in checks:
        grid.add_row(check.name, f"[{colour[check.status]}]{check.status}[/]",
                     escape(check.detail), escape(check.fix))
    console().print(grid)


def warn(message: str) -> None:
    """A warning line on stderr."""
    from rich.markup import escape

    console(stderr=True).print(f"[yellow]Warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    """An error line on stderr: the one line a user sees for a UserError."""
    from rich.markup import escape

    console(stderr=True).print(f"[red]Error:[/red] {escape(message)}")


def note(message: str) -> None:
    """A plain status line on stderr (what a long wait is waiting for)."""
    console(stderr=True).print(message, markup=False)


def say(message: str) -> None:
    """A plain line on stdout."""
    console().print(message, markup=False)
