"""The command lines we build: image generation, the ISIC download, SLURM submission, our own
command, and what `accelerate launch` is told; each word, its order and the environment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import Machines


def test_gen_flags_keep_the_order_and_spell_each_value() -> None:
    assert launch.gen_flags({"ckpt": "/m/model.safetensors", "xformers": True, "fp16": False,
                             "bf16": None, "W": 1024, "scale": 7.5, "network_mul": [0.5, 1],
                             "seed": 0}) == [
        "--ckpt", "/m/model.safetensors", "--xformers", "--W", "1024", "--scale", "7.5",
        "--network_mul", "0.5", "1", "--seed", "0"]
    assert launch.gen_flags({"network_weights": ("a.safetensors", "b.safetensors")}) == [
        "--network_weights", "a.safetensors", "b.safetensors"]
    assert launch.gen_flags({}) == []


def test_gen_flags_spell_numpy_numbers_as_python_does() -> None:
    """A NumPy float's repr is `np.float64(7.5)` (NumPy 2), which sdxl_gen_img.py cannot read."""
    assert launch.gen_flags({"scale": np.float64(7.5), "steps": np.int64(30)}) == [
        "--scale", "7.5", "--steps", "30"]


def test_gen_flags_refuse_an_option_the_script_lacks() -> None:
    with pytest.raises(ValueError, match=r"sdxl_gen_img\.py has no option 'no_such_option'"):
        launch.gen_flags({"W": 64, "no_such_option": 1})


def test_gen_command_sees_one_gpu(tmp_path: Path) -> None:
    command = launch.gen_command("/env/python", tmp_path, {"W": 64, "xformers": True},
                                 device="3")
    assert command.argv == ["/env/python", "sdxl_gen_img.py", "--W", "64", "--xformers"]
    assert command.cwd == tmp_path
    assert command.env == {**launch.ENV, "CUDA_VISIBLE_DEVICES": "3"}
    plain = launch.gen_command("/env/python", tmp_path, {})
    assert plain.env == launch.ENV and "CUDA_VISIBLE_DEVICES" not in launch.ENV
    assert plain.argv == ["/env/python", "sdxl_gen_img.py"]


def test_isic_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    command = launch.isic_download_command(Path("out"))
    assert command.argv == ["isic", "image", "download", "--search",
                            launch.ISIC_MELANOMA_SEARCH, "--collections", "70", "out"]
    assert command.cwd == tmp_path and command.env == {}
    chosen = launch.isic_download_command(tmp_path / "o", search="x", collections=(65, 66),
                                          limit=12, program="/bin/isic")
    assert chosen.argv == ["/bin/isic", "image", "download", "--search", "x", "--collections",
                           "65,66", "--limit", "12", str(tmp_path / "o")]
    everything = launch.isic_download_command(Path("o"), collections=(), limit=0)
    assert everything.argv == ["isic", "image", "download", "--search",
                               launch.ISIC_MELANOMA_SEARCH, "o"]


def test_sbatch_and_own_command(tmp_path: Path) -> None:
    command = launch.sbatch_command(tmp_path / "job" / "run.sbatch")
    assert command.argv == ["sbatch", "--parsable", str(tmp_path / "job" / "run.sbatch")]
    assert command.cwd == tmp_path / "job" and command.env == {}
    assert launch.own_command("sample", "--n", "4") == [
        sys.executable, "-m", "medsynth_kohya", "sample", "--n", "4"]


def test_the_shell_line_quotes_what_a_shell_would_split() -> None:
    command = launch.Command(["python", "a b.py", "--x", "it's"], Path("/my dir"),
                             {"A": "1 2", "B": "x"})
    assert command.shell() == "cd '/my dir' && A='1 2' B=x python 'a b.py' --x 'it'\"'\"'s'"
    assert launch.Command(["ls"], Path("/d")).shell() == "cd /d && ls"
    assert command.line() == "python 'a b.py' --x 'it'\"'\"'s'"


def test_the_tool_s_own_command_as_a_user_types_it_here() -> None:
    command = launch.tool_command("sample", "--lora", "my runs/a", "--n", "3")
    assert command.argv == ["medsynth-kohya", "sample", "--lora", "my runs/a", "--n", "3"]
    assert command.cwd == Path.cwd() and command.env == {}
    assert command.line() == "medsynth-kohya sample --lora 'my runs/a' --n 3"


@pytest.mark.parametrize(("machines", "problems"), [
    (Machines(), []),
    (Machines(2, 1, "h", 1), []),
    (Machines(3, 2, "10.0.0.1", 65535), []),
    (Machines(0), ["--num-machines 0: need at least 1 machine"]),
    (Machines(-1, 5, None, 0), ["--num-machines -1: need at least 1 machine",
                                "--main-process-port 0 is not a TCP port (1-65535)"]),
    (Machines(2, 2, "h"), ["--machine-rank 2 is out of range for 2 machines: use 0 to 1"]),
    (Machines(1, -1), ["--machine-rank -1 is out of range for 1 machine: use 0 to 0"]),
    (Machines(2, 0, ""), ["2 machines need --main-process-ip, the address of the machine of "
                          "rank 0 that every machine can reach"]),
    (Machines(1, 0, None, 65536), ["--main-process-port 65536 is not a TCP port (1-65535)"]),
])
def test_machine_problems(machines: Machines, problems: list[str]) -> None:
    assert machines.problems() == problems


