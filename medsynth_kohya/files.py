"""File helpers every stage shares: atomic writes, content digests and the header of a
safetensors file (the LoRA sd-scripts writes).

Records, manifests and configs are written to a temporary sibling and renamed over the
target, so a crash or Ctrl-C never leaves half a file behind.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from medsynth_kohya.errors import UserError

FICLONE = 0x40049409
"""Linux's ioctl that makes a file share another's blocks until either is written (btrfs, xfs,
bcachefs; ext4 and tmpfs refuse it)."""
MAX_HEADER = 100_000_000
"""The longest safetensors header read: the safetensors library (so sd-scripts) refuses a
longer one; a LoRA's is well under 1 MB."""
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
"""This machine in a temporary file's name (a short digest: names stay short, hosts unnamed)."""
REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                     errno.ENAMETOOLONG})
"""Errors by which the machine, not the program, refuses a write: no permission, a read-only
file system, no space left, a name longer than the file system allows."""
_TEMPORARY = re.compile(r"\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp(\.[^.]*)?")


@dataclass(frozen=True)
class Writer:
    """Who writes a temporary file: its machine (HOST's digest) and process."""

    host: str
    pid: int


def temporary(path: Path) -> Path:
    """A hidden sibling of `path` unique to this call, named after this machine and process
    (so a later command can tell a writer that died from one still writing: `writer`); it
    keeps the suffix, which writers such as cv2.imwrite read the format from."""
    return path.with_name(f".{path.name}.{HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
                          f"{path.suffix}")


def writer(path: Path) -> Writer | None:
    """The machine and process a `temporary` name was made by; None for any other name."""
    found = _TEMPORARY.fullmatch(path.name)
    return Writer(found["host"], int(found["pid"])) if found else None


class FolderError(UserError):
    """A folder this command cannot create or write in (locks.reading reads such a folder
    unmarked instead)."""


def folder_error(folder: Path, exc: OSError, verb: str = "create") -> FolderError:
    """The one-line refusal of `folder`: what stood in the way (a file on its path, a symlink
    to nothing, or the system's reason) and the fix."""
    reason = blocked_by(folder) or exc.strerror or str(exc)
    return FolderError(f"{folder_problem(folder, reason, verb)}; choose another folder")


def folder_problem(folder: Path, reason: str, verb: str = "create") -> str:
    """What every refusal of `folder` says is wrong, before its fix: "cannot create X: reason"
    (doctor's disk row gives it with a fix of its own)."""
    return f"cannot {verb} {folder}: {reason}"


def blocked_by(folder: Path) -> str | None:
    """What on `folder`'s path stands in the way of making it (its nearest existing part a
    file, or a symlink to nothing or to itself); None when that part is a folder."""
    blocker = next((path for path in (folder, *folder.parents)
                    if path.exists() or path.is_symlink()), None)
    if blocker is not None and not blocker.exists():
        return f"{blocker} is a symlink to {blocker.readlink()}, which does not exist"
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is a file"
    return None


def unmakeable(folder: Path) -> FolderError | None:
    """The FolderError make_folder would raise for `folder` because of a file or a broken
    symlink on its path, found without making anything (a dry run's refusal, doctor's row)."""
    return None if blocked_by(folder) is None else folder_error(folder, OSError())


def near_name(path: Path) -> str:
    """" (did you mean X?)" where `path` does not exist and X does: its first missing part
    replaced by the name beside it alike in letter case, else the closest in spelling with
    the same suffix (a typo in any folder of the path); "" when there is none."""
    parts = path.parts
    index = next((i for i in range(len(parts)) if not Path(*parts[:i + 1]).exists()), None)
    if index is None:
        return ""
    try:
        names = [entry.name for entry in Path(*parts[:index]).iterdir()]
    except OSError:
        return ""
    missing = Path(parts[index])
    same = [name for name in names if name.casefold() == missing.name.casefold()]
    kind = {Path(name).stem: name for name in names if Path(name).suffix == missing.suffix}
    close = same or [kind[stem] for stem in difflib.get_close_matches(missing.stem, list(kind),
                                                                      n=1, cutoff=0.8)]
    if len(close) != 1:
        return ""
    suggestion = Path(*parts[:index], close[0], *parts[index + 1:])
    return f" (did you mean {suggestion}?)" if suggestion.exists() else ""


def ensure_folder(path: Path, fix: str, option: str = "") -> None:
    """Refuse, in one line, a folder argument that is not a folder: "does not exist" only when
    nothing is there, "is a file" when a file is; `fix` says what to give instead."""
    if path.is_dir():
        return
    what = "is a file, not a folder" if path.exists() else f"does not exist{near_name(path)}"
    raise UserError(f"{option} {path} {what}: {fix}".lstrip())


