"""The terminal a command writes to: one whose encoding lacks a character of a path (an ASCII
or Latin-1 locale, a pipe with PYTHONIOENCODING=ascii) still gets the whole summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from medsynth_kohya.data.synth import SyntheticSet


def test_a_path_the_terminal_cannot_encode_is_escaped_not_a_traceback(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    source = tmp_path / "ü space"
    shutil.copytree(isic2020.root, source)
    out = tmp_path / "out ü" / "prepared"
    done = subprocess.run([sys.executable, "-m", "medsynth_kohya", "prepare", str(source),
                           "--out", str(out), "--workers", "1"],
                          capture_output=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "200"})
    stdout, stderr = (stream.decode("ascii") for stream in (done.stdout, done.stderr))
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert (out / "manifest.csv").is_file()
    assert f"Wrote {tmp_path}/out \\xfc/prepared/img/" in stdout
    assert "\\xfc space" in stdout  # the summary table's metadata row, escaped
