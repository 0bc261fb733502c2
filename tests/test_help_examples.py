"""Every command's --help ends with example command lines, and the CLI parses each of them:
an example cannot name an option the command no longer has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .command_lines import PROGRAM, commands, context, parse
from .conftest import REPO, invoke


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


def test_every_output_folder_option_takes_o(runner: CliRunner) -> None:
    """-o names the folder a command writes, in every command that writes one."""
    outputs = {path: param for path, command in commands() for param in command.params
               if param.name in ("out", "workdir", "run_dir", "dir_") and path != ("doctor",)
               and param.param_type_name == "option"}
    assert {path[0] for path in outputs} >= {"prepare", "evaluate", "sample", "train",
                                             "reproduce", "install-sd-scripts"}
    for path, param in outputs.items():
        assert "-o" in param.opts, f"{' '.join(path)} {param.opts[0]} has no -o"
        code, stdout, _ = invoke(runner, *path, "--help")
        assert code == 0 and re.search(rf"-o, {param.opts[0]}\b|{param.opts[0]}, -o\b", stdout)


@pytest.mark.parametrize(("line", "name"), [
    ("medsynth-kohya train prepared --num-gpus 2", "gpus"),
    ("medsynth-kohya train prepared --gpus 2", "gpus"),
    ("medsynth-kohya sample --lora runs/t4 --gpus 2", "num_gpus"),
    ("medsynth-kohya sample --lora runs/t4 --num-gpus 2", "num_gpus"),
])
def test_train_and_sample_take_both_spellings_of_the_gpu_count(line: str, name: str) -> None:
    assert context(line).params[name] == 2


@pytest.mark.parametrize(("command", "heading"), [
    ("train", "## Train the LoRA"), ("sample", "## Generate a synthetic set")])
def test_readme_names_both_spellings_of_the_gpu_count(command: str, heading: str) -> None:
    """Each section says the GPU count takes either spelling, as the command's --help does."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"\n{heading}", 1)[1].split("\n## ", 1)[0]
    (spellings,) = [param.opts for param in dict(commands())[(command,)].params
                    if param.name in ("gpus", "num_gpus")]
    assert sorted(spellings) == ["--gpus", "--num-gpus"]
    for spelling in spellings:
        assert f"`{spelling}" in section, f"README's {command} section never names {spelling}"


def test_train_and_sample_helps_say_how_their_slurm_options_differ(runner: CliRunner) -> None:
    """train's --slurm is a flag (one job whose machines train one LoRA), sample's takes N (an
    array of N independent parts): each --help says what its own does and names the other's."""
    said = {}
    for command in ("train", "sample"):
        code, stdout, _ = invoke(runner, command, "--help")
        assert code == 0
        said[command] = " ".join(stdout.replace("│", " ").split())
    assert "--no-slurm A flag: check the run here and write RUN/train.sbatch" in said["train"]
    assert "(sample's --slurm N instead splits a set into N independent tasks)" in said["train"]
    assert "array job of N independent tasks, task K running this command" in said["sample"]
    assert ("(train's --slurm is a flag: one job of --num-machines tasks training one LoRA "
            "together)") in said["sample"]


def test_evaluate_o_is_its_report_folder() -> None:
    assert context("medsynth-kohya evaluate --synthetic s -o report").params["out"] == Path(
        "report")
