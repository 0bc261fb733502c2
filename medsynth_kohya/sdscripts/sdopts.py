"""A snapshot of sd-scripts' own argparse options, and a check of config values against it.

Standard library only: `snapshot` runs inside sd-scripts' Python, which may lack this package.
Regenerate with
`python -m medsynth_kohya.sdscripts.sdopts regenerate --sd-scripts DIR [--python PY]`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SCRIPTS = ("sdxl_train_network", "sdxl_gen_img")
SNAPSHOTS = Path(__file__).parent / "sd_options"

OPTIMIZERS = ("AdamW", "AdamW8bit", "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit", "Lion",
              "Lion8bit", "PagedLion8bit", "SGDNesterov", "SGDNesterov8bit", "DAdaptation",
              "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP",
              "DAdaptLion", "DAdaptSGD", "Prodigy", "Adafactor", "RAdamScheduleFree",
              "AdamWScheduleFree", "SGDScheduleFree")
"""optimizer_type names sd-scripts' get_optimizer knows itself, in any letter case."""
TORCH_OPTIMIZERS = ("ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax",
                    "LBFGS", "Muon", "NAdam", "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam")
"""Any other optimizer_type without a dot is looked up in torch.optim, spelled exactly; a
dotted one is a `module.Class` path sd-scripts imports."""
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                 "polynomial", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
                 "piecewise_constant")
"""lr_scheduler names sd-scripts' get_scheduler_fix builds (transformers' other names crash
there); a custom scheduler goes in lr_scheduler_type instead."""
ADAFACTOR_SCHEDULER = "adafactor"
"""lr_scheduler "adafactor:<initial lr>": the Adafactor optimizer's own schedule."""
ADAFACTOR_CLASS = "transformers.optimization.Adafactor"
"""The optimizer class the adafactor scheduler needs (optimizer_type Adafactor gives it too)."""
LORA_NETWORK_ARGS = ("conv_dim", "conv_alpha", "block_dims", "block_alphas", "conv_block_dims",
                     "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
                     "block_lr_zero_threshold", "rank_dropout", "module_dropout",
                     "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                     "loraplus_text_encoder_lr_ratio")
"""network_args keys networks/lora.py's create_network reads; it ignores any other silently."""

ONE_OR_MANY = frozenset({"text_encoder_lr"})
"""List options sd-scripts also takes as one number (train_network.py keeps a single
text_encoder_lr working for configs written before it became a list)."""
_KEEP = " (remove the override for the preset's value)"
_FROZEN = "0 (not trained) or a number above 0 such as 1e-4" + _KEEP
"""unet_lr and text_encoder_lr: networks.lora takes 0 as "do not train this part"."""
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "a number above 0 such as 1e-4" + _KEEP),
    "unet_lr": (lambda v: v >= 0, _FROZEN),
    "text_encoder_lr": (lambda v: v >= 0, _FROZEN),
    "network_alpha": (lambda v: v >= 0, "0 (the same as network_dim) or above, such as 16"),
    "network_dropout": (lambda v: 0 <= v < 1, "0 to below 1 (torch's dropout probability)"),
    "caption_dropout_rate": (lambda v: 0 <= v <= 1, "0 to 1 (a share of the captions)"),
    "caption_tag_dropout_rate": (lambda v: 0 <= v <= 1, "0 to 1 (a share of the tags)"),
    "min_snr_gamma": (lambda v: v >= 0, "above 0, such as 5, or 0 for off (below 0 makes the "
                      "loss weights negative)"),
    "noise_offset": (lambda v: v >= 0, "0 (off) or above, such as 0.0357"),
    "network_mul": (math.isfinite, "finite numbers, one per LoRA, such as [0.8]"),
    **{key: (lambda v: v >= 0 and not (isinstance(v, float) and v >= 1),
             "whole steps such as 100, or a fraction of the run below 1 such as 0.05 (a TOML "
             "float is read as a fraction: 100.0 would be 100 times the run's steps)")
       for key in ("lr_warmup_steps", "lr_decay_steps")},
    **{key: (lambda v: v >= 1, "at least 1" + _KEEP)
       for key in ("max_train_steps", "max_train_epochs", "train_batch_size", "network_dim",
                   "gradient_accumulation_steps", "save_every_n_steps", "save_every_n_epochs",
                   "sample_every_n_steps", "sample_every_n_epochs")},
    "batch_size": (lambda v: v >= 1, "at least 1 (sdxl_gen_img.py's images made together; "
                   "leave it out for 1)"),
}
"""Numeric options whose values sd-scripts takes unchecked and only fails on (or trains
nothing with) once training runs: the allowed range, as a test and as the refusal says it.
The counts are what sd-scripts divides by or trains for: 0 or less trains nothing or fails
mid-run. lr_warmup_steps and lr_decay_steps: sd-scripts' command line makes 1 and above an
int, but a config file's float is a share of the run (100.0 warms up for 100 runs' steps).
Every other number must be finite, as `_check_one` requires of all of them."""
TOML_INTEGERS = (-2**63, 2**63 - 1)
"""TOML's integers are 64-bit (Python's toml reads longer ones, which sd-scripts' torch cannot
take and `math.isfinite` cannot convert)."""
IMPORT_FAILED = 3
"""Exit status of the snapshot subprocess when sd-scripts (or a dependency) cannot be imported."""
_MARKER = "SDOPTS-JSON:"
_TOML_TYPE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
              "other:int_or_float": "number", "other:Path": "string"}
