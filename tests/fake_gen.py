"""A stand-in for sd-scripts' sdxl_gen_img.py, and a trained run for `sample` to read.

The generator's parser is built from the packaged snapshot of the real one (same names,
types, choices and nargs); it reads the --from_file prompt file and its per-line options the
way the real script does, writes one PNG per prompt line named as the real one names them
(`im_000001.png` under --sequential_file_name), and records its argv, working folder and
CUDA_VISIBLE_DEVICES. FAKE_GEN_CRASH="<device>:<k>" makes the process on that device crash
after k images, leaving a half-written next file; FAKE_GEN_SLOW=<seconds> slows each image,
FAKE_GEN_LINGER=<seconds> keeps the process running after its last one.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.sdscripts import sdopts

from .fakes import make_fake_sd

_GENERATOR = '''
import argparse, hashlib, json, os, re, sys, time, zlib, struct

SNAPSHOT = __SNAPSHOT__
TYPES = {"int": int, "float": float, "str": str}


def parser():
    parser = argparse.ArgumentParser()
    for option in SNAPSHOT["options"]:
        kwargs = {"dest": option["name"], "default": option["default"]}
        if option["kind"] == "bool":
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = TYPES.get(option["kind"], str)
            if option["choices"] is not None:
                kwargs["choices"] = option["choices"]
            if option["nargs"] is not None:
                kwargs["nargs"] = option["nargs"]
        parser.add_argument(*option["flags"], **kwargs)
    return parser


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(width, height, colour, text):
    row = b"\\x00" + bytes(colour) * width
    raw = zlib.compress(row * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    info = b"".join(chunk(b"tEXt", k.encode() + b"\\x00" + v.encode("latin-1", "replace"))
                    for k, v in text.items())
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + info + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def main():
    args = parser().parse_args()
    device = os.environ.get("CUDA_VISIBLE_DEVICES")
    record = {"argv": sys.argv, "cwd": os.getcwd(), "device": device,
              "args": {k: v for k, v in vars(args).items() if v not in (None, False)}}
    folder = os.environ["FAKE_GEN_RECORD"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as file:
        json.dump(record, file)
    print("get_preferred_device() -> cpu", flush=True)
    with open(args.from_file, "r", encoding="utf-8") as file:
        lines = [d for d in file.read().splitlines() if len(d.strip()) > 0 and d[0] != "#"]
    crash_device, _, crash_after = os.environ.get("FAKE_GEN_CRASH", "").partition(":")
    os.makedirs(args.outdir, exist_ok=True)
    prefix = "1" if args.highres_fix_scale is not None else ""
    for step, line in enumerate(lines):
        parts = line.strip().split(" --")
        prompt, width, height, seed = parts[0], args.W or 1024, args.H or 1024, None
        negative, steps, scale = "", args.steps, args.scale
        for part in parts[1:]:
            for pattern, name in ((r"w (\\d+)", "w"), (r"h (\\d+)", "h"), (r"s (\\d+)", "s"),
                                  (r"d ([\\d,]+)", "d"), (r"l ([\\d\\.]+)", "l"),
                                  (r"n (.+)", "n")):
                m = re.match(pattern, part, re.IGNORECASE)
                if m:
                    value = m.group(1)
                    if name == "w": width = int(value)
                    elif name == "h": height = int(value)
                    elif name == "s": steps = int(value)
                    elif name == "d": seed = int(value.split(",")[0])
                    elif name == "l": scale = float(value)
                    else: negative = value
                    break
        print(f"INFO     prompt {step + 1}/{len(lines)}: {prompt}", flush=True)
        if os.environ.get("FAKE_GEN_SLOW"):
            time.sleep(float(os.environ["FAKE_GEN_SLOW"]))
        name = (f"im_{prefix}{step + 1:06d}.png" if args.sequential_file_name
                else f"im_{time.strftime('%Y%m%d%H%M%S')}_{prefix}{step:03d}_{seed}.png")
        colour = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[:3]
        data = png(width, height, colour, {"prompt": prompt, "seed": str(seed),
                                           "negative-prompt": negative, "steps": str(steps),
                                           "scale": str(scale), "sampler": args.sampler})
        if crash_device and crash_device == device and step == int(crash_after):
            with open(os.path.join(args.outdir, name), "wb") as file:
                file.write(data[: len(data) // 2])
            raise RuntimeError("fake: CUDA out of memory")
        with open(os.path.join(args.outdir, name), "wb") as file:
            file.write(data)
    print("INFO     done!", flush=True)
    if os.environ.get("FAKE_GEN_LINGER"):  # the real one unloads its models after the last
        time.sleep(float(os.environ["FAKE_GEN_LINGER"]))


if __name__ == "__main__":
    main()
'''


@dataclass(frozen=True)
class FakeGen:
    """The stand-in checkout (with sdxl_gen_img.py) and where its processes record themselves."""

    sd_scripts: Path
    records: Path
    packages: Path

    def calls(self) -> list[dict[str, Any]]:
        """What every generator process recorded, by device then start order."""
        if not self.records.is_dir():
            return []
        found = [json.loads(p.read_text()) for p in self.records.glob("*.json")]
        return sorted(found, key=lambda r: (str(r["device"]), r["argv"]))

    def forget(self) -> None:
        for path in self.records.glob("*.json"):
            path.unlink()


def make_fake_gen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    """sd-scripts' stand-ins (fakes.make_fake_sd) plus sdxl_gen_img.py."""
    fake = make_fake_sd(tmp_path, monkeypatch)
    snapshot = json.loads((sdopts.SNAPSHOTS / "sdxl_gen_img.json").read_text(encoding="utf-8"))
    script = _GENERATOR.replace("__SNAPSHOT__", repr(snapshot))
    (fake.sd_scripts / "sdxl_gen_img.py").write_text(script, encoding="utf-8")
    packages = tmp_path / "packages"
    for name in ("torch", "safetensors"):
        info = packages / f"{name}-0.0.0.dist-info"
        if not info.is_dir():
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                           "Version: 0.0.0\n")
    records = tmp_path / "gen-records"
    monkeypatch.setenv("FAKE_GEN_RECORD", str(records))
    monkeypatch.delenv("FAKE_GEN_CRASH", raising=False)
    monkeypatch.delenv("FAKE_GEN_SLOW", raising=False)
    monkeypatch.delenv("FAKE_GEN_LINGER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return FakeGen(fake.sd_scripts, records, packages)


def install_gpus(fake: FakeGen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 count: int) -> None:
    """`count` GPUs: a stand-in nvidia-smi on PATH and a stand-in torch that sees CUDA."""
    folder = tmp_path / "gpu-bin"
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    lines = "\n".join("echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 9.0'" for _ in range(count))
    script.write_text(f"#!/bin/sh\n{lines}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    (fake.packages / "torch" / "__init__.py").write_text(
        "class cuda:\n    @staticmethod\n    def is_available():\n        return True\n\n\n"
        "class version:\n    cuda = '12.1'\n", encoding="utf-8")


def make_original_gen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    """Stand-ins that run the original config: one GPU and the VAE file it names."""
    made = make_fake_gen(tmp_path, monkeypatch)
    install_gpus(made, tmp_path, monkeypatch, 1)
    (made.sd_scripts / "vae").mkdir()
    (made.sd_scripts / "vae" / "sdxl_vae.safetensors").write_bytes(b"vae")
    return made


def write_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A small valid safetensors file (one float32 tensor)."""
    header = json.dumps({"__metadata__": metadata or {"ss_network_module": "networks.lora"},
                         "lora_unet_x.alpha": {"dtype": "F32", "shape": [],
                                               "data_offsets": [0, 4]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<f", 4.0))
    return path


def write_run(run: Path, prepared: Path, base_model: Path, **config: Any) -> Path:
    """A finished `train` run folder: run.json as train writes it and its final LoRA."""
    output = run / "output"
    lora = write_lora(output / "melanoma.safetensors")
    base_model.write_bytes(b"not a real checkpoint")
    record = {"tool": "medsynth-kohya", "status": "succeeded", "preset": "cpu-smoke",
              "config": {"output_dir": str(output.resolve()), "output_name": "melanoma",
                         "pretrained_model_name_or_path": str(base_model.resolve()),
                         "resolution": "64,64", "sdpa": True, "no_half_vae": True,
                         "mixed_precision": "no", "network_module": "networks.lora",
                         **config},
              "lora_files": [str(lora.resolve())],
              "dataset": {"prepared": str(prepared.resolve())}}
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return lora


PYTHON = sys.executable


def shard_images(out: Path, name: str = "im_*.png") -> list[Path]:
    """The images the generator has written so far into the shard folders of the set `out`;
    a folder sample removes while the glob walks it (a re-run clearing the last run's
    shards) counts as empty, as it is a moment later."""
    try:
        return list(out.glob(f".medsynth/shards/*/out/{name}"))
    except FileNotFoundError:
        return []


def interrupt_at_third_image(out: Path) -> None:
    """Ctrl-C this test's thread (SIGINT) once a shard of the set `out` holds its third image;
    the test is skipped where SIGINT is not Python's default handler (as under some runners)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    main = threading.get_ident()

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if shard_images(out, "im_000002.png"):
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt, daemon=True).start()
