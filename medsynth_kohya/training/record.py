"""The run folder that `train` writes and its record, RUN/run.json: the one module that knows
their names, so every reader goes through `RunFolder` and `RunRecord`.

    RUN/run.json              the record: settings, command, dataset, status, LoRA files, pushes
    RUN/config.toml           sd-scripts' --config_file (rendered by sdscripts/render.py)
    RUN/dataset.toml          sd-scripts' --dataset_config
    RUN/sample_prompts.toml   the prompts of the sample images made during training
    RUN/accelerate.json       accelerate's --config_file (sdscripts/launch.py writes it), so
                              no user's default accelerate config changes the launch
    RUN/preset/NAME.toml      a copy of the preset file the run was started with, which
                              `--resume` trains with however the file changed since
    RUN/output/               sd-scripts' output_dir: NAME.safetensors, saves, states, sample/
    RUN/logs/, RUN/train.log  sd-scripts' logging_dir, and its output

The record is written at the start of a run (status, process, start), again once its files are
rendered, and at the end; `push` appends to `pushes`. Keys a newer version wrote are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from medsynth_kohya import files, outputs
from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    from medsynth_kohya.machine.gpus import Gpu

RECORD_FILE = "run.json"
PUBLISHED_RECORD = f"training/{RECORD_FILE}"
"""Where `push` uploads the record in a Hub repository (and `sample --lora USER/REPO` reads it)."""
_ALWAYS = ("start", "end", "exit_status")
"""Keys written even when empty (null), as every record since the first version has them."""


class NotARecord(ValueError):
    """JSON that is not a run record."""


@dataclass(frozen=True)
class DatasetRecord:
    """The prepared data a run trained on, as `train` found it."""

    prepared: str | None = None
    """The prepared folder (absolute)."""
    manifest_sha256: str | None = None
    train_images: int | None = None
    repeats: int | None = None
    trigger: str | None = None
    caption_template: str | None = None
    class_name: str | None = None
    target_steps: int | None = None
    """prepare --target-steps (the run's max_train_steps unless a --set or the preset's epochs
    decide)."""
    dataset_sha256: str | None = None
    """Of the dataset config sd-scripts got, less its image folder's path (repeats, trigger,
    resolution, buckets): with the two below, what `--resume` must find unchanged."""
    images_sha256: str | None = None
    """Of the training images' names and sizes (`PreparedFolder.trained_digests`)."""
    captions_sha256: str | None = None
    """Of the training images' caption texts (`PreparedFolder.trained_digests`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""


@dataclass(frozen=True)
class GpuRecord:
    """One GPU as a record notes it (`gpus`; each machine's report in `nodes` alike)."""

    name: str | None = None
    memory_mib: int | None = None
    compute_capability: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""

    @classmethod
    def of(cls, gpu: Gpu) -> GpuRecord:
        """How a run notes a GPU that nvidia-smi found."""
        capability = gpu.compute_capability
        return cls(gpu.name, gpu.memory_mib, None if capability is None else list(capability))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as `gpus` and a machine's report hold it."""
        return _unpart(self)

    @classmethod
    def from_dict(cls, data: Any) -> GpuRecord:
        """A GPU entry from its JSON form; NotARecord when it is not a JSON object."""
        return _part(cls, data, "a gpus entry")

    @property
    def memory_gib(self) -> int | None:
        """Whole GiB of memory (None when not recorded)."""
        return self.memory_mib // 1024 if isinstance(self.memory_mib, int) else None

    def gpu(self) -> Gpu:
        """The GPU to check a run against; its memory and capability None (unknown) where not
        recorded, as for values nvidia-smi reports as [N/A]."""
        from medsynth_kohya.machine.gpus import Gpu

        capability = [c for c in self.compute_capability or [] if isinstance(c, int)]
        memory = self.memory_mib if isinstance(self.memory_mib, int) else None
        return Gpu(str(self.name or "GPU"), memory,
                   (capability[0], capability[1]) if len(capability) >= 2 else None)


@dataclass(frozen=True)
class VersionsRecord:
    """What a run ran with: this tool, sd-scripts' commit and sd-scripts' Python's packages."""

    medsynth_kohya: str | None = None
    sd_scripts_commit: str | None = None
    """The sd-scripts checkout's git commit (None when it is not a git checkout)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The packages in sd-scripts' Python (torch, accelerate, …) by name, and keys this version
    does not know, kept as read."""


_Part = TypeVar("_Part", DatasetRecord, GpuRecord, VersionsRecord)


def _part(kind: type[_Part], data: Any, where: str) -> _Part:
    """A nested object of the record: its known keys as fields, the others in `extra`."""
    if not isinstance(data, dict):
        raise NotARecord(f"{where} is not a JSON object")
    names = {f.name for f in fields(kind)} - {"extra"}
    return kind(**{k: v for k, v in data.items() if k in names},
                extra={k: v for k, v in data.items() if k not in names})


def _unpart(part: DatasetRecord | GpuRecord | VersionsRecord) -> dict[str, Any]:
    """The JSON form of a nested object: its recorded fields, then the keys kept as read."""
    return {**{f.name: getattr(part, f.name) for f in fields(part)
               if f.name != "extra" and getattr(part, f.name) is not None}, **part.extra}


@dataclass(frozen=True)
class RunRecord:
    """RUN/run.json: what a `train` run was, ran and made. None: not (yet) recorded."""

    tool: str | None = None
    version: str | None = None
    preset: str | None = None
    preset_file: str | None = None
    overrides: list[str] | None = None
    config: dict[str, Any] | None = None
    """sd-scripts' options as rendered into RUN/config.toml (None before they are)."""
    command: list[str] | None = None
    cwd: str | None = None
    expected_steps: int | None = None
    plan: dict[str, Any] | None = None
    versions: VersionsRecord | None = None
    gpus: list[GpuRecord] | None = None
    """The GPUs of the machine that ran it (rank 0's on several machines)."""
    dataset: DatasetRecord | None = None
    start: str | None = None
    end: str | None = None
    exit_status: int | None = None
    lora_files: list[str] | None = None
    status: str | None = None
    """"running", "dry-run", "succeeded", "failed" or "interrupted"."""
    pid: int | None = None
    host: str | None = None
    resumed_from: str | None = None
    interrupted: bool | None = None
    message: str | None = None
    pushes: list[dict[str, Any]] | None = None
    """One entry per push to the Hub (repo, url, commit, time)."""
    machines: dict[str, Any] | None = None
    """A run on several machines: count, main process address, processes per machine."""
    nodes: list[dict[str, Any]] | None = None
    """A run on several machines: every machine's report (host, GPUs), rank 0 first."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as read."""

    @property
    def options(self) -> dict[str, Any]:
        """sd-scripts' options ({} before they are rendered)."""
        return self.config or {}

    @property
    def output_name(self) -> str:
        """The LoRA's file name without .safetensors ("" when not recorded)."""
        return str(self.options.get("output_name") or "")

    @property
    def output_dir(self) -> str | None:
        """sd-scripts' output folder as the run saw it (the run folder may have moved since)."""
        value = self.options.get("output_dir")
        return None if value is None else str(value)

    @property
    def base_model(self) -> str:
        """The model the LoRA was trained on ("" when not recorded)."""
        return str(self.options.get("pretrained_model_name_or_path") or "")

    @property
    def processes(self) -> int | None:
        """How many training processes accelerate started (its --num_processes; None when
        the command does not say)."""
        command = [str(arg) for arg in self.command or []]
        if "--num_processes" not in command[:-1]:
            return None
        value = command[command.index("--num_processes") + 1]
        return int(value) if value.isdigit() else None

    @property
    def prepared(self) -> Path | None:
        """The prepared folder the run trained on (None when not recorded)."""
        folder = self.dataset.prepared if self.dataset else None
        return Path(str(folder)) if folder else None

    def prepared_again(self, digest: str | None = None) -> bool:
        """Whether the prepared folder no longer holds what the run trained on: the sha256 of
        its manifest (`digest`, of the bytes a caller read, else the file's now) is not the one
        the run recorded. False when either is unknown (not recorded, or the file is gone)."""
        from medsynth_kohya.data.prepared import PreparedFolder

        recorded = self.dataset.manifest_sha256 if self.dataset else None
        if not recorded or self.prepared is None:
            return False
        if digest is None:
            try:
                digest = files.sha256(PreparedFolder(self.prepared).manifest)
            except OSError:
                return False
        return digest != recorded

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """A record from its JSON form; NotARecord when it is not one."""
        if not isinstance(data, dict):
            raise NotARecord("not a JSON object")
        nested = {"dataset", "versions", "gpus"}
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known - nested}
        for key, kind in (("config", dict), ("plan", dict), ("overrides", list),
                          ("command", list), ("gpus", list), ("lora_files", list),
                          ("pushes", list)):
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise NotARecord(f"{key} is not a JSON {'object' if kind is dict else 'list'}")
        if data.get("dataset") is not None:
            values["dataset"] = _part(DatasetRecord, data["dataset"], "dataset")
        if data.get("versions") is not None:
            values["versions"] = _part(VersionsRecord, data["versions"], "versions")
        if data.get("gpus") is not None:
            values["gpus"] = [GpuRecord.from_dict(gpu) for gpu in data["gpus"]]
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every recorded key (start, end and exit_status always), then the keys
        of a newer version."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "extra" or (value is None and item.name not in _ALWAYS):
                continue
            if isinstance(value, DatasetRecord | VersionsRecord):
                value = _unpart(value)
            elif item.name == "gpus" and value is not None:
                value = [_unpart(gpu) for gpu in value]
            data[item.name] = value
        return {**data, **self.extra}


