"""`sample --shard K/N` on many machines at once into one folder, `--finalize`, and the SLURM
array job (`--slurm N`), against the stand-in sdxl_gen_img.py run as real CLI processes."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sampling import machines, synthset
from medsynth_kohya.sampling.machines import FINAL_PART, MachineShard, ensure_made, running
from medsynth_kohya.sampling.plan import SampleOptions
from medsynth_kohya.sampling.sample import sample, sample_job
from medsynth_kohya.sdscripts import launch

from .conftest import invoke
from .fake_gen import FakeGen, make_fake_gen, write_run
from .processes import finish, kill_when, snapshot, start, wait_for
from .test_multinode import _pythonpath, fake_slurm
from .test_sample import SMALL

N = 11


@pytest.fixture
def fake_gen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_fake_gen(tmp_path, monkeypatch)


@pytest.fixture
def args(prepared: Path, fake_gen: FakeGen, tmp_path: Path) -> list[object]:
    """`sample` of N images from a trained run, through the stand-in generator."""
    trained = tmp_path / "trained"
    write_run(trained, prepared, tmp_path / "base.safetensors")
    return ["sample", "--lora", trained, "--n", N, "--seed", 40, *SMALL,
            "--sd-scripts", fake_gen.sd_scripts, "--python", sys.executable]


@pytest.fixture
def reference(args: list[object], tmp_path: Path) -> dict[str, bytes]:
    """The one-machine set: every file but the logs and the state folder."""
    out = tmp_path / "reference"
    done = finish(start(*args, "--out", out))
    assert done.code == 0, done.stderr
    return _set(out)


def _set(out: Path) -> dict[str, bytes]:
    return snapshot(out, ("logs/", ".medsynth/"))


def test_shards_partition_the_set() -> None:
    for total in (0, 1, 5, 11, 100):
        for count in (1, 2, 3, 7):
            parts = [list(MachineShard(k, count).indices(total)) for k in range(1, count + 1)]
            assert [i for part in parts for i in part] == list(range(total))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert MachineShard.parse(" 2/4 ") == MachineShard(2, 4)
    for text in ("0/4", "5/4", "2", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard"):
            MachineShard.parse(text)


@pytest.mark.parametrize("count", [2, 3])
def test_shards_side_by_side_make_the_one_machine_set(
        args: list[object], reference: dict[str, bytes], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    out = tmp_path / "shared"
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.2")  # each shard works for a while: they overlap
    processes = [start(*args, "--out", out, "--shard", f"{k}/{count}")
                 for k in range(1, count + 1)]
    wait_for(lambda: len(running(out)) == count, what=f"{count} shards running at once")
    done = [finish(process) for process in processes]
    assert [d.code for d in done] == [0] * count, [d.stderr for d in done]
    assert _set(out) == reference  # images byte for byte, metadata.csv, grid.jpg
    rows = (out / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
    ids = [row.split(",")[0] for row in rows]
    assert ids == sorted(set(ids)) and len(ids) == N
    said = " ".join(" ".join(d.stdout.split()) for d in done)
    assert said.count("are written by the shard that completes it") <= count - 1
    for k in range(1, count + 1):
        record = json.loads((out / ".medsynth" / "machines" / f"{k}-of-{count}.json")
                            .read_text(encoding="utf-8"))
        assert record["status"] == "succeeded"
        part = (out / ".medsynth" / "machines" / f"{k}-of-{count}.csv").read_text("utf-8")
        assert part.splitlines()[1:] == [rows[i] for i in MachineShard(k, count).indices(N)]


def test_a_killed_shard_rerun_makes_only_its_missing_images(
        args: list[object], reference: dict[str, bytes], fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "shared"
    fake_gen.forget()
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    other = start(*args, "--out", out, "--shard", "2/2")
    first = MachineShard(1, 2).indices(N)

    def made() -> int:
        return len(list(out.glob(".medsynth/shards/1-of-2.*/out/im_*.png")))

    def generator() -> int | None:  # the first shard's sdxl_gen_img.py
        for call in fake_gen.records.glob("*.json"):
            if "1-of-2." in call.read_text():
                return int(call.stem)
        return None

    assert kill_when(start(*args, "--out", out, "--shard", "1/2"), lambda: made() >= 2,
                     generator)
    kept = sum(1 for path in out.glob(".medsynth/shards/1-of-2.*/out/im_*.png")
               if path.read_bytes().endswith(b"IEND\xaeB`\x82"))  # written to the end
    assert 1 <= kept < len(first)
    second = finish(other)
    assert second.code == 0, second.stderr
    assert not (out / "metadata.csv").exists()  # the set is not complete yet
    monkeypatch.delenv("FAKE_GEN_SLOW")
    fake_gen.forget()
    again = finish(start(*args, "--out", out, "--shard", "1/2"))
    assert again.code == 0, again.stderr
    assert "took over the lock" in " ".join(again.stderr.split())
    [call] = fake_gen.calls()
    lines = Path(call["args"]["from_file"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(first) - kept  # only its missing images
    assert _set(out) == reference


def test_finalize_writes_the_files_of_what_is_there(args: list[object], tmp_path: Path,
                                                    reference: dict[str, bytes]) -> None:
    out = tmp_path / "shared"
    assert finish(start(*args, "--out", out, "--shard", "2/3")).code == 0
    assert not (out / "metadata.csv").exists()
    partial = finish(start(*args, "--out", out, "--finalize"))
    assert partial.code == 1, partial.stderr
    rows = (out / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == [
        f"SYN_{i:07d}" for i in MachineShard(2, 3).indices(N)]
    said = " ".join(partial.stderr.split())
    assert "sample incomplete:" in said and "re-run the missing shards" in said
    with pytest.raises(UserError, match=f"unfinished: sample ended short of the set with "
                                        f"{len(rows)} of {N} images"):
        ensure_made(out, "push")  # push and evaluate refuse the partial set
    for k in (1, 3):
        assert finish(start(*args, "--out", out, "--shard", f"{k}/3")).code == 0
    assert _set(out) == reference
    ensure_made(out, "push")


def test_other_settings_and_a_whole_run_are_refused_beside_shards(
        args: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "shared"
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    shard = start(*args, "--out", out, "--shard", "1/2")
    wait_for(lambda: running(out) == ["1-of-2"], what="shard 1 running")
    whole = finish(start(*args, "--out", out))
    other = finish(start(*args[:-2], "--seed", 41, *args[-2:], "--out", out,
                         "--shard", "2/2"))
    assert finish(shard).code == 0
    assert whole.code == 1 and "shards 1-of-2 are still writing" in whole.stderr
    assert other.code == 1
    assert "other settings (--seed 41 here, 40 in that set)" in " ".join(other.stderr.split())


def test_the_array_job_runs_one_shard_per_task(
        runner: CliRunner, args: list[object], reference: dict[str, bytes], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "shared"
    code, stdout, stderr = invoke(runner, *args, "--out", out, "--slurm", 3, "--sbatch",
                                  "partition=gpu", "--dry-run")
    assert code == 0, stderr
    assert not out.exists()
    text = stdout[stdout.index("#!/bin/bash"):]
    directives = dict(line.removeprefix("#SBATCH --").split("=", 1)
                      for line in text.splitlines() if line.startswith("#SBATCH "))
    assert directives == {
        "job-name": "medsynth-sample-shared", "array": "1-3", "ntasks": "1", "gpus": "1",
        "chdir": str(Path.cwd()),
        "output": str(out.resolve() / ".medsynth" / "slurm" / "%A_%a.out"),
        "partition": "gpu"}
    srun = shlex.split(text.strip().splitlines()[-1])
    assert srun[:3] == ["srun", "bash", "-c"]
    task = shlex.split(srun[3])
    assert task[0] == "exec" and task[1:5] == launch.own_command("sample")
    assert task[-2:] == ["--shard", "$SLURM_ARRAY_TASK_ID/3"]
    given = task[5:-2]
    for option, value in (("--lora", args[2]), ("--n", N), ("--seed", 40), ("--out", out),
                          ("--width", 64), ("--num-gpus", 1)):
        assert given[given.index(option) + 1] == str(value)
    assert "--dry-run" not in given and "--slurm" not in given
    # submitted to a stand-in sbatch whose srun runs the array's tasks one after another
    record = fake_slurm(tmp_path / "slurm-bin")
    (tmp_path / "slurm-bin" / "sbatch").write_text(
        f'#!/bin/bash\necho "$@" > {shlex.quote(str(record))}\nfor k in 1 2 3; do\n'
        '  SLURM_ARRAY_TASK_ID=$k bash "${@: -1}" > "${@: -1}.$k.out" 2>&1 || exit 1\n'
        'done\necho 77\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'slurm-bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    code, stdout, stderr = invoke(runner, *args, "--out", out, "--slurm", 3, "--sbatch",
                                  "partition=gpu", "--submit")
    script = out / ".medsynth" / "sample.sbatch"
    assert code == 0, stderr
    assert f"Submitted {script} as SLURM job 77" in stdout
    assert script.read_text(encoding="utf-8") == text
    assert _set(out) == reference


def test_an_array_job_is_planned_whatever_gpus_this_shell_shows(
        runner: CliRunner, args: list[object], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--slurm is run where the job's GPUs are not (a login node, an salloc shell that
    shows one GPU): each task gets its own from SLURM, so this shell's are not counted."""
    for visible in ("0", ""):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        code, stdout, stderr = invoke(runner, *args, "--out", tmp_path / "shared",
                                      "--num-gpus", 4, "--slurm", 2, "--dry-run")
        assert code == 0, stderr
        assert "#SBATCH --gpus=4" in stdout.splitlines()


