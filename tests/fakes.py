"""Stand-ins for sd-scripts' training script and for `accelerate launch`, written by tests.

The trainer records its argv, cwd and environment, reads the rendered config the way
sd-scripts does (all tables flattened), prints a real tqdm bar and writes LoRA files and
training states every `save_every_n_steps` and every `save_every_n_epochs` (an epoch being
the dataset config's images times repeats over the batch size, named as sd-scripts names
them), the final state before the final LoRA, as sd-scripts saves them. `--resume` is
sd-scripts v0.10.1's (train_network.py): refused when the state's step is not below
max_train_steps, else training starts at the epoch holding that step with its step count
back at 0, so the saves and states it writes are named and record steps from the resume,
and it ends when the epochs run out. FAKE_SD_MODE picks normal, no-data, crash (at the
launch's step FAKE_SD_CRASH_STEP, 3 unless set), slow, stubborn or final-save-fails (the
final LoRA's save fails, after the final state) behaviour; FAKE_SD_EXTRA_BATCHES adds batches
to each epoch, as aspect-ratio buckets can. The record says the epoch the training started
at (`first_epoch`, 0-based).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import toml

from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.launch import StepProgress

RUNTIME_MODULES = ("torch", "torchvision", "accelerate", "transformers", "diffusers",
                   "safetensors", "voluptuous", "einops", "bitsandbytes", "xformers")
"""Packages sd-scripts' Python must have; empty stand-ins make `train`'s pre-flight pass."""

_LAUNCHER = '''
import argparse, json, os, subprocess, sys

def main():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--num_machines", type=int)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16", "fp8"])
    parser.add_argument("--dynamo_backend")
    parser.add_argument("--num_cpu_threads_per_process", type=int)
    parser.add_argument("--multi_gpu", action="store_true")
    parser.add_argument("--gpu_ids")
    parser.add_argument("--machine_rank", type=int)
    parser.add_argument("--main_process_ip")
    parser.add_argument("--main_process_port", type=int)
    parser.add_argument("--config_file")
    parser.add_argument("training_script")
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    multi_node = ("machine_rank", "main_process_ip", "main_process_port", "config_file")
    flags = {k: v for k, v in vars(args).items()
             if not k.startswith("training_script") and (k not in multi_node or v is not None)}
    if args.config_file:  # accelerate takes what no flag sets from its config file
        import yaml
        with open(args.config_file) as file:
            for key, value in yaml.safe_load(file).items():
                if key in vars(args) and getattr(args, key) is None:
                    flags[key] = value
                    setattr(args, key, value)
    missing = [k for k, v in flags.items() if v is None and k != "gpu_ids"]
    if missing:
        print("The following values were not passed to `accelerate launch`:", missing)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.num_cpu_threads_per_process),
               ACCELERATE_MIXED_PRECISION=str(args.mixed_precision),
               FAKE_ACCELERATE_ARGS=json.dumps(flags))
    if args.gpu_ids and args.gpu_ids != "all":
        env["CUDA_VISIBLE_DEVICES"] = args.gpu_ids
    cmd = [sys.executable, args.training_script, *args.training_script_args]
    process = subprocess.Popen(cmd, env=env)
    process.wait()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)

if __name__ == "__main__":
    main()
'''

_TRAINER = '''
import argparse, json, os, shutil, signal, struct, sys, time
import toml
from tqdm import tqdm

def save_lora(path, name, step, epoch, batches, accumulation):
    """With sd-scripts' metadata: the launch's step, the epochs done, its batches per epoch."""
    if json.loads(os.environ["FAKE_ACCELERATE_ARGS"]).get("machine_rank"):
        return  # as in sd-scripts, only the main process (machine 0) saves
    header = json.dumps({"__metadata__": {
        "ss_output_name": name, "ss_steps": str(step), "ss_epoch": str(epoch),
        "ss_num_batches_per_epoch": str(batches),
        "ss_gradient_accumulation_steps": str(accumulation)}})
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header)) + header.encode())

def save_state(folder, step, epoch):
    """In sd-scripts' and accelerate's order: train_state.json, weights, optimizer, RNG last."""
    if json.loads(os.environ["FAKE_ACCELERATE_ARGS"]).get("machine_rank"):
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train_state.json"), "w") as file:
        json.dump({"current_epoch": epoch, "current_step": step}, file)
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        with open(os.path.join(folder, name), "wb") as file:
            file.write(name.encode() * 64)

def remove_older(out, name, step, config):
    """sd-scripts' save_last_n_steps(_state) at a step save: the one save of its own launch's
    count that falls out (get_remove_step_no; a state's only above step 0)."""
    if json.loads(os.environ["FAKE_ACCELERATE_ARGS"]).get("machine_rank"):
        return
    every = config["save_every_n_steps"]
    for n, path, low in ((config.get("save_last_n_steps"), "{}/{}-step{:08d}.safetensors", 0),
                         (config.get("save_state") and (config.get("save_last_n_steps_state")
                          or config.get("save_last_n_steps")), "{}/{}-step{:08d}-state", 1)):
        removed = step - (n or 0) - 1
        removed -= removed % every
        if n and removed >= low and os.path.exists(path.format(out, name, removed)):
            target = path.format(out, name, removed)
            shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)

