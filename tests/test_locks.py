"""One writer per folder: the lock itself, and two real CLI processes on one folder."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.push import push
from medsynth_kohya.pipeline.reproduce import ReproduceResult, reproduce
from medsynth_kohya.sampling.sample import SampleOptions, sample

from .conftest import REPO, invoke
from .fake_gen import install_gpus, make_fake_gen, write_run
from .fake_hub import TOKEN, FakeHub
from .fakes import FakeSd, install_fake_isic, make_fake_sd
from .processes import Finished, race, snapshot, wait_for
from .test_hub import make_run
from .test_sample import SMALL


def _dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def _leave_record(folder: Path, pid: int, host: str, command: str = "train") -> None:
    """A lock file as a holder that died leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / locks.LOCK_NAME).write_text(json.dumps(
        {"command": command, "pid": pid, "host": host, "since": "2026-01-01T00:00:00+00:00"}))


def test_a_held_folder_refuses_a_second_holder_and_is_free_again_after(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    with locks.hold(folder, "prepare") as lock:
        assert lock.note is None
        held = locks.holder(folder)
        assert held is not None and held.pid == os.getpid() and held.command == "prepare"
        with pytest.raises(UserError, match=rf"in use by `medsynth-kohya prepare` \(pid "
                           rf"{os.getpid()} on {socket.gethostname()}, since .*--force does "
                           "not override"), locks.hold(folder, "train"):
            pass
        with locks.hold(folder, "sample", part="shard-1-of-2"):  # a named part: its own lock
            pass
    assert locks.holder(folder) is None
    assert not (tmp_path / "a").exists()  # folders it made and left empty are removed


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path: Path) -> None:
    pid = _dead_pid()
    _leave_record(tmp_path, pid, socket.gethostname())
    assert locks.holder(tmp_path) is None
    with locks.hold(tmp_path, "prepare") as lock:
        assert lock.note is not None and "took over" in lock.note and f"pid {pid}" in lock.note
    assert list(tmp_path.iterdir()) == []


def test_a_lock_from_another_host_is_reported_until_break_lock(tmp_path: Path) -> None:
    _leave_record(tmp_path, 4242, "lab-node-7")
    assert locks.holder(tmp_path) is not None
    with pytest.raises(UserError, match=r"locked by .*pid 4242 on lab-node-7.*--break-lock"), \
            locks.hold(tmp_path, "train"):
        pass
    assert locks.read_holder(tmp_path) is not None  # reported, not broken
    with locks.hold(tmp_path, "train", break_lock=True) as lock:
        assert lock.note is not None and "broke (--break-lock)" in lock.note
    assert locks.read_holder(tmp_path) is None


def _beat_ago(seconds: float) -> str:
    """A heartbeat `seconds` ago, as a holder writes it."""
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(
        timespec="seconds")


