"""The Python that runs sd-scripts: a relative `--python` is the one checked and the one
launched (the launch runs in sd-scripts' folder), and a launch that cannot start leaves a run
the same command can go on from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.pipeline.reproduce import reproduce
from medsynth_kohya.sdscripts import checkout, launch
from medsynth_kohya.training.train import TrainResult, train

from .conftest import invoke, this_python_at
from .fake_gen import FakeGen, make_original_gen
from .fakes import FakeSd


def _venv(folder: Path) -> Path:
    """folder/venv/bin/python, running this Python."""
    return this_python_at(folder / "venv" / "bin" / "python")


def test_a_python_path_is_made_absolute_from_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(checkout.ENV_PYTHON, raising=False)
    assert checkout.python("venv/bin/python") == str(tmp_path / "venv" / "bin" / "python")
    assert checkout.python("./py") == str(tmp_path / "py")
    assert checkout.python("python3") == "python3"  # a command name: looked up on PATH
    assert checkout.python("/opt/py/bin/python") == "/opt/py/bin/python"
    assert checkout.python("~/py") == str(Path.home() / "py")
    monkeypatch.setenv(checkout.ENV_PYTHON, "env/bin/python")
    assert checkout.python() == str(tmp_path / "env" / "bin" / "python")


def test_a_relative_python_is_the_one_launched(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _venv(work)
    other = fake_sd.sd_scripts / "venv" / "bin" / "python"  # sd-scripts' own, never checked
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\necho 'the wrong python' >&2\nexit 7\n", encoding="utf-8")
    other.chmod(0o755)
    monkeypatch.chdir(work)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--sd-scripts",
                                  fake_sd.sd_scripts, "--python", "venv/bin/python")
    assert code == 0, stdout + stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded"
    assert record["command"][0] == str(work / "venv" / "bin" / "python")


def test_a_launch_that_cannot_start_is_a_failed_run_that_can_start_over(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    python = _venv(tmp_path)
    run = tmp_path / "run"

    def python_gone(_: TrainResult) -> None:  # checked, then removed before the launch
        python.unlink()

    result = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                   python=str(python), on_launch=python_gone)
    assert result.status == "failed" and result.message.startswith(f"cannot start {python}")
    assert "--force" in result.advice
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "failed" and record["end"] and "cannot start" in record["message"]
    this_python_at(python)
    again = ["train", prepared, "--preset", "cpu-smoke", "--run-dir", run, "--sd-scripts",
             fake_sd.sd_scripts, "--python", python]
    code, _, stderr = invoke(runner, *again)
    assert code == 1 and "already holds a failed run" in stderr and "--force" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, stdout, stderr = invoke(runner, *again, "--force")
    assert code == 0, stdout + stderr
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["status"] == "succeeded"


def test_the_cli_says_a_launch_could_not_start(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    python = _venv(tmp_path)
    started = launch.run

    def gone_first(*args: Any, **kwargs: Any) -> launch.RunOutcome:
        python.unlink()
        return started(*args, **kwargs)

    monkeypatch.setattr(launch, "run", gone_first)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--sd-scripts",
                                  fake_sd.sd_scripts, "--python", python)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert f"training failed: cannot start {python}" in " ".join(stderr.split())


def test_reproduce_trains_again_after_a_launch_that_could_not_start(
        isic2020: SyntheticSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_original_gen(tmp_path, monkeypatch)
    python = _venv(tmp_path)
    started, calls = launch.run, []

    def gone_once(*args: Any, **kwargs: Any) -> launch.RunOutcome:
        calls.append(1)
        if len(calls) == 1:
            python.unlink()
        return started(*args, **kwargs)

    monkeypatch.setattr(launch, "run", gone_once)
    options: dict[str, Any] = {"n": 1, "overrides": ("max_train_steps=2",),
                               "sd_scripts": fake.sd_scripts, "python": str(python)}
    workdir = tmp_path / "work"
    with pytest.raises(UserError, match="cannot start"):
        reproduce(isic2020.root, workdir, **options)
    this_python_at(python)
    result = reproduce(isic2020.root, workdir, **options)
    assert result.lora is not None and result.lora.is_file()


def test_sample_launches_a_relative_python_from_here(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _venv(work)
    monkeypatch.chdir(work)
    code, stdout, stderr = invoke(runner, "sample", "--lora", trained, "--n", 2, "--out",
                                  tmp_path / "synth", "--width", 64, "--height", 64, "--steps",
                                  2, "--sd-scripts", fake_gen.sd_scripts, "--python",
                                  "venv/bin/python")
    assert code == 0, stdout + stderr
    assert len(list((tmp_path / "synth" / "images").glob("*.png"))) == 2