def test_machines_default_to_one_on_accelerates_port() -> None:
    assert Machines() == Machines(1, 0, None, 29500)


@pytest.mark.parametrize(("options", "message"), [
    ({"num_processes": 0, "cpu_threads": 1},
     "need at least 1 process and 1 CPU thread per process (got 0 and 1)"),
    ({"num_processes": 1, "cpu_threads": 0},
     "need at least 1 process and 1 CPU thread per process (got 1 and 0)"),
    ({"mixed_precision": "fp32"}, "mixed_precision 'fp32' is not one of no, fp16, bf16, fp8"),
    ({"num_processes": 2, "gpu_ids": [1]}, "2 processes need 2 GPU ids (got [1])"),
    ({"gpu_ids": [0, 1]}, "1 processes need 1 GPU ids (got [0, 1])"),
    ({"machines": Machines(2, 3, "h")},
     "--machine-rank 3 is out of range for 2 machines: use 0 to 1"),
])
def test_accelerate_args_refuse_in_one_line(options: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"num_processes": 1, "mixed_precision": "no", "gpu_ids": None,
                                   "cpu_threads": 1, **options}
    with pytest.raises(UserError) as refused:
        launch.accelerate_args(**settings)  # type: ignore[arg-type]
    assert str(refused.value) == message


@pytest.mark.parametrize("precision", launch.MIXED_PRECISION)
def test_every_precision_accelerate_takes(precision: str) -> None:
    args = launch.accelerate_args(num_processes=1, mixed_precision=precision, gpu_ids=[5],
                                  cpu_threads=1)
    assert args[args.index("--mixed_precision") + 1] == precision
    assert args[-2:] == ["--gpu_ids", "5"] and "--multi_gpu" not in args


def test_machines_are_told_to_accelerate() -> None:
    args = launch.accelerate_args(num_processes=2, mixed_precision="no", gpu_ids=None,
                                  cpu_threads=3, machines=Machines(2, 1, "10.0.0.2", 29700))
    assert args == ["--num_processes", "4", "--num_machines", "2", "--mixed_precision", "no",
                    "--dynamo_backend", "no", "--num_cpu_threads_per_process", "3",
                    "--machine_rank", "1", "--main_process_ip", "10.0.0.2",
                    "--main_process_port", "29700", "--multi_gpu", "--gpu_ids", "0,1"]


@pytest.mark.parametrize(("cpus", "processes", "threads"), [(8, 2, 4), (7, 2, 3), (1, 2, 1),
                                                            (8, 1, 8)])
def test_cpu_threads_default_to_a_share_of_the_cpus(
        monkeypatch: pytest.MonkeyPatch, cpus: int, processes: int, threads: int) -> None:
    monkeypatch.setattr(launch, "_cpu_count", lambda: cpus)
    argv = launch.train_command("/py", Path("/sd"), Path("/c"), Path("/d"),
                                accelerate_config=Path("/a.json"), num_processes=processes).argv
    assert argv[argv.index("--num_cpu_threads_per_process") + 1] == str(threads)
    given = launch.train_command("/py", Path("/sd"), Path("/c"), Path("/d"),
                                 accelerate_config=Path("/a.json"), num_processes=processes,
                                 cpu_threads=5).argv
    assert given[given.index("--num_cpu_threads_per_process") + 1] == "5"


def test_train_command_without_resume_and_with_machine_flags() -> None:
    command = launch.train_command("/py", Path("/sd"), Path("/r/c.toml"), Path("/r/d.toml"),
                                   accelerate_config=Path("/r/accelerate.json"),
                                   num_processes=2, mixed_precision="fp16", gpu_ids=[2, 3],
                                   cpu_threads=1, machines=Machines(2, 0, "h", 1234))
    assert command.argv == [
        "/py", "-m", "accelerate.commands.launch", "--config_file", "/r/accelerate.json",
        "--num_processes", "4", "--num_machines", "2",
        "--mixed_precision", "fp16", "--dynamo_backend", "no", "--num_cpu_threads_per_process",
        "1", "--machine_rank", "0", "--main_process_ip", "h", "--main_process_port", "1234",
        "--multi_gpu", "--gpu_ids", "2,3", "sdxl_train_network.py", "--config_file",
        "/r/c.toml", "--dataset_config", "/r/d.toml"]
    assert command.cwd == Path("/sd") and command.env == launch.ENV
    command.env["X"] = "1"
    assert "X" not in launch.ENV


def test_an_accelerate_config_replaces_every_flag(tmp_path: Path) -> None:
    command = launch.train_command("/py", tmp_path, Path("/c"), Path("/d"), num_processes=0,
                                   mixed_precision="bad", resume=Path("/s"),
                                   accelerate_config=tmp_path / "a.yaml", given=True)
    assert command.argv == ["/py", "-m", "accelerate.commands.launch", "--config_file",
                            str(tmp_path / "a.yaml"), "sdxl_train_network.py", "--config_file",
                            "/c", "--dataset_config", "/d", "--resume", "/s"]
