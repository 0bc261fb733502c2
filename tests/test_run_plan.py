"""The run plan's rules one by one: steps per epoch, which length wins, saves and what sd-scripts
removes, sample rounds, the size of a save and of a state, and how the plan is shown."""

from __future__ import annotations

from typing import Any

import pytest

from medsynth_kohya.training import plan

UNET_MODULES, TEXT_ENCODER_MODULES = 722, 72 + 192
"""What sd-scripts v0.10.1 logs for SDXL ("create LoRA for U-Net: 722 modules", "Text Encoder
1: 72 modules", "Text Encoder 2: 192 modules")."""


def _plan(options: dict[str, Any], images: int = 10, repeats: int = 1, processes: int = 1,
          free: int = 0) -> plan.RunPlan:
    return plan.plan(options, images=images, repeats=repeats, processes=processes,
                     steps_source="said", free_bytes=free)


@pytest.mark.parametrize(("options", "images", "repeats", "processes", "expected"), [
    ({}, 7, 3, 1, 21),
    ({"train_batch_size": 2}, 7, 3, 1, 11),
    ({"train_batch_size": 2}, 7, 3, 2, 6),
    ({"train_batch_size": 2, "gradient_accumulation_steps": 2}, 7, 3, 2, 3),
    ({"gradient_accumulation_steps": 4}, 5, 1, 1, 2),
    ({"train_batch_size": 3}, 0, 3, 1, 1),
    ({"train_batch_size": 4}, 1, 1, 1, 1),
    ({}, 5, 2, 0, 10),
    ({"train_batch_size": True, "gradient_accumulation_steps": True}, 5, 1, 1, 5),
    ({"train_batch_size": 0, "gradient_accumulation_steps": -2}, 5, 1, 1, 5),
])
def test_steps_per_epoch(options: dict[str, Any], images: int, repeats: int, processes: int,
                         expected: int) -> None:
    assert plan.steps_per_epoch(options, images, repeats, processes) == expected


def test_the_lora_wraps_what_sd_scripts_counts() -> None:
    both = plan.lora_shape({})
    unet = plan.lora_shape({"network_train_unet_only": True})
    text = plan.lora_shape({"network_train_text_encoder_only": True})
    assert both is not None and unet is not None and text is not None
    assert (unet[1], text[1], both[1]) == (UNET_MODULES, TEXT_ENCODER_MODULES,
                                           UNET_MODULES + TEXT_ENCODER_MODULES)
    assert both[0] == unet[0] + text[0]
    assert plan.lora_shape({"network_train_unet_only": True,
                            "network_train_text_encoder_only": True}) == (0, 0)


@pytest.mark.parametrize(("count", "shown"), [
    (0, "0 kB"), (999_000, "999 kB"), (10**6, "1 MB"), (1_234_567, "1.23 MB"),
    (99_900_000, "99.9 MB"), (999_600_000, "1000 MB"), (2_500_000_000, "2.5 GB"),
    (10**12, "1 TB"), (1234 * 10**12, "1234 TB"),
])
def test_sizes_in_decimal_units(count: int, shown: str) -> None:
    assert plan.size(count) == shown


@pytest.mark.parametrize(("options", "steps", "epochs"), [
    ({}, 1600, 160),
    ({"max_train_steps": 25}, 25, 3),
    ({"max_train_steps": 25, "max_train_epochs": 2}, 20, 2),
    ({"max_train_steps": 25, "max_train_epochs": 0}, 25, 3),
    ({"max_train_steps": True}, 1600, 160),
])
def test_epochs_win_over_steps_and_1600_is_the_default(options: dict[str, Any], steps: int,
                                                       epochs: int) -> None:
    run = _plan(options)
    assert (run.steps, run.epochs, run.steps_per_epoch) == (steps, epochs, 10)
    assert run.steps_source == "said"


@pytest.mark.parametrize(("options", "rounds"), [
    ({}, 0), ({"sample_at_first": True}, 1),
    ({"sample_every_n_epochs": 2}, 1), ({"sample_every_n_epochs": 1}, 3),
    ({"sample_every_n_steps": 7}, 3), ({"sample_every_n_steps": 7, "sample_at_first": True}, 4),
    ({"sample_every_n_epochs": 3, "sample_every_n_steps": 1}, 1),
    ({"sample_every_n_epochs": 0, "sample_every_n_steps": 11}, 2),
])
def test_sample_rounds(options: dict[str, Any], rounds: int) -> None:
    run = _plan({"max_train_steps": 25, **options})
    assert run.epochs == 3 and run.sample_rounds == rounds


