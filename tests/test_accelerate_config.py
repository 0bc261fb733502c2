"""train's launch reads the run's own accelerate config, never the user's default one.

`accelerate launch` without `--config_file` fills in what no flag sets (gpu_ids, DeepSpeed,
FSDP) from the user's `default_config.yaml`; train writes RUN/accelerate.json and passes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine import doctor
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import Machines

from .conftest import invoke
from .fakes import FakeSd

HOSTILE = {
    "gpu 1": "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\ngpu_ids: '1'\n"
             "mixed_precision: bf16\nnum_machines: 1\nnum_processes: 1\nuse_cpu: false\n",
    "deepspeed": "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\n"
                 "gpu_ids: '1'\ndeepspeed_config:\n  zero_stage: 3\n  offload_optimizer_device: "
                 "cpu\nmixed_precision: fp16\nnum_machines: 1\nnum_processes: 1\n",
}
"""A user's default accelerate configs left from other projects."""
PROBE = """import json, os, sys
seen = {k: v for k, v in os.environ.items()
        if k.startswith("ACCELERATE_") or k == "CUDA_VISIBLE_DEVICES"}
print("PROBE " + json.dumps(dict(sorted(seen.items()))))
"""
"""Stands in for sdxl_train_network.py: prints the GPUs and accelerate state it is given."""


def _user_config(home: Path, text: str) -> Path:
    path = home / "accelerate" / "default_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_one_process_sees_every_gpu_with_no_plugin() -> None:
    assert launch.accelerate_config(num_processes=1, mixed_precision="bf16", gpu_ids=None) == {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "num_processes": 1,
        "num_machines": 1, "gpu_ids": "all", "mixed_precision": "bf16", "dynamo_config": {},
        "use_cpu": False, "debug": False}


def test_the_file_says_what_the_flags_say() -> None:
    machines = Machines(2, 1, "10.0.0.2", 29700)
    document = launch.accelerate_config(num_processes=2, mixed_precision="fp16", gpu_ids=None,
                                        machines=machines)
    flags = launch.accelerate_args(num_processes=2, mixed_precision="fp16", gpu_ids=None,
                                   cpu_threads=1, machines=machines)
    said = dict(zip(flags[::2], flags[1::2], strict=False))
    assert document["distributed_type"] == "MULTI_GPU" and "--multi_gpu" in flags
    assert str(document["num_processes"]) == said["--num_processes"] == "4"
    assert str(document["num_machines"]) == said["--num_machines"] == "2"
    assert document["gpu_ids"] == flags[flags.index("--gpu_ids") + 1] == "0,1"
    assert document["mixed_precision"] == said["--mixed_precision"] == "fp16"
    assert (document["main_process_ip"], document["main_process_port"]) == ("10.0.0.2", 29700)
    assert "machine_rank" not in document  # each machine's own flag
    assert launch.accelerate_config(num_processes=1, mixed_precision="no", gpu_ids=[3],
                                    )["gpu_ids"] == "3"


@pytest.mark.parametrize(("options", "message"), [
    ({"num_processes": 0}, "need at least 1 process (got 0)"),
    ({"mixed_precision": "fp32"}, "mixed_precision 'fp32' is not one of no, fp16, bf16, fp8"),
    ({"num_processes": 2, "gpu_ids": [1]}, "2 processes need 2 GPU ids (got [1])"),
])
def test_the_file_refuses_what_the_flags_refuse(options: dict[str, object],
                                                 message: str) -> None:
    settings: dict[str, object] = {"num_processes": 1, "mixed_precision": "no", "gpu_ids": None,
                                   **options}
    with pytest.raises(UserError) as refused:
        launch.accelerate_config(**settings)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_the_file_is_json_accelerate_reads_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "accelerate.json"
    document = launch.accelerate_config(num_processes=2, mixed_precision="no", gpu_ids=None)
    launch.write_accelerate_config(document, path)
    assert json.loads(path.read_text(encoding="utf-8")) == document
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    loaded = config_args.load_config_from_file(str(path))
    assert (loaded.distributed_type.value, loaded.num_processes, loaded.gpu_ids) == (
        "MULTI_GPU", 2, "0,1")
    assert loaded.deepspeed_config == {} and loaded.fsdp_config == {}


