"""How push and sample say to finish a run that did not succeed: `--resume` only where it
has a saved training state to go on from; else over again, as train's own failure says (a
bare --resume there is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import contents
from medsynth_kohya.sampling.lora import lora_source
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.training.record import RunFolder


def _failed_run(folder: Path, prepared: Path, steps: int = 100) -> RunFolder:
    """A failed run of `prepared` (output name melanoma) that saved one epoch's LoRA."""
    (folder / "output").mkdir(parents=True)
    record = {"config": {"output_name": "melanoma"}, "status": "failed",
              "dataset": {"prepared": str(prepared)}, "expected_steps": steps}
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "output" / "melanoma-000001.safetensors").write_bytes(b"\0" * 8)
    return RunFolder(folder)


def _save_state(run: RunFolder, step: int) -> None:
    """A complete sd-scripts state folder at `step` in the run's output."""
    state = run.output / f"melanoma-step{step:08d}-state"
    state.mkdir()
    (state / "train_state.json").write_text(json.dumps({"current_step": step}),
                                            encoding="utf-8")
    (state / launch.STATE_WRITTEN_LAST).write_bytes(b"")


def _push_refusal(run: RunFolder) -> str:
    with pytest.raises(UserError) as refused:
        contents._lora_files(run, run.load(), all_checkpoints=False)
    return str(refused.value)


def test_a_run_without_a_saved_state_is_to_be_started_over_not_resumed(tmp_path: Path) -> None:
    run = _failed_run(tmp_path / "run", tmp_path / "prepared")
    resume = launch.resume_command(str(tmp_path / "prepared"), run.path).line()
    over = ("it saved no training state to resume from: fix what failed and start over with "
            f"`{resume} --force` (same settings)")
    assert _push_refusal(run).endswith(f"; the run is failed: {over}")
    (note,) = lora_source(run.path, None).notes
    assert note.endswith(f"not a final LoRA; {over}")


def test_a_run_with_a_saved_state_is_to_be_finished_with_resume(tmp_path: Path) -> None:
    run = _failed_run(tmp_path / "run", tmp_path / "prepared")
    _save_state(run, 50)
    resume = launch.resume_command(str(tmp_path / "prepared"), run.path).line()
    assert _push_refusal(run).endswith(f"; the run is failed: finish it with `{resume}`")
    (note,) = lora_source(run.path, None).notes
    assert note.endswith(f"not a final LoRA; finish it with `{resume}`")


def test_a_state_at_the_runs_last_step_is_no_place_to_resume_from(tmp_path: Path) -> None:
    run = _failed_run(tmp_path / "run", tmp_path / "prepared", steps=100)
    _save_state(run, 100)
    said = _push_refusal(run)
    assert ("its newest state, melanoma-step00000100-state, is at step 100 of 100, which "
            "sd-scripts cannot go on from: fix what failed and start over with `") in said
    assert said.endswith("--resume --force` (same settings)")
