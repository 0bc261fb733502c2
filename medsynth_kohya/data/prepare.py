"""`prepare`: ISIC metadata and images to kohya's DreamBooth layout, manifest and dataset config.

Data flows one way: metadata -> selection -> image scan (parallel, cached) -> manifest ->
layout on disk -> dataset.toml. A re-run on the same OUT reuses the scans of unchanged files
and rewrites the layout from the manifest, so it is incremental and gives the same result.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.data import archive, captions, layout, manifest, query
from medsynth_kohya.data.duplicates import (
    DUPLICATE_ID,
    DUPLICATE_IMAGE,
    Twins,
    counted,
    listed_twins,
    twin_reason,
    twins,
)
from medsynth_kohya.data.hair import HairMode, is_hairy
from medsynth_kohya.data.images import TURNS, Scan, init_worker, scan
from medsynth_kohya.data.measure import ARTEFACTS, TONES, VERSION
from medsynth_kohya.data.prepared import STATE_DIR, PreparedFolder
from medsynth_kohya.data.sources import (
    CAPTION_FIELDS,
    DERMOSCOPIC,
    GENERATED_SKIP,
    IMAGE_TYPE,
    ISIC2020,
    Source,
    allowed_terms,
    blank_effects,
    clash_warnings,
    described,
    find_images,
    generated_rows,
    holding,
    images_below,
    index_images,
    lacked_by,
    locate,
    normalise,
    pair_challenge,
    queried,
    query_example,
    read_metadata,
    require,
    select,
    target_numbers,
    unpartnered,
    unusable_files,
)
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import render

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[int, int], None]
"""Called as (done, total) while images are scanned."""
CACHE_FILE = "scan-cache.json"
WRITTEN_FILE = "written.json"
"""The files under img/ and val/ that the last complete run placed (they match manifest.csv),
each image with its stamp (layout.Stamp) as placed, a caption with none."""
REFUSED_SKIPPED_FILE = "skipped-refused.csv"
"""Where a refused re-run lists what it skipped, so the earlier run's skipped.csv stays."""
JOURNAL_FILE = "scan-cache.journal"
"""Scans made since CACHE_FILE was written, one JSON line each, appended as each finishes: what
a killed run keeps (SIGKILL skips every `finally`). Folded into CACHE_FILE at a run's end."""
CacheKey = tuple[str, int, int, int, str]
"""(absolute path, size, mtime_ns, ctime_ns, hair mode and measurement version): a scan is
reused while all five hold. The ctime tells a file rewritten with its size and time restored
(`cp -p`, `touch -r`), which no program can set back."""
_CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
_TRAINED_SUFFIXES = render.IMAGE_SUFFIXES | {".txt", ".TXT"}
"""The files sd-scripts' DreamBooth loader reads: images and captions; a foreign one in a
class folder is refused, others are kept."""
_MOST = 2**31 - 1
"""The largest count prepare takes (repeats, steps, epochs, batch size): a 32-bit integer's,
far past any run, and well within the 64-bit integers of TOML's dataset config."""
NO_FILE = "no image file"
BELOW_SKIP = "image file only in a subfolder (see source): pass --images to search it"
"""Skip reason of an id whose file lies below a folder searched without its subfolders."""
CASE_SKIP = ("image file named in another letter case (see source): correct the id or rename "
             "the file")
"""Skip reason of an id whose only file differs from it in letter case (isic_1 / ISIC_1.jpg)."""
_FIX_VERBS = frozenset({"convert", "correct", "downsize", "fetch", "pass", "put", "remove",
                        "rename", "save"})
"""First words of the fix after a skip reason's last ": " (not a decoder's own words)."""
_SINGULAR = re.compile(r"(?<![\w'])(it|its|id|file|link|target)(?![\w'])")
"""Words of a fix that name one id or file, put in the plural for a reason counted so."""
_PLURALS = {"it": "them", "its": "their", "id": "ids", "file": "files", "link": "links",
            "target": "targets"}
_COUNTED_NOUNS = ("image file", "symlink", "duplicate image", "duplicate id", "empty id",
                  "unsafe id", "generated image", "empty file")
