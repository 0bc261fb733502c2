"""Checks on a resolved training config that sd-scripts itself would only fail on late.

`config_errors` are mistakes in the config (always refused); `gpu_errors` compare the
config with the GPUs that are present (refused even under --dry-run).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from medsynth_kohya import arguments
from medsynth_kohya.arguments import MAX_SEED
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sdscripts import checkout, render, sdopts
from medsynth_kohya.sdscripts.presets import BASE_MODEL

_CAPTION_DROPOUT = ("caption_dropout_rate", "caption_dropout_every_n_epochs",
                    "caption_tag_dropout_rate")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt")
_MODEL_FIXES = {
    "pretrained_model_name_or_path": "--set pretrained_model_name_or_path=PATH, or a Hub id "
                                     "such as stabilityai/stable-diffusion-xl-base-1.0",
    "vae": "--set vae=PATH, or --set vae= to use the base model's VAE"}
"""Options naming a model that sd-scripts loads from disk when the value is a path."""
REQUIRED = {"pretrained_model_name_or_path": f"the SDXL base model, e.g. {BASE_MODEL}",
            "network_module": "networks.lora trains a LoRA"}
"""Options sdxl_train_network.py has no default for and cannot run without (it fails once
launched: no model to load, `importlib.import_module(None)`), with what to give."""


def _on(options: Mapping[str, Any], key: str) -> bool:
    return options.get(key) is True


def _number(value: Any) -> TypeGuard[int | float]:
    """A TOML number (a boolean is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key)
    return _number(value) and value > 0


def resolution(value: Any) -> tuple[int, int] | None:
    """sd-scripts' "W,H" or "N" resolution string as (width, height); None if malformed."""
    if not isinstance(value, str):
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        return None
    width = int(parts[0])
    return width, int(parts[-1])


