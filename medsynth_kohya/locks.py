"""One writer per folder: the exclusive lock every command that writes a folder holds.

The lock is the kernel's `flock` on `FOLDER/.medsynth-lock`, taken through the standard
library's `fcntl` (kept with CPython; the `filelock` package wraps the same call but truncates
the file when it opens it, so it cannot keep the holder's record there). The kernel drops the
lock when its holder dies, however it dies (SIGKILL, out of memory), and a subprocess given the
descriptor keeps it while it runs. The file holds the holder's record (command, pid, host,
start, heartbeat) for the one-line refusal; it is removed on release, so a record found under a
free lock was left by a holder that died: taken over when that was on this host. On another host
(where the kernel lock may not reach) the holder's own word is its heartbeat: a thread of the
holding process rewrites the time in its record every BEAT_S seconds while it holds the lock.
A record from another host whose heartbeat is older than STALE_S is taken over with a note
naming the old holder (a Colab runtime that disconnected, a node that crashed); a fresher one is
refused until `--break-lock`. A record without a heartbeat (written before there was one) never
goes stale. The comparison uses both machines' clocks: skew between them counts against the
margin of STALE_S over BEAT_S; a heartbeat ahead of this machine's clock (the other's is ahead,
or the file was copied or touched) is timed from the lock file's last change instead, so that
it too is taken over STALE_S after its holder stopped.

On NFS, Linux sends `flock` to the server as a byte-range lock (NLM for v3, built into v4), so
machines sharing the mount exclude each other; mounts with `nolock` or `local_lock=flock` lock
per machine only, and the host in the record is then what stops a second machine; the
heartbeat keeps a live holder's record fresh there (NFS's close-to-open consistency shows a
reader the last rewrite). A command whose process was killed while its subprocess (training,
generation) still runs keeps the kernel lock but no longer beats: on such mounts another machine
may take its folder over STALE_S later. On its own host such a lock is refused naming the
processes that hold it now (found by their open descriptor of the lock file in /proc), never
the dead command's pid as if it still ran. A server without a lock manager makes `flock` fail
(ENOLCK): the record alone is used, with a warning that two commands started in the same
instant are not kept apart.

A lock may name a part of the folder (`part="shard-1-of-4"`, file `.medsynth-lock.shard-1-of-4`)
so that writers of disjoint parts, such as sample shards, can run side by side. A command that
reads a folder for long (train the prepared folder, sample the run whose LoRA it uses, evaluate
the synthetic set) holds a part of its own (`reading`), so readers go side by side while the
folder's writer refuses to change it (`ensure_unread`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the record alone is used there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".medsynth-lock"
READER = "reader"
"""Part-lock names of commands reading a folder (`reading`) start with this."""
RETRY_S = 0.5
"""How long a busy lock whose record is missing or dead is retried (a holder writing its
record, or releasing) before it is reported."""
BEAT_S = 60.0
"""How often a holder rewrites the heartbeat in its record."""
STALE_S = 600
"""How long a record from another host may go without a heartbeat before it is taken over: ten
beats, room for a loaded machine, a slow network file system's caches and clock skew."""
_BREAK_HINT = "if that machine no longer runs it, run this again with --break-lock"
"""How a refusal by another machine's lock or mark ends: --break-lock passes it."""
COMMAND_SHOWN = 80
"""The most characters of a process's command line a refusal shows."""
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
    beat: str | None = None
    """When the holder last said it still runs (UTC, rewritten every BEAT_S seconds)."""
    changed: float | None = field(default=None, compare=False)
    """When its lock file last changed (its ctime, POSIX seconds, as this machine's file system
    says); read beside the record, never written in it."""
    left: str | None = field(default=None, compare=False)
    """For a holder of this host gone while its lock is still held: who holds it now, in words
    (`_orphaned`); read beside the record, never written in it."""

    def describe(self) -> str:
        """The holder as messages name it: the command, or who holds its lock since it died."""
        return self.left or (f"`medsynth-kohya {self.command}` (pid {self.pid} on {self.host}, "
                             f"since {self.since})")

    def _beat_age_s(self) -> float | None:
        """Seconds from the last heartbeat to now by this machine's clock, negative when the
        heartbeat lies ahead of it (None without one)."""
        try:
            beat = datetime.fromisoformat(self.beat or "")
        except ValueError:
            return None
        if beat.tzinfo is None:
            return None
        return (_clock() - beat).total_seconds()

    def ahead_s(self) -> float:
        """How far the last heartbeat lies ahead of this machine's clock (0 when it does not)."""
        return max(-(self._beat_age_s() or 0.0), 0.0)

    def silent_s(self) -> float | None:
        """Seconds since the last heartbeat, by this machine's clock (None without one); one
        from the future is timed from the lock file's last change (0 when that is unknown)."""
        age = self._beat_age_s()
        if age is None or age >= 0:
            return age
        now = _clock().timestamp()
        return max(now - (self.changed or now), 0.0)

    @property
    def stale(self) -> bool:
        """Whether this is another host's record that has gone STALE_S without a heartbeat."""
        silent = self.silent_s()
        return not self.here and silent is not None and silent > STALE_S

    def same_holder(self, other: Holder | None) -> bool:
        """Whether `other` is this holder's record, whatever its heartbeat."""
        return other is not None and replace(other, beat=None) == replace(self, beat=None)

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
    record: Holder
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


