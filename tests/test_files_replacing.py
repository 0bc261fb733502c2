"""files.replacing: a write replaces the file whole, even when processes write it at once, and
what a killed writer leaves is removed by the folder's next lock holder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth_kohya import files, locks
from medsynth_kohya.cli import app
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet

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


KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from medsynth_kohya import files

    with files.replacing(Path(sys.argv[1])) as temporary:
        temporary.write_text("half a manifest")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_mid_write(path: Path) -> Path:
    """The temporary a process left when it was killed while writing `path`."""
    done = subprocess.run([sys.executable, "-c", KILLED, str(path)], check=False)
    assert done.returncode == -9
    (left,) = path.parent.glob(f".{path.name}.*")
    return left


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_lock_holder_removes(
        tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    caption = out / "img" / "1_melanoma" / "ISIC_1.txt"
    left = [_killed_mid_write(caption), _killed_mid_write(out / "manifest.csv")]
    live = files.temporary(out / ".medsynth" / "state.json")  # this process: still writing
    live.parent.mkdir()
    live.write_text("being written")
    fresh, old = (out / ".medsynth" / f".run.json.abcdef-{n}-0123abcd.tmp.json" for n in (1, 2))
    fresh.write_text("another machine writing now")
    old.write_text("another machine, killed an hour ago")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    user = out / "notes" / ".draft.txt.tmp"  # not a name files.temporary makes
    user.parent.mkdir()
    user.write_text("the user's")
    with locks.hold(out, "prepare"):
        assert not any(p.exists() for p in [*left, old])
        assert live.exists() and fresh.exists() and user.exists()


def test_prepare_rerun_after_a_kill_mid_caption_neither_refuses_nor_keeps_the_temporary(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(isic2020.root, out, options=PrepareOptions(), workers=1)
    caption = next((out / "img").rglob("*.txt"))
    left = _killed_mid_write(caption)
    result = CliRunner().invoke(app, ["prepare", str(isic2020.root), "--out", str(out),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert not left.exists() and not list(out.rglob("*.tmp*"))
