"""The near-copy check of a synthetic set on its own, and its record SYNTH/copies.json."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copycheck

from .eval_data import isic_source, photo, synthetic_set


def test_planted_copies_are_flagged_recorded_and_read_back(tmp_path: Path) -> None:
    paths = isic_source(tmp_path / "isic", 6, 2, seed=8)
    melanomas = sorted(paths)[:6]
    first = cv2.imread(str(paths[melanomas[1]]))
    second = cv2.imread(str(paths[melanomas[4]]))
    assert first is not None and second is not None
    planted = [cv2.resize(first, (200, 150), interpolation=cv2.INTER_AREA),
               np.ascontiguousarray(second[:, ::-1])]
    ids = synthetic_set(tmp_path / "syn", [photo(7100 + i) for i in range(3)] + planted)
    stages: set[str] = set()
    result = copycheck.check(tmp_path / "syn", tmp_path / "isic",
                             on_progress=lambda stage, done, total: stages.add(stage))
    assert stages == {"training photos", "near-copy check"}
    assert [(f.synthetic_id, f.training_id) for f in result.flagged] == [
        (ids[3], melanomas[1]), (ids[4], melanomas[4])]
    assert result.checked == tuple(ids) and result.n_training == 6
    assert result.summary().startswith(f"2 of 5 images are near-copies of training photos of "
                                       f"isic: {ids[3]} ~ {melanomas[1]}")
    path = copycheck.write(tmp_path / "syn", result)
    assert path == tmp_path / "syn" / "copies.json"
    assert str(tmp_path) not in path.read_text(encoding="utf-8")
    assert copycheck.read(tmp_path / "syn") == result


def test_a_training_photo_turned_or_flipped_any_way_is_flagged(tmp_path: Path) -> None:
    """Dermoscopy has no up: a copy flipped upside down or turned a quarter or half is a
    near-copy as much as a mirrored one."""
    paths = isic_source(tmp_path / "isic", 4, 0, seed=13)
    melanomas = sorted(paths)
    image = cv2.imread(str(paths[melanomas[1]]))
    assert image is not None
    turned = [np.ascontiguousarray(image[::-1]), cv2.rotate(image, cv2.ROTATE_180),
              cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
              cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
              np.ascontiguousarray(image.transpose(1, 0, 2))]
    ids = synthetic_set(tmp_path / "syn", [photo(7150), *turned])
    result = copycheck.check(tmp_path / "syn", tmp_path / "isic")
    assert [(f.synthetic_id, f.training_id) for f in result.flagged] == [
        (identifier, melanomas[1]) for identifier in ids[1:]]


def _turned(path: Path, orientation: int) -> None:
    """Give the JPEG at `path` an EXIF Orientation tag, as a phone writes it (6: viewers show
    the photo turned a quarter clockwise); its stored pixels stay as they are."""
    tiff = (b"MM\x00*\x00\x00\x00\x08\x00\x01"
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4)
    exif = b"Exif\x00\x00" + tiff
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:])


def test_a_copy_of_what_sd_scripts_trains_on_is_flagged_when_exif_turns_the_photo(
        tmp_path: Path) -> None:
    """sd-scripts trains a photo's stored pixels (PIL's open ignores EXIF orientation), so
    a generated copy of them is a near-copy, though viewers show the photo turned."""
    paths = isic_source(tmp_path / "isic", 4, 2, seed=9)
    melanoma = sorted(paths)[2]
    _turned(paths[melanoma], 6)
    shown = cv2.imread(str(paths[melanoma]))
    trained = cv2.imread(str(paths[melanoma]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert shown is not None and trained is not None and shown.shape != trained.shape
    ids = synthetic_set(tmp_path / "syn", [photo(7200), trained])
    result = copycheck.check(tmp_path / "syn", tmp_path / "isic")
    assert [(f.synthetic_id, f.training_id) for f in result.flagged] == [(ids[1], melanoma)]


def test_an_unchecked_set_reads_as_none_and_a_damaged_record_is_one_line(
        tmp_path: Path) -> None:
    synthetic_set(tmp_path / "syn", [photo(7200)])
    assert copycheck.read(tmp_path / "syn") is None
    (tmp_path / "syn" / "copies.json").write_text(json.dumps({"threshold": 0.25}), "utf-8")
    with pytest.raises(UserError, match=r"copies\.json is unreadable; re-run"):
        copycheck.read(tmp_path / "syn")


def test_unrelated_images_make_a_clean_summary(tmp_path: Path) -> None:
    isic_source(tmp_path / "isic", 4, 0, seed=9)
    synthetic_set(tmp_path / "syn", [photo(7300 + i) for i in range(4)])
    result = copycheck.check(tmp_path / "syn", tmp_path / "isic")
    assert result.flagged == ()
    assert result.summary() == "no near-copies: 4 images checked against 4 training photos of isic"


def test_a_set_with_2020_style_metadata_is_read(tmp_path: Path) -> None:
    isic_source(tmp_path / "isic", 2, 0, seed=10)
    ids = synthetic_set(tmp_path / "syn", [photo(7400), photo(7401)])
    metadata = tmp_path / "syn" / "metadata.csv"
    metadata.write_text(metadata.read_text("utf-8").replace("isic_id", "image_name", 1), "utf-8")
    assert copycheck.check(tmp_path / "syn", tmp_path / "isic").checked == tuple(ids)


def test_an_image_changed_after_its_check_counts_as_unchecked(tmp_path: Path) -> None:
    isic_source(tmp_path / "isic", 3, 3, seed=31)
    ids = synthetic_set(tmp_path / "syn", [photo(7300 + i) for i in range(3)])
    copycheck.write(tmp_path / "syn", copycheck.check(tmp_path / "syn", tmp_path / "isic"))
    recorded = copycheck.read(tmp_path / "syn")
    assert recorded is not None and recorded.checked == tuple(ids)
    swapped = next((tmp_path / "isic").rglob("*.jpg"))  # a training photo put in its place
    image = tmp_path / "syn" / "images" / f"{ids[1]}.png"
    decoded = cv2.imread(str(swapped))
    assert decoded is not None
    cv2.imwrite(str(image), decoded)
    again = copycheck.read(tmp_path / "syn")
    assert again is not None and again.checked == (ids[0], ids[2])
