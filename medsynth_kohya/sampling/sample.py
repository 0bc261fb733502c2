"""`sample`: a synthetic image set from a trained LoRA, through sd-scripts' sdxl_gen_img.py.

Flow: LoRA (run folder or file) + prompt source -> plan (image i: id, prompt, seed S + i) ->
checks -> one prompt file per shard -> one sdxl_gen_img.py per GPU -> images renamed to
OUT/images/<id>.png -> OUT/metadata.csv (ISIC Archive rows) and OUT/grid.jpg. A re-run
with the same settings generates only the images that are missing.

    OUT/images/<id>.png          the set (ids <prefix><7 digits>, from 0)
    OUT/metadata.csv             one row per image file: ISIC Archive fields, then settings
    OUT/grid.jpg                 contact sheet of the first images with their prompts
    OUT/logs/shard-<k>.log       sdxl_gen_img.py's output, appended on every run
    OUT/.medsynth/sample.json    the settings, checked on a re-run, and the last run's record
    OUT/.medsynth/shards/<k>/    the prompt file and output folder of shard k
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import __version__, files, locks
from medsynth_kohya.data import archive, captions, manifest
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.errors import UserError
from medsynth_kohya.files import replacing
from medsynth_kohya.machine.gpus import Gpu, detect_gpus
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sdscripts import checkout, launch, sdopts

if TYPE_CHECKING:
    import pandas as pd

SCRIPT = "sdxl_gen_img"
STATE_DIR = ".medsynth"
STATE_FILE = "sample.json"
IMAGES = "images"
METADATA = "metadata.csv"
GRID = "grid.jpg"
GRID_IMAGES = 16
DEFAULT_PREFIX = "SYN_"
ID_DIGITS = 7
SETTINGS_COLUMNS = ("skin_tone", "prompt", "negative_prompt", "seed", "steps", "scale", "sampler",
                    "width", "height", "lora_file", "lora_sha256", "base_model")
"""metadata.csv's columns after the schema's: the drawn skin tone (ITA category, no ISIC field)
and the generation settings."""
COLUMNS = (*archive.SCHEMA_COLUMNS[MetadataStyle.archive], *SETTINGS_COLUMNS)
"""metadata.csv columns: ISIC Archive fields first (each row a valid Archive `MetadataRow`), so
the rows concatenate to the Archive's own; `--metadata-style 2020` swaps in the challenge's."""
OWNED = {"W": "--width", "H": "--height", "steps": "--steps", "scale": "--scale",
         "sampler": "--sampler", "ckpt": "--base-model", "network_weights": "--lora",
         "seed": "--seed", "outdir": "--out", "from_file": "--prompts", "prompt": "--prompt",
         "sequential_file_name": None, "images_per_prompt": None, "n_iter": None,
         "interactive": None, "use_original_file_name": None, "image_path": None,
         "mask_path": None, "highres_fix_save_1st": None}
"""sdxl_gen_img.py options `sample` sets itself (with the flag to use instead, if any)."""
INHERITED = ("vae", "tokenizer_cache_dir", "clip_skip", "network_args", "no_half_vae", "sdpa",
             "xformers")
"""Training options that generation repeats (same names in both scripts)."""
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PNG = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_MAX_HEADER = 100 * 2**20
Progress = Callable[[int, int], None]
"""Called as (images present, images wanted) while the generators run."""


@dataclass(frozen=True)
class SampleOptions:
    """What decides the images: how many, which prompts, and how they are generated."""

    n: int | None = None
    """Images wanted; default: one per line of `prompts_file`."""
    like: Path | None = None
    prompt: str | None = None
    prompts_file: Path | None = None
    query: str | None = None
    seed: int = 0
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    scale: float | None = None
    sampler: str | None = None
    negative_prompt: str | None = None
    base_model: str | None = None
    overrides: tuple[str, ...] = ()
    num_gpus: int = 1
    id_prefix: str = DEFAULT_PREFIX
    revision: str | None = None
    """Branch, tag or commit of a Hub LoRA (--lora USER/REPO)."""
    metadata_style: MetadataStyle = MetadataStyle.archive


@dataclass(frozen=True)
class Plan:
    """Every image of the set: id, prompt, seed, and the settings they share."""

    n: int
    seed: int
    id_prefix: str
    drawn: prompts.Drawn
    settings: prompts.Settings
    lora: Path
    lora_sha256: str
    base_model: str
    diagnosis: str | None = archive.MELANOMA
    """The training class's ISIC Archive diagnosis path (None: unknown)."""

    def image_id(self, index: int) -> str:
        return f"{self.id_prefix}{index:0{ID_DIGITS}d}"

    def line(self, index: int) -> str:
        return prompts.prompt_line(self.drawn.prompts[index], self.settings, self.seed + index)


