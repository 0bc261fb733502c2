"""The scan's verdict on one file, case by case: what Pillow (sd-scripts' reader) refuses, and
how a size imagesize cannot read is found."""

from __future__ import annotations

import io
import struct
import zlib
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
from medsynth_kohya.data.measure import measure, pixel_size
from medsynth_kohya.data.synth import SyntheticSet, lesion_image

from .conftest import invoke

if TYPE_CHECKING:
    from cv2.typing import MatLike

PILLOW = "Pillow (which sd-scripts reads images with)"


def _reason(tmp_path: Path, data: bytes, name: str = "a.jpg") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(str(path), HairMode.off).reason


def _jpeg(image: MatLike, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, list(params))
    assert ok
    return buffer.tobytes()


def _read(path: Path) -> MatLike:
    image = cv2.imread(str(path))
    assert image is not None
    return image


def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _thumbnail() -> bytes:
    """An EXIF APP1 segment holding a whole JPEG (SOI..EOI): an end marker before the scan."""
    thumb = _jpeg(cv2.resize(lesion_image(320, 240, hairy=False, seed=1), (40, 30)))
    return _segment(0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + thumb)


def test_a_stray_byte_between_segments_is_judged_by_the_end_marker_after_it(
        tmp_path: Path) -> None:
    """libjpeg skips such a byte (with a warning); only an end marker after it counts, not the
    thumbnail's before it."""
    photo = _jpeg(lesion_image(320, 240, hairy=False, seed=2))
    whole = photo[:2] + _thumbnail() + b"\x00" + photo[2:]
    assert _reason(tmp_path, whole) == ""
    assert _reason(tmp_path, whole[:-2]) == "truncated"


def test_a_jpeg_imagesize_cannot_size_is_sized_by_pillow_as_sd_scripts_does(
        tmp_path: Path) -> None:
    """imagesize stops at a stray byte before the frame header; sd-scripts then asks Pillow,
    and so do the scan, measure() and the evaluation's decode. Bytes neither reads: no size."""
    import imagesize

    from medsynth_kohya.evaluation.sets import decode

    photo = lesion_image(320, 240, hairy=False, seed=2)
    encoded = _jpeg(photo)
    data = encoded[:2] + _thumbnail() + b"\x00" + encoded[2:]
    path = tmp_path / "stray.jpg"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        imagesize.get(str(path))
    assert pixel_size(path) == pixel_size(str(path)) == pixel_size(data) == (320, 240)
    assert measure(path) == measure(_read(path))
    reduced = decode(path)
    assert reduced is not None and reduced.shape == (240, 320, 3)
    assert pixel_size(b"\xff\xd8\xff\xe0" + bytes(40)) == (-1, -1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png(image: MatLike) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


def _inserted(png: bytes, chunk: bytes, *, before: bytes) -> bytes:
    at = png.index(before) - 4
    return png[:at] + chunk + png[at:]


def _pillow_says(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except ValueError as exc:
        return str(exc)
    raise AssertionError("Pillow read it")


@pytest.mark.parametrize("where", [b"IDAT", b"IEND"], ids=["before the pixels", "after them"])
def test_a_png_pillow_refuses_is_skipped_with_its_words(tmp_path: Path, where: bytes) -> None:
    """A text chunk past Pillow's limit: OpenCV decodes the file, but sd-scripts, which reads
    with Pillow, would stop on it when training begins."""
    translucent = np.dstack([lesion_image(320, 240, hairy=False, seed=1),
                             np.full((240, 320), 200, np.uint8)])
    text = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2_000_000))
    data = _inserted(_png(translucent), text, before=where)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    assert _reason(tmp_path, data, "a.png") == (
        f"{PILLOW} cannot read it ({_pillow_says(data)}): re-save it")


def test_an_image_over_pillows_pixel_limit_is_skipped(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      recwarn: pytest.WarningsRecorder) -> None:
    """Pillow refuses more than twice its MAX_IMAGE_PIXELS and only warns below that; the
    scan follows whatever limit the installed Pillow has (lowered here to keep the test small)."""
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg(lesion_image(320, 240, hairy=False, seed=2)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 // 2 - 1)
    assert scan(str(path), HairMode.off).reason == f"more pixels than {PILLOW} opens: downsize it"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 // 2 + 1)
    assert scan(str(path), HairMode.off).reason == ""
    assert not recwarn.list


def test_prepare_skips_a_png_pillow_refuses_and_keeps_the_rest(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    first = str(isic2020.frame["image_name"].iloc[0])
    jpeg = isic2020.images / f"{first}.jpg"
    photo = _read(jpeg)
    text = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2_000_000))
    jpeg.with_suffix(".png").write_bytes(_inserted(_png(photo), text, before=b"IEND"))
    jpeg.unlink()
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert skipped.set_index("id")["reason"].to_dict() == {
        first: f"{PILLOW} cannot read it (Decompressed data too large for "
               "PngImagePlugin.MAX_TEXT_CHUNK): re-save it"}
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert len(manifest) == len(isic2020.frame) - 1


def test_a_trns_chunk_after_the_pixels_is_not_transparency(tmp_path: Path) -> None:
    """The PNG standard puts tRNS before the image data and libpng ignores one after it (as
    viewers do), so the photo shows as it trains; before the data, the same chunk counts."""
    photo = lesion_image(320, 240, hairy=False, seed=1)
    key = _chunk(b"tRNS", struct.pack(">HHH", *(int(v) for v in photo[0, 0][::-1])))
    for where, expected in ((b"IEND", False), (b"IDAT", True)):
        path = tmp_path / "a.png"
        path.write_bytes(_inserted(_png(photo), key, before=where))
        found = scan(str(path), HairMode.off)
        assert (found.reason, found.transparent) == ("", expected), where
