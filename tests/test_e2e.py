"""Opt-in: `train --preset cpu-smoke` then `sample` on the real sd-scripts, on CPU, with a
random SDXL model.

Run with `MEDSYNTH_SD_PYTHON=/path/to/sd/python python -m pytest -m e2e tests/test_e2e.py`.
Needs ~7 GiB of disk for the checkpoint (kept in $MEDSYNTH_E2E_CACHE when set) and ~21 GB of
memory; building the checkpoint takes 1 to 2 min, the two training steps about as long, and
the two 64 px images under a minute. The training runs once and both tests use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import make_dataset
from medsynth_kohya.sdscripts import launch, smoke_model
from medsynth_kohya.training.train import train

from .conftest import REPO, invoke
from .fakes import interrupt_after

pytestmark = pytest.mark.e2e

SEED = 1234
"""The seed of the sampled set: its two images get the seeds SEED and SEED + 1."""
_RICH_LINE = re.compile(r"^[\d/:\[\] -]*(?:INFO|WARNING|ERROR|DEBUG) .*\S\.py:\d+$")
"""A line of sd-scripts' rich log handler with its level and `file.py:line` columns."""


def _unwrapped(log: str) -> bool:
    """Whether rich wrote the log wider than 80 columns (COLUMNS reached sd-scripts)."""
    return any(len(line) > 80 and _RICH_LINE.match(line) for line in log.splitlines())


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata


def _png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file (sdxl_gen_img.py writes prompt, seed, steps... there)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    found, offset = {}, 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            found[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, value = body.partition(b"\x00")
            found[key.decode("latin-1")] = zlib.decompress(value[1:]).decode("latin-1")
        offset += 12 + length
    return found


@pytest.fixture(scope="session")
def sd_runtime() -> tuple[Path, str]:
    """The sd-scripts checkout and a Python that can run it (skipped otherwise)."""
    folder = Path(os.environ.get("MEDSYNTH_SD_SCRIPTS", REPO / "vendor" / "sd-scripts"))
    if not (folder / "sdxl_train_network.py").is_file():
        pytest.skip("no sd-scripts checkout (git submodule update --init vendor/sd-scripts)")
    python = os.environ.get("MEDSYNTH_SD_PYTHON") or sys.executable
    try:
        found = subprocess.run([python, "-c", "import torch, accelerate"], capture_output=True,
                               timeout=300, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if not found:
        pytest.skip(f"{python} cannot import torch and accelerate (set MEDSYNTH_SD_PYTHON)")
    return folder, python


@pytest.fixture(scope="session")
def smoke_model_files(sd_runtime: tuple[Path, str],
                      tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The random SDXL checkpoint and tokenizer folder, built once ($MEDSYNTH_E2E_CACHE)."""
    folder, python = sd_runtime
    cache = os.environ.get("MEDSYNTH_E2E_CACHE")
    out = Path(cache) if cache else tmp_path_factory.mktemp("smoke-model")
    subprocess.run([python, "-m", "medsynth_kohya.sdscripts.smoke_model", "--out", str(out),
                    "--sd-scripts", str(folder)], cwd=REPO, check=True, timeout=1800,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return out / smoke_model.CHECKPOINT, out / smoke_model.TOKENIZERS


@dataclass(frozen=True)
class TrainedRun:
    """The cpu-smoke training, as the CLI left it."""

    run: Path
    code: int
    output: str
    """The CLI's stdout and stderr."""
    log: str
    """RUN/train.log."""

    def check(self) -> None:
        assert self.code == 0, self.output + self.log[-4000:]


@pytest.fixture(scope="session")
def trained_run(sd_runtime: tuple[Path, str], smoke_model_files: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """`train --preset cpu-smoke` on 3 generated melanomas, run once for the session."""
    folder, python = sd_runtime
    checkpoint, tokenizers = smoke_model_files
    root = tmp_path_factory.mktemp("trained")
    source = make_dataset(root / "source", 3, seed=5, melanoma_fraction=1.0,
                          sizes=((96, 64), (64, 96)))
    prepared = root / "prepared"
    prepare(source.root, prepared, options=PrepareOptions(repeats=1), workers=1)
    run = root / "run"
    code, stdout, stderr = invoke(
        CliRunner(), "train", prepared, "--preset", "cpu-smoke",
        "--set", f"pretrained_model_name_or_path={checkpoint}",
        "--set", f"tokenizer_cache_dir={tokenizers}",
        "--run-dir", run, "--sd-scripts", folder, "--python", python)
    log_file = run / "train.log"
    log = log_file.read_text(encoding="utf-8") if log_file.is_file() else ""
    return TrainedRun(run, code, stdout + stderr, log)


def test_cpu_smoke_trains_a_lora_with_the_real_sd_scripts(trained_run: TrainedRun) -> None:
    trained_run.check()
    run = trained_run.run
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    lora = run / "output" / "melanoma.safetensors"
    assert record["status"] == "succeeded" and record["exit_status"] == 0
    assert record["lora_files"][-1] == str(lora) and lora.is_file()
    metadata = _safetensors_metadata(lora)
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_steps"] == metadata["ss_max_train_steps"] == "2"
    lines = trained_run.log.splitlines()
    bars = [p for p in map(launch.parse_progress, lines) if p is not None]
    assert bars and (bars[-1].step, bars[-1].total) == (2, 2)
    # COLUMNS reaches sd-scripts: its rich log lines are not wrapped at 80 columns.
    assert _unwrapped(trained_run.log), trained_run.log[:4000]


def test_sample_makes_real_images_with_the_trained_lora(
        sd_runtime: tuple[Path, str], trained_run: TrainedRun, tmp_path: Path) -> None:
    trained_run.check()
    folder, python = sd_runtime
    out = tmp_path / "synth"

    code, stdout, stderr = invoke(
        CliRunner(), "sample", "--lora", trained_run.run, "--n", 2, "--out", out,
        "--seed", SEED, "--width", 64, "--height", 64, "--steps", 2,
        "--sd-scripts", folder, "--python", python)

    log_file = out / "logs" / "shard-0.log"
    log = log_file.read_text(encoding="utf-8") if log_file.is_file() else ""
    assert code == 0, stdout + stderr + log[-4000:]
    state = json.loads((out / ".medsynth" / "sample.json").read_text(encoding="utf-8"))
    assert state["status"] == "succeeded", state
    ids = ["SYN_0000000", "SYN_0000001"]
    images = sorted((out / "images").iterdir())
    assert [p.name for p in images] == [f"{i}.png" for i in ids]
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[:2] == (64, 64), path
    lora = trained_run.run / "output" / "melanoma.safetensors"
    digest = hashlib.sha256(lora.read_bytes()).hexdigest()
    metadata = pd.read_csv(out / "metadata.csv", dtype={"isic_id": str})
    assert list(metadata["isic_id"]) == ids
    assert list(metadata["seed"]) == [SEED, SEED + 1]
    assert set(metadata["lora_sha256"]) == {digest}
    assert set(metadata["lora_file"]) == {lora.name}
    assert (set(metadata["width"]), set(metadata["height"]), set(metadata["steps"])) == (
        {64}, {64}, {2})
    # The generator read each prompt line as meant: the PNG records its prompt and seed.
    for path, (_, row) in zip(images, metadata.iterrows(), strict=True):
        text = _png_text(path)
        assert text["seed"] == str(row["seed"]), text
        assert text["steps"] == "2" and text["sampler"] == "euler_a", text
        assert text["negative-prompt"] == row["negative_prompt"], text
        assert text["prompt"] == row["prompt"], text
    grid = cv2.imread(str(out / "grid.jpg"))
    assert grid is not None and grid.shape[1] == 2 * 256
    assert _unwrapped(log), log[:4000]


def test_a_run_stopped_in_its_second_epoch_resumes_with_every_step_save_kept(
        sd_runtime: tuple[Path, str], smoke_model_files: tuple[Path, Path],
        tmp_path: Path) -> None:
    """The real sd-scripts, stopped in epoch 2 of 4 (3 steps each), resumes at that epoch's
    start and counts its steps from 0 again: the run ends with one LoRA per run step, each
    named and ordered by it, the earlier launch's saves of steps trained again kept in
    superseded/, and its final LoRA counted as the run's 12 steps."""
    folder, python = sd_runtime
    checkpoint, tokenizers = smoke_model_files
    source = make_dataset(tmp_path / "source", 3, seed=5, melanoma_fraction=1.0,
                          sizes=((64, 64),))
    prepared = tmp_path / "prepared"
    prepare(source.root, prepared, options=PrepareOptions(repeats=1), workers=1)
    run, output = tmp_path / "run", tmp_path / "run" / "output"
    first = train(prepared, "cpu-smoke", overrides=[
        f"pretrained_model_name_or_path={checkpoint}", f"tokenizer_cache_dir={tokenizers}",
        "max_train_steps=12", "save_state=true"], run_dir=run, sd_scripts=folder,
        python=python, on_progress=interrupt_after(5, within=1200))
    assert first.status == "interrupted", first.message
    state = launch.latest_state(output, "melanoma")
    assert state is not None and 4 <= launch.state_step(state) < 12
    stopped = launch.state_step(state)
    done = train(prepared, resume=True, run_dir=run, sd_scripts=folder, python=python)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert done.status == "succeeded", f"{done.message}\n{log[-4000:]}"
    saves = launch.lora_files(output, "melanoma")
    assert [path.name for path in saves] == [
        *(f"melanoma-step{step:08d}.safetensors" for step in range(1, 13)),
        "melanoma.safetensors"]
    assert [launch._lora_step(path) for path in saves[:-1]] == list(range(1, 13))
    assert launch.final_steps(saves[-1]) == 12
    again = range(stopped // 3 * 3 + 1, stopped + 2)  # from its epoch's start
    superseded = sorted((output / launch.SUPERSEDED).glob("*.safetensors"))
    assert {launch._lora_step(path) for path in superseded} <= set(again), superseded
    assert all(path.name.startswith(f"melanoma{launch.RUN_STEP}-step") for path in superseded)
    assert not list(output.glob(f"melanoma{launch.RUN_STEP}*"))
    assert [path.name for path in output.glob("*-state")] == ["melanoma-state"]
