"""`train` past one machine: accelerate's multi-node launch, the machines' rendezvous in the run
folder, every machine's GPUs checked and recorded, and the SLURM script that starts it all."""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, devices, visible
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import Machines
from medsynth_kohya.training import nodes
from medsynth_kohya.training import plan as planning
from medsynth_kohya.training.train import Cluster, train

from .conftest import REPO, InstallGpus, invoke
from .fakes import FakeSd, interrupt_after

A100 = Gpu("NVIDIA A100-SXM4-80GB", 81920, (8, 0))
RTX8000 = Gpu("Quadro RTX 8000", 49152, (7, 5))
V100 = Gpu("Tesla V100-SXM2-32GB", 32768, (7, 0))


def _accelerate_parse(argv: list[str]) -> Any:
    """accelerate's own `launch` parser and validation on the flags after `-m LAUNCHER`."""
    commands = pytest.importorskip("accelerate.commands.launch")
    start = argv.index(launch.LAUNCHER) + 1
    args = commands.launch_command_parser().parse_args(argv[start:])
    commands._validate_launch_command(args)
    return args


# accelerate's own parser


def test_the_multi_node_launch_is_what_accelerate_parses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no user accelerate config read
    machines = Machines(count=3, rank=2, main_ip="10.1.2.3", main_port=29611)
    own = tmp_path / "accelerate.json"  # as machine 0 writes it (rank 0 in the file)
    launch.write_accelerate_config(launch.accelerate_config(
        num_processes=4, mixed_precision="bf16", gpu_ids=None,
        machines=Machines(3, 0, "10.1.2.3", 29611)), own)
    command = launch.train_command("/py", tmp_path, Path("/r/config.toml"),
                                   Path("/r/dataset.toml"), accelerate_config=own,
                                   num_processes=4, mixed_precision="bf16", cpu_threads=6,
                                   machines=machines, resume=Path("/r/s-state"))
    args = _accelerate_parse(command.argv)
    assert (args.num_processes, args.num_machines, args.machine_rank) == (12, 3, 2)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29611)
    assert args.multi_gpu and args.gpu_ids == "0,1,2,3" and args.mixed_precision == "bf16"
    assert args.num_cpu_threads_per_process == 6 and args.dynamo_backend == "no"
    assert args.training_script == launch.SCRIPT
    assert args.training_script_args == ["--config_file", "/r/config.toml", "--dataset_config",
                                         "/r/dataset.toml", "--resume", "/r/s-state"]
    from accelerate.utils.launch import prepare_multi_gpu_env

    prepare_multi_gpu_env(args)  # how accelerate hands the machines to torchrun
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("4", "3", 2)
    assert args.rdzv_endpoint == "10.1.2.3:29611"


def test_one_gpu_per_machine_is_still_a_distributed_launch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    two, one = tmp_path / "two.json", tmp_path / "one.json"
    launch.write_accelerate_config(launch.accelerate_config(
        num_processes=1, mixed_precision="no", gpu_ids=None, machines=Machines(2, 0, "node-a")),
        two)
    launch.write_accelerate_config(launch.accelerate_config(
        num_processes=1, mixed_precision="no", gpu_ids=None), one)
    command = launch.train_command("/py", tmp_path, Path("/c"), Path("/d"), num_processes=1,
                                   accelerate_config=two, machines=Machines(2, 0, "node-a"),
                                   cpu_threads=1)
    args = _accelerate_parse(command.argv)
    assert args.multi_gpu and args.num_processes == 2 and args.gpu_ids == "all"
    single = _accelerate_parse(launch.train_command("/py", tmp_path, Path("/c"), Path("/d"),
                                                    accelerate_config=one, cpu_threads=1).argv)
    assert not single.multi_gpu and single.num_machines == 1 and single.machine_rank == 0
    assert not single.use_deepspeed and not single.use_fsdp and single.gpu_ids == "all"


