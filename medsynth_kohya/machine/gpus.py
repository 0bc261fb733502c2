"""The NVIDIA GPUs of this machine, as `nvidia-smi` reports them (no torch import)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from medsynth_kohya.errors import UserError

QUERY = ["--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader"]
"""The `nvidia-smi` arguments whose output `parse_nvidia_smi` reads."""
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB)?$", re.IGNORECASE)
_CAPABILITY = re.compile(r"^(\d+)\.(\d+)$")
_LISTED = re.compile(r"^\s*(GPU|MIG)\b.*\(UUID:\s*((?:GPU|MIG)-[^)\s]+)\)")
"""A line of `nvidia-smi -L`: a GPU, or a MIG instance of the GPU listed above it."""
_MIB_PER_UNIT = {"kib": 1 / 1024, "mib": 1.0, "gib": 1024.0}
TIMEOUT = 30
"""Seconds `nvidia-smi` may take before it is taken for absent (an unwell driver hangs it)."""
VISIBLE = "CUDA_VISIBLE_DEVICES"
"""Which GPUs a CUDA program sees (indices, `GPU-…` UUIDs or `MIG-…` ids); nvidia-smi ignores
it and lists every GPU of the machine."""


@dataclass(frozen=True)
class Gpu:
    """One GPU; None stands for a value nvidia-smi reported as [N/A] (unknown, not zero: a
    unified-memory board has no memory of its own to report)."""

    name: str
    memory_mib: int | None
    compute_capability: tuple[int, int] | None
    ids: tuple[str, ...] = field(default=(), compare=False)
    """Its UUID and its MIG instances' (`nvidia-smi -L`), read only where CUDA_VISIBLE_DEVICES
    names GPUs by them; never written into a record."""

    @property
    def bf16(self) -> bool | None:
        """Whether it computes in bfloat16 (Ampere, compute capability 8.0, and later); None
        where its capability is unknown, so that no check refuses or warns on a guess."""
        return None if self.compute_capability is None else self.compute_capability >= (8, 0)

    @property
    def capability(self) -> str:
        """Its compute capability as nvidia-smi prints it (`8.6`), or `unknown`."""
        if self.compute_capability is None:
            return "unknown"
        major, minor = self.compute_capability
        return f"{major}.{minor}"


def _memory_mib(field: str) -> int | None:
    match = _MEMORY.match(field)
    if not match:
        return None
    unit = (match.group(2) or "MiB").lower()
    return int(float(match.group(1)) * _MIB_PER_UNIT[unit])


def _capability(field: str) -> tuple[int, int] | None:
    match = _CAPABILITY.match(field)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader`."""
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.rsplit(",", 2)]
        if len(fields) != 3 or not fields[0]:
            continue
        name, memory, capability = fields
        gpus.append(Gpu(name, _memory_mib(memory), _capability(capability)))
    return gpus


def detect_gpus() -> list[Gpu]:
    """The GPUs `nvidia-smi` lists; [] when it is absent, fails or hangs. Where
    CUDA_VISIBLE_DEVICES names GPUs by UUID or MIG id, each GPU gets its `ids` as well."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    gpus = parse_nvidia_smi(_ask(program, QUERY))
    if any(entry.startswith(("GPU-", "MIG-")) for entry in visible_devices() or []):
        ids = parse_listed(_ask(program, ["-L"]))
        if len(ids) == len(gpus):  # else which is which is unknown: matched by position
            gpus = [replace(gpu, ids=found) for gpu, found in zip(gpus, ids, strict=True)]
    return gpus


def _ask(program: str, arguments: list[str]) -> str:
    """What `nvidia-smi ARGUMENTS` prints; "" when it fails or hangs."""
    try:
        result = subprocess.run([program, *arguments], capture_output=True, text=True,
                                timeout=TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def parse_listed(text: str) -> list[tuple[str, ...]]:
    """Per GPU of `nvidia-smi -L`, in its order: its UUID, then its MIG instances' ids."""
    listed: list[tuple[str, ...]] = []
    for line in text.splitlines():
        match = _LISTED.match(line)
        if match and match.group(1) == "GPU":
            listed.append((match.group(2),))
        elif match and listed:
            listed[-1] += (match.group(2),)
    return listed