def _leave_beating(folder: Path, host: str, silent_s: float, command: str = "train") -> None:
    """A lock file of another host's holder whose last heartbeat was `silent_s` ago."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / locks.LOCK_NAME).write_text(json.dumps(
        {"command": command, "pid": 4242, "host": host, "since": "2026-01-01T00:00:00+00:00",
         "beat": _beat_ago(silent_s)}))


def test_a_fresh_record_from_another_host_is_refused_until_break_lock(tmp_path: Path) -> None:
    _leave_beating(tmp_path, "colab-vm-1", silent_s=locks.STALE_S - 120)
    found = locks.holder(tmp_path)
    assert found is not None and found.host == "colab-vm-1"
    assert locks.holder(tmp_path, break_lock=True) is None
    said = (r"by `medsynth-kohya train` \(pid 4242 on colab-vm-1, .*another machine, and its "
            r"last heartbeat was 8 min ago; it is taken over after 10 min without one.*"
            "run this again with --break-lock")
    with pytest.raises(UserError, match="still being written " + said):
        locks.ensure_idle(tmp_path, "sample")
    locks.ensure_idle(tmp_path, "sample", break_lock=True)
    with pytest.raises(UserError, match="is locked " + said), locks.hold(tmp_path, "train"):
        pass
    assert re.search(r"is locked .*colab-vm-1.* taken over after 10 min", locks.report(tmp_path)
                     or "")
    assert locks.read_holder(tmp_path) == found  # refused, left as it was
    with locks.hold(tmp_path, "train", break_lock=True) as lock:
        assert lock.note is not None and "broke (--break-lock)" in lock.note
    assert list(tmp_path.iterdir()) == [] and locks.report(tmp_path) is None


def test_a_stale_record_from_another_host_is_taken_over_with_a_note(tmp_path: Path) -> None:
    _leave_beating(tmp_path, "colab-vm-1", silent_s=locks.STALE_S + 60)
    assert locks.holder(tmp_path) is None
    locks.ensure_idle(tmp_path, "sample")
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note is not None
        assert re.search(r"took over the lock on .* left by `medsynth-kohya train` \(pid "
                         r"4242 on colab-vm-1, since .*\), another machine, silent for 66\d s",
                         lock.note)
        mine = locks.read_holder(tmp_path)
        assert mine is not None and mine.here and mine.pid == os.getpid() and not mine.stale
    assert list(tmp_path.iterdir()) == []


def test_a_stale_record_under_a_held_kernel_lock_is_still_refused(tmp_path: Path) -> None:
    """On NFS with a lock manager the kernel lock reaches across hosts: a holder that holds it
    is alive, whatever its heartbeat says."""
    _leave_beating(tmp_path, "lab-node-7", silent_s=locks.STALE_S * 3)
    fd = os.open(tmp_path / locks.LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert locks.holder(tmp_path) is not None
        with pytest.raises(UserError, match=r"in use by .*lab-node-7"), \
                locks.hold(tmp_path, "train", break_lock=True):
            pass
    finally:
        os.close(fd)


def test_a_holder_keeps_its_heartbeat_fresh_and_stops_when_taken_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    monkeypatch.setattr(locks, "BEAT_S", 0.01)
    with locks.hold(tmp_path, "train") as lock:
        first = locks.read_holder(tmp_path)
        assert first is not None and first.beat is not None
        monkeypatch.setattr(locks, "_clock", lambda: later)
        wait_for(lambda: locks.read_holder(tmp_path) == replace(
            first, beat=later.isoformat(timespec="seconds")), timeout=5, what="a heartbeat")
        _leave_beating(tmp_path, "lab-node-7", silent_s=0)  # another host took it over
        taken = locks.read_holder(tmp_path)
        wait_for(lambda: not any(t.name.startswith("medsynth-lock heartbeat")
                                 for t in threading.enumerate()), timeout=5,
                 what="the heartbeat to stop")
        assert locks.read_holder(tmp_path) == taken and lock.record.same_holder(first)
    assert locks.read_holder(tmp_path) == taken  # release leaves the new holder's file


def test_the_expiry_users_are_told_is_the_one_used(runner: CliRunner) -> None:
    """README, the notebook and `--break-lock`'s help name STALE_S in minutes."""
    said = f"{locks.STALE_S // 60} minutes"
    code, help_text, _ = invoke(runner, "reproduce", "--help")
    assert code == 0
    for text in (help_text, (REPO / "README.md").read_text(encoding="utf-8"),
                 (REPO / "notebooks" / "medsynth_kohya_colab.ipynb").read_text(encoding="utf-8")):
        assert said in " ".join(text.replace("│", " ").split())


def test_without_flock_the_record_alone_keeps_a_live_holder_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with locks.hold(tmp_path, "prepare") as lock:
        assert lock.note is not None and "does not support locks" in lock.note
        with pytest.raises(UserError, match="in use by"), locks.hold(tmp_path, "prepare"):
            pass


def _refused(lost: Finished, winner: Finished, command: str) -> None:
    """The loser's one line names the holder; no traceback, non-zero exit."""
    assert lost.code != 0, lost.stdout + lost.stderr
    assert "Traceback" not in lost.stderr + lost.stdout
    assert f"`medsynth-kohya {command}` (pid {winner.pid} on {socket.gethostname()}" in (
        " ".join(lost.stderr.split()))  # rich wraps the line at a space
    assert winner.code == 0, winner.stdout + winner.stderr