@dataclass(frozen=True)
class Shard:
    """One generator process: the images it makes, on which device, and how it ended."""

    index: int
    device: str
    images: tuple[int, ...]
    command: launch.Command
    log: Path
    made: int = 0
    returncode: int | None = None
    interrupted: bool = False
    tail: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return not self.interrupted and self.returncode is not None and (
            self.returncode != 0 or self.made < len(self.images))


@dataclass(frozen=True)
class SampleResult:
    """What `sample` planned, ran and wrote."""

    out: Path
    status: str
    """"dry-run", "succeeded", "failed" or "interrupted"."""
    plan: Plan
    present_before: int
    present: int
    shards: tuple[Shard, ...]
    metadata: Path
    grid: Path | None
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def generated(self) -> int:
        return self.present - self.present_before


# --- inputs --------------------------------------------------------------------------------


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


def _lora_source(lora: Path, options: SampleOptions) -> tuple[
        Path, dict[str, Any] | None, str | None, tuple[str, ...]]:
    """The LoRA file, its run record, and for a Hub LoRA (`USER/REPO[:FILE.safetensors]` that
    is no path here, downloaded) the base model it was trained on and notes saying how."""
    from medsynth_kohya.hub import pull

    if lora.exists() or pull.hub_spec(str(lora)) is None:
        if options.revision:
            raise UserError("--revision is for a LoRA on the Hub (--lora USER/REPO)")
        return (*resolve_lora(lora), None, ())
    pulled = pull.pull_lora(str(lora), revision=options.revision)
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
class _Captions:
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


def _captions(record: Mapping[str, Any] | None, like: Path | None) -> _Captions:
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
            return _Captions(str(options["caption_template"]), str(options["trigger"]),
                             _class_diagnosis(class_name, states), True)
    return _Captions(captions.DEFAULT_TEMPLATE, captions.DEFAULT_TRIGGER,
                     _class_diagnosis("melanoma", states), False)


def _read_prompts_file(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--prompts {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line and not line.startswith("#")]
    if not texts:
        raise UserError(f"--prompts {path} holds no prompts (one per line; # starts a comment)")
    for number, text in enumerate(texts, 1):
        prompts.check_prompt(text, f"prompt {number} of {path}")
    return texts


def _read_manifest(path: Path, query: str | None) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"--like {path} does not exist; give the manifest.csv that "
                        "`medsynth-kohya prepare` wrote")
    try:
        table = manifest.read(path)
    except KeyError as exc:
        raise UserError(f"--like {path} is not a prepare manifest (missing column {exc})"
                        ) from None
    except ValueError as exc:
        raise UserError(f"--like {path} cannot be read as a manifest: {exc}") from None
    if table.empty:
        raise UserError(f"--like {path} has no rows")
    if query:
        try:
            table = table.query(query, engine="python")
        except Exception as exc:
            raise UserError(f"--query {query!r} failed: {exc}") from None
        if table.empty:
            raise UserError(f"--query {query!r} matches no rows of {path}")
    return table


@dataclass(frozen=True)
class _Source:
    drawn: prompts.Drawn
    identity: dict[str, Any]
    warnings: tuple[str, ...] = ()


