"""A file given where a folder is expected is one line saying it is a file and what to give
instead (exit 1); "does not exist" is said only when nothing is there."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import invoke

SET = "give the --out folder of `medsynth-kohya sample`"
COMMANDS = [
    pytest.param(["evaluate", "--real", "{prepared}", "--synthetic", "{path}", "--out",
                  "{tmp}/rep"], "--synthetic {path} {state}: " + SET, id="evaluate --synthetic"),
    pytest.param(["evaluate", "--lora", "{path}", "--synthetic", "{tmp}/set", "--out",
                  "{tmp}/rep"], "--lora {path} {state}: pass the run folder that "
                 "`medsynth-kohya train` wrote, or give --real instead", id="evaluate --lora"),
    pytest.param(["push", "{run}", "--repo-id", "me/lora", "--samples", "{path}", "--dry-run"],
                 "--samples {path} {state}: " + SET, id="push --samples"),
    pytest.param(["push", "{run}", "--repo-id", "me/lora", "--eval", "{path}", "--dry-run"],
                 "--eval {path} {state}: give the --out folder of `medsynth-kohya evaluate`",
                 id="push --eval"),
    pytest.param(["push", "{path}", "--repo-id", "me/lora", "--dry-run"],
                 "{path} {state}: pass the run folder that `medsynth-kohya train` wrote",
                 id="push RUN_DIR"),
    pytest.param(["train", "{path}", "--preset", "cpu-smoke", "--run-dir", "{tmp}/r",
                  "--dry-run"], "{path} {state}: give the --out folder of `medsynth-kohya "
                 "prepare`", id="train PREPARED"),
    pytest.param(["prepare", "{source}", "--images", "{path}", "--out", "{tmp}/p"],
                 "--images {path} {state}: give the folder that holds the images",
                 id="prepare --images"),
]


@pytest.mark.parametrize("is_file", [True, False], ids=["a file", "nothing"])
@pytest.mark.parametrize(("command", "expected"), COMMANDS)
def test_a_file_or_nothing_where_a_folder_is_expected_is_one_line(
        runner: CliRunner, prepared: Path, trained: Path, tmp_path: Path, is_file: bool,
        command: list[str], expected: str) -> None:
    path = tmp_path / "given"
    if is_file:
        path.write_bytes(b"")
    (tmp_path / "set").mkdir()
    words = {"path": path, "prepared": prepared, "run": trained, "tmp": tmp_path,
             "source": tmp_path / "isic2020"}
    code, stdout, stderr = invoke(runner, *[word.format(**words) for word in command])
    state = "is a file, not a folder" if is_file else "does not exist"
    lines = stderr.strip().splitlines()
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert lines[-1] == "Error: " + expected.format(path=path, state=state), stderr


def test_a_file_as_sd_scripts_is_not_told_to_install_into_it(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    given = tmp_path / "sd-scripts"
    given.write_bytes(b"")
    _, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                               "--run-dir", tmp_path / "r", "--sd-scripts", given,
                               "--dry-run")
    said = " ".join((stdout + stderr).split())
    assert f"{given} is a file, not a folder: point --sd-scripts at the folder that holds" in said
    assert f"install-sd-scripts --dir {given}" not in said