def test_an_accelerate_config_is_passed_through_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = tmp_path / "cluster.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\n"
                      "num_machines: 2\nmachine_rank: 1\nmain_process_ip: 10.0.0.7\n"
                      "main_process_port: 29555\nnum_processes: 16\nmixed_precision: bf16\n"
                      "gpu_ids: all\n", encoding="utf-8")
    command = launch.train_command("/py", tmp_path, Path("/c"), Path("/d"),
                                   accelerate_config=config, given=True)
    start = command.argv.index(launch.LAUNCHER) + 1
    assert command.argv[start:start + 3] == ["--config_file", str(config), launch.SCRIPT]
    args = _accelerate_parse(command.argv)
    machines, per_machine = nodes.from_accelerate_config(config)
    assert (machines.count, machines.rank, machines.main_ip, machines.main_port) == (
        args.num_machines, args.machine_rank, args.main_process_ip, args.main_process_port)
    assert per_machine * machines.count == args.num_processes == 16


def test_the_launch_trains_on_the_gpus_cuda_visible_devices_shows(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a shared box whose first GPUs are another user's V100s, CUDA_VISIBLE_DEVICES picks
    the A100s: the run is checked against those, starts one process per visible GPU, and
    accelerate (which sets CUDA_VISIBLE_DEVICES to --gpu_ids) is given them, on every
    machine of the run."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7,4,5")
    box = [V100] * 4 + [A100] * 4
    for rank in (0, 1):  # machine 1 reads the accelerate config machine 0 wrote
        result = train(prepared, "a100-80gb", run_dir=tmp_path / "run", dry_run=True,
                       detect=lambda: box,
                       cluster=Cluster(Machines(2, rank, "h0")))
        args = _accelerate_parse(result.command.argv)
        assert (args.num_processes, args.gpu_ids) == (8, "6,7,4,5")
        from accelerate.utils.launch import prepare_multi_gpu_env

        assert prepare_multi_gpu_env(args)["CUDA_VISIBLE_DEVICES"] == "6,7,4,5"
    record = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["gpus"] == nodes.describe_gpus([A100] * 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(UserError, match="has no bf16"):
        train(prepared, "a100-80gb", run_dir=tmp_path / "v100", dry_run=True,
              detect=lambda: box)


@pytest.mark.parametrize(("given", "seen"), [
    (None, [0, 1, 2, 3]), ("3,1", [3, 1]), ("GPU-a, 2", [0, 2]), ("1,7,2", [1]), ("-1,0", []),
    ("", [])])
def test_the_gpus_seen_are_those_cuda_reads_from_cuda_visible_devices(
        monkeypatch: pytest.MonkeyPatch, given: str | None, seen: list[int]) -> None:
    """Indices pick nvidia-smi's GPUs, a UUID stands for the one at its place, and CUDA stops
    at the first entry that names no GPU."""
    box = [Gpu(f"GPU {k}", 1024 * (k + 1), (8, 0)) for k in range(4)]
    if given is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    assert visible(box) == [box[k] for k in seen]


@pytest.mark.parametrize(("given", "count", "chosen"), [
    (None, 1, ["0"]), (None, 3, ["0", "1", "2"]), ("", 1, [""]), (" , ", 1, [""]),
    ("3,1", 1, ["3"]), ("3,1", 2, ["3", "1"]), ("GPU-a,MIG-b", 2, ["GPU-a", "MIG-b"])])
def test_the_devices_of_processes_are_the_visible_entries_and_hidden_stays_hidden(
        monkeypatch: pytest.MonkeyPatch, given: str | None, count: int,
        chosen: list[str]) -> None:
    """Each process's CUDA_VISIBLE_DEVICES: the entries the variable lists, else 0..N-1; set
    but empty (every GPU hidden), one process gets "" and so stays hidden, as the user asked."""
    if given is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    assert devices(count, "--num-gpus N") == chosen


@pytest.mark.parametrize(("given", "count", "refusal"), [
    ("", 2, "--num-gpus 2: CUDA_VISIBLE_DEVICES is set but empty, which hides every GPU; unset "
            "it or list the GPUs to use"),
    ("1", 2, "--num-gpus 2: CUDA_VISIBLE_DEVICES=1 shows fewer GPUs; ask for 1 or list more "
             "there"),
    ("1,1", 2, "--num-gpus 2: CUDA_VISIBLE_DEVICES=1,1 names a GPU twice, which would run two "
               "processes on it; list each once")])
def test_devices_that_cannot_be_one_gpu_each_are_refused_in_one_line(
        monkeypatch: pytest.MonkeyPatch, given: str, count: int, refusal: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    with pytest.raises(UserError) as refused:
        devices(count, f"--num-gpus {count}")
    assert str(refused.value) == refusal


LISTED = """GPU 0: Tesla T4 (UUID: GPU-0a1b2c3d-1111-2222-3333-444455556666)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff)
  MIG 3g.40gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 3g.40gb Device 1: (UUID: MIG-GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff/2/0)
"""


def _mixed_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An nvidia-smi on PATH for a T4 then an A100 (with two MIG instances), answering the
    GPU query and `-L` as the real one does."""
    folder = tmp_path / "smi"
    folder.mkdir()
    (folder / "listed.txt").write_text(LISTED, encoding="utf-8")
    script = folder / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-L" ]; then cat {shlex.quote(str(folder / "listed.txt"))}; exit 0; fi
echo 'Tesla T4, 15360 MiB, 7.5'
echo 'NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0'
""", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("given", "seen"), [
    ("GPU-7f8e9d0c", ["NVIDIA A100-SXM4-80GB"]),
    ("GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff,GPU-0a1b", ["NVIDIA A100-SXM4-80GB", "Tesla T4"]),
    ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", ["NVIDIA A100-SXM4-80GB"]),
    ("MIG-GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff/2/0", ["NVIDIA A100-SXM4-80GB"]),
    # old drivers' form names its GPU by UUID, listed by -L or not
    ("MIG-GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff/1/0", ["NVIDIA A100-SXM4-80GB"]),
    ("GPU-0a1b,GPU-99999999,1", ["Tesla T4"]), ("1,GPU-0a1b", ["NVIDIA A100-SXM4-80GB",
                                                              "Tesla T4"])])
def test_a_uuid_or_mig_id_picks_the_gpu_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, seen: list[str]) -> None:
    """A UUID stood for the GPU at its place in CUDA_VISIBLE_DEVICES: on a box of mixed GPUs
    the run was planned for the T4 where CUDA gave it the A100. nvidia-smi -L names them."""
    from medsynth_kohya.machine.gpus import detect_gpus

    _mixed_box(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    assert [gpu.name for gpu in visible(detect_gpus())] == seen


def test_a_run_on_the_a100_a_uuid_picks_is_planned_for_it(
        runner: CliRunner, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The a100-80gb preset was refused for the T4 listed first (no bf16), though the UUID
    given picks the A100; and the T4 picked by its UUID is refused."""
    _mixed_box(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb", "--run-dir",
                             tmp_path / "a100", "--dry-run")
    assert code == 0 and "bf16" not in stderr, stderr
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0a1b2c3d")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb", "--run-dir",
                             tmp_path / "t4", "--dry-run")
    assert code == 1 and "bf16" in stderr, stderr


def test_more_processes_than_visible_gpus_are_refused_in_one_line(
        runner: CliRunner, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        nvidia_smi: InstallGpus) -> None:
    nvidia_smi(*["NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0"] * 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5d1c,GPU-77ab")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb", "--gpus",
                             "4", "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 1 and "Traceback" not in stderr
    assert ("4 training processes need 4 GPUs; 2 visible "
            "(CUDA_VISIBLE_DEVICES=GPU-5d1c,GPU-77ab): use --gpus 2") in " ".join(stderr.split())


# refusals, one line each


@pytest.mark.parametrize(("options", "needle"), [
    (["--num-machines", "2", "--machine-rank", "2", "--main-process-ip", "h"],
     "--machine-rank 2 is out of range for 2 machines: use 0 to 1"),
    (["--num-machines", "2", "--machine-rank", "-1", "--main-process-ip", "h"],
     "out of range"),
    (["--num-machines", "0"], "need at least 1 machine"),
    (["--num-machines", "2"], "need --main-process-ip"),
    (["--num-machines", "2", "--main-process-ip", "h", "--main-process-port", "70000"],
     "not a TCP port"),
    (["--submit"], "add --slurm"),
    (["--slurm", "--machine-rank", "1", "--num-machines", "2"], "leave out --machine-rank"),
    (["--slurm", "--sbatch", "partition"], "KEY=VALUE"),
    (["--slurm", "--num-machines", "2", "--preset", "t4-16gb", "--gpus", "1", "--sbatch",
      "gpus-per-node=4"],
     "--sbatch gpus-per-node=4 asks for other GPUs than the 1 each task is written for"),
    (["--slurm", "--num-machines", "2", "--preset", "a100-80gb"],
     "--slurm needs --gpus G, the GPUs of each machine for the job to ask SLURM for: preset "
     "a100-80gb starts one process per GPU found"),
])
def test_what_accelerate_would_reject_is_refused_in_one_line(
        runner: CliRunner, prepared: Path, tmp_path: Path, options: list[str],
        needle: str) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             tmp_path / "run", "--dry-run", *options)
    assert code != 0 and needle in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.mark.parametrize(("text", "needle"), [
    ("num_machines: 4\nnum_processes: 6\nmain_process_ip: h\n",
     "num_processes 6 does not divide over num_machines 4"),
    ("num_machines: 2\nmachine_rank: 2\nnum_processes: 4\nmain_process_ip: h\n",
     "out of range"),
    ("num_machines: 2\nnum_processes: 4\n", "main-process-ip"),
    ("num_machines: 2\nmain_process_ip: h\n", "num_processes is not set"),
    ("num_machines: two\n", "whole numbers"),
    ("[unclosed", "cannot be read"),
])
def test_a_bad_accelerate_config_is_refused_in_one_line(
        runner: CliRunner, prepared: Path, tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "accelerate.yaml"
    config.write_text(text, encoding="utf-8")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             tmp_path / "run", "--dry-run", "--accelerate-config", config)
    assert code == 1 and needle in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_accelerate_config_and_machine_flags_are_one_or_the_other(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    config = tmp_path / "accelerate.yaml"
    config.write_text("num_machines: 1\nnum_processes: 2\n", encoding="utf-8")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             tmp_path / "run", "--dry-run", "--accelerate-config", config,
                             "--num-machines", "2", "--main-process-ip", "h")
    assert code == 1 and "leave out --num-machines" in stderr
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             tmp_path / "run", "--dry-run", "--accelerate-config", config,
                             "--gpus", "4")
    assert code == 1 and "--gpus 4 disagrees" in stderr


# every machine's GPUs


def test_a_machine_without_bf16_refuses_a_bf16_run_on_all(prepared: Path,
                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    with locks.hold(run, "train", part=nodes.part(1)):  # machine 1 waits, with a Turing GPU
        nodes.write_report(run, 1, [RTX8000], status="waiting")
        with pytest.raises(UserError) as refused:
            train(prepared, "a100-80gb", run_dir=run, dry_run=True, detect=lambda: [A100],
                  cluster=Cluster(Machines(2, 0, "127.0.0.1")))
    line = str(refused.value)
    assert line == (f"machine 1 ({socket.gethostname()}): Quadro RTX 8000 (compute capability 7.5) "
                    "has no bf16: --set mixed_precision=fp16 --set save_precision=fp16, or the "
                    "t4-16gb preset")


def test_machines_that_cannot_run_the_training_are_all_named_on_one_line(
        prepared: Path, tmp_path: Path) -> None:
    """Each machine's refusal came on a line of its own; now they are counted on one line,
    each naming its machine and its fix."""
    from .conftest import counted_problems

    run = tmp_path / "run"
    with (locks.hold(run, "train", part=nodes.part(1)),
          locks.hold(run, "train", part=nodes.part(2))):
        nodes.write_report(run, 1, [RTX8000], status="waiting")
        nodes.write_report(run, 2, [], status="waiting")
        with pytest.raises(UserError) as refused:
            train(prepared, "a100-80gb", run_dir=run, dry_run=True, detect=lambda: [A100],
                  cluster=Cluster(Machines(3, 0, "127.0.0.1")))
    line = f"Error: {refused.value}"
    host = socket.gethostname()
    problems = counted_problems(line, "the other machines cannot run the training of --preset "
                                      "a100-80gb")
    assert "\n" not in line and problems[0].startswith(
        f"machine 1 ({host}): Quadro RTX 8000 (compute capability 7.5) has no bf16: "), line
    assert problems[1] == (f"machine 2 ({host}) reports no NVIDIA GPU (nvidia-smi found none); "
                           "fix each"), line


def test_the_dry_run_records_every_machine_that_reported(prepared: Path,
                                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    with locks.hold(run, "train", part=nodes.part(1)):
        nodes.write_report(run, 1, [A100, A100], status="waiting")
        result = train(prepared, "a100-80gb", run_dir=run, dry_run=True, gpus=2,
                       detect=lambda: [A100, A100], cluster=Cluster(Machines(2, 0, "h0")))
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert [node["rank"] for node in record["nodes"]] == [0, 1]
    assert all(node["gpus"] == nodes.describe_gpus([A100, A100]) for node in record["nodes"])
    assert record["machines"] == {"count": 2, "main_process_ip": "h0",
                                  "main_process_port": 29500, "processes_per_machine": 2}
    assert result.plan is not None  # the epoch is split over all 4 processes
    assert result.plan.steps_per_epoch == planning.steps_per_epoch(
        record["config"], record["dataset"]["train_images"], 2, 4)
    # a report whose writer is gone (its part-lock released) is not counted
    assert nodes.present(run, 2) == []


def test_slurm_does_not_judge_the_cluster_by_this_machines_gpus(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--slurm writes the script from a login node whose GPUs are too few (or too small) for
    the run, or hidden: rank 0 checks the compute nodes' GPUs when the job starts."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    result = train(prepared, "a100-80gb", run_dir=tmp_path / "run", dry_run=True, gpus=8,
                   detect=lambda: [RTX8000], cluster=Cluster(Machines(4), slurm=()))
    assert result.job is not None
    assert "#SBATCH --nodes=4" in result.job.text
    assert "#SBATCH --gpus-per-node=8" in result.job.text


@pytest.mark.parametrize("hidden", [False, True])
def test_slurm_from_a_machine_without_gpus_foretells_no_stop_for_want_of_them(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hidden: bool) -> None:
    """A login node with no GPU (or with CUDA_VISIBLE_DEVICES set) warned "a real run would
    stop at: GPU: no NVIDIA GPU found" and "4 training processes need 4 GPUs": the job's own
    GPUs are what the run gets, checked on the compute nodes."""
    if hidden:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = train(prepared, "a100-80gb", run_dir=tmp_path / "run", dry_run=True, gpus=4,
                   detect=list, cluster=Cluster(Machines(2), slurm=()))
    assert result.job is not None and "#SBATCH --gpus-per-node=4" in result.job.text
    assert not [warning for warning in result.warnings if "nvidia-smi" in warning or
                "no NVIDIA GPU" in warning], result.warnings


def test_machine_zero_times_out_naming_the_missing_machines(prepared: Path,
                                                            tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"machines 1, 2 of 3 did not report"):
        train(prepared, "cpu-smoke", run_dir=tmp_path / "run", detect=lambda: [],
              cluster=Cluster(Machines(3, 0, "127.0.0.1"), wait_s=0.6))
    decision = json.loads((tmp_path / "run" / "nodes" / "launch.json").read_text())
    assert decision["status"] == "refused" and "did not report" in decision["message"]


# two machines through the CLI, and through a SLURM script


def _machine(prepared: Path, run: Path, fake: FakeSd, rank: int, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = launch.own_command("train", str(prepared), "--preset", "cpu-smoke", "--run-dir",
                              str(run), "--sd-scripts", str(fake.sd_scripts), "--python",
                              sys.executable, "--num-machines", "2", "--machine-rank",
                              str(rank), "--main-process-ip", "127.0.0.1", *extra)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})})


def _pythonpath() -> str:
    return os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])


def test_two_machines_train_one_run(prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    follower = _machine(prepared, run, fake_sd, 1)  # started first: it waits for machine 0
    leader = _machine(prepared, run, fake_sd, 0)
    said = {rank: process.communicate(timeout=300)[0]
            for rank, process in ((0, leader), (1, follower))}
    assert (leader.returncode, follower.returncode) == (0, 0), said
    seen = [json.loads(Path(f"{fake_sd.record}{suffix}").read_text())
            for suffix in ("", ".machine-1")]
    for rank, recorded in enumerate(seen):
        flags = recorded["accelerate"]
        assert (flags["num_machines"], flags["num_processes"], flags["multi_gpu"]) == (2, 2, True)
        assert flags.get("machine_rank", 0) == rank
        assert recorded["argv"][1:] == ["--config_file", str((run / "config.toml").resolve()),
                                        "--dataset_config",
                                        str((run / "dataset.toml").resolve())]
    assert seen[1]["accelerate"]["main_process_ip"] == "127.0.0.1"
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded"
    assert [(n["rank"], n["pid"]) for n in record["nodes"]] == [(0, leader.pid),
                                                                (1, follower.pid)]
    report = json.loads((run / "nodes" / "machine-1.json").read_text())
    assert report["status"] == "succeeded" and report["exit_status"] == 0
    assert (run / "train-machine-1.log").is_file() and "machine 0 writes the LoRA" in said[1]
    assert (run / "output" / "melanoma.safetensors").is_file()


def _go_at_once(monkeypatch: pytest.MonkeyPatch, resume: str | None) -> None:
    """Machine 0's go (resuming from `resume`), written the moment a machine reports."""
    reported = nodes.write_report

    def answered_at_once(run_dir: Path, rank: int, gpus: list[Gpu],
                         **status: Any) -> dict[str, Any]:
        written = reported(run_dir, rank, gpus, **status)
        if status["status"] == "waiting":
            nodes.decide(run_dir, status="go", machines=[written], processes=1,
                         mixed_precision="no", resume=resume)
        return written

    monkeypatch.setattr(nodes, "write_report", answered_at_once)


def test_a_go_given_as_soon_as_a_machine_reports_is_not_missed(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 0 may answer a report before its writer has looked at the decision file: that
    answer is the one it waits for, not one to wait past (it waited out --wait and failed)."""
    run = tmp_path / "run"
    train(prepared, "cpu-smoke", run_dir=run, dry_run=True,  # machine 0's files
          sd_scripts=fake_sd.sd_scripts, python=sys.executable,
          cluster=Cluster(Machines(2, 0, "127.0.0.1")))
    _go_at_once(monkeypatch, None)
    result = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                   python=sys.executable, cluster=Cluster(Machines(2, 1, "127.0.0.1"), wait_s=2))
    assert result.status == "succeeded", result.message
    assert json.loads(Path(f"{fake_sd.record}.machine-1").read_text())["accelerate"][
        "machine_rank"] == 1


def test_a_follower_resumes_from_the_state_in_its_own_view_of_the_run_folder(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 0 names the state it resumes from by its own path to the shared run folder;
    another machine may mount that folder elsewhere and resumes from the same state there."""
    run = tmp_path / "run"
    train(prepared, "cpu-smoke", run_dir=run, dry_run=True, sd_scripts=fake_sd.sd_scripts,
          python=sys.executable, cluster=Cluster(Machines(2, 0, "127.0.0.1")))
    state = "melanoma-run-step00000003-state"
    _go_at_once(monkeypatch, f"/mnt/machine-0/run/output/{state}")
    result = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                   python=sys.executable, cluster=Cluster(Machines(2, 1, "127.0.0.1"), wait_s=2))
    assert result.status == "succeeded", result.message
    argv = json.loads(Path(f"{fake_sd.record}.machine-1").read_text())["argv"]
    assert argv[argv.index("--resume") + 1] == str(run.resolve() / "output" / state)


def test_a_failed_machine_says_the_trainers_error(prepared: Path, fake_sd: FakeSd,
                                                  tmp_path: Path) -> None:
    """A machine of rank > 0 whose sd-scripts fails says why in its last line, as machine 0
    does, and where its log is."""
    run = tmp_path / "run"
    follower = _machine(prepared, run, fake_sd, 1, env={"FAKE_SD_MODE": "crash"})
    leader = _machine(prepared, run, fake_sd, 0, "--set", "max_train_steps=4")  # crash at 3
    said = {rank: process.communicate(timeout=300)[0]
            for rank, process in ((0, leader), (1, follower))}
    assert (leader.returncode, follower.returncode) == (0, 1), said
    text = " ".join(said[1].split())
    assert "accelerate on machine 1 exited with 1: RuntimeError: fake: CUDA out of memory" in (
        text), said[1]
    assert f"(log: {run / 'train-machine-1.log'})" in text
    assert "Traceback" not in said[1].split("Error:")[-1]


def test_machine_zeros_refusal_reaches_the_others(prepared: Path, fake_sd: FakeSd,
                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    follower = _machine(prepared, run, fake_sd, 1)
    leader = _machine(prepared, run, fake_sd, 0, "--set", "learning_rat=1e-4")
    outputs = [process.communicate(timeout=300)[0] for process in (leader, follower)]
    assert leader.returncode == 1 and follower.returncode == 1, outputs
    assert "machine 0 refused the run:" in outputs[1]
    assert not Path(f"{fake_sd.record}.machine-1").exists()


def test_a_followers_resume_dry_run_shows_the_runs_own_settings(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 1's `--resume --dry-run` shows the launch it will run: the run's recorded preset
    (not the default one) and the saved state machine 0 goes on from; other settings are
    refused as on machine 0."""
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    run = tmp_path / "run"
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    first = train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], run_dir=run,
                  sd_scripts=fake_sd.sd_scripts, python=sys.executable,
                  on_progress=interrupt_after(3))
    assert first.status == "interrupted"
    state = launch.latest_state(run.resolve() / "output", "melanoma")
    assert state is not None
    follower = ("--num-machines", "2", "--machine-rank", "1", "--main-process-ip", "h0",
                "--run-dir", run, "--resume", "--dry-run", *tools)
    code, stdout, stderr = invoke(runner, "train", prepared, *follower)
    assert code == 0, stdout + stderr
    words = shlex.split(stdout.split("Command (run in", 1)[1].split("\n", 1)[1])
    assert words[words.index("--mixed_precision") + 1] == "no"  # cpu-smoke's, not t4-16gb's
    assert words[words.index("--resume") + 1] == str(  # where machine 0 moves it first
        state.with_name(state.name.replace("melanoma-step", "melanoma-run-step")))
    code, _, stderr = invoke(runner, "train", prepared, *follower, "--preset", "t4-16gb")
    assert code == 1 and "was started with --preset cpu-smoke --set max_train_steps=40" in (
        " ".join(stderr.split()))


def _install(folder: Path, name: str, body: str) -> None:
    program = folder / name
    program.write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)


def fake_slurm(folder: Path) -> Path:
    """Stand-ins for sbatch (runs the script at once, as job 4242), srun (one task per node,
    side by side, with SLURM_NODEID) and scontrol (the job's host names); returns the file
    where sbatch records its arguments."""
    folder.mkdir(exist_ok=True)
    record = folder / "sbatch-args"
    _install(folder, "sbatch", f'echo "$@" > {shlex.quote(str(record))}\n'
             'SLURM_JOB_NODELIST=localhost bash "${@: -1}" > "${@: -1}.out" 2>&1 || exit 1\n'
             "echo 4242")
    _install(folder, "srun", 'nodes=1\nwhile [[ $1 == --* ]]; do\n'
             '  [[ $1 == --nodes=* ]] && nodes=${1#--nodes=}\n  shift\ndone\npids=()\n'
             'for ((i = 0; i < nodes; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done\n'
             'code=0\nfor p in "${pids[@]}"; do wait "$p" || code=1; done\nexit $code')
    _install(folder, "scontrol", 'echo localhost; echo localhost')
    return record


def test_the_slurm_script_trains_on_every_machine(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    code, stdout, stderr = invoke(
        runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run, "--sd-scripts",
        fake_sd.sd_scripts, "--python", sys.executable, "--num-machines", "2", "--slurm",
        "--sbatch", "partition=gpu", "--sbatch", "time=02:00:00", "--dry-run")
    assert code == 0, stderr
    assert not (run / "train.sbatch").exists()
    lines = stdout.splitlines()
    start = lines.index("#!/bin/bash")
    text = "\n".join(lines[start:]) + "\n"
    directives = dict(line.removeprefix("#SBATCH --").split("=", 1)
                      for line in text.splitlines() if line.startswith("#SBATCH "))
    assert directives == {
        "job-name": "medsynth-train-run", "nodes": "2", "ntasks-per-node": "1",
        "chdir": str(Path.cwd()),
        "output": str(run.resolve() / "slurm-%j.out"), "partition": "gpu", "time": "02:00:00"}
    *_, srun_line = text.strip().splitlines()
    srun = shlex.split(srun_line)
    assert srun[:5] == ["srun", "--nodes=2", "--ntasks-per-node=1", "bash", "-c"]
    assert shlex.split(srun[5]) == [
        "exec", *launch.own_command(
            "train", str(prepared.resolve()), "--preset", "cpu-smoke", "--run-dir",
            str(run.resolve()), "--num-machines", "2", "--machine-rank",
            "$SLURM_NODEID", "--main-process-ip", "$MEDSYNTH_MAIN_IP", "--main-process-port",
            "29500", "--sd-scripts", str(fake_sd.sd_scripts.resolve()), "--python",
            sys.executable)]
    assert 'MEDSYNTH_HOSTS="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"' \
        in text.splitlines() and "export MEDSYNTH_MAIN_IP" in text.splitlines()
    # the same script, written and submitted, trains on two "machines" (srun's tasks)
    record = fake_slurm(tmp_path / "slurm-bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'slurm-bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    code, stdout, stderr = invoke(
        runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run, "--sd-scripts",
        fake_sd.sd_scripts, "--python", sys.executable, "--num-machines", "2", "--slurm",
        "--sbatch", "partition=gpu", "--sbatch", "time=02:00:00", "--submit")
    script = run / "train.sbatch"
    assert code == 0, stderr + (Path(f"{script}.out").read_text() if script.exists() else "")
    assert script.read_text(encoding="utf-8") == text
    assert f"Submitted {script} as SLURM job 4242" in stdout
    assert record.read_text().split() == ["--parsable", str(script.resolve())]
    result = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert result["status"] == "succeeded" and len(result["nodes"]) == 2
    assert json.loads(Path(f"{fake_sd.record}.machine-1").read_text())["accelerate"][
        "machine_rank"] == 1


def test_the_slurm_job_starts_over_when_asked_to(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--force (and --resume --force) reach the job's tasks, which start the run over; the
    run folder stays as it is until then (a plain --dry-run --force is refused, naming the
    run it would replace)."""
    run = tmp_path / "run"
    first = train(prepared, "cpu-smoke", overrides=["max_train_steps=40"], run_dir=run,
                  sd_scripts=fake_sd.sd_scripts, python=sys.executable,
                  on_progress=interrupt_after(3))
    assert first.status == "interrupted"
    assert launch.latest_state(run.resolve() / "output", "melanoma") is not None
    fake_slurm(tmp_path / "slurm-bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'slurm-bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    job = ("train", prepared, "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
           "--python", sys.executable, "--num-machines", "2", "--slurm")
    before = (run / "run.json").read_bytes()
    code, _, stderr = invoke(runner, *job[:8], "--force", "--dry-run")
    assert code == 1 and (f"{run} holds an interrupted run whose record a dry run would "
                          "replace") in " ".join(stderr.split())
    again = (["--resume", "--force"], ["--force", "--preset", "cpu-smoke"])
    for options in again:
        code, stdout, stderr = invoke(runner, *job, *options, "--dry-run")
        assert code == 0, stderr
        task = shlex.split(shlex.split(stdout.strip().splitlines()[-1])[-1])
        assert "--force" in task and ("--resume" in task) == ("--resume" in options)
        assert (run / "run.json").read_bytes() == before
    for options, kept in zip(again, (["max_train_steps=40"], []), strict=True):
        code, _, stderr = invoke(runner, *job, *options, "--submit")
        script = run / "train.sbatch"
        assert code == 0, stderr + Path(f"{script}.out").read_text()
        record = json.loads((run / "run.json").read_text(encoding="utf-8"))
        assert record["status"] == "succeeded" and record.get("resumed_from") is None
        assert "--resume" not in fake_sd.recorded()["argv"]
        assert record["overrides"] == kept  # --resume --force keeps the run's own settings
    assert len(list(tmp_path.glob("run/output.replaced-*"))) == 2


def test_submit_without_sbatch_is_one_line(runner: CliRunner, prepared: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             tmp_path / "run", "--slurm", "--submit")
    assert code == 1 and "sbatch is not installed or not on PATH" in stderr
    assert (tmp_path / "run" / "train.sbatch").is_file()
