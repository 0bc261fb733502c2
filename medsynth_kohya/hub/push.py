"""`push`: publish a training run's LoRA to the Hugging Face Hub with a model card.

Flow: run folder -> plan (the files and their place in the repo, the card rendered from
`templates/model_card.md` through huggingface_hub's ModelCard/ModelCardData) -> whoami ->
create_repo(exist_ok) -> one create_commit. Nothing is staged on disk: the final LoRA (and with
`all_checkpoints` the epoch saves) and sample images are sent from where they lie, the card and
the redacted config files and run record from memory, so a failure leaves nothing half-written
locally. Unchanged files are skipped by the client, so pushing the same run twice makes no new
commit. The token (argument, HF_TOKEN or the stored login) is only ever handed to HfApi.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import struct
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import __version__, files, locks
from medsynth_kohya.data import manifest
from medsynth_kohya.data.captions import DEFAULT_TRIGGER
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import privacy
from medsynth_kohya.resources import data_dir
from medsynth_kohya.sampling.prompts import DEFAULT_SCALE, DEFAULT_SIZE, DEFAULT_STEPS
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.presets import BASE_MODEL

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_ENDPOINT = "https://huggingface.co"
TAGS = ("text-to-image", "stable-diffusion-xl", "lora", "medical", "dermatology", "melanoma")
DEFAULT_LICENSE = "cc-by-nc-4.0"
MANAGED = ("checkpoints/", "samples/", "training/")
"""Repo folders that `push` owns: files there that the pushed run lacks are deleted."""
MAX_SAMPLE_IMAGES = 8
"""Sample images uploaded (besides the grid); the first WIDGETS become card widgets."""
WIDGETS = 4
REDACTED = privacy.REDACTED
_NAME_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_SETTINGS = ("pretrained_model_name_or_path", "vae", "network_module", "network_dim",
             "network_alpha", "network_args", "network_train_unet_only", "optimizer_type",
             "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler",
             "lr_warmup_steps", "max_train_steps", "max_train_epochs", "train_batch_size",
             "gradient_accumulation_steps", "resolution", "mixed_precision", "save_precision",
             "noise_offset", "min_snr_gamma", "seed", "gradient_checkpointing", "cache_latents",
             "sdpa", "xformers")
"""sd-scripts options shown in the card's training table, when the run set them."""


@dataclass(frozen=True)
class Upload:
    """One file of the commit: where it goes in the repo and its bytes or local file."""

    path_in_repo: str
    source: Path | bytes

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


@dataclass(frozen=True)
class Sample:
    """A sample image and the prompt that made it (None when unknown)."""

    path: Path
    prompt: str | None
    negative_prompt: str | None = None


@dataclass(frozen=True)
class PushPlan:
    """What a push sends: every file (README.md first) and the rendered card."""

    repo_id: str
    uploads: tuple[Upload, ...]
    card: str
    warnings: tuple[str, ...] = ()
    findings: tuple[tuple[str, str], ...] = ()
    """(path in the repo, what private thing it holds): a push with any is refused."""
    secrets: tuple[str, ...] = ()
    """Values that must not leave the machine, for scrubbing error messages."""


@dataclass(frozen=True)
class PushResult:
    """What `push` sent (or, in a dry run, would send) and where it landed."""

    repo_id: str
    url: str
    files: tuple[tuple[str, int], ...]
    """(path in the repo, size in bytes), README.md first."""
    card: str
    dry_run: bool
    private: bool
    commit: str | None = None
    """The repo's head commit after the push (None in a dry run)."""
    changed: bool = False
    """True when the push made a new commit; False when the Hub already had these files."""
    deleted: tuple[str, ...] = ()
    user: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    scanned: int = 0
    """Bytes the last scan searched (all of them) before anything was sent."""


# --- input checks -------------------------------------------------------------------------------

def check_repo_id(repo_id: str) -> str:
    """`namespace/name` with Hub-valid parts, else a UserError saying what a repo id looks like."""
    parts = repo_id.strip().split("/")
    if (len(parts) != 2 or not all(_NAME_PART.match(part) for part in parts)
            or any("--" in part or ".." in part for part in parts)
            or parts[1].endswith(".git")):
        raise UserError(f"--repo-id {repo_id!r} must be namespace/name (your user name or an "
                        "organisation, then letters, digits, '-', '_' or '.'), e.g. "
                        "your-name/melanoma-sdxl-lora")
    return "/".join(parts)


