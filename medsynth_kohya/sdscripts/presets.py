"""Training presets: the TOML files in `configs/`, each a set of sd-scripts options.

A preset holds sd-scripts tables (any table name: sd-scripts flattens them) and one
`[medsynth]` table with this tool's own settings (description, GPU count, memory floor).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medsynth_kohya import arguments
from medsynth_kohya.errors import UserError
from medsynth_kohya.resources import data_dir

OWN_TABLE = "medsynth"
BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
"""The SDXL base model every shipped preset trains on."""
DEVICES = ("cuda", "cpu")
"""A preset's [medsynth] device: "cpu" for one meant to run without a GPU."""
RUN_OWNED = ("output_dir", "output_name", "logging_dir", "sample_prompts", "dataset_config",
             "config_file", "train_data_dir", "in_json", "reg_data_dir", "resume")
"""Options the run itself sets (its folders and files): neither a preset nor --set may."""
_HUB_UPLOAD = ("makes sd-scripts upload to the Hub itself, past push's checks for private "
               "paths and near-copies: leave it out and publish with `medsynth-kohya push`")
_START = ("overrides where sd-scripts starts, which --resume decides from the run's saved "
          "state: leave it out (`train --resume` goes on from the newest state)")
REFUSED_OPTIONS = {
    "huggingface_repo_id": _HUB_UPLOAD,  # the other huggingface_* options do nothing without it
    "console_log_file": ("sends sd-scripts' log to that file, so RUN/train.log and the error "
                         "train reports miss it: leave it out (RUN/train.log keeps the log)"),
    **dict.fromkeys(("initial_step", "initial_epoch", "skip_until_initial_step"), _START),
}
"""sd-scripts options neither a preset nor --set may give, with why and the fix: each would
take a step of the run out of medsynth-kohya's hands (publishing, the log, resuming)."""
RUN_TABLE, OVERRIDES_TABLE = "medsynth_run", "overrides"
"""The config file's tables that hold the run's own options and the --set options no preset
table holds: a preset table of either name would replace them."""


@dataclass(frozen=True)
class Preset:
    """One preset: its sd-scripts tables and its own settings."""

    name: str
    path: Path
    description: str
    num_processes: int
    """Accelerate processes (one per GPU); 0 means one per GPU found."""
    min_gpu_memory_gib: float
    device: str
    """"cuda", or "cpu" for a preset meant to run without a GPU."""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """The sd-scripts options as sd-scripts sees them: all tables flattened."""
        return flatten(self.tables)


OWN_KEYS = tuple(f.name for f in fields(Preset) if f.name not in ("name", "path", "tables"))
"""The settings of a preset's [medsynth] table: Preset's own fields."""

