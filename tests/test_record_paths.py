"""Paths a record keeps are absolute, so a later command run from another folder finds them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .fake_gen import FakeGen
from .fakes import FakeSd
from .test_sample import SMALL


def test_run_json_lists_its_loras_by_absolute_path(runner: CliRunner, prepared: Path,
                                                   fake_sd: FakeSd, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", "run", "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable)
    assert code == 0, stdout + stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    listed = [Path(path) for path in record["lora_files"]]
    assert listed and all(path.is_absolute() and path.is_file() for path in listed)
    assert listed[-1] == tmp_path / "run" / "output" / "melanoma.safetensors"


def test_sample_json_names_each_shards_log_by_absolute_path(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(runner, "sample", "--lora", trained, "--n", 2, "--out", "syn",
                                  *SMALL, "--sd-scripts", fake_gen.sd_scripts,
                                  "--python", sys.executable)
    assert code == 0, stdout + stderr
    state = json.loads((tmp_path / "syn" / ".medsynth" / "sample.json").read_text("utf-8"))
    logs = [Path(shard["log"]) for shard in state["shards"]]
    assert logs and all(log.is_absolute() and log.is_file() for log in logs)
    assert all(log.parent == tmp_path / "syn" / "logs" for log in logs)
