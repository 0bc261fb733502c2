"""medsynth-kohya: ISIC dermoscopy data to an SDXL melanoma LoRA through kohya-ss sd-scripts.

The stages are subpackages (`data`, `sdscripts`, `training`, `sampling`, `hub`, `machine`,
`pipeline`, `evaluation`; see ARCHITECTURE.md). Each command's plain function is importable
from here under the command's name: `from medsynth_kohya import prepare, train, sample, push,
reproduce, evaluate, doctor, demo, fetch_isic, install_sd_scripts`. They are imported on first
use, so that importing the package (and `--help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_COMMANDS = {
    "prepare": "medsynth_kohya.data.prepare:prepare",
    "train": "medsynth_kohya.training.train:train",
    "sample": "medsynth_kohya.sampling.sample:sample",
    "push": "medsynth_kohya.hub.push:push",
    "reproduce": "medsynth_kohya.pipeline.reproduce:reproduce",
    "evaluate": "medsynth_kohya.evaluation.evaluate:evaluate",
    "doctor": "medsynth_kohya.machine.doctor:diagnose",
    "demo": "medsynth_kohya.pipeline.demo:run_demo",
    "fetch_isic": "medsynth_kohya.data.fetch:fetch_isic",
    "install_sd_scripts": "medsynth_kohya.sdscripts.install:install",
}
"""Each command (`-` as `_`) and the module:function the CLI calls for it."""
__all__ = ["__version__", "demo", "doctor", "evaluate", "fetch_isic", "install_sd_scripts",
           "prepare", "push", "reproduce", "sample", "train"]

if TYPE_CHECKING:
    from medsynth_kohya.data.fetch import fetch_isic
    from medsynth_kohya.data.prepare import prepare
    from medsynth_kohya.evaluation.evaluate import evaluate
    from medsynth_kohya.hub.push import push
    from medsynth_kohya.machine.doctor import diagnose as doctor
    from medsynth_kohya.pipeline.demo import run_demo as demo
    from medsynth_kohya.pipeline.reproduce import reproduce
    from medsynth_kohya.sampling.sample import sample
    from medsynth_kohya.sdscripts.install import install as install_sd_scripts
    from medsynth_kohya.training.train import train


def __getattr__(name: str) -> Any:
    """Import a command's function on first access (PEP 562)."""
    if name in _COMMANDS:
        module, function = _COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), function)
    raise AttributeError(f"module 'medsynth_kohya' has no attribute {name!r}")
