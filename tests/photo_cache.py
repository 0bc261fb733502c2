"""Generated photos kept on disk between test runs, keyed by the generator's source.

Drawing a labelled scene takes ten times as long as measuring it, and mutation testing runs the
measurement tests once per mutant of the detectors: each photo is drawn once per version of
`synth.py`, OpenCV and NumPy, stored beside pytest's own temporary folders (a scene as the JPEG
the tests measure, a photo as PNG: lossless, so a test sees exactly the array drawn) and read
back by later runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya import files
from medsynth_kohya.data import synth
from medsynth_kohya.data.synth import SceneTruth


def folder(factory: pytest.TempPathFactory) -> Path:
    """The cache of this generator's photos, under pytest's temporary root for this user."""
    made = hashlib.sha256(Path(synth.__file__).read_bytes())
    made.update(f"{cv2.__version__} {np.__version__}".encode())
    return factory.getbasetemp().parent / f"medsynth-photos-{made.hexdigest()[:12]}"


def _load(path: Path) -> np.ndarray | None:
    """The image stored at `path`; None when there is none (not drawn yet)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    return None if image is None else np.asarray(image)


def _store(path: Path, image: np.ndarray) -> np.ndarray:
    """`image` as a PNG at `path`, written whole (a test run side by side may read it)."""
    with files.replacing(path) as temporary:
        assert cv2.imwrite(str(temporary), image)
    return image


def scene_jpeg(cache: Path, width: int, height: int, seed: int) -> tuple[Path, SceneTruth]:
    """`synth.scene(width, height, seed)` as a JPEG file (`synth.encode_jpeg`), drawn once; a
    test reads the file and leaves it as it is."""
    stem = cache / f"scene-{width}x{height}-{seed}"
    image_file, truth_file = stem.with_suffix(".jpg"), stem.with_suffix(".json")
    if image_file.is_file() and truth_file.is_file():
        data = json.loads(truth_file.read_text(encoding="utf-8"))
        return image_file, SceneTruth(**{**data, "skin_lab": tuple(data["skin_lab"])})
    image, truth = synth.scene(width, height, seed)
    with files.replacing(image_file) as temporary:
        temporary.write_bytes(synth.encode_jpeg(image))
    files.write_json(truth_file, asdict(truth))
    return image_file, truth


def lesion_image(cache: Path, width: int, height: int, *, hairy: bool, seed: int) -> np.ndarray:
    """`synth.lesion_image(width, height, hairy=hairy, seed=seed)`, drawn once."""
    path = cache / f"lesion-{width}x{height}-{int(hairy)}-{seed}.png"
    found = _load(path)
    if found is not None:
        return found
    return _store(path, np.asarray(synth.lesion_image(width, height, hairy=hairy, seed=seed)))


def lesion_jpeg(cache: Path, width: int, height: int, *, hairy: bool, seed: int) -> Path:
    """`synth.lesion_image(...)` as a JPEG file (`synth.encode_jpeg`), drawn once."""
    path = cache / f"lesion-{width}x{height}-{int(hairy)}-{seed}.jpg"
    if not path.is_file():
        image = synth.lesion_image(width, height, hairy=hairy, seed=seed)
        with files.replacing(path) as temporary:
            temporary.write_bytes(synth.encode_jpeg(image))
    return path
