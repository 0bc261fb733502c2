"""`train` as a user runs it, end to end on the stand-in sd-scripts: what it renders, launches,
records, says and keeps (judges training/train.py with tests/test_train_launch.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, parse_nvidia_smi
from medsynth_kohya.sdscripts import checkout
from medsynth_kohya.sdscripts.launch import Machines, StepProgress
from medsynth_kohya.training.train import Cluster, train
from medsynth_kohya.training.train import check as train_check

from .conftest import REPO, invoke, this_python_at
from .disk import checksums
from .fakes import FakeSd


def _record(run: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run / "run.json").read_text(encoding="utf-8"))
    return data


def test_a_run_stopped_after_its_last_state_is_not_sent_to_resume(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts saves the final state, then the final LoRA: a run that fails between the two
    (a full disk) holds a state at its last step, which sd-scripts cannot go on from (it
    asserts max_train_steps > the state's step). The advice is to start over, and --resume is
    refused before anything is launched or changed."""
    monkeypatch.setenv("FAKE_SD_MODE", "final-save-fails")
    run = tmp_path / "run"
    tools = ("--run-dir", run, "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=4", "--set", "save_every_n_steps=2", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr, stdout + stderr
    assert ("sd-scripts exited with 1 and wrote no LoRA file: OSError: [Errno 28] No space "
            "left on device; its newest state, melanoma-state, is at step 4 of 4, which "
            "sd-scripts cannot go on from: fix what failed and start over with --resume "
            "--force (same settings) or --force (new ones) (log: ") in said, said
    assert "with --resume," not in said
    fake_sd.record.unlink()
    before = checksums(run)
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", *tools)
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert line == (f"Error: the newest saved state in {run / 'output'}, melanoma-state, is at "
                    "step 4 of 4, which sd-scripts cannot go on from; --resume "
                    "--force starts the run over with its own settings"), line
    assert not fake_sd.record.exists() and checksums(run) == before
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", "--force", *tools)
    assert code == 0, stdout + stderr
    assert _record(run)["status"] == "succeeded" and "--resume" not in fake_sd.recorded()["argv"]


def test_a_dry_run_warns_of_what_this_run_needs_and_nothing_else(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor's warnings that concern training only: no line for the checks that passed,
    none for the Hub token (push needs it, not train), and the free disk counted where the run
    folder is made, not in the current folder."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf home"))  # no stored login either
    small, here = tmp_path / "small disk", tmp_path / "here"
    small.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    real = shutil.disk_usage

    def usage(path: str | os.PathLike[str]) -> Any:
        found = real(path)
        return found._replace(free=5 * 2**30) if Path(path).resolve().is_relative_to(
            small) else found._replace(free=max(found.free, 100 * 2**30))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    sd = fake_sd.sd_scripts
    unknown = (f"sd-scripts: {sd}: git reads no commit of its own (no git clone, or no git), "
               f"so it is not checked against {checkout.PINNED_RELEASE}; found by --sd-scripts; "
               "medsynth-kohya install-sd-scripts --dir NEW (a new folder), then point "
               "--sd-scripts at NEW")
    run = small / "run"
    result = train(prepared, "cpu-smoke", run_dir=run, dry_run=True, sd_scripts=sd,
                   python=sys.executable)
    assert result.warnings == (
        unknown, f"disk: 5.0 GiB free in {run}; about 10 GiB needed; free space or choose "
        "another work folder")
    result = train(prepared, "cpu-smoke", run_dir=here / "run", dry_run=True, sd_scripts=sd,
                   python=sys.executable)
    assert result.warnings == (unknown,)


def test_processes_on_a_machine_without_gpus_would_stop_a_real_launch(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """A GPU preset asked for 2 processes where nvidia-smi finds no GPU: the dry run says the
    launch would stop (it may be preparing for another machine); the real launch refuses."""
    options: dict[str, Any] = {"sd_scripts": fake_sd.sd_scripts, "python": sys.executable,
                               "gpus": 2, "detect": lambda: []}
    line = ("2 training processes need 2 GPUs; nvidia-smi found none on this machine: train "
            "on a machine with 2 GPUs, or ask for fewer with --gpus")
    result = train(prepared, "t4-16gb", run_dir=tmp_path / "dry", dry_run=True, **options)
    assert f"a real run would stop at: {line}" in result.warnings, result.warnings
    with pytest.raises(UserError) as refused:
        train(prepared, "t4-16gb", run_dir=tmp_path / "real", **options)
    assert str(refused.value).endswith(f" | {line}; fix each, or train on a machine "
                                       "that can (--dry-run plans it here)"), refused.value
    assert not fake_sd.record.exists()


def test_the_python_given_is_the_one_that_launches(prepared: Path, fake_sd: FakeSd,
                                                   tmp_path: Path) -> None:
    python = this_python_at(tmp_path / "sd venv" / "bin" / "python")
    result = train(prepared, "cpu-smoke", run_dir=tmp_path / "run", sd_scripts=fake_sd.sd_scripts,
                   python=str(python))
    assert result.status == "succeeded", result.message
    assert result.command.argv[0] == str(python)
    record = _record(tmp_path / "run")
    assert record["command"] == result.command.argv
    assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())


