"""Commands run side by side on one folder that tests/test_locks.py does not pair: a prepare
into the folder a training reads, a training on a folder prepare is writing, a push or an
evaluate of a set sample is still making, two evaluates into one report. The second refuses
in one line naming the holder and changes nothing (issue 9: nothing of the user's is lost or
corrupted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke
from .disk import checksums
from .fake_gen import FakeGen
from .fake_hub import TOKEN, FakeHub
from .fakes import make_fake_sd
from .processes import finish, start, wait_for
from .test_hub import make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
HOLDER = f"`medsynth-kohya {{command}}` (pid {os.getpid()}"
"""How a refusal names a lock this test process holds."""


def _one_line(code: int, stderr: str, *parts: str) -> str:
    """The refusal: exit 1 and one line (rich may wrap it) holding every part."""
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr, stderr
    for part in parts:
        assert part in line, (part, line)
    return line


def test_prepare_refuses_the_folder_a_training_process_reads(
        isic2020: SyntheticSet, prepared: Path, tmp_path: Path, runner: CliRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_sd(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    before = checksums(prepared)
    training = start("train", prepared, "--preset", "cpu-smoke", "--run-dir", tmp_path / "run",
                     "--sd-scripts", fake.sd_scripts, "--python", sys.executable,
                     "--set", "max_train_steps=40")
    try:
        wait_for(lambda: bool(locks.readers(prepared)) or training.poll() is not None,
                 what="the training to mark the prepared folder")
        assert training.poll() is None, finish(training).stderr
        for extra in ((), ("--force",)):
            code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared,
                                     "--repeats", 3, "--workers", 1, *extra)
            _one_line(code, stderr, f"is being read by `medsynth-kohya train` (pid "
                      f"{training.pid}", "--force does not override")
            assert checksums(prepared) == before
    finally:
        done = finish(training)
    assert done.code == 0, done.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded"
    assert locks.readers(prepared) == []  # released: prepare may change it again
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared, "--repeats", 3,
                             "--workers", 1)
    assert code == 0, stderr


def test_a_training_refuses_a_folder_prepare_is_writing(
        prepared: Path, tmp_path: Path, runner: CliRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_sd(tmp_path, monkeypatch)
    with locks.hold(prepared, "prepare"):
        code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                 "--run-dir", tmp_path / "run", "--sd-scripts", fake.sd_scripts,
                                 "--python", sys.executable)
    _one_line(code, stderr, "still being written by `medsynth-kohya prepare` (pid")
    assert not (tmp_path / "run").exists() and not fake.record.exists()
    assert locks.readers(prepared) == []


def test_a_read_only_prepared_folder_still_trains(prepared: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared data set this user may not write to is read without a mark."""
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    prepared.chmod(0o555)
    try:
        with locks.reading(prepared, "train"):
            assert locks.readers(prepared) == []
    finally:
        prepared.chmod(0o755)


def _rival(folder: Path, command: str) -> str:
    """What a writer (`command`) starting now says of `folder`: it takes the folder's lock,
    then looks for readers, as prepare and sample do."""
    with locks.hold(folder, command):
        try:
            locks.ensure_unread(folder, command)
        except UserError as refused:
            return str(refused)
    return f"{command} found no reader"