def test_an_array_job_of_a_bf16_run_is_not_warned_of_gpus_it_cannot_see(
        runner: CliRunner, prepared: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The job's GPUs are SLURM's, unknown where the job is planned: a run trained in bf16 is
    not warned that they have no bf16."""
    trained = tmp_path / "bf16"
    write_run(trained, prepared, tmp_path / "base.safetensors", mixed_precision="bf16")
    code, stdout, stderr = invoke(runner, "sample", "--lora", trained, "--n", N, *SMALL,
                                  "--sd-scripts", fake_gen.sd_scripts, "--python",
                                  sys.executable, "--out", tmp_path / "shared", "--slurm", 2,
                                  "--dry-run")
    assert code == 0, stderr
    assert "has no bf16" not in stderr and "capability" not in stdout + stderr, stdout + stderr


def test_a_task_planned_from_python_takes_the_gpus_it_is_given(
        prepared: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`job_gpus`: the task's GPUs are SLURM's, numbered 0..N-1 in its own variable; this
    shell's GPUs are never asked for, and a task of no GPU is refused."""
    trained = tmp_path / "trained"
    write_run(trained, prepared, tmp_path / "base.safetensors")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    options = SampleOptions(n=N, seed=40, width=64, height=64, steps=2, num_gpus=3)

    def no_gpus_here() -> list[Gpu]:
        raise AssertionError("this shell's GPUs were asked for")

    planned = sample(trained, tmp_path / "out", options, sd_scripts=fake_gen.sd_scripts,
                     python=sys.executable, dry_run=True, shard=MachineShard(1, 2),
                     detect=no_gpus_here, job_gpus=3)
    assert [shard.device for shard in planned.shards] == ["0", "1", "2"]
    with pytest.raises(UserError, match=r"^job_gpus must be at least 1 \(got 0\)"):
        sample(trained, tmp_path / "out", options, sd_scripts=fake_gen.sd_scripts,
               python=sys.executable, dry_run=True, job_gpus=0)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("k", "count", "dry_run"), [(0, 2, False), (3, 2, False),
                                                     (1, 0, True)])