"""The TOML type each kind needs (a number is an integer or a float); other kinds pass."""


@dataclass(frozen=True)
class Option:
    """One sd-scripts option as its parser declares it (help text left out)."""

    name: str
    """The argparse dest, which is also the key in a --config_file TOML."""
    flags: tuple[str, ...]
    kind: str
    """"str", "int", "float", "bool" (store_true/false), "const", or "other:<type name>"."""
    default: Any
    choices: tuple[Any, ...] | None
    nargs: int | str | None


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON data (tuples become lists; anything unknown its str)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple | range):
        return [_jsonable(item) for item in value]
    return str(value)


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "bool"
    if isinstance(action, argparse._StoreConstAction):
        return "const"
    if not isinstance(action, argparse._StoreAction):
        return "other:" + type(action).__name__.strip("_")
    if action.type is None or action.type is str:
        return "str"
    if action.type is int or action.type is float:
        return action.type.__name__
    return "other:" + getattr(action.type, "__name__", type(action.type).__name__)


def snapshot(script: str) -> dict[str, Any]:
    """The options of sd-scripts' `script` (e.g. "sdxl_train_network") as JSON-able data.

    Run inside sd-scripts' Python with its checkout on sys.path: imports the script and walks
    the parser that its `setup_parser()` builds.
    """
    module = importlib.import_module(script)
    parser: argparse.ArgumentParser = module.setup_parser()
    options = [
        {"name": action.dest, "flags": list(action.option_strings), "kind": _kind(action),
         "default": _jsonable(action.default),
         "choices": None if action.choices is None else _jsonable(list(action.choices)),
         "nargs": action.nargs}
        for action in parser._actions
        if action.dest != argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    ]
    options.sort(key=lambda option: (option["name"], option["flags"]))
    return {"script": script, "options": options}


def dump(data: Mapping[str, Any]) -> str:
    """The packaged form of a snapshot: pretty-printed, sorted keys, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


SNAPSHOT_TIMEOUT_S = 900
"""Importing the scripts (torch, transformers) takes seconds to minutes; a hung one must end."""


class SnapshotError(RuntimeError):
    """The options could not be read: no scripts in the folder, no such Python, or a failure."""


class SnapshotImportError(SnapshotError):
    """sd-scripts' Python could not import the scripts (missing checkout or dependency)."""


_CHILD = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_medsynth_sdopts", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
try:
    data = {{script: module.snapshot(script) for script in sys.argv[2:]}}
except ImportError as exc:
    print("IMPORT-FAILED", exc)
    sys.exit({IMPORT_FAILED})
