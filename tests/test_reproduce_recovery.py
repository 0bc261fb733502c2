"""`reproduce` re-run after outputs went missing or a stage was interrupted: it remakes what
is gone instead of skipping it, shows its plan before any stage runs, and records a Ctrl-C."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.pipeline.reproduce import reproduce
from medsynth_kohya.sampling import sample

from .conftest import invoke
from .disk import checksums
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .fakes import interrupt_after

QUICK = ("max_train_steps=12", "save_every_n_steps=3")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_original_gen(tmp_path, monkeypatch)


def _options(fake: FakeGen) -> dict[str, Any]:
    return {"n": 3, "overrides": QUICK, "sd_scripts": fake.sd_scripts, "python": PYTHON}


def _actions(result: Any) -> dict[str, str]:
    return {stage.name: stage.action for stage in result.stages}


def test_a_deleted_lora_is_trained_again(isic2020: SyntheticSet, tmp_path: Path,
                                         fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    lora = reproduce(isic2020.root, workdir, **_options(fake)).lora
    assert lora is not None
    lora.unlink()
    again = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(again)["train"] == "run"
    assert any(f"LoRA {lora} is gone" in warning for warning in again.warnings)
    assert again.lora == lora and lora.is_file()


def test_a_deleted_synthetic_image_is_made_again(isic2020: SyntheticSet, tmp_path: Path,
                                                 fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    reproduce(isic2020.root, workdir, **_options(fake))
    images = workdir / "synthetic" / "images"
    victim = sorted(images.glob("*.png"))[1]
    victim.unlink()
    again = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(again) == {"prepare": "skip (inputs unchanged)",
                               "train": "skip (inputs unchanged)", "sample": "run",
                               "push": "off"}
    assert victim.is_file() and len(list(images.glob("*.png"))) == 3


def test_ctrl_c_while_sampling_after_the_plan_was_shown(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan is printed before any stage runs; a Ctrl-C while sampling (which stops the
    generator: sample returns "interrupted") exits 130 and is recorded as such."""
    real = sample.sample

    def interrupted(*args: Any, **kwargs: Any) -> sample.SampleResult:
        return replace(real(*args, **kwargs), status="interrupted")

    monkeypatch.setattr(sample, "sample", interrupted)
    workdir = tmp_path / "work"
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                  "--n", 2, *(w for o in QUICK for w in ("--set", o)),
                                  "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    assert code == 130 and "interrupted" in stderr
    assert f"reproduce plan: {workdir}" in stdout
    plan = stdout.split("reproduce plan", 1)[1]
    for stage, action in (("prepare", "run"), ("train", "run"), ("sample", "run"),
                          ("push", "off")):
        assert re.search(rf"{stage}\s*│ {action}:", plan), plan
    stages = json.loads((workdir / "reproduce.json").read_text(encoding="utf-8"))["stages"]
    assert stages["sample"]["status"] == "interrupted"
    assert stages["train"]["status"] == "done"


@pytest.mark.parametrize("damage", ["{oops", "[]", '{"stages": 3}', '{"stages": {"train": "done"}}',
                                    '{"stages": {"prepare": ["done"], "sample": 3}}'])
def test_a_damaged_record_is_one_line_and_changes_nothing(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        damage: str) -> None:
    workdir = tmp_path / "work"
    (workdir / "reproduce.json").parent.mkdir()
    (workdir / "reproduce.json").write_text(damage, encoding="utf-8")
    for extra in ((), ("--dry-run",)):
        code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                      "--sd-scripts", fake.sd_scripts, "--python", PYTHON,
                                      *extra)
        assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
        assert f"{workdir / 'reproduce.json'} is damaged" in " ".join(stderr.split()), stderr
    assert [p.name for p in workdir.iterdir()] == ["reproduce.json"]


@pytest.mark.parametrize("gone", ["prepared", "prepared/img", "prepared/manifest.csv",
                                  "an image", "a caption"])
def test_a_deleted_part_of_the_prepared_folder_is_prepared_again(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen, gone: str) -> None:
    """What training reads of the prepared folder, deleted since, is prepared again (as a
    deleted LoRA is trained again) rather than skipped for a training that cannot read it."""
    import shutil

    workdir = tmp_path / "work"
    reproduce(isic2020.root, workdir, **_options(fake))
    folder = next((workdir / "prepared" / "img").iterdir())
    suffix = {"an image": ".jpg", "a caption": ".txt"}.get(gone)
    path = next(folder.glob(f"*{suffix}")) if suffix else workdir / gone
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    again = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(again)["prepare"] == "run" and again.status == "succeeded"
    assert path.exists()


