"""The synthetic set folder `sample` writes, and who may write into it.

    OUT/images/<id>.png          the set (ids <prefix><7 digits>, from 0)
    OUT/metadata.csv             one row per image file: ISIC Archive fields, then settings
                                 (`write_metadata` writes it, `read_metadata` reads it)
    OUT/grid.jpg                 contact sheet of the first images with their prompts
    OUT/logs/shard-<k>.log       sdxl_gen_img.py's output of GPU process k (from 0), appended
                                 on every run; shard-K-of-N.<k>.log for --shard K/N (K from 1)
    OUT/.medsynth/sample.json    the settings, checked on a re-run, and the last run's record
    OUT/.medsynth/written.json   every file above that sample wrote (or is writing)
    OUT/.medsynth/shards/<k>/    the prompt file and output folder of GPU process k (K-of-N.<k>)
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth_kohya import files, locks
from medsynth_kohya import outputs as marks
from medsynth_kohya.data import archive
from medsynth_kohya.data.archive import MetadataStyle
from medsynth_kohya.errors import UserError
from medsynth_kohya.files import replacing
from medsynth_kohya.sampling.generator import OWNED
from medsynth_kohya.sampling.plan import ID_DIGITS, Plan
from medsynth_kohya.sdscripts import render

STATE_DIR = marks.STATE_DIR
STATE_FILE = "sample.json"
WRITTEN_FILE = "written.json"
IMAGES = "images"
METADATA = "metadata.csv"
GRID = "grid.jpg"
_PNG = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
SETTINGS_COLUMNS = ("skin_tone", "prompt", "negative_prompt", "seed", "steps", "scale", "sampler",
                    "width", "height", "lora_file", "lora_sha256", "base_model", "lora_repo",
                    "lora_commit")
"""metadata.csv's columns after the schema's: the drawn skin tone (ITA category, no ISIC field)
and the generation settings; lora_repo and lora_commit (blank for a local LoRA) say where a Hub
LoRA came from."""
COLUMNS = (*archive.SCHEMA_COLUMNS[MetadataStyle.archive], *SETTINGS_COLUMNS)
"""metadata.csv columns: ISIC Archive fields first (each row a valid Archive `MetadataRow`), so
the rows concatenate to the Archive's own; `--metadata-style 2020` swaps in the challenge's."""
ID_COLUMNS = tuple(columns[0] for columns in archive.SCHEMA_COLUMNS.values())
"""metadata.csv's id column, one per style: `isic_id` (Archive) or `image_name` (2020)."""


@dataclass(frozen=True)
class SynthRow:
    """One row of metadata.csv as later stages read it, whichever `--metadata-style` wrote it."""

    id: str
    """The image id (`isic_id` or `image_name`): the image is images/<id>.png."""
    prompt: str = ""
    negative_prompt: str = ""
    hairy: bool | None = None
    """Whether the prompt asked for hair (the `hairy` column: true/false, 1/0, yes/no); None
    when blank, absent or none of those (`unread_hairy`)."""
    skin_tone: str = ""
    """The ITA category drawn for the prompt; "" when none was."""
    lora_sha256: str = ""
    """The LoRA that made the image, as sample wrote it; "" when the column is blank or absent."""
    unread_hairy: str = ""
    """The `hairy` cell when it is no boolean word (hairy is then None); "" otherwise."""


def outputs(plan: Plan, shards: int, tag: str = "") -> list[str]:
    """The files a run may write, overwrite or remove, relative to OUT: metadata.csv, the
    grid, its shards' logs (`tag`: a machine shard's, `1-of-2.`) and every image of the set."""
    return [METADATA, GRID, *(f"logs/shard-{tag}{k}.log" for k in range(shards)),
            *(f"{IMAGES}/{plan.image_id(i)}.png" for i in range(plan.n))]


