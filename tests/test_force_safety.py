"""Nothing of the user's is lost: refused commands leave the disk as it was, --force included,
and a run folder that is not a run is never written into."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import invoke
from .disk import checksums
from .fakes import FakeSd


def _train(runner: CliRunner, prepared: Path, run: Path, fake_sd: FakeSd,
           *extra: object) -> tuple[int, str, str]:
    return invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                  "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable, *extra)


@pytest.mark.parametrize("refusal", [("--set", "no_such_option=1"),
                                     ("--python", "/nonexistent/python3")])
def test_a_refused_train_force_leaves_the_succeeded_run_as_it_was(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        refusal: tuple[str, str]) -> None:
    run = tmp_path / "run"
    code, stdout, stderr = _train(runner, prepared, run, fake_sd)
    assert code == 0, stdout + stderr
    (run / "my-notes.txt").write_text("mine", encoding="utf-8")
    before = checksums(run)
    code, _, stderr = _train(runner, prepared, run, fake_sd, "--force", *refusal)
    assert code != 0 and stderr.strip()
    assert checksums(run) == before
    assert not list(run.glob("output.replaced-*"))

    code, stdout, stderr = _train(runner, prepared, run, fake_sd, "--force")
    assert code == 0, stdout + stderr
    after = checksums(run)
    assert after["my-notes.txt"] == before["my-notes.txt"]
    [aside] = run.glob("output.replaced-*")
    assert (aside / "melanoma.safetensors").is_file()


def test_train_never_writes_into_a_folder_that_is_not_a_run(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    mine = tmp_path / "myconfigs"
    mine.mkdir()
    (mine / "config.toml").write_text("# my own config\n", encoding="utf-8")
    before = checksums(mine)
    for extra in ((), ("--dry-run",), ("--force",), ("--dry-run", "--force")):
        code, stdout, stderr = _train(runner, prepared, mine, fake_sd, *extra)
        assert code == 1 and "no run.json" in stderr, stdout + stderr
        assert checksums(mine) == before
        assert sorted(p.name for p in mine.iterdir()) == ["config.toml"]


def test_a_dry_run_never_replaces_a_real_runs_record(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(runner, prepared, run, fake_sd)[0] == 0
    before = checksums(run)
    code, _, stderr = _train(runner, prepared, run, fake_sd, "--dry-run", "--force")
    assert code == 1 and "another --run-dir" in stderr
    assert checksums(run) == before
