"""Which machines machine 0 counts as ready for its go, and what it refuses for all of them,
through `train` itself (machines of rank > 0 run in threads of this process)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import Machines
from medsynth_kohya.training import nodes
from medsynth_kohya.training.train import Cluster, train

from .conftest import REPO
from .fakes import FakeSd

A100 = Gpu("NVIDIA A100-SXM4-80GB", 81920, (8, 0))
HOST = socket.gethostname()


def _leader(prepared: Path, run: Path, fake: FakeSd, machines: Machines,
            wait_s: float) -> Any:
    return train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake.sd_scripts,
                 python=sys.executable, detect=lambda: [],
                 cluster=Cluster(machines, wait_s=wait_s))


def test_a_machine_still_running_an_earlier_launch_is_not_waiting_for_this_go(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """Machine 0 started again while machine 1 still runs the launch of an earlier go: that
    machine follows no new go, so machine 0 waits for it and names it, instead of launching
    alone and hanging at accelerate's rendezvous."""
    run = tmp_path / "run"
    with locks.hold(run, "train", part=nodes.part(1)):
        for status in ("running", "failed", None):
            nodes.write_report(run, 1, [A100], **({} if status is None else
                                                  {"status": status}))
            assert nodes.present(run, 2) == []
        with pytest.raises(UserError, match=r"^machine 1 of 2 did not report in "):
            _leader(prepared, run, fake_sd, Machines(2, 0, "127.0.0.1"), 0.6)
        assert not fake_sd.record.exists()  # nothing launched
        waiting = nodes.write_report(run, 1, [A100], status="waiting")
        assert nodes.present(run, 2) == [waiting]
    assert json.loads((run / "nodes" / "launch.json").read_text())["status"] == "refused"


@pytest.mark.parametrize(("follower", "said"), [
    (Machines(3, 1, "127.0.0.1"), "--num-machines 3 --main-process-port 29500"),
    (Machines(2, 1, "127.0.0.1", 29600), "--num-machines 2 --main-process-port 29600")])
def test_machines_started_with_another_count_or_port_are_refused_for_all(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, follower: Machines,
        said: str) -> None:
    """accelerate would start machine 0 and machine 1 and both would wait for a rendezvous
    that never completes: machine 0 refuses the run for all, naming the values that differ."""
    run = tmp_path / "run"
    errors: list[str] = []

    def follow() -> None:
        try:
            train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                  python=sys.executable, detect=lambda: [],
                  cluster=Cluster(follower, wait_s=60))
        except UserError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        with pytest.raises(UserError) as refused:
            _leader(prepared, run, fake_sd, Machines(2, 0, "127.0.0.1"), 60)
    finally:
        thread.join(60)
    line = (f"machine 1 ({HOST}) was started with {said}, machine 0 with --num-machines 2 "
            "--main-process-port 29500: start every machine with the same values")
    assert str(refused.value) == line
    assert errors == [f"machine 0 refused the run: {line}"]
    assert not fake_sd.record.exists()
    report = json.loads((run / "nodes" / "machine-1.json").read_text())
    assert (report["num_machines"], report["main_process_port"]) == (follower.count,
                                                                      follower.main_port)


def test_machines_started_alike_get_the_go(prepared: Path, fake_sd: FakeSd,
                                           tmp_path: Path) -> None:
    run = tmp_path / "run"
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(train(
        prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
        python=sys.executable, detect=lambda: [],
        cluster=Cluster(Machines(2, 1, "127.0.0.1"), wait_s=60))))
    thread.start()
    try:
        leader = _leader(prepared, run, fake_sd, Machines(2, 0, "127.0.0.1"), 60)
    finally:
        thread.join(120)
    assert leader.status == "succeeded", leader.message
    assert [result.status for result in results] == ["succeeded"]
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert [node["rank"] for node in record["nodes"]] == [0, 1]
    # the go names the process of machine 0 that gave it: no old decision passes for new
    decision = json.loads((run / "nodes" / "launch.json").read_text())
    assert decision["status"] == "go" and sorted(decision["leader"]) == ["host", "pid", "time"]
    assert (decision["leader"]["host"], decision["leader"]["pid"]) == (HOST, os.getpid())


def test_machine_zero_names_only_the_machines_that_did_not_report(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with locks.hold(run, "train", part=nodes.part(2)):
        nodes.write_report(run, 2, [A100], status="waiting")
        with pytest.raises(UserError) as refused:
            _leader(prepared, run, fake_sd, Machines(4, 0, "127.0.0.1"), 0.6)
    assert str(refused.value) == (
        f"machines 1, 3 of 4 did not report in {run / 'nodes'} within 0.6 s: start `train` "
        "with the same options and --machine-rank there, on the same run folder (a shared "
        "file system)")


def test_a_machine_that_gets_no_go_says_where_to_start_machine_zero(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(UserError) as refused:
        train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
              python=sys.executable, detect=lambda: [],
              cluster=Cluster(Machines(2, 1, "127.0.0.1"), wait_s=0.5))
    assert str(refused.value) == (
        f"machine 0 did not start the run in {run} within 0.5 s: start `train` with the same "
        "options and --machine-rank 0 on the machine at --main-process-ip")



def test_the_slurm_script_runs_train_with_each_machine_s_rank(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's tasks run from the folder the script was written in, with the run's options
    as given: a preset file and the run folder by absolute path, a preset name as it is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    shutil.copy(REPO / "configs" / "cpu-smoke.toml", tmp_path / "presets" / "mine.toml")
    cluster = Cluster(Machines(3, main_port=29601), slurm=("partition=gpu",))
    result = train(prepared, "presets/mine.toml", overrides=["max_train_steps=3"],
                   run_dir="runs/r1", sd_scripts=fake_sd.sd_scripts, python="python3",
                   force=True, dry_run=True, detect=lambda: [], cluster=cluster)
    assert result.job is not None and result.job.path is None
    lines = result.job.text.splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = dict(line.removeprefix("#SBATCH --").split("=", 1)
                      for line in lines if line.startswith("#SBATCH "))
    run = tmp_path / "runs" / "r1"
    assert directives == {
        "job-name": "medsynth-train-r1", "nodes": "3", "ntasks-per-node": "1",
        "chdir": str(tmp_path), "output": f"{run}/slurm-%j.out",
        "partition": "gpu"}
    srun = shlex.split(lines[-1])
    assert srun[:5] == ["srun", "--nodes=3", "--ntasks-per-node=1", "bash", "-c"]
    assert shlex.split(srun[5]) == ["exec", *launch.own_command(
        "train", str(prepared.resolve()), "--preset", str(tmp_path / "presets" / "mine.toml"),
        "--set", "max_train_steps=3", "--run-dir", str(run), "--num-machines", "3",
        "--machine-rank", "$SLURM_NODEID", "--main-process-ip", "$MEDSYNTH_MAIN_IP",
        "--main-process-port", "29601", "--sd-scripts",
        str(fake_sd.sd_scripts.resolve()), "--python", "python3", "--force")]
    named = train(prepared, "cpu-smoke", run_dir="runs/r2", dry_run=True, detect=lambda: [],
                  cluster=Cluster(Machines(2), slurm=()))
    assert named.job is not None
    words = shlex.split(shlex.split(named.job.text.splitlines()[-1])[-1])
    assert words[words.index("--preset") + 1] == "cpu-smoke"
    assert "--sd-scripts" not in words and "--python" not in words
