"""Check one image file and measure it: format, size, hair, skin tone and artefacts, in one decode.

Runs in worker processes, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.data.hair import HairMode

if TYPE_CHECKING:
    from cv2.typing import MatLike
    from PIL import Image

_EXTENSION_KIND = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"DICM", "dicom"),
)
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
"""JPEG markers without a length field (TEM, RST0-7)."""
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
"""Start-of-frame markers of progressive JPEGs, whose image comes in several scans."""
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The first marker after entropy-coded data (not a stuffed zero, a restart or a fill byte)."""
_OUTPUT_SUFFIX = {"jpeg": ".jpg", "png": ".png"}
_JPEG_FILL = 128
"""What libjpeg decodes every channel of a block to when the entropy data that should hold it
is missing (all coefficients zero), with no error: a JPEG cut short then closed by an EOI."""
_BLOCK = 8
"""Rows of pixels of a JPEG block row (the smallest MCU row) in a full-size decode."""
_PILLOW = "Pillow (which sd-scripts reads images with)"
_TOO_LARGE = f"more pixels than {_PILLOW} opens: downsize it"
_ORIENTATION_TAG = 0x0112
TURNS = {2: "mirrored", 3: "turned 180°", 4: "mirrored upside down",
         5: "mirrored and turned 90° anticlockwise", 6: "turned 90° clockwise",
         7: "mirrored and turned 90° clockwise", 8: "turned 90° anticlockwise"}
"""How a viewer shows a photo of each EXIF orientation other than 1 (as stored)."""
GREY_SPREAD = 2
"""How far apart a grey pixel's channels may be: a JPEG's rounding of its colour planes."""
_PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process gets when its parent ends."""
_CORRUPT = "Corrupt JPEG data"
"""How libjpeg begins its warnings about the file's data rather than its metadata."""
_FILLED_IN = ("premature end", "bad huffman code", "bad arithmetic code", "instead of rst",
              "inconsistent progression")
"""libjpeg's warnings for image data it could not read, whose pixels it fills in (grey, or the
colour of the last block it read) before it goes on: a file cut short, a hole, flipped bits.
Its other warnings (bytes left before a marker, an unknown JFIF revision, a bad ICC marker)
leave every pixel as stored."""


@dataclass(frozen=True)
class Scan:
    """What one file turned out to be: usable (reason "") or skipped with a reason."""

    reason: str = ""
    kind: str = ""
    width: int = 0
    height: int = 0
    hair_score: float | None = None
    ita: float | None = None
    skin_tone: str | None = None
    vignette: bool = False
    ruler: bool = False
    bubbles: bool = False
    transparent: bool = False
    decoder: str = ""
    """What the JPEG decoder called corrupt in a file it decoded whole (bytes left over before
    a marker: flipped bits may have ended the image data early), in its words."""
    orientation: int = 1
    """The EXIF orientation tag (1: as stored, or none): viewers turn the photo by it, while
    it is measured and sd-scripts trains on it as stored."""
    colourless: bool = False
    """No colour in any pixel (a greyscale or 1-bit photo): skin tone cannot be measured."""


def sniff(data: bytes) -> str | None:
    """The format named by a file's first bytes, or None."""
    if data[8:12] == b"WEBP" and data[:4] == b"RIFF":
        return "webp"
    if data[128:132] == b"DICM":
        return "dicom"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def content_fits(path: Path) -> bool:
    """Whether a file's first bytes are the format its extension names (`.jpg` a JPEG)."""
    try:
        with path.open("rb") as file:
            head = file.read(160)
    except OSError:
        return False
    return sniff(head) == _EXTENSION_KIND.get(path.suffix.lower())