def failed_file(exc: OSError) -> str | None:
    """The file a refused write was writing: the one the error names, else the path whose
    method (`Path.write_bytes`, `Path.open`, …) raised it, as a write to an open file does not
    name its file; None when neither is known."""
    if exc.filename is not None:
        return str(exc.filename)
    named = None
    trace = exc.__traceback__
    while trace is not None:
        owner = trace.tb_frame.f_locals.get("self")
        if isinstance(owner, PurePath):
            named = str(owner)
        trace = trace.tb_next
    return named

def make_folder(folder: Path) -> None:
    """Create `folder` with its parents; one that cannot be made (a file on its path, no
    permission, a read-only or virtual file system) is a FolderError, not a traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise folder_error(folder, exc) from None


@contextmanager
def replacing(path: Path, *, keep_mode: bool = True) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` when the block succeeds, and is removed
    when it fails.

    The name is unique to this call (`temporary`), so processes writing one file at once each
    rename a whole version over it; it sits in the same folder (a rename within one file
    system). One left by a process that was killed is removed by the next command that locks
    the folder (locks.hold). The new version keeps the permissions of the file it replaces (a
    manifest the user made private stays so), unless `keep_mode` is False (a hard link or a
    clone, whose mode is its source's).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    written = temporary(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if keep_mode and path.is_file() else None
        yield written
        if mode is not None:
            written.chmod(mode)
        written.replace(path)
    finally:
        written.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write `data` as JSON atomically (paths and dates as strings)."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=str))


def clone(source: Path, target: Path) -> None:
    """Make `target` a copy of `source` that costs no disk where the file system can share
    blocks (a copy-on-write clone), a byte copy elsewhere; with the source's times (a re-run
    tells an unchanged copy by them) and mode, writable by its owner (a copy of a read-only
    git-annex object can still be cropped in place)."""
    try:
        import fcntl

        with source.open("rb") as read, target.open("wb") as write:
            fcntl.ioctl(write.fileno(), FICLONE, read.fileno())
    except (ImportError, OSError):  # no clones here (ext4, tmpfs, Windows): copy the bytes
        shutil.copyfile(source, target)
    shutil.copystat(source, target)
    target.chmod(stat.S_IMODE(target.stat().st_mode) | stat.S_IWUSR)


def blocks(path: Path) -> Iterator[bytes]:
    """A file's content in 1 MiB blocks, so digests of a large file (the LoRA) never hold it
    whole in memory."""
    with path.open("rb") as file:
        while block := file.read(2**20):
            yield block


def sha256(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for block in blocks(path):
        digest.update(block)
    return digest.hexdigest()


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file (8-byte little-endian length, then a JSON object);
    None when `path` cannot be read or is not one (empty, truncated, damaged)."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if not 2 <= length <= min(path.stat().st_size - 8, MAX_HEADER):
                return None
            header = json.loads(file.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def counted(count: int, noun: str = "file") -> str:
    """"1 file", "3 files": a count of `noun` in the right number (every summary says counts
    through this)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def problems_line(head: str, problems: Sequence[str], instead: str = "", *,
                  alone: bool = True) -> str:
    """Refusals as the one line an error is: "HEAD (N problems): P1 | P2; fix each[, or
    INSTEAD]" ("fix it" after one), or with `alone` one problem as it is. It claims no fix of
    its own: some problems name none (an unknown option with no similar name, no GPU)."""
    if alone and len(problems) == 1:
        return problems[0]
    return (f"{head} ({counted(len(problems), 'problem')}): {' | '.join(problems)}; fix "
            f"{'it' if len(problems) == 1 else 'each'}{f', or {instead}' if instead else ''}")


_PLURALS = {"is": "are", "was": "were", "has": "have", "it": "them"}


def agreeing(count: int, singular: str) -> str:
    """"is" or "are" (was/were, has/have, it/them): the word that agrees with a count, as
    `counted` gives the noun."""
    return singular if count == 1 else _PLURALS[singular]


def size_text(count: float) -> str:
    """"3.2 GB", "480 MB", "12 kB", "800 B": a byte count in decimal units, to two or three
    significant figures, never rounded to nothing."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        value = count / scale
        if round(value, 1) >= 1:  # 999,999 B is "1.0 MB", not "1000 kB"
            return f"{value:.1f} {unit}" if round(value, 1) < 10 else f"{value:.0f} {unit}"
    return f"{int(count)} B"


def percent(part: float, total: float = 1) -> str:
    """"37.5 %": `part` of `total` with one decimal, rounded half up, the one way the evaluation
    report and the model card write a share (format's round-half-even would give 12 for 1/8)."""
    from decimal import ROUND_HALF_UP, Decimal

    share = Decimal(part) * 100 / Decimal(total)
    return f"{share.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)} %"
