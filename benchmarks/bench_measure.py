"""Accuracy of the image measurements on labelled synthetic photos, per resolution bucket.

Draws `--n` scenes per bucket with `medsynth_kohya.data.synth.scene` (skin of known CIE
L*a*b*, a lesion with network, 0 or 2-30 hairs 1-3 px wide at 1024 px, dark or light, and
rulers, scale bars, vignettes, gel bubbles, vessels and marker ink), writes each as a JPEG,
measures it through `medsynth_kohya.data.measure.measure` (the reduced decode prepare uses)
and prints hair precision / recall / F1, ITA error and tone accuracy, and each artefact's F1.
Each bucket draws its own scenes (seeds `--seed + bucket * --n` onwards), so the buckets are
independent samples, not one set resized; `--misses` names the seeds each measurement got wrong,
and `--lesion 0.45,0.55` draws lesions filling about half the photo or more.
Targets: hair F1 >= 0.95 in every bucket; ITA within 3 degrees and the right category on
>= 95%; artefact F1 >= 0.9.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medsynth_kohya.data.measure import measure, tone_category
from medsynth_kohya.data.synth import encode_jpeg, scene

BUCKETS = ((640, 480), (1024, 768), (1872, 1248), (4000, 3000), (6000, 4000))


def f1(pairs: list[tuple[bool, bool]]) -> tuple[float, float, float]:
    """Precision, recall and F1 of (truth, prediction) pairs (1.0 where nothing to find)."""
    hits = sum(t and p for t, p in pairs)
    said = sum(p for _, p in pairs)
    real = sum(t for t, _ in pairs)
    precision = hits / said if said else 1.0
    recall = hits / real if real else 1.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="scenes per bucket")
    parser.add_argument("--seed", type=int, default=5000, help="first scene's seed")
    parser.add_argument("--buckets", default=",".join(f"{w}x{h}" for w, h in BUCKETS))
    parser.add_argument("--misses", action="store_true", help="print the seeds got wrong")
    parser.add_argument("--lesion", default="0.1,0.2",
                        help="the lesion's mean radius, shares of the short side (low,high)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in item.split("x")) for item in args.buckets.split(",")]
    low, high = (float(v) for v in args.lesion.split(","))
    print(f"{'bucket':>10} {'hair P':>7} {'R':>6} {'F1':>6} | {'ITA err med':>11} "
          f"{'p95':>5} {'max':>5} {'<=3':>5} {'tone ok':>7} | {'vign F1':>7} {'ruler F1':>8} "
          f"{'bubble F1':>9} | s/img")
    with tempfile.TemporaryDirectory(prefix="bench-measure-") as folder:
        for bucket, (width, height) in enumerate(sizes):
            hairs, vignettes, rulers, bubbles = [], [], [], []
            errors: list[float] = []
            tones = 0
            spent = 0.0
            seeds = range(args.seed + bucket * args.n, args.seed + (bucket + 1) * args.n)
            for index, seed in enumerate(seeds):
                image, truth = scene(width, height, seed, lesion_size=(low, high))
                path = Path(folder) / f"{index}.jpg"
                path.write_bytes(encode_jpeg(image))
                started = time.perf_counter()
                result = measure(path)
                spent += time.perf_counter() - started
                hairs.append((truth.hairy, result.hairy))
                vignettes.append((truth.vignette, result.vignette))
                rulers.append((truth.ruler, result.ruler))
                bubbles.append((truth.bubbles, result.bubbles))
                if result.ita is not None:
                    errors.append(abs(result.ita - truth.ita))
                    tones += result.skin_tone == tone_category(truth.ita)
            errors.sort()
            p, r, f = f1(hairs)
            near = sum(e <= 3 for e in errors) / args.n
            p95 = errors[min(len(errors) - 1, int(0.95 * len(errors)))] if errors else float("nan")
            median = errors[len(errors) // 2] if errors else float("nan")
            print(f"{width}x{height:<5} {p:7.3f} {r:6.3f} {f:6.3f} | {median:11.2f} {p95:5.2f} "
                  f"{max(errors, default=float('nan')):5.2f} {near:5.0%} {tones / args.n:7.0%} | "
                  f"{f1(vignettes)[2]:7.3f} {f1(rulers)[2]:8.3f} {f1(bubbles)[2]:9.3f} | "
                  f"{spent / args.n:.3f}")
            if args.misses:
                for name, pairs in (("hair", hairs), ("vignette", vignettes),
                                    ("ruler", rulers), ("bubbles", bubbles)):
                    wrong = [f"{seed}{'+' if p else '-'}"
                             for seed, (t, p) in zip(seeds, pairs, strict=True) if t != p]
                    if wrong:
                        print(f"  {name} wrong (+ false find, - miss): {' '.join(wrong)}")


if __name__ == "__main__":
    main()