def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG holds its end-of-image marker after its first scan: the segments are
    walked by their lengths to the first SOS (so an EOI inside an EXIF thumbnail does not
    count), then its entropy-coded data, where FF D9 cannot occur unless it ends the image, is
    searched; a progressive JPEG must also hold all its scans (`_refined`). Bytes after the EOI
    (a camera's or an editor's trailer) are allowed."""
    at = 2
    components: bytes | None = None
    while at + 1 < len(data):
        if data[at] != 0xFF:  # not a marker where one must be: judge by any EOI after here
            return data.find(b"\xff\xd9", at) >= 0
        marker = data[at + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE:  # fill byte, or a marker alone
            at += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # EOI before any scan: no image data
            return False
        end = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if marker in _JPEG_PROGRESSIVE:  # its components' ids, after precision and size
            components = data[at + 10:end:3]
        if marker == 0xDA:
            return (data.find(b"\xff\xd9", end) >= 0 if components is None
                    else _refined(data, at, components))
        at = end
    return False


def _refined(data: bytes, at: int, components: bytes) -> bool:
    """Whether a progressive JPEG's scans, from the SOS at `at` to the EOI, bring every
    coefficient of each of its `components` to full precision (a scan whose successive
    approximation ends at bit 0). One cut short then closed by an EOI lacks its later scans,
    and libjpeg decodes it, blurred, without an error."""
    done: set[tuple[int, int]] = set()
    while at + 1 < len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xD9:
            return all((component, k) in done for component in components for k in range(64))
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        end = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if marker != 0xDA:
            at = end
            continue
        count = data[at + 4] if at + 4 < len(data) else 0
        spectrum = data[at + 5 + 2 * count:at + 8 + 2 * count]  # Ss, Se, Ah/Al
        if len(spectrum) == 3 and spectrum[2] & 0x0F == 0:
            done.update((component, k) for component in data[at + 5:at + 5 + 2 * count:2]
                        for k in range(spectrum[0], spectrum[1] + 1))
        found = _JPEG_NEXT_MARKER.search(data, end)
        if found is None:
            return False
        at = found.start()
    return False


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int]]:
    """A PNG's chunks, walked by their lengths: each one's type and where it ends."""
    at = 8
    while at + 8 <= len(data):
        end = at + 12 + int.from_bytes(data[at:at + 4], "big")
        yield data[at + 4:at + 8], end
        at = end


def _png_complete(data: bytes) -> bool:
    """Whether a PNG's chunks reach a whole IEND chunk (bytes after it are allowed)."""
    return any(kind == b"IEND" and end <= len(data) for kind, end in _png_chunks(data))


def _alpha_flagged(data: bytes) -> bool:
    """Whether a PNG may have see-through pixels: colour type 4 or 6 in its header, or a tRNS
    chunk before its image data (where the PNG standard and libpng look for one; Pillow would
    take one after it too, which viewers ignore)."""
    return data[25:26] in (b"\x04", b"\x06") or next(
        (kind == b"tRNS" for kind, _ in _png_chunks(data) if kind in (b"tRNS", b"IDAT")), False)


