"""The launch layer against a stand-in sd-scripts and accelerate; GPU detection."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu, detect_gpus, parse_nvidia_smi
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import StepProgress

from .fakes import FakeSd, interrupt_after


def _command(fake: FakeSd, **options: Any) -> launch.Command:
    return launch.train_command(sys.executable, fake.sd_scripts, fake.config, fake.dataset,
                                accelerate_config=fake.accelerate_config, **options)


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process `pid` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# Command lines


def test_accelerate_args_are_explicit() -> None:
    assert launch.accelerate_args(num_processes=1, mixed_precision="fp16", gpu_ids=None,
                                  cpu_threads=4) == [
        "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "fp16",
        "--dynamo_backend", "no", "--num_cpu_threads_per_process", "4"]
    assert launch.accelerate_args(num_processes=2, mixed_precision="bf16", gpu_ids=None,
                                  cpu_threads=8)[-3:] == ["--multi_gpu", "--gpu_ids", "0,1"]
    assert launch.accelerate_args(num_processes=2, mixed_precision="bf16", gpu_ids=[2, 3],
                                  cpu_threads=8)[-2:] == ["--gpu_ids", "2,3"]


@pytest.mark.parametrize("options", [
    {"num_processes": 1, "mixed_precision": "fp32", "gpu_ids": None, "cpu_threads": 1},
    {"num_processes": 2, "mixed_precision": "no", "gpu_ids": [0], "cpu_threads": 1},
    {"num_processes": 0, "mixed_precision": "no", "gpu_ids": None, "cpu_threads": 1},
])
def test_accelerate_args_refuse_what_accelerate_would(options: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        launch.accelerate_args(**options)


def test_train_command_and_shell_line(tmp_path: Path) -> None:
    command = launch.train_command("/env/bin/python", tmp_path / "sd scripts", Path("/r/c.toml"),
                                   Path("/r/d.toml"), accelerate_config=Path("/r/a.json"),
                                   cpu_threads=2, resume=Path("/r/s-state"))
    assert command.argv == [
        "/env/bin/python", "-m", "accelerate.commands.launch", "--config_file", "/r/a.json",
        "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "2", "sdxl_train_network.py", "--config_file",
        "/r/c.toml", "--dataset_config", "/r/d.toml", "--resume", "/r/s-state"]
    assert command.cwd == tmp_path / "sd scripts"
    assert command.env["PYTHONUNBUFFERED"] == "1"
    line = command.shell()
    assert line.startswith(f"cd '{tmp_path / 'sd scripts'}' && PYTHONUNBUFFERED=1 ")
    assert line.endswith("sdxl_train_network.py --config_file /r/c.toml --dataset_config "
                         "/r/d.toml --resume /r/s-state")


def test_run_passes_argv_cwd_and_env_exactly(fake_sd: FakeSd) -> None:
    state = fake_sd.output / "melanoma-step00000002-state"
    state.mkdir(parents=True)
    command = _command(fake_sd, num_processes=2, mixed_precision="bf16", gpu_ids=[0, 1],
                       cpu_threads=3, resume=state)
    outcome = launch.run(command, fake_sd.log)
    assert outcome.returncode == 0 and not outcome.interrupted
    recorded = fake_sd.recorded()
    assert recorded["argv"] == ["sdxl_train_network.py", "--config_file", str(fake_sd.config),
                                "--dataset_config", str(fake_sd.dataset), "--resume", str(state)]
    assert Path(recorded["cwd"]) == fake_sd.sd_scripts.resolve()
    assert recorded["env"] == {"OMP_NUM_THREADS": "3", "ACCELERATE_MIXED_PRECISION": "bf16",
                               "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONUNBUFFERED": "1",
                               "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    assert recorded["accelerate"] == {
        "num_processes": 2, "num_machines": 1, "mixed_precision": "bf16",
        "dynamo_backend": "no", "num_cpu_threads_per_process": 3, "multi_gpu": True,
        "gpu_ids": "0,1", "config_file": str(fake_sd.accelerate_config)}
    assert not any("not passed to `accelerate launch`" in line for line in outcome.tail)


def test_single_process_default_threads(fake_sd: FakeSd) -> None:
    outcome = launch.run(_command(fake_sd), fake_sd.log)
    assert outcome.returncode == 0
    recorded = fake_sd.recorded()
    assert recorded["accelerate"]["multi_gpu"] is False
    assert recorded["accelerate"]["gpu_ids"] == "all"  # from the run's accelerate config
    assert recorded["env"]["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert int(recorded["env"]["OMP_NUM_THREADS"]) >= 1
    assert "--resume" not in recorded["argv"]


# Progress


@pytest.mark.parametrize(("line", "expected"), [
    ("steps:   0%|          | 0/10 [00:00<?, ?it/s]", StepProgress(0, 10, None, None, None)),
    ("steps:  10%|█         | 1/10 [00:05<00:45,  5.00s/it, avr_loss=0.123]",
     StepProgress(1, 10, 0.123, 5.0, 45.0)),
    ("steps:  70%|███████   | 7/10 [00:02<00:00,  3.50it/s, avr_loss=1.23e-5]",
     StepProgress(7, 10, 1.23e-5, 1 / 3.5, 0.0)),
    ("steps:   0%|          | 7/7200 [1:06:40<1141:44:45, 571.43s/it, Keys Scaled=0, "
     "Average key norm=0.1, avr_loss=0.0871]",
     StepProgress(7, 7200, 0.0871, 571.43, 1141 * 3600 + 44 * 60 + 45.0)),
    ("steps:  33%|###3      | 1/3 [00:00<00:00, 5309.25it/s, avr_loss=0.5]",
     StepProgress(1, 3, 0.5, 1 / 5309.25, 0.0)),
])
def test_parse_progress(line: str, expected: StepProgress) -> None:
    parsed = launch.parse_progress(line)
    assert parsed is not None
    assert (parsed.step, parsed.total) == (expected.step, expected.total)
    for name in ("loss", "seconds_per_step", "eta_seconds"):
        value, wanted = getattr(parsed, name), getattr(expected, name)
        assert value == (None if wanted is None else pytest.approx(wanted)), name


@pytest.mark.parametrize("line", [
    "validation steps:  50%|█████     | 1/2 [00:01<00:01,  1.00s/it, val_avg_loss=0.2, "
    "timestep=200]",
    "epoch validation steps:  50%|█████     | 1/2 [00:01<00:01,  1.00s/it]",
    "100%|██████████| 5/5 [00:00<00:00, 50.00it/s]",
    "INFO     steps: 10 per epoch",
    "",
])
def test_parse_progress_ignores_other_bars_and_lines(line: str) -> None:
    assert launch.parse_progress(line) is None


def test_parse_progress_nan_loss() -> None:
    parsed = launch.parse_progress("steps: 100%|██████████| 10/10 [00:50<00:00,  5.00s/it, "
                                   "avr_loss=nan]")
    assert parsed is not None and parsed.loss is not None and math.isnan(parsed.loss)


def test_stream_splits_on_cr_and_lf_across_chunk_boundaries() -> None:
    data = ("INFO     start ✔\r\n\rsteps:   0%|          | 0/2 [00:00<?, ?it/s]"
            "\rsteps:  50%|█████     | 1/2 [00:01<00:01,  1.00s/it, avr_loss=0.5]"
            "\rsteps: 100%|██████████| 2/2 [00:02<00:00,  1.00s/it, avr_loss=0.25]  "
            "INFO     saved\nno newline at the end").encode()
    sink = io.StringIO()
    seen: list[StepProgress] = []
    lines: list[str] = []
    stream = launch._Stream(sink, seen.append, lines.append)
    for index in range(len(data)):
        stream.feed(data[index:index + 1])
    stream.feed(b"", final=True)
    assert [(p.step, p.loss) for p in seen] == [(0, None), (1, 0.5), (2, 0.25)]
    assert lines == ["INFO     start ✔", "INFO     saved", "no newline at the end"]
    assert sink.getvalue().splitlines()[0] == "INFO     start ✔"
    assert len(sink.getvalue().splitlines()) == 6
    assert list(stream.tail) == ["INFO     start ✔", "steps: 100%|██████████| 2/2 [00:02<00:00,  "
                           "1.00s/it, avr_loss=0.25]", "INFO     saved", "no newline at the end"]


def test_run_reports_progress_and_logs_everything(fake_sd: FakeSd) -> None:
    seen: list[StepProgress] = []
    lines: list[str] = []
    fake_sd.log.write_text("earlier run\n")
    outcome = launch.run(_command(fake_sd), fake_sd.log, on_progress=seen.append,
                         on_line=lines.append)
    assert outcome.returncode == 0
    assert sorted({p.step for p in seen if p.loss is not None}) == [1, 2, 3, 4]
    assert {p.total for p in seen} == {4}
    assert outcome.last is not None and outcome.last.step == 4
    assert outcome.last.loss == pytest.approx(0.125)
    assert "INFO     loading model for process 0/1 ✔" in lines
    log = fake_sd.log.read_text(encoding="utf-8")
    assert log.startswith("earlier run\n# ")
    assert "INFO     model saved." in log and "INFO     loading model" in log
    assert sum(line.startswith("steps:") for line in log.splitlines()) >= 5
    assert [path.name for path in launch.lora_files(fake_sd.output, "melanoma")] == [
        "melanoma.safetensors"]


def test_steps_saves_and_state(fake_sd: FakeSd) -> None:
    fake_sd.write_config(save_every_n_steps=2, save_state=True)
    assert launch.run(_command(fake_sd), fake_sd.log).returncode == 0
    assert [p.name for p in launch.lora_files(fake_sd.output, "melanoma")] == [
        "melanoma-step00000002.safetensors", "melanoma-step00000004.safetensors",
        "melanoma.safetensors"]
    assert launch.latest_state(fake_sd.output, "melanoma") == fake_sd.output / "melanoma-state"


# Failures


def test_no_data_exits_zero_without_lora(fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "no-data")
    outcome = launch.run(_command(fake_sd), fake_sd.log)
    assert outcome.returncode == 0 and outcome.last is None
    assert launch.lora_files(fake_sd.output, "melanoma") == []
    assert any(launch.NO_DATA in line for line in outcome.tail)
    assert outcome.error is not None and outcome.error.startswith(launch.NO_DATA)


def test_crash_keeps_the_last_lines(fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    outcome = launch.run(_command(fake_sd), fake_sd.log)
    assert outcome.returncode != 0 and not outcome.interrupted
    assert outcome.last is not None and outcome.last.step == 2
    assert any("RuntimeError: fake: CUDA out of memory" in line for line in outcome.tail)
    assert any(line.startswith("steps:") for line in outcome.tail)
    assert "Traceback (most recent call last):" in outcome.tail  # split off the bar's line
    assert len(outcome.tail) <= launch.TAIL_LINES
    assert launch.lora_files(fake_sd.output, "melanoma") == []
    # accelerate's own CalledProcessError comes last: the trainer's error is the reason
    assert outcome.tail[-1].startswith("subprocess.CalledProcessError")
    assert outcome.error == "RuntimeError: fake: CUDA out of memory"


_PRINTS_ERRORS = r"""
import sys
print("INFO     loading model")
print("[rank1]: Traceback (most recent call last):")
print('[rank1]:   File "train_network.py", line 9, in <module>')
print("[rank1]:     main()")
print("[rank1]: ValueError: first failure")
print("2025-01-01 12:00:00 ERROR    could not save the state          train_util.py:5123")
print("Traceback (most recent call last):")
print('  File "sdxl_train_network.py", line 3, in <module>')
print("    x = model.to(device)")
print("        ^^^^^^^^^^^^^^^^")
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.")
print("More text of that message")
print("Traceback (most recent call last):")
print('  File "accelerate/commands/launch.py", line 1, in simple_launcher')
print("subprocess.CalledProcessError: Command '['python', 'x.py']' returned non-zero exit "
      "status 1.")
