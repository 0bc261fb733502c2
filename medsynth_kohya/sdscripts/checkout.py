"""Where sd-scripts is, which commit it is at, and which Python runs it.

Shared by every command that starts an sd-scripts program (`train`, `sample`). The search
order is `--sd-scripts`, `$MEDSYNTH_SD_SCRIPTS`, the `vendor/sd-scripts` submodule of the
checkout this package runs from (an editable install), then the per-user copy that
`medsynth-kohya install-sd-scripts` makes; the first that applies wins.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import arguments
from medsynth_kohya.errors import UserError

PINNED_COMMIT = "ae72efb92babe89ff8e70f057e42db68440e8d61"
"""sd-scripts v0.10.1, the release this tool is written and tested against."""
PINNED_RELEASE = "v0.10.1"
ENV_DIR = "MEDSYNTH_SD_SCRIPTS"
ENV_PYTHON = "MEDSYNTH_SD_PYTHON"
ENV_URL = "MEDSYNTH_SD_SCRIPTS_URL"
UPSTREAM_URL = "https://github.com/kohya-ss/sd-scripts.git"
TRAIN_SCRIPT = "sdxl_train_network.py"
_PACKAGE = Path(__file__).resolve().parents[1]
_PROJECT_NAME = re.compile(r'^name\s*=\s*"medsynth-kohya"\s*$', re.MULTILINE)

GIVEN, ENV, CHECKOUT, USER, NOT_FOUND = (
    "--sd-scripts", f"${ENV_DIR}", "this checkout's vendor/sd-scripts",
    "the per-user copy", "not found")
"""The rules of the search, as `doctor` names them."""


@dataclass(frozen=True)
class Location:
    """Where sd-scripts is (or, when `rule` is NOT_FOUND, where install-sd-scripts puts it)."""

    path: Path
    rule: str


def checkout_root() -> Path | None:
    """The source tree this package runs from, when it is one (an editable install of this
    project); None for an installed wheel."""
    try:
        text = (_PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _PACKAGE.parent if _PROJECT_NAME.search(text) else None


def user_dir() -> Path:
    """The per-user copy: the platform's data folder (XDG_DATA_HOME on Linux)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "medsynth-kohya" / "sd-scripts"


def find(given: Path | None = None) -> Location:
    """Apply the search order; the first rule that names a folder (or finds one) wins."""
    if given is not None:
        return Location(given.expanduser(), GIVEN)
    if os.environ.get(ENV_DIR):
        return Location(arguments.path(os.environ[ENV_DIR], f"${ENV_DIR}"), ENV)
    root = checkout_root()
    if root is not None and present(root / "vendor" / "sd-scripts"):
        return Location(root / "vendor" / "sd-scripts", CHECKOUT)
    user = user_dir()
    return Location(user, USER if present(user) else NOT_FOUND)


def locate(given: Path | None = None) -> Path:
    """The sd-scripts folder the search order picks (see `find`)."""
    return find(given).path


def python(given: str | None = None) -> str:
    """--python, else $MEDSYNTH_SD_PYTHON, else the Python running this tool. A path (a value
    with a folder separator or a leading `~`) is made absolute from the current folder, as
    every path option is: the launch runs inside sd-scripts' folder, so the interpreter checked
    here is the one launched there. A command name such as python3 stays as it is (PATH)."""
    if given is not None and not given.strip():
        raise UserError("--python is empty: give the Python that runs sd-scripts, or leave it "
                        f"out for ${ENV_PYTHON}, else this one")
    chosen = given or os.environ.get(ENV_PYTHON) or sys.executable
    name = "--python" if given else f"${ENV_PYTHON}"
    separators = [os.sep, *([os.altsep] if os.altsep else [])]
    if chosen.startswith("~") or any(separator in chosen for separator in separators):
        return str(arguments.path(chosen, name).absolute())  # symlinks kept: a venv's python
    return chosen


def present(folder: Path, script: str = TRAIN_SCRIPT) -> bool:
    """Whether `folder` holds an sd-scripts checkout with `script`."""
    return (folder / script).is_file()


def has_module(folder: Path, module: str) -> bool:
    """Whether `module` (dotted, e.g. "networks.lora") is a file or package under the checkout
    `folder`, which is where sd-scripts' scripts import from first."""
    path = folder.joinpath(*module.split("."))
    return path.with_name(path.name + ".py").is_file() or path.is_dir()


_FIND_SPEC = """
import importlib.util, sys
name = sys.argv[1]
try:
    found = importlib.util.find_spec(name) is not None
except ModuleNotFoundError as exc:
    found = not (exc.name and (name == exc.name or name.startswith(exc.name + ".")))
except Exception:
    found = True
sys.exit(0 if found else 3)
"""


