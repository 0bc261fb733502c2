"""`doctor`: can this machine train? One row per check, each failing row with its fix.

`train`, `sample` and `reproduce` run the same checks before they launch anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth_kohya import arguments, files
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import (
    UNHIDE,
    VISIBLE,
    Gpu,
    detect_gpus,
    hides_gpus,
    none_seen,
    visible,
)
from medsynth_kohya.sdscripts import checkout, launch
from medsynth_kohya.sdscripts.presets import DEVICES

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_FREE_GIB = 10.0
"""Free disk the work folder needs: the SDXL base model (~7 GB) plus LoRA saves and states."""
_PIN = re.compile(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_PROBE = """
import importlib.metadata as metadata, importlib.util as util, json, sys
report = {"python": sys.version.split()[0], "versions": {}, "modules": {}}
for name in sys.argv[1].split(","):
    try:
        report["versions"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
for name in sys.argv[2].split(","):
    report["modules"][name] = util.find_spec(name) is not None
try:
    import torch
    report["torch_cuda"] = bool(torch.cuda.is_available())
    report["torch_cuda_version"] = getattr(torch.version, "cuda", None)
except Exception as exc:
    report["torch_error"] = type(exc).__name__ + ": " + str(exc)
print("PROBE" + json.dumps(report))
"""
REQUIRED_MODULES = ("torch", "torchvision", "accelerate", "transformers", "diffusers",
                    "safetensors", "voluptuous", "toml", "einops", "cv2", "huggingface_hub",
                    "imagesize")
"""What sd-scripts' SDXL training imports (torchvision through library/utils.py, unlisted;
imagesize through library/train_util.py, which none of the others brings)."""
OPTIONAL_MODULES = {"xformers": "xformers = true (as in medsynthx-2023)",
                    "bitsandbytes": "8-bit and paged optimizers (AdamW8bit)",
                    "dadaptation": "the DAdapt* optimizers", "prodigyopt": "the Prodigy optimizer",
                    "lion_pytorch": "the Lion optimizer",
                    "schedulefree": "the *ScheduleFree optimizers and wrapper",
                    "wandb": "log_with = wandb or all"}
"""Modules sd-scripts imports only for some options (checks.needs says which), with what needs
each; a run that needs one fails without it once the model is loaded."""
SHOWN = ("xformers", "bitsandbytes")
"""The optional modules the doctor reports even when no run needs them (the presets use them)."""


@dataclass(frozen=True)
class Check:
    """One row of the report: what was checked, how it stands, and the fix when it is not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    """All checks; training can run when none failed."""

    checks: tuple[Check, ...]
    versions: dict[str, str] = field(default_factory=dict)
    """Package versions in sd-scripts' Python (torch, accelerate, …), for run records."""

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def failures(self) -> list[Check]:
        """The failing rows, for commands that refuse to launch."""
        return [check for check in self.checks if check.status == FAIL]


