"""Where sd-scripts is, which commit it is at, and which Python runs it.

Shared by every command that starts an sd-scripts program (`train`, `sample`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PINNED_COMMIT = "ae72efb92babe89ff8e70f057e42db68440e8d61"
"""sd-scripts v0.10.1, the release this tool is written and tested against."""
PINNED_RELEASE = "v0.10.1"
ENV_DIR = "MEDSYNTH_SD_SCRIPTS"
ENV_PYTHON = "MEDSYNTH_SD_PYTHON"
_CHECKOUT = Path(__file__).resolve().parents[2]


def locate(given: Path | None = None) -> Path:
    """--sd-scripts, else $MEDSYNTH_SD_SCRIPTS, else vendor/sd-scripts (here or in the checkout)."""
    if given is not None:
        return given
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    for candidate in (Path.cwd() / "vendor" / "sd-scripts", _CHECKOUT / "vendor" / "sd-scripts"):
        if (candidate / "sdxl_train_network.py").is_file():
            return candidate
    return Path("vendor") / "sd-scripts"


def python(given: str | None = None) -> str:
    """--python, else $MEDSYNTH_SD_PYTHON, else the Python running this tool."""
    return given or os.environ.get(ENV_PYTHON) or sys.executable


def present(folder: Path, script: str = "sdxl_train_network.py") -> bool:
    """Whether `folder` holds an sd-scripts checkout with `script`."""
    return (folder / script).is_file()


def commit(folder: Path) -> str | None:
    """The checked-out commit of `folder`, read with git (no network); None if unknown."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and len(value) == 40 else None


def local_path(value: str, folder: Path) -> str:
    """A path-like option value as sd-scripts (running in `folder`) must see it: absolute when
    it exists from here, else as given (relative to `folder`, or a Hub id)."""
    path = Path(value).expanduser()
    if path.exists() and not (folder / value).exists():
        return str(path.resolve())
    return value


def pin_fix(folder: Path) -> str:
    """The exact command that puts `folder` at the pinned release."""
    if folder.resolve() == (_CHECKOUT / "vendor" / "sd-scripts").resolve():
        return "git submodule update --init vendor/sd-scripts"
    return f"git -C {folder} fetch --tags && git -C {folder} checkout {PINNED_COMMIT}"