def holds(entries: list[Path]) -> str:
    """What a refused folder holds, for its message: `it holds .DS_Store` (a hidden file alone
    makes a folder not empty), `it holds notes.txt and 2 more`."""
    names = sorted(path.name for path in entries)
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"it holds {names[0]}{more}" if names else "it is empty"


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


def _parse(text: str, changed: float) -> Holder | None:
    try:
        data = json.loads(text)
        beat = data.get("beat")
        return Holder(str(data["command"]), int(data["pid"]), str(data["host"]),
                      str(data["since"]), beat if isinstance(beat, str) else None, changed)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _read(fd: int) -> Holder | None:
    return _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"), os.fstat(fd).st_ctime)


def _write(fd: int, record: Holder) -> None:
    """Write the record over the file's bytes, then cut what is left of a longer one (a reader
    never sees it empty; heartbeats keep the length, so a torn read still parses)."""
    data = json.dumps({key: value for key, value in asdict(record).items()
                       if key not in ("changed", "left")}).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _holds(pid: int, key: tuple[int, int], probe: int | None = None) -> bool | None:
    """Whether process `pid` has the file `key` (device, inode) open (Linux's /proc) through a
    descriptor other than this process's `probe`; None when its descriptors cannot be read
    (another user's process)."""
    try:
        entries = os.scandir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    with entries:
        for entry in entries:
            if pid == os.getpid() and entry.name == str(probe):
                continue
            with contextlib.suppress(OSError):
                found = Path(entry.path).stat()
                if (found.st_dev, found.st_ino) == key:
                    return True
    return False


def _command_line(pid: int) -> str:
    """Process `pid`'s command line, shortened to fit a one-line message ("" when unknown)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    line = " ".join(arg.decode("utf-8", "replace") for arg in argv)
    return line if len(line) <= COMMAND_SHOWN else line[:COMMAND_SHOWN - 1] + "…"


def _orphaned(record: Holder, fd: int, path: Path) -> Holder:
    """`record` of this host, whose kernel lock (open as `fd`) is held: as it is while its
    process holds it; else, its process gone (a pid it had may run something else now), with
    `left` naming the processes that hold the lock now, the training or generation it left
    running (launch hands them the lock), or, where they cannot be found, how to find them."""
    stat = os.fstat(fd)
    key, proc = (stat.st_dev, stat.st_ino), Path("/proc/self/fd").is_dir()
    if alive(record.pid) and (not proc or _holds(record.pid, key, fd) is not False):
        return record
    holding: list[int] = []
    if proc:
        with os.scandir("/proc") as entries:
            holding = sorted(int(entry.name) for entry in entries
                             if entry.name.isdigit() and _holds(int(entry.name), key, fd))
    gone = f"left running by {record.describe()}, which no longer runs"
    if not holding:
        return replace(record, left=f"a process {gone} (`fuser -v {path}` names it)")
    shown = _command_line(holding[0])
    who = f"pid {holding[0]}" + (f" (`{shown}`)" if shown else "")
    more = f" and {len(holding) - 1} more" if len(holding) > 1 else ""
    return replace(record, left=f"{who}{more}, {gone}")


def read_holder(folder: Path, part: str | None = None) -> Holder | None:
    """The record in a folder's lock file (None when there is none), without locking."""
    path = lock_path(folder, part)
    try:
        return _parse(path.read_text(encoding="utf-8"), path.stat().st_ctime)
    except OSError:
        return None


