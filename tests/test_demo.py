"""`demo --dry-run`, which never trains, and what demo says over a run it trained for real:
advice that demo's own options can follow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.pipeline import demo
from medsynth_kohya.training.record import RunFolder

from .conftest import invoke, one_line_error
from .disk import checksums
from .fake_gen import PYTHON, install_gpus, make_fake_gen


@pytest.fixture
def cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine where demo trains for real: a (fake) CUDA GPU, sd-scripts and the SDXL base
    model cached. Returns the file the fake trainer writes when it is launched."""
    fake = make_fake_gen(tmp_path / "fake", monkeypatch)
    install_gpus(fake, tmp_path / "fake", monkeypatch, 1)
    monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", str(fake.sd_scripts))
    monkeypatch.setenv("MEDSYNTH_SD_PYTHON", PYTHON)
    monkeypatch.setattr(demo, "base_model_cached", lambda *_: True)
    return tmp_path / "fake" / "record.json"


def test_a_demo_dry_run_on_a_machine_that_could_train_launches_nothing_and_says_so(
        runner: CliRunner, tmp_path: Path, cuda: Path) -> None:
    """demo had no --dry-run: on a CUDA machine with sd-scripts and the base model it always
    trained. --dry-run generates, prepares and renders as ever, and launches nothing."""
    out = tmp_path / "demo"
    result = demo.run_demo(out, n=8, workers=1, dry_run=True)
    assert result.training.status == "dry-run" and result.can_train
    assert not cuda.exists()
    assert (out / "prepared" / "manifest.csv").is_file() and (out / "run" / "config.toml").is_file()
    assert RunFolder(out / "run").load().status == "dry-run"

    code, stdout, stderr = invoke(runner, "demo", "--out", out, "--n", 8, "--dry-run")
    said = " ".join(stdout.split())
    assert code == 0, stdout + stderr
    assert (f"Training run rendered and checked in {out / 'run'} ({result.training.expected_steps}"
            " steps). --dry-run launched nothing. Without --dry-run, this machine runs (in "
            f"{result.training.command.cwd}):") in said, said
    assert not cuda.exists()
    assert demo.run_demo(out, n=8, workers=1).training.status == "succeeded" and cuda.exists()


def test_a_demo_dry_run_on_a_machine_that_cannot_train_says_where_it_would_run(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sd-scripts, the command shown installs it first: its `cd` named a folder that
    did not exist."""
    import shlex

    from medsynth_kohya.sdscripts import checkout

    monkeypatch.setattr(checkout, "checkout_root", lambda: None)  # as from a wheel
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    code, stdout, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", "--n", 8,
                                  "--dry-run")
    assert code == 0, stdout + stderr
    heading, line = stdout.splitlines()[-2:]
    assert heading.endswith(f"steps). On a GPU machine it runs (in {checkout.user_dir()}, "
                            "which `medsynth-kohya install-sd-scripts` makes first):"), heading
    assert line.startswith("medsynth-kohya install-sd-scripts && cd "
                           f"{shlex.quote(str(checkout.user_dir()))} && "), line


def test_a_demo_over_its_finished_run_gives_advice_demo_can_follow(
        runner: CliRunner, tmp_path: Path, cuda: Path) -> None:
    """A demo run again after its training succeeded said '--resume --force trains it again',
    options demo does not have; --dry-run over it changes nothing of the run."""
    out = tmp_path / "demo"
    run, final = out / "run", out / "run" / "output" / "melanoma.safetensors"
    assert demo.run_demo(out, n=8, workers=1).training.status == "succeeded"
    cuda.unlink()
    before = checksums(run)
    note = (f"{run} already finished, nothing to resume: its LoRA is {final} (to train it "
            f"again from step 0, choose another --out or delete {run})")
    for dry_run in (False, True):
        again = demo.run_demo(out, n=8, workers=1, dry_run=dry_run)
        assert (again.training.status, again.training.message) == ("succeeded", note)
    code, stdout, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0 and f"Training succeeded: {note}" in " ".join(stdout.split()), stderr
    assert "--resume" not in stdout + stderr and "--force" not in stdout + stderr
    assert checksums(run) == before and not cuda.exists()

    final.unlink()
    line = one_line_error(*invoke(runner, "demo", "--out", out, "--n", 8))
    assert line == (f"Error: {run} finished, but its LoRA {final} is gone; to train it again "
                    f"from step 0, choose another --out or delete {run}"), line


def test_a_demo_dry_run_over_a_run_that_stopped_before_saving_is_refused(
        runner: CliRunner, tmp_path: Path, cuda: Path) -> None:
    """The demo would train such a run over from step 0; a dry run could show that only by
    replacing its record, which a real training's record never is without --force."""
    out = tmp_path / "demo"
    assert demo.run_demo(out, n=8, workers=1, dry_run=True).training.status == "dry-run"
    folder = RunFolder(out / "run")
    folder.save(replace(folder.load(), status="failed"))  # as a real training that crashed
    before = checksums(out)
    said = (f"{out / 'run'} holds a real training that stopped before it saved a state to go "
            "on from, whose record --dry-run would replace; run demo without --dry-run to "
            "train it over, or choose another --out")
    with pytest.raises(UserError) as refused:
        demo.run_demo(out, n=8, workers=1, dry_run=True)
    assert str(refused.value) == said
    line = one_line_error(*invoke(runner, "demo", "--out", out, "--n", 8, "--dry-run"))
    assert line == f"Error: {said}"
    assert checksums(out) == before and not cuda.exists()
