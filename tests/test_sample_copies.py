"""`sample --check-copies`: the finished set against the run's training images, recorded."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepare import prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.evaluation import copycheck

from .conftest import invoke, one_line_error
from .disk import checksums
from .fake_gen import PYTHON, FakeGen, make_fake_gen, write_lora, write_run
from .processes import finish, start, wait_for


@pytest.fixture
def trained(isic2020: SyntheticSet, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeGen]:
    """A finished run on a prepared folder of the generated ISIC 2020 set, and the fake
    generator."""
    prepare(isic2020.root, tmp_path / "prepared", workers=1)
    (tmp_path / "trained").mkdir()
    write_run(tmp_path / "trained", tmp_path / "prepared", tmp_path / "base.safetensors")
    return tmp_path / "trained", make_fake_gen(tmp_path, monkeypatch)


def _sample(runner: CliRunner, fake: FakeGen, lora: Path, out: Path,
            *more: object) -> tuple[int, str, str]:
    return invoke(runner, "sample", "--lora", lora, "--n", 4, "--out", out, "--width", 64,
                  "--height", 64, "--steps", 2, "--check-copies", "--sd-scripts",
                  fake.sd_scripts, "--python", PYTHON, *more)


def test_a_training_photo_in_the_set_is_flagged_and_recorded(
        runner: CliRunner, tmp_path: Path, trained: tuple[Path, FakeGen]) -> None:
    run, fake = trained
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake, run, out)
    assert code == 0, stderr
    training = manifest.read(tmp_path / "prepared" / "manifest.csv")
    count = int((training["split"] == "train").sum())
    assert f"no near-copies: 4 images checked against {count} training photos of prepared" in (
        stdout)
    clean = copycheck.read(out)
    assert clean is not None and clean.flagged == () and len(clean.checked) == 4

    row = training.loc[training["split"] == "train"].iloc[2]
    photo = cv2.imread(str(row["source"]))
    assert photo is not None
    cv2.imwrite(str(out / "images" / "SYN_0000001.png"),
                cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA))
    code, stdout, stderr = _sample(runner, fake, run, out)
    assert code == 1 and "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert (f"1 of 4 images are near-copies of training photos of prepared: SYN_0000001 ~ "
            f"{row['id']}") in error
    assert "copies.json: push refuses them unless --allow-copies" in error
    flagged = copycheck.read(out)
    assert flagged is not None
    assert [(f.synthetic_id, f.training_id) for f in flagged.flagged] == [
        ("SYN_0000001", row["id"])]
    assert len(fake.calls()) == 1


def test_without_the_training_images_it_refuses_before_generating(
        runner: CliRunner, tmp_path: Path, trained: tuple[Path, FakeGen]) -> None:
    _, fake = trained
    lora = write_lora(tmp_path / "loose" / "melanoma.safetensors")
    code, _, stderr = _sample(runner, fake, lora, tmp_path / "synth", "--base-model",
                              tmp_path / "base.safetensors")
    assert code == 1 and "--check-copies needs the training images" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert fake.calls() == [] and not (tmp_path / "synth" / "images").exists()


def test_with_shards_the_shard_that_completes_the_set_checks_it(
        runner: CliRunner, tmp_path: Path, trained: tuple[Path, FakeGen]) -> None:
    """Each shard but the last found no metadata.csv to check and failed; now it leaves the
    check to the shard that completes the set."""
    run, fake = trained
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake, run, out, "--shard", "1/2")
    said = " ".join(stdout.split())
    assert code == 0, stdout + stderr
    assert "are written and the set checked for near-copies by the shard that completes" in said
    assert copycheck.read(out) is None
    code, stdout, stderr = _sample(runner, fake, run, out, "--shard", "2/2")
    assert code == 0, stdout + stderr
    assert "no near-copies: 4 images checked against" in stdout
    recorded = copycheck.read(out)
    assert recorded is not None and len(recorded.checked) == 4


def test_a_prepare_of_the_training_folder_is_refused_while_the_set_is_checked(
        runner: CliRunner, tmp_path: Path, trained: tuple[Path, FakeGen],
        isic2020: SyntheticSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """sample read the training photos only after generating: a prepare started meanwhile
    changed them, and the check (and push after it) trusted other photos. The prepared folder
    is marked read for the whole run now, so that prepare is refused."""
    run, fake = trained
    prepared = tmp_path / "prepared"
    before = checksums(prepared)
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.5")
    sampling = start("sample", "--lora", run, "--n", 4, "--out", tmp_path / "synth",
                     "--width", 64, "--height", 64, "--steps", 2, "--check-copies",
                     "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    try:
        wait_for(lambda: bool(fake.calls()) or sampling.poll() is not None,
                 what="the generator to start")
        assert sampling.poll() is None, finish(sampling).stderr
        code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", prepared,
                                      "--force", "--query", 'sex == "female"', "--workers", 1)
    finally:
        done = finish(sampling)
    error = one_line_error(code, stdout, stderr)
    assert f"{prepared} is being read by `medsynth-kohya sample` (pid {sampling.pid}" in error
    assert checksums(prepared) == before
    assert done.code == 0, done.stderr
    training = manifest.read(prepared / "manifest.csv")
    checked = copycheck.read(tmp_path / "synth")
    assert checked is not None and checked.n_training == int((training["split"] == "train").sum())
    assert locks.readers(prepared) == []
