"""Benchmark `prepare` against a single-process baseline of the original three steps.

Generates (or reuses, with --data) an ISIC-like set of mixed resolutions from 640x480 to
6000x4000, some with drawn hairs, then times in this one process:

- baseline: for each melanoma, copy the file, write its caption, and run the original hair
  heuristic on the full-size image, one image after another (what the 2023 run did);
- prepare: `medsynth_kohya.data.prepare.prepare` on all cores.

It runs both `--trials` times, alternating, and prints for each trial the images per second,
their ratio and the load average, then the median ratio; beside the wall-clock figures it
prints the CPU seconds each spent per image (prepare's main process and its workers), a ratio
the machine's other load barely moves: on a shared machine the wall-clock ratio is
load-limited, the CPU ratio times the free cores is what an idle machine would give.
Last, the peak memory of `prepare` on a quarter of the set and on all of it (their ratio
should stay near 1).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from medsynth_kohya.data.captions import DEFAULT_TEMPLATE, DEFAULT_TRIGGER, render_caption
from medsynth_kohya.data.hair import HairMode, is_hairy, seed_score
from medsynth_kohya.data.prepare import prepare
from medsynth_kohya.data.synth import make_dataset

SIZES = ((640, 480), (1024, 768), (1936, 2592), (3264, 2448), (6000, 4000))


def baseline(metadata: Path, images: Path, out: Path) -> int:
    """The original three steps, one image at a time: select and copy, caption, hair."""
    import cv2
    import pandas as pd

    frame = pd.read_csv(metadata)
    chosen = frame[frame["target"] == 1]
    out.mkdir(parents=True)
    for row in chosen.itertuples(index=False):
        source = images / f"{row.image_name}.jpg"
        shutil.copy(source, out / source.name)
        image = cv2.imread(str(source))
        if image is None:
            continue
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        hairy = is_hairy(seed_score(gray), HairMode.seed)
        caption = render_caption(DEFAULT_TEMPLATE, {
            "sex": None if pd.isna(row.sex) else str(row.sex),
            "site": None if pd.isna(row.anatom_site_general_challenge)
            else str(row.anatom_site_general_challenge),
            "age": None if pd.isna(row.age_approx) else str(int(row.age_approx)),
            "trigger": DEFAULT_TRIGGER, "hair": "hairy" if hairy else None})
        (out / f"{row.image_name}.txt").write_text(caption, encoding="utf-8")
    return len(chosen)


def timed(run: Callable[[], int]) -> tuple[int, float, float]:
    """Images done, wall seconds and CPU seconds (this process and its finished children)."""
    def cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    wall, spent = time.perf_counter(), cpu()
    count = run()
    return count, time.perf_counter() - wall, cpu() - spent


def peak_memory(metadata: Path, images: Path, out: Path) -> float:
    """Peak RSS of `prepare` in a fresh process plus its largest worker, in MiB."""
    code = ("import resource, sys; from pathlib import Path; "
            "from medsynth_kohya.data.prepare import prepare; "
            "prepare(None, Path(sys.argv[3]), metadata=Path(sys.argv[1]), "
            "images=Path(sys.argv[2])); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss "
            "+ resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", code, str(metadata), str(images), str(out)],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=640, help="images to generate (>= 600)")
    parser.add_argument("--data", type=Path, help="folder to keep the generated set in")
    parser.add_argument("--trials", type=int, default=3, help="timed runs of each")
    args = parser.parse_args()
    import pandas as pd  # here, not above: prepare's spawned workers import this script

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    data = args.data or work / "data"
    if not (data / "train.csv").is_file():
        started = time.perf_counter()
        make_dataset(data, args.n, seed=11, sizes=SIZES, melanoma_fraction=1.0)
        print(f"generated {args.n} images in {time.perf_counter() - started:.0f} s")
    metadata, images = data / "train.csv", data / "train"
    try:
        ratios, cpu_ratios = [], []
        for trial in range(args.trials):
            load = os.getloadavg()[0]
            count, base_wall, base_cpu = timed(
                lambda: baseline(metadata, images, work / "baseline"))
            done, wall, cpu = timed(lambda: len(prepare(data, work / "prepared").manifest))
            ratios.append(base_wall / count / (wall / done))
            cpu_ratios.append(base_cpu / count / (cpu / done))
            print(f"trial {trial + 1} (load {load:.1f} -> {os.getloadavg()[0]:.1f}): baseline "
                  f"{count / base_wall:.2f} images/s, {1000 * base_cpu / count:.0f} CPU ms/image; "
                  f"prepare ({multiprocessing.cpu_count()} cores) {done / wall:.2f} images/s, "
                  f"{1000 * cpu / done:.0f} CPU ms/image; speed-up {ratios[-1]:.2f}x, "
                  f"CPU {cpu_ratios[-1]:.2f}x")
            shutil.rmtree(work / "baseline")
            shutil.rmtree(work / "prepared")
        print(f"speed-up: median {statistics.median(ratios):.2f}x of {args.trials} trials "
              f"(target >= 5x); CPU per image: median {statistics.median(cpu_ratios):.2f}x less")

        frame = pd.read_csv(metadata)
        quarter = work / "quarter.csv"
        frame.iloc[: len(frame) // 4].to_csv(quarter, index=False)
        small = peak_memory(quarter, images, work / "mem-quarter")
        large = peak_memory(metadata, images, work / "mem-all")
        print(f"peak memory: {small:.0f} MiB for {len(frame) // 4} images, {large:.0f} MiB "
              f"for {len(frame)}: ratio {large / small:.2f} (target ~1)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
