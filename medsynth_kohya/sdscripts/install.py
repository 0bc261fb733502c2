"""`install-sd-scripts`: a git clone of kohya-ss/sd-scripts at the pinned release.

Clones into the per-user folder (or `--dir`), checks the commit, and builds the `pip install`
line for its requirements. Safe to re-run: a clone already at the pin is left as it is, one at
another commit is moved to the pin (fetched from --url, else $MEDSYNTH_SD_SCRIPTS_URL, else its
origin), and a non-empty folder that is not an sd-scripts clone is refused. A --dir that links
to an empty folder is cloned into that folder.

Safe to kill: a clone is made in `.NAME.partial-HOST-PID` beside the folder and renamed into
place, and a re-run removes those of installs no longer running: on this host by their process,
on another (a folder shared over NFS) once unchanged for locks.STALE_S. A clone moved to the pin
in place is marked (`UNFINISHED` in its git folder) until git is done with it: a re-run finds
the mark of a killed move and refuses the half-moved clone in one line saying how to clear it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import checkout
from medsynth_kohya.sdscripts.launch import Command

GIT_TIMEOUT_S = 1800
"""A clone over a slow link may take minutes; a hung one must still end."""
OFFLINE = ("could not resolve host", "failed to connect", "couldn't connect",
           "connection timed out", "network is unreachable")
"""git's words (lower case) for a remote it cannot reach: this machine has no network there."""
OFFLINE_FIX = ("this machine cannot reach the repository: install sd-scripts where one can "
               "(medsynth-kohya install-sd-scripts --dir DIR), copy DIR here and give it as "
               f"--sd-scripts DIR or {checkout.ENV_DIR}=DIR, or clone from a mirror this "
               "machine reaches with --url URL")
UNFINISHED = "medsynth-install-unfinished"
"""In a clone's git folder while install moves it to the pin: git may have written part of it."""


class GitFailed(UserError):
    """git ended on its own with an error: it left the work tree as it was and took its locks
    away (unlike a git that was killed, on a timeout or with install)."""


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
    the `-C` before it) and git's reason (its `fatal:` or `error:` line, else its first), with
    the ways on when the reason is a remote out of reach."""
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
        offline = any(words in reason.lower() for words in OFFLINE)
        raise GitFailed(f"git {command} failed: {reason}" + (f"; {OFFLINE_FIX}" if offline
                                                              else ""))
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


def _host() -> str:
    """This machine's name as a partial clone's name holds it: one safe path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "_"


def _changed(partial: Path) -> float:
    """When a partial clone last changed (POSIX seconds): the newest mtime of the folder, its
    .git and the packs git is receiving, the places a clone in progress writes; 0 when gone."""
    pack = partial / ".git" / "objects" / "pack"
    try:
        packs = list(pack.iterdir())
    except OSError:
        packs = []
    times = []
    for path in (partial, partial / ".git", pack, *packs):
        try:
            times.append(path.lstat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def _clear_partials(folder: Path) -> None:
    """Remove the `.NAME.partial-HOST-PID` clones of `folder` whose install is no longer
    running (killed before its rename): this host's (and old `.NAME.partial-PID` ones) when
    their process is gone, another host's once unchanged for locks.STALE_S. One whose install
    may still run is a one-line UserError."""
    prefix = f".{folder.name}.partial-"
    for partial in folder.parent.glob(f"{glob.escape(prefix)}*"):
        owner = partial.name.removeprefix(prefix)
        host, _, pid = owner.rpartition("-")
        if host in ("", _host()) or not pid.isdigit():
            if pid.isdigit() and int(pid) != os.getpid() and locks.alive(int(pid)):
                raise UserError(f"another install-sd-scripts (process {pid}) is cloning into "
                                f"{folder}: wait for it to end and re-run (if no such install "
                                f"is running, remove {partial} first)")
        elif time.time() - _changed(partial) <= locks.STALE_S:
            raise UserError(f"another install-sd-scripts (process {pid} on {host}) is cloning "
                            f"into {folder}: wait for it to end and re-run (if nothing runs "
                            f"there, remove {partial} first)")
        shutil.rmtree(partial, ignore_errors=True)


def _clone(url: str, folder: Path) -> None:
    """Clone the pinned release next to `folder`, then move it into place in one rename."""
    files.make_folder(folder.parent)
    _clear_partials(folder)
    partial = folder.parent / f".{folder.name}.partial-{_host()}-{os.getpid()}"
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


def _mark(folder: Path) -> Path:
    """Where the UNFINISHED mark of the clone `folder` goes: its git folder."""
    return Path(_git("-C", str(folder), "rev-parse", "--absolute-git-dir")) / UNFINISHED


def _check_finished(folder: Path) -> None:
    """Refuse, in one line saying how to clear it, a clone a killed install left half-moved to
    the pin; clear the mark where its files are all of one commit (git unlocked, nothing
    changed from its HEAD: the move ended, or never began to write), so the run goes on."""
    mark = _mark(folder)
    if not mark.exists():
        return
    lock = mark.with_name("index.lock")
    changed = _git("-C", str(folder), "status", "--porcelain", "--untracked-files=no")
    if not changed and not lock.exists():
        mark.unlink()
        return
    fix = f"rm -f {lock} && git -C {folder} checkout --force --detach {checkout.PINNED_COMMIT}"
    raise UserError(f"{folder} was left half-moved to the pin by an install-sd-scripts that "
                    "was stopped, so its files may mix two commits: remove the folder and "
                    f"re-run, or, to keep it, run `{fix}` (it discards changes made in the "
                    "folder), then re-run")


def _move_to_pin(folder: Path, remote: str) -> None:
    """Fetch the pinned release from `remote` (a URL, or the clone's "origin") into an existing
    clone and check it out, marked UNFINISHED until git is done or has refused on its own."""
    mark = _mark(folder)
    files.write_text(mark, f"{os.getpid()}\n")
    try:
        _git("-C", str(folder), "fetch", "--quiet", remote, "tag", checkout.PINNED_RELEASE)
        _git("-C", str(folder), "checkout", "--quiet", "--detach", checkout.PINNED_COMMIT)
    except GitFailed:
        mark.unlink()
        raise
    mark.unlink()


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
        _check_finished(target)
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
