"""`train` launching the stand-in sd-scripts: success, silent failures, Ctrl-C and --resume."""

from __future__ import annotations

import errno
import json
import sys
from datetime import datetime, tzinfo
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


def test_a_failure_says_why_and_how_to_go_on(runner: CliRunner, prepared: Path,
                                             fake_sd: FakeSd, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The error line is the trainer's exception (not accelerate's CalledProcessError that
    follows it), the advice is --resume from the state saved at step 2, and the table lists
    that step's LoRA as a save, not as the run's LoRA."""
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # fails at step 3
    run = tmp_path / "run"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=5", "--set", "save_every_n_steps=2", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr
    assert ("training failed: sd-scripts exited with 1 and wrote no LoRA file: RuntimeError: "
            "fake: CUDA out of memory; continue from melanoma-step00000002-state with --resume, "
            "or fix what failed and start over with --force (log: ") in said, said
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in stdout.splitlines() if line.count("│") == 3}
    assert rows["status"] == "failed" and rows["LoRA"] == "none: the run did not finish"
    assert rows["save"].endswith("melanoma-step00000002.safetensors"), rows
    record = _record(run)
    assert record["status"] == "failed" and "CUDA out of memory; continue from" in str(
        record["message"])

    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    assert code == 0, stdout + stderr
    argv = fake_sd.recorded()["argv"]
    assert Path(argv[argv.index("--resume") + 1]).name == "melanoma-run-step00000002-state"


def test_the_summary_lists_the_last_saves_and_counts_the_earlier_ones(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """A long run saves dozens of times: its closing table (and --resume's on the finished run)
    shows the last few saves and one row counting the earlier ones, not a row for each."""
    run = tmp_path / "run"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=14", "--set", "save_every_n_steps=2", *tools)
    assert code == 0, stdout + stderr
    saves = [Path(p) for p in _record(run)["lora_files"]][:-1]  # type: ignore[attr-defined]
    assert len(saves) > training.SHOWN_SAVES + 1, saves
    hidden = len(saves) - training.SHOWN_SAVES
    for shown in (stdout, invoke(runner, "train", prepared, "--resume", *tools)[1]):
        rows = [[cell.strip() for cell in line.split("│")[1:3]]
                for line in shown.splitlines() if line.count("│") == 3]
        listed = [value for key, value in rows if key == "save"]
        assert listed == [f"… {hidden} earlier saves in {saves[0].parent}",
                          *map(str, saves[-training.SHOWN_SAVES:])], rows


def test_a_failure_before_any_save_says_to_start_over(runner: CliRunner, prepared: Path,
                                                      fake_sd: FakeSd, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    run = tmp_path / "run"
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=5", "--set", "save_every_n_steps=4",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable)
    said = " ".join(stderr.split())
    assert code == 1 and "--resume " not in said.replace("--resume --force", "")
    assert ("RuntimeError: fake: CUDA out of memory; it saved no training state to resume "
            "from: fix what failed and start over with --resume --force (same settings) or "
            "--force (new ones)") in said, said


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
    with pytest.raises(Exception, match="already holds an interrupted run; use --resume"):
        train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], **options)  # type: ignore[arg-type]
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    second = train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], resume=True,
                   **options)  # type: ignore[arg-type]
    assert second.status == "succeeded"
    argv = fake_sd.recorded()["argv"]
    resumed = Path(argv[argv.index("--resume") + 1])
    assert resumed.name.startswith("melanoma-run-step") and resumed.is_absolute()
    assert resumed.parent == (tmp_path / "run" / "output").resolve()  # sd-scripts' cwd is its own
    assert _record(run)["resumed_from"] == str(resumed)


def test_resuming_a_finished_run_launches_nothing_unless_forced(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts cannot go on from a run's final state (it asserts max_train_steps > the
    state's step once the model is loaded): --resume says the run is finished, exit 0;
    --resume --force trains it again from step 0 with its own settings."""
    monkeypatch.chdir(tmp_path)
    run = Path("runs") / "first"
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=3", "--run-dir", run, *tools)
    assert code == 0, stdout + stderr
    fake_sd.record.unlink()
    before = checksums(run)
    final = run / "output" / "melanoma.safetensors"
    for extra in (("--run-dir", run), ("--run-dir", run, "--dry-run"), ()):
        code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *extra, *tools)
        said = " ".join(stdout.split())
        assert code == 0, stdout + stderr
        assert (f"{run} already finished, nothing to resume: its LoRA is {final} (--resume "
                "--force trains it again from step 0 with its own settings)") in said, said
        assert not fake_sd.record.exists() and checksums(run) == before

    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--force", *tools)
    assert code == 0, stdout + stderr
    assert "--resume" not in fake_sd.recorded()["argv"]
    [aside] = run.glob("output.replaced-*")
    assert (aside / "melanoma.safetensors").is_file() and final.is_file()
    record = _record(run)
    assert record["status"] == "succeeded" and record["expected_steps"] == 3
    assert record["overrides"] == ["max_train_steps=3"] and not record.get("resumed_from")


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
    with pytest.raises(UserError, match=r"prepared no image .*; fix the source"):
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


