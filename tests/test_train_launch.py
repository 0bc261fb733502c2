"""`train` launching the stand-in sd-scripts: success, silent failures, Ctrl-C and --resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.training import train as training
from medsynth_kohya.training.train import train

from .conftest import invoke
from .disk import checksums
from .fakes import FakeSd, interrupt_after


def _record(run: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run / "run.json").read_text(encoding="utf-8"))
    return data


def test_a_run_launches_sd_scripts_and_records_it(runner: CliRunner, prepared: Path,
                                                  fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable)
    assert code == 0, stdout + stderr
    seen = fake_sd.recorded()
    assert seen["argv"][1:] == ["--config_file", str((run / "config.toml").resolve()),
                                "--dataset_config", str((run / "dataset.toml").resolve())]
    assert Path(seen["cwd"]) == fake_sd.sd_scripts
    assert seen["accelerate"]["num_processes"] == 1
    assert seen["accelerate"]["mixed_precision"] == "no"
    record = _record(run)
    assert record["status"] == "succeeded" and record["exit_status"] == 0
    assert record["expected_steps"] == 2 and record["start"] and record["end"]
    loras = [Path(p).name for p in record["lora_files"]]  # type: ignore[attr-defined]
    assert loras[-1] == "melanoma.safetensors"
    assert "steps" in (run / "train.log").read_text(encoding="utf-8")
    assert "melanoma.safetensors" in stdout
    before = checksums(run)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run,
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr and "--resume" not in line
    assert "already holds a succeeded run; choose another --run-dir" in line, line
    assert checksums(run) == before


def test_a_run_keeps_only_the_newest_resume_state_beside_every_lora(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """States a newer one replaced are removed while training runs; with sd-scripts' own
    save_last_n_* they are sd-scripts' to remove."""
    monkeypatch.setattr(training, "PRUNE_S", 0.0)
    monkeypatch.setenv("FAKE_SD_MODE", "slow")  # 0.1 s a step: 3 s, a save every 0.3 s
    pruned: list[tuple[bool, list[Path]]] = []
    prune = launch.prune_states

    def recorded(output: Path, name: str) -> list[Path]:
        removed = prune(output, name)
        pruned.append(((output / "melanoma.safetensors").exists(), removed))
        return removed

    monkeypatch.setattr(launch, "prune_states", recorded)
    run = tmp_path / "run"
    result = train(prepared, "cpu-smoke", overrides=["max_train_steps=30", "save_every_n_steps=3"],
                   run_dir=run, sd_scripts=fake_sd.sd_scripts, python=sys.executable)
    assert result.status == "succeeded" and len(result.lora_files) == 11
    left = {p.name: sorted(f.name for f in p.iterdir()) for p in (run / "output").glob("*-state")}
    assert list(left) == ["melanoma-state"], (left, pruned)
    assert any(removed for finished, removed in pruned if not finished)  # while it trained
    kept = train(prepared, "cpu-smoke", overrides=["max_train_steps=30", "save_every_n_steps=3",
                                                   "save_last_n_steps_state=100"],
                 run_dir=tmp_path / "kept", sd_scripts=fake_sd.sd_scripts, python=sys.executable)
    assert kept.status == "succeeded"
    assert len(list((tmp_path / "kept" / "output").glob("*-state"))) == 11


def test_exit_zero_without_a_lora_is_a_failure(runner: CliRunner, prepared: Path,
                                               fake_sd: FakeSd, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "no-data")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable)
    assert code == 1
    assert "no LoRA" in stderr and "No data found" in stdout
    assert _record(run)["status"] == "failed"


def test_a_crash_is_reported_with_its_log_tail(runner: CliRunner, prepared: Path,
                                               fake_sd: FakeSd, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=5", "--run-dir", tmp_path / "run",
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 1 and "CUDA out of memory" in stdout and "failed" in stderr


def test_interrupted_run_resumes_from_its_last_state(prepared: Path, fake_sd: FakeSd,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    monkeypatch.chdir(tmp_path)  # a relative --run-dir, as the README's examples give it
    run = Path("run")
    options = {"run_dir": run, "sd_scripts": fake_sd.sd_scripts, "python": sys.executable}
    first = train(prepared, "cpu-smoke", overrides=["max_train_steps=40"],
                  on_progress=interrupt_after(3), **options)  # type: ignore[arg-type]
    assert first.status == "interrupted"
    assert _record(run)["status"] == "interrupted"
    with pytest.raises(Exception, match="--resume"):
        train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], **options)  # type: ignore[arg-type]
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    second = train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], resume=True,
                   **options)  # type: ignore[arg-type]
    assert second.status == "succeeded"
    argv = fake_sd.recorded()["argv"]
    resumed = Path(argv[argv.index("--resume") + 1])
    assert resumed.name.startswith("melanoma-step") and resumed.is_absolute()
    assert resumed.parent == (tmp_path / "run" / "output").resolve()  # sd-scripts' cwd is its own
    assert _record(run)["resumed_from"] == str(resumed)


def test_starting_over_sets_the_old_outputs_aside(prepared: Path, fake_sd: FakeSd,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    options = {"run_dir": run, "sd_scripts": fake_sd.sd_scripts, "python": sys.executable}
    assert train(prepared, "cpu-smoke", **options).status == "succeeded"  # type: ignore[arg-type]
    monkeypatch.setenv("FAKE_SD_MODE", "no-data")
    again = train(prepared, "cpu-smoke", force=True, **options)  # type: ignore[arg-type]
    assert again.status == "failed" and again.lora_files == ()
    [aside] = run.glob("output.replaced-*")
    assert (aside / "melanoma.safetensors").is_file()


def test_no_training_images_is_refused(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    with pytest.raises(UserError, match="no images were prepared"):
        prepare(isic2020.root, out, options=PrepareOptions(query="target == 5"), workers=1)
    with pytest.raises(UserError, match="was not made by medsynth-kohya prepare"):
        train(out, "cpu-smoke", run_dir=tmp_path / "run", dry_run=True)
    prepare(isic2020.root, out, workers=1)  # then every image is held out for validation
    table = pd.read_csv(out / "manifest.csv")
    table.assign(split="val").to_csv(out / "manifest.csv", index=False)
    with pytest.raises(UserError, match="no training images"):
        train(out, "cpu-smoke", run_dir=tmp_path / "run", dry_run=True)


def test_a_local_model_path_is_made_absolute(prepared: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    result = train(prepared, "cpu-smoke", run_dir=tmp_path / "run", dry_run=True,
                   overrides=["pretrained_model_name_or_path=model.safetensors"])
    config = {k: v for t in toml.load(result.config).values() for k, v in t.items()}
    assert config["pretrained_model_name_or_path"] == str(tmp_path / "model.safetensors")


def test_training_a_raw_download_says_to_prepare_it_elsewhere(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", isic2020.root, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--dry-run")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert (f"run `medsynth-kohya prepare {isic2020.root} --out {isic2020.root}-prepared` "
            "first and give that folder") in line