def check_license(license: str) -> str:
    """A Hub licence identifier such as cc-by-nc-4.0."""
    if not _LICENSE.match(license):
        raise UserError(f"--license {license!r} must be a Hub licence id in lower case, e.g. "
                        "cc-by-nc-4.0, mit or openrail++")
    return license


def resolve_endpoint(endpoint: str | None) -> str:
    """The Hub URL: the argument, else HF_ENDPOINT read now (not at import), else the public Hub."""
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if not chosen.startswith(("http://", "https://")):
        raise UserError(f"--endpoint {chosen!r} must be an http:// or https:// URL")
    return chosen.rstrip("/")


# --- the run folder ----------------------------------------------------------------------------

def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a training run (no run.json): pass the run folder "
                        "that `medsynth-kohya train` wrote")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); re-run `medsynth-kohya train`") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise UserError(f"{path} is not a run record of `medsynth-kohya train`")
    return record


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte header length and a JSON object."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            header = file.read(min(length, 100_000_000)) if length else b""
        ok = bool(header) and len(header) == length and header.lstrip().startswith(b"{")
    except OSError:
        ok = False
    if not ok:
        raise UserError(f"{path} is not a safetensors file (empty or damaged); re-run the "
                        "training or its last epoch with `medsynth-kohya train ... --resume`")


def _lora_files(run_dir: Path, record: Mapping[str, Any], all_checkpoints: bool,
                ) -> tuple[Path, list[Path], list[str]]:
    """The final LoRA, the epoch/step saves to upload and warnings."""
    name = str(record["config"].get("output_name") or "")
    status = str(record.get("status") or "unknown")
    output = run_dir / "output"
    final = output / f"{name}.safetensors"
    if not name or not final.is_file():
        hint = ("it was a dry run: run `medsynth-kohya train` without --dry-run"
                if status == "dry-run" else
                f"the run is {status}: finish it with `medsynth-kohya train PREPARED "
                f"--run-dir {run_dir} --resume`")
        raise UserError(f"{run_dir} has no LoRA file ({final.relative_to(run_dir)}); {hint}")
    _check_safetensors(final)
    warnings = []
    if status != "succeeded":
        warnings.append(f"run.json says the run is {status}, yet {final.name} exists; pushing it")
    saves = [path for path in launch.lora_files(output, name) if path != final]
    if all_checkpoints:
        for path in saves:
            _check_safetensors(path)
    return final, saves if all_checkpoints else [], warnings


def _toml(path: Path) -> dict[str, Any]:
    import toml

    try:
        document: dict[str, Any] = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document


def _trigger(run_dir: Path) -> str:
    """The class token the run trained on, from RUN/dataset.toml."""
    document = _toml(run_dir / "dataset.toml")
    for dataset in document.get("datasets", []):
        for subset in dataset.get("subsets", []):
            if subset.get("class_tokens"):
                return str(subset["class_tokens"])
    return DEFAULT_TRIGGER


def _prompt_settings(run_dir: Path) -> dict[str, Any]:
    """The training run's sample settings and prompts, from RUN/sample_prompts.toml."""
    table = dict(_toml(run_dir / "sample_prompts.toml").get("prompt", {}))
    subsets = table.pop("subset", [])
    prompts = [str(s.get("prompt", "")) for s in subsets if isinstance(s, dict)]
    return {"negative_prompt": table.get("negative_prompt"),
            "width": table.get("width", DEFAULT_SIZE), "height": table.get("height", DEFAULT_SIZE),
            "scale": table.get("scale", DEFAULT_SCALE),
            "steps": table.get("sample_steps", DEFAULT_STEPS), "prompts": prompts}


def _training_samples(run_dir: Path, name: str, prompts: Sequence[str],
                      negative: str | None) -> list[Sample]:
    """The last set of sample images sd-scripts wrote during training (one per prompt).

    sd-scripts names them `NAME_<step:06d | e<epoch:06d>>_<prompt:02d>_<YYYYmmddHHMMSS>[_seed].png`.
    """
    folder = run_dir / "output" / "sample"
    pattern = re.compile(rf"^{re.escape(name)}_(e?\d{{6}})_(\d{{2}})_(\d{{14}})(?:_\d+)?\.png$")
    found = []
    for path in folder.glob("*.png") if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            found.append((match.group(3), match.group(1), int(match.group(2)), path))
    if not found:
        return []
    latest = max(found)[1]
    by_prompt: dict[int, Path] = {}
    for _, suffix, index, path in sorted(found):
        if suffix == latest:
            by_prompt[index] = path
    return [Sample(path, prompts[index] if index < len(prompts) else None, negative)
            for index, path in sorted(by_prompt.items())]


