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


def test_the_top_level_help_lists_commands_in_pipeline_order_and_starts_with_reproduce(
        runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "--help")
    assert code == 0
    listed = [line.split()[0] for line in stdout.split("Commands:", 1)[1].splitlines()
              if line.startswith("  ") and line.strip()]
    assert sorted(listed) == sorted(" ".join(path) for path, _ in commands())
    pipeline = ["doctor", "fetch-isic", "prepare", "train", "sample", "evaluate", "push"]
    assert [name for name in listed if name in pipeline] == pipeline
    start = " ".join(stdout.split("Start with", 1)[1].split("Options:", 1)[0].split())
    assert "`medsynth-kohya demo`" in start and "`medsynth-kohya reproduce " in start


def test_evaluate_s_classifier_help_names_the_report_section(runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "evaluate", "--help")
    assert code == 0
    assert "4. Downstream utility" in " ".join(stdout.split())
