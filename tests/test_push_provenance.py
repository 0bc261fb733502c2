"""`push --samples SYNTH --eval REPORT` publishes only a set, and the report of a set, that the
pushed run's own LoRA made: another LoRA's images or figures on this model's card mislead."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.evaluation import features

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def _sampled(runner: CliRunner, fake: FakeGen, run: Path, prepared: Path, out: Path,
             base: Path) -> Path:
    """A set `sample` makes with (a copy of) the run's final LoRA."""
    lora = out.parent / f"{out.name}-lora" / "lora.safetensors"
    lora.parent.mkdir()
    shutil.copyfile(run / "output" / "melanoma.safetensors", lora)
    code, stdout, stderr = invoke(runner, "sample", "--lora", lora, "--n", 3, "--out", out,
                                  "--like", prepared / "manifest.csv", "--base-model", base,
                                  "--width", 64, "--height", 64, "--steps", 2,
                                  "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    assert code == 0, stdout + stderr
    return out


def test_samples_and_a_report_of_another_lora_are_refused(
        runner: CliRunner, fake_gen: FakeGen, fake_hub: FakeHub, isic2020: SyntheticSet,
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"not a real checkpoint")
    run = make_run(tmp_path / "first")
    other = make_run(tmp_path / "second", step=20)  # another LoRA, the same file name
    mine = _sampled(runner, fake_gen, run, prepared, tmp_path / "mine", base)
    theirs = _sampled(runner, fake_gen, other, prepared, tmp_path / "theirs", base)
    for synth in (mine, theirs):
        code, stdout, stderr = invoke(runner, "evaluate", "--real", isic2020.root,
                                      "--synthetic", synth, "--out", f"{synth}-report")
        assert code == 0, stdout + stderr
    push = ("push", run, "--repo-id", REPO, "--endpoint", fake_hub.url, "--dry-run")
    for option, folder in (("--samples", theirs), ("--eval", f"{theirs}-report")):
        code, stdout, stderr = invoke(runner, *push, option, folder)
        assert code == 1, stdout
        [line] = stderr.strip().splitlines()
        assert f"{option} {folder}" in line and "another LoRA" in line
        assert "melanoma.safetensors" in line and "Traceback" not in stderr
    code, stdout, stderr = invoke(runner, *push, "--samples", mine, "--eval", f"{mine}-report")
    assert code == 0, stdout + stderr
    copied = tmp_path / "copied"  # as `cp -r theirs/* copied/` copies it: no .medsynth/
    copied.mkdir()
    for entry in theirs.iterdir():
        if not entry.name.startswith("."):
            (shutil.copytree if entry.is_dir() else shutil.copy)(entry, copied / entry.name)
    code, stdout, stderr = invoke(runner, *push, "--samples", copied)
    assert code == 1 and "--samples" in stderr and "another LoRA" in stderr, stdout + stderr
    mixed = tmp_path / "mixed"
    shutil.copytree(copied, mixed)
    theirs_rows = (theirs / "metadata.csv").read_text(encoding="utf-8").splitlines()
    mine_rows = (mine / "metadata.csv").read_text(encoding="utf-8").splitlines()
    (mixed / "metadata.csv").write_text("\n".join([*theirs_rows[:2], *mine_rows[2:]]) + "\n",
                                        encoding="utf-8")
    code, stdout, stderr = invoke(runner, *push, "--samples", mixed)
    line = " ".join(stderr.split())
    assert code == 1 and "names images of 2 LoRAs (lora_sha256 " in line, stdout + stderr
    code, stdout, stderr = invoke(runner, *push, "--samples", mine, "--eval",
                                  f"{theirs}-report")
    assert code == 1 and "--eval" in stderr and "another LoRA" in stderr
    assert not fake_hub.repos