def test_two_prepares_on_one_folder(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out, reference = tmp_path / "out", tmp_path / "reference"
    args: list[object] = ["prepare", isic2020.root, "--out", out, "--workers", 1]
    winner, lost = race(out, args, args)
    _refused(lost, winner, "prepare")
    prepare(isic2020.root, reference, options=PrepareOptions(), workers=1)
    assert snapshot(out) == snapshot(reference)


def test_two_trains_on_one_run_folder_even_with_force(prepared: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake: FakeSd = make_fake_sd(tmp_path, monkeypatch)
    run = tmp_path / "run-race"
    args: list[object] = ["train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                          "--sd-scripts", fake.sd_scripts, "--python", sys.executable]
    winner, lost = race(run, args, [*args, "--force"])
    _refused(lost, winner, "train")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded"
    assert (run / "train.log").read_text(encoding="utf-8").count("# ") == 1  # one launch only
    assert (run / "output" / "melanoma.safetensors").is_file()
    assert not list(run.glob("output.replaced-*"))  # the --force loser moved nothing aside


def test_two_samples_on_one_folder(prepared: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_gen(tmp_path, monkeypatch)
    trained = tmp_path / "trained"
    write_run(trained, prepared, tmp_path / "base.safetensors")
    out = tmp_path / "synthetic"
    args: list[object] = ["sample", "--lora", trained, "--out", out, "--n", 3, *SMALL,
                          "--sd-scripts", fake.sd_scripts, "--python", sys.executable]
    winner, lost = race(out, args, [*args, "--force"])
    _refused(lost, winner, "sample")
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"SYN_{i:07d}.png" for i in range(3)]
    assert len((out / "metadata.csv").read_text(encoding="utf-8").splitlines()) == 4
    assert (out / "logs" / "shard-0.log").read_text(encoding="utf-8").count("\n# ") == 0
    assert len(fake.calls()) == 1  # the refused one started no generator


def test_two_pushes_of_one_run(fake_hub: FakeHub, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "first")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    args: list[object] = ["push", run, "--repo-id", "alice/melanoma-lora", "--endpoint",
                          fake_hub.url]
    winner, lost = race(run, args, args)
    _refused(lost, winner, "push")
    assert "melanoma.safetensors" in fake_hub.repos["alice/melanoma-lora"].files
    pushes = json.loads((run / "run.json").read_text(encoding="utf-8"))["pushes"]
    assert len(pushes) == 1


def test_two_fetches_into_one_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_isic(tmp_path, monkeypatch)
    out = tmp_path / "isic"
    winner, lost = race(out, ["fetch-isic", "--out", out], ["fetch-isic", "--out", out])
    _refused(lost, winner, "fetch-isic")
    assert (out / "metadata.csv").is_file() and len(list(out.glob("*.jpg"))) == 6


def test_a_fetch_finding_another_fetchs_files_names_it_not_a_foreign_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other fetch holds the lock and has begun writing (its mark not yet there): this one
    names it, rather than calling the folder someone else's."""
    from medsynth_kohya.data.fetch import fetch_isic

    install_fake_isic(tmp_path, monkeypatch)
    out = tmp_path / "isic"
    with locks.hold(out, "fetch-isic"):
        (out / ".fetch.json.tmp-1234").write_text("{", encoding="utf-8")
        with pytest.raises(UserError) as refused:
            fetch_isic(out)
    assert f"{out} is in use by `medsynth-kohya fetch-isic` (pid {os.getpid()}" in str(
        refused.value)


def test_two_reproduces_in_one_workdir(isic2020: SyntheticSet, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_gen(tmp_path, monkeypatch)
    install_gpus(fake, tmp_path, monkeypatch, 1)
    (fake.sd_scripts / "vae").mkdir()
    (fake.sd_scripts / "vae" / "sdxl_vae.safetensors").write_bytes(b"vae")
    work = tmp_path / "work"
    args: list[object] = ["reproduce", isic2020.root, "--workdir", work, "--n", 1,
                          "--set", "max_train_steps=2", "--sd-scripts", fake.sd_scripts,
                          "--python", sys.executable]
    winner, lost = race(work, args, args)
    _refused(lost, winner, "reproduce")
    stages = json.loads((work / "reproduce.json").read_text(encoding="utf-8"))["stages"]
    assert {name: stage["status"] for name, stage in stages.items()} == {
        "prepare": "done", "train": "done", "sample": "done"}


def test_reproduce_break_lock_reaches_the_folders_its_stages_lock(
        isic2020: SyntheticSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime that disconnected left fresh records in WORKDIR and the stages' folders."""
    fake = make_fake_gen(tmp_path, monkeypatch)
    install_gpus(fake, tmp_path, monkeypatch, 1)
    work = tmp_path / "work"
    for folder in (work, work / "prepared", work / "run", work / "synthetic"):
        _leave_beating(folder, "colab-vm-1", silent_s=30, command="reproduce")

    def run(break_lock: bool) -> ReproduceResult:
        return reproduce(isic2020.root, work, n=1, overrides=["max_train_steps=2", "vae="],
                         sd_scripts=fake.sd_scripts, python=sys.executable,
                         break_lock=break_lock)

    with pytest.raises(UserError, match=r"colab-vm-1.*--break-lock"):
        run(break_lock=False)
    done = run(break_lock=True)
    assert done.status == "succeeded" and done.lora is not None
    assert any("broke (--break-lock)" in w for w in done.warnings)
    assert not list(work.rglob(".medsynth-lock*"))


def test_sample_push_and_reproduce_refuse_a_run_still_training(
        prepared: Path, tmp_path: Path, isic2020: SyntheticSet) -> None:
    trained = tmp_path / "work" / "run"
    lora = write_run(trained, prepared, tmp_path / "base.safetensors")
    expected = rf"still being written by `medsynth-kohya train` \(pid {os.getpid()}"
    with locks.hold(trained, "train"):
        for given in (trained, lora):
            with pytest.raises(UserError, match=expected):
                sample(given, tmp_path / "synthetic", SampleOptions(n=1))
        with pytest.raises(UserError, match=expected):
            push(trained, "alice/melanoma-lora", dry_run=True)
        with pytest.raises(UserError, match=r"in use by `medsynth-kohya train` \(pid "):
            push(trained, "alice/melanoma-lora", token=TOKEN)
        with pytest.raises(UserError, match=expected):
            reproduce(isic2020.root, tmp_path / "work")
    assert not (tmp_path / "synthetic").exists()


_ORPHAN = """
import os, subprocess, sys
from pathlib import Path
from medsynth_kohya import locks
with locks.hold(Path(sys.argv[1]), "train"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             pass_fds=locks.held_fds(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(child.pid, flush=True)
    os._exit(0)  # dies holding the lock, as a killed command does
"""


def _orphan(folder: Path) -> tuple[int, int]:
    """Lock `folder` as a `train` whose process died, its subprocess (in a session of its
    own, as launch starts training) left holding the lock: the dead pid and the child's."""
    done = subprocess.run([sys.executable, "-c", _ORPHAN, str(folder)], capture_output=True,
                          text=True, check=True)
    child = int(done.stdout)
    record = locks.read_holder(folder)
    assert record is not None
    wait_for(lambda: not locks.alive(record.pid), what="the command to exit")
    return record.pid, child


def _names_the_living(message: str, dead: int, child: int) -> None:
    """A refusal naming the child that holds the lock, the dead command as gone."""
    assert re.search(rf"\bpid {child}\b", message), message
    assert re.search(rf"\(pid {dead} on [^)]*\), which no longer runs", message), message
    assert "\n" not in message


def test_a_subprocess_keeps_the_lock_after_its_command_died(tmp_path: Path) -> None:
    dead, child = _orphan(tmp_path)
    try:
        with pytest.raises(UserError) as busy, locks.hold(tmp_path, "train"):
            pass
        _names_the_living(str(busy.value), dead, child)
    finally:
        os.kill(child, signal.SIGKILL)
    wait_for(lambda: locks.holder(tmp_path) is None, what="the lock to be freed")
    with locks.hold(tmp_path, "train") as lock:
        assert lock.note is not None and "took over" in lock.note


def test_a_lock_left_to_a_subprocess_names_it_wherever_it_refuses(
        tmp_path: Path, isic2020: SyntheticSet) -> None:
    """reproduce killed with its process group: the training it started in a session of its
    own still holds the run's lock. Every refusal and report names that process, never the
    dead command's pid as if it still ran."""
    run = tmp_path / "work" / "run"
    dead, child = _orphan(run)
    try:
        with pytest.raises(UserError) as idle:
            locks.ensure_idle(run, "reproduce")
        _names_the_living(str(idle.value), dead, child)
        with pytest.raises(UserError) as again:
            reproduce(isic2020.root, tmp_path / "work")
        _names_the_living(str(again.value), dead, child)
        said = locks.report(run)
        assert said is not None
        _names_the_living(said, dead, child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_dead_holders_pid_run_by_another_process_is_not_taken_for_the_holder(
        tmp_path: Path) -> None:
    """The dead command's pid given to an unrelated process since: the refusal still names
    the process that holds the lock."""
    _, child = _orphan(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = locks.lock_path(tmp_path)
        record = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**record, "pid": other.pid}), encoding="utf-8")
        said = locks.report(tmp_path)
        assert said is not None
        _names_the_living(said, other.pid, child)
    finally:
        os.kill(child, signal.SIGKILL)
        other.kill()
        other.wait()


def test_a_holder_that_cannot_be_found_is_said_gone_with_how_to_find_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no process's descriptors can be read (another user's), the refusal says the
    command is gone and how to find what holds its lock."""
    dead, child = _orphan(tmp_path)
    monkeypatch.setattr(locks, "_holds", lambda pid, key, probe: None)
    try:
        with pytest.raises(UserError) as busy:
            locks.ensure_idle(tmp_path, "reproduce")
        message = str(busy.value)
        assert re.search(rf"\(pid {dead} on [^)]*\), which no longer runs", message), message
        assert f"fuser -v {locks.lock_path(tmp_path)}" in message
    finally:
        os.kill(child, signal.SIGKILL)
