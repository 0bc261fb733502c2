"""medsynth-kohya: ISIC dermoscopy data to an SDXL melanoma LoRA through kohya-ss sd-scripts.

The stages are subpackages (`data`, `sdscripts`, `training`, `sampling`, `hub`, `machine`,
`pipeline`; see ARCHITECTURE.md). Each command's plain function is importable from here:
`from medsynth_kohya import prepare, train, sample, push, reproduce`. They are imported on
first use, so that importing the package (and `--help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_COMMANDS = {
    "prepare": "medsynth_kohya.data.prepare",
    "train": "medsynth_kohya.training.train",
    "sample": "medsynth_kohya.sampling.sample",
    "push": "medsynth_kohya.hub.push",
    "reproduce": "medsynth_kohya.pipeline.reproduce",
}
__all__ = ["__version__", "prepare", "push", "reproduce", "sample", "train"]

if TYPE_CHECKING:
    from medsynth_kohya.data.prepare import prepare
    from medsynth_kohya.hub.push import push
    from medsynth_kohya.pipeline.reproduce import reproduce
    from medsynth_kohya.sampling.sample import sample
    from medsynth_kohya.training.train import train


def __getattr__(name: str) -> Any:
    """Import a command's function on first access (PEP 562)."""
    if name in _COMMANDS:
        return getattr(importlib.import_module(_COMMANDS[name]), name)
    raise AttributeError(f"module 'medsynth_kohya' has no attribute {name!r}")
