"""How many of the original captions' hair tags each mode gives on the 7 original images, and
that `reproduce` uses the best one and says so in its plan."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.pipeline import reproduce

from .conftest import InstallGpus, invoke


def _matches(seed_images: Path, tmp_path: Path, mode: HairMode) -> int:
    """Prepare the original images with `mode`; count hair tags equal to the original ones."""
    captions = {p.stem: p.read_text(encoding="utf-8").strip()
                for p in seed_images.glob("*.caption")}
    metadata = tmp_path / "ids.csv"
    pd.DataFrame({"image_name": sorted(captions), "target": 1}).to_csv(metadata, index=False)
    result = prepare(None, tmp_path / mode.value, metadata=metadata, images=seed_images,
                     workers=1, options=PrepareOptions(hair=mode, caption_template="{trigger}"))
    assert sorted(result.manifest["id"]) == sorted(captions)
    return sum(bool(hairy) == captions[identifier].endswith(", hairy")
               for identifier, hairy in zip(result.manifest["id"], result.manifest["hairy"],
                                            strict=True))


def test_each_mode_against_the_original_hair_tags(seed_images: Path, tmp_path: Path) -> None:
    measured = {mode: _matches(seed_images, tmp_path, mode) for mode in reproduce.HAIR_MATCHES}
    assert measured == reproduce.HAIR_MATCHES == {HairMode.auto: 6, HairMode.seed: 4}
    assert reproduce.ORIGINAL.hair is max(measured, key=measured.__getitem__) is HairMode.auto


def test_the_plan_names_the_hair_mode_and_why(runner: CliRunner, isic2020: SyntheticSet,
                                              tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "w", "--dry-run")
    assert code == 0, stderr
    plan = " ".join(stdout.split())
    assert "--hair auto (matches 6 of the 7 original captions' hair tags; --hair seed 4 of 7)" \
        in plan