def past_pillow_limit(width: int, height: int) -> bool:
    """Whether Pillow refuses an image of this size when it opens it (more than twice its
    MAX_IMAGE_PIXELS): OpenCV would decode a PNG that large whole first, or raise past 2**30."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and width * height > 2 * limit


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an open image (1, as stored, where it has none or an
    unreadable or unknown one): what a viewer turns or mirrors it by, and sd-scripts ignores."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return 1
    return value if isinstance(value, int) and value in TURNS else 1


def _in_pillow(data: bytes, kind: str) -> tuple[str, bool, int]:
    """What Pillow, which sd-scripts loads every training image with, makes of a file: why it
    would refuse it ("" when it reads it), whether a PNG has a pixel that is not wholly
    opaque, which sd-scripts' convert("RGB") shows with the colour stored under it, and its
    EXIF orientation (`_orientation`), which sd-scripts never applies.

    A JPEG is only opened (its header: Pillow's pixel limit); a PNG is read whole, as Pillow
    reads text chunks (and an eXIf chunk) after the image data only then."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a large image, corrupt EXIF: sd-scripts goes on too
        try:
            with Image.open(io.BytesIO(data)) as image:
                if kind != "png":
                    return "", False, _orientation(image)
                image.load()
                if not _alpha_flagged(data):
                    return "", False, _orientation(image)
                return ("", image.convert("RGBA").getchannel("A").getextrema()[0] < 255,
                        _orientation(image))
        except Image.DecompressionBombError:
            return _TOO_LARGE, False, 1
        except (OSError, ValueError, SyntaxError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"{_PILLOW} cannot read it ({why}): re-save it", False, 1


def _complete(data: bytes, kind: str) -> bool:
    """Whether the file holds a whole JPEG (to its EOI marker) or PNG (to its IEND chunk)."""
    return _jpeg_complete(data) if kind == "jpeg" else _png_complete(data)


def _grey_filled(image: MatLike, longest: int) -> bool:
    """Whether a JPEG decoded as stored (long side `longest` pixels in the file, perhaps decoded
    reduced) ends in rows across its whole width, one block row deep or more, of exactly
    libjpeg's fill for missing data: what a file cut short then closed by an end marker decodes
    to. Photos (sensor noise) and drawn scenes hold no such band."""
    depth = max(1, round(_BLOCK * max(image.shape[:2]) / max(longest, 1)))
    if image.ndim != 3 or image.shape[0] <= depth:
        return False
    return bool((image[-depth:] == _JPEG_FILL).all())


def _colourless(image: MatLike) -> bool:
    """Whether a colour decode (BGR, perhaps reduced) has its three channels within GREY_SPREAD
    of each other everywhere: a greyscale photo, even one stored as colour. By OpenCV's
    per-channel operations: numpy's max over the channel axis took about as long as the whole
    measurement of a 1024 x 768 photo."""
    import cv2

    if image.ndim != 3:
        return True
    blue, green, red = cv2.split(image)
    spread = cv2.subtract(cv2.max(cv2.max(blue, green), red), cv2.min(cv2.min(blue, green), red))
    return bool(spread.max() <= GREY_SPREAD)


def _filled_in(said: list[str]) -> str | None:
    """The first of the decoder's lines that says it filled in pixels (`_FILLED_IN`)."""
    return next((line for line in said if any(words in line.lower() for words in _FILLED_IN)),
                None)


def scan(path: str, hair: HairMode) -> Scan:
    """Validate `path` and measure it (`measure.measure`; the hair score from `hair`'s detector,
    None with --hair off); never raises for a bad file, returns a reason."""
    import cv2
    import numpy as np

    from medsynth_kohya.data import hair as detector
    from medsynth_kohya.data.measure import HEARS_DECODERS, decoders_said, measure, pixel_size

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return Scan(f"unreadable ({exc.strerror})")
    if not data:
        return Scan("empty file")
    expected = _EXTENSION_KIND[Path(path).suffix.lower()]
    kind = sniff(data[:160])
    if kind is None:
        return Scan("not an image")
    if kind != expected:
        return Scan(f"content is {kind}, extension says {expected}")
    if not _complete(data, kind):
        return Scan("truncated")
    if kind == "png" and data[24:26] == b"\x10\x00":  # IHDR: bit depth 16, grey
        return Scan("16-bit greyscale PNG, which sd-scripts reads as all white: save it as "
                    "8-bit")
    size = pixel_size(data)
    if size is None:
        return Scan("undecodable (no image size in header)")
    width, height = size
    if past_pillow_limit(width, height):  # known from the header: decode nothing
        return Scan(_TOO_LARGE)
    buffer = np.frombuffer(data, dtype=np.uint8)
    full = hair is HairMode.seed  # the original converted a full colour decode to grayscale
    failure = ""
    with decoders_said() as said:
        try:
            image = cv2.imdecode(buffer, detector.decode_flag(width, height, full=full))
        except cv2.error as exc:  # past OpenCV's own pixel limit, where Pillow's is lifted
            image, failure = None, f"OpenCV: {exc.err}"
    if image is None or image.size == 0:
        why = failure or next(iter(said), "")
        return Scan(f"undecodable ({why})" if why else "undecodable")
    filled = _filled_in(said) if kind == "jpeg" else None
    if kind == "jpeg" and (filled or not HEARS_DECODERS) and _grey_filled(image,
                                                                         max(width, height)):
        return Scan("truncated")  # a valid photo may end in that grey, without the decoder's line
    if filled:
        words = filled.removeprefix(f"{_CORRUPT}: ")
        return Scan(f"corrupt JPEG data: {words[:1].lower()}{words[1:]}")
    refusal, transparent, orientation = _in_pillow(data, kind)
    if refusal:
        return Scan(refusal)
    found = measure(image)
    score: float | None = None
    if hair is HairMode.seed:
        score = detector.seed_score(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    elif hair is HairMode.auto:
        score = found.hair_score
    return Scan("", kind, width, height, score, found.ita, found.skin_tone,
                found.vignette, found.ruler, found.bubbles, transparent,
                next((line for line in said if line.startswith(_CORRUPT)), ""), orientation,
                _colourless(image))


def output_suffix(source: Path) -> str:
    """The lower-case suffix an image gets in the layout (sd-scripts skips `.Jpg`)."""
    return _OUTPUT_SUFFIX[_EXTENSION_KIND[source.suffix.lower()]]


def init_worker(parent: int) -> None:
    """Keep each worker process on one OpenCV thread (the pool already fills the cores), and
    end it with `parent`, the prepare that started it, however that ends (SIGKILL and the OOM
    killer included), where the system can (Linux's PR_SET_PDEATHSIG)."""
    import cv2

    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it ended before the line above
            os._exit(1)