def installed(python: str, module: str) -> bool:
    """Whether `python` can import `module`; True when that cannot be told (the interpreter
    does not run), so only a module surely missing is refused."""
    try:
        result = subprocess.run([python, "-c", _FIND_SPEC, module], capture_output=True,
                                timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return result.returncode != 3


def commit(folder: Path) -> str | None:
    """The checked-out commit of `folder`, read with git (no network); None if unknown, as for
    a copy that is no clone of its own, where git would answer with the repository around it."""
    return head(folder)[0]


def head(folder: Path) -> tuple[str | None, str | None]:
    """`commit`, and, where git refuses to read `folder` because another user owns it, the
    command git gives to trust it (`git config --global --add safe.directory …`)."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel",
                                 "HEAD"], capture_output=True, text=True, timeout=20,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2 or len(lines[1]) != 40:
        trust = [line.strip() for line in result.stderr.splitlines()
                 if line.strip().startswith("git config") and "safe.directory" in line]
        return None, (trust[0] if trust and "dubious ownership" in result.stderr else None)
    return (lines[1] if Path(lines[0]).resolve() == folder.resolve() else None), None


def local_path(value: str, folder: Path, name: str = "path") -> str:
    """A path-like option value as sd-scripts (running in `folder`) must see it: absolute when
    it exists from here or starts with `~` (sd-scripts expands no `~`), else as given
    (relative to `folder`, or a Hub id); a `~user` that names no one is a UserError naming
    option `name`."""
    path = arguments.path(value, name)
    if value.startswith("~") or (path.exists() and not (folder / value).exists()):
        return str(path.resolve())
    return value


def missing_fix(location: Location) -> str:
    """What to run when sd-scripts is not at `location`: right from any folder."""
    named = "--sd-scripts" if location.rule == GIVEN else f"${ENV_DIR}"
    if location.rule in (GIVEN, ENV) and location.path.is_file():  # install would refuse it
        return (f"{location.path} is a file, not a folder: point {named} at the folder that "
                f"holds {TRAIN_SCRIPT}")
    if location.rule in (GIVEN, ENV) and location.path.is_dir() and any(
            location.path.iterdir()):  # install refuses a folder of other files too
        return (f"{location.path} holds other files: point {named} at the folder that holds "
                f"{TRAIN_SCRIPT}, or install it into a new folder with `medsynth-kohya "
                "install-sd-scripts --dir NEW`")
    if location.rule == GIVEN:
        return (f"medsynth-kohya install-sd-scripts --dir {_quoted(location.path)}, or pass "
                f"--sd-scripts "
                f"the folder that holds {TRAIN_SCRIPT}")
    if location.rule == ENV:
        return (f"medsynth-kohya install-sd-scripts --dir {_quoted(location.path)}, or point "
                f"${ENV_DIR} at the folder that holds {TRAIN_SCRIPT}")
    root = checkout_root()
    if root is not None:  # an editable install whose submodule was never checked out
        return (f"git -C {_quoted(root)} submodule update --init vendor/sd-scripts, or "
                "medsynth-kohya install-sd-scripts (or --sd-scripts DIR)")
    return "medsynth-kohya install-sd-scripts (or --sd-scripts DIR)"


def install_step(location: Location) -> str:
    """The command that installs sd-scripts where `location` finds none ("" where a checkout
    is there, or where install-sd-scripts would refuse the path: a file, a folder of other
    files, a link to nothing)."""
    path = location.path
    empty = path.is_dir() and not any(path.iterdir())
    absent = not path.exists() and not path.is_symlink()
    if present(path) or not (empty or absent):
        return ""
    if location.rule == NOT_FOUND:  # its default folder
        return "medsynth-kohya install-sd-scripts"
    return f"medsynth-kohya install-sd-scripts --dir {_quoted(path)}"


def pin_fix(location: Location, clone: bool = True) -> str:
    """The exact command that puts the checkout at `location` at the pinned release; for a
    copy that is no git `clone` of its own (git can neither read nor move its commit), a new
    clone of the pin for the search to find instead."""
    if not clone:
        named = "--sd-scripts" if location.rule == GIVEN else f"${ENV_DIR}"
        return (f"medsynth-kohya install-sd-scripts --dir NEW (a new folder), then point "
                f"{named} at NEW")
    root = checkout_root()
    if location.rule == CHECKOUT and root is not None:
        return f"git -C {_quoted(root)} submodule update --init vendor/sd-scripts"
    if location.rule == USER:
        return "medsynth-kohya install-sd-scripts"
    folder = _quoted(location.path)
    return f"git -C {folder} fetch --tags && git -C {folder} checkout {PINNED_COMMIT}"


def _quoted(path: Path) -> str:
    """`path` as one shell word, so the command it is part of can be pasted as is."""
    import shlex

    return shlex.quote(str(path))
