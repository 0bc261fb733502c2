"""Every reader of a prepared folder that a live `prepare` is still writing says so in
evaluate's words (locks.ensure_idle), dry runs included, not "was not made by prepare" or
"does not exist"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks

from .conftest import invoke

BUSY = f"is still being written by `medsynth-kohya prepare` (pid {os.getpid()}"


def _refused(code: int, stdout: str, stderr: str, folder: Path, command: str) -> None:
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert f"{folder} {BUSY}" in line and f"`{command}` needs it finished" in line, line


@pytest.mark.parametrize("args", [("--dry-run",), ("--resume", "--run-dir", "{tmp}/run")])
def test_train_on_a_first_prepare_still_running(runner: CliRunner, tmp_path: Path,
                                                args: tuple[str, ...]) -> None:
    writing = tmp_path / "px"
    with locks.hold(writing, "prepare"):
        result = invoke(runner, "train", writing, "--preset", "cpu-smoke",
                        *[arg.format(tmp=tmp_path) for arg in args])
    _refused(*result, writing, "train")
    assert not (tmp_path / "run").exists()


def test_sample_like_a_folder_prepare_is_writing(runner: CliRunner, trained: Path,
                                                 prepared: Path, tmp_path: Path) -> None:
    writing = tmp_path / "px"
    with locks.hold(writing, "prepare"):
        result = invoke(runner, "sample", "--lora", trained, "--like", writing / "manifest.csv",
                        "--n", 2, "--out", tmp_path / "a", "--dry-run")
    _refused(*result, writing, "sample")
    with locks.hold(prepared, "prepare"):  # the run's own prepared data, being prepared again
        result = invoke(runner, "sample", "--lora", trained, "--n", 2, "--out", tmp_path / "b",
                        "--dry-run")
    _refused(*result, prepared.resolve(), "sample")


def test_evaluate_a_run_whose_prepared_data_is_being_written(runner: CliRunner, trained: Path,
                                                             prepared: Path,
                                                             tmp_path: Path) -> None:
    (tmp_path / "syn").mkdir()  # a set that is there: a missing one is refused first
    with locks.hold(prepared, "prepare"):
        result = invoke(runner, "evaluate", "--lora", trained, "--synthetic", tmp_path / "syn",
                        "--out", tmp_path / "report")
    _refused(*result, prepared.resolve(), "evaluate")


def test_push_a_run_whose_prepared_data_is_being_written(runner: CliRunner, trained: Path,
                                                         prepared: Path) -> None:
    with locks.hold(prepared, "prepare"):
        result = invoke(runner, "push", trained, "--repo-id", "alice/melanoma-lora",
                        "--dry-run")
    _refused(*result, prepared.resolve(), "push")
    code, _, stderr = invoke(runner, "push", trained, "--repo-id", "alice/melanoma-lora",
                             "--dry-run")
    assert code == 0, stderr
