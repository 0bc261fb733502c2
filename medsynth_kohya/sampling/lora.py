"""The LoRA that `sample` generates with, and what its `train` run says about it.

A run folder, a .safetensors file (inside a run's output/ or anywhere) or a Hub repository ->
the LoRA file, its run record, and the caption template, trigger and class it was trained with.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya import arguments, files
from medsynth_kohya.data import archive, captions
from medsynth_kohya.data.prepared import PreparedFolder, PreparedState
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.training.record import RECORD_FILE, DatasetRecord, RunFolder, RunRecord
from medsynth_kohya.training.train import finish_advice, finished_lora, retrain_advice

if TYPE_CHECKING:
    from medsynth_kohya.hub.pull import PulledLora


def check_lora(path: Path) -> None:
    """Refuse a LoRA that is missing, empty or not a safetensors file (header length + JSON)."""
    if not path.is_file():
        raise UserError(f"LoRA file {path} does not exist{files.near_name(path)}")
    if path.stat().st_size == 0:
        raise UserError(f"LoRA file {path} is empty")
    if files.safetensors_header(path) is None:
        raise UserError(f"LoRA file {path} is not a safetensors file (no JSON header after "
                        "its 8-byte length)")


def _load_run(folder: RunFolder) -> RunRecord:
    try:
        return folder.load()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {folder.record_file}: {exc}") from None


def untrained_run(given: Path | str) -> bool:
    """Whether --lora names a run folder whose training has written no LoRA yet (a batch job
    written before the training that makes it)."""
    folder = RunFolder(Path(given))
    if not folder.exists():
        return False
    try:
        record = _load_run(folder)
    except UserError:
        return False
    output = folder.output if folder.output.is_dir() else Path(record.output_dir or folder.output)
    return not (record.output_name and launch.lora_files(output, record.output_name))


def lora_run(given: Path) -> Path | None:
    """The train run folder --lora `given` names or lies in (the folder, or RUN of a file
    RUN/output/NAME however it is written: `melanoma.safetensors` typed inside RUN/output
    too); None when there is none, or `given` is not here (a Hub id)."""
    folder = given if given.is_dir() else given.absolute().parent.parent
    return folder if given.exists() and RunFolder(folder).exists() else None


def resolve_lora(given: Path) -> tuple[Path, RunRecord | None]:
    """The LoRA file and the record of the `train` run that made it (None when not found).

    A run folder gives its final LoRA (else its latest save); a file inside RUN/output/ finds
    its run record. A run folder that was moved is found at its new place.
    """
    if given.is_dir():
        folder = RunFolder(given)
        if not folder.exists():
            trained = (f" (it is a prepared folder: train it first, `medsynth-kohya train "
                       f"{shlex.quote(str(given))}`)" if PreparedFolder(given).is_prepared()
                       else "")
            raise UserError(f"--lora {given} is a folder without {RECORD_FILE}{trained}; give "
                            "a train run folder or a .safetensors file")
        record = _load_run(folder)
        output = folder.output  # this folder's own LoRA, as push uses, even if it moved
        if not output.is_dir():
            output = Path(record.output_dir or output)
        name = record.output_name
        found = launch.lora_files(output, name) if name else []
        listed = [Path(p) for p in record.lora_files or [] if Path(p).is_file()]
        files = found or listed
        if not files:
            raise UserError(f"run {given} has no LoRA file yet (status "
                            f"{record.status or 'unknown'}); {retrain_advice(record, given)}")
        return files[-1], record
    home = lora_run(given)
    if home is not None:
        run = RunFolder(home)
        record = _load_run(run)
        recorded = record.output_dir
        here = given.parent.resolve()
        if here == run.output.resolve() or (recorded and Path(recorded).resolve() == here):
            return given, record
    return given, None


def _outside(given: Path, file: Path) -> tuple[str, ...]:
    """A note when run folder `given` holds no LoRA of its own and its record named one outside
    it (a run.json copied without output/): that file is used, and said so, never silently."""
    if not given.is_dir() or file.resolve().is_relative_to(given.resolve()):
        return ()
    return (f"run {given} holds no LoRA of its own ({RunFolder(given).output} has none): "
            f"sampling with {file}, which its record names outside it; give --lora {file} to "
            "use it on purpose, or copy the whole run folder",)

def _unfinished(given: Path, file: Path, record: RunRecord | None) -> tuple[str, ...]:
    """A note when a run folder's LoRA comes from a run that did not succeed (interrupted,
    failed, killed): a save from before its end, or its final file written before it failed.
    None for a final LoRA saved at the run's last step (`train.finished_lora`): the training's
    result, which `reproduce` goes on from as well."""
    if not given.is_dir() or record is None or record.status in ("succeeded", None):
        return ()
    if file.name == f"{record.output_name}.safetensors":
        if finished_lora(file, record.expected_steps):
            return ()
        return (f"run {given} wrote its final LoRA {file.name}, but its status is "
                f"{record.status} (see {RunFolder(given).log}): check why before trusting the "
                "images",)
    return (f"run {given} did not finish (status {record.status}): sampling with its latest "
            f"save, {file.name}, not a final LoRA; {finish_advice(record, given)}",)


def local_or_hub(given: Path | str) -> Path:
    """--lora as typed (the CLI keeps the text, `./` included) as a Path, `~` expanded. A value
    that names nothing here and would be looked up on the Hub, but is plainly a local path (it
    starts with ./, ends with .safetensors without a :FILE, or its parent folder exists here),
    is refused in one line instead: a typo must not become a download."""
    from medsynth_kohya.hub import pull

    text = str(given)
    path = arguments.path(text, "--lora")
    if path.exists() or pull.hub_spec(str(path)) is None:
        return path
    if (text.startswith("./") or path.parent.is_dir()
            or (text.endswith(".safetensors") and ":" not in text)):
        raise UserError(f"--lora {text} does not exist{files.near_name(path)} (a local run "
                        "folder or .safetensors file; a Hub repo id is owner/name)")
    return path


@dataclass(frozen=True)
class LoraSource:
    """The LoRA file sample generates with, its run record, notes on how they were found, and
    for a Hub LoRA where it came from and the base model it was trained on."""

    file: Path
    record: RunRecord | None
    notes: tuple[str, ...]
    pulled: PulledLora | None = None


def lora_source(lora: Path, revision: str | None) -> LoraSource:
    """The LoRA named by --lora: a local run folder or file, else a Hub LoRA
    (`USER/REPO[:FILE.safetensors]`), downloaded or taken from the Hub cache."""
    from medsynth_kohya.hub import pull

    if lora.exists() or pull.hub_spec(str(lora)) is None:
        if revision:
            raise UserError("--revision is for a LoRA on the Hub (--lora USER/REPO)")
        file, record = resolve_lora(lora)
        return LoraSource(file, record, (*_outside(lora, file), *_unfinished(lora, file, record)))
    try:
        pulled = pull.pull_lora(str(lora), revision=revision)
    except UserError as exc:
        if ":" in str(lora):  # USER/REPO:FILE names a Hub file, no local path
            raise
        raise UserError(f"no local folder {lora} exists in {Path.cwd()}, and as a Hub LoRA: "
                        f"{exc}") from None
    return LoraSource(pulled.file, pulled.record, pulled.notes, pulled)


def _prepared_state(folder: Path | None) -> PreparedState | None:
    """The state a prepared folder keeps (options, class diagnosis; None when there is none)."""
    return None if folder is None else PreparedFolder(folder).state_if_any()


@dataclass(frozen=True)
class Captions:
    template: str
    trigger: str
    diagnosis: str | None
    known: bool


def _class_diagnosis(class_name: str, states: Sequence[PreparedState]) -> str | None:
    """The training class's Archive diagnosis: what prepare found its images share, else the
    class name read as a diagnosis term ("melanoma")."""
    for state in states:
        if state.diagnosis_recorded:
            return state.diagnosis
    return archive.diagnosis_path(class_name)


def training_captions(record: RunRecord | None, like: Path | None) -> Captions:
    """The caption template, trigger and class the LoRA was trained with.

    From the run (its record, else its prepared folder), else the folder of --like, else
    prepare's defaults.
    """
    dataset = record.dataset if record and record.dataset else DatasetRecord()
    states = [state for state in (_prepared_state(record.prepared if record else None),
                                  _prepared_state(like.parent if like else None)) if state]
    found = [(dataset.caption_template, dataset.trigger, dataset.class_name), *(
        (state.caption_template, state.trigger, state.class_name) for state in states)]
    for template, trigger, class_name in found:
        if template and trigger:
            name = str(class_name or (record.output_name if record else "") or "melanoma")
            return Captions(str(template), str(trigger), _class_diagnosis(name, states), True)
    return Captions(captions.DEFAULT_TEMPLATE, captions.DEFAULT_TRIGGER,
                    _class_diagnosis("melanoma", states), False)
