"""The synthetic set folder `sample` writes, and who may write into it.

    OUT/images/<id>.png          the set (ids <prefix><7 digits>, from 0)
    OUT/metadata.csv             one row per image file: ISIC Archive fields, then settings
    OUT/grid.jpg                 contact sheet of the first images with their prompts
    OUT/logs/shard-<k>.log       sdxl_gen_img.py's output, appended on every run
    OUT/.medsynth/sample.json    the settings, checked on a re-run, and the last run's record
    OUT/.medsynth/shards/<k>/    the prompt file and output folder of shard k
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medsynth_kohya import locks
from medsynth_kohya.data import archive
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.errors import UserError
from medsynth_kohya.files import replacing
from medsynth_kohya.sampling.plan import ID_DIGITS, Plan

STATE_DIR = ".medsynth"
STATE_FILE = "sample.json"
IMAGES = "images"
METADATA = "metadata.csv"
GRID = "grid.jpg"
SETTINGS_COLUMNS = ("skin_tone", "prompt", "negative_prompt", "seed", "steps", "scale", "sampler",
                    "width", "height", "lora_file", "lora_sha256", "base_model")
"""metadata.csv's columns after the schema's: the drawn skin tone (ITA category, no ISIC field)
and the generation settings."""
COLUMNS = (*archive.SCHEMA_COLUMNS[MetadataStyle.archive], *SETTINGS_COLUMNS)
"""metadata.csv columns: ISIC Archive fields first (each row a valid Archive `MetadataRow`), so
the rows concatenate to the Archive's own; `--metadata-style 2020` swaps in the challenge's."""


def claim(out: Path, identity: Mapping[str, Any], n: int, prefix: str, force: bool) -> bool:
    """Refuse an OUT that holds something else, or a set made with other settings.

    True when OUT holds a set made with these settings (its unfinished shards may be kept).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    state = out / STATE_DIR / STATE_FILE
    if state.is_file():
        record = json.loads(state.read_text(encoding="utf-8"))
        before = record.get("identity", {})
        existing = present_images(out / IMAGES, str(before.get("id_prefix", prefix)))
        changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        if changed and existing:
            raise UserError(f"{out} holds {len(existing)} images made with other settings "
                            f"({', '.join(changed)} differ); use another --out, or delete it")
        beyond = [i for i in existing if i >= n]
        if beyond and not changed:
            raise UserError(f"{out} already holds {max(beyond) + 1} images; --n {n} would "
                            f"leave some out of metadata.csv (use --n {max(beyond) + 1} or more)")
        return not changed
    if out.is_dir() and locks.foreign_entries(out) and not force:
        raise UserError(f"--out {out} is not empty and was not made by medsynth-kohya sample; "
                        "choose an empty folder or pass --force to write into it")
    return False


def present_images(folder: Path, prefix: str) -> list[int]:
    """Indices of the images in `folder` named `<prefix><digits>.png`, sorted."""
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}(\d{{{ID_DIGITS},}})\.png$")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match:
                found.append(int(match.group(1)))
    return sorted(found)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_metadata(plan: Plan, present: Sequence[int], path: Path,
                   style: MetadataStyle = MetadataStyle.archive) -> None:
    """metadata.csv for the images `present` (indices), in id order, written atomically:
    the schema of `style` (each distinct row checked once), then the generation settings;
    blank for a missing value, true/false for booleans."""
    import csv

    drawn, settings = plan.drawn, plan.settings
    shared = (settings.negative_prompt, settings.steps, float(settings.scale), settings.sampler,
              settings.width, settings.height, plan.lora.name, plan.lora_sha256, plan.base_model)
    cells: dict[tuple[str | None, int | None, str | None, bool | None], tuple[object, ...]] = {}

    def schema(i: int) -> tuple[object, ...]:
        key = (drawn.sex[i], drawn.age[i], drawn.site[i], drawn.hairy[i])
        found = cells.get(key)
        if found is None:
            found = cells[key] = tuple(_cell(value) for value in archive.synthetic_cells(
                style, plan.diagnosis, *key))
        return found

    with replacing(path) as temporary, temporary.open("w", encoding="utf-8",
                                                          newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow((*archive.SCHEMA_COLUMNS[style], *SETTINGS_COLUMNS))
        writer.writerows((plan.image_id(i), *schema(i), _cell(drawn.skin_tone[i]),
                          drawn.prompts[i], shared[0], plan.seed + i, *shared[1:])
                         for i in sorted(present))
