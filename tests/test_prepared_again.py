"""A run's prepared folder prepared again after the run trained on it: `evaluate --lora RUN`
refuses it (its photos are not the ones the LoRA saw), `sample --lora RUN` warns that its
prompts come from it and `sample --check-copies` refuses it, as run.json's manifest sha256 says."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import features
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate
from medsynth_kohya.sampling.sample import SampleOptions, sample
from medsynth_kohya.training.record import DatasetRecord, RunFolder, RunRecord

from .conftest import invoke, prepare_set
from .eval_data import photo, synthetic_set
from .fake_gen import PYTHON, FakeGen, write_run

WOMEN = 'sex == "female"'


@pytest.fixture
def run(prepared: Path, tmp_path: Path) -> Path:
    """A finished run of `prepared` whose record holds the manifest's sha256, as train writes
    it."""
    run = tmp_path / "run"
    run.mkdir()
    write_run(run, prepared, tmp_path / "base.safetensors")
    folder = RunFolder(run)
    record = folder.load()
    dataset = replace(record.dataset or DatasetRecord(),
                      manifest_sha256=files.sha256(PreparedFolder(prepared).manifest))
    folder.save(replace(record, dataset=dataset))
    return run


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    synthetic_set(tmp_path / "syn", [photo(9600 + i, size=(64, 64)) for i in range(3)])
    return tmp_path / "syn"


def _prepare_again(isic2020: SyntheticSet, prepared: Path) -> int:
    """Prepare the run's folder again with the women only; their number of training images."""
    table = manifest.read(PreparedFolder(prepared).manifest)
    assert {"female", "male"} <= set(table["sex"].dropna())
    prepare_set(isic2020, prepared, repeats=2, query=WOMEN)
    again = manifest.read(PreparedFolder(prepared).manifest)
    assert set(again["sex"].dropna()) == {"female"}
    return int((again["split"] == "train").sum())


def test_prepared_again_compares_the_recorded_manifest_with_the_current_one(
        run: Path, prepared: Path, isic2020: SyntheticSet) -> None:
    record = RunFolder(run).load()
    assert not record.prepared_again()
    assert record.prepared_again("0" * 64)  # the digest of bytes a caller read
    assert not RunRecord().prepared_again()  # nothing recorded: nothing to say
    _prepare_again(isic2020, prepared)
    assert record.prepared_again()
    unrecorded = replace(record, dataset=replace(record.dataset or DatasetRecord(),
                                                 manifest_sha256=None))
    assert not unrecorded.prepared_again()  # an older run: not known


def test_evaluate_lora_refuses_a_folder_prepared_again_unless_forced(
        runner: CliRunner, run: Path, prepared: Path, isic2020: SyntheticSet,
        synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    args = ("evaluate", "--lora", run, "--synthetic", synthetic, "--classifier", "none")
    code, _, stderr = invoke(runner, *args, "--out", tmp_path / "before")
    assert code == 0 and "prepared again" not in stderr, stderr

    women = _prepare_again(isic2020, prepared)
    code, stdout, stderr = invoke(runner, *args, "--out", tmp_path / "report")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"{prepared} was prepared again since {run} trained on it (manifest changed)" in line
    assert "evaluate with --real" in line and "or train again" in line and "--force" in line
    assert not (tmp_path / "report" / "report.json").exists()
    with pytest.raises(UserError, match="was prepared again since"):
        evaluate(None, synthetic, tmp_path / "api", EvaluateOptions(classifier="none"),
                 lora=run)

    code, _, stderr = invoke(runner, *args, "--out", tmp_path / "report", "--force")
    assert code == 0, stderr
    assert "was prepared again since the run trained on it" in " ".join(stderr.split())
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_training"] == women
    assert any("prepared again" in note for note in document["notes"])
    assert str(tmp_path) not in json.dumps(document["notes"])  # the report is shared


def test_sample_warns_that_its_prompts_come_from_a_folder_prepared_again(
        runner: CliRunner, run: Path, prepared: Path, isic2020: SyntheticSet,
        fake_gen: FakeGen, tmp_path: Path) -> None:
    def warnings(**options: object) -> tuple[str, ...]:
        result = sample(run, tmp_path / "synth", SampleOptions(n=4, **options),  # type: ignore[arg-type]
                        sd_scripts=fake_gen.sd_scripts, python=PYTHON, dry_run=True)
        return result.warnings

    other = tmp_path / "other"
    prepare_set(isic2020, other, repeats=2)
    assert not any("prepared again" in w for w in warnings() + warnings(like=other))

    _prepare_again(isic2020, prepared)
    drawn = [w for w in warnings() if "prepared again" in w]
    assert len(drawn) == 1
    assert f"the prompts are drawn from {PreparedFolder(prepared).manifest}" in drawn[0]
    assert "give --like" in drawn[0] and "train again" in drawn[0]
    unchecked = [w for w in warnings(like=other) if "prepared again" in w]
    assert len(unchecked) == 1 and "was not checked against the data the LoRA" in unchecked[0]

    code, stdout, stderr = invoke(runner, "sample", "--lora", run, "--n", 4, "--out",
                                  tmp_path / "cli", "--dry-run", "--sd-scripts",
                                  fake_gen.sd_scripts, "--python", PYTHON)
    assert code == 0, stderr
    assert "was prepared again since the LoRA was trained on it" in " ".join(
        (stdout + stderr).split())


def test_check_copies_refuses_a_folder_prepared_again_before_generating(
        runner: CliRunner, run: Path, prepared: Path, isic2020: SyntheticSet,
        fake_gen: FakeGen, tmp_path: Path) -> None:
    _prepare_again(isic2020, prepared)
    code, stdout, stderr = invoke(runner, "sample", "--lora", run, "--n", 2, "--out",
                                  tmp_path / "synth", "--width", 64, "--height", 64, "--steps",
                                  2, "--check-copies", "--sd-scripts", fake_gen.sd_scripts,
                                  "--python", PYTHON)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    line = " ".join(stderr.split())
    assert f"{prepared} was prepared again since the run trained on it" in line
    assert "--real" in line
    assert fake_gen.calls() == [] and not (tmp_path / "synth" / "images").exists()
