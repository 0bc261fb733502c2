"""`sample`'s own flow, in this process (so mutmut sees it): which LoRA and run, what the
generator is given, what the set's record says, re-runs, shards and --finalize, refusals."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.data.captions import DEFAULT_TRIGGER
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import synthset
from medsynth_kohya.sampling.lora import lora_run
from medsynth_kohya.sampling.machines import MachineShard
from medsynth_kohya.sampling.sample import SampleOptions, SampleResult, sample

from .conftest import this_python_at
from .fake_gen import PYTHON, FakeGen, write_lora

SMALL: dict[str, Any] = {"width": 64, "height": 64, "steps": 2}


def _sample(lora: Path | str, out: Path, fake: FakeGen, **given: Any) -> SampleResult:
    """`sample` through the stand-in generator on no GPU; SampleOptions from `given` (64 px,
    2 steps unless given), the other keyword arguments passed on."""
    keys = set(SampleOptions.__dataclass_fields__)
    options = SampleOptions(**{**SMALL, **{k: v for k, v in given.items() if k in keys}})
    rest = {k: v for k, v in given.items() if k not in keys}
    return sample(lora, out, options, sd_scripts=fake.sd_scripts, python=PYTHON,
                  detect=lambda: [], **rest)


def test_a_lora_named_from_inside_its_output_folder_is_its_runs(
        trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained / "output")
    result = _sample("melanoma.safetensors", tmp_path / "synth", fake_gen, n=2)
    assert result.status == "succeeded" and result.present == 2
    assert result.plan.base_model == "<local>/base.safetensors"  # from the run's record


def test_the_run_of_a_lora_file_is_marked_read_while_it_samples_and_a_hub_id_marks_none(
        trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """However --lora is written, its run is marked read (train refuses to change the LoRA
    meanwhile); the folder a Hub id would lie in, were it a path, is no run of it."""
    seen: list[list[str]] = []

    def progress(done: int, total: int) -> None:
        seen.append([reader.command for reader in locks.readers(trained)])

    monkeypatch.chdir(trained / "output")
    _sample(Path("melanoma.safetensors"), tmp_path / "a", fake_gen, n=2, on_progress=progress)
    assert seen and all(names == ["sample"] for names in seen)
    assert locks.readers(trained) == []
    monkeypatch.chdir(trained.parent)
    for given in (Path(trained.name) / "output" / "melanoma.safetensors", Path(trained.name)):
        found = lora_run(given)
        assert found is not None and found.samefile(trained)
    monkeypatch.chdir(trained)
    assert lora_run(Path("alice/lora")) is None  # a Hub id: no run of this folder
    assert lora_run(Path("output")) is None  # a folder without run.json


def _state(out: Path) -> dict[str, Any]:
    """The set's record, OUT/.medsynth/sample.json."""
    record: dict[str, Any] = json.loads((out / ".medsynth" / "sample.json").read_text("utf-8"))
    return record


