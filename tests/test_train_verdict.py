"""The training verdict on its own: a run succeeds only when sd-scripts exits 0 *and* wrote
the final LoRA; an interrupted run is resumable whatever its exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth_kohya.sdscripts.launch import RunOutcome
from medsynth_kohya.training.train import next_step, verdict


def _outcome(returncode: int, interrupted: bool = False, error: str | None = None) -> RunOutcome:
    return RunOutcome(returncode=returncode, interrupted=interrupted, last=None, tail=[],
                      error=error)


@pytest.fixture
def final(tmp_path: Path) -> Path:
    path = tmp_path / "output" / "melanoma.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    return path


def test_exit_zero_and_the_lora_is_a_success(final: Path) -> None:
    assert verdict(_outcome(0), final) == ("succeeded", f"LoRA written to {final}")


def test_exit_zero_without_the_lora_is_a_failure(tmp_path: Path) -> None:
    missing = tmp_path / "melanoma.safetensors"
    assert verdict(_outcome(0), missing) == (
        "failed", "sd-scripts exited with 0 and wrote no LoRA file")


@pytest.mark.parametrize("code", [1, -9, 137])
def test_a_non_zero_exit_is_a_failure_even_with_a_lora(final: Path, code: int) -> None:
    assert verdict(_outcome(code), final) == ("failed", f"sd-scripts exited with {code}")
    assert verdict(_outcome(code), final.with_name("other.safetensors")) == (
        "failed", f"sd-scripts exited with {code} and wrote no LoRA file")


@pytest.mark.parametrize("code", [0, 1, -2, 130])
def test_an_interruption_is_resumable_whatever_the_exit(final: Path, code: int) -> None:
    expected = ("interrupted", "stopped")
    if code != 0:
        assert verdict(_outcome(code, interrupted=True), final) == expected
    assert verdict(_outcome(code, interrupted=True), final.with_name("x.safetensors")) == expected


def test_a_run_that_finished_before_the_stop_reached_it_succeeded(final: Path) -> None:
    """Stopped in its last steps (the stop waits up to STOP_GRACE_S), sd-scripts may still
    write the final LoRA and exit 0: the run finished, so it is no "interrupted" run."""
    assert verdict(_outcome(0, interrupted=True), final) == (
        "succeeded", f"LoRA written to {final} (training finished before the stop reached it)")


def test_a_failure_says_the_last_error_sd_scripts_printed(final: Path) -> None:
    error = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert verdict(_outcome(1, error=error), final.with_name("x.safetensors")) == (
        "failed", f"sd-scripts exited with 1 and wrote no LoRA file: {error}")
    assert verdict(_outcome(1, error=error), final) == (
        "failed", f"sd-scripts exited with 1: {error}")
    assert verdict(_outcome(0, error=error), final)[0] == "succeeded"


def test_the_next_step_is_resume_only_from_a_saved_state(final: Path, tmp_path: Path) -> None:
    state = tmp_path / "output" / "melanoma-step00000010-state"
    gone = final.with_name("gone.safetensors")
    assert next_step("succeeded", final, state) == ""
    assert next_step("failed", gone, state) == (
        "continue from melanoma-step00000010-state with --resume, or fix what failed and "
        "start over with --force")
    assert next_step("interrupted", gone, state) == (
        "continue from melanoma-step00000010-state with --resume")
    over = "start over with --resume --force (same settings) or --force (new ones)"
    assert next_step("failed", gone, None) == (
        f"it saved no training state to resume from: fix what failed and {over}")
    assert next_step("interrupted", gone, None) == (
        f"it saved no training state to resume from: {over}")
    assert next_step("failed", final, state) == (
        f"check {final} (written before sd-scripts stopped), or fix what failed and {over}")
