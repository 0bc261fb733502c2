"""`demo`: the whole pipeline on built-in synthetic data, runnable on any machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya.prepare import PrepareOptions, PrepareResult, Progress, prepare
from medsynth_kohya.synth import SyntheticSet, make_dataset


@dataclass(frozen=True)
class DemoResult:
    """The generated source set and the prepared training folder."""

    source: SyntheticSet
    prepared: PrepareResult


def run_demo(out: Path, *, n: int = 24, seed: int = 0, workers: int | None = None,
             on_progress: Progress | None = None) -> DemoResult:
    """Generate a synthetic ISIC 2020-like set under `out/source` and prepare `out/prepared`."""
    synthetic = make_dataset(out / "source", n, seed=seed,
                             sizes=((640, 480), (1024, 768), (1600, 1067)))
    prepared = prepare(synthetic.root, out / "prepared",
                       options=PrepareOptions(val_frac=0.15, target_steps=200, epochs=10),
                       workers=workers, on_progress=on_progress)
    return DemoResult(synthetic, prepared)
