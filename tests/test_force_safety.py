"""Nothing of the user's is lost: refused commands leave the disk as it was, --force included,
and a run folder that is not a run is never written into."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke, prepare_set
from .disk import checksums
from .fakes import FakeSd


def _train(runner: CliRunner, prepared: Path, run: Path, fake_sd: FakeSd,
           *extra: object) -> tuple[int, str, str]:
    return invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable, *extra)


@pytest.mark.parametrize("refusal", [("--set", "no_such_option=1"),
                                     ("--python", "/nonexistent/python3")])
def test_a_refused_train_force_leaves_the_succeeded_run_as_it_was(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        refusal: tuple[str, str]) -> None:
    run = tmp_path / "run"
    code, stdout, stderr = _train(runner, prepared, run, fake_sd)
    assert code == 0, stdout + stderr
    (run / "my-notes.txt").write_text("mine", encoding="utf-8")
    before = checksums(run)
    code, _, stderr = _train(runner, prepared, run, fake_sd, "--force", *refusal)
    assert code != 0 and stderr.strip()
    assert checksums(run) == before
    assert not list(run.glob("output.replaced-*"))

    code, stdout, stderr = _train(runner, prepared, run, fake_sd, "--force")
    assert code == 0, stdout + stderr
    after = checksums(run)
    assert after["my-notes.txt"] == before["my-notes.txt"]
    [aside] = run.glob("output.replaced-*")
    assert (aside / "melanoma.safetensors").is_file()
    # how the kept LoRAs were made travels with them: the run's record and files as they were
    for name in ("run.json", "config.toml", "dataset.toml", "sample_prompts.toml", "train.log"):
        assert checksums(aside)[name] == before[name], name
    assert (f"Warning: the run started over from step 0; the earlier run's LoRAs, states and "
            f"record are kept in {aside}") in " ".join(stderr.split()), stderr


def test_train_never_writes_into_a_folder_that_is_not_a_run(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    mine = tmp_path / "myconfigs"
    mine.mkdir()
    (mine / "config.toml").write_text("# my own config\n", encoding="utf-8")
    before = checksums(mine)
    for extra in ((), ("--dry-run",), ("--force",), ("--dry-run", "--force")):
        code, stdout, stderr = _train(runner, prepared, mine, fake_sd, *extra)
        assert code == 1 and "no run.json" in stderr, stdout + stderr
        assert checksums(mine) == before
        assert sorted(p.name for p in mine.iterdir()) == ["config.toml"]


def test_a_dry_run_never_replaces_a_real_runs_record(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(runner, prepared, run, fake_sd)[0] == 0
    before = checksums(run)
    code, _, stderr = _train(runner, prepared, run, fake_sd, "--dry-run", "--force")
    assert code == 1 and "another --run-dir" in stderr
    assert checksums(run) == before


def test_resume_keeps_the_runs_own_preset_overrides_and_data(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume continues the run as it was started: without --preset and --set it takes
    them from run.json, other ones (or another prepared folder, or one prepared again) are
    refused, and a resumed dry run leaves every file of the run as it was."""
    run = tmp_path / "run"
    started = ("--set", "max_train_steps=6", "--set", "save_every_n_steps=2")
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # fails at step 3, after the save at step 2
    code, stdout, stderr = _train(runner, prepared, run, fake_sd, *started)
    assert code == 1 and "--resume" in stderr, stdout + stderr
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)

    before = checksums(run)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--dry-run", *tools)
    assert code == 0, stdout + stderr
    assert "6 (--set max_train_steps)" in stdout and "melanoma-run-step00000002-state" in stdout
    assert checksums(run) == before

    for other in (("--preset", "t4-16gb"), ("--set", "max_train_steps=100"),
                  ("--preset", "cpu-smoke", "--set", "max_train_steps=7", *started[2:])):
        code, _, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                 *other, *tools)
        said = " ".join(stderr.split())
        assert code == 1 and ("was started with --preset cpu-smoke --set max_train_steps=6 "
                              "--set save_every_n_steps=2") in said, said
        assert checksums(run) == before

    copy = tmp_path / "copy"  # the folder moved or copied (Drive): the same manifest resumes
    shutil.copytree(prepared, copy)
    code, stdout, stderr = invoke(runner, "train", copy, "--run-dir", run, "--resume",
                                  "--dry-run", *tools)
    assert code == 0 and "melanoma-run-step00000002-state" in stdout, stdout + stderr
    assert checksums(run) == before
    changed = tmp_path / "changed"  # another prepared folder is not the run's
    shutil.copytree(prepared, changed)
    with (changed / "manifest.csv").open("a", encoding="utf-8") as manifest:
        manifest.write("\n")
    code, _, stderr = invoke(runner, "train", changed, "--run-dir", run, "--resume", *tools)
    assert code == 1 and (f"trained on {prepared.resolve()}, not {changed} (its manifest.csv "
                          "differs)") in " ".join(stderr.split()), stderr

    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *started, *tools)
    assert code == 0, stdout + stderr
    assert "--resume" in fake_sd.recorded()["argv"]
    tables = toml.loads((run / "config.toml").read_text(encoding="utf-8")).values()
    config = {key: value for table in tables for key, value in table.items()}
    assert config["max_train_steps"] == 6 and config["save_every_n_steps"] == 2

    with (prepared / "manifest.csv").open("a", encoding="utf-8") as manifest:
        manifest.write("\n")
    code, _, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume", *tools)
    assert code == 1 and "manifest.csv changed" in " ".join(stderr.split())


