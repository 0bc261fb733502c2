"""The Python API as a researcher first calls it: from a plain script (no `__main__` guard, or
piped on stdin) with prepare's worker pool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import REPO

SCRIPT = """\
import sys
from pathlib import Path
import medsynth_kohya
main = sys.modules["__main__"]
before = (getattr(main, "__file__", None), main.__spec__)
with open(sys.argv[1], "a") as runs:  # how many times this script's top level runs
    print("ran", file=runs)
result = medsynth_kohya.prepare(Path(sys.argv[2]), Path(sys.argv[3]), workers=2)
assert (getattr(main, "__file__", None), main.__spec__) == before, "__main__ not restored"
print("prepared", len(result.manifest), "scanned", result.scanned)
"""


@pytest.mark.parametrize("how", ["file", "stdin", "-c"])
def test_prepare_with_workers_runs_from_a_script_without_a_main_guard(
        how: str, archive: SyntheticSet, tmp_path: Path) -> None:
    """Spawned workers would run the script again (and hit prepare's lock): they must start
    without the caller's `__main__`, whether it is a file, stdin or (as in Jupyter) none."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    runs, out = tmp_path / "runs.txt", tmp_path / "prepared"
    args = [str(runs), str(archive.root), str(out)]
    command = {"file": [sys.executable, str(script), *args],
               "stdin": [sys.executable, "-", *args],
               "-c": [sys.executable, "-c", SCRIPT, *args]}[how]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(command, input=SCRIPT if how == "stdin" else None, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert runs.read_text(encoding="utf-8").splitlines() == ["ran"]
    scanned = int(done.stdout.split("scanned")[1])
    assert scanned >= 4  # enough photos for prepare to start its 2-worker pool
    assert (out / "manifest.csv").is_file()