def batches_per_epoch(dataset_config):
    """Batches in one epoch of the dataset config, as sd-scripts counts them."""
    data = toml.load(dataset_config)
    steps = 0
    for dataset in data.get("datasets", []):
        batch = int(dataset.get("batch_size", data.get("general", {}).get("batch_size", 1)))
        images = sum(int(subset.get("num_repeats", 1)) * sum(
            1 for f in os.listdir(subset["image_dir"])
            if f.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp")))
            for subset in dataset.get("subsets", []))
        steps += -(-images // batch)
    return max(steps, 1)

def main():
    parser = argparse.ArgumentParser()
    for flag in ("--config_file", "--dataset_config", "--resume"):
        parser.add_argument(flag)
    args = parser.parse_args()
    mode = os.environ.get("FAKE_SD_MODE", "normal")
    crash_at = int(os.environ.get("FAKE_SD_CRASH_STEP", "3"))
    names = ("OMP_NUM_THREADS", "ACCELERATE_MIXED_PRECISION", "CUDA_VISIBLE_DEVICES",
             "PYTHONUNBUFFERED", "PYTHONIOENCODING", "COLUMNS")
    record = {"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(),
              "env": {name: os.environ.get(name) for name in names},
              "accelerate": json.loads(os.environ["FAKE_ACCELERATE_ARGS"])}
    rank = record["accelerate"].get("machine_rank") or 0
    where = os.environ["FAKE_SD_RECORD"] + (f".machine-{rank}" if rank else "")
    with open(where, "w") as file:
        json.dump(record, file)
    tables = toml.load(args.config_file)
    config = {}
    for key, value in tables.items():
        config.update(value if isinstance(value, dict) else {key: value})
    out, name = config["output_dir"], config["output_name"]
    batches = batches_per_epoch(args.dataset_config) + int(  # as buckets can add
        os.environ.get("FAKE_SD_EXTRA_BATCHES", "0"))
    accumulation = int(config.get("gradient_accumulation_steps") or 1)
    per_epoch = -(-batches // accumulation)
    total = int(config.get("max_train_epochs") or 0) * per_epoch or int(config["max_train_steps"])
    epochs = -(-total // per_epoch)
    every, every_epochs = config.get("save_every_n_steps"), config.get("save_every_n_epochs")
    print("INFO     loading model for process 0/1 \\u2714", flush=True)
    if mode == "no-data":
        print("ERROR    No data found. Please verify arguments (train_data_dir must be the "
              "parent of folders with images)", flush=True)
        return
    if mode == "stubborn":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # accelerate's load_state fails so (on machine 0: the others, unlike accelerate's, do not
    # wait for it here, and may start once it has finished and renamed its saves)
    if args.resume and not os.path.isdir(args.resume) and not rank:
        raise FileNotFoundError(f"fake: no state to resume from at {args.resume}")
    first_epoch, state = 0, os.path.join(args.resume or "", "train_state.json")
    if args.resume and os.path.isfile(state):  # as sd-scripts: the state's step, which must
        with open(state) as file:  # be below max_train_steps, picks the epoch to start at
            initial = json.load(file)["current_step"]
        assert total > initial, (f"max_train_steps should be greater than initial step: "
                                 f"{total} vs {initial}")
        first_epoch = initial // per_epoch
    record["first_epoch"] = first_epoch
    with open(where, "w") as file:
        json.dump(record, file)
    print(f"  num batches per epoch / 1epoch\\u306e\\u30d0\\u30c3\\u30c1\\u6570: {batches}",
          flush=True)
    print(f"  gradient accumulation steps / \\u52fe\\u914d\\u3092\\u5408\\u8a08\\u3059\\u308b"
          f"\\u30b9\\u30c6\\u30c3\\u30d7\\u6570 = {accumulation}", flush=True)
    os.makedirs(out, exist_ok=True)
    bar = tqdm(range(total), smoothing=0, desc="steps", mininterval=0)
    step = 0  # sd-scripts' global_step: from 0 on every launch, resumed or not
    for epoch in range(first_epoch, epochs):
        for _ in range(per_epoch):
            if mode in ("slow", "stubborn"):
                time.sleep(0.1)
            if mode == "crash" and step + 1 == crash_at:
                raise RuntimeError("fake: CUDA out of memory")
            step += 1
            bar.update(1)
            if every and step % every == 0:
                save_lora(f"{out}/{name}-step{step:08d}.safetensors", name, step, epoch,
                          batches, accumulation)
                if config.get("save_state"):
                    save_state(f"{out}/{name}-step{step:08d}-state", step, epoch + 1)
                remove_older(out, name, step, config)
            bar.set_postfix(avr_loss=0.5 / step)
            if step >= total:
                break
        if every_epochs and (epoch + 1) % every_epochs == 0 and epoch + 1 < epochs:
            save_lora(f"{out}/{name}-{epoch + 1:06d}.safetensors", name, step, epoch + 1, batches,
                      accumulation)
            if config.get("save_state"):
                save_state(f"{out}/{name}-{epoch + 1:06d}-state", step, epoch + 1)
    bar.close()
    if config.get("save_state"):  # sd-scripts saves the final state before the final LoRA
        save_state(f"{out}/{name}-state", step, epochs)
    if mode == "final-save-fails":
        raise OSError(28, "No space left on device")
    save_lora(f"{out}/{name}.safetensors", name, step, epochs, batches,
              accumulation)
    print("INFO     model saved.", flush=True)

if __name__ == "__main__":
    main()
'''


@dataclass(frozen=True)
class FakeSd:
    """The stand-in sd-scripts checkout and the files of one run."""

    sd_scripts: Path
    config: Path
    dataset: Path
    output: Path
    record: Path
    log: Path

    @property
    def accelerate_config(self) -> Path:
        """The run's accelerate config, beside its config (one process, as train writes it)."""
        return self.config.parent / "accelerate.json"

    def write_config(self, **values: Any) -> None:
        base = {"output_dir": str(self.output), "output_name": "melanoma",
                "max_train_steps": 4}
        self.config.write_text(toml.dumps({**base, **values}))
        launch.write_accelerate_config(launch.accelerate_config(
            num_processes=1, mixed_precision="no", gpu_ids=None), self.accelerate_config)

    def recorded(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record.read_text())
        return data


def stand_in(packages: Path, module: str) -> None:
    """An empty, installed-looking package `module` in the folder `packages` (on PYTHONPATH)."""
    (packages / module).mkdir(parents=True, exist_ok=True)
    (packages / module / "__init__.py").write_text("")
    info = packages / f"{module}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.0.0\n")


def make_fake_sd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSd:
    """sd-scripts/sdxl_train_network.py and an `accelerate` package that stand in for both
    (in tmp_path/packages, on PYTHONPATH)."""
    packages = tmp_path / "packages"
    for module in RUNTIME_MODULES:
        stand_in(packages, module)
    commands = packages / "accelerate" / "commands"
    commands.mkdir(parents=True)
    (commands.parent / "__init__.py").write_text("")
    (commands / "__init__.py").write_text("")
    (commands / "launch.py").write_text(_LAUNCHER)
    sd_scripts = tmp_path / "sd scripts"
    sd_scripts.mkdir()
    (sd_scripts / "sdxl_train_network.py").write_text(_TRAINER)
    (sd_scripts / "networks").mkdir()
    (sd_scripts / "networks" / "lora.py").write_text("")
    paths = [str(tmp_path / "packages"), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_SD_RECORD", str(record))
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    own = tmp_path / "fake-run"  # not "run": tests train into that one, which must be empty
    fake = FakeSd(sd_scripts, own / "config.toml", own / "dataset.toml", own / "output", record,
                  own / "train.log")
    fake.config.parent.mkdir()
    fake.dataset.write_text("[general]\n")
    fake.write_config()
    return fake




def interrupt_after(step: int, within: float = 20) -> Callable[[StepProgress], None]:
    """A progress callback that sends SIGINT to the main thread once `step` is reached (if
    it is within `within` seconds)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    main, reached = threading.get_ident(), threading.Event()

    def on_progress(progress: StepProgress) -> None:
        if progress.step >= step:
            reached.set()

    def interrupt() -> None:
        if reached.wait(within):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    return on_progress


_ISIC = '''#!{python}
"""Stand-in for isic-cli: records argv, writes what `isic image download` writes.

Like isic-cli, an image already there with the same name and size is not downloaded again;
metadata.csv, attribution.txt and licenses/ are written on every run."""
import json, os, shutil, sys, tempfile, time
from pathlib import Path
from medsynth_kohya.data.synth import make_dataset
with open(os.environ["FAKE_ISIC_RECORD"], "w") as file:
    json.dump(sys.argv[1:], file)
time.sleep(float(os.environ.get("FAKE_ISIC_HANG", "0")))  # no network: isic-cli just waits
out = Path(sys.argv[-1])
out.mkdir(parents=True, exist_ok=True)
if os.environ.get("FAKE_ISIC_NOTHING"):  # finished without a file: a search matching none
    sys.exit(0)
with tempfile.TemporaryDirectory() as folder:
    made = make_dataset(Path(folder), 6, seed=5, layout="archive", melanoma_fraction=1.0,
                        sizes=((640, 480),))
    for path in made.root.iterdir():
        there = out / path.name
        if path.name == "SYNTHETIC.txt" or (path.suffix == ".jpg" and there.is_file()
                                            and there.stat().st_size == path.stat().st_size):
            continue
        shutil.copy(path, there)
(out / "attribution.txt").write_text("Synthetic demo images (CC0)")
(out / "licenses").mkdir(exist_ok=True)
(out / "licenses" / "CC0.txt").write_text("CC0")
if os.environ.get("FAKE_ISIC_NO_METADATA"):  # a download cut short of its metadata
    (out / "metadata.csv").unlink()
sys.exit(int(os.environ.get("FAKE_ISIC_EXIT", "0")))
'''


def put_isic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """`script` (a template of `{python}`) as the program `isic`, first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "isic"
    program.write_text(script.format(python=sys.executable), encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def install_fake_isic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `isic` program on PATH; returns the file where it records its arguments."""
    put_isic(tmp_path, monkeypatch, _ISIC)
    record = tmp_path / "isic-argv.json"
    monkeypatch.setenv("FAKE_ISIC_RECORD", str(record))
    return record