def _written(out: Path) -> set[str] | None:
    """The files earlier runs recorded writing; None for a set made before that record
    existed (all of it is then sample's own)."""
    try:
        return set(json.loads((out / STATE_DIR / WRITTEN_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None if (out / STATE_DIR / STATE_FILE).is_file() else set()


def record_outputs(out: Path, names: Sequence[str]) -> None:
    """Add `names` to the files sample wrote in OUT, before writing them (so a killed run
    leaves none of its own files unrecorded)."""
    path = out / STATE_DIR / WRITTEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with locks.briefly(path.with_name(f"{path.name}.lock")):  # shards add theirs side by side
        written = _written(out) or set()
        files.write_json(path, sorted(written | set(names)), indent=None)


SET_FIX = "give the --out folder of `medsynth-kohya sample`"
"""What to give where a synthetic set is expected (evaluate --synthetic, push --samples)."""
_STOPPED = {"interrupted": "was interrupted", "failed": "failed",
            "running": "stopped before the end", "planned": "stopped before the end",
            "incomplete": "ended short of the set"}
"""sample.json's status of a whole-set run that did not finish, as a message says it."""


def read_state(out: Path) -> dict[str, Any] | None:
    """OUT's sample.json, the set's record (its settings in "identity", n, status); None when
    OUT has none (nor a folder to hold one). One that cannot be read is a UserError: nothing
    can then tell what the set is, nor whether it is finished."""
    path = out / STATE_DIR / STATE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}): restore it, or make the "
                        "set again in another --out") from None
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
        raise UserError(f"{path} is damaged (not the JSON record sample writes): restore it, "
                        "or make the set again in another --out")
    return record


def recorded_n(record: Mapping[str, Any]) -> int:
    """The number of images a sample.json says its set has (0 when it says none)."""
    try:
        return int(record.get("n") or 0)
    except (TypeError, ValueError):
        return 0


def unfinished(out: Path) -> str | None:
    """Why the set in OUT is not finished (its last run stopped early, or its shards have not
    made every image yet), as its sample.json says; None for a finished set and for a folder
    sample did not make."""
    made = read_state(out)
    if made is None:
        return None
    status, n = made.get("status"), recorded_n(made)
    prefix = str(made["identity"].get("id_prefix", ""))
    present = sum(1 for i in present_images(out / IMAGES, prefix) if i < n)
    if status in _STOPPED:
        return (f"{out} is unfinished: sample {_STOPPED[status]} with {present} of "
                f"{files.counted(n, 'image')}")
    if status == "sharded" and present < n:
        return (f"{out} is unfinished: its shards have made {present} of "
                f"{files.counted(n, 'image')}")
    return None


def _foreign(out: Path, names: Sequence[str]) -> list[Path]:
    """Files of `names` in OUT that sample did not write, and any shard files of a folder
    that is not a set (a run would clear them)."""
    written = _written(out)
    if written is None:
        return []
    found = [out / name for name in names if name not in written and (out / name).exists()]
    shards = out / STATE_DIR / "shards"
    if not (out / STATE_DIR / STATE_FILE).is_file() and shards.is_dir():
        found += sorted(path for path in shards.rglob("*") if not path.is_dir())
    return found


def claim(out: Path, identity: Mapping[str, Any], plan: Plan, names: Sequence[str],
          force: bool) -> bool:
    """Refuse an OUT that holds something else, or a set made with other settings, and
    (--force included) one where this run would overwrite, remove or take into the set a file
    that sample did not write (`names`: the run's outputs). Writes nothing.

    True when OUT holds a set made with these settings (its unfinished shards may be kept).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    record = read_state(out)
    same = False
    if record is not None:
        before = record["identity"]
        existing = present_images(out / IMAGES, str(before.get("id_prefix", plan.id_prefix)))
        changed, fix = other_settings(before, identity)
        if changed and existing:
            values = f"or give that set's values ({fix}), " if fix else ""
            raise UserError(f"{out} holds {files.counted(len(existing), 'image')} made with "
                            f"other settings ({'; '.join(changed)}): use another --out, "
                            f"{values}or delete it")
        count = held_beyond(existing, plan.n)
        if count and not changed:
            raise UserError(f"{beyond_n(out, count, plan.n)}, or choose another --out")
        same = not changed
    elif others(out) and not force:
        held = locks.holds(others(out))
        raise UserError(f"--out {out} is not empty ({held}) and was not made by "
                        "medsynth-kohya sample; "
                        "choose an empty folder or pass --force to write into it")
    foreign = _foreign(out, names)
    if foreign:
        raise UserError(f"{files.counted(len(foreign))} in {out} that sample did not write "
                        "would be "
                        f"overwritten, removed or taken into the set (first: {foreign[0]}); "
                        f"move them out of {out} and run this again (--force keeps them too)")
    return same


_FLAGS = {"query": "--query", "seed": "--seed", "width": "--width", "height": "--height",
          "steps": "--steps", "scale": "--scale", "sampler": "--sampler",
          "negative_prompt": "--negative-prompt", "base_model": "--base-model",
          "id_prefix": "--id-prefix", "metadata_style": "--metadata-style"}
"""The settings of sample.json's identity that one option of `sample` gives, with it."""
_SOURCES = {"like": "--like", "prompts": "--prompt/--prompts"}
"""The option each kind of prompt source comes from."""
_ORDER = ("kind", "lora_sha256", "sha256", "manifest_sha256", "template", "trigger", *_FLAGS,
          "generator")
