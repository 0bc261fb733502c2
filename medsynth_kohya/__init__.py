"""medsynth-kohya: ISIC dermoscopy data to an SDXL melanoma LoRA through kohya-ss sd-scripts.

The stages are subpackages (`data`, `sdscripts`, `training`, `sampling`, `hub`, `machine`,
`pipeline`, `evaluation`; see ARCHITECTURE.md). Each command's plain function is importable
from here under the command's name: `from medsynth_kohya import prepare, train, sample, push,
reproduce, evaluate, doctor, demo, fetch_isic, install_sd_scripts`, beside the option classes
they take (`PrepareOptions`, `SampleOptions`, `EvaluateOptions`, train's `Cluster` and
`Machines`, sample's `MachineShard`, the enums `HairMode`, `LinkMode` and `MetadataStyle`)
and `UserError`. Paths may be `str` or `os.PathLike`, enums their string values. Everything
is imported on first use, so that importing the package (and `--help`) stays fast.
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
_TYPES = {
    "PrepareOptions": "medsynth_kohya.data.prepare:PrepareOptions",
    "HairMode": "medsynth_kohya.data.hair:HairMode",
    "LinkMode": "medsynth_kohya.data.layout:LinkMode",
    "SampleOptions": "medsynth_kohya.sampling.plan:SampleOptions",
    "MachineShard": "medsynth_kohya.sampling.machines:MachineShard",
    "MetadataStyle": "medsynth_kohya.data.archive:MetadataStyle",
    "EvaluateOptions": "medsynth_kohya.evaluation.evaluate:EvaluateOptions",
    "Cluster": "medsynth_kohya.training.train:Cluster",
    "Machines": "medsynth_kohya.sdscripts.launch:Machines",
    "UserError": "medsynth_kohya.errors:UserError",
}
"""The classes the commands' functions take (and raise), importable beside them."""
__all__ = ["Cluster", "EvaluateOptions", "HairMode", "LinkMode", "MachineShard", "Machines",
           "MetadataStyle", "PrepareOptions", "SampleOptions", "UserError", "__version__",
           "demo", "doctor", "evaluate", "fetch_isic", "install_sd_scripts", "prepare", "push",
           "reproduce", "sample", "train"]

if TYPE_CHECKING:
    from medsynth_kohya.data.archive import MetadataStyle
    from medsynth_kohya.data.fetch import fetch_isic
    from medsynth_kohya.data.hair import HairMode
    from medsynth_kohya.data.layout import LinkMode
    from medsynth_kohya.data.prepare import PrepareOptions, prepare
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate
    from medsynth_kohya.hub.push import push
    from medsynth_kohya.machine.doctor import diagnose as doctor
    from medsynth_kohya.pipeline.demo import run_demo as demo
    from medsynth_kohya.pipeline.reproduce import reproduce
    from medsynth_kohya.sampling.machines import MachineShard
    from medsynth_kohya.sampling.plan import SampleOptions
    from medsynth_kohya.sampling.sample import sample
    from medsynth_kohya.sdscripts.install import install as install_sd_scripts
    from medsynth_kohya.sdscripts.launch import Machines
    from medsynth_kohya.training.train import Cluster, train


def __getattr__(name: str) -> Any:
    """Import a command's function or option class on first access (PEP 562)."""
    where = _COMMANDS.get(name) or _TYPES.get(name)
    if where is not None:
        module, attribute = where.split(":")
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'medsynth_kohya' has no attribute {name!r}")
