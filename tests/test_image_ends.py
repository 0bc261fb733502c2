"""Whether an image file is whole is judged by its structure: bytes after a JPEG's EOI or a PNG's
IEND are allowed, a file cut inside its image data is "truncated" wherever an end marker appears
before the cut (an EXIF thumbnail, a text chunk)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, encode_jpeg, lesion_image

from .conftest import invoke

if TYPE_CHECKING:
    from cv2.typing import MatLike

TRAILER = bytes(range(256)) * 20  # 5120 bytes, FF D9 and IEND nowhere among them


def _image() -> MatLike:
    return lesion_image(320, 240, hairy=False, seed=1)


def _jpeg(*, progressive: bool = False) -> bytes:
    ok, buffer = cv2.imencode(".jpg", _image(), [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return buffer.tobytes()


def _png() -> bytes:
    ok, buffer = cv2.imencode(".png", _image())
    assert ok
    return buffer.tobytes()


def _with_thumbnail(jpeg: bytes) -> bytes:
    """`jpeg` with an EXIF APP1 segment after SOI holding a whole JPEG thumbnail (SOI..EOI)."""
    ok, thumb = cv2.imencode(".jpg", cv2.resize(_image(), (40, 30)))
    assert ok
    body = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + thumb.tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _scan_start(jpeg: bytes) -> int:
    """Where the entropy-coded data of a baseline JPEG's one scan begins (its SOS is the last
    in the file, after a thumbnail's)."""
    at = jpeg.rindex(b"\xff\xda")
    return at + 2 + int(struct.unpack(">H", jpeg[at + 2:at + 4])[0])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _reason(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(str(path), HairMode.off).reason


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_with_bytes_after_its_end_is_whole(tmp_path: Path, progressive: bool) -> None:
    whole = _jpeg(progressive=progressive)
    assert _reason(tmp_path, "a.jpg", whole + TRAILER) == ""
    assert _reason(tmp_path, "b.jpg", _with_thumbnail(whole) + TRAILER) == ""


def test_a_jpeg_cut_anywhere_is_truncated(tmp_path: Path) -> None:
    whole = _with_thumbnail(_jpeg())
    start = _scan_start(whole)
    # in the scan data (the thumbnail's EOI is the last FF D9 before the cut), in the
    # thumbnail, in a segment's length, and between scan data and EOI
    for cut in (start + 200, start + 1, whole.index(b"Exif") + 100, 5, len(whole) - 2):
        assert _reason(tmp_path, "cut.jpg", whole[:cut]) == "truncated", cut


def test_a_jpeg_without_image_data_is_truncated(tmp_path: Path) -> None:
    assert _reason(tmp_path, "eoi.jpg", b"\xff\xd8\xff\xd9" + TRAILER) == "truncated"


def test_a_png_with_bytes_after_its_end_is_whole_and_a_cut_one_is_not(tmp_path: Path) -> None:
    whole = _png()
    assert _reason(tmp_path, "a.png", whole + TRAILER) == ""
    iend = whole.rindex(b"IEND") - 4
    text = _chunk(b"tEXt", b"Comment\x00IEND of the story")
    with_text = whole[:iend] + text + whole[iend:]
    assert _reason(tmp_path, "b.png", with_text + TRAILER) == ""
    for cut in (iend - 50, iend + len(text) - 1, len(with_text) - 1, 12):
        assert _reason(tmp_path, "cut.png", with_text[:cut]) == "truncated", cut


def test_prepare_keeps_a_jpeg_with_a_trailer(runner: CliRunner, isic2020: SyntheticSet,
                                             tmp_path: Path) -> None:
    first = str(isic2020.frame["image_name"].iloc[0])
    path = isic2020.images / f"{first}.jpg"
    path.write_bytes(encode_jpeg(lesion_image(640, 480, hairy=False, seed=9)) + TRAILER)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert first in set(manifest["id"])
