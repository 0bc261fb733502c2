"""Generated data for the evaluation tests: varied lesion photos, sets on disk, a tiny network.

Unlike `data.synth` (one template, for prepare), every photo here has its own skin texture,
lesion shape and colours, as different patients' photos do, so that near-copy detection can be
tested for false flags. Melanomas are darker, larger and more irregular than the other lesions,
so a classifier can tell them apart; `shift` moves colour and sharpness, for a generator that
is measurably different.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cv2.typing import MatLike


def photo(seed: int, *, melanoma: bool = True, hairy: bool = False, shift: float = 0.0,
          size: tuple[int, int] = (640, 480)) -> Any:
    """One BGR photo; the same arguments give the same photo."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    skin = np.array([150, 172, 210], np.float32) + rng.uniform(-30, 30, 3) + shift * np.array(
        [-40, 10, 40], np.float32)
    texture = np.zeros((height, width), np.float32)
    for octave in (4, 12, 40, 120):
        noise = rng.normal(0, 1, (max(2, height * octave // width), octave)).astype(np.float32)
        texture += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) * (
            30 / np.sqrt(octave))
    canvas: Any = skin + texture[..., None]
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    radius = rng.uniform(0.22, 0.33) if melanoma else rng.uniform(0.1, 0.18)
    wobble = 1 + (0.3 if melanoma else 0.08) * np.sin(angles * rng.integers(2, 7)
                                                       + rng.uniform(0, 6))
    wobble *= rng.uniform(0.8, 1.2, angles.size) if melanoma else 1.0
    centre = np.array([width, height]) * (0.5 + rng.uniform(-0.15, 0.15, 2))
    points = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * (
        radius * min(width, height) * wobble)[:, None]
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points.astype(np.int32)], 255)
    soft = cv2.GaussianBlur(mask, (0, 0), 6).astype(np.float32)[..., None] / 255
    pigment = (np.array([40, 50, 80] if melanoma else [90, 115, 160], np.float32)
               + rng.uniform(-20, 20, 3))
    blotches = cv2.resize(rng.normal(0, 1, (8, 8)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)[..., None] * (35 if melanoma else 8)
    canvas = canvas * (1 - 0.85 * soft) + (pigment + blotches) * (0.85 * soft)
    if hairy:
        for _ in range(int(rng.integers(12, 24))):
            start = rng.uniform(0, 1, 2) * [width, height]
            end = start + rng.normal(0, 0.4, 2) * [width, height]
            cv2.line(canvas, tuple(int(v) for v in start), tuple(int(v) for v in end),
                     (25, 22, 28), max(1, width // 380), cv2.LINE_AA)
    image: Any = np.clip(canvas, 0, 255).astype(np.uint8)
    if shift:
        image = cv2.GaussianBlur(image, (0, 0), 1 + 2 * shift)
    return image


def write_jpeg(path: Path, image: MatLike, quality: int = 92) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(data.tobytes())


def isic_source(root: Path, melanomas: int, others: int, *, seed: int = 0,
                patients: int | None = None) -> dict[str, Path]:
    """An ISIC 2020-style download (train.csv + train/<id>.jpg); returns id -> image path."""
    rows: list[dict[str, Any]] = []
    paths: dict[str, Path] = {}
    count = melanomas + others
    patients = patients or max(2, count // 2)
    for index in range(count):
        identifier = f"ISIC_{seed:02d}{index:05d}"
        melanoma = index < melanomas
        path = root / "train" / f"{identifier}.jpg"
        write_jpeg(path, photo(seed * 10_000 + index, melanoma=melanoma))
        paths[identifier] = path
        rows.append({"image_name": identifier, "patient_id": f"IP_{index % patients:04d}",
                     "sex": "female" if index % 2 else "male", "age_approx": 40 + index % 40,
                     "anatom_site_general_challenge": "torso",
                     "diagnosis": "melanoma" if melanoma else "nevus",
                     "benign_malignant": "malignant" if melanoma else "benign",
                     "target": int(melanoma)})
    with (root / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return paths


def synthetic_set(root: Path, images: Sequence[MatLike],
                  hairy: Sequence[bool | None] | None = None,
                  tones: Sequence[str] | None = None) -> list[str]:
    """A folder as `sample` writes it: images/<id>.png and metadata.csv (prompted hair and
    skin tone, named in the prompt, blank where not given); returns the ids."""
    import cv2

    (root / "images").mkdir(parents=True, exist_ok=True)
    ids = [f"SYN_{i:07d}" for i in range(len(images))]
    flags = hairy if hairy is not None else [None] * len(images)
    tone_names = tones if tones is not None else [""] * len(images)
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["isic_id", "diagnosis", "hairy", "skin_tone", "prompt"])
        for identifier, image, flag, tone in zip(ids, images, flags, tone_names, strict=True):
            cv2.imwrite(str(root / "images" / f"{identifier}.png"), image)
            writer.writerow([identifier, "melanoma", "" if flag is None else str(flag).lower(),
                             tone, f"photo of {tone} skin, me1anoma".replace("  ", " ")
                             + (", hairy" if flag else "")])
    return ids


def build() -> Any:
    """A small fixed-seed convolutional network: uint8 RGB batch -> 24 features."""
    import torch

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Sequential(
                torch.nn.Conv2d(3, 16, 7, stride=4), torch.nn.ReLU(),
                torch.nn.Conv2d(16, 16, 3, stride=2), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scaled = x.float() / 255
            colour = scaled.mean(dim=(2, 3))
            spread = scaled.std(dim=(2, 3))
            features: torch.Tensor = torch.cat(
                [self.conv(scaled).flatten(1), colour, spread], dim=1)
            return features

    return Tiny()
