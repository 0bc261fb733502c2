"""evaluation.report's page on report documents built here: thumbnails, the histogram's bins
and marker, the attribute shares, the files-left-out table, escaping, and `read`'s checks."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from medsynth_kohya.data.measure import ARTEFACTS
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import report


def _spread(n: int, tones: dict[str, int]) -> dict[str, Any]:
    return {"n": n, "hairy": 0.0, "skin_tone": tones, **dict.fromkeys(ARTEFACTS, 0.0)}


def _document(skipped: list[dict[str, str]]) -> dict[str, Any]:
    """A report with every section a page shows; fidelity and utility skipped."""
    return {
        "tool": "medsynth-kohya", "version": "0", "created": "2026-12-06",
        "inputs": {"real": "isic", "synthetic": "syn", "n_training": 10, "n_synthetic": 4},
        "verdict": [{"check": "near-copies", "status": "pass", "detail": "none"}],
        "notes": [],
        "sections": {
            "copies": {"method": "hash", "distances": [0.3, 0.4], "threshold": 0.25,
                       "flagged": [], "n_synthetic": 4},
            "adherence": {"method": "measured", "table": [],
                          "real": _spread(10, {"light": 5}),
                          "synthetic": _spread(4, {"light": 1})},
            "fidelity": {"skipped": "not asked for"},
            "utility": {"skipped": "not asked for"}},
        "skipped": skipped}


def _decoded(uri: str) -> Any:
    data = base64.b64decode(uri.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (900, 300)])
def test_a_thumbnail_fits_its_long_side_to_the_thumbnail_side(height: int, width: int) -> None:
    small = _decoded(report.thumbnail(np.full((height, width, 3), 128, np.uint8)))
    assert max(small.shape[:2]) == report.THUMB_SIDE
    assert small.shape[0] / small.shape[1] == pytest.approx(height / width, rel=0.02)


def _bar_heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]


def test_the_largest_value_falls_in_the_last_bin_and_the_marker_is_drawn_inside() -> None:
    heights = _bar_heights(report._histogram([0.0, 1.0, 1.0], None, "d"))
    assert heights[-1] == max(heights) > heights[0] > 0 and sum(heights[1:-1]) == 0
    svg = report._histogram([0.1, 0.2], 0.5, "d")
    x = float(re.search(r'<line x1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    assert x <= float(re.search(r'<svg width="(\d+)"', svg).group(1)) - 20  # type: ignore[union-attr]


def test_tone_shares_are_of_each_sets_own_count() -> None:
    page = report.render_html(_document([]), [], public=True)
    assert "tone: light" in page
    shares = re.findall(r'font-size="9">(\d+)%</text>', page)
    tone_at = [label for label in re.findall(r'font-size="11">([^<]+)</text>', page)
               if label in ("hairy", "tone: light", *ARTEFACTS)].index("tone: light")
    assert shares[2 * tone_at:2 * tone_at + 2] == ["50", "25"]


def test_files_left_out_are_listed_escaped_and_only_when_there_are_some() -> None:
    left = [{"set": "real", "id": "<b>ISIC_1</b>", "reason": "undecodable"}]
    page = report.render_html(_document(left), [], public=True)
    assert "Files left out" in page and "&lt;b&gt;ISIC_1&lt;/b&gt;" in page
    assert "<b>ISIC_1</b>" not in page
    assert "Files left out" not in report.render_html(_document([]), [], public=True)


@pytest.mark.parametrize("section", ["copies", "adherence", "fidelity", "utility"])
def test_a_report_without_one_of_its_sections_is_refused(tmp_path: Path, section: str) -> None:
    document = _document([])
    report.write(tmp_path, document, [])
    assert report.read(tmp_path)["sections"].keys() == document["sections"].keys()
    del document["sections"][section]
    (tmp_path / report.JSON_NAME).write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match="is not a report of `medsynth-kohya evaluate`"):
        report.read(tmp_path)
