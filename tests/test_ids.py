"""Ids that carry their file suffix still find their images; a run that prepares no image at
all is an error that says why, counted from skipped.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke


def _error_line(code: int, stdout: str, stderr: str) -> str:
    assert code == 1 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_ids_with_an_image_suffix_match_their_files(runner: CliRunner, isic2020: SyntheticSet,
                                                    tmp_path: Path) -> None:
    reference = prepare(isic2020.root, tmp_path / "reference", workers=1)
    frame = isic2020.frame.copy()
    ids = list(frame["image_name"])
    suffixes = [".jpg", ".JPG", ".jpeg", ".png"]
    frame["image_name"] = [f"{i}{suffixes[n % 4]}" for n, i in enumerate(ids)]
    frame.to_csv(isic2020.metadata, index=False)

    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o")
    assert code == 0, stderr
    table = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(table["id"]) == sorted(ids)
    assert list(table["caption"]) == list(reference.manifest["caption"])
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv")
    assert skipped.empty
    assert sorted(p.name for p in (tmp_path / "o" / "img").rglob("*.jpg")) == sorted(
        f"{i}.jpg" for i in ids)


def test_a_selection_of_nothing_is_an_error(runner: CliRunner, isic2020: SyntheticSet,
                                            tmp_path: Path) -> None:
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                               "--query", "target == 5"))
    assert "no images were prepared" in line and "--query 'target == 5'" in line
    assert "none of the 12 rows" in line
    isic2020.frame.assign(target=0).to_csv(isic2020.metadata, index=False)
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert "default selection (melanomas)" in line


def test_ids_that_match_no_file_name_the_mismatch(runner: CliRunner, isic2020: SyntheticSet,
                                                  tmp_path: Path) -> None:
    frame = isic2020.frame.copy()
    frame["image_name"] = "X" + frame["image_name"]
    frame.to_csv(isic2020.metadata, index=False)
    out = tmp_path / "o"
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", out))
    assert ("from 12 selected rows: 12 ids with no image file; 12 image files have no metadata "
            "row") in line
    assert str(out / "skipped.csv") in line and "--column id=" in line
    assert len(pd.read_csv(out / "skipped.csv")) == 24


def test_no_image_files_at_all_names_the_folders(isic2020: SyntheticSet, tmp_path: Path) -> None:
    for image in isic2020.images.glob("*.jpg"):
        image.unlink()
    with pytest.raises(UserError,
                       match=r"12 ids with no image file .*no \.jpg/\.jpeg/\.png files in"):
        prepare(isic2020.root, tmp_path / "o", workers=1)


def test_only_broken_images_count_their_reasons(isic2020: SyntheticSet, tmp_path: Path) -> None:
    images = sorted(isic2020.images.glob("*.jpg"))
    for image in images[:8]:
        image.write_bytes(b"")
    for image in images[8:]:
        image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(UserError, match="from 12 selected rows: 8 empty files, 4 truncated") as err:
        prepare(isic2020.root, tmp_path / "o", workers=1,
                options=PrepareOptions(query="target == 1"))
    assert "--column" not in str(err.value)
    assert (tmp_path / "o" / "skipped.csv").is_file()


def test_ids_and_file_names_match_whatever_their_unicode_normal_form(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """macOS writes file names in NFD, spreadsheets ids in NFC: "café" matches either way."""
    import unicodedata

    frame = isic2020.frame.copy()
    old = list(frame["image_name"][:2])
    nfc, nfd = (unicodedata.normalize(form, "ISIC_café") for form in ("NFC", "NFD"))
    other_nfc, other_nfd = (unicodedata.normalize(form, "ISIC_naïve") for form in ("NFC", "NFD"))
    (isic2020.images / f"{old[0]}.jpg").rename(isic2020.images / f"{nfd}.jpg")
    (isic2020.images / f"{old[1]}.jpg").rename(isic2020.images / f"{other_nfc}.jpg")
    frame["image_name"] = [nfc, other_nfd, *frame["image_name"][2:]]
    frame.to_csv(isic2020.metadata, index=False)

    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o")
    assert code == 0, stderr
    table = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    assert {nfc, other_nfc} <= set(table["id"]) and len(table) == len(frame)
    assert pd.read_csv(tmp_path / "o" / "skipped.csv").empty
    names = {p.name for p in (tmp_path / "o" / "img").rglob("*.jpg")}
    assert {f"{nfc}.jpg", f"{other_nfc}.jpg"} <= names
