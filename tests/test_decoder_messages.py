"""Sizes past Pillow's limit are refused from the header, before any decode."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, lesion_image

from .conftest import invoke

TOO_LARGE = "more pixels than Pillow (which sd-scripts reads images with) opens: downsize it"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png(seed: int = 1) -> bytes:
    ok, buffer = cv2.imencode(".png", lesion_image(320, 240, hairy=False, seed=seed))
    assert ok
    return buffer.tobytes()


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` (its checksum made right)."""
    header = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


@pytest.mark.parametrize("hair", list(HairMode))
def test_a_size_past_pillows_limit_is_refused_before_any_decode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hair: HairMode) -> None:
    """A header of 70000 x 70000 px: OpenCV raised past its own limit (2**30 px), ending
    prepare in a traceback, and decodes a PNG under it whole before Pillow would refuse it."""
    def no_decode(*args: object) -> None:
        raise AssertionError("decoded")

    path = _write(tmp_path / "a.png", _claiming(_png(), 70000, 70000))
    with monkeypatch.context() as patch:
        patch.setattr(cv2, "imdecode", no_decode)
        assert scan(str(path), hair).reason == TOO_LARGE
    limit = 320 * 240 // 2
    for claimed, reason in ((limit - 1, TOO_LARGE), (limit, "")):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", claimed)
        assert scan(str(_write(tmp_path / "b.png", _png())), hair).reason == reason, claimed
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert scan(str(path), hair).reason.startswith("undecodable (OpenCV: ")


def test_a_lone_image_past_pillows_limit_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                                      tmp_path: Path) -> None:
    frame = isic2020.frame.iloc[:1]
    frame.to_csv(isic2020.metadata, index=False)
    only = isic2020.images / f"{frame['image_name'].iloc[0]}.jpg"
    only.unlink()
    _write(only.with_suffix(".png"), _claiming(_png(), 70000, 70000))

    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")

    assert code != 0
    assert "Traceback" not in stderr
    assert TOO_LARGE in " ".join(stderr.split())