sys.exit(1)
"""


_CHILD_FAILED = r"""
print("Traceback (most recent call last):")
print('  File "torch/distributed/run.py", line 1, in main')
print("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: sdxl_train_network.py "
      "FAILED")
"""


_WRAPPED_ERROR = "\n".join([  # as sd-scripts' rich log handler wraps a long message
    "print('2026-12-07 14:19:17 ERROR    No data found. Please verify arguments (train_data_dir "
    "must be the parent of folders with images) /          train_network.py:577')",
    "print('                             画像がありません。')",
    "print('                    INFO     short info                    train_network.py:580')",
    "print('                             not part of the error')"])


@pytest.mark.parametrize(("script", "expected"), [
    (_PRINTS_ERRORS, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB."),
    (_PRINTS_ERRORS.split("print(\"Traceback")[0] + _CHILD_FAILED, "ValueError: first failure"),
    ("print('ERROR    No data found. Please verify arguments    train_util.py:1')",
     "No data found. Please verify arguments"),
    ("import sys; print('INFO     ok'); sys.exit(3)", None),
    (_WRAPPED_ERROR, "No data found. Please verify arguments (train_data_dir must be the "
     "parent of folders with images) / 画像がありません。"),
])
def test_the_last_error_printed_is_the_outcomes(tmp_path: Path, script: str,
                                                expected: str | None) -> None:
    outcome = launch.run(launch.Command([sys.executable, "-c", script], tmp_path),
                         tmp_path / "x.log")
    assert outcome.error == expected


def test_ctrl_c_stops_the_training_and_keeps_its_state(
        fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    fake_sd.write_config(max_train_steps=60, save_every_n_steps=1, save_state=True)
    on_progress = interrupt_after(2)
    outcome = launch.run(_command(fake_sd), fake_sd.log, on_progress=on_progress)
    assert outcome.interrupted
    assert outcome.last is not None and 2 <= outcome.last.step < 60
    assert _gone(fake_sd.recorded()["pid"])
    state = launch.latest_state(fake_sd.output, "melanoma")
    assert state is not None and state.name.startswith("melanoma-step")
    steps = [json.loads((p / "train_state.json").read_text())["current_step"]
             for p in fake_sd.output.glob("*-state") if (p / "random_states_0.pkl").is_file()]
    assert json.loads((state / "train_state.json").read_text())["current_step"] == max(steps)
    assert not (fake_sd.output / "melanoma.safetensors").exists()


def test_a_training_that_ignores_sigint_is_terminated(
        fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SD_MODE", "stubborn")
    monkeypatch.setattr(launch, "STOP_GRACE_S", 0.5)
    fake_sd.write_config(max_train_steps=100)
    on_progress = interrupt_after(1)
    outcome = launch.run(_command(fake_sd), fake_sd.log, on_progress=on_progress)
    # accelerate (the group leader) exits on SIGINT; the training ignores it, keeps the output
    # open, and only the SIGTERM to the group stops it before its 100 steps and final save.
    assert outcome.interrupted and outcome.returncode != 0
    assert outcome.last is not None and 1 <= outcome.last.step < 100
    assert _gone(fake_sd.recorded()["pid"])
    assert not (fake_sd.output / "melanoma.safetensors").exists()


@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_a_stop_reaches_the_training_when_sigint_was_ignored_at_start(
        fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A job a shell started in the background inherits SIGINT ignored, and so would its
    children: the stop must still end the training at once, not after STOP_GRACE_S."""
    monkeypatch.setenv("FAKE_SD_MODE", "slow")  # 0.1 s a step: 400 steps take 40 s
    monkeypatch.setattr(launch, "STOP_GRACE_S", 20.0)
    fake_sd.write_config(max_train_steps=400, save_every_n_steps=1, save_state=True)

    stopped: list[int] = []

    def stop(progress: StepProgress) -> None:
        if progress.step >= 2 and not stopped:  # once, as the CLI's SIGTERM handler raises it
            stopped.append(progress.step)
            raise KeyboardInterrupt

    outcomes: list[launch.RunOutcome] = []

    def run() -> None:
        outcomes.append(launch.run(_command(fake_sd), fake_sd.log, on_progress=stop))

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        started = time.monotonic()
        if where == "main thread":
            run()
        else:
            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        took = time.monotonic() - started
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # still ignored here
    finally:
        signal.signal(signal.SIGINT, before)
    outcome, = outcomes
    assert outcome.interrupted and took < 10, took
    assert outcome.last is not None and outcome.last.step < 100
    assert _gone(fake_sd.recorded()["pid"])
    assert not (fake_sd.output / "melanoma.safetensors").exists()


