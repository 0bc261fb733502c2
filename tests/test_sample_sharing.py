"""A synthetic set as it is shared: its metadata.csv names no local folder, and a set that
`sample` did not finish is not published or evaluated as if it were whole."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen
from .fake_hub import FakeHub

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
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    out = tmp_path / "synth"
    main = threading.get_ident()

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if list(out.glob(".medsynth/shards/*/out/im_000002.png")):
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt, daemon=True).start()
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


def test_a_set_whose_shards_are_not_all_made_is_refused_by_push(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, fake_hub: FakeHub,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
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
