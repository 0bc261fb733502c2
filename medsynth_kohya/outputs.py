"""The names that mark a folder as written by this tool, in one low place: prepare's image
search tells outputs from data by them without importing the commands that write them (a
run's record is read through its format's owner, training/record.py); and how a file this
tool shares names a local path."""

from pathlib import PureWindowsPath

STATE_DIR = ".medsynth"
"""The state folder of a prepared folder and of a synthetic set."""
TOOL = "medsynth-kohya"
"""The `tool` of every run record this tool writes."""
EVALUATE_MARKER = ".medsynth-evaluate"
"""The file that marks a folder as an `evaluate` report."""
LOCAL = "<local>"
"""What a shared file (a pushed config, a synthetic set's metadata.csv) says for a folder of
this machine."""


def local_name(path: str) -> str:
    """A local path as shared files name it: `<local>/NAME`, its folders left out (a Windows
    path's too)."""
    name = PureWindowsPath(path).name
    return f"{LOCAL}/{name}" if name else LOCAL