def test_unstartable_program_is_a_user_error(tmp_path: Path) -> None:
    command = launch.Command([str(tmp_path / "missing-python")], tmp_path, {})
    with pytest.raises(UserError, match="cannot start"):
        launch.run(command, tmp_path / "log.txt")


# Files sd-scripts wrote


def _touch(path: Path, mtime: int, folder: bool = False) -> None:
    if folder:
        path.mkdir()
    else:
        path.write_bytes(b"x")
    os.utime(path, ns=(mtime, mtime))


def _save(path: Path, mtime: int, step: int | None = None) -> None:
    """A LoRA save as sd-scripts writes it (its global step in the header's `ss_steps`; none
    with --no_metadata), its time set as a copy may leave it."""
    metadata = {} if step is None else {"ss_steps": str(step)}
    header = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    os.utime(path, ns=(mtime, mtime))


def test_lora_files_in_save_order_final_last(tmp_path: Path) -> None:
    """By the step each save records, whatever the times a copy (cp -r, a synced folder)
    gave them: here the higher the step, the older the time."""
    names = [("melanoma.safetensors", 300), ("melanoma-000002.safetensors", 200),
             ("melanoma-step00000150.safetensors", 150), ("melanoma-000001.safetensors", 100),
             ("melanoma-step00000050.safetensors", 50)]
    for index, (name, step) in enumerate(names):
        _save(tmp_path / name, (index + 1) * 10**9, step)
    for index, name in enumerate(["melanoma-foo.safetensors", "other-000001.safetensors",
                                  "melanoma-000001.ckpt"]):
        _touch(tmp_path / name, 9 * 10**9 + index)
    _touch(tmp_path / "melanoma-000003-state", 5 * 10**9, folder=True)
    assert [p.name for p in launch.lora_files(tmp_path, "melanoma")] == [
        "melanoma-step00000050.safetensors", "melanoma-000001.safetensors",
        "melanoma-step00000150.safetensors", "melanoma-000002.safetensors",
        "melanoma.safetensors"]
    assert launch.lora_files(tmp_path / "absent", "melanoma") == []


