"""sd-scripts' SDXL generator as `sample` runs it: its options, base model and preflight.

The options every shard shares: the training run's attention, VAE, tokenizers and precision
repeated, the generation settings, and `--set` overrides (never the options `sample` owns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, none_seen
from medsynth_kohya.outputs import local_name
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sdscripts import checkout, checks, launch, render, sdopts
from medsynth_kohya.training.record import RunRecord

SCRIPT = "sdxl_gen_img"
OWNED = {"W": "--width", "H": "--height", "steps": "--steps", "scale": "--scale",
         "sampler": "--sampler", "ckpt": "--base-model", "network_weights": "--lora",
         "seed": "--seed", "outdir": "--out", "from_file": "--prompts", "prompt": "--prompt",
         "sequential_file_name": None, "images_per_prompt": None, "n_iter": None,
         "interactive": None, "use_original_file_name": None, "image_path": None,
         "mask_path": None, "highres_fix_save_1st": None}
"""sdxl_gen_img.py options `sample` sets itself (with the flag to use instead, if any)."""
_APPLY_LORA = ("network_module", "network_mul")
"""Options `--set KEY=` may change but not remove: without them the LoRA is not applied."""
INHERITED = ("vae", "tokenizer_cache_dir", "clip_skip", "network_args", "no_half_vae", "sdpa",
             "xformers")
"""Training options that generation repeats (same names in both scripts)."""
LOCAL_FILES = ("vae", "tokenizer_cache_dir")
"""Options naming a file or folder: made absolute (`~` expanded) as sdxl_gen_img.py, running
in the sd-scripts folder, must see them."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` for sdxl_gen_img.py: TOML values (else text); empty removes the key;
    a single value for a many-valued option becomes a one-item list."""
    options = sdopts.load(SCRIPT)
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--set {item!r} must look like key=value, e.g. --set "
                            "network_mul=0.8")
        if key in OWNED:
            instead = OWNED[key]
            raise UserError(f"--set {key} is decided by sample" + (
                f"; use {instead}" if instead else " (it numbers and names the images)"))
        if not text and key in _APPLY_LORA:
            raise UserError(f"--set {key}= would generate without the LoRA (sdxl_gen_img.py "
                            f"applies it only with {' and '.join(_APPLY_LORA)}); give a value, "
                            "e.g. --set network_mul=0.8")
        if not text:
            parsed[key] = None
            continue
        value = render.value(text)
        option = options.get(key)
        if option is not None and option.nargs in ("*", "+") and not isinstance(value, list):
            value = [value]
        parsed[key] = value
    return parsed


def _file_network(lora: Path) -> tuple[str | None, str | None]:
    """The network module and its "k=v;k=v" arguments a LoRA file's own metadata names
    (`ss_network_module`, `ss_network_args`), where no run record says: a LoHa or LoKr file
    loaded as networks.lora builds no modules (sd-scripts loads the weights non-strictly)
    and generates the bare base model."""
    import json

    header = files.safetensors_header(lora) or {}
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        return None, None
    module = metadata.get("ss_network_module")
    try:
        given = json.loads(str(metadata.get("ss_network_args") or "{}"))
    except ValueError:
        given = {}
    arguments = (";".join(f"{key}={value}" for key, value in given.items())
                 if isinstance(given, dict) else "")
    return (str(module) if module else None), arguments or None


def gen_options(record: RunRecord | None, base_model: str, lora: Path,
                settings: prompts.Settings, overrides: Mapping[str, Any], sd_dir: Path,
                on_gpu: bool) -> dict[str, Any]:
    """sdxl_gen_img.py's options, shared by every shard (prompt file and outdir added later).

    Attention, VAE, tokenizers, clip skip, network args and prompt length (max_token_length
    225 -> 3 x 75 tokens) repeat the training run's; so does fp16/bf16, on a GPU only.
    """
    config = record.options if record else {}
    options: dict[str, Any] = {"ckpt": base_model}
    for key in INHERITED:
        value = config.get(key)
        if value is None or value is False or value == []:
            continue
        if key in LOCAL_FILES and isinstance(value, str):
            value = checkout.local_path(value, sd_dir, f"the run's {key}")
        elif key == "network_args":  # one "k=v;k=v" entry per network (one string: as one)
            value = [";".join(str(item) for item in (value if isinstance(value, list)
                                                      else [value]))]
        options[key] = value
    tokens = config.get("max_token_length")
    if isinstance(tokens, int) and tokens > 75:  # prompts as long as training read them
        options["max_embeddings_multiples"] = tokens // 75
    precision = config.get("mixed_precision")
    if precision in ("fp16", "bf16") and on_gpu:
        options[precision] = True
    if not options.get("xformers") and not options.get("sdpa"):
        options["sdpa"] = True
    network, network_args = ((config.get("network_module"), None) if record
                             else _file_network(lora))
    if network_args and "network_args" not in options:
        options["network_args"] = [network_args]
    options.update({"network_module": [str(network or "networks.lora")],
                    "network_weights": [str(lora.resolve())],
                    "network_mul": [1.0], "sequential_file_name": True,
                    "W": settings.width, "H": settings.height, "steps": settings.steps,
                    "scale": float(settings.scale), "sampler": settings.sampler,
                    "images_per_prompt": 1, "batch_size": 1})
    for key, value in overrides.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = (checkout.local_path(value, sd_dir, f"--set {key}")
                            if key in LOCAL_FILES and isinstance(value, str) else value)
    return options


def resolve_base_model(given: str | None, record: RunRecord | None,
                       sd_dir: Path) -> tuple[str, list[str]]:
    """The base model to generate with (given, else the run's), and a problem when it names a
    local file that is not there: a refusal, or in a dry run a warning (as train's)."""
    if given:
        value = given
    else:
        value = record.base_model if record else ""
        if not value:
            raise UserError("give --base-model (a .safetensors checkpoint or a Hub id): the "
                            "LoRA has no train run record naming its base model")
    resolved = checkout.local_path(value, sd_dir,
                                   "--base-model" if given else "the run's base model")
    if (checks.names_file(value) and not Path(resolved).exists()
            and not (sd_dir / value).exists()):
        return resolved, [f"base model {value} is not a file (relative paths start here or "
                          f"at {sd_dir}); pass --base-model"]
    return resolved, []


def recorded_base_model(value: str, sd_dir: Path) -> str:
    """The base model as the set's shared metadata.csv names it: a Hub id as it is, a local
    checkpoint or folder as `<local>/NAME` (as push publishes a path), never its folders."""
    local = checks.names_file(value) or (sd_dir / value).exists()
    return local_name(value) if local else value


def preflight(location: checkout.Location, python: str, out: Path, gpus: Sequence[Gpu],
              gen: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Problems that refuse a launch (warnings in a dry run), and warnings."""
    from medsynth_kohya.machine import doctor

    problems: list[str] = []
    if not checkout.present(location.path, launch.GEN_SCRIPT):
        problems.append(f"sd-scripts not found at {location.path} (no {launch.GEN_SCRIPT}): "
                        f"{checkout.missing_fix(location)}")
        return problems, []
    needs = ["xformers"] if gen.get("xformers") else []
    report = doctor.diagnose(sd_scripts=location, python=python, workdir=out, gpus=gpus,
                             device="cuda" if gpus else "cpu", needs=needs, hub=False)
    problems += [f"{c.name}: {c.detail}; {c.fix}" for c in report.failures()]
    unrelated = {"bitsandbytes", "accelerate config"} | ({"xformers"} - set(needs))
    warnings = [f"{c.name}: {c.detail}; {c.fix}" for c in report.checks
                if c.status == doctor.WARN and c.name not in unrelated]
    if not gpus:
        warnings.append(f"{none_seen()}: generating on the CPU (minutes per image)")
    older = next((gpu for gpu in gpus if gpu.bf16 is False), None)  # not one unknown
    if gen.get("bf16") and older is not None:
        warnings.append(f"the run trained in bf16, which generation repeats, and {older.name} "
                        f"(compute capability {older.capability}) has no bf16: it may run slowly "
                        "or fail; --set bf16= --set fp16=true --set no_half_vae=true generates "
                        "in fp16 with the VAE in full precision")
    return problems, warnings
