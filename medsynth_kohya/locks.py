"""One writer per folder: the exclusive lock every command that writes a folder holds.

The lock is the kernel's `flock` on `FOLDER/.medsynth-lock`, taken through the standard
library's `fcntl` (kept with CPython; the `filelock` package wraps the same call but truncates
the file when it opens it, so it cannot keep the holder's record there). The kernel drops the
lock when its holder dies, however it dies (SIGKILL, out of memory), and a subprocess given the
descriptor keeps it while it runs. The file holds the holder's record (command, pid, host,
start) for the one-line refusal; it is removed on release, so a record found under a free lock
was left by a holder that died: taken over when that was on this host, reported when it was on
another host (where the kernel lock may not reach), until `--break-lock`.

On NFS, Linux sends `flock` to the server as a byte-range lock (NLM for v3, built into v4), so
machines sharing the mount exclude each other; mounts with `nolock` or `local_lock=flock` lock
per machine only, and the host in the record is then what stops a second machine. A server
without a lock manager makes `flock` fail (ENOLCK): the record alone is used, with a warning
that two commands started in the same instant are not kept apart.

A lock may name a part of the folder (`part="shard-1-of-4"`, file `.medsynth-lock.shard-1-of-4`)
so that writers of disjoint parts, such as sample shards, can run side by side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from medsynth_kohya.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the record alone is used there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".medsynth-lock"
RETRY_S = 0.5
"""How long a busy lock whose record is missing or dead is retried (a holder writing its
record, or releasing) before it is reported."""
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_HELD: dict[int, Path] = {}
"""Descriptor -> lock file of every lock this process holds now."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: the command, its process, its machine and since when."""

    command: str
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return (f"`medsynth-kohya {self.command}` (pid {self.pid} on {self.host}, "
                f"since {self.since})")

    @property
    def here(self) -> bool:
        """Whether the holder ran on this machine, where its pid can be checked."""
        return self.host == socket.gethostname()


@dataclass
class Lock:
    """A held lock: its file and descriptor (give `fd` to a subprocess to extend the lock to it)
    and the note to show when it was taken over from a dead or broken holder."""

    folder: Path
    path: Path
    fd: int
    note: str | None = None


def held_fds() -> tuple[int, ...]:
    """The descriptors of the locks this process holds. launch hands them to the subprocesses
    it starts, so a folder stays locked while its training or generation runs, even when this
    process dies first (the kernel frees the lock when the last holder of it exits)."""
    return tuple(_HELD)


def is_lock_file(path: Path) -> bool:
    """Whether `path` is a lock file (commands that refuse a non-empty folder ignore these)."""
    return path.name == LOCK_NAME or path.name.startswith(f"{LOCK_NAME}.")


def foreign_entries(folder: Path) -> list[Path]:
    """The entries of `folder` other than lock files."""
    return [path for path in folder.iterdir() if not is_lock_file(path)]


def alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def lock_path(folder: Path, part: str | None = None) -> Path:
    return folder / (LOCK_NAME if part is None else f"{LOCK_NAME}.{part}")


