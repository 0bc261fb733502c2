"""Benchmark `sample`'s own work for a large set: prompts, prompt files and metadata.

Builds an ISIC-like manifest (default 20,000 rows of sex, age, site and hair), then times in
this one process, for 100,000 images split over 8 shards:

- draw: a manifest row per image, rendered with the caption template and trigger;
- prompt files: the sdxl_gen_img.py prompt line of every image, written per shard;
- metadata: metadata.csv for every image (as if all were generated).

It prints each figure and the total against the 5 s target. The generation itself (sd-scripts
on the GPUs) is not part of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth_kohya.data import manifest
from medsynth_kohya.data.captions import DEFAULT_TEMPLATE, DEFAULT_TRIGGER
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.plan import Plan
from medsynth_kohya.sampling.shards import split, write_shard_files
from medsynth_kohya.sampling.synthset import write_metadata

SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
         "oral/genital", None)
TARGET_S = 5.0


def make_manifest(rows: int, seed: int = 0) -> pd.DataFrame:
    """A manifest with ISIC-like spreads of sex, age, site and hair (some values missing)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["male", "female", None], dtype=object), rows, p=[0.52, 0.46, 0.02])
    age = rng.choice(np.arange(10, 95, 5), rows).astype(object)
    age[rng.random(rows) < 0.02] = None
    site = rng.choice(np.array(SITES, dtype=object), rows)
    frame = pd.DataFrame({
        "id": [f"ISIC_{i:07d}" for i in range(rows)], "source": "/data/x.jpg",
        "patient_id": [f"IP_{i // 3:07d}" for i in range(rows)], "sex": sex,
        "age": pd.array(age, dtype="Int64"), "site": site, "hairy": rng.random(rows) < 0.3,
        "hair_score": rng.random(rows) * 2, "caption": "", "width": 1024, "height": 768,
        "split": "train"})
    return manifest.conform(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=20_000, help="manifest rows")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    table = make_manifest(args.rows)
    settings = prompts.original_settings()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        lora = out / "melanoma.safetensors"
        lora.write_bytes(b"x")
        started = time.perf_counter()
        drawn = prompts.draw(table, args.images, 0, DEFAULT_TEMPLATE, DEFAULT_TRIGGER)
        plan = Plan(n=args.images, seed=0, id_prefix="SYN_", drawn=drawn, settings=settings,
                    lora=lora, lora_sha256="0" * 64,
                    base_model="stabilityai/stable-diffusion-xl-base-1.0")
        drew = time.perf_counter()
        for k, indices in enumerate(split(range(args.images), args.shards)):
            write_shard_files(plan, out / "shards" / str(k), indices, highres=False)
        wrote = time.perf_counter()
        write_metadata(plan, range(args.images), out / "metadata.csv")
        ended = time.perf_counter()
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    total = ended - started
    print(f"{args.images} images from a {args.rows}-row manifest, {args.shards} shards")
    print(f"draw and render prompts: {drew - started:6.2f} s")
    print(f"write prompt files:      {wrote - drew:6.2f} s")
    print(f"write metadata.csv:      {ended - wrote:6.2f} s")
    print(f"total:                   {total:6.2f} s ({args.images / total:,.0f} images/s, "
          f"{size:.0f} MiB written; target < {TARGET_S:g} s: "
          f"{'met' if total < TARGET_S else 'MISSED'})")


if __name__ == "__main__":
    main()
