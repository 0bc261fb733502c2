"""What `sample` makes: its options, and the plan of image i (id, prompt, seed S + i).

Prompts come from --prompt, --prompts FILE or --like MANIFEST (drawn with the training
captions' template); what identifies them is checked on a re-run.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.data import archive, manifest
from medsynth_kohya.data import query as data_query
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.errors import UserError
from medsynth_kohya.outputs import LOCAL
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.generator import SCRIPT
from medsynth_kohya.sampling.lora import Captions
from medsynth_kohya.sdscripts import sdopts
from medsynth_kohya.training.record import RunRecord, run_instead

if TYPE_CHECKING:

    import pandas as pd

    from medsynth_kohya.hub.pull import HubOrigin

DEFAULT_PREFIX = "SYN_"
ID_DIGITS = 7
MAX_IMAGES = 10**ID_DIGITS
"""The most images a set can have: ids hold 7 digits, and the plan keeps each image's prompt
and manifest values in memory (about 2 GB at this many; a GPU makes far fewer in a year)."""
SHOWN_PROMPTS = 3
"""How many prompts without the trigger its warning quotes."""
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def image_id(prefix: str, index: int) -> str:
    """The id (and file stem) of image `index` of a set whose ids start with `prefix`."""
    return f"{prefix}{index:0{ID_DIGITS}d}"


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

    def __post_init__(self) -> None:
        arguments.check_fields(self)


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
    """As metadata.csv records it: a Hub id, or `<local>/NAME` for a local checkpoint."""
    diagnosis: str | None = archive.MELANOMA
    """The training class's ISIC Archive diagnosis path (None: unknown)."""
    lora_hub: HubOrigin | None = None
    """For a LoRA from the Hub: its repository, commit and path there (metadata.csv's
    lora_repo, lora_commit and lora_file)."""

    @property
    def lora_shown(self) -> str:
        """The LoRA as summaries show it: its file, or `USER/REPO at COMMIT` for one from the
        Hub (not the cache path), with the start of its sha256."""
        digest, hub = f"sha256 {self.lora_sha256[:12]}…", self.lora_hub
        return (f"{self.lora} ({digest})" if hub is None
                else f"{hub.repo_id} at {hub.commit[:12]} ({hub.path}, {digest})")

    def image_id(self, index: int) -> str:
        return image_id(self.id_prefix, index)

    def image_ids(self, indices: Sequence[int], shown: int = 3) -> str:
        """`indices` (ascending) as their ids, each unbroken run as `first..last`: a re-run that
        fills gaps reads "SYN_0000001, SYN_0000004", never a range holding images it keeps.
        Past `shown` runs, how many more."""
        runs: list[list[int]] = []
        for index in indices:
            if runs and index == runs[-1][1] + 1:
                runs[-1][1] = index
            else:
                runs.append([index, index])
        said = [self.image_id(first) if first == last else
                f"{self.image_id(first)}..{self.image_id(last)}" for first, last in runs[:shown]]
        more = len(runs) - shown
        return ", ".join(said) + (f" and {more} more" if more > 0 else "")

    def line(self, index: int) -> str:
        return prompts.prompt_line(self.drawn.prompts[index], self.settings, self.seed + index)


def check_options(options: SampleOptions) -> None:
    """Refuse options that are wrong whatever the LoRA and prompts: before anything is read."""
    if options.n is not None and not 1 <= options.n <= MAX_IMAGES:
        raise UserError(f"--n must be 1 to {MAX_IMAGES:,} (got {options.n:,})")
    arguments.check_seed(options.seed)
    if options.base_model is not None and not options.base_model.strip():
        raise UserError("--base-model is empty: give a .safetensors checkpoint or a Hub id, or "
                        "leave it out for the run's base model")
    if options.num_gpus < 1:
        raise UserError(f"--num-gpus must be at least 1 (got {options.num_gpus})")
    if not _PREFIX.fullmatch(options.id_prefix):
        raise UserError(f"--id-prefix {options.id_prefix!r} must be letters, digits, '_' or '-'")
    if options.sampler is not None:
        choices = sdopts.load(SCRIPT)["sampler"].choices or ()
        if options.sampler not in choices:
            raise UserError(f"unknown sampler {options.sampler!r}; choose one of: "
                            f"{', '.join(map(str, choices))}")


