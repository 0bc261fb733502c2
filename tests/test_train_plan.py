"""`train`'s plan before launch: which max_train_steps wins, epochs, saves, sample rounds, the
size of one LoRA save (checked against sizes measured on sd-scripts v0.10.1) and its disk."""

from __future__ import annotations

import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.training import plan
from medsynth_kohya.training.train import train

from .conftest import invoke
from .fakes import FakeSd, make_fake_sd

Usage = namedtuple("Usage", "total used free")


def _prepared(source: SyntheticSet, out: Path, options: PrepareOptions) -> Path:
    prepare(source.root, out, options=options, workers=1)
    return out


def _steps(run: Path) -> object:
    return {k: v for t in toml.load(run / "config.toml").values() for k, v in t.items()}.get(
        "max_train_steps")


@pytest.mark.parametrize(("precision", "dim", "measured_mb"),
                         [("fp16", 32, 170), ("fp16", 128, 681), ("bf16", 64, 341)])
def test_one_save_matches_the_measured_lora_size(precision: str, dim: int,
                                                 measured_mb: int) -> None:
    options = {"network_module": "networks.lora", "network_dim": dim,
               "network_train_unet_only": True, "save_precision": precision}
    run = plan.plan(options, images=10, repeats=1, processes=1, steps_source="", free_bytes=0)
    assert run.lora_bytes is not None
    assert run.lora_bytes / 1e6 == pytest.approx(measured_mb, rel=0.005)


def test_text_encoders_and_precision_change_the_size() -> None:
    base = {"network_dim": 32, "network_train_unet_only": True, "save_precision": "fp16"}
    unet = plan.lora_shape(base)
    both = plan.lora_shape({**base, "network_train_unet_only": False})
    assert unet is not None and both is not None and both[0] > unet[0] and both[1] > unet[1]
    assert plan.lora_shape({**base, "network_args": ["conv_dim=8"]}) is None
    assert plan.lora_shape({**base, "network_module": "networks.oft"}) is None
    fp32 = plan.plan({**base, "save_precision": "float"}, images=1, repeats=1, processes=1,
                     steps_source="", free_bytes=0).lora_bytes
    fp16 = plan.plan(base, images=1, repeats=1, processes=1, steps_source="",
                     free_bytes=0).lora_bytes
    assert fp32 is not None and fp16 is not None and 1.99 < fp32 / fp16 < 2.01


def test_saves_and_rounds_follow_sd_scripts_rules() -> None:
    options = {"max_train_steps": 100, "save_every_n_epochs": 2, "save_last_n_epochs": 3,
               "sample_every_n_epochs": 2, "save_state": False, "network_dim": 4}
    run = plan.plan(options, images=5, repeats=1, processes=1, steps_source="", free_bytes=0)
    # 20 epochs of 5 steps; saves after epochs 2..18 (never the last) and the final one;
    # sd-scripts writes the 4th before removing the oldest: at most 4 files at once
    assert (run.epochs, run.steps_per_epoch, run.saves, run.sample_rounds) == (20, 5, 10, 10)
    assert run.lora_bytes is not None and run.disk_bytes == 4 * run.lora_bytes
    by_steps = {"max_train_steps": 10, "save_every_n_steps": 5, "save_state": True,
                "sample_every_n_steps": 3, "train_batch_size": 2, "gradient_accumulation_steps": 2}
    steps = plan.plan(by_steps, images=7, repeats=3, processes=2, steps_source="", free_bytes=0)
    assert (steps.steps_per_epoch, steps.epochs, steps.saves, steps.sample_rounds) == (3, 4, 3, 3)
    # train removes each state a newer one replaced: the newest and the one being written
    assert steps.state_bytes and steps.lora_bytes and steps.disk_bytes == (
        3 * steps.lora_bytes + 2 * steps.state_bytes)
    kept = plan.plan({**by_steps, "save_last_n_steps_state": 100}, images=7, repeats=3,
                     processes=2, steps_source="", free_bytes=0)  # sd-scripts' rule: all kept
    assert kept.disk_bytes == 3 * (steps.lora_bytes + steps.state_bytes)
    epochs = plan.plan({"max_train_steps": 10, "max_train_epochs": 4}, images=7, repeats=3,
                       processes=1, steps_source="", free_bytes=0)
    assert (epochs.steps, epochs.epochs) == (84, 4)


