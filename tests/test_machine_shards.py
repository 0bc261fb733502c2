"""The rules of shards side by side (sampling/machines.py), called directly: K/N, each shard's
part of the set, which shards run, who waits for whom, sample.json's first writer and the
SLURM array script."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import machines
from medsynth_kohya.sampling.machines import MachineShard


@pytest.mark.parametrize(("text", "shard"), [
    ("2/4", MachineShard(2, 4)), (" 1 / 1 ", MachineShard(1, 1)), ("4/4", MachineShard(4, 4)),
    ("10/12", MachineShard(10, 12))])
def test_k_of_n_as_typed(text: str, shard: MachineShard) -> None:
    assert MachineShard.parse(text) == shard


@pytest.mark.parametrize(("text", "said"), [
    ("2", "--shard '2' must look like K/N, e.g. --shard 2/4 (shard 2 of 4)"),
    ("1/2/3", "--shard '1/2/3' must look like K/N, e.g. --shard 2/4 (shard 2 of 4)"),
    ("-1/2", "--shard '-1/2' must look like K/N, e.g. --shard 2/4 (shard 2 of 4)"),
    ("0/4", "--shard 0/4: K counts from 1 to N (got 0 of 4)"),
    ("5/4", "--shard 5/4: K counts from 1 to N (got 5 of 4)"),
    ("0/0", "--shard 0/0: K counts from 1 to N (got 0 of 0)"),
    ("1/0", "--shard 1/0: K counts from 1 to N (got 1 of 0)")])
def test_a_shard_that_is_not_k_of_n_is_one_line(text: str, said: str) -> None:
    with pytest.raises(UserError) as caught:
        MachineShard.parse(text)
    assert str(caught.value) == said


def test_a_shards_names_parts_and_files(tmp_path: Path) -> None:
    shard = MachineShard(2, 3)
    assert (shard.name, shard.part) == ("2-of-3", "shard-2-of-3")
    assert shard.record(tmp_path, ".json") == tmp_path / ".medsynth" / "machines" / "2-of-3.json"
    assert shard.record(tmp_path, ".csv").name == "2-of-3.csv"


@pytest.mark.parametrize(("total", "count", "parts"), [
    (10, 3, [range(0, 4), range(4, 7), range(7, 10)]),
    (11, 4, [range(0, 3), range(3, 6), range(6, 9), range(9, 11)]),
    (2, 3, [range(0, 1), range(1, 2), range(2, 2)]),
    (6, 2, [range(0, 3), range(3, 6)])])
def test_each_shard_makes_a_contiguous_run_the_first_ones_one_longer(
        total: int, count: int, parts: list[range]) -> None:
    assert [MachineShard(k, count).indices(total) for k in range(1, count + 1)] == parts


def test_running_names_the_shards_that_hold_their_part_now(tmp_path: Path) -> None:
    out = tmp_path / "set"
    assert machines.running(out) == []
    out.mkdir()
    (out / f"{locks.LOCK_NAME}.shard-3-of-3").write_text("{}", encoding="utf-8")  # one that died
    (out / f"{locks.LOCK_NAME}.shard-x-of-3").write_text("{}", encoding="utf-8")
    (out / "shard-1-of-3").write_text("", encoding="utf-8")  # not a lock file
    with locks.hold(out, "sample", part="shard-2-of-3"), \
            locks.hold(out, "sample", part="shard-1-of-3"), \
            locks.hold(out, "sample", part="reader-host-1"), \
            locks.hold(out, "sample", part="shard-1-of-3-extra"), \
            locks.hold(out, "sample"):
        assert machines.running(out) == ["1-of-3", "2-of-3"]
    assert machines.running(out) == []


def _sample_json(out: Path, status: str, n: int, made: int) -> None:
    """A set's sample.json with `made` of its `n` images in place."""
    (out / ".medsynth").mkdir(parents=True)
    (out / ".medsynth" / "sample.json").write_text(json.dumps(
        {"status": status, "n": n, "identity": {"id_prefix": "SYN_"}}), encoding="utf-8")
    (out / "images").mkdir()
    for i in range(made):
        (out / "images" / f"SYN_{i:07d}.png").write_bytes(b"png")


def test_a_set_being_made_or_left_unfinished_is_refused_to_readers(tmp_path: Path) -> None:
    out = tmp_path / "set"
    _sample_json(out, "sharded", 3, 3)
    machines.ensure_made(out, "push")
    with locks.hold(out, "sample", part="shard-1-of-2"), \
            locks.hold(out, "sample", part="shard-2-of-2"), pytest.raises(UserError) as caught:
        machines.ensure_made(out, "push")
    assert str(caught.value) == (f"{out} is still being made by sample shards 1-of-2, 2-of-2; "
                                 "`push` needs the set finished: run it when they have ended")
    with locks.hold(out, "sample"), pytest.raises(UserError, match=r"still being written by .*"
                                                               "; `evaluate` needs it finished"):
        machines.ensure_made(out, "evaluate")
    beat = datetime.now(timezone.utc).isoformat(timespec="seconds")
    locks.lock_path(out).write_text(json.dumps(  # a whole-set run on another machine
        {"command": "sample", "pid": 4, "host": "lab-node-7", "since": "t0", "beat": beat}),
        encoding="utf-8")
    with pytest.raises(UserError, match="another machine"):
        machines.ensure_made(out, "evaluate")
    machines.ensure_made(out, "evaluate", break_lock=True)
    locks.lock_path(out).unlink()
    (out / "images" / "SYN_0000002.png").unlink()
    with pytest.raises(UserError) as caught:
        machines.ensure_made(out, "evaluate")
    assert str(caught.value) == (
        f"{out} is unfinished: its shards have made 2 of 3 images; `evaluate` needs the set "
        "finished: re-run the same `medsynth-kohya sample` command to make the rest, then "
        "`evaluate` again")