def _synth_samples(folder: Path) -> tuple[list[Sample], Path | None]:
    """Images of a `medsynth-kohya sample` folder (metadata.csv order) and its grid."""
    images = sorted((folder / "images").glob("*.png")) if (folder / "images").is_dir() else []
    grid = folder / "grid.jpg"
    if not images and not grid.is_file():
        raise UserError(f"--samples {folder} holds no images/*.png or grid.jpg: pass the --out "
                        "folder of `medsynth-kohya sample`")
    rows: dict[str, dict[str, str]] = {}
    metadata = folder / "metadata.csv"
    if metadata.is_file():
        with metadata.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                key = (row.get("isic_id") or row.get("image_name") or row.get("id")
                       or row.get("file") or "")
                rows.setdefault(Path(key).stem, row)
    order = {stem: i for i, stem in enumerate(rows)}
    images.sort(key=lambda path: (order.get(path.stem, len(order)), path.name))
    samples = [Sample(path, rows.get(path.stem, {}).get("prompt") or None,
                      rows.get(path.stem, {}).get("negative_prompt") or None)
               for path in images[:MAX_SAMPLE_IMAGES]]
    return samples, grid if grid.is_file() else None


# --- what is published --------------------------------------------------------------------------

TRAINING_FILES = ("config.toml", "dataset.toml", "sample_prompts.toml")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _public_ids(record: Mapping[str, Any], repo_id: str) -> list[str]:
    """Public strings that may hold the user's name: the repo id and Hub model ids."""
    ids = [repo_id, "medsynth-kohya", "medsynth_kohya", BASE_MODEL]
    for value in (record.get("config") or {}).values():
        if isinstance(value, str) and _HUB_ID.fullmatch(value) and not Path(value).exists():
            ids.append(value)
    return ids


def _public_record(record: Mapping[str, Any], policy: privacy.Policy) -> dict[str, Any]:
    """The run record as published: no push history, secrets redacted, paths hidden."""
    public: dict[str, Any] = policy.data({k: v for k, v in record.items()
                                          if k not in ("pushes", "overrides", "command")})
    public["overrides"] = [policy.override(str(o)) for o in record.get("overrides") or []]
    command = [str(arg) for arg in record.get("command") or []]
    hidden = {i + 1 for i, arg in enumerate(command[:-1])
              if arg.startswith("--") and privacy.is_secret_key(arg[2:])}
    public["command"] = [privacy.REDACTED if i in hidden else policy.text(arg)
                         for i, arg in enumerate(command)]
    return {key: public[key] for key in record if key in public}


def _run_files(run_dir: Path, record: Mapping[str, Any], policy: privacy.Policy,
               ) -> tuple[list[Upload], dict[str, Any]]:
    """training/: the rendered sd-scripts files and the run record as published, and the
    published record (the card is written from it)."""
    import toml

    documents = {name: _toml(run_dir / name) for name in TRAINING_FILES
                 if (run_dir / name).is_file()}
    for document in (*documents.values(), record):  # learn every secret before writing any
        policy.collect(document)
    for item in record.get("overrides") or []:
        policy.override(str(item))
    uploads = [Upload(f"training/{name}", toml.dumps(policy.data(document)).encode())
               for name, document in documents.items()]
    public = _public_record(record, policy)
    text = json.dumps(public, indent=2, default=str) + "\n"
    uploads.append(Upload("training/run.json", text.encode()))
    return uploads, public


def _scrub(data: bytes, secrets: Sequence[str]) -> bytes:
    """`data` with every occurrence of a secret replaced."""
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), REDACTED.encode())
    return data


def scan(uploads: Sequence[Upload], policy: privacy.Policy) -> tuple[tuple[str, str], ...]:
    """(path in the repo, what it would publish) for every upload that holds something
    private: the token, a redacted value, the home folder, the user name or a local path."""
    found = []
    for upload in uploads:
        finding = (policy.findings(upload.source, upload.path_in_repo)
                   if isinstance(upload.source, bytes)
                   else privacy.scan_file(policy, upload.source, upload.path_in_repo))
        if finding:
            found.append((upload.path_in_repo, finding))
    return tuple(found)


# --- the card ----------------------------------------------------------------------------------