def holder(folder: Path, part: str | None = None, *, break_lock: bool = False,
           ) -> Holder | None:
    """Who holds the lock on `folder` now, or None when no live process does.

    Probes the kernel lock without waiting; a record from another machine counts as held while
    its heartbeat is fresh (this machine cannot see whether it still runs), unless `break_lock`.
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
                if record is None:
                    return Holder("(unknown)", 0, "?", "?")
                return _orphaned(record, fd, path) if record.here else record
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                kernel = False
        if record is None or (record.here and (kernel or not alive(record.pid))):
            return None
        return None if not record.here and (record.stale or break_lock) else record
    finally:
        os.close(fd)


def report(folder: Path) -> str | None:
    """One line on who holds `folder`'s lock now and, for another machine, how long until it is
    taken over; None when it is free. For plans (`--dry-run`) that lock nothing themselves."""
    found = holder(folder)
    if found is None:
        return None
    if not _elsewhere(found):
        return f"{folder} is in use by {found.describe()}"
    return f"{folder} is locked by {_who(found)}"


def ensure_idle(folder: Path, command: str, writers: tuple[str, ...] = ("train",), *,
                break_lock: bool = False) -> None:
    """Refuse, with one line, to read a folder that a live command of `writers` (the ones
    that change what `command` reads) still holds; `break_lock` passes another host's record."""
    found = holder(folder, break_lock=break_lock)
    if found is None or found.command not in (*writers, "(unknown)"):
        return
    then = f"; {_BREAK_HINT}" if _elsewhere(found) else ", then run this again"
    raise UserError(f"{folder} is still being written by {_who(found)}; `{command}` needs it "
                    f"finished: wait for it to end{then}")


def _readers(folder: Path, break_lock: bool, clear: bool) -> tuple[list[Holder], list[str]]:
    """The live readers of `folder` and, with `clear`, the notes on the marks removed."""
    if not folder.is_dir():
        return [], []
    prefix = f"{LOCK_NAME}.{READER}-"
    parts = sorted(path.name.removeprefix(f"{LOCK_NAME}.") for path in folder.iterdir()
                   if path.name.startswith(prefix))
    found, notes = [], []
    for part in parts:
        record = holder(folder, part, break_lock=break_lock)
        if record is not None:
            found.append(record)
        elif clear:  # one being created now notices and makes its file again (_acquire)
            note = _taken_over(folder, read_holder(folder, part), break_lock, mark=True)
            with contextlib.suppress(OSError):
                lock_path(folder, part).unlink()
                notes += [note] if note else []
    return found, notes


def readers(folder: Path, *, break_lock: bool = False, clear: bool = False) -> list[Holder]:
    """The live commands reading `folder` now (their `reading` part-locks); with `clear`, the
    marks of readers that died (or another host's gone stale) are removed (each has a name of
    its own, so no later holder takes them over)."""
    return _readers(folder, break_lock, clear)[0]


def ensure_unread(folder: Path, command: str, *, break_lock: bool = False,
                  has_force: bool = True) -> list[str]:
    """Refuse, with one line naming a reader, to change a folder a live command still reads
    (`command` holds the folder's own lock first, so a reader starting now sees it busy);
    returns the notes on the marks it removed (dead, stale, or broken with `break_lock`).
    `has_force` says whether `command` has a --force the refusal should say does not help."""
    found, notes = _readers(folder, break_lock, True)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        then = f"; {_BREAK_HINT}" if all(map(_elsewhere, found)) else ""
        raise UserError(f"{folder} is being read by {_who(found[0])}{more}; `{command}` would "
                        "change the files it reads: wait for it to end, or write into another "
                        f"folder{_force_hint(has_force)}{then}")
    return notes


