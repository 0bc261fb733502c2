"""sampling.grid's contact sheet: which images it shows, where, and how prompts are wrapped."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.grid import GRID_IMAGES, _wrap, caption, shown_ids, write_grid
from medsynth_kohya.sampling.plan import Plan
from medsynth_kohya.sampling.prompts import Drawn

TILE = 64


def _plan(n: int, prompt: str = "photo of skin, me1anoma") -> Plan:
    drawn = Drawn(prompts=[prompt] * n, sex=[None] * n, age=[None] * n, site=[None] * n,
                  hairy=[None] * n, skin_tone=[None] * n)
    return Plan(n=n, seed=1, id_prefix="SYN_", drawn=drawn,
                settings=prompts.original_settings(), lora=Path("m.safetensors"),
                lora_sha256="ab" * 32, base_model="base")


def _colour(index: int) -> tuple[int, int, int]:
    return (index * 20 % 256, 255 - index * 20 % 256, 90)


def _images(folder: Path, plan: Plan, indices: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        image = np.full((96, 128, 3), _colour(index), np.uint8)
        cv2.imwrite(str(folder / f"{plan.image_id(index)}.png"), image)


def _read(path: Path | None) -> np.ndarray:
    assert path is not None
    sheet = cv2.imread(str(path))
    assert sheet is not None
    return sheet


def _tiles(sheet: np.ndarray, columns: int) -> list[tuple[int, ...]]:
    """The colour at the middle of each tile, row by row."""
    height = TILE + 5 * 14 + 6
    rows = sheet.shape[0] // height
    return [tuple(int(v) for v in sheet[r * height + TILE // 2, c * TILE + TILE // 2])
            for r in range(rows) for c in range(columns)]


def test_the_sheet_shows_the_first_images_by_index_four_to_a_row(tmp_path: Path) -> None:
    plan = _plan(9)
    present = [8, 0, 2, 5, 6, 7]
    _images(tmp_path / "images", plan, [i for i in present if i != 5])  # 5's file is gone
    path = write_grid(plan, tmp_path / "images", present, tmp_path / "grid.jpg", count=5,
                      tile=TILE)
    assert path == tmp_path / "grid.jpg"
    sheet = _read(path)
    assert sheet.shape[:2] == (2 * (TILE + 5 * 14 + 6), 4 * TILE)
    shown = _tiles(sheet, 4)
    for slot, index in enumerate([0, 2, 5, 6, 7]):
        expected = (200, 200, 200) if index == 5 else _colour(index)
        assert shown[slot] == pytest.approx(expected, abs=3), (slot, index)
    assert shown[5] == (255, 255, 255)  # the second row's unused tiles stay blank


def test_fewer_images_than_a_row_make_a_narrower_sheet(tmp_path: Path) -> None:
    plan = _plan(3)
    _images(tmp_path / "images", plan, [0, 1])
    path = write_grid(plan, tmp_path / "images", [1, 0], tmp_path / "grid.jpg", tile=TILE)
    assert _read(path).shape[:2] == (TILE + 5 * 14 + 6, 2 * TILE)


def test_no_image_leaves_no_sheet(tmp_path: Path) -> None:
    (tmp_path / "grid.jpg").write_bytes(b"an older sheet")
    assert write_grid(_plan(2), tmp_path, [], tmp_path / "grid.jpg") is None
    assert not (tmp_path / "grid.jpg").exists()


@pytest.mark.parametrize("width", [1, 3, 6, 12])
def test_a_prompt_is_wrapped_into_lines_that_fit_and_keep_every_letter(width: int) -> None:
    text = "photo of a  supercalifragilistic lesion, me1anoma on torso"
    lines = _wrap(text, lambda line: len(line) <= width)
    assert all(1 <= len(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(line in text for line in lines)


def test_words_share_a_line_while_they_fit() -> None:
    assert _wrap("aa bb cc dddddd e", lambda line: len(line) <= 5) == [
        "aa bb", "cc", "ddddd", "d e"]


def test_the_ids_a_sheet_shows_are_the_first_by_index() -> None:
    ids = [f"SYN_{i}" for i in (10, 9, 100, 2, 11)]
    assert shown_ids(ids) == ["SYN_2", "SYN_9", "SYN_10", "SYN_11", "SYN_100"]
    many = [f"SYN_{i:03d}" for i in range(40, 0, -1)]
    assert shown_ids(many) == sorted(many)[:GRID_IMAGES]


def test_no_image_and_no_older_sheet_is_no_error(tmp_path: Path) -> None:
    assert write_grid(_plan(2), tmp_path, [], tmp_path / "grid.jpg") is None
    assert list(tmp_path.iterdir()) == []


def _short(line: str) -> bool:
    """A stand-in for the font's width: up to 8 letters fit."""
    return len(line) <= 8


def test_a_caption_is_the_id_then_the_wrapped_prompt() -> None:
    assert caption("SYN_1", "aa bb cc dd", _short) == ["SYN_1", "aa bb cc", "dd"]
    assert caption("SYN_1", "aa bb cc dd", _short, text_lines=3) == ["SYN_1", "aa bb cc", "dd"]


@pytest.mark.parametrize(("prompt", "last"), [
    ("one two three four five six seven", "fou..."),  # the fifth line is cut to fit "..."
    ("aaaaaa bbbbbb cccccc x yyyyyy", "x..."), ("a b c d e f g h i j k l m n o p", "j k...")])
def test_a_caption_longer_than_its_lines_ends_in_dots_on_its_last_line(prompt: str,
                                                                       last: str) -> None:
    lines = caption("SYN_1", prompt, lambda line: len(line) <= 6 if line != "SYN_1" else True)
    assert len(lines) == 5 and lines[-1] == last
    assert lines[:4] == ["SYN_1", *_wrap(prompt, lambda line: len(line) <= 6)[:3]]


def test_a_caption_s_letters_outside_ascii_are_question_marks() -> None:
    assert caption("SYN_2", "naevus café-au-lait, ±3 mm", lambda line: True) == [
        "SYN_2", "naevus caf?-au-lait, ?3 mm"]


def test_captions_are_drawn_under_their_image_within_its_tile(tmp_path: Path) -> None:
    """Each image's id and prompt are drawn in the band under it, 4 pixels in from either
    side, never over the image or the next tile."""
    tile = 128
    plan = _plan(2, "dermoscopic photo of a lesion, melanoma, on the upper back of an adult "
                 "woman, hairy skin, light skin tone, seen from above")
    _images(tmp_path / "images", plan, [0, 1])
    sheet = _read(write_grid(plan, tmp_path / "images", [0, 1], tmp_path / "grid.jpg",
                             tile=tile)).astype(int)
    band = sheet[tile:]
    for slot in range(2):
        image = sheet[:tile - 8, slot * tile:(slot + 1) * tile]  # JPEG blurs the edge
        assert np.abs(image - _colour(slot)).max() <= 20, "the caption runs over the image"
        ink = np.argwhere(band[:, slot * tile:(slot + 1) * tile].max(axis=2) < 100)
        assert len(ink), "no caption drawn"
        assert ink[:, 1].min() >= 3 and ink[:, 1].max() <= tile - 4, (ink[:, 1].min(),
                                                                       ink[:, 1].max())
        assert ink[:, 0].max() > 4 * 14, "the caption fills its five lines"