def test_lora_files_without_metadata_by_the_number_in_their_names(tmp_path: Path) -> None:
    for index, name in enumerate(["my-lora-step00000050.safetensors",
                                  "my-lora-step00000010.safetensors",
                                  "my-lora-step00000100.safetensors", "my-lora.safetensors"]):
        _save(tmp_path / name, (9 - index) * 10**9)
    assert [p.name for p in launch.lora_files(tmp_path, "my-lora")] == [
        "my-lora-step00000010.safetensors", "my-lora-step00000050.safetensors",
        "my-lora-step00000100.safetensors", "my-lora.safetensors"]


def _state(folder: Path, step: int, complete: bool = True) -> Path:
    """A state folder as sd-scripts writes it: train_state.json first, the RNG state last."""
    folder.mkdir()
    (folder / "train_state.json").write_text(json.dumps({"current_step": step}))
    (folder / "optimizer.bin").write_bytes(b"o" * 1000)
    if complete:
        (folder / launch.STATE_WRITTEN_LAST).write_bytes(b"r" * 100)
    return folder


def test_latest_state_is_the_most_advanced_complete_one(tmp_path: Path) -> None:
    assert launch.latest_state(tmp_path, "melanoma") is None
    _state(tmp_path / "melanoma-step00000040-state", 40, complete=False)  # cut short
    assert launch.latest_state(tmp_path, "melanoma") is None
    for name, step in [("melanoma-000001-state", 10), ("melanoma-step00000030-state", 30),
                       ("melanoma-000002-state", 20), ("other-state", 99)]:
        _state(tmp_path / name, step)
    (tmp_path / "melanoma-step00000050-state").mkdir()  # nothing written yet
    assert launch.latest_state(tmp_path, "melanoma") == tmp_path / "melanoma-step00000030-state"


def test_replaced_states_are_emptied_then_removed(tmp_path: Path) -> None:
    """Emptied first: a hard link to a removed file, as a synced folder's trash keeps one,
    is left with nothing in it."""
    older = _state(tmp_path / "melanoma-000002-state", 20)
    newest = _state(tmp_path / "melanoma-000004-state", 40)
    cut_short = _state(tmp_path / "melanoma-000003-state", 30, complete=False)
    writing = _state(tmp_path / "melanoma-000006-state", 60, complete=False)
    half_removed = _state(tmp_path / "melanoma-000001-state", 10)
    (half_removed / launch.REMOVING).touch()
    (half_removed / "train_state.json").write_bytes(b"")
    being_written = _state(tmp_path / "melanoma-000008-state", 80, complete=False)
    (being_written / "train_state.json").write_bytes(b"")  # opened by sd-scripts, not yet written
    other = _state(tmp_path / "other-000001-state", 10)
    trash = tmp_path / "trash"
    trash.mkdir()
    os.link(older / "optimizer.bin", trash / "optimizer.bin")
    assert sorted(launch.prune_states(tmp_path, "melanoma")) == [half_removed, older]
    assert not older.exists() and not half_removed.exists()
    assert newest.is_dir() and cut_short.is_dir() and writing.is_dir() and other.is_dir()
    assert being_written.is_dir()
    assert (trash / "optimizer.bin").stat().st_size == 0
    assert launch.latest_state(tmp_path, "melanoma") == newest
    assert launch.prune_states(tmp_path, "melanoma") == []
    assert launch.prune_states(tmp_path / "absent", "melanoma") == []