def test_resume_finds_a_preset_file_given_by_a_relative_path_or_asks_for_it(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started with `--preset mine.toml` in one folder resumes from any other, with the
    copy it keeps even when that file is gone; a run that kept none (an earlier version's)
    asks for it then (never a shipped preset of the same name), and a prepared folder that is
    gone is named as such."""
    from medsynth_kohya.resources import data_dir

    start, elsewhere, moved = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (start, elsewhere, moved):
        folder.mkdir()
    shutil.copy(data_dir("configs") / "cpu-smoke.toml", start / "t4-16gb.toml")
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    run = tmp_path / "run"
    monkeypatch.chdir(start)
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # a run left to resume: failed at step 3
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "t4-16gb.toml",
                                  "--set", "max_train_steps=4", "--set", "save_every_n_steps=2",
                                  "--run-dir", run, *tools)
    assert code == 1 and "--resume" in stderr, stdout + stderr
    monkeypatch.chdir(elsewhere)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--dry-run", *tools)
    assert code == 0 and "4 (--set max_train_steps)" in stdout, stdout + stderr

    (start / "t4-16gb.toml").rename(moved / "t4-16gb.toml")
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--dry-run", *tools)
    assert code == 0 and "4 (--set max_train_steps)" in stdout, stdout + stderr
    shutil.rmtree(run / "preset")
    code, _, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "t4-16gb.toml, which is gone; give that preset again" in said, said
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--preset", moved / "t4-16gb.toml", "--dry-run", *tools)
    assert code == 0 and "4 (--set max_train_steps)" in stdout, stdout + stderr

    shutil.rmtree(prepared)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *tools)
    assert code == 1 and "does not exist" in stderr and "Traceback" not in stdout + stderr


def test_resume_refuses_a_folder_prepared_again_with_other_repeats_or_captions(
        runner: CliRunner, prepared: Path, isic2020: SyntheticSet, fake_sd: FakeSd,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What sd-scripts trains on beyond the manifest (the class folder's repeats, a caption's
    text) changed between an interrupt and --resume: the resumed steps would train on other
    data than the first ones, so --resume refuses, naming what changed; --resume --force
    starts the run over on the folder as it is now."""
    run = tmp_path / "run"
    prepare_set(isic2020, prepared, target_steps=30, epochs=2)
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # fails at step 3, after the save at step 2
    code, stdout, stderr = _train(runner, prepared, run, fake_sd, "--set", "max_train_steps=6",
                                  "--set", "save_every_n_steps=2")
    assert code == 1 and "--resume" in stderr, stdout + stderr
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    manifest_sha256 = files.sha256(prepared / "manifest.csv")
    repeats = json.loads((run / "run.json").read_text(encoding="utf-8"))["dataset"]["repeats"]

    prepare_set(isic2020, prepared, target_steps=90, epochs=2)
    assert files.sha256(prepared / "manifest.csv") == manifest_sha256
    again = int(next((prepared / "img").iterdir()).name.split("_")[0])
    before = checksums(run)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert said == (f"Error: {prepared} changed since {run} started (repeats {repeats} → "
                    f"{again}, target steps 30 → 90), so the resumed steps would train "
                    "on other data than the first ones: prepare it back as it was, or start "
                    "the run over on it with --resume --force"), said
    assert checksums(run) == before

    prepare_set(isic2020, prepared, target_steps=30, epochs=2)
    caption = next((prepared / "img" / f"{repeats}_melanoma").glob("*.txt"))
    caption.write_text(caption.read_text(encoding="utf-8") + ", edited", encoding="utf-8")
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *tools)
    assert code == 1 and "(its captions)" in " ".join(stderr.split()), stdout + stderr
    assert checksums(run) == before

    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--force", *tools)
    assert code == 0 and "--resume" not in fake_sd.recorded()["argv"], stdout + stderr



def test_resume_trains_with_the_preset_as_it_started_however_its_file_changed(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A preset file edited between an interrupt and --resume (or a shipped preset changed by
    an upgrade): the run goes on with the preset it started with, kept in its run folder;
    the edited file given again with --preset is refused, naming it."""
    from medsynth_kohya.resources import data_dir

    mine = tmp_path / "mine.toml"
    text = (data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8")
    mine.write_text(text.replace("max_train_steps = 2", "max_train_steps = 6").replace(
        "save_every_n_steps = 1", "save_every_n_steps = 2"), encoding="utf-8")
    run = tmp_path / "run"
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # fails at step 3, after the save at step 2
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", mine, "--run-dir", run,
                                  *tools)
    assert code == 1 and "--resume" in stderr, stdout + stderr
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    edited = mine.read_text(encoding="utf-8").replace("learning_rate = 1e-4",
                                                      "learning_rate = 5e-4")
    mine.write_text(edited.replace("network_dim = 4", "network_dim = 8").replace(
        "max_train_steps = 6", "max_train_steps = 9"), encoding="utf-8")

    before = checksums(run)
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  "--preset", mine, *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert said == (f"Error: preset file {mine} changed since {run} started; --resume trains "
                    f"with the preset as it started (kept in {run / 'preset' / 'mine.toml'}): "
                    "leave out --preset, or start a new run with it in another --run-dir"), said
    assert checksums(run) == before

    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", run, "--resume",
                                  *tools)
    assert code == 0 and "--resume" in fake_sd.recorded()["argv"], stdout + stderr
    tables = toml.loads((run / "config.toml").read_text(encoding="utf-8")).values()
    config = {key: value for table in tables for key, value in table.items()}
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    for options in (config, record["config"]):
        assert (options["learning_rate"], options["network_dim"],
                options["max_train_steps"]) == (1e-4, 4, 6)
    assert record["preset"] == "mine" and record["expected_steps"] == 6
