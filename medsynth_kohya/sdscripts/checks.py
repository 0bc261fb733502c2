"""Checks on a resolved training config that sd-scripts itself would only fail on late.

`config_errors` are mistakes in the config (always refused); `gpu_errors` compare the
config with the GPUs that are present (refused even under --dry-run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medsynth_kohya.machine.gpus import Gpu

_CAPTION_DROPOUT = ("caption_dropout_rate", "caption_dropout_every_n_epochs",
                    "caption_tag_dropout_rate")
_COUNTS = ("max_train_steps", "max_train_epochs", "train_batch_size", "network_dim",
           "gradient_accumulation_steps", "save_every_n_steps", "save_every_n_epochs",
           "sample_every_n_steps", "sample_every_n_epochs")
"""Counts sd-scripts divides by or trains for: 0 or less trains nothing or fails mid-run."""


def _on(options: Mapping[str, Any], key: str) -> bool:
    return options.get(key) is True


def _positive(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key)
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def resolution(value: Any) -> tuple[int, int] | None:
    """sd-scripts' "W,H" or "N" resolution string as (width, height); None if malformed."""
    if not isinstance(value, str):
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        return None
    width = int(parts[0])
    return width, int(parts[-1])


def config_errors(options: Mapping[str, Any]) -> list[str]:
    """Combinations sd-scripts rejects after loading the model, or that silently misbehave.
    A value of the wrong type is left to sdopts.check, so each problem is said once."""
    errors: list[str] = []
    if _on(options, "cache_text_encoder_outputs") or _on(options,
                                                          "cache_text_encoder_outputs_to_disk"):
        if not _on(options, "network_train_unet_only"):
            errors.append("cache_text_encoder_outputs needs network_train_unet_only = true")
        if _on(options, "shuffle_caption"):
            errors.append("cache_text_encoder_outputs cannot be used with shuffle_caption = true")
        if _positive(options, "token_warmup_step"):
            errors.append("cache_text_encoder_outputs cannot be used with token_warmup_step > 0")
        errors += [f"cache_text_encoder_outputs cannot be used with caption dropout ({key} > 0)"
                   for key in _CAPTION_DROPOUT if _positive(options, key)]
    if _on(options, "cache_latents") or _on(options, "cache_latents_to_disk"):
        errors += [f"cache_latents cannot be used with {key} = true"
                   for key in ("color_aug", "random_crop") if _on(options, key)]
    if options.get("caption_extension", ".txt") != ".txt":
        errors.append(f"caption_extension = {options['caption_extension']!r}: prepare writes "
                      "captions as .txt files; remove the override")
    if isinstance(options.get("resolution"), str) and resolution(options["resolution"]) is None:
        errors.append(f"resolution = {options['resolution']!r} must be a string such as "
                      '"1024,1024" or "1024"')
    errors += [f"{key} = {options[key]} must be at least 1 (remove the override for the "
               "preset's value)" for key in _COUNTS
               if isinstance(options.get(key), int | float)
               and not isinstance(options[key], bool) and options[key] < 1]
    if _on(options, "full_fp16") and options.get("mixed_precision") != "fp16":
        errors.append('full_fp16 needs mixed_precision = "fp16"')
    if _on(options, "full_bf16") and options.get("mixed_precision") != "bf16":
        errors.append('full_bf16 needs mixed_precision = "bf16"')
    return errors


def uses_bf16(options: Mapping[str, Any]) -> bool:
    """Whether training computes in bf16 (which needs compute capability 8.0 or newer)."""
    return options.get("mixed_precision") == "bf16" or _on(options, "full_bf16")


def cpu_errors(options: Mapping[str, Any]) -> list[str]:
    """What cannot run without a GPU."""
    errors = []
    if options.get("mixed_precision", "no") != "no":
        errors.append(f"mixed_precision = {options['mixed_precision']!r} needs a GPU; "
                      'use mixed_precision = "no" on CPU')
    if _on(options, "xformers"):
        errors.append("xformers needs a CUDA GPU; use sdpa = true on CPU")
    return errors


def gpu_errors(options: Mapping[str, Any], gpus: Sequence[Gpu], processes: int,
               min_memory_gib: float) -> list[str]:
    """What the GPUs that are present cannot run: precision, memory, process count."""
    errors = []
    if processes > len(gpus):
        errors.append(f"{processes} training processes need {processes} GPUs; "
                      f"{len(gpus)} found: use --gpus {len(gpus)}")
    for gpu in gpus[:processes]:
        major, minor = gpu.compute_capability
        if uses_bf16(options) and not gpu.bf16:
            errors.append(f"{gpu.name} (compute capability {major}.{minor}) has no bf16: "
                          '--set mixed_precision=fp16 --set save_precision=fp16, or the '
                          "t4-16gb preset")
        if gpu.memory_mib / 1024 < min_memory_gib:
            errors.append(f"{gpu.name} has {gpu.memory_mib / 1024:.0f} GiB; this preset needs "
                          f"{min_memory_gib:g} GiB: choose the t4-16gb preset or lower "
                          "train_batch_size")
    return errors
