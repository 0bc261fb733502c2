"""The #SBATCH lines of `train --slurm` and `sample --slurm` as sbatch reads them back: a path
or name with spaces, quotes, a backslash or # stays one whole value."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine import slurm

from .conftest import invoke
from .fakes import FakeSd


def _sbatch_words(line: str) -> list[str]:
    """The arguments sbatch takes from one #SBATCH line, read as its `_get_argument`
    (src/sbatch/opt.c) reads them: split at unquoted whitespace, ' and " group and are
    removed, a backslash takes the next character as it is, an unquoted # ends the line."""
    rest, at = line.removeprefix("#SBATCH"), 0
    words: list[str] = []
    while True:
        while at < len(rest) and rest[at].isspace():
            at += 1
        if at == len(rest):
            return words
        word, quote, escaped = "", "", False
        while at < len(rest) and (quote or not rest[at].isspace()):
            char, at = rest[at], at + 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    continue
            elif char in "\"'":
                quote = char
                continue
            elif char == "#":
                return [*words, word] if word else words
            word += char
        assert not quote, f"sbatch stops at an unmatched {quote} in {line!r}"
        words.append(word)


def _directives(text: str) -> dict[str, str]:
    """Each #SBATCH line of a script as sbatch reads it: one --key=value argument each."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            [word] = _sbatch_words(line)
            key, _, value = word.removeprefix("--").partition("=")
            found[key] = value
    return found


def test_values_sbatch_would_split_or_cut_are_quoted_as_it_reads_them() -> None:
    tricky = {"job-name": "medsynth-train-a b", "output": "/x/my runs/a b/slurm-%j.out",
              "chdir": "/x/it's \"mine\"", "comment": "run #2 \\ tab\there",
              "partition": "gpu"}
    text = slurm.script(tricky, {"time": "02:00:00"}, ["true"])
    assert _directives(text) == {**tricky, "time": "02:00:00"}
    assert "#SBATCH --partition=gpu\n" in text  # a plain value is written as it is
    with pytest.raises(UserError, match="cannot hold a line break"):
        slurm.script({"output": "/x/a\nb/slurm-%j.out"}, {}, ["true"])


def _scripts(runner: CliRunner, prepared: Path, fake_sd: FakeSd, run: Path, out: Path,
             *extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """The #SBATCH directives of `train --slurm` into `run` and `sample --slurm 2` of it into
    `out`, both dry runs."""
    found = []
    for words in (("train", prepared, "--preset", "cpu-smoke", "--run-dir", run, "--sd-scripts",
                   fake_sd.sd_scripts, "--python", sys.executable, "--num-machines", "2",
                   "--slurm", *extra),
                  ("sample", "--lora", run, "--n", 4, "--out", out, "--slurm", 2)):
        code, stdout, stderr = invoke(runner, *words, "--dry-run")
        assert code == 0, stderr
        found.append(_directives(stdout[stdout.index("#!/bin/bash"):]))
    return found[0], found[1]


def test_train_and_sample_scripts_for_folders_with_spaces(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "my runs" / "a b"
    out = tmp_path / "my sets" / "set \"one\""
    trained, sampled = _scripts(runner, prepared, fake_sd, run, out, "--sbatch",
                                "comment=Alice's run #1")
    assert trained["job-name"] == "medsynth-train-a b"
    assert trained["output"] == str(run.resolve() / "slurm-%j.out")
    assert trained["comment"] == "Alice's run #1"
    assert sampled["job-name"] == "medsynth-sample-set \"one\""
    assert sampled["output"] == str(out.resolve() / ".medsynth" / "slurm" / "%A_%a.out")
    code, _, stderr = invoke(runner, "sample", "--lora", run, "--n", 4, "--out",
                             tmp_path / "two\nlines", "--slurm", 2, "--dry-run")
    assert code == 1 and "Traceback" not in stderr and "cannot hold a line break" in stderr


def _sbatch_file_name(pattern: str, job: int, task: int) -> str:
    """The file sbatch writes for an --output `pattern` (`%j`/`%A` job, `%a` task, `%%` a %)."""
    return re.sub(r"%([%jAa])", lambda m: {"%": "%", "j": str(job), "A": str(job),
                                            "a": str(task)}[m.group(1)], pattern)


def test_a_percent_in_a_folder_name_is_not_read_as_a_slurm_pattern(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run, out = tmp_path / "100%j done" / "run", tmp_path / "50%a" / "set"
    trained, sampled = _scripts(runner, prepared, fake_sd, run, out)
    assert _sbatch_file_name(trained["output"], 7, 0) == str(run.resolve() / "slurm-7.out")
    assert _sbatch_file_name(sampled["output"], 9, 2) == str(
        out.resolve() / ".medsynth" / "slurm" / "9_2.out")


def test_only_the_tool_s_own_variables_expand_in_a_task_a_dollar_in_a_value_stays(
        tmp_path: Path) -> None:
    """A prompt `$HOME` or an --out `set$RUN` reach each task as typed (with `set -u` the
    second killed every task); $SLURM_ARRAY_TASK_ID and $SLURM_NODEID expand per task."""
    import os
    import subprocess

    from medsynth_kohya.sampling.machines import array_script
    from medsynth_kohya.training.nodes import train_script

    texts = [array_script(["sample", "--prompt", "$HOME", "--out", "set$RUN"], 3, 1,
                          tmp_path / "out", {}),
             train_script(tmp_path / "prep$X", "cpu-smoke", ["metadata_title=$USER"],
                          tmp_path / "run", count=2, gpus=1, port=29500, sd_scripts=None,
                          python=None, resume=False, force=False, sbatch={})]
    said = []
    for text in texts:
        task = re.search(r"^srun .*bash -c (.*)$", text, re.MULTILINE)
        assert task is not None, text
        script = (f"set -u; export MEDSYNTH_MAIN_IP=10.0.0.1; "
                  f"exec() {{ printf '%s\\n' \"$@\"; }}; eval {task.group(1)}")
        said.append(subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                   check=True, env={**os.environ, "SLURM_ARRAY_TASK_ID": "2",
                                                    "SLURM_NODEID": "1"}).stdout.splitlines())
    sample_words, train_words = said
    assert sample_words[:5] == ["sample", "--prompt", "$HOME", "--out", "set$RUN"]
    assert sample_words[-2:] == ["--shard", "2/3"]
    assert str(tmp_path / "prep$X") in train_words and "metadata_title=$USER" in train_words
    assert train_words[train_words.index("--machine-rank") + 1] == "1"
    assert train_words[train_words.index("--main-process-ip") + 1] == "10.0.0.1"


def test_the_submit_hint_pastes_as_shown_for_a_folder_with_spaces(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    import shlex

    run = tmp_path / "my runs" / "a b"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable, "--num-machines", "2", "--slurm")
    assert code == 0, stdout + stderr
    hint = " ".join(stdout.split()).split("submit it with: ")[1]
    assert shlex.split(hint) == ["sbatch", str(run / "train.sbatch")]


@pytest.mark.parametrize(("settings", "extra"), [
    ({"array": "1-2", "ntasks": "1"}, {"array": "1-5"}),
    ({"nodes": "2", "ntasks-per-node": "1"}, {"nodes": "3"}),
    ({"nodes": "2", "ntasks-per-node": "1"}, {"ntasks-per-node": "4"})])
def test_sbatch_may_not_change_the_job_s_shape(settings: dict[str, str],
                                               extra: dict[str, str]) -> None:
    """--slurm 2 with --sbatch array=1-5 ran tasks 3 to 5 as the invalid --shard 3/2."""
    [key] = extra
    with pytest.raises(UserError, match=rf"^--sbatch {key}=… would change the job's shape"):
        slurm.script(settings, extra, ["true"])
    assert "#SBATCH --time=01:00:00" in slurm.script(settings, {"time": "01:00:00"}, ["true"])


@pytest.mark.parametrize(("key", "ours", "given"), [
    ("gpus-per-node", "8", "4"), ("gpus", "4", "a100:2"), ("gpus", "1", "gpu:a100:2")])
def test_sbatch_may_choose_the_gpu_type_but_not_another_count(key: str, ours: str,
                                                              given: str) -> None:
    """Each task runs --gpus G (train) or --num-gpus G (sample): a job given another count
    failed or idled GPUs only once it ran, after its wait in the queue."""
    with pytest.raises(UserError, match=rf"^--sbatch {key}={given} asks for other GPUs than "
                                        rf"the {ours} each task is written for"):
        slurm.script({key: ours}, {key: given}, ["true"])
    text = slurm.script({key: ours}, {key: f"a100:{ours}"}, ["true"])
    assert [line for line in text.splitlines() if line.startswith(f"#SBATCH --{key}=")] == [
        f"#SBATCH --{key}=a100:{ours}"]