"""The order a refusal names the settings in: where the prompts come from, then as --help."""
_OF_SOURCE = ("sha256", "manifest_sha256", "query", "template", "trigger")
"""The settings of one kind of source, left unsaid where the kind itself differs."""


def other_settings(before: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[list[str], str]:
    """How the settings `now` differ from those a set was made with (`before`: sample.json's
    identity, its metadata style added where a shard compares it), each by the option that
    gives it with both values; and the options that would give that set's values."""
    before, now = _plain(before), _plain(now)
    keys = [k for k in _ORDER if k in before or k in now]
    keys += sorted((set(before) | set(now)) - set(keys))
    changed = [k for k in keys if before.get(k) != now.get(k)]
    if "kind" in changed:
        changed = [k for k in changed if k not in _OF_SOURCE]
    said: list[str] = []
    given: list[str] = []
    prose: list[str] = []
    for key in changed:
        old, new = before.get(key), now.get(key)
        if key in _FLAGS:
            flag = _FLAGS[key]
            said.append(_both(flag, _shown(new) if new is not None else None,
                              _shown(old) if old is not None else None))
            if old is not None or key == "query":  # else a record older than the setting
                given.append(f"{flag} {_shown(old)}" if old is not None else f"without {flag}")
        elif key == "generator":
            generator = _generator(old if isinstance(old, dict) else {},
                                   new if isinstance(new, dict) else {})
            said += generator[0]
            given += generator[1]
        elif key == "kind":
            said.append(f"{_SOURCES.get(str(new), new)} here, {_SOURCES.get(str(old), old)} "
                        "in that set")
            prose.append(f"its {_SOURCES.get(str(old), old)}")
        elif key == "lora_sha256":
            said.append(f"--lora: a LoRA of {_digest(new)} here, {_digest(old)} in that set")
            if old:
                prose.append(f"the --lora of {_digest(old)}")
        elif key == "sha256":
            said.append("--prompt/--prompts: other prompts than that set's")
            prose.append("its prompts")
        elif key == "manifest_sha256":
            said.append("the manifest.csv the prompts are drawn from (--like, else the run's "
                        "prepared folder) is not that set's: another one, or prepared again "
                        "since")
            prose.append("the manifest.csv it was drawn from")
        else:  # the caption template and trigger of the run or --like folder, and any other
            said.append(f"the {key.replace('_', ' ')} {new!r} here, {old!r} in that set")
    if changed and not said:  # only those the options of sample set: none named them
        said.append("sdxl_gen_img.py's options differ from that set's")
    return said, ", ".join(part for part in (" ".join(given), *prose) if part)


def _generator(before: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The sdxl_gen_img.py options (as --set gives them) that differ, but for those `sample`
    sets from its own options (--width, …), named as those; and the --set giving the set's."""
    said, given = [], []
    for key in sorted((set(before) | set(now)) - set(OWNED)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        said.append(_both(f"--set {key}", _toml(new) if key in now else None,
                          _toml(old) if key in before else None, "="))
        given.append(shlex.quote(f"{key}={_toml(old) if key in before else ''}"))
    return said, [f"--set {item}" for item in given]


def _both(option: str, new: str | None, old: str | None, joiner: str = " ") -> str:
    """An option's value here and in the set ("none" where it is not given)."""
    if new is None or old is None:
        return f"{option}: {new or 'none'} here, {old or 'none'} in that set"
    return f"{option}{joiner}{new} here, {old} in that set"


def _digest(value: Any) -> str:
    """A LoRA's recorded sha256 as a refusal shows it."""
    return f"sha256 {value[:12]}…" if isinstance(value, str) and value else "none recorded"


def _shown(value: Any) -> str:
    """An option's value as typed after it on a command line."""
    if isinstance(value, float):  # 12.0 as 12, 7.25 as 7.25
        return str(int(value)) if value.is_integer() else repr(value)
    return shlex.quote(value) if isinstance(value, str) else json.dumps(value)


def _toml(value: Any) -> str:
    """A --set value as typed after `KEY=` (a one-item list as its item)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and render.value(value) == value:
        return value
    return json.dumps(value)


def _plain(identity: Mapping[str, Any]) -> dict[str, Any]:
    """`identity` as sample.json holds it (JSON types), so a record and a run compare."""
    plain: dict[str, Any] = json.loads(json.dumps(identity, default=str))
    return plain


def held_beyond(existing: Sequence[int], n: int) -> int | None:
    """How many images a set holding images `existing` (by index) has, where some lie beyond
    --n `n`, which metadata.csv would leave out; None where none do."""
    beyond = [i for i in existing if i >= n]
    return max(beyond) + 1 if beyond else None


def beyond_n(out: Path, held: int, n: int) -> str:
    """What is wrong with a set of `held` images made again with --n `n` (fewer): sample's
    refusal, and reproduce's before any stage runs."""
    return (f"{out} already holds {held} images; --n {n} would leave some out of its "
            f"metadata.csv: use --n {held} or more")


def others(out: Path) -> list[Path]:
    """What OUT holds that no sample run made (a folder without a set record)."""
    return ([path for path in locks.foreign_entries(out) if path.name != STATE_DIR]
            if out.is_dir() else [])


def made_with(out: Path) -> str | None:
    """The sha256 of the LoRA that made the set in `out`, as its sample.json records it, else
    (a set copied without its hidden state folder, an older record) as the rows of its
    metadata.csv do; None where neither says. A UserError when metadata.csv names several
    LoRAs: no one model made the set."""
    record = read_state(out)
    digest = None if record is None else record["identity"].get("lora_sha256")
    if isinstance(digest, str) and digest:
        return digest
    if not (out / METADATA).is_file():
        return None
    named = sorted({row.lora_sha256 for row in read_metadata(out) if row.lora_sha256})
    if len(named) > 1:
        raise UserError(f"{out / METADATA} names images of {len(named)} LoRAs (lora_sha256 "
                        f"{', '.join(d[:12] + '…' for d in named[:3])}): keep each LoRA's "
                        "images in a folder of their own")
    return named[0] if named else None


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


def image_files(out: Path) -> list[Path]:
    """OUT/images/*.png, sorted: the images a set holds, each of which its metadata.csv must
    list (see `unlisted`)."""
    folder = out / IMAGES
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def unlisted(images: Sequence[Path], ids: Container[str]) -> list[Path]:
    """Those of `images` whose id no row of metadata.csv (`ids`) has: sample did not make them,
    or their rows are lost; push and evaluate refuse a set holding any (no check sees them)."""
    return [path for path in images if path.stem not in ids]


def complete_jpeg(path: Path) -> bool:
    """Whether `path` is a JPEG written to the end (SOI first, EOI last): the grid a killed
    writer, a full disk or a copy cut short leaves is none."""
    try:
        with path.open("rb") as file:
            if file.read(2) != b"\xff\xd8" or file.seek(0, os.SEEK_END) < 4:
                return False
            file.seek(-2, os.SEEK_END)
            return file.read() == b"\xff\xd9"
    except OSError:
        return False


def complete_png(path: Path) -> bool:
    """Whether `path` is a PNG written to the end (a killed writer, a full disk or a copy cut
    short leaves no IEND chunk)."""
    try:
        with path.open("rb") as file:
            if file.read(8) != _PNG:
                return False
            file.seek(-len(_IEND), os.SEEK_END)
            return file.read() == _IEND
    except OSError:
        return False


def damaged(folder: Path, plan: Plan, indices: Sequence[int]) -> list[int]:
    """Those of `indices`, images present in `folder`, whose file is not a whole PNG (emptied
    or cut short since it was made): they count as missing. A folder or a name padded with
    more digits than the set's ids is no image of the set, and not one of these."""
    paths = ((i, folder / f"{plan.image_id(i)}.png") for i in indices)
    return [i for i, path in paths if path.is_file() and not complete_png(path)]


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def schema_rows(plan: Plan, style: MetadataStyle = MetadataStyle.archive,
                ) -> dict[tuple[str | None, int | None, str | None, bool | None],
                          tuple[object, ...]]:
    """The schema cells of each distinct drawn (sex, age, site, hairy), checked against the
    Archive's `MetadataRow`: `sample` calls it before generating, so a row metadata.csv could
    not hold stops the run before any image is made."""
    drawn = plan.drawn
    keys = dict.fromkeys(zip(drawn.sex, drawn.age, drawn.site, drawn.hairy, strict=True))
    return {key: tuple(_cell(value) for value in archive.synthetic_cells(
        style, plan.diagnosis, *key)) for key in keys}


def write_metadata(plan: Plan, present: Sequence[int], path: Path,
                   style: MetadataStyle = MetadataStyle.archive) -> None:
    """metadata.csv for the images `present` (indices), in id order, written atomically:
    the schema of `style` (each distinct row checked once), then the generation settings;
    blank for a missing value, true/false for booleans."""
    import csv

    drawn, settings = plan.drawn, plan.settings
    hub = plan.lora_hub
    shared = (settings.negative_prompt, settings.steps, float(settings.scale), settings.sampler,
              settings.width, settings.height, plan.lora.name if hub is None else hub.path,
              plan.lora_sha256, plan.base_model, "" if hub is None else hub.repo_id,
              "" if hub is None else hub.commit)
    cells = schema_rows(plan, style)

    with replacing(path) as temporary, temporary.open("w", encoding="utf-8",
                                                          newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow((*archive.SCHEMA_COLUMNS[style], *SETTINGS_COLUMNS))
        writer.writerows((plan.image_id(i), *cells[drawn.sex[i], drawn.age[i], drawn.site[i],
                                                    drawn.hairy[i]],
                          _cell(drawn.skin_tone[i]), drawn.prompts[i], shared[0], plan.seed + i,
                          *shared[1:])
                         for i in sorted(present))


def read_metadata(out: Path) -> list[SynthRow]:
    """The rows of OUT/metadata.csv in file order. A UserError in one line when the file is
    missing, is not CSV (bad quoting, a row longer or shorter than the header, not UTF-8) or
    has no id column; a column other than the id may be absent (blank)."""
    import csv

    path = out / METADATA
    if not path.is_file():
        raise UserError(f"{out} has no {METADATA}: give a folder written by "
                        "`medsynth-kohya sample` (re-run it to rewrite its metadata)")
    rewrite = "re-run `medsynth-kohya sample` with the same options to rewrite it"
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # a spreadsheet's BOM too
            reader = csv.reader(file, strict=True)
            table = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path} ({str(exc).splitlines()[0]}); {rewrite}") from None
    header = [name.strip() for name in table[0][1]] if table else []
    key = next((name for name in ID_COLUMNS if name in header), None)
    if key is None:
        raise UserError(f"{path} has no {' or '.join(ID_COLUMNS)} column, so it was not written "
                        f"by `medsynth-kohya sample`; {rewrite}")
    rows = []
    for line, cells in table[1:]:
        if len(cells) != len(header):
            raise UserError(f"cannot read {path}: line {line} has {len(cells)} fields, the "
                            f"header {len(header)}; {rewrite}")
        row = dict(zip(header, cells, strict=True))
        cell = row.get("hairy", "").strip()
        hairy = archive.flag(cell)  # a hand-written 1/0 or yes/no too
        rows.append(SynthRow(row[key], row.get("prompt", ""), row.get("negative_prompt", ""),
                             hairy, row.get("skin_tone", "").strip(),
                             row.get("lora_sha256", "").strip().lower(),
                             cell if hairy is None else ""))
    return rows
