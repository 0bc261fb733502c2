"""Real CLI processes for the one-writer-per-folder tests: races, SIGKILL, folder snapshots."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import locks


@dataclass(frozen=True)
class Finished:
    """A CLI process that ended: its exit code and output."""

    pid: int
    code: int
    stdout: str
    stderr: str


def start(*args: object, cwd: Path | None = None, group: bool = False) -> subprocess.Popen[str]:
    """`python -m medsynth_kohya ARGS` as its own process, output piped; `group`: in a process
    group of its own, as a shell starts a command (the terminal's Ctrl-C goes to that group)."""
    return subprocess.Popen([sys.executable, "-m", "medsynth_kohya", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "COLUMNS": "200"},
                            start_new_session=group)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> Finished:
    stdout, stderr = process.communicate(timeout=timeout)
    return Finished(process.pid, process.returncode, stdout, stderr)


def wait_for(condition: object, timeout: float = 60, what: str = "") -> None:
    """Poll `condition()` every 2 ms until it is true."""
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def holder_pid(folder: Path) -> int | None:
    found = locks.read_holder(folder)
    return found.pid if found else None


def living_children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, zombies aside (a container's init may not reap)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not: a container's init may not reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1]
    except (OSError, IndexError):
        return False
    return fields.split()[0] != "Z"


def race(folder: Path, first: list[object], second: list[object]) -> tuple[Finished, Finished]:
    """Start both commands together; once one holds `folder`'s lock, pause it until the other
    has ended (so they overlap whatever the machine's speed). Returns (holder, other)."""
    processes = [start(*first), start(*second)]
    by_pid = {p.pid: p for p in processes}

    def locked() -> bool:
        if all(p.poll() is not None for p in processes):
            raise AssertionError("both ended without the lock being seen: " + " | ".join(
                finish(p).stderr for p in processes))
        return holder_pid(folder) in by_pid

    wait_for(locked, what=f"a lock on {folder}")
    winner = by_pid[holder_pid(folder) or 0]
    other = next(p for p in processes if p is not winner)
    os.kill(winner.pid, signal.SIGSTOP)
    try:
        lost = finish(other)
    finally:
        os.kill(winner.pid, signal.SIGCONT)
    return finish(winner), lost


def kill_when(process: subprocess.Popen[str], condition: Callable[[], bool],
              children: Callable[[], int | None] = lambda: None) -> bool:
    """SIGKILL `process` (then the process group of `children()`, if it names a pid) as soon
    as `condition()` holds; False when the process ended first. The command goes first: killed
    after its child, a loaded machine may let it see the child end and record that, which a
    command killed with its child never does."""
    while process.poll() is None:
        if condition():
            child = children()
            os.kill(process.pid, signal.SIGKILL)
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(child), signal.SIGKILL)
            process.communicate()
            return True
        time.sleep(0.002)
    process.communicate()
    return False


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` by relative path, its own path in the content written as
    <FOLDER>; paths starting with one of `skip` are left out. prepare.json's `written` digests
    are left out too: they are of files that name their folder."""
    tree: dict[str, bytes] = {}
    marks = [(str(folder.resolve()).encode(), b"<FOLDER>"), (str(folder).encode(), b"<FOLDER>")]
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_dir() or name.startswith(skip):
            continue
        data = path.read_bytes()
        if name == ".medsynth/prepare.json":
            state = json.loads(data)
            state.pop("written", None)
            data = json.dumps(state, sort_keys=True).encode()
        for mark, text in marks:
            data = data.replace(mark, text)
        tree[name] = data
    return tree