def test_a_python_gone_at_launch_is_a_failed_run_with_its_reason(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """The Python passed every check, then went away just before the launch (a venv being
    rebuilt): nothing ran; the run failed, saying why, and its record says when it ended."""
    python = this_python_at(tmp_path / "sd venv" / "bin" / "python")
    run = tmp_path / "run"
    result = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                   python=str(python), on_launch=lambda _: python.unlink())
    assert result.status == "failed" and not fake_sd.record.exists()
    assert result.message.startswith(f"cannot start {python}: "), result.message
    assert result.advice == ("it saved no training state to resume from: fix what failed and "
                             "start over with --resume --force (same settings) or --force (new "
                             "ones)")
    record = _record(run)
    assert record["status"] == "failed" and record["end"]
    assert record["message"] == f"{result.message}; {result.advice}"


def _follower(prepared: Path, fake: FakeSd, run: Path, preset: str = "cpu-smoke",
              **options: Any) -> Any:
    return train(prepared, preset, run_dir=run, sd_scripts=fake.sd_scripts,
                 python=sys.executable, detect=lambda: [],
                 cluster=Cluster(Machines(2, 1, "127.0.0.1"), wait_s=60), **options)


@pytest.mark.parametrize(("precision", "given"), [("fp16", None), ("no", "absent")])
def test_a_following_machine_s_dry_run_shows_its_own_launch(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, precision: str,
        given: str | None) -> None:
    """Machine 1's dry run: its accelerate command with the preset's mixed precision
    (sd-scripts' "no" for a preset that sets none), after a note saying it waits for machine 0."""
    preset = "t4-16gb"
    if given == "absent":
        text = (REPO / "configs" / "cpu-smoke.toml").read_text(encoding="utf-8")
        preset = str(tmp_path / "mine.toml")
        Path(preset).write_text(text.replace('mixed_precision = "no"\n', ""), encoding="utf-8")
    run = tmp_path / "run"
    result = _follower(prepared, fake_sd, run, preset, dry_run=True)
    assert result.status == "dry-run"
    assert result.warnings == (f"machine 1 waits for machine 0's go in {run / 'nodes'}, then "
                               "runs the training command this dry run prints",)
    argv = result.command.argv
    assert argv[argv.index("--mixed_precision") + 1] == precision
    assert "--resume" not in argv and not fake_sd.record.exists()


