"""The LoRA that `sample` generates with, and what its `train` run says about it.

A run folder, a .safetensors file (inside a run's output/ or anywhere) or a Hub repository ->
the LoRA file, its run record, and the caption template, trigger and class it was trained with.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth_kohya.data import archive, captions
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import launch

_MAX_HEADER = 100 * 2**20


def check_lora(path: Path) -> None:
    """Refuse a LoRA that is missing, empty or not a safetensors file (header length + JSON)."""
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"LoRA file {path} is empty")
    with path.open("rb") as file:
        head = file.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 2 <= length <= min(size - 8, _MAX_HEADER):
            raise UserError(f"LoRA file {path} is not a safetensors file (no valid header "
                            "length in its first 8 bytes)")
        try:
            header = json.loads(file.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            header = None
    if not isinstance(header, dict):
        raise UserError(f"LoRA file {path} is not a safetensors file (its header is not JSON)")


def _load_run(run_dir: Path) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {run_dir / 'run.json'}: {exc}") from None
    return record


def resolve_lora(given: Path) -> tuple[Path, dict[str, Any] | None]:
    """The LoRA file and the record of the `train` run that made it (None when not found).

    A run folder gives its final LoRA (else its latest save); a file inside RUN/output/ finds
    RUN/run.json. A run folder that was moved is found at its new place.
    """
    if given.is_dir():
        if not (given / "run.json").is_file():
            raise UserError(f"--lora {given} is a folder without run.json; give a train run "
                            "folder or a .safetensors file")
        record = _load_run(given)
        config = record.get("config", {})
        output = given / "output"  # this folder's own LoRA, as push uses, even if it moved
        if not output.is_dir():
            output = Path(str(config.get("output_dir", output)))
        name = str(config.get("output_name", ""))
        found = launch.lora_files(output, name) if name else []
        listed = [Path(p) for p in record.get("lora_files", []) if Path(p).is_file()]
        files = found or listed
        if not files:
            raise UserError(f"run {given} has no LoRA file yet (status "
                            f"{record.get('status', 'unknown')}); train it first")
        return files[-1], record
    run_dir = given.parent.parent
    if (run_dir / "run.json").is_file():
        record = _load_run(run_dir)
        output = record.get("config", {}).get("output_dir")
        here = given.parent.resolve()
        if here == (run_dir / "output").resolve() or (
                output and Path(str(output)).resolve() == here):
            return given, record
    return given, None


def lora_source(lora: Path, revision: str | None) -> tuple[
        Path, dict[str, Any] | None, str | None, tuple[str, ...]]:
    """The LoRA file, its run record, and for a Hub LoRA (`USER/REPO[:FILE.safetensors]` that
    is no path here, downloaded) the base model it was trained on and notes saying how."""
    from medsynth_kohya.hub import pull

    if lora.exists() or pull.hub_spec(str(lora)) is None:
        if revision:
            raise UserError("--revision is for a LoRA on the Hub (--lora USER/REPO)")
        return (*resolve_lora(lora), None, ())
    pulled = pull.pull_lora(str(lora), revision=revision)
    return pulled.file, pulled.record, pulled.base_model, pulled.notes


def _prepared_state(folder: Path | None) -> dict[str, Any]:
    """The record a prepared folder keeps (options, class diagnosis; {} when there is none)."""
    from medsynth_kohya.data.prepare import STATE_DIR as PREPARE_STATE
    from medsynth_kohya.data.prepare import STATE_FILE as PREPARE_FILE

    if folder is None or not (folder / PREPARE_STATE / PREPARE_FILE).is_file():
        return {}
    from medsynth_kohya.data.prepare import read_state

    state: dict[str, Any] = read_state(folder)
    return state


@dataclass(frozen=True)
class Captions:
    template: str
    trigger: str
    diagnosis: str | None
    known: bool


def _class_diagnosis(class_name: str, states: Sequence[Mapping[str, Any]]) -> str | None:
    """The training class's Archive diagnosis: what prepare found its images share, else the
    class name read as a diagnosis term ("melanoma")."""
    for state in states:
        if "diagnosis" in state:
            return None if state["diagnosis"] is None else str(state["diagnosis"])
    return archive.diagnosis_path(class_name)


def training_captions(record: Mapping[str, Any] | None, like: Path | None) -> Captions:
    """The caption template, trigger and class the LoRA was trained with.

    From the run (its record, else its prepared folder), else the folder of --like, else
    prepare's defaults.
    """
    dataset: Mapping[str, Any] = (record or {}).get("dataset", {})
    prepared = Path(str(dataset["prepared"])) if dataset.get("prepared") else None
    states = [_prepared_state(prepared), _prepared_state(like.parent if like else None)]
    for options in (dataset, *(state.get("options", {}) for state in states)):
        if options.get("caption_template") and options.get("trigger"):
            class_name = str(options.get("class_name") or (record or {}).get("config", {}).get(
                "output_name") or "melanoma")
            return Captions(str(options["caption_template"]), str(options["trigger"]),
                            _class_diagnosis(class_name, states), True)
    return Captions(captions.DEFAULT_TEMPLATE, captions.DEFAULT_TRIGGER,
                    _class_diagnosis("melanoma", states), False)