def test_a_shard_outside_1_to_n_from_python_is_refused_before_anything_is_written(
        prepared: Path, fake_gen: FakeGen, tmp_path: Path, k: int, count: int,
        dry_run: bool) -> None:
    """`MachineShard` is checked as --shard K/N is: no images named from a negative index,
    no IndexError or ZeroDivisionError, and OUT left as it was (absent)."""
    trained = tmp_path / "trained"
    write_run(trained, prepared, tmp_path / "base.safetensors")
    out = tmp_path / "out"
    with pytest.raises(UserError) as caught:
        sample(trained, out, SampleOptions(n=4, seed=40, width=64, height=64, steps=2),
               sd_scripts=fake_gen.sd_scripts, python=sys.executable, dry_run=dry_run,
               shard=MachineShard(k, count))
    assert str(caught.value) == f"--shard {k}/{count}: K counts from 1 to N (got {k} of {count})"
    assert not out.exists()


def test_the_array_job_is_made_from_python_and_says_the_first_task_s_warnings(
        prepared: Path, fake_gen: FakeGen, tmp_path: Path, runner: CliRunner) -> None:
    """`sample_job`: the script is shown (dry run) or written into OUT, its tasks run the
    command given with --shard K/N, and what the first task's dry run warns of (here: a LoRA
    file with no run record, so no trigger or template known) reaches the user, through the
    CLI too, where it was dropped."""
    lora = write_run(tmp_path / "trained", prepared, tmp_path / "base.safetensors")
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(lora.read_bytes())
    options = SampleOptions(n=N, seed=40, width=64, height=64, steps=2, num_gpus=2,
                            base_model=str(tmp_path / "base.safetensors"),
                            like=prepared / "manifest.csv")
    task = ("medsynth-kohya", "sample", "--lora", str(alone))
    shown = sample_job(alone, tmp_path / "out", task, 3, options, dry_run=True,
                       sbatch=("partition=gpu",), sd_scripts=fake_gen.sd_scripts,
                       python=sys.executable)
    assert any("git reads no commit of its own" in warning for warning in shown.warnings)
    assert shown.job.path is None and "#SBATCH --array=1-3" in shown.job.text
    assert "#SBATCH --gpus=2" in shown.job.text and "#SBATCH --partition=gpu" in shown.job.text
    assert f'{alone} --shard "$SLURM_ARRAY_TASK_ID/3"' in shown.job.text.splitlines()[-1]
    assert not (tmp_path / "out").exists()
    written = sample_job(alone, tmp_path / "out", task, 3, options, sbatch=("partition=gpu",),
                         sd_scripts=fake_gen.sd_scripts, python=sys.executable)
    assert written.job.path == tmp_path / "out" / ".medsynth" / "sample.sbatch"
    assert written.job.path.read_text(encoding="utf-8") == shown.job.text
    assert (tmp_path / "out" / ".medsynth" / "slurm").is_dir()
    with pytest.raises(UserError, match=r"^--slurm N needs N >= 1 \(got 0\)$"):
        sample_job(alone, tmp_path / "out", task, 0, options)
    code, _, stderr = invoke(runner, "sample", "--lora", alone, "--out", tmp_path / "cli",
                             "--like", prepared / "manifest.csv", "--n", N, *SMALL,
                             "--base-model", tmp_path / "base.safetensors", "--sd-scripts",
                             fake_gen.sd_scripts, "--python", sys.executable, "--slurm", 2,
                             "--dry-run")
    assert code == 0 and "git reads no commit of its own" in " ".join(stderr.split()), stderr