def test_the_set_continues_with_the_same_lora_moved_and_refuses_other_generator_options(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The set is known by the LoRA's bytes, not its path; the generator's other options are
    named in the refusal."""
    out = tmp_path / "synth"
    assert _sample(trained, out, fake_gen, n=2).present == 2
    moved = tmp_path / "moved"
    shutil.move(trained, moved)
    again = _sample(moved, out, fake_gen, n=3)
    assert again.status == "succeeded" and (again.present_before, again.present) == (2, 3)
    assert again.generated == 1 and len(fake_gen.calls()) == 2
    with pytest.raises(UserError) as refused:
        _sample(moved, out, fake_gen, n=3, overrides=("network_mul=0.5",))
    assert str(refused.value) == (f"{out} holds 3 images made with other settings (--set "
                                  "network_mul=0.5 here, 1.0 in that set): use another --out, "
                                  "or give that set's values (--set network_mul=1.0), or "
                                  "delete it")


def test_prompts_from_a_bare_manifest_are_said_to_use_prepares_defaults(
        trained: Path, prepared: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """Only a --like whose folder tells neither template nor trigger warns; a run's record
    or --prompt does not."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(prepared / "manifest.csv", bare / "manifest.csv")
    loose = write_lora(tmp_path / "loose" / "mine.safetensors")
    base = str(tmp_path / "base.safetensors")
    said = ("no train run or prepared folder found: prompts use prepare's default template "
            f"and trigger {DEFAULT_TRIGGER!r}")
    result = _sample(loose, tmp_path / "a", fake_gen, n=2, like=bare / "manifest.csv",
                     base_model=base, dry_run=True)
    assert said in result.warnings
    for lora, given in ((trained, {}), (loose, {"prompt": "a mole"}),
                        (loose, {"like": prepared / "manifest.csv"})):
        result = _sample(lora, tmp_path / "b", fake_gen, n=2, base_model=base, dry_run=True,
                         **given)
        assert not [w for w in result.warnings if "no train run" in w], (lora, given)


def test_the_record_says_running_while_it_generates_and_when_it_started_and_ended(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """A run killed while generating leaves a set push and evaluate call unfinished."""
    out = tmp_path / "synth"
    seen: list[tuple[int, int, str, str | None]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total, _state(out)["status"], synthset.unfinished(out)))

    result = _sample(trained, out, fake_gen, n=2, on_progress=progress)
    assert seen[0] == (0, 2, "running",
                       f"{out} is unfinished: sample stopped before the end with 0 of 2 images")
    assert seen[-1][:2] == (2, 2) and result.status == "succeeded"
    state = _state(out)
    assert state["status"] == "succeeded" and synthset.unfinished(out) is None
    start, end = (datetime.fromisoformat(state[k]) for k in ("start", "end"))
    assert start <= end <= datetime.now(timezone.utc)
    assert (state["present"], [s["made"] for s in state["shards"]]) == (2, [2])


def test_the_generator_runs_under_the_python_given(trained: Path, fake_gen: FakeGen,
                                                   tmp_path: Path) -> None:
    python = this_python_at(tmp_path / "venv" / "bin" / "python")
    result = sample(trained, tmp_path / "synth", SampleOptions(n=2, **SMALL),
                    sd_scripts=fake_gen.sd_scripts, python=str(python), detect=lambda: [])
    assert result.status == "succeeded"
    [shard] = result.shards
    assert shard.command.argv[0] == str(python)
    assert _state(tmp_path / "synth")["commands"][0][0] == str(python)


def test_a_shards_dry_run_shows_its_own_images_and_refuses_other_settings(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    first, second = MachineShard(1, 2), MachineShard(2, 2)
    planned = _sample(trained, out, fake_gen, n=5, shard=first, dry_run=True)
    assert (planned.out, planned.status, planned.machine_shard) == (out, "dry-run", first)
    assert planned.wanted == 3 and planned.metadata == out / "metadata.csv"
    assert [s.images for s in planned.shards] == [tuple(first.indices(5))]
    made = _sample(trained, out, fake_gen, n=5, shard=first)
    assert (made.status, made.present, made.set_present) == ("succeeded", 3, 3)
    assert made.metadata is None and made.grid is None
    assert made.message == ("shard 1/2: 3 images made; the set has 3 of 5 in "
                            f"{out / 'images'}; metadata.csv and grid.jpg are written by the "
                            "shard that completes it (or run sample --finalize)")
    planned = _sample(trained, out, fake_gen, n=5, shard=second, dry_run=True)
    assert [s.images for s in planned.shards] == [tuple(second.indices(5))]
    assert planned.present == 0 and planned.machine_shard == second
    with pytest.raises(UserError) as refused:
        _sample(trained, out, fake_gen, n=5, seed=1, shard=second, dry_run=True)
    assert str(refused.value) == (f"{out} holds 3 images made with other settings (--seed 1 "
                                  "here, 0 in that set): use another --out, or give that set's "
                                  "values (--seed 0), or delete it")
    with pytest.raises(UserError, match="is a set of 5 images made by shards: give every "
                                        "shard --n 5"):
        _sample(trained, out, fake_gen, n=4, shard=second, dry_run=True)


def test_a_shards_rows_and_the_whole_set_follow_the_metadata_style(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    style = MetadataStyle("2020")
    for k in (1, 2):
        result = _sample(trained, out, fake_gen, n=3, shard=MachineShard(k, 2),
                         metadata_style=style)
    part = (out / ".medsynth" / "machines" / "1-of-2.csv").read_text(encoding="utf-8")
    assert part.startswith("image_name,")
    assert result.metadata == out / "metadata.csv" and result.grid == out / "grid.jpg"
    assert (out / "metadata.csv").read_text(encoding="utf-8").startswith("image_name,")
    assert result.message.endswith(": the set is complete (metadata.csv, grid.jpg written)")


def test_a_whole_run_may_rewrite_a_finished_sets_metadata_in_another_style(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    _sample(trained, out, fake_gen, n=2, metadata_style=MetadataStyle("2020"))
    planned = _sample(trained, out, fake_gen, n=2, dry_run=True)
    assert planned.status == "dry-run" and planned.shards == ()
    again = _sample(trained, out, fake_gen, n=2)
    assert again.message == f"all 2 images were already there; 2 images in {out / 'images'}"
    assert (out / "metadata.csv").read_text(encoding="utf-8").startswith("isic_id,")


def test_finalize_of_a_set_short_of_images_writes_its_files_and_says_it_is_incomplete(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    with pytest.raises(UserError) as refused:
        _sample(trained, out, fake_gen, n=5, finalize=True)
    assert str(refused.value) == (f"--finalize: {out} holds no set made by sample yet; run "
                                  "its shards first")
    _sample(trained, out, fake_gen, n=5, shard=MachineShard(2, 2))
    fake_gen.forget()
    result = _sample(trained, out, fake_gen, n=5, finalize=True)
    assert fake_gen.calls() == [] and result.shards == ()
    assert (result.status, result.present, result.set_present) == ("incomplete", 2, 2)
    assert result.message == (f"wrote metadata.csv and grid.jpg; the set has 2 of 5 in "
                              f"{out / 'images'}; {out / 'metadata.csv'} lists those (re-run "
                              "the missing shards, then --finalize)")
    assert _state(out)["status"] == "incomplete" and result.grid == out / "grid.jpg"
    assert (out / "metadata.csv").read_text(encoding="utf-8").count("\nSYN_") == 2


def test_a_shards_progress_counts_its_own_images_only(
        trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished images another machine's killed shard left in its folder are not this
    shard's progress."""
    out = tmp_path / "synth"
    _sample(trained, out, fake_gen, n=4, shard=MachineShard(2, 2))
    left = out / ".medsynth" / "shards" / "2-of-2.0" / "out"
    left.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(sorted((out / "images").glob("*.png"))):
        shutil.copy(image, left / f"im_{k + 1:06d}.png")
    own = out / ".medsynth" / "shards" / "1-of-2.0" / "out"
    seen: list[tuple[int, int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total, len(list(own.glob("im_*.png"))) if own.is_dir() else 0))

    monkeypatch.setenv("FAKE_GEN_SLOW", "0.6")  # counted at most twice a second
    result = _sample(trained, out, fake_gen, n=4, shard=MachineShard(1, 2),
                     on_progress=progress)
    assert result.status == "succeeded" and seen[-1][:2] == (2, 2)
    assert all(done <= there for done, _, there in seen[:-1]), seen


def test_a_run_stopped_by_ctrl_c_is_interrupted_with_the_images_it_kept(
        trained: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C as the progress hook receives it (KeyboardInterrupt in this thread, so no
    signal handler is needed): the set's status, message and record say interrupted."""
    out = tmp_path / "synth"
    stopped: list[int] = []

    def progress(done: int, total: int) -> None:
        if done >= 1 and not stopped:
            stopped.append(done)
            raise KeyboardInterrupt

    monkeypatch.setenv("FAKE_GEN_SLOW", "0.6")
    result = _sample(trained, out, fake_gen, n=6, on_progress=progress)
    # on a loaded machine the generator may finish before the hook's line is read
    assert stopped and result.status == "interrupted" and stopped[0] <= result.present <= 6
    assert result.message == f"stopped with {result.present} of 6 images"
    assert [s.interrupted for s in result.shards] == [True]
    assert _state(out)["status"] == "interrupted"
    assert synthset.unfinished(out) == (f"{out} is unfinished: sample was interrupted with "
                                        f"{result.present} of 6 images")


def test_shards_keep_the_sets_metadata_style_and_a_record_without_one_takes_any(
        trained: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    _sample(trained, out, fake_gen, n=4, shard=MachineShard(1, 2),
            metadata_style=MetadataStyle("2020"))
    assert _state(out)["metadata_style"] == "2020"
    own = json.loads((out / ".medsynth" / "machines" / "1-of-2.json").read_text("utf-8"))
    assert own["status"] == "succeeded" and own["present"] == 2
    with pytest.raises(UserError, match="other settings \\(--metadata-style archive here, "
                                        "2020 in that set\\): give every shard the same "
                                        "options \\(that set's: --metadata-style 2020\\)"):
        _sample(trained, out, fake_gen, n=4, shard=MachineShard(2, 2), dry_run=True)
    state = _state(out)
    del state["metadata_style"]  # a record written before sample kept the style
    (out / ".medsynth" / "sample.json").write_text(json.dumps(state), encoding="utf-8")
    planned = _sample(trained, out, fake_gen, n=4, shard=MachineShard(2, 2), dry_run=True)
    assert planned.status == "dry-run"