def test_a_state_completed_while_pruning_is_kept(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts writes its final state right after the last step's: one that completes
    between choosing the newest and removing the others ranks above it and stays."""
    older = _state(tmp_path / "melanoma-step00000020-state", 20)
    _state(tmp_path / "melanoma-step00000030-state", 30)
    chosen = launch.latest_state

    def final_written_meanwhile(output_dir: Path, output_name: str) -> Path | None:
        found = chosen(output_dir, output_name)
        _state(tmp_path / "melanoma-state", 30)
        return found

    monkeypatch.setattr(launch, "latest_state", final_written_meanwhile)
    assert launch.prune_states(tmp_path, "melanoma") == [older]
    assert (tmp_path / "melanoma-state" / launch.STATE_WRITTEN_LAST).is_file()
    monkeypatch.setattr(launch, "latest_state", chosen)
    assert launch.prune_states(tmp_path, "melanoma") == [tmp_path / "melanoma-step00000030-state"]


# GPUs


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi("Tesla T4, 15360 MiB, 7.5\n") == [Gpu("Tesla T4", 15360, (7, 5))]
    two = parse_nvidia_smi("NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0\n"
                           "  NVIDIA A100-SXM4-80GB ,81920 MiB,8.0  \n\n")
    assert two == [Gpu("NVIDIA A100-SXM4-80GB", 81920, (8, 0))] * 2
    assert all(gpu.bf16 for gpu in two)
    assert not parse_nvidia_smi("Tesla T4, 15360 MiB, 7.5")[0].bf16
    unknown = parse_nvidia_smi("NVIDIA GH200 480GB, [N/A], [N/A]")
    assert unknown == [Gpu("NVIDIA GH200 480GB", None, None)] and unknown[0].bf16 is None
    assert parse_nvidia_smi("Tesla T4, 15360, 7.5") == [Gpu("Tesla T4", 15360, (7, 5))]
    # the name is all before the last two fields; a line that is no GPU is passed over
    assert parse_nvidia_smi("Lab board, rev 2, 1024 MiB, 8.6\nWarning: x\n\nT4, 15360, 7.5") == [
        Gpu("Lab board, rev 2", 1024, (8, 6)), Gpu("T4", 15360, (7, 5))]
    assert parse_nvidia_smi("No devices were found\n") == []


@pytest.mark.parametrize(("memory", "mib"), [
    ("80 GiB", 81920), ("1048576 KiB", 1024), ("15360.7 MiB", 15360), ("16 gib", 16384),
    ("80 GB", None), ("MiB", None), ("[N/A]", None)])
def test_memory_is_read_in_the_unit_nvidia_smi_prints(memory: str, mib: int | None) -> None:
    """A GPU's memory in MiB whatever unit it is printed in; an unknown one reads as unknown."""
    assert parse_nvidia_smi(f"Some GPU, {memory}, 8.6") == [Gpu("Some GPU", mib, (8, 6))]


def test_detect_gpus_without_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


@pytest.mark.parametrize(("script", "expected"), [
    ('[ "$1" = "--query-gpu=name,memory.total,compute_cap" ] || exit 2\n'
     'printf "Tesla T4, 15360 MiB, 7.5\\n"', [Gpu("Tesla T4", 15360, (7, 5))]),
    ('echo "NVIDIA-SMI has failed" >&2; exit 9', []),
])
def test_detect_gpus_runs_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     script: str, expected: list[Gpu]) -> None:
    program = tmp_path / "nvidia-smi"
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert detect_gpus() == expected


@pytest.mark.parametrize(("listed", "given", "said"), [
    (False, None, "no NVIDIA GPU found (nvidia-smi)"),
    (False, "", "no NVIDIA GPU found (nvidia-smi)"),  # nothing there for it to hide
    (True, "", "no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES=)"),
    (True, "7", "no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES=7)")])
