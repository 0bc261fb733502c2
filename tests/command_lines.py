"""Command lines written in the docs (help examples, the notebook) parsed by the CLI itself,
so that an option renamed or removed fails a test instead of a user."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import typer

from medsynth_kohya.cli import app

PROGRAM = "medsynth-kohya"


def commands(group: Any = None, path: tuple[str, ...] = (),
             ) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command the app registers, subcommands of groups included, with its words
    (Typer's own click commands: a group is one with `commands`)."""
    root: Any = group or typer.main.get_command(app)
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def context(line: str) -> Any:
    """Parse a `medsynth-kohya …` line (a trailing `# comment` dropped) as the CLI would,
    without running it; returns the command's click context (`.params`, `.command_path`).
    Raises click's error for an unknown command or option, a missing argument or a value of
    the wrong type (Typer's click UsageError), or AssertionError for no command at all."""
    words = shlex.split(line, comments=True)
    assert words[:1] == [PROGRAM], line
    known = dict(commands())
    for size in range(len(words) - 1, 0, -1):
        path = tuple(words[1:1 + size])
        if path in known:
            return known[path].make_context(" ".join((PROGRAM, *path)), words[1 + size:])
    raise AssertionError(f"no such command in {line!r}")


def parse(line: str) -> tuple[str, ...]:
    """The command words of a `medsynth-kohya …` line, once `context` has parsed it."""
    return tuple(context(line).command_path.split()[1:])
