"""Training presets: the TOML files in `configs/`, each a set of sd-scripts options.

A preset holds sd-scripts tables (any table name: sd-scripts flattens them) and one
`[medsynth]` table with this tool's own settings (description, GPU count, memory floor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth_kohya.errors import UserError
from medsynth_kohya.resources import data_dir

OWN_TABLE = "medsynth"
BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
"""The SDXL base model every shipped preset trains on."""


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


def flatten(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What sd-scripts reads from a --config_file: every table's keys in one namespace,
    later tables winning."""
    return {key: value for table in tables.values() for key, value in table.items()}


def available() -> list[str]:
    """Names of the shipped presets."""
    return sorted(path.stem for path in data_dir("configs").glob("*.toml"))


def load(name: str) -> Preset:
    """A shipped preset by name, or a preset file by path."""
    import toml

    path = Path(name).expanduser()
    if not (path.suffix == ".toml" and path.is_file()):
        path = data_dir("configs") / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(available())} "
                        "(or give a preset .toml file)")
    try:
        document = toml.loads(path.read_text(encoding="utf-8"))
    except (toml.TomlDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"preset {path} is not valid TOML: {exc}") from None
    own = document.pop(OWN_TABLE, {})
    stray = [key for key, value in document.items() if not isinstance(value, dict)]
    if stray:
        raise UserError(f"preset {path}: put {', '.join(stray)} inside a table such as [settings]")
    tables = {name: {key: _home(value) for key, value in table.items()}
              for name, table in document.items()}
    return Preset(name=path.stem, path=path, description=str(own.get("description", "")),
                  num_processes=int(own.get("num_processes", 1)),
                  min_gpu_memory_gib=float(own.get("min_gpu_memory_gib", 0)),
                  device=str(own.get("device", "cuda")), tables=tables)


def _home(value: Any) -> Any:
    """A preset value naming a file under the home folder (`~/models/x.safetensors`) with the
    home folder written out: sd-scripts expands no `~`."""
    if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return str(Path(value).expanduser())
    return value
