"""Speed and memory of `evaluate` on generated data (CPU).

Prints images per second for each section against a baseline in the same process (decoding the
same images and nothing else), and evaluate's peak traced memory for a small and a large set
(ratio large/small: flat means images are never all held at once).

    python3 benchmarks/bench_evaluate.py [--small 200] [--large 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medsynth_kohya.evaluation import copies
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate
from medsynth_kohya.evaluation.features import Extractor, missing
from medsynth_kohya.evaluation.sets import decode
from tests.eval_data import isic_source, photo, synthetic_set

FEATURES = "tests.eval_data:build"


def _rate(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def sections(root: Path, n: int) -> None:
    """Images per second of each section's per-image work against decoding alone."""
    paths = sorted((root / "syn-small" / "images").glob("*.png"))[:n]
    start = time.perf_counter()
    images = [decode(p) for p in paths]
    baseline = _rate(len(paths), time.perf_counter() - start)
    decoded = [i for i in images if i is not None]
    index = copies.HashIndex()
    start = time.perf_counter()
    for number, image in enumerate(decoded):
        index.add(str(number), image)
    build = _rate(len(decoded), time.perf_counter() - start)
    start = time.perf_counter()
    for image in decoded:
        index.nearest(copies.query_hash(image))
    lookup = _rate(len(decoded), time.perf_counter() - start)
    from medsynth_kohya.data.hair import auto_score

    start = time.perf_counter()
    for image in decoded:
        auto_score(image)
    hair = _rate(len(decoded), time.perf_counter() - start)
    rows = [("decode (baseline)", baseline), ("1a hash index (per training photo)", build),
            ("1a hash lookup (per synthetic image)", lookup), ("2 hair measurement", hair)]
    if not missing():
        stream = Extractor(FEATURES).stream()
        start = time.perf_counter()
        for image in decoded:
            stream.add(image)
        stream.result()
        rows.append(("3/4 features (small network)", _rate(len(decoded),
                                                            time.perf_counter() - start)))
        rows.append(("4 fine-tuning (small network, 1 epoch)", _fine_tuning(decoded)))
    print(f"{'section':40s} {'images/s':>10s} {'vs decode':>10s}")
    for name, rate in rows:
        print(f"{name:40s} {rate:10.1f} {rate / baseline:10.2f}x")


def _fine_tuning(images: list[Any]) -> float:
    """Images per second of one fine-tuning epoch (+ the probe and scoring) on `images`."""
    import numpy as np

    from medsynth_kohya.evaluation.finetune import FineTune, InputStore
    from medsynth_kohya.evaluation.utility import Rows

    with InputStore() as store:
        for image in images:
            store.add(image)
        rows, everything = store.rows(), np.arange(len(images))
        labels = everything % 2
        tuned = FineTune(Extractor(FEATURES).network, "cpu", epochs=1)
        start = time.perf_counter()
        tuned(Rows(rows, everything, rows, everything[:0]), labels,
              Rows(rows, everything, rows, everything[:0]), 0)
        return _rate(len(images), time.perf_counter() - start)


def peak(root: Path, real: Path, name: str, n: int) -> float:
    """Peak traced memory (MiB) of one evaluate run on `n` synthetic images."""
    synthetic_set(root / name, [photo(20_000 + i, hairy=i % 3 == 0) for i in range(n)])
    tracemalloc.start()
    evaluate(real, root / name, root / f"report-{name}",
             EvaluateOptions(features=FEATURES, classifier="none"))
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        real = root / "isic"
        isic_source(real, 40, 0, seed=3)
        peak(root, real, "warm-up", 4)  # imports and first-use allocations, not measured
        small = peak(root, real, "syn-small", args.small)
        sections(root, args.small)
        large = peak(root, real, "syn-large", args.large)
        print(f"peak traced memory: {args.small} images {small:.1f} MiB, {args.large} images "
              f"{large:.1f} MiB, ratio {large / small:.2f} for {args.large / args.small:.0f}x "
              "the images")


if __name__ == "__main__":
    main()
