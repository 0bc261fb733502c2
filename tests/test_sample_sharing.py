"""A synthetic set as it is shared: its metadata.csv names no local folder, and a set that
`sample` did not finish is not published or evaluated as if it were whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen, install_gpus, interrupt_at_third_image
from .fake_hub import TOKEN, FakeHub

SMALL = ("--width", 64, "--height", 64, "--steps", 2)
HUB_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


def _sample(runner: CliRunner, fake: FakeGen, *args: object) -> tuple[int, str, str]:
    return invoke(runner, "sample", *args, "--sd-scripts", fake.sd_scripts, "--python", PYTHON)


def _one_line(stderr: str) -> str:
    return " ".join(stderr.split())


def test_metadata_names_a_local_base_model_without_its_folders(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The run's base model is a local file: metadata.csv says `<local>/NAME`, as push
    publishes a path, while the generator still gets the full path; a Hub id is kept."""
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", trained, "--n", 3, "--out", out,
                                   *SMALL)
    assert code == 0, stdout + stderr
    [call] = fake_gen.calls()
    assert call["args"]["ckpt"] == str((tmp_path / "base.safetensors").resolve())
    metadata = pd.read_csv(out / "metadata.csv", dtype=str)
    assert set(metadata["base_model"]) == {"<local>/base.safetensors"}
    text = (out / "metadata.csv").read_text(encoding="utf-8")
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text
    assert str(Path.home()) not in text
    hub = tmp_path / "hub-model"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", trained, "--n", 2, "--out", hub,
                                   "--base-model", HUB_MODEL, *SMALL)
    assert code == 0, stdout + stderr
    assert set(pd.read_csv(hub / "metadata.csv", dtype=str)["base_model"]) == {HUB_MODEL}


def test_an_interrupted_set_is_refused_by_push_and_evaluate_until_finished(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, fake_hub: FakeHub,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # a dry run asks whoami, so a token the Hub takes
    out = tmp_path / "synth"
    interrupt_at_third_image(out)
    args = ("--lora", trained, "--n", 10, "--out", out, *SMALL)
    code, _, stderr = _sample(runner, fake_gen, *args)
    assert code == 130
    said = _one_line(stderr)
    assert said.count("re-run the same command") == 1 and "of 10 images" in said
    made = len(list((out / "images").glob("*.png")))
    assert 2 <= made < 10 and (out / "metadata.csv").is_file()
    push = ("push", trained, "--repo-id", "alice/mel", "--samples", out, "--endpoint",
            fake_hub.url, "--dry-run")
    evaluate = ("evaluate", "--synthetic", out, "--out", tmp_path / "report", "--lora", trained)
    for command in (push, evaluate):
        code, _, stderr = invoke(runner, *command)
        said = _one_line(stderr)
        assert code == 1 and "Traceback" not in stderr, stderr
        assert f"{out} is unfinished: sample was interrupted with {made} of 10 images" in said
        assert "re-run the same `medsynth-kohya sample` command" in said
    assert fake_hub.requests == [] and not (tmp_path / "report" / "report.json").exists()
    monkeypatch.delenv("FAKE_GEN_SLOW")
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0, stdout + stderr
    code, stdout, stderr = invoke(runner, *push)
    assert code == 0, stdout + stderr


def test_a_set_interrupted_after_its_last_image_is_finished_not_made_by_a_rerun(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while the generator winds down after the last image: the message says the
    re-run finishes the set, not that it makes the rest, and the re-run makes no image."""
    monkeypatch.setenv("FAKE_GEN_LINGER", "30")
    out = tmp_path / "synth"
    interrupt_at_third_image(out)
    args = ("--lora", trained, "--n", 3, "--out", out, *SMALL)
    code, _, stderr = _sample(runner, fake_gen, *args)
    said = _one_line(stderr)
    assert code == 130 and "stopped with 3 of 3 images" in said, stderr
    assert "re-run the same command to finish the set" in said and "make the rest" not in said
    monkeypatch.delenv("FAKE_GEN_LINGER")
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0 and "all 3 images were already there" in " ".join(stdout.split()), stdout


def test_a_set_whose_shards_are_not_all_made_is_refused_by_push(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, fake_hub: FakeHub,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # a dry run asks whoami, so a token the Hub takes
    out = tmp_path / "synth"
    args = ("--lora", trained, "--n", 6, "--out", out, *SMALL)
    push = ("push", trained, "--repo-id", "alice/mel", "--samples", out, "--endpoint",
            fake_hub.url, "--dry-run")
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--shard", "1/2")
    assert code == 0, stdout + stderr
    code, _, stderr = invoke(runner, *push)
    assert code == 1 and f"{out} is unfinished: its shards have made 3 of 6 images" in (
        _one_line(stderr))
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--shard", "2/2")
    assert code == 0, stdout + stderr
    code, stdout, stderr = invoke(runner, *push)
    assert code == 0, stdout + stderr


@pytest.mark.parametrize("first", [(), ("--shard", "1/1")], ids=["whole", "sharded"])
def test_a_set_extended_by_shards_is_unfinished_until_every_shard_has_run(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, fake_hub: FakeHub,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: tuple[str, ...]) -> None:
    """A finished set of 5 is extended to 11 by `--shard 1/2` alone: the set is 6 of 11, and
    push and evaluate refuse it until shard 2/2 has run."""
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.sampling.machines import ensure_made

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # a dry run asks whoami, so a token the Hub takes
    out = tmp_path / "synth"
    args = ("--lora", trained, "--out", out, *SMALL)
    push = ("push", trained, "--repo-id", "alice/mel", "--samples", out, "--endpoint",
            fake_hub.url, "--dry-run")
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--n", 5, *first)
    assert code == 0, stdout + stderr
    ensure_made(out, "evaluate")
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--n", 11, "--shard", "1/2")
    assert code == 0, stdout + stderr
    said = f"{out} is unfinished: its shards have made 6 of 11 images"
    with pytest.raises(UserError, match="unfinished") as refused:
        ensure_made(out, "evaluate")
    assert said in str(refused.value)
    code, _, stderr = invoke(runner, *push)
    assert code == 1 and said in _one_line(stderr)
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--n", 11, "--shard", "2/2")
    assert code == 0, stdout + stderr
    ensure_made(out, "evaluate")
    assert len(pd.read_csv(out / "metadata.csv")) == 11
    code, stdout, stderr = invoke(runner, *push)
    assert code == 0, stdout + stderr


def test_a_failed_whole_set_run_completed_by_shards_is_finished(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shards that make the rest of a set a whole-set run left unfinished mark it as
    theirs: once they have made every image, it is no longer taken for the failed run."""
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.sampling.machines import ensure_made

    install_gpus(fake_gen, tmp_path, monkeypatch, 2)
    out = tmp_path / "synth"
    args = ("--lora", trained, "--n", 8, "--out", out, *SMALL)
    monkeypatch.setenv("FAKE_GEN_CRASH", "1:1")
    code, _, _ = _sample(runner, fake_gen, *args, "--num-gpus", 2)
    assert code == 1
    with pytest.raises(UserError, match="sample failed with 5 of 8 images"):
        ensure_made(out, "evaluate")
    monkeypatch.delenv("FAKE_GEN_CRASH")
    for shard in ("1/2", "2/2"):
        code, stdout, stderr = _sample(runner, fake_gen, *args, "--shard", shard)
        assert code == 0, stdout + stderr
    ensure_made(out, "evaluate")
    assert len(pd.read_csv(out / "metadata.csv")) == 8
