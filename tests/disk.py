"""What is on disk, to compare before and after a command: a refused one changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medsynth_kohya import locks


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (lock files aside), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not locks.is_lock_file(p)}


def entries(folder: Path) -> list[str]:
    """Every file and folder under `folder` (lock files aside): what a refusal must not add."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if not locks.is_lock_file(p))
