"""Whether an image file is whole is judged by its structure: bytes after a JPEG's EOI or a PNG's
IEND are allowed, a file cut inside its image data is "truncated" wherever an end marker appears
before the cut (an EXIF thumbnail, a text chunk)."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, encode_jpeg, lesion_image, scene

from .conftest import invoke, png_chunk

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


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


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
    text = png_chunk(b"tEXt", b"Comment\x00IEND of the story")
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


def _cut_and_closed(jpeg: bytes) -> bytes:
    """`jpeg` cut at half and closed by an EOI marker, as partial downloads and recovery tools
    leave files: libjpeg decodes the missing half as flat grey, without an error."""
    return jpeg[:len(jpeg) // 2] + b"\xff\xd9"


@pytest.mark.parametrize("hair", [HairMode.off, HairMode.auto, HairMode.seed])
@pytest.mark.parametrize("size", [(640, 480), (3000, 2000)])
def test_a_jpeg_cut_then_closed_by_an_end_marker_is_truncated(
        tmp_path: Path, size: tuple[int, int], hair: HairMode) -> None:
    """Whether the scan decodes it whole (seed) or reduced (3000 px: at 1/4 or 1/8), the flat
    grey that stands for the missing data is found; the whole file passes."""
    whole = encode_jpeg(scene(*size, seed=4)[0])
    assert scan(str(_written(tmp_path / "whole.jpg", whole)), hair).reason == ""
    cut = _written(tmp_path / "cut.jpg", _cut_and_closed(whole))
    assert scan(str(cut), hair).reason == "truncated"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_turned_jpeg_cut_then_closed_is_truncated(tmp_path: Path, orientation: int) -> None:
    """The scan decodes the pixels as stored, as sd-scripts trains them, so the grey band of
    the missing data is at the bottom whatever the EXIF orientation says."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(scene(800, 600, seed=2)[0][:, :, ::-1]).save(buffer, "JPEG", quality=92,
                                                                 exif=exif)
    path = _written(tmp_path / "turned.jpg", _cut_and_closed(buffer.getvalue()))
    assert scan(str(path), HairMode.auto).reason == "truncated"


def test_drawn_scenes_and_lesions_have_no_grey_fill_band(tmp_path: Path) -> None:
    """No generated image the benchmarks and tests measure is taken for a cut one."""
    for seed in range(8):
        for image in (scene(900, 600, seed)[0], lesion_image(640, 480, hairy=True, seed=seed)):
            path = _written(tmp_path / f"{seed}.jpg", encode_jpeg(image, 95))
            assert scan(str(path), HairMode.auto).reason == "", seed


def test_prepare_skips_a_jpeg_cut_then_closed(runner: CliRunner, isic2020: SyntheticSet,
                                              tmp_path: Path) -> None:
    first = str(isic2020.frame["image_name"].iloc[0])
    path = isic2020.images / f"{first}.jpg"
    path.write_bytes(_cut_and_closed(path.read_bytes()))
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert skipped.set_index("id")["reason"].to_dict() == {first: "truncated"}
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert first not in set(manifest["id"]) and len(manifest) == len(isic2020.frame) - 1


def _progressive(mode: str, subsampling: int) -> bytes:
    buffer = io.BytesIO()
    rgb = np.ascontiguousarray(scene(800, 600, seed=3)[0][:, :, ::-1])
    Image.fromarray(rgb).convert(mode).save(buffer, "JPEG", progressive=True,
                                            subsampling=subsampling, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize(("mode", "subsampling"), [("RGB", 2), ("RGB", 0), ("L", 0),
                                                   ("CMYK", 0)])
def test_a_progressive_jpeg_cut_before_its_last_scan_then_closed_is_truncated(
        tmp_path: Path, mode: str, subsampling: int) -> None:
    """Its first scans already give the whole picture, blurred, so no grey shows: the scans
    must bring every coefficient to full precision. A cut inside the last scan is not found
    (only its last bit of detail is missing there)."""
    whole = _progressive(mode, subsampling)
    assert _reason(tmp_path, "whole.jpg", whole) == ""
    scans = [i for i in range(len(whole)) if whole.startswith(b"\xff\xda", i)]
    assert len(scans) > 2
    for cut in (scans[1] + 50, (scans[-2] + scans[-1]) // 2, scans[-1]):
        assert _reason(tmp_path, "cut.jpg", whole[:cut] + b"\xff\xd9") == "truncated", cut