def test_a_sample_starting_while_evaluate_checks_its_set_finds_it_read(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate checked that no sample was making the set, then marked it read: a sample that
    took the set's lock in between found no reader, and wrote while evaluate read. The marks
    come first now, so that sample is refused."""
    from medsynth_kohya.evaluation import evaluate as module
    from medsynth_kohya.evaluation import features
    from medsynth_kohya.sampling.machines import ensure_made as checked

    from .eval_data import photo, synthetic_set

    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])  # hashes and hair only
    synthetic = tmp_path / "syn"
    synthetic_set(synthetic, [photo(9400 + i) for i in range(2)])
    rivals: list[str] = []

    def with_a_rival(folder: Path, *args: Any, **kwargs: Any) -> None:
        rivals.append(_rival(folder, "sample"))
        checked(folder, *args, **kwargs)

    monkeypatch.setattr(module, "ensure_made", with_a_rival)
    module.evaluate(prepared, synthetic, tmp_path / "report")
    assert len(rivals) == 1 and "is being read by" in rivals[0], rivals
    assert locks.readers(synthetic) == []


def test_a_prepare_starting_while_push_checks_the_data_finds_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """push checked that no prepare was writing the run's prepared folder (its manifest fills
    the card's data table) without marking it read: a prepare starting then went on."""
    from medsynth_kohya.hub.push import push

    run = make_run(tmp_path)
    prepared = tmp_path / "prepared"
    rivals: list[str] = []
    checked = locks.ensure_idle

    def with_a_rival(folder: Path, command: str, **kwargs: Any) -> None:
        if folder == prepared and not rivals:
            rivals.append(_rival(folder, "prepare"))
        checked(folder, command, **kwargs)

    monkeypatch.setattr(locks, "ensure_idle", with_a_rival)
    push(run, "alice/lora", dry_run=True)
    assert len(rivals) == 1 and "is being read by" in rivals[0], rivals
    assert locks.readers(prepared) == []


def _synthetic(tmp_path: Path) -> Path:
    out = tmp_path / "synthetic"
    (out / "images").mkdir(parents=True)
    (out / "images" / "SYN_0000000.png").write_bytes(b"\x89PNG half a set")
    return out


@pytest.mark.parametrize("part", [None, "shard-1-of-2"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_push_refuses_a_sample_set_still_being_made(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        part: str | None, dry_run: bool) -> None:
    run = make_run(tmp_path / "first")
    synth = _synthetic(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = checksums(run)
    with locks.hold(synth, "sample", part=part):
        code, _, stderr = invoke(runner, "push", run, "--repo-id", "alice/mel", "--samples",
                                 synth, "--endpoint", fake_hub.url,
                                 *(["--dry-run"] if dry_run else []))
    _one_line(code, stderr, str(synth), "1-of-2" if part else HOLDER.format(command="sample"))
    assert fake_hub.requests == [] and checksums(run) == before


def test_two_evaluates_into_one_report_and_one_beside_sample_or_prepare(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    synth = _synthetic(tmp_path)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text('{"mine": 1}\n', encoding="utf-8")
    before = checksums(report)
    args = ("evaluate", "--real", prepared, "--synthetic", synth, "--out", report)
    with locks.hold(report, "evaluate"):
        code, _, stderr = invoke(runner, *args)
    _one_line(code, stderr, "in use by", HOLDER.format(command="evaluate"))
    with locks.hold(synth, "sample", part="shard-2-of-3"):
        code, _, stderr = invoke(runner, *args)
    _one_line(code, stderr, "still being made by sample shards 2-of-3")
    with locks.hold(prepared, "prepare"):
        code, _, stderr = invoke(runner, *args)
    _one_line(code, stderr, "still being written by", HOLDER.format(command="prepare"))
    assert checksums(report) == before


def test_readers_go_side_by_side_and_prepare_names_one(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path) -> None:
    """Two runs may train on one prepared folder at once; prepare waits for both."""
    before = checksums(prepared)
    with locks.reading(prepared, "train"), locks.reading(prepared, "train"):
        assert [r.command for r in locks.readers(prepared)] == ["train", "train"]
        code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared,
                                 "--workers", 1)
    _one_line(code, stderr, HOLDER.format(command="train"), "(and 1 more)")
    assert checksums(prepared) == before and locks.readers(prepared) == []


_KILLED_READER = """
import os, sys
from pathlib import Path
from medsynth_kohya import locks
with locks.reading(Path(sys.argv[1]), "train"):
    os._exit(0)  # dies marking the folder read, as a killed training does
"""


def test_a_dead_readers_mark_is_cleared_and_refuses_nothing(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path) -> None:
    subprocess.run([sys.executable, "-c", _KILLED_READER, str(prepared)], check=True)
    [left] = list(prepared.glob(".medsynth-lock.reader-*"))
    assert locks.readers(prepared) == [] and left.exists()
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared,
                             "--repeats", 2, "--workers", 1)
    assert code == 0, stderr
    assert not list(prepared.glob(".medsynth-lock*"))


def test_another_machines_reading_mark_says_how_to_pass_it_and_breaking_it_is_warned(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path) -> None:
    """A Colab VM that disconnected while training left its mark on the prepared folder."""
    beat = (datetime.now(timezone.utc) - timedelta(minutes=2)).isoformat(timespec="seconds")
    (prepared / f"{locks.LOCK_NAME}.{locks.READER}-colab-old-vm-4242-abcdef").write_text(
        json.dumps({"command": "train", "pid": 4242, "host": "colab-old-vm", "since": "t0",
                    "beat": beat}), encoding="utf-8")
    args = ("prepare", isic2020.root, "--out", prepared, "--repeats", 2, "--workers", 1)
    code, _, stderr = invoke(runner, *args)
    _one_line(code, stderr, "is being read by `medsynth-kohya train` (pid 4242 on colab-old-vm, "
              "since t0), another machine, and its last heartbeat was 2 min ago; it is taken "
              "over after 10 min without one;", "run this again with --break-lock")
    code, _, stderr = invoke(runner, *args, "--break-lock")
    assert code == 0, stderr
    assert ("broke (--break-lock) the reading mark on " in " ".join(stderr.split())
            and "pid 4242 on colab-old-vm" in " ".join(stderr.split()))
    assert not list(prepared.glob(".medsynth-lock*"))


def test_evaluate_marks_the_real_data_it_reads_so_prepare_waits(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate reads the prepared photos for minutes (hashes, features, a classifier): a
    prepare into that folder meanwhile would change what it compares, so it refuses."""
    from medsynth_kohya.evaluation import features
    from medsynth_kohya.evaluation.evaluate import evaluate

    from .eval_data import photo, synthetic_set

    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])  # hashes and hair only
    synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(2)])
    before = checksums(prepared)
    refusals: list[tuple[int, str]] = []

    def during(stage: str, done: int, total: int) -> None:
        if not refusals:
            code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared,
                                     "--repeats", 3, "--workers", 1)
            refusals.append((code, stderr))

    evaluate(prepared, tmp_path / "syn", tmp_path / "report", on_progress=during)
    _one_line(*refusals[0], "is being read by", HOLDER.format(command="evaluate"))
    assert checksums(prepared) == before and locks.readers(prepared) == []


def test_train_force_refuses_a_run_whose_lora_a_sample_reads(
        runner: CliRunner, prepared: Path, trained: Path, fake_gen: FakeGen,
        tmp_path: Path) -> None:
    """--force would move the run's output/ aside and write a new LoRA mid-sample."""
    from medsynth_kohya.sampling.sample import SampleOptions, sample

    before = checksums(trained)
    refusals: list[tuple[int, str, str]] = []

    def during(made: int, total: int) -> None:
        if not refusals:
            refusals.append(invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                   "--run-dir", trained, "--force", "--sd-scripts",
                                   fake_gen.sd_scripts, "--python", sys.executable))

    sample(trained, tmp_path / "synth", SampleOptions(n=2, width=64, height=64, steps=2),
           sd_scripts=fake_gen.sd_scripts, python=sys.executable, on_progress=during)
    _one_line(*refusals[0][::2], f"{trained} is being read by",
              HOLDER.format(command="sample"), "`train` would change the files it reads")
    assert checksums(trained) == before and locks.readers(trained) == []


def test_sample_refuses_to_extend_a_set_an_evaluate_reads(
        runner: CliRunner, prepared: Path, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import features
    from medsynth_kohya.evaluation.evaluate import evaluate

    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])  # hashes and hair only
    synth = tmp_path / "syn"
    args = ("sample", "--lora", trained, "--out", synth, "--width", 64, "--height", 64,
            "--steps", 2, "--sd-scripts", fake_gen.sd_scripts, "--python", sys.executable)
    code, _, stderr = invoke(runner, *args, "--n", 2)
    assert code == 0, stderr
    before = checksums(synth)
    refusals: list[tuple[int, str, str]] = []

    def during(stage: str, done: int, total: int) -> None:
        if not refusals:  # a larger --n would add images to the set being compared
            refusals.append(invoke(runner, *args, "--n", 3))

    evaluate(prepared, synth, tmp_path / "report", on_progress=during)
    _one_line(*refusals[0][::2], f"{synth} is being read by",
              HOLDER.format(command="evaluate"), "`sample` would change the files it reads")
    assert checksums(synth) == before and locks.readers(synth) == []