def _md(text: object) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _quoted(text: str) -> str:
    """A prompt safe inside the card's double-quoted Python and shell strings."""
    return re.sub(r'["\\`$]', "", text)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _share_table(label: str, counts: Counter[str], order: Sequence[str], total: int) -> str:
    lines = [f"| {label} | images | share |", "|---|---:|---:|"]
    for key in order:
        lines.append(f"| {_md(key)} | {counts[key]} | {100 * counts[key] / total:.1f} % |")
    return "\n".join(lines)


def _age_bin(age: Any) -> str:
    import pandas as pd

    if age is None or pd.isna(age):
        return "unknown"
    years = int(age)
    if years < 30:
        return "under 30"
    if years >= 80:
        return "80 and over"
    return f"{years // 10 * 10}-{years // 10 * 10 + 9}"


def spread_markdown(rows: pd.DataFrame) -> str:
    """Tables of the training images by sex, age, site and skin tone (and hair, artefacts)."""
    import pandas as pd

    total = len(rows)
    if not total:
        return "The manifest holds no training rows."

    def label(value: Any) -> str:
        return "unknown" if value is None or pd.isna(value) or not str(value).strip() else str(
            value)

    sexes = Counter(label(v) for v in rows["sex"])
    ages = Counter(_age_bin(v) for v in rows["age"])
    sites = Counter(label(v) for v in rows["site"])
    age_order = sorted((k for k in ages if k != "unknown"),
                       key=lambda k: -1 if k == "under 30" else int(k[:2]))
    hairy = int(rows["hairy"].sum())
    parts = [
        _share_table("sex", sexes, sorted(sexes, key=lambda k: (k == "unknown", -sexes[k], k)),
                     total),
        _share_table("age", ages, [*age_order, *(["unknown"] if "unknown" in ages else [])],
                     total),
        _share_table("site", sites, sorted(sites, key=lambda k: (k == "unknown", -sites[k], k)),
                     total),
        f"{hairy} of {total} images ({100 * hairy / total:.1f} %) are tagged `hairy`.",
        *_tone_markdown(rows),
    ]
    return "\n\n".join(parts)


def _tone_markdown(rows: pd.DataFrame) -> list[str]:
    """The skin-tone table (ITA categories measured on each photo) and the artefact counts."""
    import pandas as pd

    from medsynth_kohya.data.measure import ARTEFACTS, TONES

    if "skin_tone" not in rows or rows["skin_tone"].isna().all():
        return []
    total = len(rows)
    tones = Counter("unmeasured" if pd.isna(v) else str(v) for v in rows["skin_tone"])
    order = [name for name, _ in TONES] + (["unmeasured"] if tones["unmeasured"] else [])
    light = tones["very light"] + tones["light"]
    words = {"vignette": "dark vignette corners", "ruler": "ruler or scale marks",
             "bubbles": "gel bubbles"}
    found = ", ".join(f"{int(rows[name].fillna(False).sum())} with {words[name]}"
                      for name in ARTEFACTS if name in rows)
    return [_share_table("skin tone (ITA)", tones, order, total),
            f"{light} of {total} images ({100 * light / total:.1f} %) show very light or light "
            "skin (ITA above 41 degrees, measured on the healthy skin of each photo).",
            *([f"Artefacts: {found}."] if found else [])]


def _spread(record: Mapping[str, Any]) -> tuple[str, list[str], bool]:
    """The spread section, warnings, and whether the data is the synthetic demo set."""
    dataset = record.get("dataset") or {}
    path = Path(str(dataset.get("prepared", ""))) / "manifest.csv"
    if not dataset.get("prepared") or not path.is_file():
        return ("The prepared manifest was not available when this card was written, so the "
                "spread of the training images is not shown.",
                [f"{path} not found: the card cannot show the data's sex/age/site spread"],
                False)
    if dataset.get("manifest_sha256") and files.sha256(path) != dataset["manifest_sha256"]:
        return ("The prepared manifest changed after training, so the spread of the training "
                "images is not shown.",
                [f"{path} changed since the run (sha256 differs): the card omits the spread"],
                False)
    table = manifest.read(path)
    rows = table[table["split"] == "train"]
    synthetic = bool(len(rows)) and all(str(i).startswith("SYN_") for i in rows["id"])
    return spread_markdown(rows), [], synthetic


