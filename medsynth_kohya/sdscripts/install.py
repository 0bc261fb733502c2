"""`install-sd-scripts`: a git clone of kohya-ss/sd-scripts at the pinned release.

Clones into the per-user folder (or `--dir`), checks the commit, and builds the `pip install`
line for its requirements. Safe to re-run: a clone already at the pin is left as it is, one at
another commit is moved to the pin (fetched from --url, else $MEDSYNTH_SD_SCRIPTS_URL, else its
origin), and a non-empty folder that is not an sd-scripts clone is refused. A --dir that links
to an empty folder is cloned into that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import arguments, files
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import checkout
from medsynth_kohya.sdscripts.launch import Command

GIT_TIMEOUT_S = 1800
"""A clone over a slow link may take minutes; a hung one must still end."""


@dataclass(frozen=True)
class InstallResult:
    """Where sd-scripts now is, at which commit, what was done, and how it is found."""

    path: Path
    commit: str
    action: str
    """"cloned", "already at the pin" or "moved to the pin"."""
    pip: Command
    """Installs sd-scripts' requirements (run in its folder: they end with `-e .`)."""
    found_by: str | None
    """The search rule that finds `path` from now on; None when the user must point at it."""
    pip_ran: bool = False


def _git(*args: str) -> str:
    """Run git without prompts; a failure is one line naming the git command (`checkout`, not
    the `-C` before it) and git's reason (its `fatal:` or `error:` line, else its first)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    command = next((arg for arg, before in zip(args, ("", *args), strict=False)
                    if not arg.startswith("-") and before != "-C"), args[0])
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_S, check=False, env=env)
    except FileNotFoundError:
        raise UserError("git is not installed: install it (https://git-scm.com) and "
                        "re-run medsynth-kohya install-sd-scripts") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"git {command} took over {GIT_TIMEOUT_S} s; check the network and "
                        "re-run") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
        reason = next((line for line in lines if line.startswith(("fatal:", "error:"))),
                      lines[0])
        raise UserError(f"git {command} failed: {reason}")
    return result.stdout.strip()


def _is_clone(folder: Path) -> bool:
    """Whether `folder` is the top of a git work tree holding sd-scripts."""
    if not checkout.present(folder):
        return False
    try:
        top = _git("-C", str(folder), "rev-parse", "--show-toplevel")
    except UserError:
        return False
    return Path(top).resolve() == folder.resolve()


def _clone(url: str, folder: Path) -> None:
    """Clone the pinned release next to `folder`, then move it into place in one rename."""
    files.make_folder(folder.parent)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _git("clone", "--quiet", "--depth", "1", "--branch", checkout.PINNED_RELEASE,
             url, str(partial))
        head = checkout.commit(partial)
        if head != checkout.PINNED_COMMIT:
            raise UserError(f"{checkout.PINNED_RELEASE} at {url} is {head}, not the pinned "
                            f"{checkout.PINNED_COMMIT}; nothing was installed")
        if folder.is_dir():
            folder.rmdir()
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _move_to_pin(folder: Path, remote: str) -> None:
    """Fetch the pinned release from `remote` (a URL, or the clone's "origin") into an existing
    clone and check it out."""
    _git("-C", str(folder), "fetch", "--quiet", remote, "tag", checkout.PINNED_RELEASE)
    _git("-C", str(folder), "checkout", "--quiet", "--detach", checkout.PINNED_COMMIT)


@arguments.checked
def install(folder: arguments.PathArg | None = None, *, url: str | None = None,
            python: str | None = None, run_pip: bool = False) -> InstallResult:
    """Put sd-scripts at the pinned commit in `folder` (default: the per-user folder)."""
    folder = arguments.optional_path(folder, "folder")
    target = (folder or checkout.user_dir()).expanduser().absolute()
    chosen = url or os.environ.get(checkout.ENV_URL)
    if target.is_symlink() and not target.exists():
        raise UserError(f"{target} is a link to {target.parent / target.readlink()}, which does "
                        "not exist; create that folder or choose another --dir")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file; choose another --dir")
    if target.is_dir() and any(target.iterdir()):
        if not _is_clone(target):
            raise UserError(f"{target} is not empty and is not an sd-scripts clone; empty it "
                            "or choose another --dir")
        if checkout.commit(target) == checkout.PINNED_COMMIT:
            action = "already at the pin"
        else:
            _move_to_pin(target, chosen or "origin")
            action = "moved to the pin"
    else:
        _clone(chosen or checkout.UPSTREAM_URL, target.resolve() if target.is_symlink()
               else target)  # through a link: the clone goes where it points, the link stays
        action = "cloned"
    head = checkout.commit(target)
    if head != checkout.PINNED_COMMIT:
        raise UserError(f"{target} is at {head}, not the pinned {checkout.PINNED_COMMIT}")
    pip = Command([checkout.python(python), "-m", "pip", "install", "-r", "requirements.txt"],
                  target)
    location = checkout.find()
    found_by = location.rule if location.path.resolve() == target.resolve() else None
    if run_pip:
        try:
            code = subprocess.run(pip.argv, cwd=pip.cwd, check=False).returncode
        except OSError as exc:
            raise UserError(f"cannot run {pip.argv[0]} ({exc.strerror}); sd-scripts itself is in "
                            f"place at {target}: pass --python the Python for sd-scripts and "
                            "re-run with --pip") from None
        if code != 0:
            raise UserError(f"pip install exited with {code} (its output is above); sd-scripts "
                            f"itself is in place at {target}: fix the cause and re-run with --pip")
    return InstallResult(target, head, action, pip, found_by, pip_ran=run_pip)