@contextlib.contextmanager
def reading(folder: Path, command: str) -> Iterator[None]:
    """Mark `folder` as read by this process while the block runs (see `ensure_unread`); a
    folder this process may not write to (a shared read-only data set), or one that is not
    there, is read unmarked."""
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError, files.FolderError):
            if not folder.is_dir():
                raise FileNotFoundError(folder)
            readers(folder, clear=True)
            part = f"{READER}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
            stack.enter_context(hold(folder, command, part=part, sweep=False))
        yield


def _clock() -> datetime:
    """Now, in UTC (the one clock heartbeats are written and judged by)."""
    return datetime.now(timezone.utc)


def _now() -> str:
    return _clock().astimezone().isoformat(timespec="seconds")


def _stamp() -> str:
    """A heartbeat: now in UTC to the second, always the same length."""
    return _clock().isoformat(timespec="seconds")


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


def _force_hint(has_force: bool) -> str:
    """The refusal's reminder, for a command with --force, that it does not pass a holder."""
    return " (--force does not override a running command)" if has_force else ""


def _busy(folder: Path, record: Holder | None, force_hint: str) -> UserError:
    who = ("another medsynth-kohya command (its record is unreadable)" if record is None
           else record.describe())
    return UserError(f"{folder} is in use by {who}; wait for it to finish or stop it, then run "
                     f"this again{force_hint}")


def _silence(record: Holder) -> str:
    """How long ago another host's holder last beat, and when it is taken over, in words."""
    silent = record.silent_s()
    if silent is None:
        return "it records no heartbeat"
    ahead = record.ahead_s()
    since = (f"its last heartbeat is {ahead / 60:.0f} min ahead of this machine's clock (that "
             "machine's clock is ahead, or the file was copied), so it is timed from the lock "
             f"file's last change, {silent / 60:.0f} min ago" if ahead else
             f"its last heartbeat was {silent / 60:.0f} min ago")
    return f"{since}; it is taken over after {STALE_S // 60} min without one"


def _elsewhere(record: Holder) -> bool:
    """Whether `record` names another machine (whose holder this one cannot check)."""
    return not record.here and record.command != "(unknown)"


def _who(record: Holder) -> str:
    """The holder as a refusal names it; for another machine, when it is taken over."""
    if not _elsewhere(record):
        return record.describe()
    return f"{record.describe()}, another machine, and {_silence(record)}"



def _foreign(folder: Path, record: Holder) -> UserError:
    return UserError(f"{folder} is locked by {_who(record)}: {_BREAK_HINT}")


def _taken_over(folder: Path, record: Holder | None, break_lock: bool, *,
                mark: bool = False) -> str | None:
    """The note on a lock (or, with `mark`, a reader's mark) taken from a holder that died on
    this host, another host's gone stale, or one broken with `break_lock`."""
    if record is None:
        return None
    what = f"the reading mark on {folder}" if mark else f"the lock on {folder}"
    took = "removed" if mark else "took over"
    if record.here and not alive(record.pid):
        return f"{took} {what} left by {record.describe()}, which no longer runs"
    if record.stale and not break_lock:
        return (f"{took} {what} left by {record.describe()}, another machine, silent for "
                f"{record.silent_s() or 0:.0f} s (over {STALE_S} s)")
    return f"broke (--break-lock) {what} of {record.describe()}" if break_lock else None


