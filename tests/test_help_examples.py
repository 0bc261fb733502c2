"""Every command's --help ends with example command lines, and the CLI parses each of them:
an example cannot name an option the command no longer has."""

from __future__ import annotations

from typer.testing import CliRunner

from .command_lines import PROGRAM, commands, parse
from .conftest import invoke


def test_every_command_s_help_shows_examples_the_command_parses(runner: CliRunner) -> None:
    for path, _ in commands():
        code, stdout, _ = invoke(runner, *path, "--help")
        assert code == 0
        head = " ".join((PROGRAM, *path))
        examples = [line.strip() for line in stdout.splitlines()
                    if line.strip() == head or line.strip().startswith(head + " ")]
        assert "Examples:" in stdout and examples, f"{head} --help shows no example"
        for line in examples:
            assert parse(line) == path, line
