"""`sample --lora` with a local path that does not exist is one line saying so; only a value
that can only be a Hub id is looked up on the Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError

from .conftest import invoke


@pytest.fixture
def hub_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The --lora values sample asked the Hub for (none is reached), in tmp_path as cwd."""
    from medsynth_kohya.hub import pull

    asked: list[str] = []

    def pull_lora(spec: str, *, revision: str | None = None) -> None:
        asked.append(spec)
        raise UserError(f"asked the Hub for {spec}")

    monkeypatch.setattr(pull, "pull_lora", pull_lora)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    return asked


@pytest.mark.parametrize("given", ["./runs/nothere", "runs/nothere", "./elsewhere/run",
                                   "someone/lora.safetensors"])
def test_a_local_path_that_is_not_there_is_named(runner: CliRunner, hub_calls: list[str],
                                                 given: str) -> None:
    code, stdout, stderr = invoke(runner, "sample", "--lora", given, "--n", 2, "--dry-run")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    assert (f"--lora {given} does not exist (a local run folder or .safetensors file; a Hub "
            "repo id is owner/name)") in lines[0]
    assert hub_calls == []


@pytest.mark.parametrize("given", ["someone/lora", "someone/lora:sub/x.safetensors"])
def test_a_hub_id_is_still_looked_up(runner: CliRunner, hub_calls: list[str],
                                     given: str) -> None:
    code, _, stderr = invoke(runner, "sample", "--lora", given, "--n", 2, "--dry-run")
    assert code != 0 and f"asked the Hub for {given}" in stderr
    assert hub_calls == [given]