def test_a_following_machine_says_how_its_launch_ended_and_resumes_with_machine_zero(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 1 of 2 in a thread of this process: its failure names the trainer's error and
    its log; resumed with machine 0, it goes on from machine 0's state and says where the LoRA
    is written."""
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # both machines fail at step 3
    run = tmp_path / "run"
    overrides = ["max_train_steps=5", "save_every_n_steps=2"]

    seen: list[str] = []

    def report(_: StepProgress) -> None:
        seen.append(json.loads((run / "nodes" / "machine-1.json").read_text())["status"])

    def both(**options: Any) -> tuple[Any, Any]:
        followed: list[Any] = []
        thread = threading.Thread(target=lambda: followed.append(_follower(
            prepared, fake_sd, run, on_progress=report if options.get("resume") else None,
            **options)))
        thread.start()
        try:
            leader = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                           python=sys.executable, detect=lambda: [],
                           cluster=Cluster(Machines(2, 0, "127.0.0.1"), wait_s=60), **options)
        finally:
            thread.join(120)
        return leader, followed[0]

    leader, follower = both(overrides=overrides)
    assert (leader.status, follower.status) == ("failed", "failed")
    log = run / "train-machine-1.log"
    assert follower.message == ("accelerate on machine 1 exited with 1: RuntimeError: fake: "
                                f"CUDA out of memory (log: {log})")
    assert follower.log == log and log.is_file()
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    leader, follower = both(resume=True)
    assert (leader.status, follower.status) == ("succeeded", "succeeded")
    assert follower.message == ("machine 1 finished; machine 0 writes the LoRA into "
                                f"{run / 'output'}")
    assert seen and set(seen) == {"running"}  # its report while it trains
    argv = json.loads(Path(f"{fake_sd.record}.machine-1").read_text(encoding="utf-8"))["argv"]
    assert Path(argv[argv.index("--resume") + 1]).name == "melanoma-run-step00000002-state"


def test_check_before_preparing_judges_the_gpus_it_is_given(fake_sd: FakeSd,
                                                           tmp_path: Path) -> None:
    """`check` (reproduce's pre-flight, before the prepared folder exists) refuses a GPU the
    preset does not fit, and returns the launch's refusals and warnings for a GPU that fits."""
    small, fits = Gpu("NVIDIA GeForce GTX 1650", 4096, (7, 5)), Gpu("Tesla T4", 15360, (7, 5))
    options: dict[str, Any] = {"class_name": "melanoma", "target_steps": None, "images": 10,
                               "repeats": 2, "sd_scripts": fake_sd.sd_scripts,
                               "python": sys.executable}
    with pytest.raises(UserError, match=r"^NVIDIA GeForce GTX 1650 has 4 GiB; this preset "
                       "needs 15 GiB"):
        train_check("t4-16gb", [], tmp_path / "run", detect=lambda: [small], **options)
    problems, warnings = train_check("t4-16gb", [], tmp_path / "run", detect=lambda: [fits],
                                     **options)
    assert [line.split(":")[0] for line in problems] == ["torch"]  # the stand-in's, no CUDA
    assert [line.split(":")[0] for line in warnings] == ["sd-scripts"]  # at no known commit
    assert not (tmp_path / "run").exists() and not fake_sd.record.exists()


def test_a_gpu_whose_memory_and_capability_nvidia_smi_does_not_know_is_not_refused(
        fake_sd: FakeSd, tmp_path: Path) -> None:
    """A unified-memory board's nvidia-smi prints [N/A] for its memory (some for its compute
    capability too): unknown is not 0 GiB nor "no bf16", so a bf16 preset is not refused."""
    unknown = parse_nvidia_smi("NVIDIA GH200 480GB, [N/A], [N/A]")
    problems, _ = train_check("h100-80gb", [], tmp_path / "run", detect=lambda: unknown,
                              class_name="melanoma", target_steps=None, images=10, repeats=2,
                              sd_scripts=fake_sd.sd_scripts, python=sys.executable)
    assert [line.split(":")[0] for line in problems] == ["torch"]  # the stand-in's, no CUDA


def test_the_dataset_config_follows_the_run_s_options(prepared: Path, fake_sd: FakeSd,
                                                      tmp_path: Path) -> None:
    """sd-scripts takes keep_tokens and the batch size from the dataset config: a --set value
    is written there, and a preset that sets no train_batch_size gets sd-scripts' 1."""
    text = (REPO / "configs" / "cpu-smoke.toml").read_text(encoding="utf-8")
    preset = tmp_path / "unbatched.toml"
    preset.write_text(text.replace("train_batch_size = 1\n", ""), encoding="utf-8")
    result = train(prepared, str(preset), overrides=["keep_tokens=1"], run_dir=tmp_path / "run",
                   sd_scripts=fake_sd.sd_scripts, python=sys.executable)
    assert result.status == "succeeded", result.message
    dataset = toml.load(result.dataset_config)
    assert dataset["general"]["keep_tokens"] == 1
    assert dataset["datasets"][0]["batch_size"] == 1


def test_resuming_a_run_whose_process_died_says_where_it_goes_on_from(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A record left `running` (its process killed outright, no lock held): --resume says who
    left it and goes on from its newest state."""
    monkeypatch.setenv("FAKE_SD_MODE", "crash")  # fails at step 3, after the state of step 2
    run = tmp_path / "run"
    options: dict[str, Any] = {"run_dir": run, "sd_scripts": fake_sd.sd_scripts,
                               "python": sys.executable}
    first = train(prepared, "cpu-smoke", overrides=["max_train_steps=5", "save_every_n_steps=2"],
                  **options)
    assert first.status == "failed"
    record = _record(run)
    start = record["start"]
    (run / "run.json").write_text(json.dumps({**record, "status": "running", "pid": 4242,
                                              "host": "gpu-node-7"}), encoding="utf-8")
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    again = train(prepared, resume=True, **options)
    assert again.status == "succeeded", again.message
    assert again.warnings[0] == (f"the run in {run} was left running by pid 4242 on gpu-node-7, "
                                 f"started {start}, which no longer runs; resuming from "
                                 "melanoma-step00000002-state")


def test_every_process_asked_for_is_launched(prepared: Path, fake_sd: FakeSd,
                                            tmp_path: Path) -> None:
    """--gpus 2 on a machine with two fitting GPUs: accelerate starts two processes, on them."""
    t4 = Gpu("Tesla T4", 15360, (7, 5))
    result = train(prepared, "t4-16gb", run_dir=tmp_path / "run", dry_run=True, gpus=2,
                   detect=lambda: [t4, t4], sd_scripts=fake_sd.sd_scripts,
                   python=sys.executable)
    argv = result.command.argv
    assert argv[argv.index("--num_processes") + 1] == "2"
    assert argv[argv.index("--gpu_ids") + 1] == "0,1"
    accelerate = json.loads((tmp_path / "run" / "accelerate.json").read_text(encoding="utf-8"))
    assert accelerate["num_processes"] == 2


def test_a_cpu_preset_asked_for_more_processes_is_refused(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--gpus", 2,
                                  "--run-dir", tmp_path / "run", "--sd-scripts",
                                  fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert " ".join(stderr.split()) == ('Error: preset cpu-smoke runs on the CPU (device = '
                                        '"cpu"), in one process, not 2: leave out --gpus')
    assert not fake_sd.record.exists() and not (tmp_path / "run" / "run.json").exists()



def test_resume_without_run_dir_passes_over_dry_runs(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume alone continues the newest run that trained on PREPARED: a dry run never
    trained, so with only dry runs under runs/ there is nothing to resume."""
    monkeypatch.chdir(tmp_path)
    tools: dict[str, Any] = {"sd_scripts": fake_sd.sd_scripts, "python": sys.executable}
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError) as refused:
        train(prepared, resume=True, **tools)
    assert str(refused.value) == (f"--resume found no earlier run of {prepared} in runs/; pass "
                                  "--run-dir with the run to continue")
    train(prepared, "cpu-smoke", run_dir=Path("runs") / "looked", dry_run=True, **tools)
    with pytest.raises(UserError) as refused:
        train(prepared, resume=True, **tools)
    again = f"medsynth-kohya train {prepared} --run-dir runs/looked --resume --force"
    assert str(refused.value) == (f"runs/ holds only dry runs of {prepared}, nothing to resume: "
                                  f"train the newest with `{again}`, or train without "
                                  "--dry-run and --resume to start a new run")
    assert not fake_sd.record.exists()


def test_several_machines_without_machine_zero_s_address_are_one_line(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--num-machines", 2, "--run-dir", tmp_path / "run",
                                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert " ".join(stderr.split()) == ("Error: 2 machines need --main-process-ip, the address "
                                        "of the machine of rank 0 that every machine can reach")
    assert not (tmp_path / "run").exists() and not fake_sd.record.exists()


def test_a_machine_that_cannot_train_says_every_problem_on_one_line(
        runner: CliRunner, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its problems were printed one a line; now they are counted on one line, each with its
    fix, as reproduce's are."""
    from .conftest import counted_problems, one_line_error

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    line = one_line_error(*invoke(runner, "train", prepared, "--preset", "t4-16gb", "--run-dir",
                                  tmp_path / "run", "--sd-scripts", tmp_path / "missing"))
    problems = counted_problems(line, "this machine cannot run the training of --preset t4-16gb")
    assert any(p.startswith("GPU: no NVIDIA GPU found (nvidia-smi); ") for p in problems), line
    assert any(p.startswith(f"sd-scripts: sd-scripts not found at {tmp_path / 'missing'}")
               for p in problems), line
    assert line.endswith("; fix each, or train on a machine that can (--dry-run "
                         "plans it here)"), line
    assert not (tmp_path / "run").exists()


def test_settings_the_training_cannot_take_are_named_on_one_line(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    from .conftest import counted_problems, one_line_error

    line = one_line_error(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "no_such_option=1", "--set", "max_train_steps=-3",
                                  "--run-dir", tmp_path / "run", "--sd-scripts",
                                  fake_sd.sd_scripts, "--python", sys.executable))
    problems = counted_problems(line, "the training of --preset cpu-smoke cannot run with these "
                               "settings")
    assert any("no_such_option" in p for p in problems), line
    assert any("max_train_steps" in p for p in problems), line
    assert line.endswith("; fix each"), line


@pytest.mark.parametrize("extra", [(), ("--dry-run",), ("--resume",)])
def test_run_dir_cannot_be_the_prepared_folder_it_trains_on(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, extra: tuple[str, ...]) -> None:
    """It was refused as "being read by" its own pid, telling the user to wait for itself."""
    before = checksums(prepared)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", prepared / ".", "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable, *extra)
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert "is being read by" not in line and str(os.getpid()) not in line, line
    assert (f"--run-dir {prepared} is the prepared folder train reads: train writes the run "
            "into a folder of its own; give another --run-dir, or leave it out") in line, line
    assert checksums(prepared) == before and not fake_sd.record.exists()
