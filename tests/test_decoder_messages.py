"""What the C decoders say while the scan decodes a file: libjpeg's and libpng's lines are kept
off the terminal (they name no file) and turned into the file's verdict: a JPEG whose decoder
fills in pixels it cannot read is skipped as corrupt, one it reads whole but calls corrupt is
used and named in a warning, an undecodable file's reason quotes the decoder; and sizes past
Pillow's limit are refused from the header, before any decode."""

from __future__ import annotations

import ctypes
import io
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data import measure
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, lesion_image

from .conftest import invoke, png_chunk

HOLE = "corrupt JPEG data: premature end of data segment"
TRAILED = r"Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9"
"""libjpeg's words for bytes between the image data and the end marker (it counts from where
its Huffman decoder stopped, a byte or so before the data's last)."""
TOO_LARGE = "more pixels than Pillow (which sd-scripts reads images with) opens: downsize it"


def _jpeg(seed: int = 1) -> bytes:
    ok, buffer = cv2.imencode(".jpg", lesion_image(640, 480, hairy=False, seed=seed))
    assert ok
    return buffer.tobytes()


def _holed(whole: bytes) -> bytes:
    """40 bytes of the image data zeroed half-way: libjpeg reads on, runs out of codes before
    the last blocks and fills them in."""
    middle = len(whole) // 2
    return whole[:middle] + bytes(40) + whole[middle + 40:]


def _closed_short(whole: bytes, cut: int) -> bytes:
    """The file less `cut` bytes of image data, closed by an end marker again."""
    return whole[:len(whole) - 2 - cut] + b"\xff\xd9"


def _trailed(whole: bytes) -> bytes:
    """Seven bytes between the image data and the end marker, as some cameras write."""
    return whole[:-2] + b"garbage" + whole[-2:]


def _reason(tmp_path: Path, data: bytes, hair: HairMode = HairMode.auto,
            name: str = "a.jpg") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(str(path), hair).reason


@pytest.mark.parametrize("hair", [HairMode.auto, HairMode.seed])
def test_a_jpeg_whose_decoder_fills_in_pixels_is_corrupt_and_says_so_once(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], hair: HairMode) -> None:
    """Pillow, sd-scripts' reader, opens all of these without a word: training would see grey
    blocks or a smear. Cut short by any amount and closed, or holed (decoded reduced, or whole
    as --hair seed does); the decoder's own line never reaches the terminal."""
    whole = _jpeg()
    assert _reason(tmp_path, whole, hair) == ""
    assert _reason(tmp_path, _holed(whole), hair) == HOLE
    for cut in (3, 20, 100, 300, 1000):
        assert _reason(tmp_path, _closed_short(whole, cut), hair) == HOLE, cut
    assert capfd.readouterr().err == ""


def test_a_progressive_jpeg_with_a_scan_twice_is_corrupt(tmp_path: Path) -> None:
    """libjpeg applies the second copy of a refinement scan too, with a warning that does not
    begin with its usual "Corrupt JPEG data" (so the reason's own words begin it)."""
    rgb = np.ascontiguousarray(lesion_image(320, 240, hairy=False, seed=1)[:, :, ::-1])
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", progressive=True, quality=90)
    whole = buffer.getvalue()
    scans = [at for at in range(len(whole)) if whole.startswith(b"\xff\xda", at)]
    second = whole[scans[1]:scans[2]]
    assert _reason(tmp_path, whole[:scans[2]] + second + whole[scans[2]:]) == (
        "corrupt JPEG data: inconsistent progression sequence for component 0 coefficient 1")


