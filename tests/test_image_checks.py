"""The scan's verdict on one file, case by case: how a JPEG's segments are walked (fill bytes,
markers without a length, junk, component ids, a long comment between scans), cuts at every
boundary, images one block row small, what Pillow (sd-scripts' reader) refuses, and what each
usable file's Scan holds."""

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

from medsynth_kohya.data import hair as detector
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import content_fits, scan
from medsynth_kohya.data.measure import measure, pixel_size, tone_category
from medsynth_kohya.data.synth import SyntheticSet, lesion_image, scene

from .conftest import invoke, png_chunk, png_header_only

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


def _decoded(data: bytes) -> MatLike:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _thumbnail() -> bytes:
    """An EXIF APP1 segment holding a whole JPEG (SOI..EOI): an end marker before the scan."""
    thumb = _jpeg(cv2.resize(lesion_image(320, 240, hairy=False, seed=1), (40, 30)))
    return _segment(0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + thumb)


def _markers(data: bytes) -> list[int]:
    """Where each marker of a JPEG starts (not stuffed zeros, restarts or fill bytes)."""
    return [i for i in range(len(data) - 1)
            if data[i] == 0xFF and data[i + 1] not in (0x00, 0xFF, *range(0xD0, 0xD8))]


def _progressive(*, ids: tuple[int, int, int] = (1, 2, 3)) -> bytes:
    """A progressive JPEG (libjpeg's standard scans: the luma's last refinement is the last
    scan), its three components renumbered to `ids` in the frame and in every scan header."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(scene(480, 360, seed=3)[0][:, :, ::-1])).save(
        buffer, "JPEG", progressive=True, quality=90)
    data = bytearray(buffer.getvalue())
    old = {data[data.index(b"\xff\xc2") + 10 + 3 * i]: new for i, new in enumerate(ids)}
    for at in _markers(bytes(data)):
        if data[at + 1] == 0xC2:
            for i in range(3):
                data[at + 10 + 3 * i] = old[data[at + 10 + 3 * i]]
        if data[at + 1] == 0xDA:
            for j in range(data[at + 4]):
                data[at + 5 + 2 * j] = old[data[at + 5 + 2 * j]]
    return bytes(data)


def _scans(data: bytes) -> list[int]:
    return [at for at in _markers(data) if data[at + 1] == 0xDA]


def _after_frame(jpeg: bytes, extra: bytes) -> bytes:
    """`jpeg` with `extra` right after its frame header (SOF0; a thumbnail's comes before it),
    where imagesize stops reading."""
    frame = jpeg.rindex(b"\xff\xc0")
    end = frame + 2 + int.from_bytes(jpeg[frame + 2:frame + 4], "big")
    return jpeg[:end] + extra + jpeg[end:]


@pytest.mark.parametrize("between", [b"\xff", b"\xff\xff", b"\xff\xd3"],
                         ids=["one fill byte", "two fill bytes", "a restart marker"])
def test_fill_bytes_and_markers_without_a_length_are_stepped_over(tmp_path: Path,
                                                                  between: bytes) -> None:
    """Before a thumbnail's segment (after the frame header, where imagesize has stopped): a
    walk that lost its step would take the thumbnail's end marker for the image's own, and
    call a file without one whole."""
    photo = _jpeg(lesion_image(320, 240, hairy=False, seed=2))
    whole = _after_frame(photo, between + _thumbnail())
    assert _reason(tmp_path, whole) == ""
    assert _reason(tmp_path, whole[:-2]) == "truncated"


def test_a_stray_byte_between_segments_is_judged_by_the_end_marker_after_it(
        tmp_path: Path) -> None:
    """libjpeg and Pillow skip such a byte (libjpeg with a warning); only an end marker after
    it counts, not the thumbnail's before it."""
    photo = _jpeg(lesion_image(320, 240, hairy=False, seed=2))
    whole = _after_frame(photo, _thumbnail() + b"\x00")
    assert _reason(tmp_path, whole) == ""
    assert _reason(tmp_path, whole[:-2]) == "truncated"


def test_a_jpeg_imagesize_cannot_size_is_skipped_as_sd_scripts_would_stop_on_it(
        tmp_path: Path) -> None:
    """A stray byte before the frame header: libjpeg reads the photo, but imagesize raises,
    and sd-scripts sizes every image with it without catching that (train_util's
    get_image_size asks Pillow only for a width of 0). The scan skips it; measure() and the
    evaluation's decode find no size either."""
    import imagesize

    from medsynth_kohya.evaluation.sets import decode

    encoded = _jpeg(lesion_image(320, 240, hairy=False, seed=2))
    data = encoded[:2] + _thumbnail() + b"\x00" + encoded[2:]
    path = tmp_path / "stray.jpg"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        imagesize.get(str(path))
    assert _decoded(data).shape == (240, 320, 3)
    assert pixel_size(path) is pixel_size(str(path)) is pixel_size(data) is None
    assert _reason(tmp_path, data) == "undecodable (no image size in header)"
    with pytest.raises(ValueError, match="cannot be decoded"):
        measure(path)
    assert decode(path) is None
    assert pixel_size(encoded) == pixel_size(_after_frame(encoded, b"\x00")) == (320, 240)


@pytest.mark.parametrize(("width", "height", "size"), [
    (7, 1, (7, 1)), (1, 5, (1, 5)), (0, 5, None), (5, 0, None), (0, 0, None)])
def test_a_header_s_size_is_taken_only_when_both_sides_are_positive(
        tmp_path: Path, width: int, height: int, size: tuple[int, int] | None) -> None:
    """A PNG header of 0 rows or columns has no pixels to train on (sd-scripts would bucket
    it by a side of 0); one row or column is an image. The same for a path and for bytes."""
    data = png_header_only(width, height)
    path = tmp_path / "header.png"
    path.write_bytes(data)
    assert pixel_size(path) == pixel_size(data) == size


def test_a_file_no_image_header_reader_knows_has_no_size(tmp_path: Path) -> None:
    """imagesize answers -1 x -1 for a format it does not know: no size, not a negative one."""
    data = b"GIF8 is not enough; this is text\n" * 4
    path = tmp_path / "notes.txt"
    path.write_bytes(data)
    assert pixel_size(path) is pixel_size(data) is None


@pytest.mark.parametrize("kind", ["baseline", "progressive"])
def test_a_jpeg_cut_at_or_just_after_any_marker_is_truncated(tmp_path: Path, kind: str) -> None:
    """Cuts on a segment's first bytes (marker, length, a scan's component count) and inside
    each scan's data, none closed by an end marker: each is 'truncated', none raises."""
    if kind == "baseline":
        photo = _jpeg(lesion_image(320, 240, hairy=False, seed=2))
        whole = photo[:2] + _thumbnail() + photo[2:]
    else:
        whole = _progressive()
    assert _reason(tmp_path, whole) == ""
    starts = [at for at in _markers(whole) if at > 0][:-1]  # every marker before the EOI
    cuts = {at + step for at in starts for step in range(6) if at + step > 2}
    ends = [*_scans(whole)[1:], len(whole) - 2]
    cuts |= {(scan_at + end) // 2 for scan_at, end in zip(_scans(whole), ends, strict=True)}
    for cut in sorted(cuts):
        assert _reason(tmp_path, whole[:cut]) == "truncated", cut


def test_a_progressive_jpeg_with_fill_bytes_and_a_long_comment_between_scans_is_whole(
        tmp_path: Path) -> None:
    """Segments between scans are walked by their two-byte lengths (a 300-byte comment), fill
    bytes before a marker skipped; without its last scan the same file is still cut."""
    whole = _progressive()
    tables = [at for at in _markers(whole) if whole[at + 1] == 0xC4 and at > _scans(whole)[0]]
    after = tables[-1] + 2 + int.from_bytes(whole[tables[-1] + 2:tables[-1] + 4], "big")
    comment = _segment(0xFE, bytes(range(1, 251)) + b"medsynth" * 5)
    padded = whole[:after] + b"\xff" + comment + b"\xff\xff" + whole[after:]
    assert _reason(tmp_path, padded) == ""
    last = _scans(padded)[-1]
    assert _reason(tmp_path, padded[:last] + b"\xff\xd9") == "truncated"


@pytest.mark.parametrize("ids", [(1, 2, 3), (82, 71, 66), (8, 12, 218)],
                         ids=["1 2 3", "R G B, as Adobe writes them", "8 12 218"])
def test_a_progressive_jpeg_missing_its_last_scan_is_truncated_whatever_its_component_ids(
        tmp_path: Path, ids: tuple[int, int, int]) -> None:
    """Ids are any byte, even one equal to a scan header's length (8, 12) or marker (218):
    each is read from its own place in each scan header."""
    whole = _progressive(ids=ids)
    assert _reason(tmp_path, whole) == ""
    assert _reason(tmp_path, whole[:_scans(whole)[-1]] + b"\xff\xd9") == "truncated"


def test_a_progressive_jpeg_without_its_dc_refinement_is_truncated(tmp_path: Path) -> None:
    """Every coefficient must reach full precision, the DC ones too: the later scans that
    complete the AC coefficients do not stand for a missing DC refinement scan."""
    whole = _progressive()
    refinement = next(at for at in _scans(whole)
                      if whole[at + 4] == 3 and whole[at + 11:at + 14] == b"\x00\x00\x10")
    following = next(at for at in _markers(whole) if at > refinement)
    assert _reason(tmp_path, whole[:refinement] + whole[following:]) == "truncated"


def test_images_one_block_row_small_are_whole(tmp_path: Path) -> None:
    """Flat grey the colour of libjpeg's fill, no taller than a block row: nothing below the
    image can be missing. Strips one pixel thin keep their size."""
    for width, height in ((8, 8), (16, 8), (8, 3)):
        grey = np.full((height, width, 3), 128, np.uint8)
        assert _reason(tmp_path, _jpeg(grey, cv2.IMWRITE_JPEG_QUALITY, 100)) == "", (width,
                                                                                    height)
    photo = lesion_image(96, 96, hairy=False, seed=4)
    for strip in (photo[:, :1], photo[:1, :]):
        path = tmp_path / "strip.jpg"
        path.write_bytes(_jpeg(np.ascontiguousarray(strip)))
        found = scan(str(path), HairMode.off)
        assert (found.reason, found.width, found.height) == ("", strip.shape[1], strip.shape[0])


def test_a_narrow_jpeg_cut_then_closed_is_truncated(tmp_path: Path) -> None:
    strip = np.ascontiguousarray(lesion_image(96, 320, hairy=False, seed=4)[:, :4])
    whole = _jpeg(strip, cv2.IMWRITE_JPEG_QUALITY, 95)
    assert _reason(tmp_path, whole) == ""
    assert _reason(tmp_path, whole[:len(whole) // 2] + b"\xff\xd9") == "truncated"


def test_a_photo_with_one_grey_pixel_row_at_the_bottom_is_whole(tmp_path: Path) -> None:
    """A band of libjpeg's fill grey must be a block row deep to count as missing data."""
    photo = lesion_image(640, 481, hairy=False, seed=3).copy()
    photo[-1] = 128
    data = _jpeg(photo, cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    decoded = _decoded(data)
    assert (decoded[-1] == 128).all() and not (decoded[-2] == 128).all()
    assert _reason(tmp_path, data) == ""


def test_a_whole_photo_ending_in_a_block_row_of_fill_grey_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Padding the grey of libjpeg's fill is a valid photo: the decoder says nothing of it, so
    it is kept; only where the decoder's lines cannot be heard is the band taken as missing."""
    from medsynth_kohya.data import measure

    photo = lesion_image(640, 480, hairy=False, seed=3).copy()
    photo[-16:] = 128
    data = _jpeg(photo, cv2.IMWRITE_JPEG_QUALITY, 95)
    assert (_decoded(data)[-8:] == 128).all()
    assert _reason(tmp_path, data) == ""
    assert _reason(tmp_path, data[:len(data) // 2] + b"\xff\xd9") == "truncated"
    monkeypatch.setattr(measure, "HEARS_DECODERS", False)
    assert _reason(tmp_path, data) == "truncated"


def test_a_large_jpeg_missing_only_its_last_block_row_is_truncated(tmp_path: Path) -> None:
    """Decoded at 1/8 scale, the missing block row is one pixel row of grey."""
    width, height = 6400, 960
    data = _jpeg(scene(width, height, seed=5)[0], cv2.IMWRITE_JPEG_QUALITY, 90,
                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
                 cv2.IMWRITE_JPEG_RST_INTERVAL, width // 8)  # a restart marker per block row
    flag = detector.decode_flag(width, height) & ~cv2.IMREAD_IGNORE_ORIENTATION
    assert flag == cv2.IMREAD_REDUCED_COLOR_8
    restarts = [at for at in range(len(data) - 1)
                if data[at] == 0xFF and 0xD0 <= data[at + 1] <= 0xD7]
    assert len(restarts) == height // 8 - 1
    assert _reason(tmp_path, data) == ""
    assert _reason(tmp_path, data[:restarts[-1]] + b"\xff\xd9") == "truncated"


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
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2_000_000))
    data = _inserted(_png(translucent), text, before=where)
    assert _decoded(data).size > 0
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


@pytest.mark.parametrize(("error", "said"), [
    (OSError(), "OSError"), (SyntaxError("broken PNG file\nchunk 3"), "broken PNG file")])
def test_pillow_s_words_are_one_line_and_never_none(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   error: Exception, said: str) -> None:
    """The reason is one line of a table and of skipped.csv: an error without words is named
    by its type, one of several lines by its first."""
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg(lesion_image(320, 240, hairy=False, seed=2)))

    def refuse(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr(Image, "open", refuse)
    assert scan(str(path), HairMode.off).reason == f"{PILLOW} cannot read it ({said}): re-save it"


def test_prepare_skips_a_png_pillow_refuses_and_keeps_the_rest(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    first = str(isic2020.frame["image_name"].iloc[0])
    jpeg = isic2020.images / f"{first}.jpg"
    photo = _read(jpeg)
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2_000_000))
    data = _inserted(_png(photo), text, before=b"IEND")
    jpeg.with_suffix(".png").write_bytes(data)
    jpeg.unlink()
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert skipped.set_index("id")["reason"].to_dict() == {
        first: f"{PILLOW} cannot read it ({_pillow_says(data)}): re-save it"}
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert len(manifest) == len(isic2020.frame) - 1


def test_a_rerun_redoes_scans_cached_before_pillow_was_asked(isic2020: SyntheticSet,
                                                            tmp_path: Path) -> None:
    """A file an older version found usable, cached under that version, is scanned again;
    the same entry under this version is reused, so the version is what tells them apart."""
    import json

    from medsynth_kohya.data.measure import VERSION
    from medsynth_kohya.data.prepare import CACHE_FILE, prepare
    from medsynth_kohya.data.prepared import STATE_DIR

    first = str(isic2020.frame["image_name"].iloc[0])
    jpeg = isic2020.images / f"{first}.jpg"
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2_000_000))
    jpeg.with_suffix(".png").write_bytes(_inserted(_png(_read(jpeg)), text, before=b"IEND"))
    jpeg.unlink()
    out = tmp_path / "out"
    assert first in set(prepare(isic2020.root, out, workers=1).skipped["id"])
    cache = out / STATE_DIR / CACHE_FILE

    def skipped_with_the_png_cached_usable_by(version: int) -> set[str]:
        entries = json.loads(cache.read_text(encoding="utf-8"))
        for entry in entries:
            if entry["path"].endswith(".png"):
                entry["scan"].update(reason="", kind="png", width=640, height=480)
            entry["hair"] = f"{entry['hair'].rsplit('/', 1)[0]}/{version}"
        cache.write_text(json.dumps(entries), encoding="utf-8")
        return set(prepare(isic2020.root, out, workers=1).skipped["id"])

    assert first not in skipped_with_the_png_cached_usable_by(VERSION)
    assert first in skipped_with_the_png_cached_usable_by(14)


def test_a_trns_chunk_after_the_pixels_is_not_transparency(tmp_path: Path) -> None:
    """The PNG standard puts tRNS before the image data and libpng ignores one after it (as
    viewers do), so the photo shows as it trains; before the data, the same chunk counts."""
    photo = lesion_image(320, 240, hairy=False, seed=1)
    key = png_chunk(b"tRNS", struct.pack(">HHH", *(int(v) for v in photo[0, 0][::-1])))
    for where, expected in ((b"IEND", False), (b"IDAT", True)):
        path = tmp_path / "a.png"
        path.write_bytes(_inserted(_png(photo), key, before=where))
        found = scan(str(path), HairMode.off)
        assert (found.reason, found.transparent) == ("", expected), where


def test_files_no_reader_can_use_are_named_for_what_is_wrong(tmp_path: Path) -> None:
    photo = lesion_image(320, 240, hairy=False, seed=1)
    jpeg = _jpeg(photo)
    tables = jpeg.index(b"\xff\xc4")
    bogus = jpeg[:tables + 5] + bytes([255] * 16) + jpeg[tables + 21:]  # 4080 Huffman codes
    assert _reason(tmp_path, bogus) == "undecodable"
    frame = jpeg.index(b"\xff\xc0")
    for offset in (5, 7):  # height, then width, 0 in the frame header
        sizeless = jpeg[:frame + offset] + b"\x00\x00" + jpeg[frame + offset + 2:]
        assert _reason(tmp_path, sizeless) == "undecodable (no image size in header)", offset
    png = _png(photo)
    data = png.index(b"IDAT")
    length = int.from_bytes(png[data - 4:data], "big")
    garbage = png_chunk(b"IDAT", bytes(range(256)) * (length // 256) + bytes(length % 256))
    assert _reason(tmp_path, png[:data - 4] + garbage + png[data + 4 + length + 4:],
                   "a.png") == "undecodable (libpng error: IDAT: incorrect header check)"
    (tmp_path / "folder.jpg").mkdir()
    assert scan(str(tmp_path / "folder.jpg"), HairMode.off).reason == "unreadable (Is a directory)"


def test_content_fits_the_extension_only_when_the_bytes_say_so(tmp_path: Path) -> None:
    """What sources use to choose between two files of one id: a file that cannot be read
    (gone since it was listed, not readable) fits nothing."""
    jpeg = _jpeg(lesion_image(64, 48, hairy=False, seed=1))
    for name, data, fits in (("a.jpg", jpeg, True), ("b.JPEG", jpeg, True),
                             ("c.png", jpeg, False), ("d.png", _png(_decoded(jpeg)), True),
                             ("e.jpg", b"", False)):
        (tmp_path / name).write_bytes(data)
        assert content_fits(tmp_path / name) is fits, name
    assert content_fits(tmp_path / "gone.jpg") is False
    (tmp_path / "folder.jpg").mkdir()
    assert content_fits(tmp_path / "folder.jpg") is False


def test_a_16_bit_greyscale_png_is_skipped_saying_how_to_fix_it(tmp_path: Path) -> None:
    grey = cv2.cvtColor(lesion_image(320, 240, hairy=False, seed=4), cv2.COLOR_BGR2GRAY)
    ok, buffer = cv2.imencode(".png", grey.astype(np.uint16) * 257)
    assert ok
    assert _reason(tmp_path, buffer.tobytes(), "a.png") == (
        "16-bit greyscale PNG, which sd-scripts reads as all white: save it as 8-bit")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_usable_file_s_scan_holds_its_kind_size_and_every_measurement(
        tmp_path: Path, suffix: str) -> None:
    """Each field as measure() finds it on the same file; the hair score from the chosen
    detector (the original's on the whole photo in grey, none with --hair off)."""
    seen: set[str] = set()
    for seed in (0, 3, 12):
        photo = scene(900, 600, seed)[0]
        path = tmp_path / f"{seed}{suffix}"
        assert cv2.imwrite(str(path), photo)
        expected = measure(path)
        off, auto, seed_mode = (scan(str(path), mode) for mode in
                                (HairMode.off, HairMode.auto, HairMode.seed))
        assert (off.reason, off.kind, off.width, off.height) == ("", suffix[1:].replace(
            "jpg", "jpeg"), 900, 600)
        assert off.hair_score is None
        assert auto.hair_score == expected.hair_score
        assert seed_mode.hair_score == detector.seed_score(
            cv2.cvtColor(_read(path), cv2.COLOR_BGR2GRAY))
        assert (off.ita, off.skin_tone, off.vignette, off.ruler, off.bubbles) == (
            expected.ita, expected.skin_tone, expected.vignette, expected.ruler,
            expected.bubbles)
        assert off.skin_tone == (None if off.ita is None else tone_category(off.ita))
        seen |= {name for name in ("ruler", "bubbles", "vignette") if getattr(off, name)}
        seen |= {"tone"} if off.skin_tone else set()
    assert seen == {"ruler", "bubbles", "vignette", "tone"}


@pytest.mark.parametrize(("width", "height"), [(3, 3000), (3000, 3), (7, 5000), (5, 900)])
def test_a_photo_thinner_than_the_decode_reduction_is_read_whole_in_any_format(
        tmp_path: Path, width: int, height: int) -> None:
    """A reduced decode of a long photo fewer pixels across than the reduction (a 3 px strip
    halved, quartered) has no pixel left across: the same pixels are taken as a JPEG and as a
    PNG, at their size, not called undecodable in one format."""
    pixels = lesion_image(width, height, hairy=False, seed=3)
    for suffix in (".jpg", ".png"):
        path = tmp_path / f"strip{suffix}"
        assert cv2.imwrite(str(path), pixels)
        result = scan(str(path), HairMode.auto)
        assert (result.reason, result.width, result.height) == ("", width, height), suffix