def pins(sd_dir: Path) -> dict[str, str]:
    """Exact version pins from the checkout's requirements.txt (read, never copied)."""
    path = sd_dir / "requirements.txt"
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def probe(python: str, distributions: Sequence[str]) -> dict[str, Any]:
    """Ask sd-scripts' Python for its version, packages, importable modules and CUDA."""
    try:
        modules = ",".join((*REQUIRED_MODULES, *OPTIONAL_MODULES))
        result = subprocess.run([python, "-c", _PROBE, ",".join(distributions), modules],
                                capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    if "PROBE" not in result.stdout:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    report: dict[str, Any] = json.loads(result.stdout.rsplit("PROBE", 1)[1])
    return report


def _gpu_checks(gpus: Sequence[Gpu], device: str) -> list[Check]:
    if device == "cpu":
        return [Check("GPU", OK, "none needed: this run is on the CPU")]
    if not gpus:
        hidden = hides_gpus()  # nvidia-smi run once for the detail and the fix
        fix = ("train on a machine with a CUDA GPU (a free Colab T4 works); the cpu-smoke "
               "preset runs without one") if not hidden else UNHIDE
        return [Check("GPU", FAIL, none_seen(hidden), fix)]
    checks = []
    for index, gpu in enumerate(gpus):
        bf16 = {True: "bf16", False: "no bf16 (fp16 only)", None: "bf16 unknown"}[gpu.bf16]
        memory = ("memory unknown" if gpu.memory_mib is None else
                  f"{gpu.memory_mib / 1024:.0f} GiB")
        checks.append(Check(f"GPU {index}", OK, f"{gpu.name}, {memory}, "
                            f"compute capability {gpu.capability}, {bf16}"))
    return checks


def _visible_gpu_checks(listed: Sequence[Gpu], device: str) -> list[Check]:
    """The GPU rows for those of nvidia-smi's `listed` GPUs CUDA_VISIBLE_DEVICES leaves to
    CUDA (what train and sample use), saying how many it hides."""
    shown = visible(listed)
    hidden = len(listed) - len(shown)
    checks = _gpu_checks(shown, device)
    if hidden and shown and device != "cpu":
        checks.append(Check("hidden GPUs", OK, f"{hidden} of {len(listed)} hidden by "
                            f"{VISIBLE}={os.environ[VISIBLE]}: train and sample use only the "
                            f"{len(shown)} above"))
    return checks


def _sd_checks(location: checkout.Location) -> list[Check]:
    sd_dir = location.path
    if not checkout.present(sd_dir):
        root = checkout.checkout_root()
        submodule = "" if root is None else f", {root / 'vendor' / 'sd-scripts'} empty"
        where = (f": no --sd-scripts, no ${checkout.ENV_DIR}{submodule}, none in {sd_dir}"
                 if location.rule == checkout.NOT_FOUND else
                 f" at {sd_dir} (from {location.rule})")
        return [Check("sd-scripts", FAIL, f"sd-scripts not found{where}",
                      checkout.missing_fix(location))]
    commit, trust = checkout.head(sd_dir)
    found = f"found by {location.rule}"
    if commit == checkout.PINNED_COMMIT:
        return [Check("sd-scripts", OK, f"{sd_dir} at {checkout.PINNED_RELEASE} "
                      f"({commit[:8]}); {found}")]
    if trust is not None:
        return [Check("sd-scripts", WARN, f"{sd_dir}: git refuses to read it (another user owns "
                      f"it), so it is not checked against {checkout.PINNED_RELEASE}; {found}",
                      f"{trust}, if you trust it")]
    if commit is None:
        return [Check("sd-scripts", WARN, f"{sd_dir}: git reads no commit of its own (no git "
                      f"clone, or no git), so it is not checked against "
                      f"{checkout.PINNED_RELEASE}; {found}",
                      checkout.pin_fix(location, clone=False))]
    return [Check("sd-scripts", WARN, f"{sd_dir} at {commit}, not {checkout.PINNED_RELEASE}; "
                  f"{found}", checkout.pin_fix(location))]


def _python_checks(python: str, report: dict[str, Any], wanted: dict[str, str], device: str,
                   needs: Sequence[str]) -> list[Check]:
    if "error" in report:
        return [Check("Python", FAIL, f"{python} could not run: {report['error']}",
                      "pass --python with the interpreter that has sd-scripts' packages")]
    checks = [Check("Python", OK, f"{python} ({report['python']})")]
    versions: dict[str, str] = report["versions"]
    modules: dict[str, bool] = report["modules"]
    if "torch" not in versions:
        checks.append(Check("torch", FAIL, "not installed", "pip install torch for your CUDA "
                            "version (see pytorch.org), then pip install 'medsynth-kohya[train]'"))
    elif not report.get("torch_cuda") and device != "cpu":
        reason = report.get("torch_error") or "torch.cuda.is_available() is False"
        checks.append(Check("torch", FAIL, f"{versions['torch']} without CUDA ({reason})",
                            "install a CUDA build of torch matching the driver"))
    else:
        cuda = f"CUDA {report.get('torch_cuda_version')}" if report.get("torch_cuda") else "CPU"
        checks.append(Check("torch", OK, f"{versions['torch']}, {cuda}"))
    missing = [name for name in REQUIRED_MODULES if not modules.get(name)]
    off_pin = [f"{name} {versions[name]} (pinned {pin})" for name, pin in wanted.items()
               if name in versions and versions[name] != pin]
    if missing:
        checks.append(Check("sd-scripts packages", FAIL, "cannot import " + ", ".join(missing),
                            "pip install 'medsynth-kohya[train]' into that Python"))
    elif off_pin:
        checks.append(Check("sd-scripts packages", WARN, "; ".join(off_pin),
                            "pip install 'medsynth-kohya[train]' to match sd-scripts' pins"))
    else:
        pinned = ", ".join(f"{n} {versions[n]}" for n in sorted(wanted) if n in versions)
        checks.append(Check("sd-scripts packages", OK, pinned or "importable"))
    for name, needed_by in OPTIONAL_MODULES.items():
        if name not in SHOWN and name not in needs:
            continue
        if modules.get(name):
            checks.append(Check(name, OK, versions.get(name, "importable")))
        else:
            checks.append(Check(name, FAIL if name in needs else WARN,
                                f"not installed: needed for {needed_by}", f"pip install {name}"))
    return checks


def _accelerate_config() -> Check:
    """The user's own accelerate config, which train's launch never reads: it passes the
    run's own (RUN/accelerate.json), or --accelerate-config FILE."""
    found = launch.user_configs()
    own = "train launches with the run's own RUN/accelerate.json (or --accelerate-config FILE)"
    if found:
        return Check("accelerate config", OK, f"{found[0]} is not read: {own}")
    return Check("accelerate config", OK, f"none; not needed: {own}")


def _token() -> Check:
    """Whether push will find a token, asked as push asks (HF_OIDC_RESOURCE's exchange, else
    HF_TOKEN, else a stored login); one the Hub library raises on is a warning with why."""
    from medsynth_kohya.hub.access import UnreadableToken, read_token

    try:
        token = read_token()
    except UnreadableToken as exc:
        return Check("Hub token", WARN, f"cannot be read: {exc.reason}",
                     f"{exc.fix}; needed only by push")
    if token:
        return Check("Hub token", OK, "set (HF_TOKEN or a stored login)")
    return Check("Hub token", WARN, "not set: needed only by push",
                 "hf auth login, or export HF_TOKEN")


def _disk(workdir: Path) -> Check:
    """Free space on the disk of the work folder; one not made yet is made in its nearest
    existing parent, whose free space is the one that counts (and is said to be). The folder
    is named in full: the default, the current folder, read as a bare "."."""
    workdir = workdir.absolute()
    fix = "choose a folder to work in (a new one is made)"
    if workdir.exists() and not workdir.is_dir():
        return Check("disk", FAIL, f"{workdir} is a file, not a folder", fix)
    if (blocked := files.blocked_by(workdir)) is not None:  # what train and prepare refuse
        return Check("disk", FAIL, files.folder_problem(workdir, blocked), fix)
    folder = next(path for path in (workdir, *workdir.parents) if path.exists())
    new = "" if folder == workdir else f" ({workdir} does not exist yet: it is made there)"
    free = shutil.disk_usage(folder).free / 2**30
    if free >= MIN_FREE_GIB:
        return Check("disk", OK, f"{free:.0f} GiB free in {folder}{new}")
    return Check("disk", FAIL if free < 2 else WARN, f"{free:.1f} GiB free in {folder}{new}; "
                 f"about {MIN_FREE_GIB:g} GiB needed", "free space or choose another work folder")


@arguments.checked
def diagnose(*, sd_scripts: arguments.PathArg | checkout.Location | None = None,
             python: str | None = None, workdir: arguments.PathArg | None = None,
             gpus: Sequence[Gpu] | None = None,
             device: str = "cuda", needs: Sequence[str] = (), hub: bool = True) -> Report:
    """Run every check; `gpus` defaults to those nvidia-smi lists that CUDA_VISIBLE_DEVICES
    leaves to CUDA.

    `sd_scripts` is the --sd-scripts option, or a location already found by the caller.

    `device` "cpu" accepts a machine without CUDA (any other than a preset's device is
    refused); `needs` names optional packages (OPTIONAL_MODULES) whose absence fails; `hub`
    adds the token check.
    """
    if device not in DEVICES:
        raise UserError(f"device {device!r} is not one of: "
                        f"{', '.join(repr(known) for known in DEVICES)}")
    location = (sd_scripts if isinstance(sd_scripts, checkout.Location)
                else checkout.find(arguments.optional_path(sd_scripts, "sd_scripts")))
    workdir = arguments.optional_path(workdir, "workdir")
    sd_dir = location.path
    runner = checkout.python(python)
    wanted = pins(sd_dir)
    report = probe(runner, sorted({*wanted, "torch", "torchvision", *SHOWN, *needs}))
    checks = _python_checks(runner, report, wanted, device, needs)
    checks += (_gpu_checks(gpus, device) if gpus is not None else
               _visible_gpu_checks(detect_gpus(), device))
    checks += _sd_checks(location)
    checks += [_accelerate_config(), *([_token()] if hub else []), _disk(workdir or Path.cwd())]
    return Report(tuple(checks), dict(report.get("versions", {})))
