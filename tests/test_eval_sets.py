"""How `evaluate` reads its two image sets and its feature network, as a user meets them:
files that are no image or are cut short, sets with nothing usable, networks that are none."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from medsynth_kohya.evaluation import features
from medsynth_kohya.evaluation.evaluate import evaluate

from .eval_data import isic_source, photo, synthetic_set


@pytest.fixture
def data(tmp_path: Path) -> tuple[dict[str, Path], list[str]]:
    """An ISIC-style source at tmp_path/isic (4 melanomas, 3 others) and a synthetic set of 3
    unrelated photos at tmp_path/syn: (real id -> photo, synthetic ids)."""
    real = isic_source(tmp_path / "isic", 4, 3, seed=3)
    return real, synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(3)])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate without the feature network (copies and adherence only), as without torch."""
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])


def _cut(kind: str) -> bytes:
    """The first 20 bytes of a photo saved as `kind`: a header that ends before the size it
    announces (a download cut short)."""
    ok, data = cv2.imencode(f".{kind}", photo(1))
    assert ok
    return data.tobytes()[:20]


@pytest.mark.parametrize("kind", ["bmp", "tiff", "webp"])
def test_a_photo_cut_inside_its_header_is_undecodable_on_either_side(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]], kind: str,
        no_network: None) -> None:
    real, synthetic = data
    cut_real = sorted(real)[0]  # a melanoma: a training photo
    real[cut_real].write_bytes(_cut(kind))
    (tmp_path / "syn" / "images" / f"{synthetic[1]}.png").write_bytes(_cut(kind))
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    assert sorted((s["set"], s["id"], s["reason"]) for s in result.skipped) == [
        ("real", cut_real, "undecodable"), ("synthetic", synthetic[1], "undecodable")]
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_synthetic"] == len(synthetic) - 1