@dataclass(frozen=True)
class RunFolder:
    """A run folder's files, by what they are."""

    path: Path

    @property
    def record_file(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def dataset_config(self) -> Path:
        return self.path / "dataset.toml"

    @property
    def sample_prompts(self) -> Path:
        return self.path / "sample_prompts.toml"

    @property
    def accelerate_config(self) -> Path:
        return self.path / "accelerate.json"

    @property
    def preset_folder(self) -> Path:
        return self.path / "preset"

    def preset_copy(self, name: str) -> Path:
        """Where the run keeps the preset `name` it was started with: preset/NAME.toml (a
        preset's name is its file's stem)."""
        return self.preset_folder / f"{name}.toml"

    @property
    def training_files(self) -> tuple[Path, ...]:
        """The files rendered for sd-scripts: config, dataset config, sample prompts."""
        return self.config, self.dataset_config, self.sample_prompts

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def samples(self) -> Path:
        """The sample images sd-scripts makes during training."""
        return self.output / "sample"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    def final_lora(self, name: str) -> Path:
        """The LoRA a finished run writes: output/NAME.safetensors."""
        return self.output / f"{name}.safetensors"

    def exists(self) -> bool:
        """Whether this is a run folder (it holds a record)."""
        return self.record_file.is_file()

    def load(self) -> RunRecord:
        """The record; OSError or ValueError when it is missing or unreadable."""
        return RunRecord.from_dict(json.loads(self.record_file.read_text(encoding="utf-8")))

    def readable(self, advice: str) -> RunRecord:
        """The record; a UserError naming the file and giving `advice` when it cannot be read:
        with no record to say what the run was, no check on resuming or replacing it can be
        made."""
        try:
            return self.load()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UserError(f"cannot read {self.record_file} ({why.splitlines()[0]}); "
                            f"{advice}") from None

    def save(self, record: RunRecord) -> None:
        """Write the record atomically."""
        files.write_json(self.record_file, record.to_dict())

    def set_aside(self, stamp: str, record: bytes | None) -> Path:
        """Move output/ to output.replaced-STAMP with the run's `record` (as read before a new
        run replaced it), config files and log beside its LoRAs, so a run started over
        (--force) keeps how they were made."""
        kept = self.path / f"output.replaced-{stamp}"
        self.output.rename(kept)
        if record is not None:
            (kept / RECORD_FILE).write_bytes(record)
        for path in (*self.training_files, self.accelerate_config, self.log,
                     *self.preset_folder.glob("*.toml")):
            if path.is_file():
                shutil.copy2(path, kept / path.name)
        return kept

    def add_push(self, entry: dict[str, Any]) -> None:
        """Append a push to the record (atomically; the uploaded copy leaves `pushes` out)."""
        record = self.load()
        self.save(replace(record, pushes=[*(record.pushes or []), entry]))


def run_instead(path: Path) -> str | None:
    """What to say when `path`, given where a prepared folder goes, is a run folder of this
    tool: that it is one, and the prepared folder it trained on (its record's); None when
    it is not one."""
    try:
        record = RunFolder(path).load()
    except (OSError, ValueError):
        return None
    if record.tool != outputs.TOOL:
        return None
    trained = f", {record.prepared}" if record.prepared else ""
    return (f"{path} is a training run folder, not a prepared folder: give the prepared "
            f"folder it trained on{trained}")
