"""`fetch-isic`: the ISIC 2020 training melanomas, their metadata and attribution, via isic-cli.

isic-cli (the ISIC Archive's own client, the optional `fetch` extra) runs as its own command
and writes the layout `prepare` reads: `<isic_id>.jpg` files beside `metadata.csv`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import arguments, files, locks
from medsynth_kohya.data.sources import ARCHIVE_METADATA, IMAGE_SUFFIXES
from medsynth_kohya.errors import UserError, would_stop
from medsynth_kohya.sdscripts import launch

ISIC_API = "https://api.isic-archive.com"
"""What isic-cli talks to; named in the messages while it waits."""
TIMEOUT_S = 120.0
"""Seconds without a new file or byte in OUT before fetch-isic gives up."""
NOT_INSTALLED = ("isic-cli is not installed: pip install 'medsynth-kohya[fetch]' (it provides "
                 "the `isic` command)")
MARK_FILE = ".medsynth-fetch.json"
"""Written into OUT before isic-cli starts: the folder is fetch-isic's, a re-run continues it."""


@dataclass(frozen=True)
class FetchResult:
    """What was (or, in a dry run, would be) downloaded, and how."""

    out: Path
    command: launch.Command
    images: int
    ran: bool
    warnings: tuple[str, ...] = ()

    @property
    def next_step(self) -> str:
        """The `prepare` of what was downloaded, as a shell line."""
        return launch.tool_command("prepare", str(self.out), "--out", "data/melanoma").line()


@arguments.checked
def fetch_isic(out: arguments.PathArg, *, limit: int = 0, search: str = launch.ISIC_MELANOMA_SEARCH,
               collections: tuple[int, ...] = (launch.ISIC_2020_TRAINING,),
               dry_run: bool = False, break_lock: bool = False, timeout: float = TIMEOUT_S,
               on_wait: Callable[[str], None] | None = None) -> FetchResult:
    """Download with `isic image download` into `out` (a re-run skips files it already has),
    holding its lock (locks.py) while isic-cli writes. `on_wait` hears what it waits for;
    after `timeout` seconds without a new file or byte in `out` it gives up."""
    return _fetch(arguments.path(out, "out"), limit, search, collections, dry_run, break_lock,
                  timeout, on_wait or (lambda _: None))


def _fetch(out: Path, limit: int, search: str, collections: tuple[int, ...], dry_run: bool,
           break_lock: bool, timeout: float, say: Callable[[str], None]) -> FetchResult:
    """`fetch_isic`'s work once its arguments are conformed: the checks, then the dry run or
    the download (apart, as mutmut mutates no decorated function)."""
    if limit < 0:
        raise UserError("--limit must be 0 (everything) or more")
    if not timeout > 0:  # nan included: it would never give up
        raise UserError(f"--timeout must be more than 0 seconds (got {timeout:g})")
    command = launch.isic_download_command(out, search=search, collections=collections,
                                           limit=limit)
    missing = shutil.which(command.argv[0]) is None
    if dry_run:
        _claim(out)
        return FetchResult(out, command, 0, ran=False,
                           warnings=would_stop([NOT_INSTALLED] if missing else []))
    if missing:
        raise UserError(NOT_INSTALLED)
    with locks.hold(out, "fetch-isic", break_lock=break_lock, has_force=False) as lock:
        notes = locks.ensure_unread(out, "fetch-isic", break_lock=break_lock,  # an evaluate
                                    has_force=False)
        _claim(out)  # under the lock: what a fetch beside us is writing is no foreign file
        say(f"waiting for isic-cli to reach the ISIC Archive ({ISIC_API}) and download into "
            f"{out}; giving up after {timeout:g} s without a new file")
        files.write_json(out / MARK_FILE, {"tool": "medsynth-kohya", "command": "fetch-isic",
                                           "argv": list(command.argv)})
        code = launch.run_watched(command, out, stall_s=timeout, on_wait=lambda idle: say(
            f"still waiting for isic-cli: nothing new in {out} for {idle:.0f} s "
            f"(gives up at {timeout:g} s)"))
    if code is None:
        raise UserError(f"isic-cli wrote nothing to {out} for {timeout:g} s: check that this "
                        f"machine reaches {ISIC_API} (network, proxy), then run the same "
                        "command again (--timeout to wait longer)")
    if code != 0:
        raise UserError(f"isic image download failed (exit {code}); check the messages above "
                        "and run the same command again")
    images = sum(1 for p in out.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not (out / ARCHIVE_METADATA).is_file():
        wrote = (f"no {ARCHIVE_METADATA} (only {files.counted(images, 'image')})" if images
                 else f"no {ARCHIVE_METADATA} or images")
        raise UserError(f"isic-cli finished but wrote {wrote} into {out}; check its messages "
                        "above (a search that matched no image, an isic-cli that writes "
                        "elsewhere: pip install -U 'medsynth-kohya[fetch]'), then run the same "
                        "command again")
    return FetchResult(out, command, images, ran=True,
                       warnings=tuple(note for note in (lock.note, *notes) if note))


def again(folder: Path) -> launch.Command | None:
    """The fetch-isic that continues the download in `folder` (its recorded --limit kept, the
    only option of isic-cli's it has); None where fetch-isic never started one there."""
    try:
        argv = json.loads((folder / MARK_FILE).read_text(encoding="utf-8")).get("argv")
    except (OSError, ValueError, AttributeError):
        return None
    args = ["fetch-isic", "--out", str(folder)]
    if isinstance(argv, list) and "--limit" in argv[:-1]:
        args += ["--limit", str(argv[argv.index("--limit") + 1])]
    return launch.tool_command(*args)


def _claim(out: Path) -> None:
    """Refuse an OUT that holds files fetch-isic did not download (isic-cli would replace its
    metadata.csv and attribution.txt); an earlier fetch's folder is continued."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and not (out / MARK_FILE).is_file() and locks.foreign_entries(out):
        raise UserError(f"--out {out} is not empty ({locks.holds(locks.foreign_entries(out))}) "
                        "and was not made by medsynth-kohya "
                        "fetch-isic (isic-cli would replace its metadata.csv and "
                        "attribution.txt); choose a new or empty folder")
