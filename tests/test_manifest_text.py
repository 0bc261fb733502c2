"""The manifest as text: resolved source paths and true/false flags, as README's schema says."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import REPO, invoke


def test_source_paths_have_no_dot_dot_segments(runner: CliRunner, isic2020: SyntheticSet,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    source = Path("..") / isic2020.root.relative_to(tmp_path)
    code, _, stderr = invoke(runner, "prepare", source, "--out", Path("..") / "out")
    assert code == 0, stderr
    table = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    for path in table["source"]:
        assert Path(path).is_absolute() and ".." not in Path(path).parts
        assert Path(path) == (isic2020.images / Path(path).name).resolve()
    code, _, stderr = invoke(runner, "prepare", "--metadata", isic2020.metadata,
                             "--images", Path("..") / isic2020.images.relative_to(tmp_path),
                             "--out", Path("..") / "out2")
    assert code == 0, stderr
    sources = pd.read_csv(tmp_path / "out2" / "manifest.csv", dtype=str)["source"]
    assert not any(".." in Path(path).parts for path in sources)
    assert os.path.commonpath(list(sources)) == str(isic2020.images.resolve())


def test_flags_are_written_true_false_as_readme_says(isic2020: SyntheticSet,
                                                      tmp_path: Path) -> None:
    from medsynth_kohya.data.prepare import prepare

    result = prepare(isic2020.root, tmp_path / "o", workers=1)
    text = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    assert set(text["hairy"]) == {"true", "false"}
    assert set(text["marker_pen"]) <= {"true", "false", ""}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "| hairy | true/false |" in readme
    back = manifest.read(tmp_path / "o" / "manifest.csv")
    assert back["hairy"].dtype == bool
    assert back["hairy"].tolist() == result.manifest["hairy"].tolist()


def test_a_photo_named_like_a_missing_value_goes_through_prepare_and_train(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """File stems such as NA or null (the user's own photos) are ids from the metadata to the
    manifest and train's checks, never taken for a blank."""
    from medsynth_kohya.data.prepare import prepare
    from medsynth_kohya.training.train import train

    frame = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False)
    stems = ["NA", "null", "None"]
    for row, stem in enumerate(stems):
        old = str(frame.loc[row, "image_name"])
        (isic2020.images / f"{old}.jpg").rename(isic2020.images / f"{stem}.jpg")
        frame.loc[row, "image_name"] = stem
    frame.to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "o", workers=1)
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv", dtype=str, keep_default_na=False)
    assert not set(stems) & set(skipped["id"]) and "" not in set(skipped["id"])
    table = manifest.read(tmp_path / "o" / "manifest.csv")
    assert set(stems) <= set(table["id"]) and table["id"].notna().all()
    assert table["id"].tolist() == result.manifest["id"].tolist()
    run = train(tmp_path / "o", "cpu-smoke", run_dir=tmp_path / "run", dry_run=True)
    assert run.status == "dry-run"
