"""Generation prompts: drawn from a manifest, written with the training captions' template.

Shared by `sample` (the synthetic set) and `train` (its `--sample_prompts` file), so the
images sampled during training are the first images of `sample`'s default set: image i gets
the manifest row `splitmix64(seed, i) mod rows`, rendered with the caption template and
trigger the LoRA was trained with, and the generation seed `seed + i`. Neither depends on how
many images are asked for, on sharding or on resuming.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsynth_kohya.data import captions
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import render

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_SIZE = 1024
DEFAULT_SCALE: float = 12
DEFAULT_STEPS = 28
DEFAULT_SAMPLER = "euler_a"
"""The original 2023 run's sample settings (with the negative prompt in
templates/sample_prompts.toml)."""
MIN_SIZE = 64
MAX_SIZE = render.MAX_SIDE
"""Image sides, in pixels, at most: the largest side trained on (render.MAX_SIDE)."""
UNET_MULTIPLE = 32
"""SDXL's UNet halves the latent (an eighth of the image) three times and joins the halves
back: any other side fails at the first denoising step (a size mismatch in torch.cat)."""
_MASK = (1 << 64) - 1
_Key = tuple[str | None, int | None, str | None, bool, str | None, tuple[str, ...]]
"""A drawn row: sex, age, site, hairy, skin tone and the artefacts it shows."""
_OPTION = re.compile(r"(^| )--")


@dataclass(frozen=True)
class Settings:
    """How every image of a set is generated, besides its prompt and seed."""

    negative_prompt: str
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    sampler: str = DEFAULT_SAMPLER


def sample_document(width: int, height: int, scale: float = DEFAULT_SCALE,
                    steps: int = DEFAULT_STEPS) -> dict[str, Any]:
    """templates/sample_prompts.toml filled in: the [prompt] table, without subsets."""
    return render.render("sample_prompts.toml", {"width": width, "height": height,
                                                 "scale": scale, "steps": steps})


def original_settings() -> Settings:
    """The original run's settings: its negative prompt, 1024x1024, scale 12, 28 steps, euler_a."""
    document = sample_document(DEFAULT_SIZE, DEFAULT_SIZE)
    return Settings(negative_prompt=str(document["prompt"]["negative_prompt"]))


@dataclass(frozen=True)
class Drawn:
    """The prompt of each image, with the manifest values it was written from (None: none)."""

    prompts: list[str]
    sex: list[str | None]
    age: list[int | None]
    site: list[str | None]
    hairy: list[bool | None]
    skin_tone: list[str | None]

    def __len__(self) -> int:
        return len(self.prompts)


def rows_for(seed: int, count: int, rows: int) -> np.ndarray:
    """The manifest row of images 0..count-1: splitmix64(seed, i) mod rows.

    Image i's row depends on the seed and i only, never on `count`, and the same numbers come
    out of every numpy version (unlike a Generator's streams).
    """
    import numpy as np

    with np.errstate(over="ignore"):
        state = (np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                 + np.uint64(seed & _MASK))
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    chosen: np.ndarray = (z % np.uint64(rows)).astype(np.int64)
    return chosen


def _value(value: Any) -> Any:
    """A manifest cell as a plain value; None for missing."""
    import pandas as pd

    return None if value is None or pd.isna(value) else value


def draw(table: pd.DataFrame, count: int, seed: int, template: str, trigger: str) -> Drawn:
    """Prompts for images 0..count-1 from manifest rows drawn with replacement.

    Sex, age, site, hair, skin tone and artefacts therefore follow the manifest's proportions.
    Each distinct row is rendered once, so 100,000 draws cost about as much as the manifest
    has distinct rows.
    """
    from medsynth_kohya.data.measure import ARTEFACTS

    if table.empty:
        raise UserError("the manifest has no rows to draw prompts from")
    captions.validate_template(template)
    keys: list[_Key] = []
    columns = [table[name] if name in table else [None] * len(table)
               for name in ("sex", "age", "site", "hairy", "skin_tone", *ARTEFACTS)]
    for sex, age, site, hairy, tone, *flags in zip(*columns, strict=True):
        sex, age, site, tone = _value(sex), _value(age), _value(site), _value(tone)
        keys.append((None if sex is None else str(sex), None if age is None else int(age),
                     None if site is None else str(site), bool(hairy),
                     None if tone is None else str(tone),
                     tuple(name for name, flag in zip(ARTEFACTS, flags, strict=True)
                           if _value(flag))))
    rendered: dict[_Key, str] = {}
    for key in keys:
        if key not in rendered:
            sex, age, site, hairy, tone, artefacts = key
            text = captions.render_caption(template, captions.caption_values(
                sex, age, site, trigger, hairy, tone, artefacts))
            check_prompt(text, f"the caption drawn from {key}")
            rendered[key] = text
    chosen = [keys[row] for row in rows_for(seed, count, len(keys)).tolist()]
    return Drawn(prompts=[rendered[key] for key in chosen], sex=[key[0] for key in chosen],
                 age=[key[1] for key in chosen], site=[key[2] for key in chosen],
                 hairy=[key[3] for key in chosen], skin_tone=[key[4] for key in chosen])