def _close(name: str, known: Sequence[str]) -> str:
    """", did you mean X?" for the known name nearest `name` in any letter case, else ""."""
    lowered = {item.lower(): item for item in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return f"; did you mean {lowered[close[0]]}?" if close else ""


def _optimizer_error(name: Any) -> str | None:
    """An optimizer_type sd-scripts would only fail to find once the model is loaded."""
    if not isinstance(name, str) or name == "":
        return None
    if "." in name:  # module.Class, which sd-scripts imports
        if all(part.isidentifier() for part in name.split(".")):
            return None
        return f"optimizer_type = {name!r} is not a module.Class path"
    if name.lower() in {known.lower() for known in sdopts.OPTIMIZERS} or (
            name in sdopts.TORCH_OPTIMIZERS):
        return None
    return (f"optimizer_type = {name!r} is neither one of sd-scripts' optimizers nor a class of "
            "torch.optim (a custom one is given as module.Class)"
            + _close(name, [*sdopts.OPTIMIZERS, *sdopts.TORCH_OPTIMIZERS]))


def _scheduler_error(options: Mapping[str, Any]) -> str | None:
    """An lr_scheduler sd-scripts cannot build (it is ignored when lr_scheduler_type names a
    custom one)."""
    name = options.get("lr_scheduler")
    if options.get("lr_scheduler_type") or not isinstance(name, str) or (
            name in sdopts.LR_SCHEDULERS):
        return None
    if name.startswith(sdopts.ADAFACTOR_SCHEDULER):
        try:
            float(name.split(":")[1])
        except (IndexError, ValueError):
            return (f"lr_scheduler = {name!r} needs the initial learning rate, e.g. "
                    f'"{sdopts.ADAFACTOR_SCHEDULER}:1e-4"')
        optimizer = str(options.get("optimizer_type", ""))
        if optimizer.lower() != "adafactor" and optimizer != sdopts.ADAFACTOR_CLASS:
            return f'lr_scheduler = {name!r} needs optimizer_type = "Adafactor"'
        return None
    return (f"lr_scheduler = {name!r} is not one of: {', '.join(sdopts.LR_SCHEDULERS)} (a "
            "custom scheduler goes in lr_scheduler_type)" + _close(name, sdopts.LR_SCHEDULERS))


def _warmup(options: Mapping[str, Any]) -> int | float | None:
    """lr_warmup_steps when above 0 and a schedule takes it (schedule-free optimizers get none)."""
    warmup = options.get("lr_warmup_steps")
    schedule_free = str(options.get("optimizer_type", "")).lower().endswith("schedulefree")
    return warmup if _number(warmup) and warmup > 0 and not schedule_free else None


def _warmup_error(options: Mapping[str, Any]) -> str | None:
    """A warmup given to a schedule that refuses one (sd-scripts raises "does not require
    num_warmup_steps" once the model is loaded): constant, adafactor, a custom one."""
    warmup, name = _warmup(options), options.get("lr_scheduler", "constant")
    custom = options.get("lr_scheduler_type")
    if warmup is None:
        return None
    if custom:
        return f"lr_scheduler_type = {custom!r} takes no warmup: --set lr_warmup_steps=0"
    if name == "constant" or str(name).startswith(sdopts.ADAFACTOR_SCHEDULER):
        return (f"lr_scheduler = {name!r} takes no warmup (lr_warmup_steps = {warmup}): use "
                '"constant_with_warmup", or --set lr_warmup_steps=0')
    return None


def _network_args_errors(options: Mapping[str, Any]) -> list[str]:
    """network_args entries sd-scripts misreads: it splits each at its first "=" and strips
    nothing ("conv_dim = 4" sets "conv_dim ", which no network reads; no "=" crashes), and
    networks.lora ignores a key it does not know."""
    entries = options.get("network_args")
    lora = options.get("network_module") == "networks.lora"
    errors = []
    for entry in entries if isinstance(entries, list) else []:
        key, sep, value = str(entry).partition("=")
        if not sep or not key.strip():
            errors.append(f"network_args entry {entry!r} must be key=value, such as "
                          '"conv_dim=4"')
        elif key != key.strip():
            errors.append(f"network_args entry {entry!r}: sd-scripts keeps the spaces round "
                          f"the key, so it is ignored: write {key.strip()}={value.strip()}")
        elif lora and key not in sdopts.LORA_NETWORK_ARGS:
            errors.append(f"network_args key {key!r} is not one networks.lora reads (it would "
                          "be ignored)" + (_close(key, sdopts.LORA_NETWORK_ARGS)
                                           or f"; it reads {', '.join(sdopts.LORA_NETWORK_ARGS)}"))
    return errors


def warmup_warning(options: Mapping[str, Any], steps: int, processes: int) -> str | None:
    """A warmup as long as the run: the learning rate never reaches its target. sd-scripts
    counts warmup over steps x processes (its scheduler ticks once per process), a float below
    1 as that share of them."""
    warmup, ticks = _warmup(options), steps * processes
    if warmup is None or _warmup_error(options):
        return None
    resolved = int(warmup * ticks) if isinstance(warmup, float) else warmup
    if resolved < ticks:
        return None
    run = f"{steps} steps" + (f" x {processes} processes" if processes > 1 else "")
    return (f"lr_warmup_steps = {warmup} is not shorter than the run ({run}), so the learning "
            "rate never reaches learning_rate: lower it, or give a share of the run such as "
            "--set lr_warmup_steps=0.05")


def _importable(module: str, sd_scripts: Path, python: str) -> bool:
    """Whether sd-scripts, run in `sd_scripts` by `python`, can import `module`."""
    return all(part.isidentifier() for part in module.split(".")) and (
        checkout.has_module(sd_scripts, module) or checkout.installed(python, module))


def _import_errors(options: Mapping[str, Any], sd_scripts: Path, python: str) -> list[str]:
    """The network_module, and the module of a module.Class optimizer_type or
    lr_scheduler_type, that sd-scripts could not import (it would fail once the model is
    loaded). A missing checkout is the doctor's to report."""
    if not checkout.present(sd_scripts):
        return []
    errors = []
    module = options.get("network_module")
    if isinstance(module, str) and not _importable(module, sd_scripts, python):
        known = sorted(f"networks.{path.stem}" for path in (sd_scripts / "networks").glob("*.py"))
        hint = _close(module, known) or "; networks.lora trains a LoRA"
        errors.append(f"network_module = {module!r} is neither a module of sd-scripts in "
                      f"{sd_scripts} nor installed in {python}{hint}")
    for key in ("optimizer_type", "lr_scheduler_type"):
        value = options.get(key)
        if not isinstance(value, str) or "." not in value or _optimizer_error(value):
            continue  # a malformed optimizer path is said once, by _optimizer_error
        module = value.rsplit(".", 1)[0]
        if not _importable(module, sd_scripts, python):
            errors.append(f"{key} = {value!r}: its module {module!r} is neither in sd-scripts "
                          f"in {sd_scripts} nor installed in {python}; install it there or "
                          "correct the name")
    return errors


def unset_required(options: Mapping[str, Any]) -> list[str]:
    """The REQUIRED options that `options` leaves out or sets to an empty text."""
    return [key for key in REQUIRED if options.get(key) is None
            or (isinstance(options[key], str) and not options[key].strip())]


def config_errors(options: Mapping[str, Any], sd_scripts: Path | None = None,
                  python: str | None = None) -> list[str]:
    """Combinations and values sd-scripts rejects after loading the model, or that silently
    misbehave. A value of the wrong type is left to sdopts.check, so each problem is said
    once; with `sd_scripts` (run by `python`), the modules it would import must be there."""
    errors = _combination_errors(options) + _value_errors(options)
    if sd_scripts is not None:
        errors += _import_errors(options, sd_scripts, checkout.python(python))
    return errors


def _value_errors(options: Mapping[str, Any]) -> list[str]:
    """Seed, network args, optimizer, scheduler and warmup that sd-scripts only fails on or
    ignores late (learning rates and other numbers are sdopts.check's, by its RANGES)."""
    errors = []
    seed = options.get("seed")
    if _number(seed) and not 0 <= seed <= MAX_SEED:
        errors.append(f"seed = {seed} is out of range: use 0 to {MAX_SEED} (or remove the "
                      "override for the preset's value)")
    return errors + _network_args_errors(options) + [
        error for error in (_optimizer_error(options.get("optimizer_type")),
                            _scheduler_error(options), _warmup_error(options)) if error]


def _combination_errors(options: Mapping[str, Any]) -> list[str]:
    """Options that sd-scripts refuses together, or that do not fit prepare's output."""
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
    if options.get("save_model_as", "safetensors") not in ("safetensors", None):
        errors.append(f"save_model_as = {options['save_model_as']!r}: train, sample and push "
                      "take the LoRA only as a .safetensors file; remove the override")
    if _on(options, "no_metadata"):
        errors.append("no_metadata = true: train reads each LoRA's steps from its metadata, to "
                      "keep its saves apart across --resume and tell a finished run; remove the "
                      "override")
    if isinstance(options.get("resolution"), str):
        size = resolution(options["resolution"])
        if size is None:
            errors.append(f"resolution = {options['resolution']!r} must be a width and height "
                          'above 0 such as "1024,1024" or "1024"')
        elif max(size) > render.MAX_SIDE:
            errors.append(f"resolution = {options['resolution']!r} is past {render.MAX_SIDE} "
                          "a side, where SDXL repeats its subject and its memory grows with the "
                          f"square of the pixels: give at most {render.MAX_SIDE} a side, such "
                          'as "1024,1024"')
    errors += _bucket_errors(options)
    if _on(options, "full_fp16") and options.get("mixed_precision") != "fp16":
        errors.append('full_fp16 needs mixed_precision = "fp16"')
    if _on(options, "full_bf16") and options.get("mixed_precision") != "bf16":
        errors.append('full_bf16 needs mixed_precision = "bf16"')
    return errors


def _bucket_errors(options: Mapping[str, Any]) -> list[str]:
    """The dataset config's buckets as sd-scripts checks them before it trains: SDXL takes bucket
    sides in multiples of 32; the dataset rounds min_bucket_reso down and max_bucket_reso up
    to that step and asserts the range holds the resolution (a range from 0 divides by zero).
    Without bucketing every photo is resized to the resolution itself, whose sides must then
    be multiples of 32 (SDXL's U-Net halves the latent grid twice and joins the halves back).
    Values of the wrong type are left to sdopts.check."""
    given = options.get("resolution", "1024,1024")
    size = resolution(given)
    step = options.get("bucket_reso_steps", render.BUCKET_STEP)
    if size is None or max(size) > render.MAX_SIDE:
        return []
    if options.get("enable_bucket", True) is False:
        return [] if not (size[0] % 32 or size[1] % 32) else [
            f"resolution = {given!r} with enable_bucket = false is resized to as it is, and "
            "SDXL trains only on sides in multiples of 32 (it stops at its first step): give "
            'such a size, e.g. "1024,1024", or leave bucketing on']
    if not _number(step):
        return []
    if step <= 0 or step % 32:
        return [f"bucket_reso_steps = {step} must be a multiple of 32 above 0 (SDXL's latent "
                "grid, which sd-scripts requires), such as 64"]
    values = render.dataset_options(options, size)
    low, high = values["min_bucket_reso"], values["max_bucket_reso"]
    if not (_number(low) and _number(high)):
        return []
    shown = f"resolution {given!r}"
    errors = []
    if "min_bucket_reso" not in options and low > min(size):
        errors.append(f"resolution = {given!r} is below the dataset's smallest "
                      f"bucket (min_bucket_reso {low}), which sd-scripts refuses: give at least "
                      f'{step} a side, such as "1024,1024"')
    elif low - low % step > min(size):
        errors.append(f"min_bucket_reso = {low} is above the shorter side of {shown}, which "
                      f"sd-scripts refuses: give at most {min(size)}, or remove the override")
    elif low - low % step < step and values["bucket_no_upscale"] is not True:
        errors.append(f"min_bucket_reso = {low} is below bucket_reso_steps ({step}): sd-scripts "
                      f"rounds it down to 0 and fails dividing by it; give at least {step}")
    if high + -high % step < max(size):
        errors.append(f"max_bucket_reso = {high} is below the longer side of {shown}, which "
                      f"sd-scripts refuses: give at least {max(size)}, or remove the override")
    return errors


def _kept_size_bucket(width: int, height: int, area: int, step: int) -> tuple[int, int]:
    """The bucket sd-scripts' BucketManager.select_bucket gives a photo under bucket_no_upscale:
    shrunk to `area` where larger (the rounding of its sides to `step` that keeps the aspect
    nearest), then its sides rounded down to `step`; (0, 0) where that rounding divides by 0."""
    ratio = width / height
    if width * height > area:
        def stepped(side: float) -> int:
            whole = int(side + 0.5)
            return whole - whole % step

        wide = math.sqrt(area * ratio)
        by_width, by_height = stepped(wide), stepped(area / wide)
        height_of_width, width_of_height = stepped(by_width / ratio), stepped(by_height * ratio)
        if not height_of_width or not by_height:
            return 0, 0
        if abs(by_width / height_of_width - ratio) < abs(width_of_height / by_height - ratio):
            width, height = by_width, int(by_width / ratio + 0.5)
        else:
            width, height = int(by_height * ratio + 0.5), by_height
    return width - width % step, height - height % step


def bucketless(options: Mapping[str, Any], size: tuple[int, int],
               images: Iterable[tuple[str, int, int]]) -> str | None:
    """Why sd-scripts would stop on these training `images` (id, width, height) at `size`:
    under bucket_no_upscale a photo whose side, shrunk to the training area, is below
    bucket_reso_steps gets a bucket side of 0, which it divides by when it starts."""
    step = options.get("bucket_reso_steps", render.BUCKET_STEP)
    if (options.get("enable_bucket", True) is False or options.get("bucket_no_upscale") is not True
            or not _number(step) or step <= 0):
        return None
    rows = list(images)
    lost = [(identifier, width, height) for identifier, width, height in rows
            if 0 in _kept_size_bucket(width, height, size[0] * size[1], int(step))]
    if not lost:
        return None
    identifier, width, height = lost[0]
    return (f"bucket_no_upscale = true leaves {len(lost)} of {len(rows)} training images "
            f"without a bucket (first: {identifier}, {width}x{height}): sd-scripts rounds their "
            f"sides, shrunk to the training area, down to bucket_reso_steps ({step}), gets 0 "
            "and stops dividing by it; remove the bucket_no_upscale override, or prepare again "
            "without such images (--query on width and height)")


def names_file(value: str) -> bool:
    """Whether a model option's value is a local path rather than a Hub id: absolute, from
    `.` or `~`, or a checkpoint's name (a Hub id is `owner/name`)."""
    return (value.startswith((".", "~")) or Path(value).is_absolute()
            or value.endswith(MODEL_SUFFIXES))


def missing_models(options: Mapping[str, Any], sd_scripts: Path) -> list[str]:
    """Models named by a local path that is not there; relative paths start in `sd_scripts`,
    where sd-scripts runs."""
    return [f"{key} = {options[key]!r} is not there (relative paths start at {sd_scripts}): "
            f"{fix}" for key, fix in _MODEL_FIXES.items()
            if isinstance(options.get(key), str) and names_file(options[key])
            and not (sd_scripts / arguments.path(options[key], key)).exists()]


def needs(options: Mapping[str, Any]) -> list[str]:
    """Optional modules these options cannot run without, as sd-scripts' get_optimizer and
    logging import them only once the model is loaded (tensorboard is none: accelerate passes
    over a logger it cannot import)."""
    optimizer = str(options.get("optimizer_type", "")).lower()
    log_with = options.get("log_with")
    wanted = {
        "xformers": options.get("xformers") is True,
        "bitsandbytes": "8bit" in optimizer or optimizer.startswith(("paged", "bitsandbytes."))
        or options.get("use_8bit_adam") is True,
        "dadaptation": optimizer.startswith("dadapt"),
        "prodigyopt": optimizer == "prodigy",
        "lion_pytorch": optimizer == "lion" or options.get("use_lion_optimizer") is True,
        "schedulefree": optimizer.endswith("schedulefree")
        or options.get("optimizer_schedulefree_wrapper") is True,
        "wandb": log_with in ("wandb", "all")}
    return [module for module, needed in wanted.items() if needed]


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


def _too_few_gpus(processes: int, found: str, fix: str) -> str:
    """The one refusal of more training processes than GPUs, with what was found and the fix."""
    return f"{processes} training processes need {processes} GPUs; {found}: {fix}"


def missing_gpus(processes: int, gpus: Sequence[Gpu]) -> list[str]:
    """More training processes than this machine has GPUs, when it has none: a real launch
    fails (a dry run may be preparing for another machine)."""
    if gpus or processes <= 1:
        return []
    return [_too_few_gpus(processes, "nvidia-smi found none on this machine",
                          f"train on a machine with {processes} GPUs, or ask for fewer with "
                          "--gpus")]


def gpu_errors(options: Mapping[str, Any], gpus: Sequence[Gpu], processes: int,
               min_memory_gib: float, found: str | None = None) -> list[str]:
    """What the GPUs that are present cannot run: precision, memory, process count (`found`
    says how many there are, when not simply found); a GPU's unknown precision or memory is
    not held against it."""
    errors = []
    if processes > len(gpus):
        errors.append(_too_few_gpus(processes, found or f"{len(gpus)} found",
                                    f"use --gpus {len(gpus)}"))
    for gpu in gpus[:processes]:  # a value nvidia-smi does not know refuses nothing
        if uses_bf16(options) and gpu.bf16 is False:
            errors.append(f"{gpu.name} (compute capability {gpu.capability}) has no bf16: "
                          '--set mixed_precision=fp16 --set save_precision=fp16, or the '
                          "t4-16gb preset")
        if gpu.memory_mib is not None and gpu.memory_mib / 1024 < min_memory_gib:
            errors.append(f"{gpu.name} has {gpu.memory_mib / 1024:.0f} GiB; this preset needs "
                          f"{min_memory_gib:g} GiB: choose the t4-16gb preset or lower "
                          "train_batch_size")
    return errors