@pytest.mark.parametrize("where", ["HF_HOME", "XDG_CACHE_HOME", "HOME"])
def test_user_configs_are_found_where_accelerate_looks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    for name in ("HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(where, str(tmp_path / where))
    home = {"HF_HOME": tmp_path / "HF_HOME", "XDG_CACHE_HOME": tmp_path / "XDG_CACHE_HOME" /
            "huggingface", "HOME": tmp_path / "HOME" / ".cache" / "huggingface"}[where]
    assert launch.user_configs() == []
    path = _user_config(home, HOSTILE["gpu 1"])
    assert launch.user_configs() == [path]
    row = next(c for c in doctor.diagnose(gpus=[], hub=False).checks
               if c.name == "accelerate config")
    assert row.status == doctor.OK and f"{path} is not read" in row.detail
    assert "override" not in row.detail


def test_train_writes_and_passes_its_own_config(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _user_config(tmp_path / "hf", HOSTILE["deepspeed"])
    run = tmp_path / "run"
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                             "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts)
    assert code == 0, stderr
    own = json.loads((run / "accelerate.json").read_text(encoding="utf-8"))
    assert own == launch.accelerate_config(num_processes=1, mixed_precision="no", gpu_ids=None)
    recorded = fake_sd.recorded()["accelerate"]
    assert recorded["config_file"] == str((run / "accelerate.json").resolve())
    assert recorded["gpu_ids"] == "all" and recorded["num_processes"] == 1
    command = json.loads((run / "run.json").read_text(encoding="utf-8"))["command"]
    assert command[3:5] == ["--config_file", str((run / "accelerate.json").resolve())]


def test_a_given_accelerate_config_is_passed_and_none_is_written(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    given = tmp_path / "mine.yaml"
    given.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\n"
                     "num_machines: 1\nnum_processes: 1\n", encoding="utf-8")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--dry-run", "--accelerate-config", given)
    assert code == 0, stderr
    assert not (run / "accelerate.json").exists()
    assert f"--config_file {given.resolve()} sdxl_train_network.py" in " ".join(stdout.split())


def _probe(tmp_path: Path, hf_home: Path, argv_edit: bool = False) -> dict[str, str]:
    """What the training script sees when train's launch (one process) runs it, with the real
    accelerate and `hf_home` as HF_HOME; `argv_edit` leaves out --config_file (the old launch)."""
    script = tmp_path / "sd"
    script.mkdir(exist_ok=True)
    (script / launch.SCRIPT).write_text(PROBE, encoding="utf-8")
    own = tmp_path / "accelerate.json"
    launch.write_accelerate_config(launch.accelerate_config(
        num_processes=1, mixed_precision="no", gpu_ids=None), own)
    command = launch.train_command(sys.executable, script, tmp_path / "c.toml",
                                   tmp_path / "d.toml", accelerate_config=own, cpu_threads=1)
    argv = command.argv
    if argv_edit:
        start = argv.index("--config_file")
        argv = argv[:start] + argv[start + 2:]
    env = {**os.environ, **command.env, "HF_HOME": str(hf_home)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(argv, cwd=command.cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    if not lines:
        return {"failed": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    seen: dict[str, str] = json.loads(lines[-1][len("PROBE "):])
    return seen


def test_a_users_default_accelerate_config_changes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("accelerate.commands.launch")
    clean = _probe(tmp_path, tmp_path / "no-config")
    assert "failed" not in clean and "CUDA_VISIBLE_DEVICES" not in clean
    assert clean["ACCELERATE_MIXED_PRECISION"] == "no"
    for name, text in HOSTILE.items():
        home = tmp_path / name.replace(" ", "-")
        _user_config(home, text)
        assert _probe(tmp_path, home) == clean, name
    old = _probe(tmp_path, tmp_path / "gpu-1", argv_edit=True)  # the probe tells them apart
    assert old.get("CUDA_VISIBLE_DEVICES") == "1"