def generation_settings(options: SampleOptions) -> prompts.Settings:
    original = prompts.original_settings()
    settings = prompts.Settings(
        negative_prompt=original.negative_prompt if options.negative_prompt is None
        else options.negative_prompt,
        width=original.width if options.width is None else options.width,
        height=original.height if options.height is None else options.height,
        steps=original.steps if options.steps is None else options.steps,
        scale=original.scale if options.scale is None else options.scale,
        sampler=options.sampler or original.sampler)
    prompts.check_settings(settings)
    return settings


def _prompts_text(path: Path) -> tuple[str, tuple[str, ...]]:
    """The text of a --prompts file and a note when it is not UTF-8: read as Windows' cp1252
    (else Latin-1), as prepare reads a metadata CSV; what no text file is, is refused."""
    if path.is_dir():
        raise UserError(f"--prompts {path} is a folder; give a text file with one prompt per "
                        "line")
    try:
        data = path.read_bytes()  # not only a regular file: a pipe such as <(…) too
    except FileNotFoundError:
        raise UserError(f"--prompts {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read --prompts {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise UserError(f"--prompts {path} is empty; give a text file with one prompt per line")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), ()
    if b"\0" in data:
        raise UserError(f"--prompts {path} is not a text file (it holds binary data); give a "
                        "text file with one prompt per line")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        break
    else:  # bytes cp1252 leaves undefined
        encoding, text = "latin-1", data.decode("latin-1")
    return text, () if encoding == "utf-8-sig" else (
        f"--prompts {path} is not UTF-8: read as {encoding}; check that accented words came "
        "out right, or save it as UTF-8",)


def _read_prompts_file(path: Path) -> tuple[list[str], tuple[str, ...]]:
    """The prompts of a --prompts file, one per line (# starts a comment), and notes."""
    text, notes = _prompts_text(path)
    lines = [line.strip() for line in text.splitlines()]
    texts = [line for line in lines if line and not line.startswith("#")]
    if not texts:
        raise UserError(f"--prompts {path} holds no prompts (one per line; # starts a comment)")
    for number, prompt in enumerate(texts, 1):
        prompts.check_prompt(prompt, f"prompt {number} of {path}")
    return texts, notes


def _without_trigger(texts: list[str], trigger: str, path: Path | None) -> list[str]:
    """A warning when prompts lack the trigger the LoRA was trained with (its look comes with
    the trigger): all of them, or how many of a --prompts file's and the first few."""
    missing = [(number, text) for number, text in enumerate(texts, 1) if trigger not in text]
    trained = f"the trigger {trigger!r} the LoRA was trained with"
    if len(missing) == len(texts):
        return [f"the prompts do not mention {trained}"]
    if not missing:
        return []
    shown = ", ".join(f"prompt {number} {text!r}" for number, text in missing[:SHOWN_PROMPTS])
    more = (f" and {len(missing) - SHOWN_PROMPTS} more" if len(missing) > SHOWN_PROMPTS
            else "")
    source = f" of {path}" if path is not None else ""
    return [f"{len(missing)} of {len(texts)} prompts{source} do not mention {trained}: "
            f"{shown}{more}; write it into each prompt that should look like the training "
            "images"]


def _read_manifest(path: Path, query: str | None, break_lock: bool,
                   record: RunRecord | None) -> tuple[pd.DataFrame, str, list[str]]:
    """The rows of a --like manifest that --query selects, the sha256 of the file as read, and
    warnings; each value one prepare writes and, when the manifest the LoRA's run trained on
    is here, one it was trained on (ages beyond its range: a warning); refused while a prepare
    still writes its folder."""
    locks.ensure_idle(path.parent, "sample", writers=("prepare",), break_lock=break_lock)
    if not path.is_file():
        if path == PreparedFolder(path.parent).manifest and path.parent.is_dir():
            instead = run_instead(path.parent)
            if instead is not None:
                raise UserError(instead)
            PreparedFolder(path.parent).state()  # refuses a folder prepare did not write
        raise UserError(f"--like {path} does not exist; give the manifest.csv that "
                        "`medsynth-kohya prepare` wrote")
    table, digest = manifest.read_hashed(path)
    if table.empty:
        raise UserError(f"--like {path} has no rows")
    if query:
        chosen = table[data_query.evaluate(table, query, example=manifest.QUERY_EXAMPLE)]
        if chosen.empty:
            raise UserError(f"--query {query!r} matches no rows of {path}"
                            f"{_values_named(table, query)}")
        table = chosen
    problem = manifest.value_problem(table)
    if problem:
        raise UserError(f"--like {path}: {problem}; correct it, or leave such rows out with "
                        "--query")
    prepared = record.prepared if record else None
    training = PreparedFolder(prepared).manifest if prepared else None
    if record is None or training is None or not training.is_file():
        return table, digest, []
    if training.samefile(path):
        return table, digest, ([] if not record.prepared_again(digest) else [
            f"the prompts are drawn from {path}, but {prepared} was prepared again since the "
            "LoRA was trained on it (manifest changed), so their sex, age and site mix is not "
            "the training data's: give --like a manifest of the data it was trained on, or "
            "train again"])
    trained, trained_digest = manifest.read_hashed(training)
    if record.prepared_again(trained_digest):
        return table, digest, [
            f"--like {path} was not checked against the data the LoRA was trained on: "
            f"{prepared} was prepared again since (manifest changed), so the prompts may ask "
            "for a sex, site or skin tone the LoRA never saw"]
    return table, digest, _check_trained_on(table, path, trained, training)


def _listed(values: pd.Series) -> str:
    """A column's distinct values for a message: the range of numbers, else the first 20."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    present = values.dropna()
    if present.empty:
        return "none"
    if is_numeric_dtype(present) and not is_bool_dtype(present):
        return f"{present.min()} to {present.max()}"
    names = sorted({str(value) for value in present})
    return ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def _values_named(table: pd.DataFrame, query: str) -> str:
    """'; its COLUMN values: ...' for each manifest column the query names ('' if none)."""
    import io
    import tokenize

    try:
        names = {token.string for token in tokenize.generate_tokens(io.StringIO(query).readline)
                 if token.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return ""
    return "".join(f"; its {column} values: {_listed(table[column])}"
                   for column in table.columns if column in names)


def _check_trained_on(table: pd.DataFrame, path: Path, trained: pd.DataFrame,
                      training: Path) -> list[str]:
    """Refuse --like rows whose sex, site or skin tone never occurs in the LoRA's training
    manifest: it never learned them, and the set's prompts and metadata would claim them. Ages
    beyond the trained ones are a warning: the LoRA saw none so young or so old."""
    for column in manifest.vocabularies():
        known = set(trained[column].dropna())
        unseen = sorted(set(table[column].dropna()) - known)
        if unseen:
            raise UserError(f"--like {path}: {column} {unseen[0]!r} never occurs in the data "
                            f"the LoRA was trained on ({training}; its {column} values: "
                            f"{_listed(trained[column])}); leave such rows out with --query")
    ages, seen = table["age"].dropna(), trained["age"].dropna()
    if seen.empty:
        return []
    low, high = int(seen.min()), int(seen.max())
    beyond = ages[(ages < low) | (ages > high)]
    if beyond.empty:
        return []
    return [f"--like {path}: {len(beyond)} of {files.counted(len(table), 'row')} have ages outside "
            f"{low}-{high}, "
            f"those the LoRA was trained on (first: {int(beyond.iloc[0])}), so it may not "
            f"follow them; leave them out with --query 'age >= {low} and age <= {high}'"]


@dataclass(frozen=True)
class Source:
    drawn: prompts.Drawn
    identity: dict[str, Any]
    warnings: tuple[str, ...] = ()


def like_manifest(like: Path | None) -> Path | None:
    """--like as a manifest: a folder (the --out of `prepare`) stands for its manifest.csv."""
    return PreparedFolder(like).manifest if like is not None and like.is_dir() else like


def _unknown_prepared(prepared: Path) -> str:
    """Why the prepared folder a run record names cannot give the prompts, and what to give."""
    instead = ("give --like PREPARED (the `prepare` output it was trained on, or data "
               "prepared here like it) or --prompt / --prompts")
    if prepared.parts and prepared.parts[0] == LOCAL:  # as push publishes a local path
        return (f"the folder the LoRA was trained on is not known: its published run record "
                f"hides local paths ({prepared}); {instead}")
    if prepared.is_dir():  # there, but its manifest deleted or moved
        return (f"the LoRA was trained on {prepared}, which has no "
                f"{PreparedFolder(prepared).manifest.name} any more: run the prepare command "
                f"that made it again to rewrite it, or {instead}")
    return f"the LoRA was trained on {prepared}, which is not on this machine: {instead}"


def prompt_source(options: SampleOptions, n: int | None, record: RunRecord | None,
                  names: Captions, *, break_lock: bool = False) -> tuple[Source, int]:
    """The prompts of images 0..n-1 and what identifies them (checked on a re-run);
    `break_lock` (the command's --break-lock) passes a prepare of the --like folder that
    another machine's lock names."""
    given = [x is not None for x in (options.like, options.prompt, options.prompts_file)]
    if sum(given) > 1:
        raise UserError("give one of --like, --prompt and --prompts")
    if options.query and (options.prompt is not None or options.prompts_file is not None):
        raise UserError("--query filters the rows of --like; it does not apply to --prompt(s)")
    if options.prompt is not None or options.prompts_file is not None:
        notes: tuple[str, ...] = ()
        if options.prompt is not None:
            if not options.prompt.strip():
                raise UserError(f"--prompt {options.prompt!r} is empty: give the text to "
                                "generate from, or leave --prompt out to draw the prompts "
                                "from the run's training captions (with --n N)")
            prompts.check_prompt(options.prompt, "--prompt")
            texts = [options.prompt]
        else:
            assert options.prompts_file is not None
            texts, notes = _read_prompts_file(options.prompts_file)
        count = n if n is not None else len(texts)
        warnings = list(notes)
        if names.known:
            warnings += _without_trigger(texts, names.trigger, options.prompts_file)
        identity: dict[str, Any] = {"kind": "prompts", "sha256": hashlib.sha256(
            "\n".join(texts).encode("utf-8")).hexdigest()}
        return Source(prompts.repeat(texts, count), identity, tuple(warnings)), count
    like = options.like
    if like is None:
        prepared = record.prepared if record else None
        if prepared is None:
            raise UserError("give --like OUT/manifest.csv (or --prompt / --prompts): the LoRA "
                            "has no train run record naming its prepared data")
        like = PreparedFolder(prepared).manifest
        locks.ensure_idle(like.parent, "sample", writers=("prepare",), break_lock=break_lock)
        if not like.is_file():
            raise UserError(_unknown_prepared(prepared))
    if n is None:
        raise UserError("give --n N, the number of images to generate (or --prompts FILE for "
                        "one image per line of it)")
    table, digest, warnings = _read_manifest(like, options.query, break_lock, record)
    drawn = prompts.draw(table, n, options.seed, names.template, names.trigger)
    identity = {"kind": "like", "manifest_sha256": digest,
                "query": options.query, "template": names.template, "trigger": names.trigger}
    return Source(drawn, identity, tuple(warnings)), n
