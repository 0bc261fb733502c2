"""Render sd-scripts TOML files from the templates in `templates/`.

A template is plain TOML; a string value that is exactly "{{name}}" is replaced by the typed
value of `name` (so integers stay integers), and a key whose value is None is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsynth_kohya import files
from medsynth_kohya.resources import data_dir

_PLACEHOLDER = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    """Substitute placeholders through nested tables and arrays."""
    if isinstance(node, dict):
        filled = {key: _fill(value, values) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not None}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, str):
        match = _PLACEHOLDER.match(node)
        if match:
            name = match.group(1)
            if name not in values:
                raise KeyError(f"template value {name!r} was not provided")
            return values[name]
    return node


def render(template: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The template `templates/<template>` with `values` filled in, as a TOML document."""
    import toml

    text = (data_dir("templates") / template).read_text(encoding="utf-8")
    document: dict[str, Any] = _fill(toml.loads(text), values)
    return document


def dumps(document: Mapping[str, Any]) -> str:
    """`document` as TOML text that sd-scripts' reader (toml 0.10.2) reads back as the same
    values; every string is escaped the TOML way, backslashes in Windows paths included."""
    import tomli_w

    return tomli_w.dumps(document)


def value(text: str) -> Any:
    """A `--set` value read as TOML (1e-4, true, "x", [..]), else the text itself. An array of
    numbers that mixes whole numbers and decimals, which sd-scripts' reader (toml 0.10.2)
    refuses, is read as all decimals, as sd-scripts uses them."""
    import toml

    try:
        return toml.loads(f"value = {text}")["value"]
    except toml.TomlDecodeError as exc:
        if not str(exc).startswith("Not a homogeneous array"):
            return text
    try:
        items = json.loads(text)
    except ValueError:
        return text
    numbers = isinstance(items, list) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in items)
    return [float(item) for item in items] if numbers else text


def write_toml(document: Mapping[str, Any], path: Path) -> None:
    """Write a TOML document atomically."""
    files.write_text(path, dumps(document))


MAX_SIDE = 4096
"""The largest image side, in pixels, trained on or generated: SDXL is trained at about
1024x1024, and past 4096 a side (4x) it repeats its subject, while the attention's memory grows
with the square of the pixel count."""
BUCKET_STEP = 64
"""The dataset config's bucket_reso_steps: bucket sides are multiples of it."""
IMAGE_SUFFIXES = frozenset(suffix for lower in (".png", ".jpg", ".jpeg", ".webp", ".bmp",
                                                ".avif", ".jxl")
                           for suffix in (lower, lower.upper()))
"""The suffixes of the files sd-scripts' DreamBooth loader trains on in an image_dir (its
IMAGE_EXTENSIONS, AVIF and JPEG XL where their Pillow plugins are installed), found by
glob.glob("*<suffix>"), which passes over hidden files."""


def bucket_range(resolution: int, step: int = BUCKET_STEP) -> tuple[int, int]:
    """Aspect-ratio bucket limits around `resolution`: half to double, on the bucket grid."""
    low = max(step, (resolution // 2) // step * step)
    high = max(low, (resolution * 2) // step * step)
    return low, high


DATASET_OPTIONS: dict[str, Any] = {
    "caption_extension": ".txt", "shuffle_caption": False, "keep_tokens": 0,
    "enable_bucket": True, "bucket_no_upscale": False, "bucket_reso_steps": BUCKET_STEP,
    "min_bucket_reso": None, "max_bucket_reso": None}
"""The training options the dataset config sets, with its values (None: from the resolution):
sd-scripts takes a dataset config's over the config file's, so a run's own are written here."""


def dataset_options(options: Mapping[str, Any] | None,
                    resolution: tuple[int, int]) -> dict[str, Any]:
    """The DATASET_OPTIONS a dataset config holds for a run's `options` at `resolution`
    (width, height): the run's values, else the defaults, the bucket range around it."""
    given = {key: value for key, value in (options or {}).items() if key in DATASET_OPTIONS}
    values = {**DATASET_OPTIONS, **given}
    step = int(values["bucket_reso_steps"])
    if values["min_bucket_reso"] is None:
        values["min_bucket_reso"] = bucket_range(min(resolution), step)[0]
    if values["max_bucket_reso"] is None:
        values["max_bucket_reso"] = bucket_range(max(resolution), step)[1]
    return values


def dataset_config(image_dir: Path, *, repeats: int, class_tokens: str,
                   resolution: int | tuple[int, int], batch_size: int,
                   options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An sd-scripts `--dataset_config` for one folder of captioned images; `options` (a run's
    training options) give the DATASET_OPTIONS they set."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    return render("dataset.toml", {
        **dataset_options(options, (width, height)),
        "resolution": [width, height],
        "batch_size": batch_size,
        "image_dir": str(image_dir),
        "num_repeats": repeats,
        "class_tokens": class_tokens,
    })