def repeat(texts: Sequence[str], count: int) -> Drawn:
    """Given prompts for images 0..count-1: image i gets texts[i mod len(texts)]."""
    if not texts:
        raise UserError("no prompts given")
    prompts = [texts[index % len(texts)] for index in range(count)]
    blank: list[Any] = [None] * count
    return Drawn(prompts=prompts, sex=blank, age=blank, site=blank, hairy=blank,
                 skin_tone=blank)


def check_prompt(text: str, where: str) -> None:
    """Refuse text that sdxl_gen_img.py's prompt file would read as something else.

    It reads one prompt per line (cut by `str.splitlines`, so a vertical tab or U+2028 ends a
    line too), skips lines starting with '#', splits options at " --" and expands {a|b} as
    dynamic-prompt variants (changing how many images a line makes).
    """
    problem = None
    if not text.strip():
        problem = "is empty"
    elif text.splitlines() != [text]:  # \n, \r, \v, \f, \x85, \u2028…: str.splitlines'
        problem = "spans several lines"  # breaks, where sd-scripts cuts its prompt file
    elif text.lstrip().startswith("#"):
        problem = "starts with '#' (a comment in sd-scripts' prompt files)"
    elif _OPTION.search(text):
        problem = "holds ' --', which sd-scripts reads as a prompt option"
    elif "{" in text or "}" in text:
        problem = "holds { or }, which sd-scripts reads as dynamic-prompt variants"
    if problem:
        raise UserError(f"{where} {problem}: {text[:80]!r}")


def format_number(value: float) -> str:
    """A number as sd-scripts' prompt options read it: digits and a point, no exponent."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


def prompt_line(prompt: str, settings: Settings, seed: int) -> str:
    """One line of an sdxl_gen_img.py --from_file prompt file: prompt and per-image options."""
    return (f"{prompt} --n {settings.negative_prompt} --w {settings.width} "
            f"--h {settings.height} --s {settings.steps} --l {format_number(settings.scale)} "
            f"--d {seed}")


def unet_side(side: int) -> int:
    """`side` rounded down to a side SDXL's UNet takes, within MIN_SIZE to MAX_SIZE."""
    return min(MAX_SIZE, max(MIN_SIZE, side - side % UNET_MULTIPLE))


def _nearest(side: int) -> str:
    """The valid sides nearest `side`, as a message offers them."""
    low = unet_side(side)
    high = low if side <= low else unet_side(low + UNET_MULTIPLE)
    return str(low) if high == low else f"{low} or {high}"


def check_settings(settings: Settings) -> None:
    """Refuse settings that sd-scripts would reject, clamp or misread, or crash on."""
    for name, value in (("width", settings.width), ("height", settings.height)):
        if not MIN_SIZE <= value <= MAX_SIZE or value % UNET_MULTIPLE:
            raise UserError(f"--{name} {value} must be a multiple of {UNET_MULTIPLE} (as SDXL's "
                            f"UNet needs) from {MIN_SIZE} to {MAX_SIZE}: use {_nearest(value)}")
    if not 1 <= settings.steps <= 1000:
        raise UserError(f"--steps {settings.steps} must be between 1 and 1000")
    if not math.isfinite(settings.scale) or settings.scale < 0:
        raise UserError(f"--scale {settings.scale} must be a number of at least 0")
    if settings.negative_prompt.strip():
        check_prompt(settings.negative_prompt, "the negative prompt")


TRAINING_DRAWS = 256
"""How far into `sample`'s default set training looks for distinct sample prompts."""


def training_document(table: pd.DataFrame, template: str, trigger: str, size: tuple[int, int],
                      count: int, seed: int = 0) -> dict[str, Any]:
    """train's --sample_prompts file: the first `count` distinct prompts of `sample`'s default
    set, each with its image's seed, and the original run's sample settings. Fewer when the
    manifest has fewer distinct captions (within the first TRAINING_DRAWS images). The images
    are `size` rounded down to sides the UNet takes (sd-scripts rounds only to 8)."""
    document = sample_document(unet_side(size[0]), unet_side(size[1]))
    if table.empty:
        document["prompt"]["subset"] = []
        return document
    drawn = draw(table, max(count, TRAINING_DRAWS), seed, template, trigger)
    first: dict[str, int] = {}
    for index, text in enumerate(drawn.prompts):
        if len(first) == count:
            break
        first.setdefault(text, index)
    document["prompt"]["subset"] = [{"prompt": text, "seed": seed + index}
                                    for text, index in first.items()]
    return document