def test_cuda_visible_devices_is_the_reason_for_no_gpu_only_where_there_are_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: bool, given: str | None,
        said: str) -> None:
    from medsynth_kohya.machine.gpus import hides_gpus, none_seen

    program = tmp_path / "nvidia-smi"
    program.write_text("#!/bin/sh\necho 'Tesla T4, 15360 MiB, 7.5'\n" if listed else
                       "#!/bin/sh\nexit 9\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    if given is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    assert hides_gpus() is (given is not None and listed)
    assert none_seen() == said


def test_an_nvidia_smi_that_hangs_is_given_up_on(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver that is unwell can leave nvidia-smi waiting: past TIMEOUT no GPU is found."""
    from medsynth_kohya.machine import gpus

    program = tmp_path / "nvidia-smi"
    program.write_text("#!/bin/sh\nsleep 3\necho 'Tesla T4, 15360 MiB, 7.5'\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setattr(gpus, "TIMEOUT", 0.5)
    started = time.monotonic()
    assert detect_gpus() == [] and time.monotonic() - started < 2.5


def test_lora_saves_of_a_resumed_run_order_by_the_epochs_done(tmp_path: Path) -> None:
    """sd-scripts counts `ss_steps` from 0 again on --resume (at the start of the state's
    epoch), but `ss_epoch` (the epochs done) goes on: saves order by the run's step they make,
    here 24 steps an epoch, resumed at epoch 2 (step 48), a step save every 10 steps."""
    saves = [("melanoma-000001", 24, 1), ("melanoma-step00000040", 40, 1),
             ("melanoma-000002", 48, 2), ("melanoma-step00000010", 10, 2),
             ("melanoma-000003", 24, 3), ("melanoma-step00000030", 30, 3)]
    for index, (name, step, epoch) in enumerate(saves):
        header = json.dumps({"__metadata__": {
            "ss_steps": str(step), "ss_epoch": str(epoch), "ss_num_batches_per_epoch": "48",
            "ss_gradient_accumulation_steps": "2"}}).encode()
        (tmp_path / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
        os.utime(tmp_path / f"{name}.safetensors", ns=((9 - index) * 10**9,) * 2)
    assert [p.stem for p in launch.lora_files(tmp_path, "melanoma")] == [
        "melanoma-000001", "melanoma-step00000040", "melanoma-000002", "melanoma-step00000010",
        "melanoma-000003", "melanoma-step00000030"]


def test_a_resumed_launchs_states_count_from_the_runs_start(tmp_path: Path) -> None:
    """A resumed sd-scripts (24 steps an epoch, resumed from step 60 so at epoch 3's start,
    step 48) records steps from 0: its states rank by the run's step even before they are
    settled (train stopped at once), and the next launch settles them once, for sd-scripts."""
    resumed = _state(tmp_path / "melanoma-step00000060-state", 60)
    counting = launch.count_steps(tmp_path, "melanoma", resumed, 1)
    counting("  num batches per epoch / 1epochのバッチ数: 24")
    later = _state(tmp_path / "melanoma-step00000020-state", 20)  # step 68 of the run
    assert launch.state_step(later) == 68 and launch.latest_state(tmp_path, "melanoma") == later
    assert launch.prune_states(tmp_path, "melanoma") == [resumed]
    for _ in range(2):  # the next launch (here from 0) settles it, once
        launch.count_steps(tmp_path, "melanoma", None, 1)
        assert json.loads((later / "train_state.json").read_text())["current_step"] == 68
        assert launch.state_step(later) == 68


def test_a_resumed_runs_final_lora_is_finished_by_the_runs_own_steps(tmp_path: Path) -> None:
    """A resumed sd-scripts counts ss_steps from the epoch it went on at and trains to that
    epoch's end: the final LoRA's run steps add the launch's offset, and reach max_train_steps
    (or pass it) only then."""
    from medsynth_kohya.training.train import finished_lora

    from .fake_gen import write_lora

    final = write_lora(tmp_path / "melanoma.safetensors", {"ss_steps": "40"})
    assert launch.final_steps(final) == 40 and not finished_lora(final, 100)
    (tmp_path / launch.STEP_OFFSET).write_text(json.dumps({"offset": 60}))
    assert launch.final_steps(final) == 100
    assert finished_lora(final, 100) and finished_lora(final, 96)
    assert not finished_lora(final, 101) and not finished_lora(final, None)
    assert launch.final_steps(write_lora(tmp_path / "bare.safetensors")) is None


def test_step_saves_leave_a_resumed_launchs_way_and_come_back_by_the_runs_step(
        tmp_path: Path) -> None:
    """Before a resumed launch the complete step saves take their run step's out-of-the-way
    name, an earlier save of that step kept in superseded/, what is unfinished staying for
    sd-scripts to write again; after it, each takes sd-scripts' name of its run step where
    that is free."""
    older = _state(tmp_path / "melanoma-run-step00000030-state", 30)
    launch.settle_states(tmp_path, "melanoma")
    _save(tmp_path / "melanoma-run-step00000030.safetensors", 10**9, 29)  # the first launch's
    (tmp_path / launch.STEP_OFFSET).write_text(json.dumps({"offset": 24}))
    newer = _state(tmp_path / "melanoma-step00000006-state", 6)  # run step 30 again
    unfinished = _state(tmp_path / "melanoma-step00000008-state", 8, complete=False)
    _save(tmp_path / "melanoma-step00000006.safetensors", 10**9, 30)
    _save(tmp_path / "melanoma-step00000008.safetensors", 10**9)  # cut short: no steps
    assert launch.name_by_run_step(tmp_path, "melanoma", newer) == older
    assert launch.state_step(older) == 30 and not newer.exists() and unfinished.is_dir()
    kept = tmp_path / launch.SUPERSEDED
    assert sorted(p.name for p in kept.iterdir()) == [
        "melanoma-run-step00000030-state", "melanoma-run-step00000030.safetensors"]
    assert json.loads((kept / "melanoma-run-step00000030-state" / "train_state.json"
                       ).read_text())[launch.COUNTED_FROM] == 0
    assert b'"29"' in (kept / "melanoma-run-step00000030.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.glob("melanoma*")) == [
        "melanoma-run-step00000030-state", "melanoma-run-step00000030.safetensors",
        "melanoma-step00000008-state", "melanoma-step00000008.safetensors"]
    _save(tmp_path / "melanoma-step00000030.safetensors", 10**9)  # cut short, holds the name
    launch.name_as_one_run(tmp_path, "melanoma")
    assert sorted(p.name for p in tmp_path.glob("melanoma*")) == [
        "melanoma-run-step00000030.safetensors", "melanoma-step00000008-state",
        "melanoma-step00000008.safetensors", "melanoma-step00000030-state",
        "melanoma-step00000030.safetensors"]
    launch.prune_states(tmp_path, "melanoma")  # a superseded state is a replaced one
    assert [p.name for p in kept.iterdir()] == ["melanoma-run-step00000030.safetensors"]


def _lora(path: Path, metadata: dict[str, str] | None) -> Path:
    """A LoRA save whose header holds `metadata` (no `__metadata__` at all when None)."""
    header = json.dumps({} if metadata is None else {"__metadata__": metadata}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def test_saves_whose_headers_say_too_little_for_epochs_order_by_their_steps(
        tmp_path: Path) -> None:
    """A header without metadata (--no_metadata) orders by the number in the name; one without
    the epoch, or without the batches per epoch, by its `ss_steps`: none is dropped or fails."""
    _lora(tmp_path / "melanoma-step00000030.safetensors", None)
    _lora(tmp_path / "melanoma-step00000005.safetensors", {
        "ss_steps": "20", "ss_num_batches_per_epoch": "8", "ss_gradient_accumulation_steps": "1"})
    _lora(tmp_path / "melanoma-step00000007.safetensors", {
        "ss_steps": "10", "ss_epoch": "3", "ss_gradient_accumulation_steps": "1"})
    _lora(tmp_path / "melanoma-step00000009.safetensors", {
        "ss_steps": "25", "ss_epoch": "3", "ss_num_batches_per_epoch": "0",
        "ss_gradient_accumulation_steps": "1"})
    assert [p.stem for p in launch.lora_files(tmp_path, "melanoma")] == [
        "melanoma-step00000007", "melanoma-step00000005", "melanoma-step00000009",
        "melanoma-step00000030"]


@pytest.mark.parametrize("name", ["my-lora", "melanoma"])
def test_step_saves_of_a_resumed_launch_order_by_the_run_step_whatever_their_names(
        tmp_path: Path, name: str) -> None:
    """A step save is told from an epoch save by its last part, also under an output name with
    a dash and once named by the run's step: here 10 steps an epoch, resumed at epoch 2."""
    metadata = {"ss_num_batches_per_epoch": "10", "ss_gradient_accumulation_steps": "1"}
    _lora(tmp_path / f"{name}-000002.safetensors", {**metadata, "ss_steps": "20", "ss_epoch": "2"})
    _lora(tmp_path / f"{name}-step00000003.safetensors",
          {**metadata, "ss_steps": "3", "ss_epoch": "2"})  # run step 23
    _lora(tmp_path / f"{name}-step00000012.safetensors",
          {**metadata, "ss_steps": "12", "ss_epoch": "1"})
    _lora(tmp_path / f"{name}-run-step00000017.safetensors",
          {**metadata, "ss_steps": "17", "ss_epoch": "1"})
    assert [p.stem for p in launch.lora_files(tmp_path, name)] == [
        f"{name}-step00000012", f"{name}-run-step00000017", f"{name}-000002",
        f"{name}-step00000003"]


def test_a_state_whose_train_state_json_is_not_a_step_is_never_resumed(tmp_path: Path) -> None:
    """sd-scripts' train_state.json holds a whole `current_step`: a folder whose file holds
    something else (a list, no step, a string or a boolean) is not a state to resume from."""
    good = _state(tmp_path / "melanoma-step00000010-state", 10)
    for index, text in enumerate(['[{"current_step": 90}]', '{"epoch": 9}',
                                  '{"current_step": "90"}', '{"current_step": true}']):
        folder = _state(tmp_path / f"melanoma-step0000009{index}-state", 90)
        (folder / "train_state.json").write_text(text)
        assert launch.state_step(folder) < 0
    assert launch.latest_state(tmp_path, "melanoma") == good
    assert launch.prune_states(tmp_path, "melanoma") == []


@pytest.mark.parametrize(("written", "offset"), [
    (1, 1), (24, 24), (0, 0), (-5, 0), (2.5, 0), ("24", 0), (None, 0), (True, 0)])
def test_only_a_whole_positive_step_offset_is_added_to_the_final_steps(
        tmp_path: Path, written: object, offset: int) -> None:
    """The offset beside the output is the launch's whole uncounted steps, one included;
    anything else in the file (a hand edit, a cut-short write) adds nothing."""
    final = _lora(tmp_path / "melanoma.safetensors", {"ss_steps": "40"})
    (tmp_path / launch.STEP_OFFSET).write_text(json.dumps({"offset": written}))
    assert launch.final_steps(final) == 40 + offset


def test_a_launch_counts_from_the_start_of_its_resumed_states_epoch_even_one_step_long(
        tmp_path: Path) -> None:
    """With one batch an epoch a state at step 1 is resumed at step 1; a launch that resumes
    nothing counts from 0 whatever sd-scripts says; a line saying no batches changes nothing."""
    output = tmp_path / "run" / "output"  # a new run folder's
    first = launch.count_steps(output, "melanoma", None, 1)
    first("num batches per epoch / 1epochのバッチ数: 1")
    assert launch.state_step(_state(output / "melanoma-step00000001-state", 1)) == 1
    resumed = launch.count_steps(output, "melanoma", output / "melanoma-step00000001-state", 1)
    resumed("num batches per epoch / 1epochのバッチ数: 0")
    assert json.loads((output / launch.STEP_OFFSET).read_text())["offset"] == 0
    resumed("num batches per epoch / 1epochのバッチ数: 1")
    assert launch.state_step(_state(output / "melanoma-step00000002-state", 2)) == 3


def test_a_resumed_launchs_time_left_is_that_of_the_runs_steps_left(tmp_path: Path) -> None:
    """Resumed 60 steps into a run of 100, its bar's step 10 is the run's 70: 30 steps left at
    2 s each, not the launch's own estimate; a bar without a rate has no time left."""
    seen: list[StepProgress] = []
    shown = launch.from_run_start(tmp_path, seen.append)
    assert shown is not None and launch.from_run_start(tmp_path, None) is None
    (tmp_path / launch.STEP_OFFSET).write_text(json.dumps({"offset": 60}))
    shown(StepProgress(step=10, total=100, loss=0.1, seconds_per_step=2.0, eta_seconds=180.0))
    shown(StepProgress(step=50, total=100, loss=0.1, seconds_per_step=None, eta_seconds=99.0))
    assert seen == [StepProgress(step=70, total=100, loss=0.1, seconds_per_step=2.0,
                                 eta_seconds=60.0),
                    StepProgress(step=100, total=100, loss=0.1, seconds_per_step=None,
                                 eta_seconds=None)]


def test_a_state_removal_cut_short_is_unresumable_and_finished_next_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_state.json is emptied first, so a removal stopped after one file (here by a
    failing disk) leaves no state a hand-run `--resume` would take; the next prune ends it."""
    older = _state(tmp_path / "melanoma-step00000010-state", 10)
    newest = _state(tmp_path / "melanoma-step00000020-state", 20)
    truncate = os.truncate
    done: list[Any] = []

    def fails_after_one(path: Any, length: int) -> None:
        if done:
            raise OSError("disk gone")
        done.append(path)
        truncate(path, length)

    monkeypatch.setattr(os, "truncate", fails_after_one)
    assert launch.prune_states(tmp_path, "melanoma") == [older]
    assert (older / "train_state.json").stat().st_size == 0
    assert (older / "optimizer.bin").stat().st_size == 1000
    monkeypatch.setattr(os, "truncate", truncate)
    assert launch.prune_states(tmp_path, "melanoma") == [older]
    assert not older.exists() and launch.latest_state(tmp_path, "melanoma") == newest


def test_a_replaced_state_with_folders_and_links_is_removed_leaving_what_links_point_to(
        tmp_path: Path) -> None:
    """A state's sub-folders are removed, not emptied as files; a link in it is removed, the
    file it points to outside kept whole."""
    older = _state(tmp_path / "melanoma-step00000010-state", 10)
    (older / "custom").mkdir()
    (older / "custom" / "weights.bin").write_bytes(b"w" * 10)
    outside = tmp_path / "base-model.safetensors"
    outside.write_bytes(b"m" * 10)
    (older / "model.safetensors").symlink_to(outside)
    _state(tmp_path / "melanoma-step00000020-state", 20)
    assert launch.prune_states(tmp_path, "melanoma") == [older]
    assert not older.exists() and outside.read_bytes() == b"m" * 10


def test_a_state_that_cannot_be_settled_now_is_settled_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settling a state rewrites its train_state.json: where that fails (a read-only synced
    folder) the launch goes on and the state still counts its launch's offset."""
    (tmp_path / launch.STEP_OFFSET).write_text(json.dumps({"offset": 24}))
    folder = _state(tmp_path / "melanoma-step00000006-state", 6)
    from medsynth_kohya import files

    write_json = files.write_json

    def refused(path: Path, data: Any, **options: Any) -> None:
        raise PermissionError(path)

    monkeypatch.setattr(files, "write_json", refused)
    launch.settle_states(tmp_path, "melanoma")
    assert launch.state_step(folder) == 30
    monkeypatch.setattr(files, "write_json", write_json)
    launch.settle_states(tmp_path, "melanoma")
    (tmp_path / launch.STEP_OFFSET).unlink()
    assert launch.state_step(folder) == 30


def test_an_output_name_ending_in_run_has_its_step_saves_moved_too(tmp_path: Path) -> None:
    """`mel-run-step00000006` is the launch-named save of the class `mel-run`."""
    _save(tmp_path / "mel-run-step00000006.safetensors", 10**9, 6)
    state = _state(tmp_path / "mel-run-step00000006-state", 6)
    moved = launch.name_by_run_step(tmp_path, "mel-run", state)
    assert moved == tmp_path.resolve() / "mel-run-run-step00000006-state" and moved.is_dir()
    assert (tmp_path / "mel-run-run-step00000006.safetensors").is_file()


def test_a_replaced_state_linked_from_elsewhere_loses_only_its_link(tmp_path: Path) -> None:
    """A state folder that is a link (to a copy on another disk, say) is unlinked when a newer
    state replaces it: the folder it points to is the user's, and keeps every byte."""
    elsewhere = _state(tmp_path / "elsewhere", 10)
    before = {path.name: path.read_bytes() for path in elsewhere.iterdir()}
    output = tmp_path / "output"
    output.mkdir()
    linked = output / "melanoma-step00000010-state"
    linked.symlink_to(elsewhere, target_is_directory=True)
    _state(output / "melanoma-step00000020-state", 20)
    assert launch.prune_states(output, "melanoma") == [linked]
    assert not linked.is_symlink() and not linked.exists()
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == before


def test_save_last_n_steps_counts_back_from_the_runs_newest_step_save(tmp_path: Path) -> None:
    """After a resumed launch: LoRA step saves more than save_last_n_steps behind the newest
    go, and the earlier copies in superseded/ (a run never stopped has none); states by
    save_last_n_steps_state where set; epoch saves, the final LoRA, unfinished states, other
    names and what the user put in superseded/ stay."""
    kept = tmp_path / launch.SUPERSEDED
    kept.mkdir()
    for step in (10, 20, 30, 40):
        _lora(tmp_path / f"melanoma-step{step:08d}.safetensors", {"ss_steps": str(step)})
        _state(tmp_path / f"melanoma-step{step:08d}-state", step)
    _lora(tmp_path / f"melanoma{launch.RUN_STEP}-step00000015.safetensors", {"ss_steps": "15"})
    _lora(kept / "melanoma-step00000030-2.safetensors", None)
    _state(kept / "melanoma-step00000040-state", 40)
    stay = [_lora(tmp_path / "melanoma-000001.safetensors", {"ss_steps": "5"}),
            _lora(tmp_path / "melanoma.safetensors", {"ss_steps": "40"}),
            _state(tmp_path / "melanoma-step00000005-state", 5, complete=False),
            _lora(tmp_path / "notes-step00000001.safetensors", None),
            _lora(kept / "notes.safetensors", None)]
    removed = launch.keep_last_steps(tmp_path, "melanoma", {"save_last_n_steps": 10,
                                                            "save_last_n_steps_state": 20})
    assert sorted(path.relative_to(tmp_path).as_posix() for path in removed) == [
        "melanoma-run-step00000015.safetensors", "melanoma-step00000010-state",
        "melanoma-step00000010.safetensors", "melanoma-step00000020.safetensors",
        "superseded/melanoma-step00000030-2.safetensors",
        "superseded/melanoma-step00000040-state"]
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")
                  if path.parent in (tmp_path, kept)) == sorted(
        [*(path.relative_to(tmp_path).as_posix() for path in stay),
         "melanoma-step00000020-state", "melanoma-step00000030-state",
         "melanoma-step00000030.safetensors", "melanoma-step00000040-state",
         "melanoma-step00000040.safetensors", "superseded"])


def test_without_save_last_n_steps_superseded_loras_stay_and_superseded_states_go(
        tmp_path: Path) -> None:
    """Unbounded saves keep every earlier copy of a LoRA; a superseded state is a replaced one
    whatever the options (never resumed from); save_last_n_steps=0 keeps the newest alone, as
    in sd-scripts."""
    kept = tmp_path / launch.SUPERSEDED
    kept.mkdir()
    copy = _lora(kept / "melanoma-step00000030-2.safetensors", None)
    assert launch._lora_step(copy) == 30  # its step from its name, not its copy number
    _state(kept / "melanoma-step00000030-state", 30)
    for step in (10, 30):
        _lora(tmp_path / f"melanoma-step{step:08d}.safetensors", {"ss_steps": str(step)})
    assert launch.keep_last_steps(tmp_path, "melanoma", {"save_last_n_epochs": 2}) == [
        kept / "melanoma-step00000030-state"]
    assert sorted(path.name for path in tmp_path.rglob("*.safetensors")) == [
        "melanoma-step00000010.safetensors", "melanoma-step00000030-2.safetensors",
        "melanoma-step00000030.safetensors"]
    launch.keep_last_steps(tmp_path, "melanoma", {"save_last_n_steps": 0})
    assert [path.name for path in tmp_path.rglob("*.safetensors")] == [
        "melanoma-step00000030.safetensors"]
