"""A synthetic set as it is shared: its metadata.csv names no local folder, and a set that
`sample` did not finish is not published or evaluated as if it were whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen

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