@pytest.mark.parametrize("record", ["{not json", "[]", ""])
def test_a_run_whose_record_cannot_be_read_is_neither_resumed_nor_replaced(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        record: str) -> None:
    """Without its record nothing says what the run trained on or whether it finished, so
    --resume (which would rewrite its LoRA) and a new run are refused; --force starts over."""
    run = tmp_path / "run"
    launch_with = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, *launch_with)
    assert code == 0, stdout + stderr
    (run / "run.json").write_text(record, encoding="utf-8")
    before = checksums(run)
    for again in (["--resume"], ["--resume", "--preset", "cpu-smoke"], ["--preset", "cpu-smoke"],
                  ["--preset", "cpu-smoke", "--dry-run"], ["--resume", "--force"]):
        code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, *again,
                                      *launch_with)
        line = " ".join(stderr.split())
        assert code == 1 and "Traceback" not in stdout + stderr, (again, stdout + stderr)
        assert line.startswith(f"Error: cannot read {run / 'run.json'} ("), (again, line)
        assert ("--resume needs it to continue the run: mend it, or start over with --force "
                "(without --resume)" if "--resume" in again else
                f"so what {run} holds is unknown: mend it, choose another --run-dir, or pass "
                "--force to start over") in line, (again, line)
        assert checksums(run) == before, again
    fake_sd.record.unlink()
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--force", *launch_with)
    assert code == 0 and _record(run)["status"] == "succeeded", stdout + stderr
    assert "--resume" not in fake_sd.recorded()["argv"]