def _setting(value: Any) -> str:
    local = isinstance(value, str) and ("/" in value or "\\" in value) and (
        Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).is_absolute())
    if local:
        return f"`{Path(value).name}` (local file)"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _settings(record: Mapping[str, Any]) -> str:
    config = record["config"]
    lines = ["| sd-scripts option | value |", "|---|---|"]
    lines += [f"| `{key}` | {_md(_setting(config[key]))} |" for key in _SETTINGS if key in config]
    if record.get("expected_steps") is not None:
        lines.append(f"| optimizer steps (expected) | `{record['expected_steps']}` |")
    return "\n".join(lines)


def _hardware(record: Mapping[str, Any]) -> str:
    gpus = [g for g in record.get("gpus") or [] if isinstance(g, dict)]
    command = [str(arg) for arg in record.get("command") or []]
    processes = None
    if "--num_processes" in command[:-1]:
        processes = command[command.index("--num_processes") + 1]
    if not gpus:
        return "CPU"
    names = Counter(f"{g.get('name', 'GPU')} ({int(g.get('memory_mib') or 0) // 1024} GiB)"
                    for g in gpus)
    found = ", ".join(f"{count} x {name}" for name, count in names.items())
    if not processes:
        return found
    return f"{found}; trained with {processes} process{'' if processes == '1' else 'es'}"


