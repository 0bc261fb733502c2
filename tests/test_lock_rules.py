"""The rules of the one-writer lock (locks.py), called directly: records and heartbeats, who
holds a folder, the one-line refusals, readers' marks, the short lock and the sweep of a dead
writer's temporary files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from medsynth_kohya import files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.locks import Holder

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
OTHER = "lab-node-7"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def _at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The locks' clock stopped at NOW."""
    monkeypatch.setattr(locks, "_clock", lambda: NOW)


def _record(folder: Path, holder: Holder, part: str | None = None) -> Path:
    path = locks.lock_path(folder, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder.__dict__), encoding="utf-8")
    return path


def _no_flock(monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOLCK) -> None:
    def refuse(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_a_holder_is_described_in_one_phrase() -> None:
    holder = Holder("train", 12, "gpu-1", "2026-03-01T12:00:00+00:00")
    assert holder.describe() == ("`medsynth-kohya train` (pid 12 on gpu-1, since "
                                 "2026-03-01T12:00:00+00:00)")


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize(("beat", "silent", "stale"), [
    (_at(601), 601.0, True), (_at(600), 600.0, False), (_at(0), 0.0, False),
    ((NOW + timedelta(seconds=30)).isoformat(), 0.0, False),
    ("2026-03-01T11:00:00", None, False), ("yesterday", None, False), (None, None, False)])
def test_silence_is_measured_from_the_last_utc_heartbeat(beat: str | None, silent: float | None,
                                                         stale: bool) -> None:
    holder = Holder("train", 12, OTHER, "t0", beat)
    assert holder.silent_s() == silent
    assert holder.stale is stale
    here = Holder("train", 12, socket.gethostname(), "t0", beat)
    assert here.here and not here.stale and not holder.here


def test_the_same_holder_whatever_its_heartbeat() -> None:
    holder = Holder("train", 12, OTHER, "t0", "b1")
    assert holder.same_holder(Holder("train", 12, OTHER, "t0", "b2"))
    assert holder.same_holder(Holder("train", 12, OTHER, "t0"))
    assert not holder.same_holder(Holder("train", 13, OTHER, "t0", "b1"))
    assert not holder.same_holder(Holder("sample", 12, OTHER, "t0", "b1"))
    assert not holder.same_holder(None)


def test_lock_files_by_name(tmp_path: Path) -> None:
    assert locks.lock_path(tmp_path) == tmp_path / ".medsynth-lock"
    assert locks.lock_path(tmp_path, "shard-1-of-2") == tmp_path / ".medsynth-lock.shard-1-of-2"
    for name in (".medsynth-lock", ".medsynth-lock.reader-x", "data.csv", ".medsynth-lockx",
                 "x.medsynth-lock", ".medsynth"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert locks.is_lock_file(tmp_path / ".medsynth-lock.reader-x")
    assert sorted(p.name for p in locks.foreign_entries(tmp_path)) == [
        ".medsynth", ".medsynth-lockx", "data.csv", "x.medsynth-lock"]


def test_a_process_is_alive_while_it_runs() -> None:
    assert locks.alive(os.getpid()) and locks.alive(1)
    assert not locks.alive(_dead_pid())
    assert not locks.alive(0)  # no process is 0: `kill 0` signals this one's group


@pytest.mark.parametrize(("text", "holder"), [
    ('{"command": "train", "pid": "12", "host": "h", "since": "t0", "beat": "b"}',
     Holder("train", 12, "h", "t0", "b")),
    ('{"command": 5, "pid": 12, "host": "h", "since": "t0", "beat": 7, "more": 1}',
     Holder("5", 12, "h", "t0", None)),
    ('{"command": "train", "pid": 12, "host": "h"}', None),
    ('{"command": "train", "pid": "twelve", "host": "h", "since": "t0"}', None),
    ('{"command": "train", "pid": null, "host": "h", "since": "t0"}', None),
    ('["train", 12]', None), ("", None), ("{", None)])
def test_a_record_is_read_or_is_none(tmp_path: Path, text: str, holder: Holder | None) -> None:
    tmp_path.joinpath(locks.LOCK_NAME).write_text(text, encoding="utf-8")
    assert locks.read_holder(tmp_path) == holder
    assert locks.read_holder(tmp_path, "shard-1-of-2") is None


def test_a_shorter_record_leaves_nothing_of_the_longer_one(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        locks._write(fd, Holder("reproduce", 123456, "a-long-host-name", "t0", "b"))
        locks._write(fd, Holder("train", 1, "h", "t0"))
        assert locks._read(fd) == Holder("train", 1, "h", "t0")
        assert json.loads((tmp_path / "lock").read_text()) == {
            "command": "train", "pid": 1, "host": "h", "since": "t0", "beat": None}
    finally:
        os.close(fd)


@pytest.mark.usefixtures("clock")
def test_who_holds_a_folder_by_kernel_lock_record_and_heartbeat(tmp_path: Path) -> None:
    assert locks.holder(tmp_path) is None  # no lock file
    here, dead = socket.gethostname(), _dead_pid()
    _record(tmp_path, Holder("train", dead, here, "t0"))
    assert locks.holder(tmp_path) is None  # a dead holder's record under a free lock
    _record(tmp_path, Holder("train", os.getpid(), here, "t0"))
    assert locks.holder(tmp_path) is None  # free kernel lock: its holder released or died
    fresh = _record(tmp_path, Holder("train", 4, OTHER, "t0", _at(60)))
    assert locks.holder(tmp_path) == Holder("train", 4, OTHER, "t0", _at(60))
    assert locks.holder(tmp_path, break_lock=True) is None
    _record(tmp_path, Holder("train", 4, OTHER, "t0", _at(700)))
    assert locks.holder(tmp_path) is None  # stale
    _record(tmp_path, Holder("train", 4, OTHER, "t0"))
    assert locks.holder(tmp_path) == Holder("train", 4, OTHER, "t0")  # never stale
    fresh.write_text("", encoding="utf-8")
    fd = os.open(fresh, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert locks.holder(tmp_path) == Holder("(unknown)", 0, "?", "?")
        assert locks.report(tmp_path) == (f"{tmp_path} is in use by `medsynth-kohya (unknown)` "
                                          "(pid 0 on ?, since ?)")
    finally:
        os.close(fd)


def test_without_flock_a_live_holder_here_is_told_by_its_pid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_flock(monkeypatch)
    here = socket.gethostname()
    _record(tmp_path, Holder("train", os.getpid(), here, "t0"))
    assert locks.holder(tmp_path) == Holder("train", os.getpid(), here, "t0")
    _record(tmp_path, Holder("train", _dead_pid(), here, "t0"))
    assert locks.holder(tmp_path) is None
    _no_flock(monkeypatch, errno.EBADF)  # any other failure is raised
    with pytest.raises(OSError):
        locks.holder(tmp_path)


@pytest.mark.usefixtures("clock")
def test_reports_name_the_holder_and_when_another_hosts_record_expires(tmp_path: Path) -> None:
    assert locks.report(tmp_path) is None
    _record(tmp_path, Holder("train", 4, OTHER, "t0", _at(150)))
    assert locks.report(tmp_path) == (
        f"{tmp_path} is locked by `medsynth-kohya train` (pid 4 on {OTHER}, since t0), another "
        "machine, and its last heartbeat was 2 min ago; it is taken over after 10 min without "
        "one")
    _record(tmp_path, Holder("train", 4, OTHER, "t0", _at(90)))  # 1.5 min, rounded to even
    assert "its last heartbeat was 2 min ago;" in (locks.report(tmp_path) or "")
    _record(tmp_path, Holder("train", 4, OTHER, "t0"))
    assert locks.report(tmp_path) == (
        f"{tmp_path} is locked by `medsynth-kohya train` (pid 4 on {OTHER}, since t0), another "
        "machine, and it records no heartbeat")
    _record(tmp_path, Holder("train", 4, OTHER, "t0", (NOW + timedelta(minutes=5)).isoformat()))
    assert "its last heartbeat is 5 min ahead of this machine's clock" in (
        locks.report(tmp_path) or "")  # a fast clock
    with locks.hold(tmp_path / "mine", "sample") as lock:
        assert locks.report(tmp_path / "mine") == (
            f"{tmp_path / 'mine'} is in use by {lock.record.describe()}")


def test_a_heartbeat_from_the_future_is_timed_from_the_lock_files_last_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another machine's clock ahead (or a copied, touched lock file): refused, saying so,
    then taken over STALE_S after the file last changed, as the refusal promised."""
    now = [datetime.now(timezone.utc)]
    monkeypatch.setattr(locks, "_clock", lambda: now[0])
    ahead = Holder("train", 4242, OTHER, "t0", (now[0] + timedelta(hours=1)).isoformat())
    _record(tmp_path, ahead)
    with pytest.raises(UserError) as caught, locks.hold(tmp_path, "sample"):
        pass
    assert str(caught.value) == (
        f"{tmp_path} is locked by {ahead.describe()}, another machine, and its last heartbeat "
        "is 60 min ahead of this machine's clock (that machine's clock is ahead, or the file "
        "was copied), so it is timed from the lock file's last change, 0 min ago; it is taken "
        "over after 10 min without one: if that machine no longer runs it, run this again with "
        "--break-lock")
    now[0] += timedelta(seconds=locks.STALE_S + 60)
    with locks.hold(tmp_path, "sample") as lock:
        assert lock.note is not None and re.fullmatch(
            rf"took over the lock on {re.escape(str(tmp_path))} left by "
            rf"{re.escape(ahead.describe())}, another machine, silent for 66\d s \(over 600 s\)",
            lock.note)
    past = Holder("train", 1, OTHER, "t0", ahead.beat, changed=now[0].timestamp() - 30)
    assert past.ahead_s() == pytest.approx(3600 - locks.STALE_S - 60, abs=1)
    assert past.silent_s() == pytest.approx(30, abs=1) and not past.stale


@pytest.mark.usefixtures("clock")
def test_ensure_idle_refuses_only_the_writers_it_names(tmp_path: Path) -> None:
    locks.ensure_idle(tmp_path, "sample")
    with locks.hold(tmp_path, "train") as lock:
        locks.ensure_idle(tmp_path, "push", writers=("sample",))
        with pytest.raises(UserError) as caught:
            locks.ensure_idle(tmp_path, "sample")
        assert str(caught.value) == (
            f"{tmp_path} is still being written by {lock.record.describe()}; `sample` needs it "
            "finished: wait for it to end, then run this again")
    other = tmp_path / "other"
    _record(other, Holder("sample", 4, OTHER, "t0", _at(120)))
    locks.ensure_idle(other, "push")  # not a writer of what push reads
    with pytest.raises(UserError) as caught:
        locks.ensure_idle(other, "push", writers=("sample",))
    assert str(caught.value) == (
        f"{other} is still being written by `medsynth-kohya sample` (pid 4 on {OTHER}, since "
        "t0), another machine, and its last heartbeat was 2 min ago; it is taken over after 10 "
        "min without one; `push` needs it finished: wait for it to end; if that machine no "
        "longer runs it, run this again with --break-lock")
    locks.ensure_idle(other, "push", writers=("sample",), break_lock=True)


def test_an_unreadable_holder_counts_as_any_writer(tmp_path: Path) -> None:
    path = locks.lock_path(tmp_path)
    path.write_text("", encoding="utf-8")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UserError, match=r"still being written by `medsynth-kohya \(unknown\)"
                                            r"` \(pid 0 on \?, since \?\); `push` needs"):
            locks.ensure_idle(tmp_path, "push", writers=("sample",))
    finally:
        os.close(fd)


@pytest.mark.usefixtures("clock")
def test_readers_are_the_live_marks_and_dead_ones_are_cleared(tmp_path: Path) -> None:
    assert locks.readers(tmp_path / "missing") == []
    here = socket.gethostname()
    _record(tmp_path, Holder("train", _dead_pid(), here, "t0"), "reader-dead")
    _record(tmp_path, Holder("evaluate", 4, OTHER, "t0", _at(60)), "reader-b")
    _record(tmp_path, Holder("train", 5, OTHER, "t0", _at(60)), "reader-a")
    _record(tmp_path, Holder("push", 6, OTHER, "t0", _at(700)), "reader-stale")
    _record(tmp_path, Holder("sample", 7, OTHER, "t0", _at(60)), "shard-1-of-2")
    _record(tmp_path, Holder("sample", 8, OTHER, "t0", _at(60)), "xreader-c")
    assert [r.pid for r in locks.readers(tmp_path)] == [5, 4]
    assert len(list(tmp_path.iterdir())) == 6  # nothing cleared unless asked
    assert locks.readers(tmp_path, break_lock=True, clear=True) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".medsynth-lock.shard-1-of-2", ".medsynth-lock.xreader-c"]


@pytest.mark.usefixtures("clock")
def test_ensure_unread_names_the_first_reader_and_counts_the_others(tmp_path: Path) -> None:
    locks.ensure_unread(tmp_path, "prepare")
    _record(tmp_path, Holder("train", 5, OTHER, "t0", _at(60)), "reader-a")
    said = (f"{tmp_path} is being read by `medsynth-kohya train` (pid 5 on {OTHER}, since t0), "
            "another machine, and its last heartbeat was 1 min ago; it is taken over after 10 "
            "min without one{more}; `prepare` would change the files it reads: wait for it to "
            "end, or write into another folder (--force does not override a running command); "
            "if that machine no longer runs it, run this again with --break-lock")
    with pytest.raises(UserError) as caught:
        locks.ensure_unread(tmp_path, "prepare")
    assert str(caught.value) == said.format(more="")
    for name in ("b", "c"):
        _record(tmp_path, Holder("evaluate", 6, OTHER, "t0", _at(60)), f"reader-{name}")
    with pytest.raises(UserError) as caught:
        locks.ensure_unread(tmp_path, "prepare")
    assert str(caught.value) == said.format(more=" (and 2 more)")
    assert locks.ensure_unread(tmp_path, "prepare", break_lock=True) == [
        f"broke (--break-lock) the reading mark on {tmp_path} of `medsynth-kohya {command}` "
        f"(pid {pid} on {OTHER}, since t0)" for command, pid in
        (("train", 5), ("evaluate", 6), ("evaluate", 6))]
    assert locks.foreign_entries(tmp_path) == [] and list(tmp_path.iterdir()) == []
    (tmp_path / "x").mkdir()
    with locks.reading(tmp_path / "x", "evaluate"):  # one reader here: --break-lock won't pass
        _record(tmp_path / "x", Holder("train", 5, OTHER, "t0", _at(60)), "reader-a")
        with pytest.raises(UserError) as caught:
            locks.ensure_unread(tmp_path / "x", "prepare")
        assert "(and 1 more)" in str(caught.value) and "--break-lock" not in str(caught.value)


@pytest.mark.usefixtures("clock")
def test_the_notes_of_reading_marks_removed(tmp_path: Path) -> None:
    dead = Holder("train", _dead_pid(), socket.gethostname(), "t0")
    stale = Holder("evaluate", 4, OTHER, "t0", _at(700))
    _record(tmp_path, dead, "reader-a")
    _record(tmp_path, stale, "reader-b")
    assert locks.ensure_unread(tmp_path, "prepare") == [
        f"removed the reading mark on {tmp_path} left by {dead.describe()}, which no longer "
        "runs",
        f"removed the reading mark on {tmp_path} left by {stale.describe()}, another machine, "
        "silent for 700 s (over 600 s)"]
    assert list(tmp_path.iterdir()) == []


def test_reading_marks_the_folder_and_clears_dead_marks(tmp_path: Path) -> None:
    _record(tmp_path, Holder("train", _dead_pid(), socket.gethostname(), "t0"), "reader-old")
    with locks.reading(tmp_path, "train"):
        [mark] = list(tmp_path.iterdir())
        assert mark.name.startswith(f".medsynth-lock.reader-{socket.gethostname()}-"
                                    f"{os.getpid()}-")
        [reader] = locks.readers(tmp_path)
        assert reader.command == "train" and reader.pid == os.getpid()
        assert locks.holder(tmp_path) is None  # a reader leaves the folder's own lock free
    assert list(tmp_path.iterdir()) == []
    with locks.reading(tmp_path / "missing", "train"):
        assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("", encoding="utf-8")
    with locks.reading(tmp_path / "file", "train"):  # not a folder: read unmarked
        pass


def test_the_clock_is_utc_and_a_heartbeat_keeps_its_length(monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    assert locks._clock().utcoffset() == timedelta(0)
    stamp = locks._stamp()
    assert len(stamp) == len("2026-03-01T12:00:00+00:00") and stamp.endswith("+00:00")
    assert abs(datetime.fromisoformat(stamp) - datetime.now(timezone.utc)) < timedelta(
        seconds=5)
    monkeypatch.setattr(locks, "_clock", lambda: NOW)
    assert locks._stamp() == "2026-03-01T12:00:00+00:00"
    assert datetime.fromisoformat(locks._now()) == NOW


def test_a_busy_lock_is_refused_naming_its_holder(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(locks._busy(tmp_path, None, "")) == (
        f"{tmp_path} is in use by another medsynth-kohya command (its record is unreadable); "
        "wait for it to finish or stop it, then run this again")
    dead = Holder("train", _dead_pid(), socket.gethostname(), "t0")
    assert str(locks._busy(tmp_path, dead, " (hint)")) == (
        f"{tmp_path} is in use by {dead.describe()}; wait for it to finish or stop it, then "
        "run this again (hint)")
    left = replace(dead, left="pid 7 (`python train_network.py`), left running by it")
    assert str(locks._busy(tmp_path, left, "")) == (
        f"{tmp_path} is in use by pid 7 (`python train_network.py`), left running by it; wait "
        "for it to finish or stop it, then run this again")
    away = Holder("train", _dead_pid(), OTHER, "t0")
    assert f"is in use by {away.describe()}; wait" in str(locks._busy(tmp_path, away, ""))


def test_a_lock_whose_record_never_comes_is_reported_after_a_short_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = locks.lock_path(tmp_path)
    path.write_text("", encoding="utf-8")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(UserError, match=r"its record is unreadable.*--force does not "
                                            r"override a running command"), \
                locks.hold(tmp_path, "train"):
            pass
        assert locks.RETRY_S <= time.monotonic() - started < locks.RETRY_S + 2
        locks._write(fd, Holder("train", _dead_pid(), socket.gethostname(), "t0"))
        started = time.monotonic()
        with pytest.raises(UserError, match=rf"in use by pid {os.getpid()} \(`.*`\), left "
                                            r"running by `medsynth-kohya train` \(pid \d+ on .*"
                                            r"\), which no longer runs; wait"), \
                locks.hold(tmp_path, "sample"):
            pass
        assert time.monotonic() - started >= locks.RETRY_S
        locks._write(fd, Holder("train", 4, OTHER, "t0"))
        started = time.monotonic()
        with pytest.raises(UserError, match=f"in use by .*pid 4 on {OTHER}"), \
                locks.hold(tmp_path, "sample", break_lock=True):
            pass
        assert time.monotonic() - started < locks.RETRY_S  # settled: refused at once
    finally:
        os.close(fd)


@pytest.mark.usefixtures("clock")
def test_the_notes_of_a_lock_taken_over(tmp_path: Path) -> None:
    dead = Holder("train", _dead_pid(), socket.gethostname(), "t0")
    _record(tmp_path, dead)
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note == (f"took over the lock on {tmp_path} left by {dead.describe()}, "
                             "which no longer runs")
        assert lock.record == Holder("train", os.getpid(), socket.gethostname(),
                                     locks._now(), "2026-03-01T12:00:00+00:00")
        assert locks.read_holder(tmp_path) == lock.record
    stale = Holder("train", 4, OTHER, "t0", _at(700))
    _record(tmp_path, stale)
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note == (f"took over the lock on {tmp_path} left by {stale.describe()}, "
                             "another machine, silent for 700 s (over 600 s)")
    _record(tmp_path, stale)
    with locks.hold(tmp_path, "train", break_lock=True) as lock:
        assert lock.note == (f"broke (--break-lock) the lock on {tmp_path} of "
                             f"{stale.describe()}")
    fresh = Holder("train", 4, OTHER, "t0", _at(60))
    _record(tmp_path, fresh)
    with pytest.raises(UserError) as caught, locks.hold(tmp_path, "train"):
        pass
    assert str(caught.value) == (
        f"{tmp_path} is locked by {fresh.describe()}, another machine, and its last heartbeat "
        "was 1 min ago; it is taken over after 10 min without one: if that machine no longer "
        "runs it, run this again with --break-lock")


def test_without_flock_a_dead_holder_is_taken_over_and_a_live_one_broken_only_by_force(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_flock(monkeypatch)
    here = socket.gethostname()
    unsupported = (f"{tmp_path}: this file system does not support locks (flock); commands "
                   "started in the same instant on it are not kept apart")
    _record(tmp_path, Holder("train", _dead_pid(), here, "t0"))
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note is not None and lock.note.startswith(unsupported + "; took over")
    live = Holder("train", os.getpid(), here, "t0")
    _record(tmp_path, live)
    with pytest.raises(UserError, match=r"in use by `medsynth-kohya train`"), \
            locks.hold(tmp_path, "train"):
        pass
    with locks.hold(tmp_path, "train", break_lock=True) as lock:
        assert lock.note == f"{unsupported}; broke (--break-lock) the lock on {tmp_path} of " \
                            f"{live.describe()}"
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note == unsupported
    _no_flock(monkeypatch, errno.EBADF)
    with pytest.raises(OSError), locks.hold(tmp_path, "train"):
        pass


def test_a_held_lock_is_handed_to_subprocesses_until_it_is_released(tmp_path: Path) -> None:
    with locks.hold(tmp_path / "a", "train") as first, \
            locks.hold(tmp_path / "a", "sample", part="shard-1-of-2") as second:
        assert set(locks.held_fds()) >= {first.fd, second.fd}
        assert first.path == tmp_path / "a" / ".medsynth-lock" and first.folder == tmp_path / "a"
    assert first.fd not in locks.held_fds() and second.fd not in locks.held_fds()
    assert not (tmp_path / "a").exists()


def test_a_lock_taken_over_by_another_host_is_left_to_it_on_release(tmp_path: Path) -> None:
    with locks.hold(tmp_path, "train"):
        _record(tmp_path, Holder("train", 4, OTHER, "t0", "b"))
    assert locks.read_holder(tmp_path) == Holder("train", 4, OTHER, "t0", "b")
    with locks.hold(tmp_path, "train", break_lock=True):
        locks.lock_path(tmp_path).unlink()
        locks.lock_path(tmp_path).write_text("{}", encoding="utf-8")  # another file by now
    assert locks.lock_path(tmp_path).read_text(encoding="utf-8") == "{}"


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(files.FolderError, match=r"cannot create .*: .*file is a file"), \
            locks.hold(tmp_path / "file" / "out", "train"):
        pass
    assert (tmp_path / "file").is_file()


def test_a_writer_that_cannot_write_in_its_folder_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = os.open

    def read_only(path: object, flags: int, *args: object) -> int:
        if str(path).endswith(locks.LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system")
        return opened(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(files.FolderError) as caught, locks.hold(tmp_path, "train"):
        pass
    assert str(caught.value) == (f"cannot write in {tmp_path}: Read-only file system; choose "
                                 "another folder")
    monkeypatch.setattr(os, "open", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(OSError, match="io"), locks.hold(tmp_path, "train"):
        pass


def test_a_dead_writers_temporary_files_are_swept(tmp_path: Path) -> None:
    here, there = files.HOST, "0" * 6 if files.HOST != "0" * 6 else "1" * 6
    nested = tmp_path / "img" / "3_melanoma"
    nested.mkdir(parents=True)
    dead = nested / f".a.txt.{here}-{_dead_pid()}-0123abcd.tmp.txt"
    live = tmp_path / f".b.txt.{here}-{os.getpid()}-0123abcd.tmp.txt"
    old = tmp_path / f".c.txt.{there}-1-0123abcd.tmp"
    young = tmp_path / f".d.txt.{there}-1-0123abcd.tmp"
    plain = tmp_path / "e.txt"
    for path in (dead, live, old, young, plain):
        path.write_text("x", encoding="utf-8")
    stale = time.time() - locks.STALE_S - 60
    os.utime(old, (stale, stale))
    young_time = time.time() - locks.STALE_S + 60
    os.utime(young, (young_time, young_time))
    with locks.reading(tmp_path, "train"):  # a reader sweeps nothing
        assert dead.exists() and old.exists()
    with locks.hold(tmp_path, "prepare"):
        assert sorted(p.name for p in locks.foreign_entries(tmp_path)) == sorted(
            ["img", live.name, young.name, plain.name])
        assert not dead.exists()
    with locks.hold(tmp_path, "prepare", sweep=False):
        pass


def test_briefly_holds_the_kernel_lock_on_a_file_for_the_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sample.json.lock"
    with locks.briefly(path):
        assert path.is_file()
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)
    _no_flock(monkeypatch)
    with locks.briefly(path):  # a file system without locks: the block runs unlocked
        pass
    _no_flock(monkeypatch, errno.EBADF)
    with pytest.raises(OSError), locks.briefly(path):
        pass
