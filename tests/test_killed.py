"""SIGKILL at several points of prepare, train and sample (stand-ins), then a re-run: the final
folder equals an uninterrupted run's. Left out of the comparison, because they legitimately
differ: logs appended per run (train.log, logs/), and in the records the times, process ids,
host, the resumed-from state, the disk's free space and the per-run shard list (run.json,
.medsynth/sample.json)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.data.prepare import JOURNAL_FILE, PrepareOptions, prepare
from medsynth_kohya.data.prepared import STATE_DIR
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.sdscripts import launch

from .fake_gen import make_fake_gen, shard_images, write_run
from .fakes import make_fake_sd
from .processes import finish, kill_when, living_children, snapshot, start, wait_for
from .test_sample import SMALL


def _journalled(out: Path) -> int:
    journal = out / STATE_DIR / JOURNAL_FILE
    return len(journal.read_bytes().splitlines()) if journal.is_file() else 0


def _linked(out: Path) -> int:
    return sum(1 for p in (out / "img").rglob("*") if p.is_file()) if (out / "img").is_dir() else 0


def test_prepare_killed_while_scanning_and_while_linking(isic2020: SyntheticSet,
                                                         tmp_path: Path) -> None:
    out, reference = tmp_path / "out", tmp_path / "reference"
    args: list[object] = ["prepare", isic2020.root, "--out", out, "--workers", 1]
    assert kill_when(start(*args), lambda: _journalled(out) >= 2)
    assert 2 <= _journalled(out) < len(isic2020.frame)
    kill_when(start(*args), lambda: _linked(out) >= 2)  # the layout is quick: may finish first
    last = finish(start(*args))
    assert last.code == 0, last.stderr
    assert "took over the lock" in " ".join(last.stderr.split())
    assert "0 / 12" in last.stdout  # every scan of the killed runs was kept
    prepare(isic2020.root, reference, options=PrepareOptions(), workers=1)
    assert snapshot(out) == snapshot(reference)


def _record(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "run.json").read_text(encoding="utf-8"))
    return data


def _kept(run: Path) -> dict[str, Any]:
    """The run record without what differs from run to run."""
    text = (run / "run.json").read_text(encoding="utf-8").replace(str(run.resolve()), "<RUN>")
    record: dict[str, Any] = json.loads(text)
    for key in ("start", "end", "pid", "host", "resumed_from", "command", "message"):
        record.pop(key, None)
    record.get("plan", {}).pop("free_bytes", None)  # the disk's free space when it started
    return record


def test_train_killed_before_launch_and_while_training(isic2020: SyntheticSet, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_sd(tmp_path, monkeypatch)
    prepared = tmp_path / "prepared"
    prepare(isic2020.root, prepared, options=PrepareOptions(repeats=2), workers=1)
    run, reference = tmp_path / "run-killed", tmp_path / "run-reference"
    args: list[object] = ["train", prepared, "--preset", "cpu-smoke", "--set",
                          "max_train_steps=40", "--sd-scripts", fake.sd_scripts,
                          "--python", sys.executable]

    def trainer() -> int | None:
        return int(fake.recorded()["pid"]) if fake.record.is_file() else None

    def states() -> bool:
        return any((run / "output").glob("*-state/random_states_0.pkl"))  # one complete

    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    assert kill_when(start(*args, "--run-dir", run),  # in the pre-flight checks
                     lambda: (run / "run.json").is_file() and "config" not in _record(run))
    assert _record(run)["status"] == "running" and not (run / "train.log").exists()

    resumed = start(*args, "--run-dir", run, "--resume")  # no saved state: from step 0
    assert kill_when(resumed, states, trainer)  # the CLI and its training
    wait_for(lambda: locks.holder(run) is None, timeout=10,  # SIGKILL lands asynchronously
             what="the killed training to let go of the lock")

    last = finish(start(*args, "--run-dir", run, "--resume"))
    assert last.code == 0, last.stderr
    said = " ".join(last.stderr.split())
    assert "left running by pid" in said and "no longer runs; resuming from melanoma-" in said
    assert _record(run)["status"] == "succeeded" and _record(run)["resumed_from"]

    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    done = finish(start(*args, "--run-dir", reference))
    assert done.code == 0, done.stderr
    # superseded/: the killed launch's saves of steps the resumed one trained again, kept
    skip = ("train.log", "logs/", "run.json", "output/superseded/")
    assert snapshot(run, skip) == snapshot(reference, skip)
    kept = sorted((run / "output" / launch.SUPERSEDED).glob("*"))
    assert all(path.name.startswith("melanoma-run-step") and path.is_file() for path in kept)
    assert _kept(run) == _kept(reference)


def test_sample_killed_while_generating(isic2020: SyntheticSet, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_gen(tmp_path, monkeypatch)
    prepared = tmp_path / "prepared"
    prepare(isic2020.root, prepared, options=PrepareOptions(), workers=1)
    trained = tmp_path / "trained"
    write_run(trained, prepared, tmp_path / "base.safetensors")
    out, reference = tmp_path / "out", tmp_path / "reference"
    args: list[object] = ["sample", "--lora", trained, "--n", 5, *SMALL,
                          "--sd-scripts", fake.sd_scripts, "--python", sys.executable]

    def made() -> int:
        return len(shard_images(out))

    def generator() -> int | None:
        calls = list(fake.records.glob("*.json"))
        return int(calls[0].stem) if calls else None

    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    for count in (1, 3):  # the second run makes the rest, from the third image on
        fake.forget()

        def enough(wanted: int = count) -> bool:
            return made() >= wanted

        assert kill_when(start(*args, "--out", out), enough, generator)
    monkeypatch.delenv("FAKE_GEN_SLOW")
    last = finish(start(*args, "--out", out))
    assert last.code == 0, last.stderr
    assert finish(start(*args, "--out", reference)).code == 0
    skip = ("logs/", ".medsynth/")
    assert snapshot(out, skip) == snapshot(reference, skip)
    for folder in (out, reference):
        state = json.loads((folder / ".medsynth" / "sample.json").read_text(encoding="utf-8"))
        assert state["status"] == "succeeded"
    assert (json.loads((out / ".medsynth" / "sample.json").read_text())["identity"]
            == json.loads((reference / ".medsynth" / "sample.json").read_text())["identity"])


def _living(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return state[0] != "Z"


def _large_source(tmp_path: Path) -> Path:
    """An ISIC 2020-like download whose scan takes long enough to stop prepare in it."""
    from medsynth_kohya.data.synth import make_dataset

    return make_dataset(tmp_path / "isic", 16, seed=9, sizes=((2400, 1600),),
                        melanoma_fraction=1.0).root


def _scanning_workers(process: subprocess.Popen[str]) -> list[int]:
    """The process ids of prepare's two scanning workers, once both have started."""
    workers: list[int] = []

    def scanning() -> bool:
        workers[:] = [pid for pid in living_children(process.pid)
                      if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return len(workers) == 2

    wait_for(scanning, timeout=60, what="prepare's two workers to start")
    return workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_a_killed_prepare_leaves_no_worker_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGKILL or SIGTERM to prepare alone (the OOM killer, `kill PID`), not to its process
    group as Ctrl-C is: its scanning workers end with it instead of waiting forever."""
    process = start("prepare", _large_source(tmp_path), "--out", tmp_path / "out",
                    "--workers", 2)
    workers = _scanning_workers(process)
    os.kill(process.pid, sig)
    process.wait(timeout=30)  # not communicate(): a worker left behind holds its pipes open
    try:
        wait_for(lambda: not any(_living(pid) for pid in workers), timeout=20,
                 what="the workers to end with prepare")
    finally:
        for pid in filter(_living, workers):
            os.kill(pid, signal.SIGKILL)
        process.communicate()



@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_train_stopped_by_sigterm_or_sighup_stops_as_ctrl_c_does(
        isic2020: SyntheticSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sig: signal.Signals) -> None:
    """`kill PID`, a scheduler's cancel or a closed terminal: the training is stopped in turn,
    the run says "interrupted" (not "running"), one line and exit code 130; --resume goes on."""
    fake = make_fake_sd(tmp_path, monkeypatch)
    prepared = tmp_path / "prepared"
    prepare(isic2020.root, prepared, options=PrepareOptions(), workers=1)
    run = tmp_path / "run"
    args: list[object] = ["train", prepared, "--preset", "cpu-smoke", "--set",  # 0.1 s a step:
                          "max_train_steps=400", "--sd-scripts", fake.sd_scripts,  # no end first
                          "--python", sys.executable, "--run-dir", run]
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    process = start(*args)
    wait_for(lambda: fake.record.is_file()
             and any((run / "output").glob("*-state/random_states_0.pkl")),  # one complete
             timeout=60, what="the training to save a state")
    trainer = int(fake.recorded()["pid"])
    os.kill(process.pid, sig)  # to the CLI alone, not its process group
    stopped = finish(process)
    assert stopped.code == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("Error: training interrupted: "
                                                              "stopped; continue from ")
    assert "Traceback" not in stopped.stderr
    assert _record(run)["status"] == "interrupted"
    wait_for(lambda: not _living(trainer), timeout=30, what="the training to stop with it")
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    last = finish(start(*args, "--resume"))
    assert last.code == 0 and _record(run)["status"] == "succeeded", last.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP")
def test_a_closed_terminal_stops_prepare_cleanly(tmp_path: Path) -> None:
    """A hang-up reaches the whole process group: multiprocessing's resource tracker died of
    it, and the stopping prepare printed KeyError tracebacks from it."""
    process = subprocess.Popen([sys.executable, "-m", "medsynth_kohya", "prepare",
                                str(_large_source(tmp_path)), "--out", str(tmp_path / "out"),
                                "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal's
    _scanning_workers(process)
    os.killpg(process.pid, signal.SIGHUP)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "resource_tracker" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: interrupted")
