"""The NVIDIA GPUs of this machine, as `nvidia-smi` reports them (no torch import)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

QUERY = ["--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader"]
"""The `nvidia-smi` arguments whose output `parse_nvidia_smi` reads."""
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB)?$", re.IGNORECASE)
_CAPABILITY = re.compile(r"^(\d+)\.(\d+)$")
_MIB_PER_UNIT = {"kib": 1 / 1024, "mib": 1.0, "gib": 1024.0}


@dataclass(frozen=True)
class Gpu:
    """One GPU; 0 MiB and capability (0, 0) stand for values nvidia-smi reported as [N/A]."""

    name: str
    memory_mib: int
    compute_capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        """Whether it computes in bfloat16 (Ampere, compute capability 8.0, and later)."""
        return self.compute_capability >= (8, 0)


def _memory_mib(field: str) -> int:
    match = _MEMORY.match(field)
    if not match:
        return 0
    unit = (match.group(2) or "MiB").lower()
    return int(float(match.group(1)) * _MIB_PER_UNIT[unit])


def _capability(field: str) -> tuple[int, int]:
    match = _CAPABILITY.match(field)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


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
    """The GPUs `nvidia-smi` lists; [] when it is absent, fails or hangs."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    try:
        result = subprocess.run([program, *QUERY], capture_output=True, text=True, timeout=30,
                                check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