print({_MARKER!r} + json.dumps(data))
"""


def regenerate(sd_scripts: Path, python: str | None = None, out_dir: Path | None = None,
               scripts: Sequence[str] = SCRIPTS) -> list[Path]:
    """Snapshot `scripts` with sd-scripts' Python and write `<out_dir>/<script>.json` for each
    (default: the packaged SNAPSHOTS, read when called)."""
    # Imported here: this module is also loaded by file path inside sd-scripts' Python,
    # where medsynth_kohya itself is not installed.
    from medsynth_kohya.sdscripts import checkout

    missing = [f"{script}.py" for script in scripts if not (sd_scripts / f"{script}.py").is_file()]
    if missing:
        raise SnapshotError(f"{sd_scripts} holds no {', '.join(missing)}: give --sd-scripts the "
                            "sd-scripts checkout")
    interpreter = checkout.python(python)
    environment = {**os.environ, "PYTHONPATH": str(sd_scripts)}
    try:
        result = subprocess.run([interpreter, "-c", _CHILD, str(Path(__file__).resolve()),
                                 *scripts], cwd=sd_scripts, env=environment, capture_output=True,
                                text=True, timeout=SNAPSHOT_TIMEOUT_S, check=False)
    except OSError as exc:
        raise SnapshotError(f"cannot run {interpreter} ({exc.strerror}): give --python the "
                            "Python that has sd-scripts' requirements") from None
    except subprocess.TimeoutExpired:
        took = f"importing sd-scripts' scripts took over {SNAPSHOT_TIMEOUT_S} s"
        raise SnapshotError(took) from None
    failed = [line for line in result.stdout.splitlines() if line.startswith("IMPORT-FAILED")]
    if result.returncode == IMPORT_FAILED and failed:
        raise SnapshotImportError(failed[-1])
    if result.returncode != 0 or _MARKER not in result.stdout:
        said = result.stderr.strip().splitlines() or [f"no {_MARKER} line in its output"]
        raise SnapshotError(f"snapshot failed (exit {result.returncode}): {said[-1]}")
    data = json.loads(result.stdout.rsplit(_MARKER, 1)[1])
    for snapshot_data in data.values():
        snapshot_data["sd_scripts_commit"] = checkout.commit(sd_scripts)
    out_dir = out_dir or SNAPSHOTS
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for script in scripts:
        path = out_dir / f"{script}.json"
        path.write_text(dump(data[script]), encoding="utf-8")
        written.append(path)
    return written


@cache
def _packaged(script: str) -> dict[str, Any]:
    path = SNAPSHOTS / f"{script}.json"
    if not path.is_file():
        raise ValueError(f"no sd-scripts option snapshot for {script!r} "
                         f"(have: {', '.join(SCRIPTS)})")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@cache
def load(script: str) -> dict[str, Option]:
    """The packaged options of `script`, by name."""
    return {
        entry["name"]: Option(name=entry["name"], flags=tuple(entry["flags"]), kind=entry["kind"],
                              default=_tuple(entry["default"]),
                              choices=_tuple(entry["choices"]), nargs=entry["nargs"])
        for entry in _packaged(script)["options"]
    }


def commit(script: str) -> str | None:
    """The sd-scripts commit the packaged snapshot of `script` was taken from."""
    value: str | None = _packaged(script)["sd_scripts_commit"]
    return value


def _show(value: Any) -> str:
    """`value` as it reads in TOML (near enough: JSON spelling, nan and inf as TOML's)."""
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(_jsonable(value))


def _fits(kind: str, value: Any) -> bool:
    """Whether one TOML value is of the type the option's code expects; unknown kinds pass."""
    if isinstance(value, bool):
        return kind == "bool"
    if kind in ("str", "other:Path"):
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    if kind in ("float", "other:int_or_float"):
        return isinstance(value, int | float)
    return kind != "bool"


def _unknown(name: str, options: Mapping[str, Option]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "no option has a similar name"
    return f"unknown sd-scripts option {name!r}; {hint}"


def _check_one(option: Option, value: Any) -> str | None:
    key, shown = option.name, _show(value)
    if value is None:
        nullable = option.default is None or (option.choices is not None
                                              and None in option.choices)
        return None if nullable else f"{key} = null is not allowed (it has a default)"
    noun = _TOML_TYPE.get(option.kind, "value")
    if option.name in ONE_OR_MANY and not isinstance(value, list):
        value = [value]
    if option.nargs in ("*", "+") or (isinstance(option.nargs, int) and option.nargs > 0):
        if not isinstance(value, list) or not all(_fits(option.kind, item) for item in value):
            return f"{key} = {shown} must be a TOML array of {noun}s"
        items = value
    elif not _fits(option.kind, value):
        return f"{key} = {shown} must be a TOML {noun}"
    else:
        items = [value]
    if option.choices is not None and any(item not in option.choices for item in items):
        allowed = ", ".join(str(choice) for choice in option.choices)
        return f"{key} = {shown} is not one of: {allowed}"
    test, allowed = RANGES.get(key, (None, "a finite number"))
    numbers = [item for item in items if isinstance(item, int | float)
               and not isinstance(item, bool)]
    low, high = TOML_INTEGERS
    if any(isinstance(item, int) and not low <= item <= high for item in numbers):
        return f"{key} = {shown} is past TOML's 64-bit integers ({low} to {high})"
    if any(not math.isfinite(item) or (test is not None and not test(item))
           for item in numbers):
        return f"{key} = {shown} must be {allowed}"
    return None


def check(script: str, values: Mapping[str, Any]) -> list[str]:
    """Errors in flat sd-scripts config `values` for `script`, one line each; empty when fine.

    sd-scripts puts --config_file values into its Namespace unconverted and unchecked, so
    the TOML types must already be what the code expects, and choices, finite numbers and
    RANGES are checked here.
    """
    options = load(script)
    errors: list[str] = []
    for key, value in values.items():
        option = options.get(key)
        error = _unknown(key, options) if option is None else _check_one(option, value)
        if error:
            errors.append(error)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """Maintainer entry point: `regenerate --sd-scripts DIR [--python PY] [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m medsynth_kohya.sdscripts.sdopts")
    commands = parser.add_subparsers(dest="command", required=True)
    regen = commands.add_parser("regenerate", help="rewrite the packaged option snapshots")
    regen.add_argument("--sd-scripts", type=Path, required=True, help="sd-scripts checkout")
    regen.add_argument("--python", default=None,
                       help="Python with sd-scripts' dependencies (default: $MEDSYNTH_SD_PYTHON)")
    regen.add_argument("--out", type=Path, default=SNAPSHOTS,
                       help="folder to write the snapshots into (default: the packaged one)")
    args = parser.parse_args(argv)
    from medsynth_kohya.errors import UserError

    try:
        written = regenerate(args.sd_scripts.resolve(), args.python, args.out)
    except SnapshotImportError as exc:  # the one failure a maintainer fixes by installing
        print(f"error: sd-scripts' Python could not import its scripts ({exc}); give --python "
              "the Python that has its requirements installed", file=sys.stderr)
        return 1
    except (SnapshotError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
