"""A PNG with transparent pixels is prepared with a warning naming it: sd-scripts drops the
alpha channel (convert("RGB")) and trains on the colours stored under it, unseen in a viewer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.synth import SyntheticSet, lesion_image

from .conftest import invoke


def _rgb() -> np.ndarray:
    return np.ascontiguousarray(lesion_image(320, 240, hairy=False, seed=6)[:, :, ::-1])


def _saved(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, "PNG", **options)
    return path


def _cut_out(rgb: np.ndarray, alpha: int = 0) -> Image.Image:
    """The photo with its left half made see-through (alpha `alpha`) over black."""
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, :rgb.shape[1] // 2] = (0, 0, 0, alpha)
    return Image.fromarray(rgba)


def _palette(rgb: np.ndarray) -> Image.Image:
    """The photo as a palette PNG, one of its colours transparent through a tRNS chunk."""
    image = Image.fromarray(rgb).quantize(64)
    used = int(np.asarray(image)[0, 0])
    image.info["transparency"] = used
    return image


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(lambda rgb: _cut_out(rgb), True, id="RGBA see-through"),
    pytest.param(lambda rgb: _cut_out(rgb, 254), True, id="RGBA barely see-through"),
    pytest.param(lambda rgb: _cut_out(rgb).convert("LA"), True, id="grey and alpha"),
    pytest.param(lambda rgb: _cut_out(rgb, 255), False, id="RGBA opaque"),
    pytest.param(lambda rgb: Image.fromarray(rgb), False, id="RGB"),
    pytest.param(lambda rgb: Image.fromarray(rgb).quantize(64), False, id="palette"),
])
def test_the_scan_finds_transparent_pixels(tmp_path: Path,
                                           make: Callable[[np.ndarray], Image.Image],
                                           expected: bool) -> None:
    path = _saved(tmp_path / "a.png", make(_rgb()))
    found = scan(str(path), HairMode.auto)
    assert found.reason == "" and found.transparent is expected


def test_a_trns_chunk_is_looked_into(tmp_path: Path) -> None:
    """A palette (or RGB) PNG may be transparent through tRNS without an alpha channel."""
    rgb = _rgb()
    image = _palette(rgb)
    path = _saved(tmp_path / "p.png", image, transparency=image.info["transparency"])
    assert b"tRNS" in path.read_bytes()
    assert scan(str(path), HairMode.auto).transparent
    key = tuple(int(v) for v in rgb[0, 0])
    keyed = _saved(tmp_path / "k.png", Image.fromarray(rgb), transparency=key)
    assert scan(str(keyed), HairMode.off).transparent


def test_prepare_warns_of_transparent_images(runner: CliRunner, isic2020: SyntheticSet,
                                             tmp_path: Path) -> None:
    ids = sorted(str(i) for i in isic2020.frame["image_name"])
    for identifier, alpha in ((ids[2], 0), (ids[4], 128), (ids[5], 255)):
        jpeg = isic2020.images / f"{identifier}.jpg"
        rgb = np.asarray(Image.open(jpeg).convert("RGB"))
        _saved(jpeg.with_suffix(".png"), _cut_out(rgb, alpha))
        jpeg.unlink()
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    said = " ".join((stdout + stderr).split())
    assert (f"2 of {len(ids)} images have transparent pixels (first: {ids[2]}); sd-scripts "
            "drops the transparency and trains on the colours stored under them") in said
    assert "flatten them onto the background you want" in said
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert len(manifest) == len(ids)


def test_one_transparent_image_is_counted_in_the_singular(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    ids = sorted(str(i) for i in isic2020.frame["image_name"])
    jpeg = isic2020.images / f"{ids[1]}.jpg"
    _saved(jpeg.with_suffix(".png"), _cut_out(np.asarray(Image.open(jpeg).convert("RGB"))))
    jpeg.unlink()
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert (f"1 of {len(ids)} images has transparent pixels (first: {ids[1]}); sd-scripts "
            "drops the transparency and trains on the colours stored under it") in " ".join(
                (stdout + stderr).split())


def test_a_rerun_finds_transparency_in_images_scanned_before(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Scans cached by a version that did not look for transparency are redone."""
    import json

    from medsynth_kohya.data.prepare import CACHE_FILE, prepare
    from medsynth_kohya.data.prepared import STATE_DIR

    identifier = sorted(str(i) for i in isic2020.frame["image_name"])[0]
    jpeg = isic2020.images / f"{identifier}.jpg"
    _saved(jpeg.with_suffix(".png"), _cut_out(np.asarray(Image.open(jpeg).convert("RGB"))))
    jpeg.unlink()
    out = tmp_path / "out"
    assert any("transparent" in w for w in prepare(isic2020.root, out, workers=1).warnings)
    cache = out / STATE_DIR / CACHE_FILE
    entries = json.loads(cache.read_text(encoding="utf-8"))
    for entry in entries:  # as an older version left it: no transparency, its own version
        entry["scan"].pop("transparent")
        entry["hair"] = entry["hair"].rsplit("/", 1)[0] + "/13"
    cache.write_text(json.dumps(entries), encoding="utf-8")
    again = prepare(isic2020.root, out, workers=1)
    assert any(f"(first: {identifier})" in w for w in again.warnings)