def test_a_jpeg_the_decoder_reads_whole_but_calls_corrupt_is_used_and_named(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    found = scan(str(_write(tmp_path / "a.jpg", _trailed(_jpeg()))), HairMode.auto)
    assert found.reason == ""
    assert re.fullmatch(TRAILED, found.decoder)
    assert scan(str(_write(tmp_path / "b.jpg", _jpeg())), HairMode.auto).decoder == ""
    assert capfd.readouterr().err == ""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png(seed: int = 1) -> bytes:
    ok, buffer = cv2.imencode(".png", lesion_image(320, 240, hairy=False, seed=seed))
    assert ok
    return buffer.tobytes()


def test_a_png_libpng_warns_about_is_used_quietly(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """An sRGB chunk with a rendering intent past 3: libpng warns ("sRGB: invalid") and drops
    it, the pixels are whole; its warning is no JPEG corruption and is not reported."""
    png = _png()
    bad = png_chunk(b"sRGB", b"\x09")
    at = png.index(b"IDAT") - 4
    found = scan(str(_write(tmp_path / "a.png", png[:at] + bad + png[at:])), HairMode.auto)
    assert (found.reason, found.decoder) == ("", "")
    assert capfd.readouterr().err == ""


def test_an_undecodable_file_is_named_with_what_its_decoder_said(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    png = bytearray(_png())
    data = png.index(b"IDAT")
    png[data + 4 + int.from_bytes(png[data - 4:data], "big")] ^= 0xFF  # its checksum, wrong
    assert _reason(tmp_path, bytes(png), name="a.png") == (
        "undecodable (libpng error: IDAT: CRC error)")
    assert capfd.readouterr().err == ""


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


@pytest.mark.parametrize(("trailed", "words"), [(1, "is used as decoded"),
                                                (2, "are used as decoded")])
def test_prepare_skips_corrupt_jpegs_and_warns_of_those_it_uses(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        capfd: pytest.CaptureFixture[str], trailed: int, words: str) -> None:
    """Through the CLI, scanned in worker processes: skipped.csv and the summary give the
    corrupt file's reason, a warning names the first file used as decoded, and the terminal
    holds neither decoder's line."""
    ids = list(isic2020.frame["image_name"].astype(str))
    folder = isic2020.images
    for identifier, change in ((ids[0], _holed), *((i, _trailed) for i in ids[1:1 + trailed])):
        path = folder / f"{identifier}.jpg"
        path.write_bytes(change(path.read_bytes()))
    out = tmp_path / "out"

    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out,
                                  "--workers", "2")

    assert code == 0, stderr
    skipped = pd.read_csv(out / "skipped.csv", dtype=str).set_index("id")["reason"]
    assert skipped.to_dict() == {ids[0]: HOLE}
    assert f"skipped: {HOLE}" in " ".join(stdout.split())
    assert ids[1] in set(pd.read_csv(out / "manifest.csv", dtype=str)["id"])
    warning = " ".join(stderr.split())
    assert re.search(f"{trailed} of {len(ids) - 1} images drew the JPEG decoder's warning and "
                     f"{words} \\(first: {ids[1]}: \"{TRAILED}\"\\); look at "
                     f"{'it' if trailed == 1 else 'them'} and replace", warning)
    assert "Corrupt JPEG data" not in capfd.readouterr().err


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


def test_the_decoders_lines_are_taken_and_stderr_is_given_back(
        capfd: pytest.CaptureFixture[str]) -> None:
    """The lines in the block are returned, not shown; a progress bar's redraw (terminal
    controls) is dropped; a flood past the pipe's buffer neither blocks nor is kept whole; and
    stderr is the terminal's again after the block, also when the block raises."""
    libc = ctypes.CDLL(None)

    def say(text: bytes) -> None:
        libc.write(2, text, len(text))

    with measure.decoders_said() as said:
        say(b"libpng warning: one\n\x1b[2Kchecking images 3/9\nsecond line\n")
    assert said == ["libpng warning: one", "second line"]
    def stuck(*args: object) -> None:
        raise TimeoutError("stderr blocked")

    previous = signal.signal(signal.SIGALRM, stuck)  # a blocked write fails, not hangs
    signal.alarm(20)
    try:
        with measure.decoders_said() as flood:
            for _ in range(4000):
                say(b"x" * 99 + b"\n")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert 0 < len(flood) < 4000
    with pytest.raises(KeyError), measure.decoders_said():
        raise KeyError
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_evaluate_decodes_its_photos_quietly(tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """evaluate decodes its real and synthetic photos through measure.decode: the decoders'
    lines stay off its progress bars too."""
    from medsynth_kohya.evaluation import sets

    path = _write(tmp_path / "a.jpg", _holed(_jpeg()))
    image = sets.decode(path)
    assert image is not None and image.shape[:2] == (480, 640)
    assert capfd.readouterr().err == ""


def test_a_closed_stderr_still_scans(tmp_path: Path) -> None:
    """Run with stderr closed (`2>&-`), as from some schedulers, the scan gives the same
    verdicts, and stderr is closed again after each."""
    path = _write(tmp_path / "a.jpg", _holed(_jpeg()))
    whole = _write(tmp_path / "b.jpg", _jpeg())
    code = ("import os, sys; os.close(2)\n"
            "from medsynth_kohya.data.images import scan\n"
            "from medsynth_kohya.data.hair import HairMode\n"
            "found = [scan(path, HairMode.auto).reason for path in sys.argv[1:]]\n"
            "try:\n    os.fstat(2)\nexcept OSError:\n    found.append('closed')\n"
            "print(found)")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(whole)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, str([HOLE, "", "closed"])), (
        done.stdout + done.stderr)
