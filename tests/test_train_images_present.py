"""`train` (its dry run too) refuses a prepared folder whose class folder lacks images its
manifest lists (deleted or moved since prepare): sd-scripts would silently train on the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .fakes import FakeSd


def _train(runner: CliRunner, prepared: Path, fake_sd: FakeSd, run: Path) -> tuple[int, str, str]:
    return invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable, "--dry-run")


@pytest.mark.parametrize("removed", [1, None])
def test_missing_training_images_stop_train(runner: CliRunner, prepared: Path, fake_sd: FakeSd,
                                            tmp_path: Path, removed: int | None) -> None:
    images = sorted((prepared / "img").glob("*/*.jpg"))
    listed = pd.read_csv(prepared / "manifest.csv", dtype=str)
    train = int((listed["split"] == "train").sum())
    assert len(images) == train > 1
    code, _, stderr = _train(runner, prepared, fake_sd, tmp_path / "before")
    assert code == 0, stderr
    for image in images[:removed]:
        image.unlink()
    code, stdout, stderr = _train(runner, prepared, fake_sd, tmp_path / "run")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    gone = len(images[:removed])
    assert (f"{gone} of {train} training images listed in {prepared / 'manifest.csv'} "
            f"{'is' if gone == 1 else 'are'} missing from {images[0].parent} (first: "
            f"{images[0].name}): run prepare again") in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("added", "counted"), [(["ISIC_9999999.jpg"], "1 image"),
                                                (["stray.PNG", "stray.webp"], "2 images")])
def test_images_the_manifest_does_not_list_stop_train(runner: CliRunner, prepared: Path,
                                                      fake_sd: FakeSd, tmp_path: Path,
                                                      added: list[str], counted: str) -> None:
    """sd-scripts trains on every image in the class folder: one put there by hand would be
    trained on, yet neither counted in the run's figures nor checked for near-copies by
    evaluate (which reads the manifest). Files sd-scripts passes over (hidden ones such as
    macOS's ._ files, other suffixes, subfolders, captions) do not count."""
    folder = next((prepared / "img").glob("*_melanoma"))
    photo = next(folder.glob("*.jpg")).read_bytes()
    (folder / "._ISIC_0000001.jpg").write_bytes(b"\x00\x05\x16\x07")
    (folder / "notes.md").write_text("mine", encoding="utf-8")
    (folder / "ISIC_9999999.txt").write_text("a caption", encoding="utf-8")
    (folder / "older").mkdir()
    (folder / "older" / "ISIC_8888888.jpg").write_bytes(photo)
    code, _, stderr = _train(runner, prepared, fake_sd, tmp_path / "before")
    assert code == 0, stderr
    for name in added:
        (folder / name).write_bytes(photo)
    code, stdout, stderr = _train(runner, prepared, fake_sd, tmp_path / "run")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    them = "it" if len(added) == 1 else "them"
    assert (f"{counted} in {folder} that manifest.csv does not list would be trained on (first: "
            f"{sorted(added)[0]}): move {them} out of {folder}, or add {them} to your source and "
            "run prepare again") in line
    assert not (tmp_path / "run").exists()


def test_missing_captions_stop_train(runner: CliRunner, prepared: Path, fake_sd: FakeSd,
                                     tmp_path: Path) -> None:
    """sd-scripts captions an image without its .txt with the dataset's class tokens (the
    trigger) alone, without a word."""
    captions = sorted((prepared / "img").glob("*/*.txt"))
    train = int((pd.read_csv(prepared / "manifest.csv", dtype=str)["split"] == "train").sum())
    for gone, verb in ((captions[1:2], "has"), (captions[1:3], "have")):
        for caption in gone:
            caption.unlink(missing_ok=True)
        code, stdout, stderr = _train(runner, prepared, fake_sd, tmp_path / "run")
        line = " ".join(stderr.split())
        assert code == 1 and "Traceback" not in stdout + stderr, stderr
        assert (f"{len(gone)} of {train} training images {verb} no caption in "
                f"{captions[0].parent} (first: {captions[1].name} is missing), so sd-scripts "
                "would caption them with the trigger alone: run prepare again") in line
        assert not (tmp_path / "run").exists()


def test_a_name_a_mac_file_system_returns_decomposed_is_still_listed(tmp_path: Path) -> None:
    """HFS+ and some SMB shares return file names in Unicode NFD; ids are compared in NFC."""
    import unicodedata

    from medsynth_kohya.data.prepared import PreparedFolder

    composed = "Müller_1"
    (tmp_path / f"{unicodedata.normalize('NFD', composed)}.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "Other_2.jpg").write_bytes(b"\xff\xd8")
    rows = pd.DataFrame({"id": [composed], "source": ["/data/Müller_1.JPG"]})
    assert [p.name for p in PreparedFolder(tmp_path).unlisted_images(rows, tmp_path)] == [
        "Other_2.jpg"]
