"""The contact sheet of a synthetic set: its first images with their ids and prompts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from medsynth_kohya.errors import UserError
from medsynth_kohya.files import replacing
from medsynth_kohya.sampling.plan import Plan

GRID_IMAGES = 16


def _wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Words in lines that each `fits`; a word too long for a line is cut."""
    lines: list[str] = []
    for word in text.split():
        if lines and fits(lines[-1] + " " + word):
            lines[-1] += " " + word
            continue
        while not fits(word) and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and not fits(word[:cut]):
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines


def caption(image_id: str, prompt: str, fits: Callable[[str], bool],
            text_lines: int = 5) -> list[str]:
    """The lines under an image: its id, then its prompt (in ASCII, OpenCV's font has no other
    letters: `?` for the rest) wrapped to lines that `fits`; one past `text_lines` lines is cut
    at the last line, which ends in `...`."""
    text = prompt.encode("ascii", "replace").decode("ascii")
    lines = [image_id, *_wrap(text, fits)]
    if len(lines) <= text_lines:
        return lines
    last = lines[text_lines - 1]
    while last and not fits(last + "..."):
        last = last[:-1]
    return [*lines[:text_lines - 1], last + "..."]


def shown_ids(ids: Iterable[str]) -> list[str]:
    """The ids of the images a grid shows, given a set's ids: the first GRID_IMAGES in id
    order (same-width ids, so shorter is smaller), as `write_grid` picks them by index."""
    return sorted(ids, key=lambda i: (len(i), i))[:GRID_IMAGES]


def write_grid(plan: Plan, images: Path, present: Sequence[int], path: Path,
               count: int = GRID_IMAGES, tile: int = 256) -> Path | None:
    """A contact sheet of the first `count` images with their ids and prompts (JPEG)."""
    import cv2
    import numpy as np

    chosen = sorted(present)[:count]
    if not chosen:
        path.unlink(missing_ok=True)
        return None
    columns = min(4, len(chosen))
    rows = -(-len(chosen) // columns)
    text_lines, line_height = 5, 14
    cell_height = tile + text_lines * line_height + 6
    sheet = np.full((rows * cell_height, columns * tile, 3), 255, dtype=np.uint8)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.35

    def fits(line: str) -> bool:
        return int(cv2.getTextSize(line, font, size, 1)[0][0]) <= tile - 8

    for slot, index in enumerate(chosen):
        top, left = (slot // columns) * cell_height, (slot % columns) * tile
        image = cv2.imread(str(images / f"{plan.image_id(index)}.png"), cv2.IMREAD_COLOR)
        if image is None:
            image = np.full((tile, tile, 3), 200, dtype=np.uint8)
        sheet[top:top + tile, left:left + tile] = cv2.resize(image, (tile, tile),
                                                             interpolation=cv2.INTER_AREA)
        lines = caption(plan.image_id(index), plan.drawn.prompts[index], fits, text_lines)
        for number, line in enumerate(lines):
            cv2.putText(sheet, line, (left + 4, top + tile + 12 + number * line_height), font,
                        size, (0, 0, 0), 1, cv2.LINE_AA)
    with replacing(path) as temporary:
        if not cv2.imwrite(str(temporary), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise UserError(f"cannot write {path}")
    return path
