"""`reproduce`'s time estimate for the GPU the training runs on, as its plan shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.pipeline.reproduce import SECONDS_PER_STEP, estimate

from .conftest import InstallGpus, invoke


def _gpu(name: str) -> Gpu:
    return Gpu(name, 81920, (8, 0))


@pytest.mark.parametrize(("name", "family"), [
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA A10G", "A10"), ("NVIDIA A10", "A10"), ("Tesla V100-SXM2-16GB", "V100"),
    ("NVIDIA L4", "L4"), ("NVIDIA H100 80GB HBM3", "H100"), ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("NVIDIA H200", "H200")])
def test_each_gpu_gets_its_own_familys_rate(name: str, family: str) -> None:
    """A GPU's name holds another family's as a prefix (A100 holds A10, L40S holds L4): the
    estimate is for the family named, not the first key found inside the name."""
    rate = SECONDS_PER_STEP[family]
    assert estimate(36000, [_gpu(name)]) == (
        f"about {36000 * rate / 3600:.1f} h on {name} ({rate:g} s/step, rough)")


def test_a_run_under_an_hour_is_estimated_in_minutes() -> None:
    """"about 0.0 h" says nothing: below an hour the estimate is in minutes, below one
    minute it says so."""
    t4 = [_gpu("Tesla T4")]  # 3 s/step
    assert estimate(60, t4) == "about 3 min on Tesla T4 (3 s/step, rough)"
    assert estimate(1100, t4) == "about 55 min on Tesla T4 (3 s/step, rough)"
    assert estimate(12, t4) == "under a minute on Tesla T4 (3 s/step, rough)"
    assert estimate(1200, t4) == "about 1.0 h on Tesla T4 (3 s/step, rough)"


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA A40", "NVIDIA GH200 480GB",
                                  "NVIDIA RTX A4000"])
def test_a_gpu_of_no_known_family_gets_no_estimate(name: str) -> None:
    assert estimate(7200, [_gpu(name)]) == f"7200 steps; no estimate for {name}"


def test_no_steps_or_no_gpu_say_so() -> None:
    assert estimate(None, [_gpu("Tesla T4")]) == estimate(0, [_gpu("Tesla T4")]) == "unknown"
    assert estimate(1, []) == "1 step; no GPU found here to estimate for"


def test_the_dry_run_estimates_an_a100_as_an_a100(runner: CliRunner, isic2020: SyntheticSet,
                                                   tmp_path: Path,
                                                   nvidia_smi: InstallGpus) -> None:
    nvidia_smi("NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0")
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--dry-run")
    assert code == 0, stderr
    assert f"({SECONDS_PER_STEP['A100']:g} s/step, rough)" in stdout



def test_the_prepare_line_counts_each_skip_reason_in_the_right_number(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """reproduce's closing line for prepare counts skip reasons as prepare's own refusal does:
    "3 image files named in another letter case", not "3 image file named ..."."""
    from medsynth_kohya.data.prepare import NO_FILE, prepare
    from medsynth_kohya.pipeline.reproduce import _prepared

    photos = sorted(isic2020.images.glob("*.jpg"))
    photos[0].unlink()
    for photo in photos[1:4]:
        photo.rename(photo.with_name(photo.name.lower()))
    line = _prepared(prepare(isic2020.root, tmp_path / "prepared", workers=1))
    assert "3 image files named in another letter case" in line, line
    assert f"1 id with {NO_FILE}" in line, line
