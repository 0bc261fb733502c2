"""The names that mark a folder as written by this tool, in one low place: prepare's image
search tells outputs from data by them without importing the commands that write them (a
run's record is read through its format's owner, training/record.py)."""

STATE_DIR = ".medsynth"
"""The state folder of a prepared folder and of a synthetic set."""
TOOL = "medsynth-kohya"
"""The `tool` of every run record this tool writes."""
EVALUATE_MARKER = ".medsynth-evaluate"
"""The file that marks a folder as an `evaluate` report."""