def test_a_shard_waits_for_a_whole_run_and_a_whole_run_for_every_shard(tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    machines.ensure_alone(out, MachineShard(1, 2))
    machines.ensure_alone(out, None)
    with locks.hold(out, "sample") as lock, pytest.raises(UserError) as caught:
        machines.ensure_alone(out, MachineShard(1, 2))
    assert str(caught.value) == (f"{out} is in use by {lock.record.describe()}; run the shard "
                                 "when it has finished")
    with locks.hold(out, "sample", part="shard-2-of-3"), \
            locks.hold(out, "sample", part="shard-3-of-3"):
        machines.ensure_alone(out, MachineShard(1, 3))  # shards go side by side
        with pytest.raises(UserError) as caught:
            machines.ensure_alone(out, None)
    assert str(caught.value) == (f"shards 2-of-3, 3-of-3 are still writing {out}; wait for them "
                                 "to finish, then run this again")


def _create(path: Path, **state: Any) -> dict[str, Any]:
    return machines.create_state(path, {"identity": {"seed": 1}, "n": 4, "status": "sharded",
                                        **state})


@pytest.mark.parametrize(("found", "kept"), [
    ({"identity": {"seed": 2}, "n": 4, "status": "sharded"}, True),  # other settings: refused
    ({"identity": {"seed": 1}, "n": 4, "status": "sharded", "by": "shard 2"}, True),
    ({"identity": {"seed": 1}, "n": 9, "status": "succeeded"}, True),
    ({"identity": {"seed": 1}, "n": 3, "status": "sharded"}, False),  # being extended
    ({"identity": {"seed": 1}, "n": 3, "status": "succeeded"}, False),
    ({"identity": {"seed": 1}, "n": 9, "status": "interrupted"}, False),
    ({"identity": {"seed": 2}, "n": 9, "status": "succeeded"}, False),  # a whole run's
    ({"identity": {"seed": 1}, "n": None, "status": "sharded"}, False),
    ({"identity": {"seed": 1}, "n": "many", "status": "sharded"}, False),
    ({"identity": {"seed": 1}, "status": "planned"}, False)])
def test_the_first_shard_writes_sample_json_and_the_others_keep_or_extend_it(
        tmp_path: Path, found: dict[str, Any], kept: bool) -> None:
    path = tmp_path / "state" / "sample.json"
    path.parent.mkdir()
    path.write_text(json.dumps(found), encoding="utf-8")
    mine = {"identity": {"seed": 1}, "n": 4, "status": "sharded"}
    assert _create(path) == (found if kept else mine)
    assert json.loads(path.read_text(encoding="utf-8")) == (found if kept else mine)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.json", "sample.json.lock"]


def test_a_new_sample_json_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "out" / ".medsynth" / "sample.json"
    made = _create(path, lora=Path("/runs/m.safetensors"))
    assert made["lora"] == "/runs/m.safetensors"  # written as JSON, read back
    assert json.loads(path.read_text(encoding="utf-8")) == made
    assert path.read_text(encoding="utf-8").startswith('{\n  "identity"')


def test_the_array_script_runs_shard_k_of_count_in_task_k(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sets" / "melanoma 50%"
    text = machines.array_script(["medsynth-kohya", "sample", "--out", str(out)], 4, 2, out,
                                 {"partition": "gpu"})
    lines = text.splitlines()
    assert lines[:8] == [
        "#!/bin/bash", '#SBATCH --job-name="medsynth-sample-melanoma 50%"',
        "#SBATCH --array=1-4", "#SBATCH --ntasks=1", "#SBATCH --gpus=2",
        f"#SBATCH --chdir={tmp_path}",
        f'#SBATCH --output="{out.resolve()}/.medsynth/slurm/%A_%a.out"'.replace(
            "50%", "50%%"),
        "#SBATCH --partition=gpu"]
    task = shlex.split(shlex.split(lines[-1])[3])
    assert task == ["exec", "medsynth-kohya", "sample", "--out", str(out), "--shard",
                    "$SLURM_ARRAY_TASK_ID/4"]


@pytest.mark.parametrize("n", [None, "one", [1]])
def test_a_sample_json_that_says_no_n_counts_as_none_made(tmp_path: Path, n: Any) -> None:
    """Even a set of one image replaces it: its n is read as 0, below any shard's."""
    path = tmp_path / "sample.json"
    path.write_text(json.dumps({"identity": {"seed": 1}, "status": "sharded", "n": n}),
                    encoding="utf-8")
    mine = {"identity": {"seed": 1}, "n": 1, "status": "sharded"}
    assert machines.create_state(path, mine) == mine
    assert json.loads(path.read_text(encoding="utf-8")) == mine