"""Skip reasons that begin with one of these nouns are counted by it: "3 image files ..."."""
NO_ROW = "no metadata row"
"""Skip reason of an image file whose name no metadata row has as its id."""
MEASURED_SKIP = "left out by --query on measurements"
"""Skip reason of a measured image the --query terms on measurements leave out."""
MAX_UPSCALE = 2
"""sd-scripts enlarges a photo to its bucket's area (bucket_no_upscale is false); photos it
must enlarge more than this per side get a warning: they train blurred."""


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the content of a prepared folder (recorded in its state file)."""

    query: str | None = None
    diagnosis: str | None = None
    """Any level of the ISIC Archive's diagnosis hierarchy (or a legacy term), beside query."""
    class_name: str = "melanoma"
    trigger: str = captions.DEFAULT_TRIGGER
    caption_template: str = captions.DEFAULT_TEMPLATE
    hair: HairMode = HairMode.auto
    repeats: int | None = None
    target_steps: int | None = None
    epochs: int = 50
    batch_size: int = 1
    val_frac: float = 0.0
    seed: int = 0
    resolution: int = 1024
    columns: Mapping[str, str] = field(default_factory=dict)
    """Field -> metadata column, over the layout's own names (`--column site=…`)."""
    challenge_sites: bool = False
    """Write the Archive's anterior/posterior/lateral torso as the 2020 challenge's `torso`
    (manifest and captions): the original run's captions from an Archive download."""
    link: layout.LinkMode = layout.LinkMode.copy
    """How img/ and val/ hold each image: its own copy, or a hard link to the source (`--link
    hard`: no extra disk, but an edit of either changes both)."""

    def __post_init__(self) -> None:
        arguments.check_fields(self)


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` wrote and the figures its summary shows."""

    out: Path
    source: Source
    manifest: pd.DataFrame
    skipped: pd.DataFrame
    repeats: layout.Repeats
    steps_per_epoch: int
    train_dir: Path
    dataset_config: Path
    options: PrepareOptions
    scanned: int
    reused: int
    warnings: tuple[str, ...] = field(default_factory=tuple)
    hair_agreement: HairAgreement | None = None
    diagnosis: str | None = None
    """The deepest Archive diagnosis node all prepared images share (the class's diagnosis)."""
    dropped: int = 0
    """Images measured, then left out by the --query terms that name a measurement."""
    image_types: tuple[tuple[str, int], ...] = ()
    """How many prepared images each `image_type` holds ("missing": blank), commonest first;
    empty when the source has no such column."""


@dataclass(frozen=True)
class HairAgreement:
    """How often the hair detector agrees with the source's own `hairy` tag, where both exist."""

    detector: str
    compared: int
    agree: int
    metadata_hairy: int
    detector_hairy: int

    @property
    def accuracy(self) -> float:
        return self.agree / self.compared if self.compared else 0.0


def _check(options: PrepareOptions) -> None:
    """Reject option values that cannot produce a trainable layout."""
    if not _CLASS_NAME.fullmatch(options.class_name):
        raise UserError(f"--class-name {options.class_name!r} must begin with an ASCII letter "
                        "or digit and hold only ASCII letters, digits, spaces, '.', '_' or '-' "
                        "(it names a folder)")
    if not options.trigger.strip() or "," in options.trigger:
        raise UserError("--trigger must be a non-empty token without commas")
    if not options.trigger.isprintable():  # a line break would split the caption file
        raise UserError(f"--trigger {options.trigger!r} holds a line break or another control "
                        "character: give it as one line of printable text")
    captions.validate_template(options.caption_template)
    if options.diagnosis is not None:
        archive.resolve_selection(options.diagnosis)
    if options.repeats is not None and options.target_steps is not None:
        raise UserError("give --repeats or --target-steps, not both")
    for name in ("repeats", "target_steps", "epochs", "batch_size"):
        value = getattr(options, name)
        if value is not None and not 1 <= value <= _MOST:
            raise UserError(f"--{name.replace('_', '-')} must be 1 to {_MOST} (got {value})")
    arguments.check_seed(options.seed)
    if not 0 <= options.val_frac < 1:
        raise UserError(f"--val-frac must be in [0, 1) (got {options.val_frac})")
    if not 64 <= options.resolution <= render.MAX_SIDE or options.resolution % 64:
        raise UserError(f"--resolution must be a multiple of 64 from 64 to {render.MAX_SIDE}, "
                        f"such as 1024 (SDXL's) or 512 (got {options.resolution})")


def _written(out: Path) -> dict[Path, layout.Stamp | None] | None:
    """The layout files the last complete run placed, with the images' stamps (None where not
    recorded: a list written before stamps were); None for a folder prepared before this list
    existed, or whose list is unreadable (everything under img/ and val/ is then prepare's
    own); empty for a folder not prepared yet."""
    try:
        found = json.loads((out / STATE_DIR / WRITTEN_FILE).read_text(encoding="utf-8"))
        if isinstance(found, list):
            return dict.fromkeys((out / entry for entry in found), None)
        return {out / entry: None if value is None else (int(value[0]), int(value[1]))
                for entry, value in found.items()}
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return None if PreparedFolder(out).is_prepared() else {}


def _unfinished(out: Path) -> dict[Path, set[str]]:
    """The layout files an interrupted run may have placed (the prepared folder's unfinished
    file), each with the contents (`_content`) runs gave it; empty if none."""
    try:
        found = json.loads(PreparedFolder(out).unfinished_file.read_text(encoding="utf-8"))
        return {out / name: set(contents) for name, contents in found.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _content(path: Path) -> str:
    """What tells a hand edit of a layout file: a caption's text, an image's pixel size."""
    import imagesize

    if path.suffix == ".txt":
        return path.read_text(encoding="utf-8", errors="replace")
    return _size(*imagesize.get(str(path)))


def _size(width: Any, height: Any) -> str:
    return f"{int(width)}x{int(height)}"


def _ours(path: Path, written: set[Path] | None) -> bool:
    """Whether prepare (or sd-scripts' latent cache beside its images) made `path`."""
    return written is None or path in written or path.name.endswith("_sdxl.npz")


@dataclass(frozen=True)
class _Placed:
    """What earlier runs placed in the layout, read once from the state folder: the last
    complete run's files (`_written`) and an interrupted run's with their contents
    (`_unfinished`)."""

    written: dict[Path, layout.Stamp | None] | None
    unfinished: dict[Path, set[str]]

    @classmethod
    def read(cls, out: Path) -> _Placed:
        return cls(_written(out), _unfinished(out))

    @property
    def owned(self) -> set[Path] | None:
        """Every layout file prepare placed, complete run and unfinished ones (None: all are)."""
        return None if self.written is None else set(self.written) | set(self.unfinished)


def _record_written(out: Path, placed: dict[Path, layout.Stamp | None]) -> None:
    files.write_json(out / STATE_DIR / WRITTEN_FILE,
                     {str(path.relative_to(out)): placed[path] for path in sorted(placed)})


def _foreign_layout_files(out: Path, written: set[Path] | None) -> list[Path]:
    return [path for root in (layout.TRAIN_ROOT, layout.VAL_ROOT) if (out / root).is_dir()
            for path in sorted((out / root).rglob("*"))
            if not path.is_dir() and not _ours(path, written)]


class EditedLayout(UserError):
    """Files prepare wrote in OUT were changed by hand since (`edited`): a re-run would
    replace them."""

    def __init__(self, message: str, edited: Sequence[Path]) -> None:
        super().__init__(message)
        self.edited = tuple(edited)


def _claim(out: Path, force: bool, class_name: str, placed: _Placed) -> list[str]:
    """Refuse a non-empty OUT that `prepare` did not make (no .medsynth/), unless --force, and
    foreign files that would be trained on (`placed`: what earlier runs wrote); returns
    warnings for foreign files it keeps.

    Runs before anything is written. The state folder is made before any other output, so an
    interrupted first run still counts as ours and its re-run continues.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if not out.is_dir():
        return []
    ours = (out / STATE_DIR).is_dir()
    folder = PreparedFolder(out)
    taken = [] if ours else [path.name for path in (
        folder.manifest, folder.skipped, folder.dataset_config)
        if path.exists() or path.is_symlink()]
    if taken:  # --force would not write over them: say so before offering it
        raise UserError(f"--out {out} holds {', '.join(taken)}, which prepare did not write (it "
                        f"has no {STATE_DIR}/ of its own: a prepared folder copied without its "
                        "hidden files?) and would replace; prepare into a new or empty --out, "
                        f"or move them out of {out} and run this again")
    foreign = _foreign_layout_files(out, placed.owned)
    trained = [p for p in foreign if p.suffix in _TRAINED_SUFFIXES
               and not p.name.startswith(".")  # sd-scripts' glob passes hidden files over
               and re.fullmatch(rf"\d+_{re.escape(class_name)}", p.parent.name)]
    if not ours and not force and locks.foreign_entries(out):
        raise UserError(f"--out {out} is not empty ({locks.holds(locks.foreign_entries(out))}) "
                        "and was not made by medsynth-kohya prepare; choose an empty folder"
                        + ("" if trained else " or pass --force to write into it"))
    outputs = [] if force else folder.edited_outputs()
    edited = [*outputs, *([] if force else _edited(out, placed))]
    if edited:
        raise EditedLayout(_edited_message(out, edited, outputs), edited)
    if trained:
        raise UserError(f"{files.counted(len(trained))} that prepare did not write would be "
                        f"trained on where they are (first: {trained[0]}); move them out of "
                        f"{out} and run this again")
    if foreign:
        return [f"kept as found: {files.counted(len(foreign))} under {out} that prepare did "
                f"not write (first: {foreign[0]})"]
    return []


class OtherSource(UserError):
    """OUT holds a layout prepared from the metadata file `earlier`, not from `given`: a run
    without --force keeps it."""

    def __init__(self, message: str, earlier: Path, given: Path) -> None:
        super().__init__(message)
        self.earlier, self.given = earlier, given


def _ensure_same_source(out: Path, metadata: Path) -> None:
    """Refuse to replace a layout prepared from another source than `metadata` (a re-run of
    the same one, edited or moved, goes on): the user's other data set is never lost silently."""
    earlier = PreparedFolder(out).other_source(metadata)
    if earlier is not None:
        given = metadata.resolve()
        raise OtherSource(f"--out {out} holds the data prepared from {earlier}, not from "
                          f"{given}: give another --out, or pass --force to replace it",
                          earlier, given)


def _edited_message(out: Path, edited: Sequence[Path], outputs: Sequence[Path]) -> str:
    """Why a re-run is refused: the files prepare wrote that were edited since, the prepared
    folder's own files (manifest.csv, dataset.toml) named first, and what --force does."""
    them = files.agreeing(len(edited), "it")
    if outputs:
        layout_files = len(edited) - len(outputs)
        said = (f"{' and '.join(str(path) for path in outputs)} "
                f"{files.agreeing(len(outputs), 'was')} changed since prepare wrote "
                f"{files.agreeing(len(outputs), 'it')}"
                + (f" (and {files.counted(layout_files)} under img/ or val/)"
                   if layout_files else ""))
    else:
        said = (f"{files.counted(len(edited))} that prepare wrote under {out} "
                f"{files.agreeing(len(edited), 'was')} changed since (first: {edited[0]})")
    unused = ("; `medsynth-kohya train` does not read it either way: it renders its own "
              "RUN/dataset.toml from its preset and --set (this one is for running sd-scripts "
              "yourself)" if PreparedFolder(out).dataset_config in outputs else "")
    return (f"{said}; a re-run would replace {them}: copy {them} elsewhere, or pass --force "
            f"to replace {them}{unused}")


def _edited(out: Path, placed: _Placed) -> list[Path]:
    """Captions and images earlier runs `placed` (complete and interrupted runs) that were
    changed by hand since: a caption whose text is neither its manifest row's nor what an
    interrupted run gave it; an image written since it was placed (its stamp changed and it
    no longer holds its source's bytes) or, where no stamp was recorded, whose pixel size (a
    crop, a resize) is neither. An image that is a hard link to its source is never one: a
    change to it is the source's, which this run measures again."""
    written, unfinished = placed.written or {}, placed.unfinished
    if not written and not unfinished:
        return []
    rows = _manifest_contents(out)
    changed = []
    for path in sorted(set(written) | set(unfinished)):
        if not path.is_file() or path.is_symlink():
            continue
        row = rows.get(path.stem)
        image = path.suffix != ".txt"
        recorded = written.get(path) if path not in unfinished else None
        if image and recorded is not None and layout.stamp(path) == recorded:
            continue  # untouched since placed, the common case: one stat
        if image and row is not None and _shared(path, row[2]):
            continue
        if image and recorded is not None:
            if not (row and _same_bytes(path, row[2])):
                changed.append(path)
            continue
        allowed = set(unfinished.get(path, ()))
        if row is not None:
            allowed.add(row[1] if image else row[0])
        elif path not in unfinished:  # no row, no record: nothing to tell an edit by
            continue
        if _content(path) not in allowed:
            changed.append(path)
    return changed


def _shared(path: Path, source: Path) -> bool:
    """Whether the layout file `path` is the file `source` names (a hard link to it)."""
    try:
        return path.samefile(source)
    except OSError:
        return False


def _same_bytes(path: Path, source: Path) -> bool:
    """Whether `path` holds the bytes of `source` (a copy touched, or copied back, by hand)."""
    import filecmp

    try:
        return filecmp.cmp(path, source, shallow=False)
    except OSError:
        return False


def _manifest_contents(out: Path) -> dict[str, tuple[str, str, Path]]:
    """Each id's caption, pixel size (`_content`) and source image in the last complete run's
    manifest; empty when there is none or it is unreadable."""
    import pandas as pd

    try:
        table = manifest.read(PreparedFolder(out).manifest).drop_duplicates("id")
    except UserError:
        return {}
    return {str(row.id): ("" if pd.isna(row.caption) else str(row.caption),
                          _size(row.width, row.height), Path(str(row.source)))
            for row in table.itertuples(index=False)}


def _only_below(source: Source, out: Path, skipped: list[dict[str, str]]) -> list[str]:
    """Name, in their skip rows and a warning, the missing ids whose file lies in a subfolder
    of a folder searched alone (the metadata's own), with the --images that finds them."""
    missing = [row for row in skipped if row["reason"] == NO_FILE]
    below = images_below(source, out) if missing and source.images is None else {}
    moved = [row for row in missing if row["id"] in below]
    for row in moved:
        row.update(source=str(below[row["id"]]), reason=BELOW_SKIP)
    if not moved:
        return []
    path = Path(moved[0]["source"])
    root = next(folder for folder in source.image_dirs if folder in path.parents)
    return [f"{files.counted(len(moved), 'selected image')} "
            f"{files.agreeing(len(moved), 'is')} only in subfolders of {root} (e.g. {path}), "
            f"which is searched without its subfolders: pass --images "
            f"{shlex.quote(str(root))} to take them"]


def _case_only(skipped: list[dict[str, str]], found: Mapping[str, Path]) -> list[str]:
    """Name, in their skip rows and a warning, the missing ids that one image file matches
    when letter case is ignored (ids match file names exactly); that file's own "no metadata
    row" is then dropped, so it is not skipped twice."""
    folded: dict[str, list[Path]] = {}
    for name, path in found.items():
        folded.setdefault(name.casefold(), []).append(path)
    rows = [row for row in skipped if row["reason"] == NO_FILE
            and len(folded.get(row["id"].casefold(), ())) == 1]
    for row in rows:
        row.update(source=str(folded[row["id"].casefold()][0]), reason=CASE_SKIP)
    taken = {row["source"] for row in rows}
    skipped[:] = [row for row in skipped if not (row["reason"] == NO_ROW
                                                 and row["source"] in taken)]
    if not rows:
        return []
    return [f"{files.counted(len(rows), 'selected id')} {files.agreeing(len(rows), 'has')} an "
            f"image file only in another letter case (first: {rows[0]['id']}, file "
            f"{Path(rows[0]['source']).name}): ids must match file names exactly; correct the "
            "ids in the metadata or rename the files"]


def _unsafe(identifier: str) -> bool:
    """Whether an id could name a path outside its folder."""
    return ("/" in identifier or "\\" in identifier or ".." in identifier
            or "\0" in identifier or identifier in {".", ""})


def _skip(rows: list[dict[str, str]], identifier: str, path: Path | str | None,
          reason: str) -> None:
    rows.append({"id": identifier, "source": str(path or ""), "reason": reason})


def _entry(key: CacheKey, result: Scan) -> dict[str, Any]:
    return {"path": key[0], "size": key[1], "mtime_ns": key[2], "ctime_ns": key[3],
            "hair": key[4], "scan": asdict(result)}


def _load_cache(path: Path) -> dict[CacheKey, Scan]:
    """Scans from earlier runs, keyed by file, size, times and hair mode: the cache file, then
    the journal of a run that was killed (a line cut short by the kill is skipped)."""
    entries: list[Any] = []
    if path.is_file():
        try:
            entries = list(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            entries = []
    journal = path.with_name(JOURNAL_FILE)
    lines = journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    cache = {}
    for e in entries:
        try:
            cache[(str(e["path"]), int(e["size"]), int(e["mtime_ns"]), int(e["ctime_ns"]),
                   str(e["hair"]))] = Scan(**e["scan"])
        except (KeyError, TypeError, ValueError):
            continue
    return cache


def _save_cache(path: Path, scans: dict[CacheKey, Scan]) -> None:
    """Keep every scan for the next run, written atomically (sorted, so a run and its killed
    and re-run twin write the same file); the journal is then folded in."""
    files.write_json(path, [_entry(k, scans[k]) for k in sorted(scans)], indent=None)
    path.with_name(JOURNAL_FILE).unlink(missing_ok=True)


@contextmanager
def _journal(path: Path, cache: dict[CacheKey, Scan]) -> Iterator[Callable[[CacheKey, Scan], None]]:
    """A function that puts a scan in `cache` and appends it to the journal at once (one
    flushed line: the kernel keeps it when the process is killed)."""
    with path.open("a", encoding="utf-8") as log:
        if log.tell() and path.read_bytes()[-1:] != b"\n":
            log.write("\n")  # end a line a kill cut short
        def keep(key: CacheKey, result: Scan) -> None:
            cache[key] = result
            log.write(json.dumps(_entry(key, result)) + "\n")
            log.flush()
        yield keep


def _keys(paths: list[Path], hair: HairMode) -> list[CacheKey]:
    """Each path's cache key as the file is now."""
    keys: list[CacheKey] = []
    for path in paths:
        stat = path.stat()
        keys.append((str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
                     f"{hair.value}/{VERSION}"))
    return keys


def _relinked(cache: dict[CacheKey, Scan], keys: list[CacheKey], hair: HairMode) -> bool:
    """Keep the scans of the sources the layout just linked or unlinked (`keys`: as scanned):
    a hard link made or removed changes a file's ctime, not its bytes, size or mtime. Whether
    any was re-keyed (the cache file is then written again)."""
    moved = False
    for key, now in zip(keys, _keys([Path(key[0]) for key in keys], hair), strict=True):
        if now != key and now[:3] == key[:3] and key in cache:
            cache[now] = cache.pop(key)
            moved = True
    return moved


def _scan_all(keys: list[CacheKey], hair: HairMode, cache: dict[CacheKey, Scan],
              workers: int, on_progress: Progress | None,
              journal: Path) -> tuple[list[Scan], set[Path]]:
    """Scan every file (`keys`) once, in `workers` processes, reusing unchanged cached scans;
    each new scan is journalled as it finishes. Returns the scans and the files scanned anew."""
    paths = [Path(key[0]) for key in keys]
    todo = [key for key in dict.fromkeys(keys) if key not in cache]
    total, done = len(paths), len(paths) - len(todo)
    if on_progress:
        on_progress(done, total)
    results: Iterable[Scan]
    with _journal(journal, cache) as keep:
        if workers <= 1 or len(todo) < 2 * workers:
            results = (scan(key[0], hair) for key in todo)
            _collect(todo, results, keep, done, total, on_progress)
        else:
            context = multiprocessing.get_context("spawn")  # fork would inherit OpenCV's threads
            _tracker_deaf_to_hangups()
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker,
                                       initargs=(os.getpid(),))
            try:
                with _main_hidden():  # spawn starts workers in submit: map submits every chunk
                    results = pool.map(scan, [k[0] for k in todo], [hair] * len(todo),
                                       chunksize=2)
                _collect(todo, results, keep, done, total, on_progress)
            finally:  # on Ctrl-C, drop the queued scans instead of finishing them
                pool.shutdown(wait=True, cancel_futures=True)
    return [cache[key] for key in keys], {Path(key[0]) for key in todo}


def _good_copies(ids: list[str], keys: list[CacheKey], scans: list[Scan],
                 found: dict[str, Path], others: Mapping[str, Sequence[Path]], hair: HairMode,
                 cache: dict[CacheKey, Scan], workers: int, journal: Path
                 ) -> tuple[dict[str, tuple[Path, str]], set[Path]]:
    """Where the file of `ids` scanned (`keys`, `scans`) is broken and another file of the id
    (`others`) reads, use that one in its place in `found`, `keys` and `scans`: only the other
    files of the broken ones are scanned. Returns the broken files replaced, by id, with their
    skip reason, and the files scanned anew."""
    broken = {identifier: at for at, (identifier, result) in enumerate(zip(ids, scans,
                                                                          strict=True))
              if result.reason and identifier in others}
    if not broken:
        return {}, set()
    copies = [path.absolute() for identifier in broken for path in others[identifier]]
    copy_keys = _keys(copies, hair)
    copy_scans, fresh = _scan_all(copy_keys, hair, cache, workers, None, journal)
    scanned = dict(zip(copies, zip(copy_keys, copy_scans, strict=True), strict=True))
    replaced: dict[str, tuple[Path, str]] = {}
    for identifier, at in broken.items():
        good = next((path for path in others[identifier]
                     if not scanned[path.absolute()][1].reason), None)
        if good is not None:
            replaced[identifier] = (Path(keys[at][0]), scans[at].reason)
            found[identifier] = good
            keys[at], scans[at] = scanned[good.absolute()]
    return replaced, fresh


def _replaced_warning(found: Mapping[str, Path],
                      replaced: Mapping[str, tuple[Path, str]]) -> list[str]:
    """The ids whose first file is broken while another reads, which is used."""
    if not replaced:
        return []
    identifier, (broken, reason) = next(iter(sorted(replaced.items())))
    return [f"{files.counted(len(replaced), 'image id')} "
            f"{files.agreeing(len(replaced), 'has')} a file that cannot be used and another "
            f"that can, which is used (e.g. {identifier}: {found[identifier].absolute()}, not "
            f"{broken} ({reason})): remove the broken file"]


def _tracker_deaf_to_hangups() -> None:
    """Start multiprocessing's resource tracker with SIGHUP ignored (it ignores SIGINT and
    SIGTERM itself): a closed terminal hangs up the whole process group, and a tracker killed
    by it leaves the stopping prepare printing KeyError tracebacks. An ignored signal stays
    ignored in the program the tracker runs; the handler here is put back at once."""
    from multiprocessing import resource_tracker

    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        resource_tracker.ensure_running()
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Hide the caller's `__main__` script (its `__file__` and `__spec__`, all that spawn's
    `get_preparation_data` looks at) while worker processes start, so that they do not run it
    again: the workers only call this package's functions, and a script without an
    `if __name__ == "__main__":` guard, or one read from stdin, would break the pool."""
    main = vars(sys.modules["__main__"])
    kept: dict[str, object] = {name: main.pop(name) for name in ("__file__", "__spec__")
                               if name in main}
    main["__spec__"] = None
    try:
        yield
    finally:
        main.pop("__spec__")
        main.update(kept)


def _collect(todo: list[CacheKey], results: Iterable[Scan],
             keep: Callable[[CacheKey, Scan], None], done: int, total: int,
             on_progress: Progress | None) -> None:
    for key, result in zip(todo, results, strict=True):
        keep(key, result)
        done += 1
        if on_progress:
            on_progress(done, total)


def default_workers() -> int:
    """All the cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _caption_fields(options: PrepareOptions) -> list[str]:
    """The metadata fields the caption template uses."""
    return sorted(captions.fields(options.caption_template) & set(CAPTION_FIELDS))


def locate_source(source: Path | None, metadata: Path | None, images: Path | None,
                  options: PrepareOptions, out: Path, *, fixed_captions: bool = False) -> Source:
    """Find the metadata and images (never inside `out`); a column the captions or the split
    need must be there. `fixed_captions`: the template is not the user's to change (reproduce's
    original captions), so a refusal offers no --caption-template."""
    located = locate(source, metadata, images, options.columns, exclude=out)
    used = _caption_fields(options)
    if fixed_captions:
        require(located, used, "used by the original captions")
    else:
        require(located, used, "used by the caption template", lambda missing: (
            f", or drop {' '.join('{' + f + '}' for f in missing)} from --caption-template"))
    if options.val_frac > 0:
        require(located, ["patient_id"], "needed by --val-frac to split by patient")
    return located


def _choose(located: Source, options: PrepareOptions) -> tuple[
        pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, query.Split]:
    """The raw metadata (as --query reads it: `queried`), its rows, the rows rejected while
    reading them, the selected rows (before the --query terms on measurements) and the query's
    split."""
    read = read_metadata(located)
    rows, rejected = normalise(read, located)
    raw = queried(read, rows, located)
    terms = query.Split(None, False, False) if options.query is None else query.split(
        options.query, raw.columns)
    chosen = rows.loc[select(raw, rows, located, terms.metadata, options.diagnosis,
                             terms.everything).index]
    unmeasured = {"hairy", "hair_score"} if options.hair is HairMode.off else set()
    blank = sorted(query.names(str(options.query)) & unmeasured - set(raw.columns))
    if terms.measured and blank:
        raise UserError(f"--query {options.query!r} names {blank[0]}, which --hair off leaves "
                        "blank on every photo: prepare with --hair auto to select by hair")
    if terms.measured:  # judged whole only after the scan: try it on one row first
        query.check(raw.loc[chosen.index], str(options.query),
                    example=query_example(located, list(raw.columns)))
    return raw, rows, rejected, chosen, terms


def selected_images(located: Source, options: PrepareOptions) -> int:
    """How many images prepare would keep were every one readable: selected real rows with a
    safe id and an image file, less the twins ISIC 2020's duplicates list names (the scan may
    still skip unreadable ones and identical files). Reads only; reproduce plans its training on
    it."""
    import pandas as pd

    raw, _, _, chosen, _ = _choose(located, options)
    found = index_images(located.image_dirs)
    real = chosen["id"][~generated_rows(raw)[chosen.index]]
    usable = pd.Series(sorted({i for i in real if not _unsafe(i) and i in found}), dtype=object)
    twins, _ = listed_twins(usable, located)
    return len(usable) - len(twins)


@arguments.checked
def prepare(source: arguments.PathArg | None, out: arguments.PathArg, *,
            metadata: arguments.PathArg | None = None, images: arguments.PathArg | None = None,
            options: PrepareOptions | None = None, workers: int | None = None,
            force: bool = False, break_lock: bool = False,
            on_progress: Progress | None = None) -> PrepareResult:
    """Turn an ISIC data set into `OUT/img/<R>_<class>/`, captions, manifest and dataset.toml,
    holding OUT's lock (locks.py) throughout; refused while a training reads OUT."""
    source, out = arguments.optional_path(source, "source"), arguments.path(out, "out")
    metadata = arguments.optional_path(metadata, "metadata")
    images = arguments.optional_path(images, "images")
    options = arguments.options(options, PrepareOptions)
    _check(options)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}); leave it out for one "
                        "per core")
    if not force:
        _ensure_apart(out, source, images)
    with locks.hold(out, "prepare", break_lock=break_lock) as lock, ExitStack() as marks:
        notes = locks.ensure_unread(out, "prepare", break_lock=break_lock)
        try:
            result = _prepare(source, out, metadata, images, options, workers, force,
                              on_progress, marks)
        except OSError as exc:  # the images' copies fit (else _no_space said so), the rest not
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"no space left under {out} for the captions and lists prepare "
                            "writes there: free space there, or choose another --out; then "
                            "run this again") from None
    notes = [note for note in (lock.note, *notes) if note]
    return replace(result, warnings=(*notes, *result.warnings))


def _ensure_apart(out: Path, source: Path | None, images: Path | None) -> None:
    """Refuse, before anything is made, an --out that is the folder the images are read
    from (unless --force): the layout would be written among them, and a folder not made yet
    holds no images to find."""
    for option, given in (("SOURCE", source), ("--images", images)):
        if given is not None and given.resolve() == out.resolve():
            named = given if given.name else given.resolve()
            such = f", such as {named.with_name(f'{named.name}-prepared')}" if named.name else ""
            raise UserError(f"{option} {given} and --out {out} are the same folder: prepare "
                            "writes its layout beside the images it reads, not among them; "
                            f"give another --out{such}, or pass --force to write it among "
                            "them")


def _prepare(source: Path | None, out: Path, metadata: Path | None, images: Path | None,
             options: PrepareOptions, workers: int | None, force: bool,
             on_progress: Progress | None, marks: ExitStack) -> PrepareResult:
    """prepare's work; the source's folders are marked read (locks.reading) in `marks`, which
    `prepare` closes when it is done, so a fetch-isic into them is refused meanwhile."""
    import pandas as pd

    placed = _Placed.read(out)  # nothing before _write_layout changes it: read once
    foreign_warnings = _claim(out, force, options.class_name, placed)
    if source is not None and source.is_dir():  # isic-cli writes metadata.csv last of all
        locks.ensure_idle(source, "prepare", writers=("fetch-isic",))
    located = locate_source(source, metadata, images, options, out)
    if not force:
        _ensure_same_source(out, located.metadata)
    for read in dict.fromkeys((located.metadata.parent, *located.image_dirs)):
        # marked first, then checked: a download still under way would be prepared in part
        marks.enter_context(locks.reading(read, "prepare"))
        locks.ensure_idle(read, "prepare", writers=("fetch-isic",))
    raw, rows, rejected, chosen, terms = _choose(located, options)
    selected = len(chosen)
    skipped: list[dict[str, str]] = []
    blanked = blank_effects(located, _caption_fields(options), options.hair is HairMode.metadata)
    warnings = [*located.warnings, *archive.rejections(rejected, allowed_terms(located), blanked)]
    warnings += _mostly_blank(chosen, _caption_fields(options), located)
    warnings += foreign_warnings
    found, others = find_images(located.image_dirs)

    for identifier in sorted(set(found) - set(rows["id"])):
        _skip(skipped, identifier, found[identifier], NO_ROW)
    keep = []
    seen: set[str] = set()
    duplicates: list[str] = []
    unusable = unusable_files(located.image_dirs)
    generated = set(chosen.index[generated_rows(raw)[chosen.index]])
    for index, identifier in chosen["id"].items():
        if not identifier:
            _skip(skipped, identifier, None, "empty id")
        elif index in generated:
            _skip(skipped, identifier, found.get(identifier), GENERATED_SKIP)
        elif _unsafe(identifier):
            _skip(skipped, identifier, None, "unsafe id (path separator or '..')")
        elif identifier in seen:
            duplicates.append(identifier)
            _skip(skipped, identifier, found.get(identifier), DUPLICATE_ID)
        elif identifier not in found:
            seen.add(identifier)
            other, reason = unusable.get(identifier, (None, NO_FILE))
            _skip(skipped, identifier, other, reason)
        else:
            seen.add(identifier)
            keep.append(index)
    warnings += _only_below(located, out, skipped)
    warnings += _case_only(skipped, found)
    dropped = sum(row["reason"] == GENERATED_SKIP for row in skipped)
    if dropped:
        what = ("describes a generated image" if dropped == 1
                else "describe generated images")
        warnings.append(f"{files.counted(dropped, 'selected row')} {what} "
                        "(image_manipulation = synthetic) and "
                        f"{files.agreeing(dropped, 'was')} skipped: a LoRA must not train on "
                        "its own output")
    if duplicates:
        shown = ", ".join(sorted(set(duplicates))[:5])
        warnings.append(f"{files.counted(len(duplicates), 'duplicate id row')} kept once: "
                        f"{shown}")
    warnings += _disagreeing(raw, rows, chosen["id"])
    odd = _odd_targets(raw, located, options)
    warnings += odd
    unmatched = unpartnered(located, chosen["id"])
    if unmatched and located.partner is not None:
        warnings.append(f"{files.counted(len(unmatched), 'selected id')} of "
                        f"{located.metadata.name} {files.agreeing(len(unmatched), 'has')} no "
                        f"row in {located.partner.name} (first: {unmatched[0]}), so no sex, "
                        f"age or site for their captions: use the two CSVs of one "
                        f"{pair_challenge(located)} download")
    warnings += _several_classes(raw.loc[chosen.index], chosen["id"])

    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    cache = _load_cache(state / CACHE_FILE)
    selected_ids = chosen.loc[keep, "id"]
    chosen = chosen.loc[keep]  # twins too: the copy kept must be one that reads
    # absolute(), not resolve(): a symlinked image (HF cache, git-annex) keeps its own name
    paths = [found[i].absolute() for i in chosen["id"]]
    keys = _keys(paths, options.hair.detector)
    try:
        workers = workers or default_workers()
        scans, fresh = _scan_all(keys, options.hair.detector, cache, workers, on_progress,
                                 state / JOURNAL_FILE)
        replaced, also = _good_copies(list(chosen["id"]), keys, scans, found, others,
                                      options.hair.detector, cache, workers,
                                      state / JOURNAL_FILE)
    finally:  # an interrupted run keeps what it scanned
        _save_cache(state / CACHE_FILE, cache)
    fresh |= also
    paths = [Path(key[0]) for key in keys]
    warnings += clash_warnings(found, {stem: copies for stem, copies in others.items()
                                       if stem not in replaced})
    warnings += _replaced_warning(found, replaced)
    good = []
    for (index, identifier), path, result in zip(chosen["id"].items(), paths, scans,
                                                 strict=True):
        if result.reason:
            _skip(skipped, identifier, path, result.reason)
        else:
            good.append((index, path, result))
    twin, unlisted = twins({str(chosen.at[index, "id"]): path for index, path, _ in good},
                           located)
    warnings += unlisted
    good = [item for item in good if str(chosen.at[item[0], "id"]) not in twin]
    warnings += _skip_twins(twin, selected_ids, found, skipped)
    scanned = len(good)
    if terms.measured and good:
        picked = query.evaluate(raw.loc[[index for index, _, _ in good]].assign(**{
            name: values for name, values in _measurements(good, options).items()
            if name in query.measured(raw.columns)}), str(options.query),
            example=query_example(located, list(raw.columns)))
        for (index, path, _), kept in zip(good, picked, strict=True):
            if not kept:
                _skip(skipped, chosen.at[index, "id"], path, MEASURED_SKIP)
        good = [item for item, kept in zip(good, picked, strict=True) if kept]

    table, agreement = _manifest(chosen, good, options)
    skipped_frame = pd.DataFrame(skipped, columns=list(manifest.SKIPPED_COLUMNS))
    if table.empty:  # refused before the layout changes: an earlier good one stays as it was
        raise UserError(_refusal(out, located, options, len(rows), selected, scanned,
                                 skipped_frame, found, odd))
    warnings += _small(table, options.resolution)
    warnings += _elongated(table, options.resolution)
    warnings += _transparent(good, chosen)
    warnings += _colourless(good, chosen)
    warnings += _turned(good, chosen)
    warnings += _decoder_warned(good, chosen)
    warnings += _no_validation(table, options)
    warnings += _no_patient(table, options, located)
    warnings += _hair_from_detector(table, options, located, raw)
    image_types = _image_types(raw, table)
    warnings += _mixed_types(image_types)
    diagnosis = archive.common_node(table["diagnosis"])
    warnings += _class_mismatch(table, options)
    train = int((table["split"] == "train").sum())
    repeats = layout.repeats_for(train, repeats=options.repeats,
                                 target_steps=options.target_steps, epochs=options.epochs,
                                 batch_size=options.batch_size)
    train_dir, done = _write_layout(out, table, repeats.repeats, options, placed, fresh)
    warnings += _unlinked(out, [image for _, image in done.get(layout.Placed.unlinked, [])])
    warnings += _unlinkable(out, [source for source, _ in
                                  done.get(layout.Placed.unlinkable, [])])
    if _relinked(cache, keys, options.hair.detector):  # else the file saved above holds it
        _save_cache(state / CACHE_FILE, cache)

    folder = PreparedFolder(out)
    manifest.write(skipped_frame, folder.skipped)
    manifest.write(table, folder.manifest)
    config = render.dataset_config(train_dir.resolve(), repeats=repeats.repeats,
                                   class_tokens=options.trigger, resolution=options.resolution,
                                   batch_size=options.batch_size)
    render.write_toml(config, folder.dataset_config)
    folder.write_state(located, options, agreement, diagnosis)
    _complete(out)
    (state / REFUSED_SKIPPED_FILE).unlink(missing_ok=True)
    return PrepareResult(
        out=out, source=located, manifest=table, skipped=skipped_frame, repeats=repeats,
        steps_per_epoch=layout.steps_per_epoch(train, repeats.repeats, options.batch_size),
        train_dir=train_dir, dataset_config=folder.dataset_config, options=options,
        scanned=len(fresh), reused=len(set(paths) - fresh), warnings=tuple(warnings),
        hair_agreement=agreement, diagnosis=diagnosis, dropped=scanned - len(good),
        image_types=image_types)


def _refusal(out: Path, source: Source, options: PrepareOptions, rows: int, selected: int,
             scanned: int, skipped: pd.DataFrame, found: Mapping[str, Path],
             odd: Sequence[str]) -> str:
    """Why no image was prepared (`odd`: _odd_targets' warning); the skipped list goes to
    skipped.csv on a first run, and beside it (REFUSED_SKIPPED_FILE) when an earlier run's
    layout is kept."""
    folder = PreparedFolder(out)
    earlier = folder.manifest.exists()
    listed = out / STATE_DIR / REFUSED_SKIPPED_FILE if earlier else folder.skipped
    manifest.write(skipped, listed)
    reason = (f"no images were prepared: --query {options.query!r} left out all {scanned} "
              f"measured images; loosen its terms on {', '.join(query.MEASURED)}" if scanned
              else _why_empty(source, options, rows, selected, skipped, found, listed, odd))
    return reason + (f"; {out} keeps its earlier layout" if earlier else "")


def _no_validation(table: pd.DataFrame, options: PrepareOptions) -> list[str]:
    """A warning when --val-frac asked for validation images and the split could give none."""
    if options.val_frac <= 0 or (table["split"] == "val").any():
        return []
    return [f"--val-frac {options.val_frac} gave no validation images: a patient's images "
            f"stay on one side, and the {files.counted(len(table), 'image')} here cannot be "
            "split that way "
            "(one patient, or too few); train without --val-frac or add patients"]


def _no_patient(table: pd.DataFrame, options: PrepareOptions, source: Source) -> list[str]:
    """A warning when --val-frac splits images that have no patient id one by one, so one
    patient's images may land on both sides."""
    blank = int(table["patient_id"].isna().sum())
    if options.val_frac <= 0 or not blank:
        return []
    layout = lacked_by(source, "patient_id")
    if layout is not None:
        return [f"{layout} names no patient: --val-frac splits its images one by one, so one "
                "patient's images may fall on both sides; map a column of patient ids with "
                "--column patient_id=COLUMN if you have one"]
    column = source.columns["patient_id"]
    return [f"{blank} of {files.counted(len(table), 'image')} {files.agreeing(blank, 'has')} "
            f"no patient id (column {column} is blank): "
            "--val-frac splits such images one by one, so one patient's images may fall on both "
            f"sides; fill in {column} or map another with --column patient_id=COLUMN"]


def _hair_from_detector(table: pd.DataFrame, options: PrepareOptions, source: Source,
                        raw: pd.DataFrame) -> list[str]:
    """A warning when --hair metadata found no `hairy` tag for any prepared image, so every
    hair tag came from the detector (the summary counts each origin)."""
    if options.hair is not HairMode.metadata or table["metadata_hairy"].notna().any():
        return []
    where = ("has no hairy column" if "hairy" not in raw.columns else
             "has no hairy tag for any prepared image")
    return [f"--hair metadata: {source.metadata.name} {where}, so every hair tag came from the "
            f"{options.hair.detector.value} detector"]


def _image_types(raw: pd.DataFrame, table: pd.DataFrame) -> tuple[tuple[str, int], ...]:
    """How many of the prepared images (`table`, the manifest) each image type holds, where
    the source has the column."""
    if IMAGE_TYPE not in raw.columns:
        return ()
    counts = table[IMAGE_TYPE].fillna("missing").value_counts()
    return tuple((str(name), int(count)) for name, count in counts.items())


def _mixed_types(counts: tuple[tuple[str, int], ...]) -> list[str]:
    """A warning when the prepared images are of several image types (dermoscopic, clinical,
    TBP tile): the LoRA learns their looks as one; it suggests keeping the dermoscopic ones."""
    known = [(name, count) for name, count in counts if name != "missing"]
    if len(known) < 2:
        return []
    shown = ", ".join(f"{name} {count}" for name, count in known)
    names = [name for name, _ in known]
    keep = DERMOSCOPIC if DERMOSCOPIC in names else names[0]
    return [f"the prepared images mix image types ({shown}): a LoRA learns them as one look; "
            f"keep one with --query '{IMAGE_TYPE} == \"{keep}\"'"]


def _disagreeing(raw: pd.DataFrame, rows: pd.DataFrame, ids: pd.Series) -> list[str]:
    """A warning for the selected ids whose rows (any, selected or not) disagree on what is
    trained (diagnosis, target, sex, age, site): the first row's values are used, silently
    right or wrong."""
    compared = rows[["id", "diagnosis", "sex", "age", "site"]].assign(
        **{name: raw[name] for name in ("target",) if name in raw.columns})
    repeated = compared[compared["id"].isin(set(ids)) & compared["id"].duplicated(keep=False)]
    if repeated.empty:
        return []
    distinct = repeated.astype("string").fillna("").groupby("id").nunique()
    clash = distinct[(distinct > 1).any(axis=1)]
    if clash.empty:
        return []
    first = str(clash.index[0])
    columns = ", ".join(name for name in clash.columns if clash.at[first, name] > 1)
    return [f"{files.counted(len(clash), 'image id')} {files.agreeing(len(clash), 'has')} "
            f"rows that disagree (first: {first}, on {columns}); the first row of each is "
            "used: correct or remove the wrong rows in the metadata"]


def _odd_targets(raw: pd.DataFrame, source: Source, options: PrepareOptions) -> list[str]:
    """A warning for ISIC 2020 rows whose target is neither 0 nor 1 (`yes`, `True`, `2`) when
    the default selection (target == 1) leaves them out."""
    import pandas as pd

    if source.kind != ISIC2020 or "target" not in raw.columns or options.query \
            or options.diagnosis:
        return []
    target = raw["target"]
    written = target.astype("string").str.strip()
    odd = written[~target_numbers(target).isin([0, 1]) & written.fillna("").ne("")]
    if odd.empty:
        return []
    first = target[odd.index[0]]
    taking = (f"{first:g}" if pd.api.types.is_numeric_dtype(target.dtype)
              else f'"{first}"')  # as the column holds it, or the query matches none
    return [f"{files.counted(len(odd), 'row')} of {source.metadata.name} "
            f"{files.agreeing(len(odd), 'has')} a target that is neither 0 nor 1 (first: "
            f"{odd.iloc[0]!r}) and "
            f"{files.agreeing(len(odd), 'was')} not selected: write 1 for a melanoma, or "
            f"choose rows with --query (--query 'target == {taking}')"]


def _several_classes(raw: pd.DataFrame, ids: pd.Series) -> list[str]:
    """A warning for the selected rows of a one-hot ground truth (ISIC 2019, 2018, 2017) that
    mark more than one class (MEL and NV): each is read as its first class, perhaps the wrong
    one."""
    import pandas as pd

    columns = [name for name in (*archive.ONE_HOT, *archive.PART3) if name in raw.columns]
    marked = pd.DataFrame({name: pd.to_numeric(raw[name], errors="coerce").eq(1)
                           for name in columns}, index=raw.index)
    several = marked[marked.sum(axis=1) > 1] if columns else marked
    if several.empty:
        return []
    first = several.index[0]
    classes = [name for name in columns if several.at[first, name]]
    return [f"{files.counted(len(several), 'selected row')} "
            f"{files.agreeing(len(several), 'has')} more than one class set (first: "
            f"{ids[first]}: {', '.join(classes)}), each read as its "
            f"first ({classes[0]}): correct the ground truth, or leave them out with --query "
            f"'{' + '.join(columns)} == 1'"]


def _skip_twins(twin: Twins, ids: pd.Series,
                found: Mapping[str, Path], skipped: list[dict[str, str]]) -> list[str]:
    """List each of `twin` (id -> the id kept and how they are known to be one image) in
    skipped.csv, naming the one kept; a warning says how many."""
    for identifier in ids[ids.isin(set(twin))]:
        kept, how = twin[identifier]
        _skip(skipped, identifier, found[identifier], twin_reason(kept, how))
    if not twin:
        return []
    return [f"{files.counted(len(twin), 'selected image')} "
            f"{'duplicates' if len(twin) == 1 else 'duplicate'} another ({counted(twin)}) and "
            f"{files.agreeing(len(twin), 'was')} skipped: one "
            "copy of each is kept, so none is trained twice or put in both train and val (see "
            "skipped.csv)"]


def _class_mismatch(table: pd.DataFrame, options: PrepareOptions) -> list[str]:
    """A warning for each diagnosis the class name or the trigger names (the default trigger
    means melanoma) that prepared images are known not to be, counted by their diagnosis."""
    trigger = (archive.MELANOMA if options.trigger == captions.DEFAULT_TRIGGER
               else archive.diagnosis_path(options.trigger))
    claims: dict[str, list[str]] = {}
    for node, naming in ((archive.diagnosis_path(options.class_name.replace("_", " ")),
                          f"their class folder says {options.class_name!r}"),
                         (trigger, f"captions use the trigger {options.trigger!r}")):
        if node is not None:
            claims.setdefault(node, []).append(naming)
    warnings = []
    known = table["diagnosis"].dropna().astype(str)
    for node, said in claims.items():
        above = known.map(lambda path, node=node: node.startswith(path + ":")).astype(bool)
        other = known[~archive.under(known, node) & ~above]
        if len(other):
            warnings.append(f"{len(other)} of {len(table)} prepared images are not "
                            f"{_node_name(node)} but {_diagnosis_counts(other)}, while "
                            f"{' and '.join(said)}: pass --class-name and --trigger that name "
                            "what they are, or leave the others out with --diagnosis or --query")
    return warnings


def _node_name(path: str) -> str:
    """A diagnosis hierarchy path as a summary shows it: its deepest level."""
    return path.rsplit(":", 1)[-1]


def _diagnosis_counts(paths: pd.Series) -> str:
    """How many images each diagnosis holds, commonest first (at most five named)."""
    counts = paths.map(_node_name).value_counts()
    shown = ", ".join(f"{name} {count}" for name, count in counts.head(5).items())
    return shown + (f" and {len(counts) - 5} more" if len(counts) > 5 else "")


def _why_empty(source: Source, options: PrepareOptions, rows: int, selected: int,
               skipped: pd.DataFrame, found: Mapping[str, Path], listed: Path,
               odd: Sequence[str]) -> str:
    """Why no image was prepared: no rows, no selected rows (targets that are neither 0 nor 1
    named), or the commonest skip reasons."""
    if not rows:
        return (f"no images were prepared: {source.metadata} holds only a header, no rows; "
                "give the complete metadata CSV of the download")
    if not selected and odd:
        return f"no images were prepared (the default selection is target 1): {odd[0]}"
    if not selected:
        how = " and ".join(f"--{name} {value!r}" for name, value in
                           (("query", options.query), ("diagnosis", options.diagnosis)) if value)
        return (f"no images were prepared: {how or 'the default selection (melanomas)'} "
                f"matched none of the {files.counted(rows, 'row')} of {source.metadata}; "
                "choose rows with --query or --diagnosis")
    orphan = skipped["reason"] == NO_ROW
    counts = skipped.loc[~orphan, "reason"].value_counts()
    reasons = ", ".join(reason_counted(count, reason) for reason, count in counts.head(3).items())
    if orphan.any():
        reasons += f"; {int(orphan.sum())} image files have no metadata row"
    hint = ""
    if counts.index[0] == NO_FILE:
        folders = ", ".join(map(str, source.image_dirs)) or "no folder"
        near = (*source.image_dirs, source.metadata.parent)
        archives = sorted({path for folder in near for path in folder.glob("*.zip")})
        packed = sorted({path for folder in near for path in folder.glob("*.hdf5")})
        if not found and packed:  # ISIC 2024's Kaggle download packs them this way too
            hint = (f"; no .jpg/.jpeg/.png files in {folders}, but {packed[0].name} is there: "
                    "prepare does not read images packed in HDF5: take the download's "
                    "train-image/ folder of JPEG files (or write each HDF5 entry out as "
                    "ISIC_….jpg) and pass --images DIR")
        elif not found and archives:  # the download, not yet extracted
            hint = (f"; no .jpg/.jpeg/.png files in {folders}, but {archives[0].name} is there: "
                    f"extract it (unzip {shlex.quote(str(archives[0]))} -d "
                    f"{shlex.quote(str(archives[0].parent))}) and run this again")
        elif not found:
            hint = f"; no .jpg/.jpeg/.png files in {folders}" + (
                ": pass --images DIR" if source.images is None else " or below it")
        else:
            hint = _unmatched_ids(skipped.loc[skipped["reason"] == NO_FILE, "id"],
                                  source.columns["id"], found)
    return (f"no images were prepared from {files.counted(selected, 'selected row')}: "
            f"{reasons} (see {listed}){hint}")


def _unmatched_ids(ids: pd.Series, column: str, found: Mapping[str, Path]) -> str:
    """Why no id of `column` names a file: ids that are all whole numbers written as decimals
    (1.0: a spreadsheet's number column) are to be saved as text, which no other column
    fixes; else the column may be the wrong one."""
    first = str(ids.iloc[0])
    if not ids.astype(str).str.fullmatch(r"\d+\.0+").all():
        return (f"; file names (e.g. {min(found)}) do not match the ids (e.g. {first}) of "
                f"column {column}: map another with --column id=COLUMN")
    whole = first.split(".", 1)[0]
    like = f"for file {whole}" if whole in found else f"where the files are named like {min(found)}"
    return (f"; the ids of column {column} look like numbers a spreadsheet reformatted ({first} "
            f"{like}): save that column as text, the digits as the file names have them, and "
            "run this again")


def reason_for(count: int, reason: str) -> str:
    """`reason` with its fix (after the last ": ") said of `count` ids: "rename them without
    the dot", "correct the ids or rename the files"."""
    head, _, fix = reason.rpartition(": ")
    if count == 1 or fix.split(" ", 1)[0] not in _FIX_VERBS:
        return reason
    return f"{head}: {_SINGULAR.sub(lambda word: _PLURALS[word[1]], fix)}"


def reason_counted(count: int, reason: str) -> str:
    """`count` skips of `reason`, counted by its noun where it begins with one ("3 image files
    named in another letter case", "2 duplicate ids"), as ids where it says what they have
    ("2 ids with only a .tif file"), and its fix in the same number (reason_for)."""
    reason = reason_for(count, reason)
    for noun in _COUNTED_NOUNS:
        if reason == noun or reason.startswith(f"{noun} "):
            return files.counted(count, noun) + reason.removeprefix(noun)
    if reason.startswith(("only ", "no ")):
        return f"{files.counted(count, 'id')} with {reason}"
    return f"{count} {reason}"


def _agreement(frame: pd.DataFrame, detected: pd.Series,
               options: PrepareOptions) -> HairAgreement | None:
    """The detector against the source's `hairy` tag on the rows that have both."""
    both = frame["metadata_hairy"].notna() & frame["hair_score"].notna()
    if options.hair is HairMode.off or not both.any():
        return None
    tagged = frame.loc[both, "metadata_hairy"].astype(bool)
    found = detected[both].astype(bool)
    return HairAgreement(detector=options.hair.detector.value, compared=int(both.sum()),
                         agree=int((tagged == found).sum()), metadata_hairy=int(tagged.sum()),
                         detector_hairy=int(found.sum()))


def _small(table: pd.DataFrame, resolution: int) -> list[str]:
    """A warning for the photos too small for the training resolution (MAX_UPSCALE)."""
    least = (resolution // MAX_UPSCALE) ** 2
    area = table["width"].astype("float64") * table["height"].astype("float64")
    small = area < least
    if not small.any():
        return []
    smallest = table.iloc[int(area.to_numpy().argmin())]
    count = int(small.sum())
    return [f"{count} of {files.counted(len(table), 'image')} {files.agreeing(count, 'is')} "
            f"smaller than a quarter of the {resolution}x{resolution} training area (smallest: "
            f"{smallest['id']}, "
            f"{smallest['width']}x{smallest['height']}); sd-scripts enlarges them more than "
            f"{MAX_UPSCALE}x and they train blurred: leave them out with --query "
            f"'width * height >= {least}' or prepare with a lower --resolution"]


def _flagged(good: list[tuple[Any, Path, Scan]], chosen: pd.DataFrame,
             flag: Callable[[Scan], bool]) -> list[str]:
    """The ids, sorted, of the scanned images whose scan `flag` holds for."""
    return sorted(str(chosen.at[index, "id"]) for index, _, result in good if flag(result))


def _transparent(good: list[tuple[Any, Path, Scan]], chosen: pd.DataFrame) -> list[str]:
    """A warning for the images with transparent pixels: sd-scripts drops the alpha channel and
    trains on the colours stored under them, which a viewer does not show."""
    ids = _flagged(good, chosen, lambda result: result.transparent)
    if not ids:
        return []
    them = files.agreeing(len(ids), "it")
    return [f"{len(ids)} of {len(good)} images {files.agreeing(len(ids), 'has')} transparent "
            f"pixels (first: {ids[0]}); sd-scripts drops the transparency and trains on the "
            f"colours stored under {them}, which viewers do not show: flatten {them} onto the "
            "background you want (e.g. `magick IN.png -background white -flatten OUT.png`) and "
            "prepare again"]


def _colourless(good: list[tuple[Any, Path, Scan]], chosen: pd.DataFrame) -> list[str]:
    """A warning for the photos with no colour (greyscale or 1-bit): their skin tone cannot be
    measured, and a LoRA trained on them draws grey skin."""
    ids = _flagged(good, chosen, lambda result: result.colourless)
    if not ids:
        return []
    them = files.agreeing(len(ids), "it")
    return [f"{len(ids)} of {len(good)} images {files.agreeing(len(ids), 'has')} no colour "
            f"(greyscale, first: {ids[0]}): skin tone cannot be measured, and a LoRA trained "
            f"on {them} draws grey skin: leave {them} out of the metadata or the images folder "
            "unless grey photos are what you want"]


def _turned(good: list[tuple[Any, Path, Scan]], chosen: pd.DataFrame) -> list[str]:
    """A warning for the photos with an EXIF orientation: viewers show them turned or
    mirrored, while they are measured, copied and trained (sd-scripts opens them with Pillow,
    which applies no orientation) as their pixels are stored."""
    turned = sorted((str(chosen.at[index, "id"]), result.orientation)
                    for index, _, result in good if result.orientation != 1)
    if not turned:
        return []
    count = len(turned)
    return [f"{count} of {len(good)} images {files.agreeing(count, 'has')} an EXIF "
            f"orientation (first: {turned[0][0]}, {TURNS[turned[0][1]]}): viewers show "
            f"{files.agreeing(count, 'it')} so, but sd-scripts trains "
            f"{files.agreeing(count, 'it')} as stored, as prepare measures "
            f"{files.agreeing(count, 'it')}; dermoscopy has no up, so only where up matters "
            "turn the pixels (e.g. `exiftran -ai FILE.jpg` or `magick mogrify -auto-orient "
            "FILE`) and prepare again"]