def _prompt_source(options: SampleOptions, n: int | None, record: Mapping[str, Any] | None,
                   names: _Captions) -> tuple[_Source, int]:
    """The prompts of images 0..n-1 and what identifies them (checked on a re-run)."""
    given = [x is not None for x in (options.like, options.prompt, options.prompts_file)]
    if sum(given) > 1:
        raise UserError("give one of --like, --prompt and --prompts")
    if options.query and (options.prompt is not None or options.prompts_file is not None):
        raise UserError("--query filters the rows of --like; it does not apply to --prompt(s)")
    if options.prompt is not None or options.prompts_file is not None:
        if options.prompt is not None:
            prompts.check_prompt(options.prompt, "--prompt")
            texts = [options.prompt]
        else:
            assert options.prompts_file is not None
            texts = _read_prompts_file(options.prompts_file)
        count = n if n is not None else len(texts)
        warnings = []
        if names.known and not any(names.trigger in text for text in texts):
            warnings.append(f"the prompts do not mention the trigger {names.trigger!r} the "
                            "LoRA was trained with")
        identity: dict[str, Any] = {"kind": "prompts", "sha256": hashlib.sha256(
            "\n".join(texts).encode("utf-8")).hexdigest()}
        return _Source(prompts.repeat(texts, count), identity, tuple(warnings)), count
    like = options.like
    if like is None:
        prepared = (record or {}).get("dataset", {}).get("prepared")
        if not prepared:
            raise UserError("give --like OUT/manifest.csv (or --prompt / --prompts): the LoRA "
                            "has no train run record naming its prepared data")
        like = Path(str(prepared)) / "manifest.csv"
    if n is None:
        raise UserError("give --n, the number of images to generate")
    table = _read_manifest(like, options.query)
    drawn = prompts.draw(table, n, options.seed, names.template, names.trigger)
    identity = {"kind": "like", "manifest_sha256": files.sha256(like),
                "query": options.query, "template": names.template, "trigger": names.trigger}
    return _Source(drawn, identity), n


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` for sdxl_gen_img.py: TOML values (else text); empty removes the key;
    a single value for a many-valued option becomes a one-item list."""
    import toml

    options = sdopts.load(SCRIPT)
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--set {item!r} must look like key=value, e.g. --set "
                            "network_mul=0.8")
        if key in OWNED:
            instead = OWNED[key]
            raise UserError(f"--set {key} is decided by sample" + (
                f"; use {instead}" if instead else " (it numbers and names the images)"))
        if not text:
            parsed[key] = None
            continue
        try:
            value: Any = toml.loads(f"value = {text}")["value"]
        except toml.TomlDecodeError:
            value = text
        option = options.get(key)
        if option is not None and option.nargs in ("*", "+") and not isinstance(value, list):
            value = [value]
        parsed[key] = value
    return parsed


def _gen_options(record: Mapping[str, Any] | None, base_model: str, lora: Path,
                 settings: prompts.Settings, overrides: Mapping[str, Any], sd_dir: Path,
                 on_gpu: bool) -> dict[str, Any]:
    """sdxl_gen_img.py's options, shared by every shard (prompt file and outdir added later).

    Attention, VAE, tokenizers, clip skip, network args and prompt length (max_token_length
    225 -> 3 x 75 tokens) repeat the training run's; so does fp16/bf16, on a GPU only.
    """
    config: Mapping[str, Any] = (record or {}).get("config", {})
    options: dict[str, Any] = {"ckpt": base_model}
    for key in INHERITED:
        value = config.get(key)
        if value is None or value is False or value == []:
            continue
        if key in ("vae", "tokenizer_cache_dir") and isinstance(value, str):
            value = checkout.local_path(value, sd_dir)
        elif key == "network_args" and isinstance(value, list):
            value = [";".join(str(item) for item in value)]  # one "k=v;k=v" entry per network
        options[key] = value
    tokens = config.get("max_token_length")
    if isinstance(tokens, int) and tokens > 75:  # prompts as long as training read them
        options["max_embeddings_multiples"] = tokens // 75
    precision = config.get("mixed_precision")
    if precision in ("fp16", "bf16") and on_gpu:
        options[precision] = True
    if not options.get("xformers") and not options.get("sdpa"):
        options["sdpa"] = True
    network = config.get("network_module") or "networks.lora"
    options.update({"network_module": [str(network)], "network_weights": [str(lora.resolve())],
                    "network_mul": [1.0], "sequential_file_name": True,
                    "W": settings.width, "H": settings.height, "steps": settings.steps,
                    "scale": float(settings.scale), "sampler": settings.sampler,
                    "images_per_prompt": 1, "batch_size": 1})
    for key, value in overrides.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = value
    return options


def _base_model(given: str | None, record: Mapping[str, Any] | None, sd_dir: Path) -> str:
    if given:
        value = given
    else:
        value = str((record or {}).get("config", {}).get("pretrained_model_name_or_path") or "")
        if not value:
            raise UserError("give --base-model (a .safetensors checkpoint or a Hub id): the "
                            "LoRA has no train run record naming its base model")
    resolved = checkout.local_path(value, sd_dir)
    looks_local = value.endswith((".safetensors", ".ckpt")) or value.startswith((".", "/", "~"))
    if looks_local and not Path(resolved).exists() and not (sd_dir / value).exists():
        raise UserError(f"base model {value} is not a file (relative paths start here or at "
                        f"{sd_dir}); pass --base-model")
    return resolved


def _devices(num_gpus: int, gpus: Sequence[Gpu]) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each shard: the entries already visible, else 0..N-1."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if d.strip()]
    if num_gpus > 1:
        if not gpus:
            raise UserError(f"--num-gpus {num_gpus}: no NVIDIA GPU found (nvidia-smi)")
        if len(gpus) < num_gpus:
            raise UserError(f"--num-gpus {num_gpus}: nvidia-smi lists only {len(gpus)} GPU(s)")
        if visible and len(visible) < num_gpus:
            raise UserError(f"--num-gpus {num_gpus}: CUDA_VISIBLE_DEVICES="
                            f"{os.environ['CUDA_VISIBLE_DEVICES']} shows fewer GPUs")
    return (visible or [str(k) for k in range(num_gpus)])[:num_gpus]


# --- the output folder ---------------------------------------------------------------------


def _claim(out: Path, identity: Mapping[str, Any], n: int, prefix: str, force: bool) -> bool:
    """Refuse an OUT that holds something else, or a set made with other settings.

    True when OUT holds a set made with these settings (its unfinished shards may be kept).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    state = out / STATE_DIR / STATE_FILE
    if state.is_file():
        record = json.loads(state.read_text(encoding="utf-8"))
        before = record.get("identity", {})
        existing = present_images(out / IMAGES, str(before.get("id_prefix", prefix)))
        changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        if changed and existing:
            raise UserError(f"{out} holds {len(existing)} images made with other settings "
                            f"({', '.join(changed)} differ); use another --out, or delete it")
        beyond = [i for i in existing if i >= n]
        if beyond and not changed:
            raise UserError(f"{out} already holds {max(beyond) + 1} images; --n {n} would "
                            f"leave some out of metadata.csv (use --n {max(beyond) + 1} or more)")
        return not changed
    if out.is_dir() and locks.foreign_entries(out) and not force:
        raise UserError(f"--out {out} is not empty and was not made by medsynth-kohya sample; "
                        "choose an empty folder or pass --force to write into it")
    return False


def present_images(folder: Path, prefix: str) -> list[int]:
    """Indices of the images in `folder` named `<prefix><digits>.png`, sorted."""
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}(\d{{{ID_DIGITS},}})\.png$")
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match:
                found.append(int(match.group(1)))
    return sorted(found)


def _complete_png(path: Path) -> bool:
    """Whether `path` is a PNG written to the end (a killed writer leaves no IEND chunk)."""
    try:
        with path.open("rb") as file:
            if file.read(8) != _PNG:
                return False
            file.seek(-len(_IEND), os.SEEK_END)
            return file.read() == _IEND
    except OSError:
        return False


def generated_name(position: int, highres: bool) -> str:
    """What sdxl_gen_img.py --sequential_file_name calls the image of its prompt line
    `position` (from 1): `im_000001.png`, with a `1` before the number under highres fix."""
    return f"im_{'1' if highres else ''}{position:06d}.png"


def _harvest(out: Path) -> int:
    """Move every finished image of earlier or current shards to images/<id>.png."""
    shards = out / STATE_DIR / "shards"
    if not shards.is_dir():
        return 0
    images = out / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    moved = 0
    for folder in sorted(p for p in shards.iterdir() if p.is_dir()):
        try:
            spec = json.loads((folder / "shard.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for position, image_id in enumerate(spec["ids"], 1):
            made = folder / "out" / generated_name(position, bool(spec.get("highres")))
            target = images / f"{image_id}.png"
            if made.is_file() and not target.exists() and _complete_png(made):
                made.replace(target)
                moved += 1
    return moved


def _clear_shards(out: Path) -> None:
    """Remove the previous shards' files (after their images were harvested)."""
    shards = out / STATE_DIR / "shards"
    if not shards.is_dir():
        return
    for folder in shards.iterdir():
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
        folder.rmdir()


def write_shard_files(plan: Plan, folder: Path, indices: Sequence[int], highres: bool) -> Path:
    """The prompt file of one shard (one line per image, in order) and its id list."""
    (folder / "out").mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.txt"
    path.write_text("\n".join(plan.line(i) for i in indices) + "\n", encoding="utf-8")
    spec = {"ids": [plan.image_id(i) for i in indices], "highres": highres}
    (folder / "shard.json").write_text(json.dumps(spec), encoding="utf-8")
    return path


def split(indices: Sequence[int], parts: int) -> list[list[int]]:
    """`indices` in `parts` contiguous runs of near-equal length (empty runs dropped)."""
    size, extra = divmod(len(indices), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        if end > start:
            runs.append(list(indices[start:end]))
        start = end
    return runs


# --- metadata and grid ---------------------------------------------------------------------


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_metadata(plan: Plan, present: Sequence[int], path: Path,
                   style: MetadataStyle = MetadataStyle.archive) -> None:
    """metadata.csv for the images `present` (indices), in id order, written atomically:
    the schema of `style` (each distinct row checked once), then the generation settings;
    blank for a missing value, true/false for booleans."""
    import csv

    drawn, settings = plan.drawn, plan.settings
    shared = (settings.negative_prompt, settings.steps, float(settings.scale), settings.sampler,
              settings.width, settings.height, plan.lora.name, plan.lora_sha256, plan.base_model)
    cells: dict[tuple[str | None, int | None, str | None, bool | None], tuple[object, ...]] = {}

    def schema(i: int) -> tuple[object, ...]:
        key = (drawn.sex[i], drawn.age[i], drawn.site[i], drawn.hairy[i])
        found = cells.get(key)
        if found is None:
            found = cells[key] = tuple(_cell(value) for value in archive.synthetic_cells(
                style, plan.diagnosis, *key))
        return found

    with replacing(path) as temporary, temporary.open("w", encoding="utf-8",
                                                          newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow((*archive.SCHEMA_COLUMNS[style], *SETTINGS_COLUMNS))
        writer.writerows((plan.image_id(i), *schema(i), _cell(drawn.skin_tone[i]),
                          drawn.prompts[i], shared[0], plan.seed + i, *shared[1:])
                         for i in sorted(present))


def _wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Words in lines that each `fits`; a word too long for a line is cut."""
    lines: list[str] = []
    for word in text.split():
        if lines and fits(lines[-1] + " " + word):
            lines[-1] += " " + word
            continue
        while not fits(word) and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and not fits(word[:cut]):
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines


def write_grid(plan: Plan, images: Path, present: Sequence[int], path: Path,
               count: int = GRID_IMAGES, tile: int = 256) -> Path | None:
    """A contact sheet of the first `count` images with their ids and prompts (JPEG)."""
    import cv2
    import numpy as np

    chosen = sorted(present)[:count]
    if not chosen:
        path.unlink(missing_ok=True)
        return None
    columns = min(4, len(chosen))
    rows = -(-len(chosen) // columns)
    text_lines, line_height = 5, 14
    cell_height = tile + text_lines * line_height + 6
    sheet = np.full((rows * cell_height, columns * tile, 3), 255, dtype=np.uint8)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.35

    def fits(line: str) -> bool:
        return int(cv2.getTextSize(line, font, size, 1)[0][0]) <= tile - 8

    for slot, index in enumerate(chosen):
        top, left = (slot // columns) * cell_height, (slot % columns) * tile
        image = cv2.imread(str(images / f"{plan.image_id(index)}.png"), cv2.IMREAD_COLOR)
        if image is None:
            image = np.full((tile, tile, 3), 200, dtype=np.uint8)
        sheet[top:top + tile, left:left + tile] = cv2.resize(image, (tile, tile),
                                                             interpolation=cv2.INTER_AREA)
        caption = plan.drawn.prompts[index].encode("ascii", "replace").decode("ascii")
        lines = [plan.image_id(index), *_wrap(caption, fits)]
        if len(lines) > text_lines:
            last = lines[text_lines - 1]
            while last and not fits(last + "..."):
                last = last[:-1]
            lines = [*lines[:text_lines - 1], last + "..."]
        for number, line in enumerate(lines):
            cv2.putText(sheet, line, (left + 4, top + tile + 12 + number * line_height), font,
                        size, (0, 0, 0), 1, cv2.LINE_AA)
    with replacing(path) as temporary:
        if not cv2.imwrite(str(temporary), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise UserError(f"cannot write {path}")
    return path


# --- the command ---------------------------------------------------------------------------


def _check_options(options: SampleOptions) -> None:
    if options.n is not None and options.n < 1:
        raise UserError(f"--n must be at least 1 (got {options.n})")
    if options.num_gpus < 1:
        raise UserError(f"--num-gpus must be at least 1 (got {options.num_gpus})")
    if not _PREFIX.match(options.id_prefix):
        raise UserError(f"--id-prefix {options.id_prefix!r} must be letters, digits, '_' or '-'")
    if options.sampler is not None:
        choices = sdopts.load(SCRIPT)["sampler"].choices or ()
        if options.sampler not in choices:
            raise UserError(f"unknown sampler {options.sampler!r}; choose one of: "
                            f"{', '.join(map(str, choices))}")


def _settings(options: SampleOptions) -> prompts.Settings:
    original = prompts.original_settings()
    settings = prompts.Settings(
        negative_prompt=original.negative_prompt if options.negative_prompt is None
        else options.negative_prompt,
        width=options.width or original.width, height=options.height or original.height,
        steps=original.steps if options.steps is None else options.steps,
        scale=original.scale if options.scale is None else options.scale,
        sampler=options.sampler or original.sampler)
    prompts.check_settings(settings)
    return settings


def _preflight(location: checkout.Location, python: str, out: Path, gpus: Sequence[Gpu],
               gen: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Problems that refuse a launch (warnings in a dry run), and warnings."""
    from medsynth_kohya.machine import doctor

    problems: list[str] = []
    if not checkout.present(location.path, launch.GEN_SCRIPT):
        problems.append(f"sd-scripts not found at {location.path} (no {launch.GEN_SCRIPT}): "
                        f"{checkout.missing_fix(location)}")
        return problems, []
    needs = ["xformers"] if gen.get("xformers") else []
    report = doctor.diagnose(sd_scripts=location, python=python, workdir=out, gpus=gpus,
                             device="cuda" if gpus else "cpu", needs=needs, hub=False)
    problems += [f"{c.name}: {c.detail}; {c.fix}" for c in report.failures()]
    unrelated = {"bitsandbytes", "accelerate config"} | ({"xformers"} - set(needs))
    warnings = [f"{c.name}: {c.detail}; {c.fix}" for c in report.checks
                if c.status == doctor.WARN and c.name not in unrelated]
    if not gpus:
        warnings.append("no NVIDIA GPU found: generating on the CPU (minutes per image)")
    return problems, warnings


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sample(lora: Path, out: Path, options: SampleOptions | None = None, *,
           sd_scripts: Path | None = None, python: str | None = None, dry_run: bool = False,
           force: bool = False, break_lock: bool = False,
           detect: Callable[[], list[Gpu]] = detect_gpus,
           on_progress: Progress | None = None) -> SampleResult:
    """Generate (or, with `dry_run`, plan and show) the synthetic set in `out`, holding its
    lock (locks.py) throughout; a run still training is refused."""
    run_dir = lora if lora.is_dir() else lora.parent.parent
    if (run_dir / "run.json").is_file():
        locks.ensure_idle(run_dir, "sample")
    with locks.hold(out, "sample", break_lock=break_lock) as lock:
        result = _sample(lora, out, options or SampleOptions(), sd_scripts, python, dry_run,
                         force, detect, on_progress)
    return result if lock.note is None else replace(result, warnings=(lock.note,
                                                                       *result.warnings))


def _sample(lora: Path, out: Path, options: SampleOptions, sd_scripts: Path | None,
            python: str | None, dry_run: bool, force: bool, detect: Callable[[], list[Gpu]],
            on_progress: Progress | None) -> SampleResult:
    _check_options(options)
    settings = _settings(options)
    overrides = parse_overrides(options.overrides)
    lora_file, record, pulled_base, notes = _lora_source(lora, options)
    options = replace(options, base_model=options.base_model or pulled_base)
    check_lora(lora_file)
    names = _captions(record, options.like)
    source, n = _prompt_source(options, options.n, record, names)
    if options.seed < 0 or options.seed + n - 1 > prompts.MAX_SEED:
        raise UserError(f"--seed must be between 0 and {prompts.MAX_SEED - n + 1} for "
                        f"{n} images (seeds run from S to S + n - 1)")
    location = checkout.find(sd_scripts)
    sd_dir = location.path
    base_model = _base_model(options.base_model, record, sd_dir)
    gpus = detect()
    devices = _devices(options.num_gpus, gpus)
    gen = _gen_options(record, base_model, lora_file, settings, overrides, sd_dir, bool(gpus))
    errors = sdopts.check(SCRIPT, gen)
    if errors:
        raise UserError("\n".join(errors))
    runner = checkout.python(python)

    digest = files.sha256(lora_file)
    identity = {**source.identity, "seed": options.seed, "id_prefix": options.id_prefix,
                **asdict(settings), "base_model": base_model, "lora_sha256": digest,
                "generator": {k: v for k, v in gen.items() if k != "network_weights"}}
    same = _claim(out, identity, n, options.id_prefix, force)
    plan = Plan(n=n, seed=options.seed, id_prefix=options.id_prefix, drawn=source.drawn,
                settings=settings, lora=lora_file, lora_sha256=digest, base_model=base_model,
                diagnosis=names.diagnosis)
    problems, warnings = _preflight(location, runner, out, gpus, gen)
    warnings = [*notes, *source.warnings, *warnings]
    if names.diagnosis is None:
        warnings.append("the training class has no single ISIC Archive diagnosis (prepare "
                        "found none its images share): metadata.csv leaves it blank")
    if not names.known and source.identity["kind"] == "like":
        warnings.append(f"no train run or prepared folder found: prompts use prepare's default "
                        f"template and trigger {names.trigger!r}")
    if problems and not dry_run:
        raise UserError("\n".join(problems))

    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_DIR / STATE_FILE
    state: dict[str, Any] = {"tool": "medsynth-kohya", "command": "sample",
                             "version": __version__, "identity": identity, "n": n,
                             "lora": str(lora_file.resolve()), "status": "planned"}
    files.write_json(state_path, state)
    if same:
        _harvest(out)
    _clear_shards(out)
    wanted = set(range(n))
    present_before = [i for i in present_images(out / IMAGES, plan.id_prefix) if i in wanted]
    missing = sorted(wanted - set(present_before))
    highres = gen.get("highres_fix_scale") is not None
    shards = []
    for k, indices in enumerate(split(missing, len(devices))):
        folder = out / STATE_DIR / "shards" / str(k)
        prompts_file = write_shard_files(plan, folder, indices, highres)
        command = launch.gen_command(runner, sd_dir.resolve(), {
            **gen, "from_file": str(prompts_file.resolve()),
            "outdir": str((folder / "out").resolve())}, device=devices[k])
        shards.append(Shard(k, devices[k], tuple(indices), command,
                            out / "logs" / f"shard-{k}.log"))
    state.update(commands=[s.command.argv for s in shards], cwd=str(sd_dir.resolve()))
    result = SampleResult(out, "dry-run", plan, len(present_before), len(present_before),
                          tuple(shards), out / METADATA, None, warnings=tuple(warnings + problems))
    if dry_run:
        state["status"] = "dry-run"
        files.write_json(state_path, state)
        return result

    outcomes: list[launch.RunOutcome] = []
    if shards:
        state.update(status="running", start=_now())
        files.write_json(state_path, state)
        outcomes = launch.run_many([s.command for s in shards], [s.log for s in shards],
                                   on_line=_counter(out, plan, len(present_before), on_progress))
    _harvest(out)
    present = [i for i in present_images(out / IMAGES, plan.id_prefix) if i in wanted]
    done = set(present)
    finished = tuple(replace(s, made=sum(1 for i in s.images if i in done),
                             returncode=o.returncode, interrupted=o.interrupted,
                             tail=tuple(o.tail)) for s, o in zip(shards, outcomes, strict=True))
    if on_progress is not None:
        on_progress(len(present), n)
    write_metadata(plan, present, out / METADATA, options.metadata_style)
    grid = write_grid(plan, out / IMAGES, present, out / GRID)
    if any(s.interrupted for s in finished):
        status, message = "interrupted", "stopped; re-run the same command to make the rest"
    elif any(s.failed for s in finished):
        bad = [s for s in finished if s.failed]
        status = "failed"
        message = "; ".join(f"shard {s.index} (GPU {s.device}) exited with {s.returncode} "
                            f"after {s.made}/{len(s.images)} images (log: {s.log})" for s in bad)
    else:
        status = "succeeded"
        message = (f"{len(present)} images in {out / IMAGES}" if shards else
                   f"all {n} images were already there")
    state.update(status=status, end=_now(), message=message, present=len(present),
                 shards=[{"index": s.index, "device": s.device, "images": len(s.images),
                          "made": s.made, "returncode": s.returncode,
                          "interrupted": s.interrupted, "log": str(s.log)} for s in finished])
    files.write_json(state_path, state)
    return replace(result, status=status, present=len(present), shards=finished, grid=grid,
                   message=message, warnings=tuple(warnings))


def _counter(out: Path, plan: Plan, before: int,
             on_progress: Progress | None) -> Callable[[int, str], None] | None:
    """A line hook that reports images made so far, counting files at most twice a second."""
    if on_progress is None:
        return None
    shards = out / STATE_DIR / "shards"
    last = [0.0]
    on_progress(before, plan.n)

    def count(_shard: int, _line: str) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        made = sum(len(list((folder / "out").glob("im_*.png"))) for folder in shards.iterdir()
                   if folder.is_dir())
        assert on_progress is not None
        on_progress(min(before + made, plan.n), plan.n)

    return count
