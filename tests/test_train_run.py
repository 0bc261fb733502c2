"""`train` as a user runs it, end to end on the stand-in sd-scripts: what it renders, launches,
records, says and keeps (judges training/train.py with tests/test_train_launch.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .disk import checksums
from .fakes import FakeSd


def _record(run: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run / "run.json").read_text(encoding="utf-8"))
    return data


def test_a_run_stopped_after_its_last_state_is_not_sent_to_resume(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts saves the final state, then the final LoRA: a run that fails between the two
    (a full disk) holds a state at its last step, which sd-scripts cannot go on from (it
    asserts max_train_steps > the state's step). The advice is to start over, and --resume is
    refused before anything is launched or changed."""
    monkeypatch.setenv("FAKE_SD_MODE", "final-save-fails")
    run = tmp_path / "run"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=4", "--set", "save_every_n_steps=2", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr, stdout + stderr
    assert ("sd-scripts exited with 1 and wrote no LoRA file: OSError: [Errno 28] No space "
            "left on device; its newest state, melanoma-state, is at step 4 of 4, which "
            "sd-scripts cannot go on from: fix what failed and start over with --resume "
            "--force (same settings) or --force (new ones) (log: ") in said, said
    assert "with --resume," not in said
    fake_sd.record.unlink()
    before = checksums(run)
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert line == (f"Error: the newest saved state in {run / 'output'}, melanoma-state, is at "
                    "step 4 of 4, which sd-scripts cannot go on from; --resume "
                    "--force starts the run over with its own settings"), line
    assert not fake_sd.record.exists() and checksums(run) == before
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", "--force", *tools)
    assert code == 0, stdout + stderr
    assert _record(run)["status"] == "succeeded" and "--resume" not in fake_sd.recorded()["argv"]