def _duration(record: Mapping[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(str(record["start"]))
        end = datetime.fromisoformat(str(record["end"]))
    except (KeyError, TypeError, ValueError):
        return "not recorded"
    seconds = int((end - start).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _versions(record: Mapping[str, Any]) -> str:
    versions = record.get("versions") or {}
    parts = []
    for key, value in versions.items():
        if value:
            text = str(value)[:12] if key == "sd_scripts_commit" else str(value)
            parts.append(f"{'sd-scripts' if key == 'sd_scripts_commit' else key} {text}")
    return ", ".join(parts) or "not recorded"


def _base_model(config: Mapping[str, Any]) -> str:
    value = str(config.get("pretrained_model_name_or_path") or "")
    local = Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).exists()
    if re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not local:
        return value
    return BASE_MODEL


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each `{{ name }}` once; an unknown name is a programming error."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"model card value {name!r} was not provided")
        return values[name]

    return _PLACEHOLDER.sub(one, template)


def render_card(*, repo_id: str, record: Mapping[str, Any], trigger: str, weight_name: str,
                license: str, prompts: Mapping[str, Any], samples: Sequence[Sample],
                sample_paths: Mapping[Path, str], grid: str | None, spread: str,
                synthetic: bool, files: Sequence[tuple[str, int]]) -> str:
    """The README.md model card: ModelCardData metadata and the template's body."""
    from huggingface_hub import ModelCard, ModelCardData

    config = record["config"]
    base_model = _base_model(config)
    example = _quoted(next((p for p in prompts["prompts"] if p), "")
                      or f"photo of skin, {trigger} on torso")
    widgets = []
    for sample in samples[:WIDGETS]:
        widget: dict[str, Any] = {"text": sample.prompt or trigger}
        if sample.negative_prompt:
            widget["parameters"] = {"negative_prompt": sample.negative_prompt}
        widget["output"] = {"url": sample_paths[sample.path]}
        widgets.append(widget)
    data = ModelCardData(base_model=base_model, license=license, tags=list(TAGS),
                         library_name="diffusers", pipeline_tag="text-to-image",
                         instance_prompt=trigger, widget=widgets or None)

    if grid:
        shown = f"![Sample grid]({grid})"
    elif samples:
        shown = "\n".join(["| image | prompt |", "|---|---|"] + [
            f"| ![sample]({sample_paths[s.path]}) | {_md(s.prompt or '')} |" for s in samples])
    else:
        shown = "No sample images were uploaded with this version."
    if samples or grid:
        shown += ("\n\nGenerated by this LoRA; synthetic images, not patients.")

    name = str(config.get("output_name") or "lora")
    dataset = record.get("dataset") or {}
    overrides = record.get("overrides") or []
    license_text = (
        f"The LoRA weights are released under `{license}`."
        + (" This is the licence of the ISIC 2020 training images (CC-BY-NC 4.0: attribution, "
           "no commercial use)." if license == DEFAULT_LICENSE else
           " The ISIC 2020 training images are CC-BY-NC 4.0 (attribution, no commercial use); "
           "their terms may limit what you can do with weights derived from them.")
        + f" Using the LoRA also means using [SDXL base 1.0](https://huggingface.co/{BASE_MODEL}),"
        " whose own licence (CreativeML Open RAIL++-M) applies as well, including its use"
        " restrictions.")
    data_warning = ("\n> **Note:** this LoRA was trained on medsynth-kohya's *generated demo "
                    "data* (no real images). It tests the pipeline and is not a melanoma "
                    "model.\n" if synthetic else "")
    file_lines = ["| file | size |", "|---|---:|"] + [
        f"| `{path}` | {_human(size)} |" for path, size in files]
    values = {
        "card_data": data.to_yaml(),
        "class_name": name,
        "title": f"{name}: SDXL LoRA for synthetic dermoscopy images ({trigger})",
        "base_model": base_model,
        "trigger": trigger,
        "example_prompt": example,
        "tool_version": str(record.get("version") or __version__),
        "data_warning": data_warning,
        "files": "\n".join(file_lines),
        "train_images": str(dataset.get("train_images", "?")),
        "repeats": str(dataset.get("repeats", "?")),
        "manifest_sha256": str(dataset.get("manifest_sha256") or "not recorded"),
        "spread": spread,
        "settings": _settings(record),
        "preset": str(record.get("preset") or "?"),
        "overrides": ", ".join(f"`--set {_md(o)}`" for o in overrides) if overrides else "none",
        "hardware": _hardware(record),
        "duration": _duration(record),
        "status": str(record.get("status") or "unknown"),
        "versions": _versions(record),
        "samples": shown,
        "width": str(prompts["width"]),
        "height": str(prompts["height"]),
        "steps": str(prompts["steps"]),
        "scale": str(prompts["scale"]),
        "repo_id": repo_id,
        "weight_name": weight_name,
        "license_text": license_text,
    }
    template = (data_dir("templates") / "model_card.md").read_text(encoding="utf-8")
    card = ModelCard(_fill(template, values))
    return str(card).rstrip("\n") + "\n"


# --- plan and push -----------------------------------------------------------------------------

def plan(run_dir: Path, repo_id: str, *, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, samples: Path | None = None,
         token: str | None = None, environ: Mapping[str, str] | None = None) -> PushPlan:
    """Every file a push of `run_dir` sends, README.md (the card) first, exactly as it leaves
    the machine, and what the last scan found in them; no network.

    This is the one place that decides what is published: secrets (the token, values of keys
    that name a secret in the configs, --set or the environment) are redacted, local paths are
    made relative to the run folder or shown as `<local>/NAME`.
    """
    repo_id = check_repo_id(repo_id)
    license = check_license(license)
    record = _read_record(run_dir)
    final, saves, warnings = _lora_files(run_dir, record, all_checkpoints)
    name = str(record["config"]["output_name"])
    trigger = _trigger(run_dir)
    prompts = _prompt_settings(run_dir)
    grid: Path | None = None
    if samples is not None:
        chosen, grid = _synth_samples(samples)
    else:
        chosen = _training_samples(run_dir, name, prompts["prompts"],
                                   prompts["negative_prompt"])
    sample_paths = {s.path: f"samples/{s.path.name}" for s in chosen}
    grid_path = f"samples/{grid.name}" if grid else None
    spread, spread_warnings, synthetic = _spread(record)
    warnings += spread_warnings
    if synthetic:
        warnings.append("the run trained on the synthetic demo data; the card says so")

    policy = privacy.Policy.for_run(run_dir, token=token, environ=environ,
                                    allowed=_public_ids(record, repo_id))
    training, public = _run_files(run_dir, record, policy)
    uploads = [Upload(final.name, final)]
    uploads += [Upload(f"checkpoints/{path.name}", path) for path in saves]
    uploads += training
    uploads += [Upload(sample_paths[s.path], s.path) for s in chosen]
    if grid is not None and grid_path is not None:
        uploads.append(Upload(grid_path, grid))
    files = [(u.path_in_repo, u.size) for u in uploads]
    card = render_card(repo_id=repo_id, record=public, trigger=trigger, weight_name=final.name,
                       license=license, prompts=prompts, samples=chosen,
                       sample_paths=sample_paths, grid=grid_path, spread=spread,
                       synthetic=synthetic, files=files)
    card = _scrub(card.encode(), policy.secrets).decode()
    everything = (Upload("README.md", card.encode()), *uploads)
    return PushPlan(repo_id, everything, card, tuple(warnings), scan(everything, policy),
                    tuple(policy.secrets))


def show(run_dir: Path, repo_id: str, path_in_repo: str, *, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, samples: Path | None = None,
         token: str | None = None) -> tuple[bytes, str | None]:
    """One file's bytes exactly as a push would upload them, and what the scan found in it."""
    from huggingface_hub import get_token

    planned = plan(run_dir, repo_id, license=license, all_checkpoints=all_checkpoints,
                   samples=samples, token=token or get_token())
    wanted = path_in_repo.strip().lstrip("/")
    for upload in planned.uploads:
        if upload.path_in_repo == wanted:
            data = (upload.source if isinstance(upload.source, bytes)
                    else upload.source.read_bytes())
            return data, dict(planned.findings).get(wanted)
    listing = ", ".join(u.path_in_repo for u in planned.uploads)
    raise UserError(f"--show {path_in_repo!r} is not among the files push uploads: {listing}")


def refuse_findings(planned: PushPlan) -> None:
    """Refuse a push whose files hold something private, naming the file and the finding."""
    if planned.findings:
        path, finding = planned.findings[0]
        others = len(planned.findings) - 1
        more = f" (and {others} more file(s))" if others else ""
        raise UserError(f"push refused: {path} would publish {finding}{more}; see it with "
                        f"`medsynth-kohya push RUN --repo-id {planned.repo_id} --show {path}` "
                        "and remove it from the run's files")


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception kinds of a failed connection: httpx2 (huggingface_hub >= 1), requests (0.x)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout")),
                          ("requests.exceptions", ("ChunkedEncodingError",)),
                          ("urllib3.exceptions", ("ProtocolError",))):
        if module.split(".")[0] not in sys.modules:
            continue
        loaded = importlib.import_module(module)
        kinds += [getattr(loaded, name) for name in names if hasattr(loaded, name)]
    return tuple(kinds)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def hub_error(exc: BaseException, repo_id: str, endpoint: str) -> str | None:
    """The one-line message for a Hub or network failure; None for anything else."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    name = repo_id.split("/")[1]
    for link in _chain(exc):
        if isinstance(link, LocalTokenNotFoundError):
            return _NO_TOKEN
        # HfHubHTTPError, or the client's own error where huggingface_hub lets one through
        # (0.x raises requests.HTTPError after retrying an LFS upload).
        status = getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(link, HfHubHTTPError) or isinstance(status, int):
            if status == 401:
                return (f"the Hub at {endpoint} rejected the token (401): set HF_TOKEN to a "
                        "valid token with write access, or run `hf auth login`")
            if status == 403:
                return (f"no write access to {repo_id} (403): it belongs to another user or "
                        "organisation, or the token is read-only; push to your own namespace "
                        f"(--repo-id YOUR-NAME/{name}) with a write token")
            if status == 404:
                return (f"{repo_id} was not found at {endpoint} (404): check --repo-id's "
                        "namespace (your user name or an organisation you belong to) and "
                        "--endpoint / HF_ENDPOINT")
            if status == 429:
                return (f"the Hub at {endpoint} is rate-limiting this token (429); wait a few "
                        "minutes and run the same command again")
            message = str(getattr(link, "server_message", "") or "").splitlines()
            detail = f": {message[0][:200]}" if message else ""
            if isinstance(status, int) and status >= 500:
                return (f"the Hub at {endpoint} failed with {status} during the push{detail}; "
                        "the push did not finish: run the same command again later")
            return (f"the Hub at {endpoint} answered {status} during the push{detail}; check "
                    "--repo-id and run the same command again")
    network = _network_errors()
    for link in _chain(exc):
        if isinstance(link, network):
            return (f"lost the connection to {endpoint} during the push "
                    f"({type(link).__name__}); the push did not finish: check the network and "
                    "run the same command again (files already uploaded are not sent twice)")
    for link in _chain(exc):
        if isinstance(link, ValueError) and str(link).startswith("Invalid metadata in README"):
            return f"the Hub refused the model card's metadata: {str(link).splitlines()[-1]}"
    return None


_NO_TOKEN = ("no Hugging Face token found: set HF_TOKEN to a token with write access "
             "(https://huggingface.co/settings/tokens) or run `hf auth login`")


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, secrets: Sequence[str]) -> Iterator[None]:
    """Turn a Hub or network failure into a one-line UserError that never holds a secret."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        message = hub_error(exc, repo_id, endpoint)
        if message is None:
            raise
        raise UserError(_scrub(message.encode(), secrets).decode()) from None


@contextmanager
def _default_endpoint(endpoint: str) -> Iterator[None]:
    """Make `endpoint` huggingface_hub's default for the push.

    huggingface_hub reads HF_ENDPOINT once, at import, and 0.x builds the CommitInfo that
    create_commit returns from that default, not from HfApi(endpoint=...): against any other
    endpoint the commit succeeds and then fails to parse its own URL.
    """
    from huggingface_hub import constants

    saved = constants.ENDPOINT
    constants.ENDPOINT = endpoint
    try:
        yield
    finally:
        constants.ENDPOINT = saved


def _record_push(run_dir: Path, entry: Mapping[str, Any]) -> None:
    """Append the push to RUN/run.json (atomically; the uploaded copy leaves `pushes` out)."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record.setdefault("pushes", []).append(dict(entry))
    files.write_json(path, record)


def push(run_dir: Path, repo_id: str, *, private: bool = True, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, dry_run: bool = False, samples: Path | None = None,
         endpoint: str | None = None, token: str | None = None,
         break_lock: bool = False) -> PushResult:
    """Upload a run's LoRA, configs, record, samples and model card to `repo_id` in one commit.

    The token is `token`, else HF_TOKEN, else the stored login (`hf auth login`). A dry run
    renders everything and sends nothing. Pushing unchanged files makes no new commit. A push
    holds the run folder's lock (locks.py) until it has noted itself in run.json, so a run
    still training, or pushed by another process, is refused.
    """
    def run() -> PushResult:
        return _push(run_dir, repo_id, private=private, license=license,
                     all_checkpoints=all_checkpoints, dry_run=dry_run, samples=samples,
                     endpoint=endpoint, token=token)

    if dry_run:
        locks.ensure_idle(run_dir, "push")
        return run()
    with locks.hold(run_dir, "push", break_lock=break_lock) as lock:
        result = run()
    return result if lock.note is None else replace(result, warnings=(lock.note,
                                                                       *result.warnings))


def _push(run_dir: Path, repo_id: str, *, private: bool, license: str, all_checkpoints: bool,
          dry_run: bool, samples: Path | None, endpoint: str | None,
          token: str | None) -> PushResult:
    repo_id = check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    from huggingface_hub import get_token

    token = token or get_token()
    planned = plan(run_dir, repo_id, license=license, all_checkpoints=all_checkpoints,
                   samples=samples, token=token)
    refuse_findings(planned)
    secrets = planned.secrets
    url = f"{endpoint}/{repo_id}"
    files = tuple((u.path_in_repo, u.size) for u in planned.uploads)
    scanned = sum(size for _, size in files)
    result = PushResult(repo_id, url, files, planned.card, dry_run=dry_run, private=private,
                        warnings=planned.warnings, scanned=scanned)
    if dry_run:
        if not token:
            result = replace(result, warnings=(*planned.warnings,
                                               f"a real push needs a token; {_NO_TOKEN}"))
        return result
    if not token:
        raise UserError(_NO_TOKEN)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    warnings = list(planned.warnings)
    with _hub_errors(repo_id, endpoint, secrets), _default_endpoint(endpoint):
        api = HfApi(endpoint=endpoint, token=token, library_name="medsynth-kohya",
                    library_version=__version__)
        user = str(api.whoami().get("name") or "")
        api.create_repo(repo_id, private=private, exist_ok=True)
        before = api.model_info(repo_id)
        if before.private is not None and bool(before.private) != private:
            warnings.append(f"{repo_id} already exists and is "
                            f"{'private' if before.private else 'public'}; push does not "
                            "change the visibility (do it in the repo's settings on the Hub)")
        wanted = {u.path_in_repo for u in planned.uploads}
        stale = sorted(s.rfilename for s in before.siblings or []
                       if s.rfilename.startswith(MANAGED) and s.rfilename not in wanted)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=u.path_in_repo,
                               path_or_fileobj=u.source if isinstance(u.source, bytes)
                               else str(u.source))
            for u in planned.uploads]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        info = api.create_commit(
            repo_id, operations, commit_message="Push a medsynth-kohya training run",
            commit_description=f"Pushed by medsynth-kohya {__version__}.")
    commit = str(info.oid)
    changed = commit != before.sha
    try:
        _record_push(run_dir, {"repo_id": repo_id, "url": url, "commit": commit,
                               "changed": changed,
                               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    except (OSError, ValueError) as exc:
        warnings.append(f"pushed, but could not note the push in {run_dir / 'run.json'}: {exc}")
    return replace(result, commit=commit, changed=changed,
                   deleted=tuple(stale) if changed else (), user=user or None,
                   warnings=tuple(warnings))