def _decoder_warned(good: list[tuple[Any, Path, Scan]], chosen: pd.DataFrame) -> list[str]:
    """A warning for the JPEGs the decoder called corrupt but read whole: flipped bits can end
    the image data early and show as stripes or a colour shift to the bottom of the photo."""
    said = sorted((str(chosen.at[index, "id"]), result.decoder) for index, _, result in good
                  if result.decoder)
    if not said:
        return []
    return [f"{len(said)} of {len(good)} images drew the JPEG decoder's warning and "
            f"{files.agreeing(len(said), 'is')} used as decoded (first: {said[0][0]}: "
            f"\"{said[0][1]}\"); look at {files.agreeing(len(said), 'it')} and replace any "
            "that shows stripes, smears or a colour shift towards the bottom"]


def _elongated(table: pd.DataFrame, resolution: int) -> list[str]:
    """A warning for the photos more elongated than sd-scripts' most elongated bucket (the
    dataset config's bucket range, as its make_bucket_resolutions builds it): it crops each to
    that bucket's shape, so training sees only a strip of it."""
    low, high = render.bucket_range(resolution)
    step = render.BUCKET_STEP
    limit = min(high, resolution * resolution // low // step * step) / low
    width = table["width"].astype("float64")
    height = table["height"].astype("float64")
    ratio = (width / height).where(width >= height, height / width)
    over = ratio > limit
    if not over.any():
        return []
    worst = table.iloc[int(ratio.to_numpy().argmax())]
    count = int(over.sum())
    them = files.agreeing(count, "it")
    return [f"{count} of {files.counted(len(table), 'image')} {files.agreeing(count, 'is')} "
            f"more elongated than {limit:g}:1, the "
            f"most elongated bucket at --resolution {resolution} (most: {worst['id']}, "
            f"{worst['width']}x{worst['height']}); sd-scripts crops {them} to that bucket and "
            f"trains on a part of {'it' if count == 1 else 'each'}: crop {them}, or leave "
            f"{them} out with --query 'width <= {limit:g} * height and height <= {limit:g} * "
            "width'"]


def _mostly_blank(chosen: pd.DataFrame, used: list[str], source: Source) -> list[str]:
    """A warning for each caption field blank in more than half the selected rows."""
    warnings = []
    for name in used:
        blank = int(chosen[name].isna().sum())
        layout = lacked_by(source, name)
        if layout is not None:
            warnings.append(f"{layout} has no {name}, so the captions go without it (drop "
                            f"{{{name}}} from --caption-template to say so)")
        elif 2 * blank > len(chosen):
            column = source.columns[name]
            warnings.append(f"{name} is blank in {blank} of {len(chosen)} selected rows, so "
                            f"their captions go without it: check column {column} of "
                            f"{holding(source, column).name} or map another with --column "
                            f"{name}=COLUMN")
    return warnings


def _manifest(chosen: pd.DataFrame, good: list[tuple[Any, Path, Scan]],
              options: PrepareOptions) -> tuple[pd.DataFrame, HairAgreement | None]:
    """The manifest rows for the usable images, sorted by id, captions rendered whole; and the
    detector's agreement with the source's hair tag."""
    import pandas as pd

    from medsynth_kohya.data.split import patient_split

    frame = chosen.loc[[index for index, _, _ in good]].copy()
    frame["source"] = [str(path) for _, path, _ in good]
    if options.challenge_sites:
        frame["site"] = frame["site"].replace(archive.CHALLENGE_SITE)
    measured = _measurements(good, options)
    for name, values in measured.items():
        frame[name] = values
    detected = pd.Series(measured["hairy"].fillna(False), index=frame.index, dtype=bool)
    agreement = _agreement(frame, detected, options)
    if options.hair is HairMode.metadata:
        frame["hairy"] = frame["metadata_hairy"].fillna(detected).astype(bool)
    else:
        frame["hairy"] = detected
    frame = frame.sort_values("id", kind="stable")
    frame["split"] = patient_split(frame, options.val_frac, options.seed)
    frame["caption"] = [
        captions.render_caption(options.caption_template, captions.caption_values(
            None if pd.isna(row.sex) else str(row.sex),
            None if pd.isna(row.age) else int(row.age),
            None if pd.isna(row.site) else str(row.site),
            options.trigger, bool(row.hairy),
            None if pd.isna(row.skin_tone) else str(row.skin_tone),
            [name for name in ARTEFACTS if _true(getattr(row, name))]))
        for row in frame.itertuples(index=False)
    ]
    return manifest.conform(frame), agreement


def _measurements(good: list[tuple[Any, Path, Scan]], options: PrepareOptions
                  ) -> dict[str, Any]:
    """Each measurement (query.MEASURED) of the usable images, as a column; `hairy` is the
    detector's verdict, blank with --hair off."""
    import pandas as pd

    scans = [result for _, _, result in good]
    values: dict[str, list[Any]] = {
        name: [getattr(result, name) for result in scans]
        for name in ("width", "height", "hair_score", "ita", "skin_tone", *ARTEFACTS)}
    values["hairy"] = [None if result.hair_score is None
                       else is_hairy(result.hair_score, options.hair.detector)
                       for result in scans]
    return {name: pd.array(values[name], dtype=dtype) for name, dtype in query.DTYPES.items()}


def _true(value: Any) -> bool:
    """A nullable boolean cell as True or False (blank is False)."""
    import pandas as pd

    return not pd.isna(value) and bool(value)


def _write_layout(out: Path, table: pd.DataFrame, repeats: int, options: PrepareOptions,
                  placed: _Placed, fresh: set[Path]
                  ) -> tuple[Path, dict[layout.Placed, list[tuple[Path, Path]]]]:
    """Place images (`options.link`) and write captions for every manifest row, recording
    each image's stamp as placed (what tells a later hand edit); remove what earlier runs
    `placed` and this one does not. The files about to be written are recorded as unfinished
    first, with the content each gets, so a run killed half-way leaves nothing its re-run would
    take for the user's, while a hand edit of one is still told (`_edited`; `_complete` ends
    that). A copy of a source scanned anew (`fresh`) is made again where it holds other bytes.
    Returns the training folder and the (source, image) pairs `layout.place` did not place
    as asked, by what it did instead."""
    rows = []
    for row in table.itertuples(index=False):
        folder = layout.class_folder(out, str(row.split), repeats, options.class_name)
        source = Path(str(row.source))
        rows.append((source, layout.image_file(folder, str(row.id), source),
                     folder / f"{row.id}.txt", str(row.caption), _size(row.width, row.height)))
    wanted = {path for _, image, text, _, _ in rows for path in (image, text)}
    owned = placed.owned
    unfinished = {path: set(contents) for path, contents in placed.unfinished.items()}
    for _, image, text, caption, size in rows:
        unfinished.setdefault(image, set()).add(size)
        unfinished.setdefault(text, set()).add(caption)
    files.write_json(PreparedFolder(out).unfinished_file,
                     {str(path.relative_to(out)): sorted(contents)
                      for path, contents in sorted(unfinished.items())})
    train_dir = layout.class_folder(out, "train", repeats, options.class_name)
    train_dir.mkdir(parents=True, exist_ok=True)
    stamps: dict[Path, layout.Stamp | None] = {}
    done: dict[layout.Placed, list[tuple[Path, Path]]] = {}
    for source, image, text, caption, _ in rows:
        image.parent.mkdir(parents=True, exist_ok=True)
        if source in fresh and _stale(image, source):
            image.unlink()
        try:
            done.setdefault(layout.place(source, image, options.link), []).append(
                (source, image))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(_no_space(out, [row[0] for row in rows], options.link)) from None
        layout.write_text(text, caption)
        stamps.update({image: layout.stamp(image), text: None})
    for root in (layout.TRAIN_ROOT, layout.VAL_ROOT):
        layout.prune(out / root, wanted, removable=lambda path: _ours(path, owned))
    _record_written(out, stamps)  # still unfinished: every file is in both lists
    train_dir.mkdir(parents=True, exist_ok=True)
    return train_dir, done


def _stale(copy: Path, source: Path) -> bool:
    """Whether `copy` has its source's size and mtime but other bytes: the source was rewritten
    with both restored, which `layout.place` takes for the copy it made."""
    if copy.is_symlink() or not copy.is_file() or _shared(copy, source):
        return False
    return layout.stamp(copy) == layout.stamp(source.resolve()) and not _same_bytes(copy, source)


def _unlinked(out: Path, images: list[Path]) -> list[str]:
    """A warning when images that were hard links to their sources (an earlier version's
    layout, or --link hard) are copies now: the disk they take, and how to keep links."""
    if not images:
        return []
    size = files.size_text(sum(path.stat().st_size for path in images))
    return [f"{files.counted(len(images), 'image')} under {out} were hard links to the source "
            f"images and are now copies, so that an edit of one never changes your download "
            f"({size}, less where the file system clones them); pass --link hard to keep "
            "them linked"]


def _unlinkable(out: Path, sources: list[Path]) -> list[str]:
    """A warning when --link hard made copies of `sources` (no hard link could be made): the
    disk they take, and why, so the user is not left believing they take none."""
    if not sources:
        return []
    size = files.size_text(sum(path.stat().st_size for path in sources))
    apart = out.stat().st_dev != sources[0].resolve().stat().st_dev
    return [f"{files.counted(len(sources), 'image')} {files.agreeing(len(sources), 'was')} "
            f"copied ({size}) although --link hard was given: they could not be hard-linked "
            + ("(hard links cannot cross file systems): choose an --out on the images' file "
               "system to link them" if apart else "(the file system refused)")]


def _no_space(out: Path, sources: list[Path], link: layout.LinkMode) -> str:
    """Why the layout's images did not fit under `out`: their total size, and the ways on
    (hard links only where `out` is on the images' own file system: they cannot cross one)."""
    total = files.size_text(sum(path.stat().st_size for path in sources))
    beside = out.stat().st_dev == sources[0].stat().st_dev
    if link is layout.LinkMode.hard or not beside:
        way = ("choose another --out, or one on the images' own file system with --link hard, "
               "where hard links take no space")
    else:
        way = ("choose another --out, or pass --link hard to hard-link them (no extra disk; an "
               "edit of one then changes the source image)")
    return (f"no space left under {out} for copies of the {files.counted(len(sources), 'image')}"
            f" ({total} in all): free space there, {way}; then run this again")


def _complete(out: Path) -> None:
    """Mark the run complete once its manifest is written: the layout files now match it."""
    PreparedFolder(out).unfinished_file.unlink(missing_ok=True)


def _measured(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Summary rows of the image measurements: skin tone (ITA) and artefacts."""
    counts = table["skin_tone"].value_counts()
    tones = [f"{name} {int(counts.get(name, 0))}" for name, _ in TONES]
    missing = int(table["skin_tone"].isna().sum())
    ita = table["ita"].dropna()
    median = f"; median ITA {float(ita.median()):.1f} deg" if len(ita) else ""
    found = ", ".join(f"{name} {int(table[name].fillna(False).sum())}" for name in ARTEFACTS)
    return [("skin tone (ITA)", ", ".join(tones) + (f", unmeasured {missing}" if missing else "")
             + median), ("artefacts", found)]


def _hair_origin(table: pd.DataFrame, options: PrepareOptions) -> str:
    """Where the hair tags came from: the mode, and with --hair metadata how many were the
    source's tag and how many the detector's."""
    if options.hair is not HairMode.metadata:
        return str(options.hair.value)
    tagged = int(table["metadata_hairy"].notna().sum())
    return (f"metadata: source's tag {tagged}, {options.hair.detector.value} detector "
            f"{len(table) - tagged}")


def summary(result: PrepareResult) -> list[tuple[str, str]]:
    """The figures of the end-of-run table, as (label, value) rows."""
    table = result.manifest
    rows: list[tuple[str, str]] = [*described(result.source, table["source"]),
                                   ("selected and prepared", str(len(table)))]
    train = int((table["split"] == "train").sum())
    rows.append(("train / val", f"{train} / {len(table) - train}"))
    reasons = result.skipped["reason"].map(
        lambda reason: "duplicate image (one copy kept)" if str(reason).startswith(
            DUPLICATE_IMAGE) else reason)
    for reason, count in reasons.value_counts().sort_index().items():
        rows.append((f"skipped: {reason}", str(count)))
    if len(table):
        hairy = int(table["hairy"].sum())
        rows.append(("hairy", f"{hairy} ({files.percent(hairy, len(table))}, "
                              f"{_hair_origin(table, result.options)})"))
        agreement = result.hair_agreement
        if agreement is not None:
            rows.append((f"hair detector ({agreement.detector}) vs source's hairy tag",
                         f"{files.percent(agreement.agree, agreement.compared)} agree on "
                         f"{files.counted(agreement.compared, 'image')} "
                         f"(tag {agreement.metadata_hairy}, detector "
                         f"{agreement.detector_hairy} hairy)"))
        for column in ("sex", "site", "fitzpatrick_skin_type"):
            if column == "fitzpatrick_skin_type" and table[column].isna().all():
                continue
            counts = table[column].fillna("missing").value_counts()
            rows.append((column, ", ".join(f"{k} {v}" for k, v in counts.items())))
        known = table["diagnosis"].dropna()
        if result.image_types:
            rows.append(("image type", ", ".join(f"{name} {count}"
                                                 for name, count in result.image_types)))
        rows.append(("diagnosis (ISIC Archive)", result.diagnosis or "none shared" + (
            f" ({_diagnosis_counts(known)})" if len(known) else "")))
        ages = table["age"].dropna()
        spread = (f"{int(ages.min())}-{int(ages.max())}, median {float(ages.median()):g}"
                  if len(ages) else "none")
        rows.append(("age", f"{spread}; missing {int(table['age'].isna().sum())}"))
        rows.extend(_measured(table))
    rows.append(("repeats", str(result.repeats.repeats)))
    rows.append((f"steps per epoch (batch {result.options.batch_size})",
                 str(result.steps_per_epoch)))
    rows.append(("images scanned / reused", f"{result.scanned} / {result.reused}"))
    return rows
