"""File helpers every stage shares: atomic writes, content digests and the header of a
safetensors file (the LoRA sd-scripts writes).

Records, manifests and configs are written to a temporary sibling and renamed over the
target, so a crash or Ctrl-C never leaves half a file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_HEADER = 100 * 2**20
"""The largest safetensors header read (a LoRA's is well under 1 MiB)."""


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` when the block succeeds, and is removed
    when it fails.

    The name is unique to this call (pid and random part), so processes writing one file at
    once each rename a whole version over it; it sits in the same folder (a rename within one
    file system) and keeps the suffix, which writers such as cv2.imwrite read the format from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
                               f"{path.suffix}")
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write `data` as JSON atomically (paths and dates as strings)."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=str))


def sha256(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(2**20):
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