def test_the_prepared_target_wins_over_the_preset_and_set_over_both(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    target = _prepared(isic2020, tmp_path / "target", PrepareOptions(target_steps=7200, epochs=50))
    result = train(target, "t4-16gb", run_dir=tmp_path / "a", dry_run=True, detect=lambda: [])
    assert _steps(tmp_path / "a") == 7200 and result.plan is not None
    assert result.plan.steps == 7200
    assert result.plan.steps_source == "prepare --target-steps, over preset t4-16gb's 2000"
    result = train(target, "t4-16gb", overrides=["max_train_steps=300"], run_dir=tmp_path / "b",
                   dry_run=True, detect=lambda: [])
    assert _steps(tmp_path / "b") == 300 and result.plan is not None
    assert result.plan.steps_source == "--set max_train_steps"
    plain = _prepared(isic2020, tmp_path / "plain", PrepareOptions(repeats=2))
    result = train(plain, "t4-16gb", run_dir=tmp_path / "c", dry_run=True, detect=lambda: [])
    assert _steps(tmp_path / "c") == 2000 and result.plan is not None
    assert result.plan.steps_source.startswith("preset t4-16gb")
    result = train(plain, "t4-16gb", overrides=["max_train_epochs=3"], run_dir=tmp_path / "d",
                   dry_run=True, detect=lambda: [])
    assert result.plan is not None and result.plan.steps == 3 * 24 == result.expected_steps
    assert "max_train_epochs = 3 from --set" in result.plan.steps_source


def test_saves_that_cannot_fit_are_refused_before_launch(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    small = _prepared(isic2020, tmp_path / "small", PrepareOptions(repeats=1))
    code, stdout, stderr = invoke(runner, "train", small, "--preset", "medsynthx-2023",
                                  "--run-dir", tmp_path / "plan", "--dry-run")
    assert code == 0, stderr
    cells = dict(line.strip("│ ").split("│")[:2] for line in stdout.splitlines()
                 if line.count("│") == 3)
    table = {k.strip(): v.strip() for k, v in cells.items()}
    assert table["epochs"] == "600 of 12 steps" and table["saves"] == "300"
    assert table["sample rounds"] == "300" and table["one save"] == (
        "681 MB LoRA, with a training state of ≈ 2.04 GB")
    assert table["disk for saves"].endswith("free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10**12, 0, 50 * 10**9))
    code, _, stderr = invoke(runner, "train", small, "--preset", "medsynthx-2023",
                             "--run-dir", tmp_path / "run")
    assert code == 1 and "disk: the saves need" in stderr and "50 GB is free" in stderr
    assert "(300 saves of 681 MB LoRA, with a training state of ≈ 2.04 GB)" in stderr
    assert "save_every_n_epochs=N" in stderr and not (tmp_path / "run" / "output").exists()


def test_the_original_runs_saves_fit_a_free_google_drive(
        isic2020: SyntheticSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original run, 7200 steps over ISIC 2020's 584 melanomas, is 13 epochs: 6 saves every
    2 epochs and the final one, as 148 steps over these 12 images are. Its 7 LoRAs (681 MB)
    are kept; of its states (2 GB) only the newest and the one being written exist at once."""
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(15 * 10**9, 0, 15 * 10**9))
    small = _prepared(isic2020, tmp_path / "small", PrepareOptions(repeats=1))
    result = train(small, "medsynthx-2023", overrides=["max_train_steps=148"],
                   run_dir=tmp_path / "run", dry_run=True, detect=lambda: [])
    run = result.plan
    assert run is not None and (run.epochs, run.saves) == (13, 7)
    assert run.lora_bytes and run.state_bytes and run.disk_bytes == (
        7 * run.lora_bytes + 2 * run.state_bytes)
    assert run.fits and 8.8e9 < run.disk_bytes < 8.9e9
    options = {k: v for table in toml.load(tmp_path / "run" / "config.toml").values()
               for k, v in table.items()}
    original = plan.plan({**options, "max_train_steps": 7200}, images=584, repeats=1,
                         processes=1, steps_source="", free_bytes=15 * 10**9)
    assert (original.epochs, original.saves, original.disk_bytes) == (13, 7, run.disk_bytes)
    every_state = plan.plan({**options, "save_last_n_epochs_state": 100}, images=12, repeats=1,
                            processes=1, steps_source="", free_bytes=15 * 10**9)
    assert every_state.disk_bytes == 7 * (run.lora_bytes + run.state_bytes)  # 19 GB
    assert not every_state.fits


def test_the_launch_table_comes_before_training(runner: CliRunner, isic2020: SyntheticSet,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake: FakeSd = make_fake_sd(tmp_path, monkeypatch)
    prepared = _prepared(isic2020, tmp_path / "prepared", PrepareOptions(repeats=1))
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake.sd_scripts,
                                  "--python", sys.executable)
    assert code == 0, stdout + stderr
    assert stdout.index("disk for saves") < stdout.index("melanoma.safetensors")
    written = sorted(p.name for p in (run / "output").glob("*.safetensors"))
    assert len(written) == 3 and "saves" in stdout
    assert "│ 3 " in next(line for line in stdout.splitlines() if "│ saves" in line)


def test_zero_steps_gpus_or_workers_are_refused_before_writing(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                             "max_train_steps=0", "--run-dir", tmp_path / "run", "--dry-run",
                             "--sd-scripts", fake_sd.sd_scripts)
    assert code == 1 and "max_train_steps = 0 must be at least 1" in stderr
    assert not fake_sd.record.exists()
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--gpus", "0",
                             "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 1 and "--gpus must be at least 1 (got 0)" in stderr
    assert not (tmp_path / "run").exists()
    code, _, stderr = invoke(runner, "prepare", prepared, "--out", tmp_path / "p",
                             "--workers", "0")
    assert code == 1 and "--workers must be at least 1 (got 0)" in stderr


def test_a_dry_run_says_which_warnings_would_stop_a_real_run(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    planned = train(prepared, "t4-16gb", run_dir=tmp_path / "plan", dry_run=True,
                    sd_scripts=fake_sd.sd_scripts, detect=lambda: [])
    stops = [w for w in planned.warnings if w.startswith("a real run would stop at: ")]
    assert [w for w in stops if "GPU" in w], planned.warnings
    unpinned = [w for w in planned.warnings if "not " in w and str(fake_sd.sd_scripts) in w]
    assert unpinned and not any(w in stops for w in unpinned)
    with pytest.raises(UserError) as refused:
        train(prepared, "t4-16gb", run_dir=tmp_path / "run", sd_scripts=fake_sd.sd_scripts,
              detect=lambda: [])
    assert "GPU" in str(refused.value) and "would stop" not in str(refused.value)
    assert str(fake_sd.sd_scripts) not in str(refused.value)


@pytest.mark.parametrize("steps", ["999999999999999999", "1000000000"])
def test_a_run_of_absurdly_many_saves_is_refused_at_once(runner: CliRunner, prepared: Path,
                                                        tmp_path: Path, steps: str) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  f"max_train_steps={steps}", "--set", "save_every_n_steps=5",
                                  "--run-dir", tmp_path / "run", "--dry-run")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert f"{steps} steps with a save every 5 steps" in line and "at most 100000" in line
    assert not (tmp_path / "run").exists()
