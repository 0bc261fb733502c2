"""How long a training run is, how often it saves and samples, and the disk its saves need.

Computed before launch, from the resolved options, the way sd-scripts v0.10.1 computes them
(`train_network.py`: steps per epoch from the batches per process and gradient accumulation,
`max_train_epochs` overriding `max_train_steps`, saves every N steps or epochs with
`save_last_n_*` removing older ones, a state folder beside each save when `save_state`; train
itself removing the states a newer one replaced unless `save_last_n_*` is set).
The LoRA's size follows from `network_dim` and the shapes of SDXL's LoRA-able layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from medsynth_kohya import files
from medsynth_kohya.errors import UserError

SDXL_CROSS_ATTENTION_DIM = 2048
SDXL_UNET_TRANSFORMERS = ((640, 2, 5), (1280, 10, 6))
"""(channels, transformer blocks per Transformer2DModel, how many such models) in the SDXL
UNet: down_blocks.1 (2) and up_blocks.1 (3) at 640; down_blocks.2 (2), the mid block (1) and
up_blocks.0 (3) at 1280. networks.lora wraps every Linear inside them."""
SDXL_TEXT_ENCODERS = ((768, 3072, 12), (1280, 5120, 32))
"""(width, MLP width, layers) of CLIP ViT-L and OpenCLIP ViT-bigG: networks.lora wraps
q/k/v/out of each attention and both MLP layers."""
SAVE_BYTES = {"fp16": 2, "bf16": 2, "float": 4}
"""Bytes per weight in a saved LoRA by save_precision; unset saves the fp32 training weights."""
DEFAULT_DIM = 4
"""networks.lora's network_dim when none is given."""
HEADER_BYTES_PER_TENSOR = 140
"""About one safetensors header entry (key, dtype, shape, offsets); 3 tensors per module (down,
up, alpha). Sizes so computed are within 0.5% of those measured on v0.10.1 (fp16 dim 32:
170 MB, dim 128: 681 MB; bf16 dim 64: 341 MB)."""


def _unet_linears() -> Iterator[tuple[int, int]]:
    """(in, out) features of every Linear networks.lora wraps in the SDXL UNet."""
    for width, depth, count in SDXL_UNET_TRANSFORMERS:
        for _ in range(count):
            yield from ((width, width), (width, width))  # proj_in, proj_out
            for _ in range(depth):
                yield from [(width, width)] * 4  # self-attention q, k, v, out
                yield (width, width)  # cross-attention q
                yield from [(SDXL_CROSS_ATTENTION_DIM, width)] * 2  # cross-attention k, v
                yield (width, width)  # cross-attention out
                yield from ((width, 8 * width), (4 * width, width))  # GEGLU proj, ff out


def _text_encoder_linears() -> Iterator[tuple[int, int]]:
    """(in, out) features of every Linear networks.lora wraps in SDXL's two text encoders."""
    for width, mlp, layers in SDXL_TEXT_ENCODERS:
        for _ in range(layers):
            yield from [(width, width)] * 4
            yield from ((width, mlp), (mlp, width))


