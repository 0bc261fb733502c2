"""`sample`'s own flow, in this process (so mutmut sees it): which LoRA and run, what the
generator is given, what the set's record says, re-runs, shards and --finalize, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.sampling.lora import lora_run
from medsynth_kohya.sampling.sample import SampleOptions, SampleResult, sample

from .fake_gen import PYTHON, FakeGen

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
