"""Warnings that bear on hours of GPU work are printed before it starts, not after."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medsynth_kohya.cli import app
from medsynth_kohya.sampling.sample import SampleOptions, sample

from .fake_gen import PYTHON, FakeGen
from .fakes import FakeSd


def test_train_warns_before_it_trains_and_not_again_after(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """A warmup as long as the run was only said once training had finished."""
    result = runner.invoke(app, [
        "train", str(prepared), "--preset", "cpu-smoke", "--run-dir", str(tmp_path / "run"),
        "--sd-scripts", str(fake_sd.sd_scripts), "--set", "lr_scheduler=linear",
        "--set", "lr_warmup_steps=100000"],
        catch_exceptions=False)
    said = result.output
    assert result.exit_code == 0, said
    assert said.count("lr_warmup_steps = 100000 is not shorter than the run") == 1, said
    assert said.index("lr_warmup_steps = 100000") < said.index("launching"), said


def test_sample_warns_before_it_generates(trained: Path, fake_gen: FakeGen,
                                          tmp_path: Path) -> None:
    """"no NVIDIA GPU found: generating on the CPU (minutes per image)" came after the set was
    made: `on_launch` sees the warnings while no image exists yet, and the CLI says each once."""
    out = tmp_path / "synth"
    seen: list[tuple[tuple[str, ...], list[Path]]] = []
    result = sample(trained, out, SampleOptions(n=2), sd_scripts=fake_gen.sd_scripts,
                    python=PYTHON, detect=list,
                    on_launch=lambda found: seen.append((found, sorted(out.rglob("*.png")))))
    ((warnings, images),) = seen
    assert any("no NVIDIA GPU found" in warning for warning in warnings), warnings
    assert images == [] and result.generated == 2
    assert set(warnings) <= set(result.warnings)


def test_the_cli_says_samples_warnings_once(runner: CliRunner, trained: Path,
                                            fake_gen: FakeGen, tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "sample", "--lora", str(trained), "--n", "2", "--out", str(tmp_path / "synth"),
        "--sd-scripts", str(fake_gen.sd_scripts), "--python", PYTHON,
        "--prompt", "photo of skin"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert lines and len(lines) == len(set(lines)), result.stderr