def test_runs_started_in_the_same_second_without_run_dir_each_get_their_own_folder(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default run folder is named by the start time to the second: two trains started
    side by side must not meet in one folder (the second refused as 'in use')."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:
            return cls(2026, 12, 5, 22, 16, 56, tzinfo=tz)

    monkeypatch.setattr(training, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                      "--sd-scripts", fake_sd.sd_scripts, "--python",
                                      sys.executable)
        assert code == 0, stdout + stderr
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["cpu-smoke-20261205-221656", "cpu-smoke-20261205-221656-2",
                    "cpu-smoke-20261205-221656-3"]
    assert all(_record(tmp_path / "runs" / name)["status"] == "succeeded" for name in runs)


def test_a_refused_run_without_run_dir_leaves_no_folder_behind(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--set", "network_dim=0", "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable)
    assert code == 1 and "network_dim" in stderr, stdout + stderr
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_stopped_again_goes_on_from_its_newest_state(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts counts steps from 0 again on --resume (starting at the epoch that holds the
    state's step), so a resumed run's states record steps from the resume: each later --resume
    still goes on from the newest state and from where the run got to, never back to the first
    resume's state or to an earlier epoch."""
    run = tmp_path / "run"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    first = ("--preset", "cpu-smoke", "--set", "save_state=true", "--set",
             "save_every_n_epochs=1", "--set", "save_every_n_steps=100000")
    code, stdout, stderr = invoke(runner, "train", prepared, *first, "--set",
                                  "max_train_steps=1", *tools, "--dry-run")
    per_epoch = _record(run)["plan"]["steps_per_epoch"]  # type: ignore[index]
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(2 * per_epoch + 1))  # after epoch 2's state
    code, stdout, stderr = invoke(runner, "train", prepared, *first, "--set",
                                  f"max_train_steps={6 * per_epoch}", *tools, "--force")
    assert code == 1 and "continue from melanoma-000002-state" in " ".join(stderr.split())
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(per_epoch + 1))  # after one epoch's state
    for epoch in (2, 3):
        code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
        argv = fake_sd.recorded()["argv"]
        assert Path(argv[argv.index("--resume") + 1]).name == f"melanoma-{epoch:06d}-state"
        assert fake_sd.recorded()["first_epoch"] == epoch
        said = " ".join(stderr.split())
        assert code == 1 and f"continue from melanoma-{epoch + 1:06d}-state" in said, said
        assert [p.name for p in (run / "output").glob("*-state")] == [
            f"melanoma-{epoch + 1:06d}-state"]
        state = json.loads((run / "output" / f"melanoma-{epoch + 1:06d}-state"
                            / "train_state.json").read_text())
        assert state["current_step"] == (epoch + 1) * per_epoch
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    assert code == 0, stdout + stderr
    assert fake_sd.recorded()["first_epoch"] == 4 and _record(run)["status"] == "succeeded"
    assert [Path(p).stem for p in _record(run)["lora_files"]] == [  # type: ignore[attr-defined]
        *(f"melanoma-{epoch:06d}" for epoch in range(1, 6)), "melanoma"]


def test_a_resumed_runs_progress_counts_from_the_runs_start(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed sd-scripts counts its bar from 0 again to the run's whole total: the bar
    said 1/6N after a resume at 2N and stopped at 4N/6N, its time left that of the whole run."""
    run, sd_scripts = tmp_path / "run", fake_sd.sd_scripts
    settings = ["save_state=true", "save_every_n_epochs=1", "save_every_n_steps=100000"]
    planned = train(prepared, "cpu-smoke", overrides=[*settings, "max_train_steps=1"],
                    run_dir=run, dry_run=True, sd_scripts=sd_scripts, python=sys.executable)
    assert planned.plan is not None
    per_epoch = planned.plan.steps_per_epoch
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(2 * per_epoch + 1))  # after epoch 2's state
    train(prepared, "cpu-smoke", overrides=[*settings, f"max_train_steps={6 * per_epoch}"],
          run_dir=run, force=True, sd_scripts=sd_scripts, python=sys.executable)
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    seen: list[launch.StepProgress] = []
    assert train(prepared, run_dir=run, resume=True, on_progress=seen.append,
                 sd_scripts=sd_scripts, python=sys.executable).status == "succeeded"
    assert seen[0].step == 2 * per_epoch and seen[-1].step == seen[-1].total == 6 * per_epoch
    assert {progress.total for progress in seen} == {6 * per_epoch}


def test_a_run_of_more_steps_than_planned_resumes_until_its_final_state(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under max_train_epochs sd-scripts counts an epoch's steps itself (aspect-ratio buckets
    can make more than planned): a state past the planned steps is resumed from, and only the
    one it saves at the end of training is no place to go on from."""
    run = tmp_path / "run"
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    settings = ("--preset", "cpu-smoke", "--set", "save_state=true", "--set",
                "save_every_n_epochs=1", "--set", "save_every_n_steps=100000", "--set",
                "max_train_epochs=3")
    code, stdout, stderr = invoke(runner, "train", prepared, *settings, "--run-dir", run,
                                  *tools, "--dry-run")
    per_epoch = _record(run)["plan"]["steps_per_epoch"]  # type: ignore[index]
    monkeypatch.setenv("FAKE_SD_EXTRA_BATCHES", str(per_epoch))  # twice the planned steps
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(4 * per_epoch + 1))  # after epoch 2's state
    code, stdout, stderr = invoke(runner, "train", prepared, *settings, "--run-dir", run,
                                  *tools, "--force")
    said = " ".join(stderr.split())
    assert code == 1 and "continue from melanoma-000002-state with --resume" in said, said
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *tools)
    assert code == 0, stdout + stderr
    assert fake_sd.recorded()["first_epoch"] == 2

    monkeypatch.setenv("FAKE_SD_MODE", "final-save-fails")
    code, stdout, stderr = invoke(runner, "train", prepared, *settings, "--run-dir",
                                  tmp_path / "other", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and ("its newest state, melanoma-state, was saved at the end of "
                          "training, which sd-scripts cannot go on from: fix what failed and "
                          "start over with --resume --force") in said, said


def test_a_resumed_run_writes_over_none_of_its_earlier_step_saves(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed sd-scripts counts its steps from 0 again and names its step saves by that
    count: while it runs, the run's step saves are named by the run's step (NAME-run-step…),
    out of its way, so none is written over, least of all the state it resumes from; once it
    ends every step of the run has one LoRA, named by the run's step as an unbroken run's."""
    run, output = tmp_path / "run", tmp_path / "run" / "output"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    first = ("--preset", "cpu-smoke", "--set", "save_state=true", "--set",
             "save_every_n_steps=1")
    invoke(runner, "train", prepared, *first, "--set", "max_train_steps=1", *tools, "--dry-run")
    per_epoch = _record(run)["plan"]["steps_per_epoch"]  # type: ignore[index]
    assert per_epoch >= 2
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(per_epoch + 2))  # after step P + 1's state
    code, stdout, stderr = invoke(runner, "train", prepared, *first, "--set",
                                  f"max_train_steps={3 * per_epoch}", *tools, "--force")
    assert code == 1, stdout + stderr
    earlier = {path.name: path.read_bytes() for path in output.glob("*.safetensors")}
    assert len(earlier) == per_epoch + 1
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools, "--dry-run")
    assert code == 0, stdout + stderr  # shows the command as it will run, and moves nothing
    assert f"--resume {output.resolve()}/melanoma-run-step{per_epoch + 1:08d}-state" in (
        stdout.replace("\n", "")), stdout
    assert {path.name: path.read_bytes() for path in output.glob("*.safetensors")} == earlier
    assert (f"the launch resumes from melanoma-run-step{per_epoch + 1:08d}-state: train first "
            f"renames the run's step saves by the run's step (melanoma-step{per_epoch + 1:08d}"
            "-state among them)") in " ".join(stderr.split()), stderr
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    assert code == 0, stdout + stderr
    argv = fake_sd.recorded()["argv"]
    assert Path(argv[argv.index("--resume") + 1]).name == (
        f"melanoma-run-step{per_epoch + 1:08d}-state")
    assert fake_sd.recorded()["first_epoch"] == 1
    steps = range(1, 3 * per_epoch + 1)
    names = [f"melanoma-step{n:08d}.safetensors" for n in steps]
    saves = launch.lora_files(output, "melanoma")
    assert [path.name for path in saves] == [*names, "melanoma.safetensors"]
    assert [launch._lora_step(path) for path in saves[:-1]] == list(steps)
    for name in names[:per_epoch]:  # the first launch's, before the state resumed from
        assert (output / name).read_bytes() == earlier[name]
    again = f"melanoma-step{per_epoch + 1:08d}.safetensors"  # saved again from epoch 2's start
    assert (output / again).read_bytes() != earlier[again]
    assert [path.name for path in (output / launch.SUPERSEDED).iterdir()] == [
        f"melanoma-run-step{per_epoch + 1:08d}.safetensors"]
    assert (output / launch.SUPERSEDED / f"melanoma-run-step{per_epoch + 1:08d}.safetensors"
            ).read_bytes() == earlier[again]
    recorded = [Path(p).name for p in _record(run)["lora_files"]]  # type: ignore[attr-defined]
    assert recorded == [path.name for path in saves]
    assert [path.name for path in output.glob("*-state")] == ["melanoma-state"]


def _crashed_in_epoch_two(runner: CliRunner, prepared: Path, fake_sd: FakeSd, run: Path,
                          monkeypatch: pytest.MonkeyPatch, *settings: str) -> int:
    """Train `run` (a step save each step, with `settings`) for three epochs and let it crash
    one step after epoch 2's first save; returns the steps per epoch."""
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    first = ("--preset", "cpu-smoke", "--set", "save_every_n_steps=1", *settings)
    invoke(runner, "train", prepared, *first, "--set", "max_train_steps=1", *tools, "--dry-run")
    per_epoch = int(_record(run)["plan"]["steps_per_epoch"])  # type: ignore[index]
    assert per_epoch >= 2
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", str(per_epoch + 2))
    code, stdout, stderr = invoke(runner, "train", prepared, *first, "--set",
                                  f"max_train_steps={3 * per_epoch}", *tools, "--force")
    assert code == 1, stdout + stderr
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    return per_epoch


def _saved(output: Path) -> dict[str, bytes]:
    """The LoRA files and state folders' train_state.json in `output`, by name."""
    return {path.name: (path / "train_state.json" if path.is_dir() else path).read_bytes()
            for path in output.glob("melanoma*")}


def test_a_resumed_launch_that_never_starts_leaves_the_step_saves_as_they_were(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The step saves out of a resumed launch's way take their names back however it ends:
    here accelerate cannot be started, and the advice names the state as it is then."""
    run = tmp_path / "run"
    _crashed_in_epoch_two(runner, prepared, fake_sd, run, monkeypatch, "--set",
                          "save_state=true")
    before = _saved(run / "output")

    def cannot_start(*_: object, **__: object) -> launch.RunOutcome:
        raise launch.StartError("accelerate: no such file")
    monkeypatch.setattr(launch, "run", cannot_start)
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", "--run-dir", run,
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 1, stdout + stderr
    assert _saved(run / "output") == before
    newest = launch.latest_state(run / "output", "melanoma")
    assert newest is not None and newest.name in before
    assert f"continue from {newest.name} with --resume" in " ".join(
        (stdout + stderr).split()), stdout + stderr
    assert f"continue from {newest.name} with --resume" in str(_record(run)["message"])


def test_an_error_before_a_resumed_launch_gives_the_step_saves_their_names_back(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the renames and before sd-scripts starts (here in the caller's own
    on_launch) leaves no `NAME-run-step` name for push or sample to meet."""
    run = tmp_path / "run"
    _crashed_in_epoch_two(runner, prepared, fake_sd, run, monkeypatch, "--set",
                          "save_state=true")
    before = _saved(run / "output")
    moved: list[str] = []

    def stopped(_: training.TrainResult) -> None:
        moved.extend(path.name for path in (run / "output").glob(f"melanoma{launch.RUN_STEP}*"))
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(prepared, resume=True, run_dir=run, sd_scripts=fake_sd.sd_scripts,
              python=sys.executable, on_launch=stopped)
    assert moved  # the launch would have met them out of its way
    assert _saved(run / "output") == before


def test_a_dead_run_without_a_state_starts_over_with_its_saves_set_aside(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run left `running` by a process that died before any state was saved starts again
    from step 0 on --resume: its step saves, which the new launch would write over one by
    one, are kept with its record as --force keeps them."""
    run = tmp_path / "run"
    _crashed_in_epoch_two(runner, prepared, fake_sd, run, monkeypatch, "--set",
                          "save_state=false")
    before = _saved(run / "output")
    assert before and not list((run / "output").glob("*-state"))
    record = _record(run)
    (run / "run.json").write_text(json.dumps({**record, "status": "running", "pid": 1}))
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools, "--dry-run")
    assert code == 0 and "train first sets its outputs aside, in output.replaced-<time>" in (
        " ".join(stderr.split())), stdout + stderr
    assert _saved(run / "output") == before
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    assert code == 0, stdout + stderr
    said = " ".join(stderr.split())
    assert "it saved no training state, so it starts from step 0" in said, said
    [aside] = run.glob("output.replaced-*")
    assert aside.name in said, said
    assert _saved(aside) == before
    assert json.loads((aside / "run.json").read_text())["status"] == "running"
    assert _record(run)["status"] == "succeeded"


def test_a_resumed_run_keeps_the_step_saves_an_unbroken_one_keeps(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """save_last_n_steps counts back from the run's newest step save across a resume, as in a
    run never stopped: the resumed sd-scripts removes only names of its own count."""
    keep = ("--set", "save_state=true", "--set", "save_last_n_steps=2")
    broken, unbroken = tmp_path / "broken", tmp_path / "unbroken"
    per_epoch = _crashed_in_epoch_two(runner, prepared, fake_sd, broken, monkeypatch, *keep)
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", "--run-dir", broken,
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 0, stdout + stderr
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "save_every_n_steps=1", *keep, "--set",
                                  f"max_train_steps={3 * per_epoch}", "--run-dir", unbroken,
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 0, stdout + stderr
    last = 3 * per_epoch
    kept = [f"melanoma-step{step:08d}" for step in range(last - 2, last + 1)]
    for run in (broken, unbroken):
        assert sorted(_saved(run / "output")) == sorted(
            [*(f"{name}.safetensors" for name in kept), *(f"{name}-state" for name in kept),
             "melanoma.safetensors", "melanoma-state"])
    assert [path.name for path in launch.lora_files(broken / "output", "melanoma")] == [
        path.name for path in launch.lora_files(unbroken / "output", "melanoma")]
    assert not list((broken / "output").glob(f"{launch.SUPERSEDED}/*"))


def test_a_disk_that_refuses_the_renames_after_a_resumed_launch_still_records_its_end(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk that stopped a resumed launch (full) may refuse superseded/ too: the names it
    could not give back wait for the next resume, and the run's end is recorded all the same
    (not left `running`, as if its process had died)."""
    run = tmp_path / "run"
    per_epoch = _crashed_in_epoch_two(runner, prepared, fake_sd, run, monkeypatch, "--set",
                                      "save_state=true")
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    monkeypatch.setenv("FAKE_SD_CRASH_STEP", "3")  # after saving again 2 steps of epoch 2
    made = Path.mkdir

    def full(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == launch.SUPERSEDED:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        made(self, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(Path, "mkdir", full)
    result = train(prepared, resume=True, run_dir=run, sd_scripts=fake_sd.sd_scripts,
                   python=sys.executable)
    assert result.status == "failed" and _record(run)["status"] == "failed", result.message
    output = run / "output"  # the launch's save of run step P + 1 keeps the name of its count
    assert launch._lora_step(output / "melanoma-step00000001.safetensors") == per_epoch + 1
    assert (output / f"melanoma{launch.RUN_STEP}-step00000001.safetensors").is_file()
    monkeypatch.setattr(Path, "mkdir", made)  # space again: the next resume gives every save
    monkeypatch.setenv("FAKE_SD_MODE", "normal")  # its run step's name
    assert train(prepared, resume=True, run_dir=run, sd_scripts=fake_sd.sd_scripts,
                 python=sys.executable).status == "succeeded"
    saves = launch.lora_files(output, "melanoma")
    assert [path.name for path in saves] == [
        *(f"melanoma-step{step:08d}.safetensors" for step in range(1, 3 * per_epoch + 1)),
        "melanoma.safetensors"]
    assert [launch._lora_step(path) for path in saves[:-1]] == list(range(1, 3 * per_epoch + 1))
