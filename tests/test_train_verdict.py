"""The training verdict and the step count a run promises, on their own.

A run succeeds only when sd-scripts exits 0 *and* wrote the final LoRA; the expected steps are
what sd-scripts will count (epochs win over max_train_steps, batches and accumulation round up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.sdscripts.launch import RunOutcome
from medsynth_kohya.training.train import _expected_steps, verdict


def _outcome(returncode: int, interrupted: bool = False) -> RunOutcome:
    return RunOutcome(returncode=returncode, interrupted=interrupted, last=None, tail=[])


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
    expected = ("interrupted", "stopped; continue with --resume")
    assert verdict(_outcome(code, interrupted=True), final) == expected
    assert verdict(_outcome(code, interrupted=True), final.with_name("x.safetensors")) == expected


@pytest.mark.parametrize(("options", "images", "repeats", "processes", "steps"), [
    ({"max_train_epochs": 10}, 7, 3, 1, 210),
    ({"max_train_epochs": 10, "train_batch_size": 4}, 7, 3, 1, 60),  # ceil(21 / 4) = 6
    ({"max_train_epochs": 2, "train_batch_size": 2}, 7, 3, 2, 12),  # ceil(21 / 4) = 6
    ({"max_train_epochs": 3, "gradient_accumulation_steps": 4}, 5, 1, 1, 6),  # ceil(5/4) = 2
    ({"max_train_epochs": 1, "train_batch_size": 3, "gradient_accumulation_steps": 2},
     10, 1, 1, 2),  # ceil(ceil(10 / 3) / 2) = ceil(4 / 2)
    ({"max_train_epochs": 4, "max_train_steps": 5}, 6, 1, 0, 24),  # epochs win
    ({"max_train_steps": 777}, 7, 3, 1, 777),
    ({}, 7, 3, 1, 1600),  # sd-scripts' default
    ({"max_train_epochs": 0, "max_train_steps": 90}, 7, 3, 1, 90),
    ({"max_train_epochs": "10", "max_train_steps": 90}, 7, 3, 1, 90),
    ({"max_train_steps": "lots"}, 7, 3, 1, None),
])
def test_expected_steps(options: dict[str, Any], images: int, repeats: int, processes: int,
                        steps: int | None) -> None:
    assert _expected_steps(options, images, repeats, processes) == steps