def _acquire(folder: Path, path: Path, command: str, break_lock: bool, has_force: bool) -> Lock:
    hint = _force_hint(has_force)
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
            settled = record is not None and (not record.here or alive(record.pid))
            if settled or time.monotonic() > deadline:
                try:
                    found = _orphaned(record, fd, path) if record and record.here else record
                finally:
                    os.close(fd)
                raise _busy(folder, found, hint)
            os.close(fd)
            time.sleep(0.05)  # a holder writing its record, or a probe
            continue
        if record is not None and not break_lock and (
                (not record.here and not record.stale)
                or (record.here and got is None and alive(record.pid))):
            os.close(fd)
            raise _foreign(folder, record) if not record.here else _busy(folder, record, hint)
        notes = [f"{folder}: this file system does not support locks (flock); commands "
                 "started in the same instant on it are not kept apart"] if got is None else []
        note = _taken_over(folder, record, break_lock)
        notes += [note] if note else []
        mine = Holder(command, os.getpid(), socket.gethostname(), _now(), _stamp())
        _write(fd, mine)
        return Lock(folder, path, fd, mine, "; ".join(notes) or None)


def _sweep(folder: Path) -> None:
    """Remove the temporary files (files.replacing) under `folder` whose writer died: a process
    of this host that no longer runs, or another host's file untouched for STALE_S. A command
    killed while it wrote leaves one; without this, its re-run would find a file it did not
    write (and prepare would refuse a training folder holding one). Links are not followed."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            found = files.writer(path)
            if found is None:
                continue
            with contextlib.suppress(OSError):
                if (not alive(found.pid) if found.host == files.HOST
                        else time.time() - path.lstat().st_mtime > STALE_S):
                    path.unlink()


def _still_mine(lock: Lock) -> bool:
    """Whether the lock file is still this holder's (another host may have taken it over)."""
    return _same_file(lock.fd, lock.path) and lock.record.same_holder(_read(lock.fd))


def _beat(lock: Lock, stop: threading.Event) -> None:
    """Rewrite the heartbeat every BEAT_S seconds until stopped or no longer the holder; a
    failed write (a network file system's hiccup) is retried at the next beat."""
    while not stop.wait(BEAT_S):
        try:
            if not _still_mine(lock):
                return
            _write(lock.fd, replace(lock.record, beat=_stamp()))
        except OSError:
            continue


def _release(lock: Lock) -> None:
    """Remove the record, then drop the kernel lock (in that order, so a contender that opened
    the old file sees it gone and starts over on a new one); a file another host has taken
    over is left to it."""
    try:
        if _still_mine(lock):
            lock.path.unlink()
    finally:
        os.close(lock.fd)


@contextlib.contextmanager
def briefly(path: Path) -> Iterator[None]:
    """Wait for, then hold, the kernel lock on file `path` (made empty if absent, and kept)
    for a read-modify-write of a file that runs side by side share; on a file system without
    locks the block runs unlocked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(folder: Path, command: str, *, part: str | None = None,
         break_lock: bool = False, sweep: bool = True, has_force: bool = True) -> Iterator[Lock]:
    """Hold the exclusive lock on `folder` (or on one named part of it) while the block runs.

    A held lock refuses at once with a UserError naming the holder; a lock left by a dead
    process on this host, or by another host silent for STALE_S, is taken over (`Lock.note`
    says so); a fresher one from another host is refused unless `break_lock`. A daemon thread
    refreshes the record's heartbeat while the block runs. With `sweep` (a writer), the
    temporary files left under `folder` by writers that died are removed first (`_sweep`); a
    reader (`reading`) changes nothing there. Folders this makes are removed again if the
    block leaves them empty (a refused command leaves nothing behind). A folder that cannot be
    made or written in (no permission, a file on its path) is a one-line files.FolderError.
    `has_force` says whether `command` has a --force the refusal should say does not help.
    """
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        files.make_folder(folder)
        try:
            lock = _acquire(folder, lock_path(folder, part), command, break_lock, has_force)
        except OSError as exc:
            if exc.errno not in files.REFUSED:
                raise
            raise files.folder_error(folder, exc, "write in") from None
        _HELD[lock.fd] = lock.path
        stop = threading.Event()
        beating = threading.Thread(target=_beat, args=(lock, stop), daemon=True,
                                   name=f"medsynth-lock heartbeat {folder}")
        beating.start()
        try:
            if sweep:
                _sweep(folder)
            yield lock
        finally:
            stop.set()
            beating.join()
            del _HELD[lock.fd]
            _release(lock)
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()
