"""Opt-in: `train --preset cpu-smoke` on the real sd-scripts, on CPU, with a random SDXL model.

Run with `MEDSYNTH_SD_PYTHON=/path/to/sd/python python -m pytest -m e2e tests/test_e2e.py`.
Needs ~7 GiB of disk for the checkpoint (kept in $MEDSYNTH_E2E_CACHE when set) and ~15 GB of
memory; building the checkpoint takes 1 to 2 min, the two training steps about as long.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import launch, smoke_model
from medsynth_kohya.prepare import PrepareOptions, prepare
from medsynth_kohya.synth import make_dataset

from .conftest import REPO, invoke

pytestmark = pytest.mark.e2e


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata


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
    subprocess.run([python, "-m", "medsynth_kohya.smoke_model", "--out", str(out),
                    "--sd-scripts", str(folder)], cwd=REPO, check=True, timeout=1800,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return out / smoke_model.CHECKPOINT, out / smoke_model.TOKENIZERS


def test_cpu_smoke_trains_a_lora_with_the_real_sd_scripts(
        sd_runtime: tuple[Path, str], smoke_model_files: tuple[Path, Path],
        tmp_path: Path) -> None:
    folder, python = sd_runtime
    checkpoint, tokenizers = smoke_model_files
    source = make_dataset(tmp_path / "source", 3, seed=5, melanoma_fraction=1.0,
                          sizes=((96, 64), (64, 96)))
    prepared = tmp_path / "prepared"
    prepare(source.root, prepared, options=PrepareOptions(repeats=1), workers=1)
    run = tmp_path / "run"

    code, stdout, stderr = invoke(
        CliRunner(), "train", prepared, "--preset", "cpu-smoke",
        "--set", f"pretrained_model_name_or_path={checkpoint}",
        "--set", f"tokenizer_cache_dir={tokenizers}",
        "--run-dir", run, "--sd-scripts", folder, "--python", python)

    log = (run / "train.log").read_text(encoding="utf-8")
    assert code == 0, stdout + stderr + log[-4000:]
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    lora = run / "output" / "melanoma.safetensors"
    assert record["status"] == "succeeded" and record["exit_status"] == 0
    assert record["lora_files"][-1] == str(lora) and lora.is_file()
    metadata = _safetensors_metadata(lora)
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_steps"] == metadata["ss_max_train_steps"] == "2"
    bars = [p for p in map(launch.parse_progress, log.splitlines()) if p is not None]
    assert bars and (bars[-1].step, bars[-1].total) == (2, 2)