def flatten(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What sd-scripts reads from a --config_file: every table's keys in one namespace,
    later tables winning."""
    return {key: value for table in tables.values() for key, value in table.items()}


_HOME_PATH = re.compile(r"~[A-Za-z0-9._-]*(/|$)")
"""A value that starts with a home folder: `~`, `~/…`, `~user` or `~user/…`."""

def available() -> list[str]:
    """Names of the shipped presets."""
    return sorted(path.stem for path in data_dir("configs").glob("*.toml"))


def load(name: str) -> Preset:
    """A shipped preset by name, or a preset file by path."""
    import toml

    path = _locate(name)
    try:
        document = toml.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is no part of it
    except (toml.TomlDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"preset {path} is not valid TOML: {exc}") from None
    own = document.pop(OWN_TABLE, {})
    stray = [key for key, value in document.items() if not isinstance(value, dict)]
    if stray:
        raise UserError(f"preset {path}: put {', '.join(stray)} inside a table such as [settings]")
    _check_run_owned(document, path)
    _check_repeated(document, path)
    tables = {name: {key: _home(as_written(key, value)) for key, value in table.items()}
              for name, table in document.items()}
    return Preset(name=path.stem, path=path, tables=tables, **_own_settings(own, path))


def _check_run_owned(tables: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Refuse a table or an option the run owns: training with it would write where another
    run (or nothing of this run) is, or replace the run's --set options."""
    for name, table in tables.items():
        if name in (RUN_TABLE, OVERRIDES_TABLE):
            raise UserError(f"preset {path}: the table [{name}] is the run's own; rename it "
                            "(e.g. [settings]) and leave out the options the run sets ("
                            f"{', '.join(RUN_OWNED)})")
        owned = [key for key in table if key in RUN_OWNED]
        if owned:
            raise UserError(f"preset {path}: [{name}] sets {owned[0]}, which the run decides "
                            "(its run folder); remove it from the preset and choose the "
                            "folder with --run-dir")
        refused = [key for key in table if key in REFUSED_OPTIONS]
        if refused:
            raise UserError(f"preset {path}: [{name}] sets {refused[0]}, which "
                            f"{REFUSED_OPTIONS[refused[0]]}")


def _check_repeated(tables: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Refuse an option set in two tables: sd-scripts reads them as one, the last value
    winning, so the value the user edited may not be the one trained with."""
    seen: dict[str, str] = {}
    for name, table in tables.items():
        for key in table:
            if key in seen:
                raise UserError(f"preset {path}: {key} is set in [{seen[key]}] and again in "
                                f"[{name}], and sd-scripts would take the last one; keep it in "
                                "one table")
            seen[key] = name


def _locate(name: str) -> Path:
    """The file of preset `name`: a path when it looks like one (it ends in .toml or names a
    folder), else a shipped preset's name."""
    choose = f"choose one of: {', '.join(available())} (or give a preset .toml file)"
    if not name.strip():
        raise UserError(f"--preset is empty; {choose}")
    path = arguments.path(name, "--preset")
    if path.suffix.lower() == ".toml" or len(Path(name).parts) > 1:
        if path.is_file():
            return path
        shipped = (f"; the shipped preset is --preset {path.stem}"
                   if path.stem in available() and len(Path(name).parts) == 1 else "")
        state = "is not a file" if path.exists() else "does not exist"
        raise UserError(f"preset file {name} {state}{shipped}")
    path = data_dir("configs") / f"{name}.toml"
    if not path.is_file():
        close = difflib.get_close_matches(name, available(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown preset {name!r}; {hint}{choose}")
    return path


def _own_settings(own: Any, path: Path) -> dict[str, Any]:
    """The [medsynth] table's settings as Preset fields; a UserError naming a setting it does
    not know, or one whose value is of the wrong kind."""
    if not isinstance(own, dict):
        raise UserError(f"preset {path}: [{OWN_TABLE}] must be a table ({', '.join(OWN_KEYS)})")
    unknown = sorted(set(own) - set(OWN_KEYS))
    if unknown:
        raise UserError(f"preset {path}: [{OWN_TABLE}] has no setting {unknown[0]!r}; it takes "
                        f"{', '.join(OWN_KEYS)} (sd-scripts options go in a table such as "
                        "[settings])")
    description = own.get("description", "")
    processes = own.get("num_processes", 1)
    memory = own.get("min_gpu_memory_gib", 0)
    device = own.get("device", "cuda")
    checked = (
        ("description", description, "text", isinstance(description, str)),
        ("num_processes", processes, "a whole number, 0 or more (0: one process per GPU found)",
         isinstance(processes, int) and not isinstance(processes, bool) and processes >= 0),
        ("min_gpu_memory_gib", memory, "a number of GiB, 0 or more",
         isinstance(memory, int | float) and not isinstance(memory, bool)
         and math.isfinite(memory) and memory >= 0),
        ("device", device, f"one of: {', '.join(DEVICES)}", device in DEVICES))
    for key, value, kind, fits in checked:
        if not fits:
            raise UserError(f"preset {path}: [{OWN_TABLE}] {key} = {value!r} must be {kind}")
    return {"description": description, "num_processes": processes,
            "min_gpu_memory_gib": float(memory), "device": device}


def as_written(key: str, value: Any) -> Any:
    """An option's value as sd-scripts needs it, from a preset or --set alike: a resolution
    of 768 or [768, 1024], as users write it, becomes the "W,H" text it parses."""
    if key != "resolution":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value},{value}"
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return f"{value[0]},{value[1]}"
    return value


def _home(value: Any) -> Any:
    """A preset value naming a file under a home folder (`~/models/x.safetensors`, or a user's
    `~ana/models/…`) with that folder written out: sd-scripts expands no `~`. A `~name` of no
    user on this machine is left as written (as a shell leaves it)."""
    if not isinstance(value, str) or not _HOME_PATH.match(value):
        return value
    try:
        return str(Path(value).expanduser())
    except RuntimeError:  # `~name` of no such user
        return value