def test_a_prepare_interrupted_in_the_prepared_folder_is_prepared_again(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A prepare run by hand into WORKDIR/prepared and stopped midway leaves captions of
    unknown age: reproduce prepares again instead of training on them."""
    from medsynth_kohya import files
    from medsynth_kohya.data.prepared import PreparedFolder

    workdir = tmp_path / "work"
    reproduce(isic2020.root, workdir, **_options(fake))
    files.write_json(PreparedFolder(workdir / "prepared").unfinished_file, {})
    planned = reproduce(isic2020.root, workdir, dry_run=True, **_options(fake))
    assert [planned.stages[0].action, planned.stages[1].action] == ["run", "run"]


@pytest.mark.parametrize("earlier", ["interrupted", "lora deleted"])
def test_an_unreadable_run_record_is_refused_not_trained_over(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch, earlier: str) -> None:
    workdir = tmp_path / "work"
    if earlier == "interrupted":
        monkeypatch.setenv("FAKE_SD_MODE", "slow")
        with pytest.raises(KeyboardInterrupt):
            reproduce(isic2020.root, workdir, on_progress=interrupt_after(4), **_options(fake))
        monkeypatch.setenv("FAKE_SD_MODE", "normal")
    else:
        lora = reproduce(isic2020.root, workdir, **_options(fake)).lora
        assert lora is not None
        lora.unlink()
    record = workdir / "run" / "run.json"
    record.write_text("{damaged", encoding="utf-8")
    before = checksums(workdir / "run")
    command = ("reproduce", isic2020.root, "--workdir", workdir, "--n", "3",
               *(part for o in QUICK for part in ("--set", o)),
               "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    refusal = (f"train: cannot read {record} (Expecting property name enclosed in double "
               "quotes: line 1 column 2 (char 1)); reproduce needs it to continue or set "
               f"aside the earlier training: mend it, or move {workdir / 'run'} elsewhere to "
               "train again from step 0")
    code, stdout, stderr = invoke(runner, *command, "--dry-run")
    assert code == 0, stdout + stderr
    assert f"a real run would stop at: {refusal}" in " ".join(stderr.split()), stderr
    code, stdout, stderr = invoke(runner, *command)
    assert code == 1 and stderr == f"Error: {refusal}\n", stdout + stderr
    assert checksums(workdir / "run") == before


def test_a_run_whose_final_lora_save_failed_is_trained_over_by_the_same_command(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts saved its final state (step 12 of 12), then failed to save the final LoRA:
    nothing can go on from that state, so the same command trains again from step 0 (the old
    output kept aside) instead of resuming, and says so before it starts."""
    workdir = tmp_path / "work"
    monkeypatch.setenv("FAKE_SD_MODE", "final-save-fails")
    with pytest.raises(UserError) as failed:
        reproduce(isic2020.root, workdir, **_options(fake))
    assert "command again to train over" in str(failed.value), failed.value
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    planned = reproduce(isic2020.root, workdir, dry_run=True, **_options(fake))
    assert _actions(planned)["train"] == "run"
    start_over = ("the earlier training's newest state, melanoma-state, is at step 12 of 12, "
                  "which sd-scripts cannot go on from, and it left no complete final LoRA: "
                  "training again from step 0")
    assert any(start_over in warning for warning in planned.warnings), planned.warnings
    command = ("reproduce", isic2020.root, "--workdir", workdir, "--n", "3",
               *(part for o in QUICK for part in ("--set", o)),
               "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    code, stdout, stderr = invoke(runner, *command)
    assert code == 0, stdout + stderr
    assert start_over in " ".join(stderr.split()), stderr
    assert re.search(r"train\s*│ run:", stdout), stdout
    assert (workdir / "run" / "output" / "melanoma.safetensors").is_file()
    assert json.loads((workdir / "run" / "run.json").read_text())["status"] == "succeeded"
    kept = list((workdir / "run").glob("output.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "melanoma-state").is_dir(), kept


def test_a_run_stopped_after_its_final_lora_was_written_goes_on_to_sample(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A stop that landed after sd-scripts wrote the final state and the complete final LoRA
    leaves an "interrupted" run: its LoRA is the training's result, so a re-run samples it
    instead of resuming from a state at the last step (which sd-scripts refuses)."""
    workdir = tmp_path / "work"
    done = reproduce(isic2020.root, workdir, **_options(fake))
    assert done.lora is not None
    state_file = workdir / "reproduce.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state["stages"]["train"]["status"] = "interrupted"
    del state["stages"]["sample"]
    state_file.write_text(json.dumps(state), encoding="utf-8")
    record = workdir / "run" / "run.json"
    record.write_text(record.read_text(encoding="utf-8").replace(
        '"status": "succeeded"', '"status": "interrupted"'), encoding="utf-8")
    lora = done.lora.read_bytes()
    again = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(again)["train"].startswith("skip"), _actions(again)
    assert again.lora == done.lora and done.lora.read_bytes() == lora
    assert not [w for w in again.warnings if "interrupted" in w], again.warnings
    assert not list((workdir / "run").glob("output.*")), list((workdir / "run").iterdir())
    third = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(third)["train"] == "skip (inputs unchanged)"


def test_a_stop_that_came_as_training_finished_stops_before_sampling(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Training that finished before the stop reached it succeeded (it is not trained again),
    but the stop still ends reproduce there, before sampling."""
    from medsynth_kohya.training import train

    real = train.train

    def late(*args: Any, **kwargs: Any) -> train.TrainResult:
        return replace(real(*args, **kwargs), stopped=True)

    monkeypatch.setattr(train, "train", late)
    workdir = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        reproduce(isic2020.root, workdir, **_options(fake))
    stages = json.loads((workdir / "reproduce.json").read_text(encoding="utf-8"))["stages"]
    assert stages["train"]["status"] == "done" and "sample" not in stages
    assert not (workdir / "synthetic").exists()
    monkeypatch.setattr(train, "train", real)
    again = reproduce(isic2020.root, workdir, **_options(fake))
    assert _actions(again)["train"] == "skip (inputs unchanged)"