def lora_shape(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(weights, modules) of the LoRA these options train; None when the network is not plain
    networks.lora over linear layers (another module, or conv layers through network_args)."""
    if str(options.get("network_module", "networks.lora")) != "networks.lora":
        return None
    if any(str(arg).replace(" ", "").startswith("conv_dim=")
           for arg in options.get("network_args") or []):
        return None
    dim = int(options.get("network_dim") or DEFAULT_DIM)
    layers: list[tuple[int, int]] = []
    if not options.get("network_train_text_encoder_only"):
        layers += _unet_linears()
    if not options.get("network_train_unet_only"):
        layers += _text_encoder_linears()
    return sum(dim * (a + b) for a, b in layers), len(layers)


def _optimizer_bytes(name: str) -> int:
    """Bytes of optimizer state per trained weight (an estimate by optimizer family)."""
    name = name.lower()
    if "8bit" in name:
        return 1 if "lion" in name else 2
    if "lion" in name or "sgd" in name:
        return 4
    if "prodigy" in name:
        return 16
    return 8


def _int(options: Mapping[str, Any], key: str) -> int | None:
    value = options.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def step_limit(options: Mapping[str, Any], steps: int | None) -> int | None:
    """The max_train_steps sd-scripts stops at: the planned `steps`, unless max_train_epochs
    is set, which sd-scripts turns into steps by its own count of an epoch (aspect-ratio
    buckets or a validation split can make it differ from the plan's): None then."""
    return None if _int(options, "max_train_epochs") else steps


KEEP_OPTIONS = ("save_last_n_epochs", "save_last_n_epochs_state", "save_last_n_steps",
                "save_last_n_steps_state")
"""sd-scripts' own retention: when any is set, the states are sd-scripts' to remove."""
MAX_SAVES = 100_000
"""More saves than this in one run is a typing error (an extra digit in max_train_steps, a
save every step): refused before they are counted one by one."""
PRUNED_PEAK_STATES = 2
"""States at once when train prunes: the newest complete one and the one being written."""


def prunes_states(options: Mapping[str, Any]) -> bool:
    """Whether train removes the resume states a newer one replaced (launch.prune_states):
    with `save_state`, unless sd-scripts is asked to remove them (its removals would race)."""
    return bool(options.get("save_state")) and not any(_int(options, k) for k in KEEP_OPTIONS)


@dataclass(frozen=True)
class Saves:
    """What the saves write: LoRA files and state folders, all told and at most at once."""

    loras: int
    states: int
    peak_loras: int
    peak_states: int


def _saves(options: Mapping[str, Any], steps: int, steps_per_epoch: int, epochs: int) -> Saves:
    """Replay sd-scripts' save and remove rules over the run (final save included)."""
    every_steps = _int(options, "save_every_n_steps")
    every_epochs = _int(options, "save_every_n_epochs")
    ratio = _int(options, "save_n_epoch_ratio")
    if ratio:
        every_epochs = math.floor(epochs / ratio) or 1
    count = (steps // every_steps if every_steps else 0) + (
        (epochs - 1) // every_epochs if every_epochs else 0)
    if count > MAX_SAVES:
        raise UserError(f"{steps} steps with a save every {every_steps or '-'} steps / "
                        f"{every_epochs or '-'} epochs make {count} saves (at most "
                        f"{MAX_SAVES}): check max_train_steps and raise save_every_n_steps or "
                        "save_every_n_epochs")
    keep = {kind: (_int(options, f"save_last_n_{kind}s"),
                   _int(options, f"save_last_n_{kind}s_state")
                   or _int(options, f"save_last_n_{kind}s")) for kind in ("step", "epoch")}
    events = [(step, "step", step, every_steps)
              for step in range(every_steps, steps + 1, every_steps)] if every_steps else []
    events += [(min(epoch * steps_per_epoch, steps), "epoch", epoch, every_epochs)
               for epoch in range(every_epochs, epochs, every_epochs)] if every_epochs else []
    with_state = bool(options.get("save_state"))
    loras: set[tuple[str, int]] = set()
    states: set[tuple[str, int]] = set()
    peak_loras = peak_states = 0
    for _, kind, number, every in sorted(events, key=lambda e: (e[0], e[1] == "epoch")):
        loras.add((kind, number))
        if with_state:
            states.add((kind, number))
        peak_loras, peak_states = max(peak_loras, len(loras)), max(peak_states, len(states))
        for kept, folder in zip(keep[kind], (loras, states), strict=True):
            if kept is not None:
                old = number - kept - 1 if kind == "step" else number - every * kept
                folder.discard((kind, old - old % every if kind == "step" else old))
    final_state = with_state or bool(options.get("save_state_on_train_end"))
    return Saves(len(events) + 1, len(events) * with_state + final_state,
                 max(peak_loras, len(loras) + 1), max(peak_states, len(states) + final_state))


@dataclass(frozen=True)
class RunPlan:
    """A run's length, saves, sample rounds and disk, as sd-scripts will see them."""

    steps: int
    steps_source: str
    """Which setting decided `steps`, said in words."""
    epochs: int
    steps_per_epoch: int
    saves: int
    """LoRA files written, the final one included."""
    state_saves: int
    """Training states written: one per save with save_state, else the final one's (or none)."""
    sample_rounds: int
    lora_bytes: int | None
    """One saved LoRA file; None when the network is not one this can size."""
    state_bytes: int | None
    """One saved training state (fp32 weights and optimizer moments; an estimate)."""
    disk_bytes: int | None
    """The most the saves occupy at once (older ones removed by save_last_n_*)."""
    free_bytes: int

    @property
    def fits(self) -> bool:
        """Whether the saves fit in the free disk (unknown sizes are taken to fit)."""
        return self.disk_bytes is None or self.disk_bytes <= self.free_bytes

    def rows(self) -> list[tuple[str, str]]:
        """The plan as (label, value) rows for the dry-run and launch tables."""
        if self.lora_bytes is None:
            one = "unknown (not a plain networks.lora)"
        elif not self.state_bytes:
            one = size(self.lora_bytes)
        else:
            which = ", with" if self.state_saves == self.saves else "; the final one with"
            one = (f"{size(self.lora_bytes)} LoRA{which} a training state of "
                   f"≈ {size(self.state_bytes)}")
        disk = "unknown" if self.disk_bytes is None else size(self.disk_bytes)
        return [("steps", f"{self.steps} ({self.steps_source})"),
                ("epochs", f"{self.epochs} of {files.counted(self.steps_per_epoch, 'step')}"),
                ("saves", str(self.saves)), ("sample rounds", str(self.sample_rounds)),
                ("one save", one),
                ("disk for saves", f"{disk} of {size(self.free_bytes)} free")]


def size(count: int) -> str:
    """Bytes in decimal units, as file managers and the measured notes give them."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}" if count < 100 * scale else (
                f"{count / scale:.0f} {unit}")
    return f"{count / 1000:.0f} kB"


def steps_per_epoch(options: Mapping[str, Any], images: int, repeats: int,
                    processes: int) -> int:
    """Optimizer steps per epoch: batches split over the processes, then accumulated.
    With buckets of several aspect ratios and a batch above 1, sd-scripts may make a few more."""
    batches = math.ceil(images * repeats / (_int(options, "train_batch_size") or 1))
    return max(1, math.ceil(batches / max(processes, 1)
                            / (_int(options, "gradient_accumulation_steps") or 1)))


def plan(options: Mapping[str, Any], *, images: int, repeats: int, processes: int,
         steps_source: str, free_bytes: int) -> RunPlan:
    """The run these options make on `images` x `repeats` over `processes` GPUs."""
    per_epoch = steps_per_epoch(options, images, repeats, processes)
    epochs_given = _int(options, "max_train_epochs")
    steps = epochs_given * per_epoch if epochs_given else (
        _int(options, "max_train_steps") or 1600)
    epochs = math.ceil(steps / per_epoch)
    saves = _saves(options, steps, per_epoch, epochs)
    rounds = 0
    if _int(options, "sample_every_n_epochs"):
        rounds = epochs // int(options["sample_every_n_epochs"])
    elif _int(options, "sample_every_n_steps"):
        rounds = steps // int(options["sample_every_n_steps"])
    rounds += bool(options.get("sample_at_first"))
    shape = lora_shape(options)
    lora = state = disk = None
    if shape is not None:
        weights, modules = shape
        lora = ((weights + modules) * SAVE_BYTES.get(str(options.get("save_precision")), 4)
                + 3 * modules * HEADER_BYTES_PER_TENSOR)
        full = options.get("full_fp16") or options.get("full_bf16")
        state = weights * ((2 if full else 4)
                           + _optimizer_bytes(str(options.get("optimizer_type") or "AdamW")))
        states = (min(saves.peak_states, PRUNED_PEAK_STATES) if prunes_states(options)
                  else saves.peak_states)
        disk = saves.peak_loras * lora + states * state
    return RunPlan(steps, steps_source, epochs, per_epoch, saves.loras, saves.states, rounds,
                   lora, state if saves.states else None, disk, free_bytes)