def _parse(text: str) -> Holder | None:
    try:
        data = json.loads(text)
        return Holder(str(data["command"]), int(data["pid"]), str(data["host"]),
                      str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return None


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse(os.read(fd, 65536).decode("utf-8", "replace"))


def read_holder(folder: Path, part: str | None = None) -> Holder | None:
    """The record in a folder's lock file (None when there is none), without locking."""
    try:
        return _parse(lock_path(folder, part).read_text(encoding="utf-8"))
    except OSError:
        return None


def holder(folder: Path, part: str | None = None) -> Holder | None:
    """Who holds the lock on `folder` now, or None when no live process does.

    Probes the kernel lock without waiting; a record from another machine counts as held
    (this machine cannot see whether it still runs).
    """
    path = lock_path(folder, part)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        record = _read(fd)
        kernel = fcntl is not None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return record or Holder("(unknown)", 0, "?", "?")
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                kernel = False
        if record is None or (record.here and (kernel or not alive(record.pid))):
            return None
        return record
    finally:
        os.close(fd)


def ensure_idle(folder: Path, command: str, writers: tuple[str, ...] = ("train",)) -> None:
    """Refuse, with one line, to read a folder that a live command of `writers` (the ones
    that change what `command` reads) still holds."""
    found = holder(folder)
    if found is not None and found.command in (*writers, "(unknown)"):
        raise UserError(f"{folder} is still being written by {found.describe()}; `{command}` "
                        "needs it finished: wait for it to end, then run this again")


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system cannot lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (a releasing holder removes it)."""
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _busy(folder: Path, record: Holder | None, force_hint: str) -> UserError:
    if record is None:
        who = "another medsynth-kohya command (its record is unreadable)"
    elif record.here and not alive(record.pid):
        who = (f"a process started by {record.describe()}, which has exited while its "
               "subprocess (training or generation) still runs")
    else:
        who = record.describe()
    return UserError(f"{folder} is in use by {who}; wait for it to finish or stop it, then run "
                     f"this again{force_hint}")


def _foreign(folder: Path, record: Holder) -> UserError:
    return UserError(f"{folder} is locked by {record.describe()}, another machine: this one "
                     "cannot tell whether it still runs; if it does not, run this again with "
                     "--break-lock")


def _acquire(folder: Path, path: Path, command: str, break_lock: bool) -> Lock:
    hint = " (--force does not override a running command)"
    deadline = time.monotonic() + RETRY_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            got = _try_flock(fd)
            record = _read(fd)
        except BaseException:
            os.close(fd)
            raise
        if got is True and not _same_file(fd, path):  # its holder removed it as we opened it
            os.close(fd)
            continue
        if got is False:
            os.close(fd)
            settled = record is not None and (not record.here or alive(record.pid))
            if settled or time.monotonic() > deadline:
                raise _busy(folder, record, hint)
            time.sleep(0.05)  # a holder writing its record, or a probe
            continue
        if record is not None and not break_lock and (
                not record.here or (got is None and alive(record.pid))):
            os.close(fd)
            raise _foreign(folder, record) if not record.here else _busy(folder, record, hint)
        notes = []
        if got is None:
            notes.append(f"{folder}: this file system does not support locks (flock); "
                         "commands started in the same instant on it are not kept apart")
        if record is not None and record.here and not alive(record.pid):
            notes.append(f"took over the lock on {folder} left by {record.describe()}, which "
                         "no longer runs")
        elif record is not None:
            notes.append(f"broke (--break-lock) the lock on {folder} of {record.describe()}")
        mine = Holder(command, os.getpid(), socket.gethostname(), _now())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(mine)).encode(), 0)
        return Lock(folder, path, fd, "; ".join(notes) or None)


def _release(lock: Lock) -> None:
    """Remove the record, then drop the kernel lock (in that order, so a contender that opened
    the old file sees it gone and starts over on a new one)."""
    try:
        if _same_file(lock.fd, lock.path):
            lock.path.unlink()
    finally:
        os.close(lock.fd)


@contextlib.contextmanager
def hold(folder: Path, command: str, *, part: str | None = None,
         break_lock: bool = False) -> Iterator[Lock]:
    """Hold the exclusive lock on `folder` (or on one named part of it) while the block runs.

    A held lock refuses at once with a UserError naming the holder; a lock left by a dead
    process on this host is taken over (`Lock.note` says so); one left on another host is
    refused unless `break_lock`. Folders this makes are removed again if the block leaves
    them empty (a refused command leaves nothing behind).
    """
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; choose a folder")
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = _acquire(folder, lock_path(folder, part), command, break_lock)
        _HELD[lock.fd] = lock.path
        try:
            yield lock
        finally:
            del _HELD[lock.fd]
            _release(lock)
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()
