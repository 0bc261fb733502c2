"""What `prepare` takes for its source: never this tool's own outputs (a synthetic set, a
prepared folder's links), any file that is no CSV refused in one line, and metadata read
however a spreadsheet or isic-cli wrote it (encoding, letter case, unknown subtypes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke

INVASIVE = "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma Invasive"
NEVUS = "Benign:Benign melanocytic proliferations:Nevus"


def _levels(frame: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    """`frame` with its diagnosis as isic-cli writes it: diagnosis_1..5, no benign_malignant."""
    frame = frame.drop(columns=[c for c in frame.columns
                                if c.startswith("diagnosis") or c == "benign_malignant"])
    split = [path.split(":") + [""] * (5 - len(path.split(":"))) for path in paths]
    for level in range(5):
        frame[f"diagnosis_{level + 1}"] = [parts[level] for parts in split]
    return frame


def test_an_unknown_subtype_or_another_letter_case_stays_a_melanoma(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    n = len(archive.frame)
    paths = [INVASIVE] * (n - 1) + [NEVUS]
    paths[0] = INVASIVE + ":Melanoma Invasive, Some brand-new subtype"
    paths[1] = INVASIVE.lower()
    paths[-1] = NEVUS + ":Nevus, Another new kind"
    frame = _levels(archive.frame, paths)
    frame.to_csv(archive.metadata, index=False)
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", archive.root, "--out", out,
                                  "--hair", "off", "--workers", 1)
    assert code == 0, stdout + stderr
    table = pd.read_csv(out / "manifest.csv", dtype=str).set_index("id")
    ids = list(frame["isic_id"])
    assert set(table.index) == set(ids[:-1])
    assert table.loc[ids[0], "diagnosis"] == INVASIVE
    assert table.loc[ids[1], "diagnosis"] == INVASIVE
    text = " ".join((stdout + stderr).split())
    assert text.count("Some brand-new subtype' (1 row)") == 1
    assert "Nevus, Another new kind' (1 row)" in text  # a row not selected is named too
    assert "is not an ISIC Archive term; read as its deepest known level" in text
    assert "melanoma invasive'" not in text  # a known term in another case is no warning