@pytest.mark.parametrize(("extra", "needle"), [
    (["--shard", "5/4"], "K counts from 1 to N"),
    (["--shard", "half"], "must look like K/N"),
    (["--finalize"], "holds no set made by sample yet"),
    (["--finalize", "--shard", "1/2"], "leave out --shard"),
    (["--slurm", 0], "--slurm N needs N >= 1"),
    (["--slurm", 2, "--shard", "1/2"], "leave out --shard"),
    (["--submit"], "add --slurm N"),
    (["--slurm", 2, "--sbatch", "=gpu"], "KEY=VALUE"),
])
def test_bad_shard_options_are_one_line(runner: CliRunner, args: list[object], tmp_path: Path,
                                        extra: list[object], needle: str) -> None:
    code, _, stderr = invoke(runner, *args, "--out", tmp_path / "shared", *extra)
    assert code != 0 and needle in " ".join(stderr.split()), stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_of_two_shards_completing_at_once_one_writes_the_final_files(
        args: list[object], reference: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "shared"
    assert finish(start(*args, "--out", out, "--shard", "1/2")).code == 0
    with locks.hold(out, "sample", part=FINAL_PART):  # as if shard 1 were writing them now
        last = finish(start(*args, "--out", out, "--shard", "2/2"))
        assert last.code == 0, last.stderr
        assert not (out / "metadata.csv").exists() and not (out / "grid.jpg").exists()
    assert finish(start(*args, "--out", out, "--finalize")).code == 0
    assert _set(out) == reference


def test_shards_of_different_n_side_by_side_leave_the_largest_n(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sample.json"
    counted = synthset.recorded_n

    def slow_n(record: dict[str, object]) -> int:  # widens the read-then-replace window
        time.sleep(0.2)
        return counted(record)

    monkeypatch.setattr(machines, "recorded_n", slow_n)
    identity = {"seed": 40}
    machines.create_state(path, {"identity": identity, "n": 1, "status": "sharded"})

    def shard(n: int) -> None:
        machines.create_state(path, {"identity": identity, "n": n, "status": "sharded"})

    threads = [threading.Thread(target=shard, args=(n,)) for n in (7, 2, 3, 5, 4, 6)]
    for thread in threads:  # the largest first: the others read the set's n before it lands
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert json.loads(path.read_text(encoding="utf-8"))["n"] == 7


def test_a_shard_with_a_smaller_n_or_another_metadata_style_is_refused(
        args: list[object], tmp_path: Path) -> None:
    """Shard 2/2 of n=8 beside shard 1/2 of n=11 called the set complete at 8 images while its
    record said 11 (evaluate then called it unfinished); another --metadata-style made
    metadata.csv whichever style finished last."""
    out = tmp_path / "shared"
    first = finish(start(*args, "--out", out, "--shard", "1/2"))
    assert first.code == 0, first.stderr
    before = snapshot(out)
    at = args.index("--n")
    smaller = [*args[:at + 1], 8, *args[at + 2:]]
    for extra, said in (
            ((), f"{out} is a set of {N} images made by shards: give every shard --n {N}"),
            (("--dry-run",), f"give every shard --n {N}")):
        done = finish(start(*smaller, "--out", out, "--shard", "2/2", *extra))
        assert done.code == 1 and said in " ".join(done.stderr.split()), done.stderr
    other = finish(start(*args, "--out", out, "--shard", "2/2", "--metadata-style", "2020"))
    assert other.code == 1
    assert ("other settings (--metadata-style 2020 here, archive in that set): give every "
            "shard the same options (that set's: --metadata-style archive)"
            in " ".join(other.stderr.split()))
    assert snapshot(out) == before
    last = finish(start(*args, "--out", out, "--shard", "2/2"))
    assert last.code == 0 and "the set is complete" in " ".join(last.stdout.split()), last.stderr


@pytest.mark.parametrize(("extra", "said"), [
    (("--lora", "{tmp}/nothere"), "nothere"), (("--n", "-5"), "--n"),
    (("--width", "13"), "--width"), (("--set", "bogus=1"), "bogus"),
    (("--prompt", "a me1anoma", "--prompts", "{tmp}/nothere.txt"), "--prompt")])
def test_the_array_job_is_refused_when_every_task_would_be(
        runner: CliRunner, args: list[object], tmp_path: Path, extra: tuple[str, ...],
        said: str) -> None:
    """The script was written (and with --submit submitted) whatever its options; its N tasks
    then failed on the nodes."""
    out = tmp_path / "shared"
    given = [*args, *[word.format(tmp=tmp_path) for word in extra]]
    if "--lora" in extra:  # the later --lora wins: take the run's out
        at = given.index("--lora")
        del given[at:at + 2]
    code, stdout, stderr = invoke(runner, *given, "--out", out, "--slurm", 2)
    assert code != 0 and said in stderr, stdout + stderr
    assert "Traceback" not in stdout + stderr and not out.exists()


def test_the_array_job_refuses_a_folder_sample_did_not_make(
        runner: CliRunner, args: list[object], tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code, stdout, stderr = invoke(runner, *args, "--out", out, "--slurm", 2)
    assert code == 1 and "not made by medsynth-kohya sample" in stderr, stdout + stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
