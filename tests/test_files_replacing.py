"""files.replacing: a write replaces the file whole, even when processes write it at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsynth_kohya import files

WRITES = 150
SIZE = 256 * 1024
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from medsynth_kohya import files

    path, tag, count, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for i in range(count):
        files.write_text(path, f"{tag}{i:06d}".ljust(size, tag))
""")


def _whole(text: str) -> bool:
    """One writer's version: its tag, a number, then its tag to the end, SIZE characters."""
    tag = text[:1]
    return (len(text) == SIZE and tag in "AB" and text[1:7].isdigit()
            and text[7:] == tag * (SIZE - 7))


def test_two_processes_writing_one_file_at_once_leave_one_whole_version(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sample.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(WRITES),
                                 str(SIZE)], stderr=subprocess.PIPE, text=True)
               for tag in "AB"]
    seen = set()
    while any(w.poll() is None for w in writers):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # before the first rename
            continue
        assert _whole(text), text[:20]
        seen.add(text[0])
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert _whole(path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.json"]
    assert seen  # the reader saw the file while both wrote


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "grid.jpg"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.replacing(path) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["grid.jpg"]


def test_the_temporary_keeps_the_suffix_writers_choose_the_format_by(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "grid.jpg"
    with files.replacing(path) as temporary:
        assert temporary.parent == path.parent and temporary.suffix == ".jpg"
        assert cv2.imwrite(str(temporary), np.full((8, 8, 3), 200, np.uint8))
    with files.replacing(path) as other:
        assert other != temporary
        other.write_bytes(path.read_bytes())
    assert path.read_bytes()[:2] == b"\xff\xd8" and len(list(path.parent.iterdir())) == 1