@pytest.mark.parametrize(("optimizer", "full", "per_weight"), [
    (None, None, 12), ("AdamW", None, 12), ("AdamW", "full_bf16", 10), ("AdamW", "full_fp16", 10),
    ("AdamW8bit", None, 6), ("PagedAdamW8bit", None, 6), ("Lion", None, 8),
    ("Lion8bit", None, 5), ("SGDNesterov", None, 8), ("Prodigy", None, 20),
    ("DAdaptAdam", None, 12),
])
def test_a_state_holds_the_weights_and_the_optimizers_moments(
        optimizer: str | None, full: str | None, per_weight: int) -> None:
    """fp32 weights (4 bytes, 2 when trained in full fp16/bf16) and the optimizer's moments:
    Adam two of 4 bytes (8-bit: of 1), Lion and SGD's momentum one, Prodigy four."""
    options: dict[str, Any] = {"save_state": True, "optimizer_type": optimizer}
    if full:
        options[full] = True
    run = _plan(options)
    shape = plan.lora_shape(options)
    assert shape is not None and run.state_bytes == shape[0] * per_weight


def test_a_save_holds_each_module_s_down_up_and_alpha() -> None:
    options: dict[str, Any] = {"network_dim": 8}
    weights, modules = plan.lora_shape(options) or (0, 0)
    assert plan.lora_shape({"network_dim": 16}) == (2 * weights, modules)
    assert plan.lora_shape({}) == plan.lora_shape({"network_dim": 4}) == plan.lora_shape(
        {"network_dim": None}) == (weights // 2, modules)
    header = 3 * modules * plan.HEADER_BYTES_PER_TENSOR
    for precision, width in (("fp16", 2), ("bf16", 2), ("float", 4), (None, 4), ("fp8", 4)):
        run = _plan({**options, "save_precision": precision})
        assert run.lora_bytes == (weights + modules) * width + header, precision


@pytest.mark.parametrize("options", [
    {"network_module": "networks.lora_fa"},
    {"network_args": ["conv_dim = 4", "conv_alpha=1"]},
    {"network_args": ["algo=lora", "conv_dim=8"]},
])
def test_a_network_this_cannot_size(options: dict[str, Any]) -> None:
    assert plan.lora_shape(options) is None
    run = _plan({"save_state": True, **options}, free=5)
    assert (run.lora_bytes, run.state_bytes, run.disk_bytes) == (None, None, None)
    assert run.fits
    assert dict(run.rows())["one save"] == "unknown (not a plain networks.lora)"
    assert dict(run.rows())["disk for saves"] == "unknown of 0 kB free"


def test_conv_settings_that_are_not_conv_dim_are_sized() -> None:
    assert plan.lora_shape({"network_args": ["conv_alpha=1", "dropout=0.1"]}) == plan.lora_shape(
        {})
    assert plan.lora_shape({"network_module": "networks.lora", "network_args": None}) is not None


def test_the_plan_as_rows() -> None:
    run = _plan({"max_train_steps": 25, "save_every_n_epochs": 1, "save_state": True,
                 "sample_every_n_steps": 10, "save_precision": "fp16", "network_dim": 32,
                 "network_train_unet_only": True}, free=10**12)
    assert run.lora_bytes and run.state_bytes and run.disk_bytes
    assert run.rows() == [
        ("steps", "25 (said)"), ("epochs", "3 of 10 steps"), ("saves", "3"),
        ("sample rounds", "2"),
        ("one save", f"{plan.size(run.lora_bytes)} LoRA, with a training state of "
                     f"≈ {plan.size(run.state_bytes)}"),
        ("disk for saves", f"{plan.size(run.disk_bytes)} of 1 TB free")]
    plain = _plan({"network_dim": 32, "network_train_unet_only": True, "save_precision": "fp16"})
    assert dict(plain.rows())["one save"] == plan.size(plain.lora_bytes or 0)
    assert plain.state_bytes is None


def test_the_saves_fit_up_to_the_last_byte() -> None:
    disk = _plan({}).disk_bytes
    assert disk is not None
    assert _plan({}, free=disk).fits and not _plan({}, free=disk - 1).fits


def _disk(run: plan.RunPlan) -> tuple[int, int]:
    """How many LoRA files and states the run's disk figure holds at most at once."""
    assert run.lora_bytes and run.disk_bytes is not None
    state = run.state_bytes or 0
    for states in range(12):
        loras, left = divmod(run.disk_bytes - states * state, run.lora_bytes)
        if not left:
            return loras, states
    raise AssertionError(run)


def test_save_last_n_steps_keeps_the_saves_of_the_last_n_steps() -> None:
    """Every 10 of 100 steps, the last 20 kept: sd-scripts removes save `step - 21` rounded
    down to a save, so a fourth is written before the oldest goes; the final save is one more."""
    every = {"max_train_steps": 100, "save_every_n_steps": 10}
    run = _plan({**every, "save_last_n_steps": 20})
    assert (run.saves, _disk(run), run.state_bytes) == (11, (4, 0), None)
    assert _disk(_plan(every)) == (11, 0)
    assert _disk(_plan({**every, "save_last_n_steps": 9})) == (2, 0)
    assert _disk(_plan({**every, "save_last_n_steps": 10})) == (3, 0)
    assert _disk(_plan({**every, "save_last_n_steps": 19})) == (3, 0)
    with_states = _plan({**every, "save_last_n_steps": 20, "save_state": True})
    assert _disk(with_states) == (4, 4)
    fewer = _plan({**every, "save_last_n_steps": 20, "save_last_n_steps_state": 10,
                   "save_state": True})
    assert _disk(fewer) == (4, 3)


def test_save_last_n_epochs_keeps_the_saves_of_the_last_n_epochs() -> None:
    every = {"max_train_epochs": 20, "save_every_n_epochs": 2, "save_state": True}
    assert _disk(_plan({**every, "save_last_n_epochs": 3})) == (4, 4)
    assert _disk(_plan({**every, "save_last_n_epochs": 3, "save_last_n_epochs_state": 1})) == (
        4, 2)
    assert _disk(_plan({**every, "save_last_n_epochs_state": 1})) == (10, 2)


def test_the_epoch_ratio_decides_how_often_epochs_save() -> None:
    ten = {"max_train_epochs": 10}
    assert _plan({**ten, "save_n_epoch_ratio": 3}).saves == 4
    assert _plan({**ten, "save_n_epoch_ratio": 3, "save_every_n_epochs": 1}).saves == 4
    assert _plan({**ten, "save_n_epoch_ratio": 20}).saves == 10
    assert _plan({**ten, "save_every_n_epochs": 4}).saves == 3
    assert _plan(ten).saves == 1


def test_step_and_epoch_saves_together() -> None:
    run = _plan({"max_train_steps": 40, "save_every_n_steps": 15, "save_every_n_epochs": 1,
                 "save_last_n_steps": 15, "save_last_n_epochs": 1})
    # steps 15 and 30, epochs 1-3 (steps 10, 20, 30), the final save: 2 + 3 + 1
    assert run.saves == 6 and _disk(run) == (4, 0)


def test_a_state_only_at_the_end() -> None:
    run = _plan({"max_train_epochs": 4, "save_every_n_epochs": 1, "save_state_on_train_end": True})
    assert run.state_bytes and (run.saves, _disk(run)) == (4, (4, 1))
    assert dict(run.rows())["one save"] == (
        f"{plan.size(run.lora_bytes or 0)} LoRA; the final one with a training state of "
        f"≈ {plan.size(run.state_bytes)}")


@pytest.mark.parametrize(("options", "prunes"), [
    ({}, False), ({"save_state": True}, True), ({"save_state": False}, False),
    ({"save_state": True, "save_last_n_epochs": 2}, False),
    ({"save_state": True, "save_last_n_epochs_state": 2}, False),
    ({"save_state": True, "save_last_n_steps": 2}, False),
    ({"save_state": True, "save_last_n_steps_state": 2}, False),
    ({"save_state": True, "save_last_n_steps": 0}, True),
])
def test_train_prunes_states_unless_sd_scripts_does(options: dict[str, Any],
                                                    prunes: bool) -> None:
    assert plan.prunes_states(options) is prunes


def test_pruned_states_are_two_at_most() -> None:
    every = {"max_train_epochs": 5, "save_every_n_epochs": 1, "save_state": True}
    assert _disk(_plan(every)) == (5, 2)
    assert _disk(_plan({**every, "save_last_n_epochs_state": 10})) == (5, 5)
    assert _disk(_plan({"max_train_epochs": 5, "save_state": True})) == (1, 1)


def test_step_saves_stop_at_the_last_step() -> None:
    """Every 3 of 14 steps: saves at 3, 6, 9 and 12 (sd-scripts never reaches 15), the final."""
    assert _plan({"max_train_steps": 14, "save_every_n_steps": 3}).saves == 5
    assert _plan({"max_train_steps": 14, "save_every_n_steps": 15}).saves == 1


def test_one_save_with_its_state_is_sized() -> None:
    run = _plan({"max_train_epochs": 2, "save_every_n_epochs": 1, "save_state": True})
    assert run.saves == 2 and run.state_bytes and _disk(run) == (2, 2)
