"""`evaluate --real ISIC_DOWNLOAD` builds its real set by prepare's rules: a repeated id, an
identical file and a pair of ISIC 2020's duplicates list count once, as prepare trains on them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.sources import GENERATED_SKIP
from medsynth_kohya.evaluation import features, sets
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate

from .conftest import invoke
from .eval_data import isic_source, photo, synthetic_set, write_jpeg

TINY = "tests.eval_data:build"
COPY_OF_MELANOMA = "ISIC_0499990"
LISTED_TWIN = "ISIC_0499991"
COPY_OF_OTHER = "ISIC_0499992"
NEVUS_COPY = "ISIC_0000001"
"""A nevus row holding a melanoma's file, under an id that sorts before the melanoma's."""
GENERATED = "ISIC_0499993"
"""A melanoma row of a generated image (image_manipulation = synthetic)."""


@pytest.fixture
def twice(tmp_path: Path) -> dict[str, Path]:
    """An ISIC 2020-style source of 6 melanomas and 4 other lesions (ids ISIC_0400000..9) that
    holds some photos twice: a repeated id row, identical files under new ids and patients, and
    a re-encoded copy paired in ISIC_2020_Training_Duplicates.csv; and a generated melanoma;
    returns the 10 real photos."""
    root = tmp_path / "isic"
    paths = isic_source(root, 6, 4, seed=4)
    table = root / "train.csv"
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {row["image_name"]: row for row in rows}

    def again(identifier: str, of: str, patient: str, **changes: str) -> None:
        rows.append({**by_id[of], "image_name": identifier, "patient_id": patient, **changes})

    rows.append(by_id["ISIC_0400001"])
    shutil.copy(paths["ISIC_0400002"], root / "train" / f"{COPY_OF_MELANOMA}.jpg")
    again(COPY_OF_MELANOMA, "ISIC_0400002", "IP_9990")
    write_jpeg(root / "train" / f"{LISTED_TWIN}.jpg", photo(40_003), quality=80)
    again(LISTED_TWIN, "ISIC_0400003", "IP_9991")
    shutil.copy(paths["ISIC_0400007"], root / "train" / f"{COPY_OF_OTHER}.jpg")
    again(COPY_OF_OTHER, "ISIC_0400007", "IP_9992")
    shutil.copy(paths["ISIC_0400004"], root / "train" / f"{NEVUS_COPY}.jpg")
    again(NEVUS_COPY, "ISIC_0400004", "IP_9993", diagnosis="nevus", benign_malignant="benign",
          target="0")
    write_jpeg(root / "train" / f"{GENERATED}.jpg", photo(40_100))
    again(GENERATED, "ISIC_0400005", "IP_9994", image_manipulation="synthetic")
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "image_manipulation"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    (root / "ISIC_2020_Training_Duplicates.csv").write_text(
        f"image_name_1,image_name_2\nISIC_0400003,{LISTED_TWIN}\n", encoding="utf-8")
    return paths


def _once(real: sets.RealSet, photos: dict[str, Path]) -> None:
    """The classifier's set holds each photo once, under its first id, and every training
    photo with its melanoma label."""
    assert real.labelled is not None
    labelled = real.labelled
    assert sorted(labelled["id"]) == sorted(photos)
    assert labelled["path"].map(files.sha256).is_unique
    assert set(real.training["id"]) <= set(labelled.loc[labelled["label"] == 1, "id"])


def test_the_real_set_counts_each_photo_once_as_prepare_does(
        runner: CliRunner, tmp_path: Path, twice: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data")
    assert code == 0, stderr
    prepared = manifest.read(tmp_path / "data" / "manifest.csv")
    synthetic_set(tmp_path / "syn", [photo(9800 + i) for i in range(3)])

    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    n_training = document["inputs"]["n_training"]
    assert n_training == len(prepared) == 6
    assert len(document["sections"]["adherence"]["real"]["ita"]) == n_training
    assert {(s["id"], s["reason"]) for s in result.skipped} == {
        ("ISIC_0400001", "duplicate id"),
        (COPY_OF_MELANOMA, "duplicate image of ISIC_0400002 (identical file)"),
        (LISTED_TWIN, "duplicate image of ISIC_0400003 (listed in "
                      "ISIC_2020_Training_Duplicates.csv)"),
        (COPY_OF_OTHER, "duplicate image of ISIC_0400007 (identical file)"),
        (NEVUS_COPY, "duplicate image of ISIC_0400004 (identical file)"),
        (GENERATED, GENERATED_SKIP)}
    assert result.skipped == document["skipped"]
    assert "4 photos duplicate another (3 identical files, 1 listed in " \
           "ISIC_2020_Training_Duplicates.csv)" in " ".join(document["notes"])
    assert "1 row of train.csv left out: duplicate id (first: ISIC_0400001)" in document["notes"]

    _once(sets.load_real(tmp_path / "isic"), twice)
    from_prepared = sets.load_real(tmp_path / "data")
    assert sorted(from_prepared.training["id"]) == sorted(prepared["id"])
    _once(from_prepared, twice)


@pytest.mark.skipif(bool(features.missing(TINY)), reason="the eval extra is not installed")
def test_the_classifier_splits_each_photo_once(tmp_path: Path, twice: dict[str, Path]) -> None:
    synthetic_set(tmp_path / "syn", [photo(9900 + i) for i in range(4)])
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
             EvaluateOptions(features=TINY, mixes=(0.0,), repeats=1))
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert f"of {len(twice)} real photos" in document["sections"]["utility"]["method"]