def _named(entry: str, gpus: Sequence[Gpu]) -> int:
    """The position in `gpus` of the GPU a UUID or MIG entry names (CUDA takes a UUID's unique
    beginning, and old drivers' `MIG-GPU-<uuid>/<gi>/<ci>`); len(gpus) where none is."""
    parent = entry[len("MIG-"):].split("/")[0] if entry.startswith("MIG-GPU-") else None
    for index, gpu in enumerate(gpus):
        if any(known.startswith(entry) or known == parent for known in gpu.ids):
            return index
    return len(gpus)


def visible_devices() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES' entries as written; None when it is unset (every GPU is seen)."""
    given = os.environ.get(VISIBLE)
    return None if given is None else [entry.strip() for entry in given.split(",")
                                       if entry.strip()]


def visible(gpus: Sequence[Gpu]) -> list[Gpu]:
    """The GPUs of nvidia-smi's list a CUDA program started here sees, in its order: those
    CUDA_VISIBLE_DEVICES names by index, UUID or MIG id (one of GPUs whose ids are unknown
    standing for the GPU at its position); CUDA reads the entries up to one naming no GPU."""
    entries = visible_devices()
    if entries is None:
        return list(gpus)
    known = any(gpu.ids for gpu in gpus)
    seen = []
    for position, entry in enumerate(entries):
        index = int(entry) if entry.isdigit() else len(gpus)
        if entry.startswith(("GPU-", "MIG-")):
            index = _named(entry, gpus) if known else position
        if index >= len(gpus):
            break
        seen.append(gpus[index])
    return seen


UNHIDE = f"unset {VISIBLE} or list the GPUs to use in it"
"""The fix where CUDA_VISIBLE_DEVICES hides the GPUs a run needs."""


def hides_gpus() -> bool:
    """Whether CUDA_VISIBLE_DEVICES is set on a machine whose nvidia-smi lists GPUs (so it,
    not their absence, is why a run here may see none)."""
    return VISIBLE in os.environ and bool(detect_gpus())


def none_seen(hidden: bool | None = None) -> str:
    """Why a run here sees no GPU: nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them
    (`hidden`: hides_gpus() where the caller has it already)."""
    hidden = hides_gpus() if hidden is None else hidden
    return (f"no NVIDIA GPU visible ({VISIBLE}={os.environ[VISIBLE]})" if hidden else
            "no NVIDIA GPU found (nvidia-smi)")


def describe_visible(count: int) -> str:
    """How many GPUs were found, saying CUDA_VISIBLE_DEVICES when it chose them."""
    given = os.environ.get(VISIBLE)
    return f"{count} found" if given is None else f"{count} visible ({VISIBLE}={given})"


def devices(count: int, asked: str) -> list[str]:
    """The device ids of `count` processes of one GPU each: the first `count` entries of
    CUDA_VISIBLE_DEVICES when it is set (a launcher that sets the variable itself, as
    `accelerate launch --gpu_ids` does, must name those), else 0..count-1; [""] for one
    process where it is set but empty, so that the process too sees no GPU, as the user asked.
    `asked` (what asked for `count`, e.g. `--num-gpus 4`) begins the refusal of too few, of
    several where every GPU is hidden, or of a repeated one."""
    given = os.environ.get(VISIBLE)
    entries = visible_devices()
    if entries == [] and count > 1:
        raise UserError(f"{asked}: {VISIBLE} is set but empty, which hides every GPU; unset "
                        "it or list the GPUs to use")
    if entries == []:
        return [""]
    if count > 1 and entries and len(entries) < count:
        raise UserError(f"{asked}: {VISIBLE}={given} shows fewer GPUs; ask for "
                        f"{len(entries)} or list more there")
    chosen = (entries or [str(k) for k in range(count)])[:count]
    if len(set(chosen)) < len(chosen):
        raise UserError(f"{asked}: {VISIBLE}={given} names a GPU twice, which would run two "
                        "processes on it; list each once")
    return chosen
