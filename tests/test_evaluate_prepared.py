"""`evaluate --real PREPARED` (and `--lora RUN`, `sample --check-copies`) compares with the
prepared folder's own copies in img/<R>_<class>/, the files sd-scripts trains on, whatever has
become of the ISIC download since prepare; what it could not compare is said."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.evaluation import copycheck, features
from medsynth_kohya.evaluation.evaluate import evaluate

from .conftest import invoke, one_line_error, squeezed
from .eval_data import isic_source, photo, synthetic_set, write_jpeg
from .fake_gen import write_run


@pytest.fixture
def prepared(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/data, prepared from an ISIC 2020-style download at tmp_path/isic (6 melanomas,
    4 other lesions); evaluate runs without the eval extra."""
    isic_source(tmp_path / "isic", 6, 4, seed=12)
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data")
    assert code == 0, stderr
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    return tmp_path / "data"


def _training(prepared: Path) -> list[tuple[str, Path, Path]]:
    """(id, the download's file, the folder's own copy) of each training row."""
    table = manifest.read(prepared / "manifest.csv")
    folder = next((prepared / "img").iterdir())
    return [(str(row.id), Path(str(row.source)), folder / f"{row.id}.jpg")
            for row in table.loc[table["split"] == "train"].itertuples()]


def test_a_copy_of_what_was_trained_on_is_flagged_though_the_download_changed(
        tmp_path: Path, prepared: Path) -> None:
    rows = _training(prepared)
    identifier, source, copy = rows[2]
    trained = cv2.imread(str(copy))
    assert trained is not None
    write_jpeg(source, photo(31_000))  # the download, changed after prepare
    synthetic_set(tmp_path / "syn", [photo(7500), trained])
    result = evaluate(prepared, tmp_path / "syn", tmp_path / "report")
    assert [(f["synthetic_id"], f["training_id"]) for f in result.flagged] == [
        ("SYN_0000001", identifier)]
    checked = copycheck.check(tmp_path / "syn", prepared)
    assert [(f.synthetic_id, f.training_id) for f in checked.flagged] == [
        ("SYN_0000001", identifier)]


def test_a_prepared_folder_without_its_download_is_still_compared(
        runner: CliRunner, tmp_path: Path, prepared: Path) -> None:
    """The Colab case: the download is gone, the prepared folder kept (on Drive). The warning
    names the file that is gone and what the evaluation loses; the report, meant to be
    shared, names it without its local folders."""
    rows = _training(prepared)
    shutil.move(tmp_path / "isic", tmp_path / "elsewhere")
    copy = cv2.imread(str(rows[0][2]))
    assert copy is not None
    synthetic_set(tmp_path / "syn", [copy, photo(7600)])
    code, stdout, stderr = invoke(runner, "evaluate", "--real", prepared, "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 1 and "Traceback" not in stdout + stderr
    assert "1of2syntheticimageswithin0.25ofatrainingphoto" in squeezed(stdout)
    gone = tmp_path / "isic" / "train.csv"
    said = ("the ISIC download data was prepared from is gone ({} does not exist): the "
            "classifier section, which needs the download's labelled photos, is skipped (the "
            "other checks compare with data's own copies of the training photos); put it back "
            "there, or pass the download as --real")
    assert squeezed(said.format(gone)) in squeezed(stderr)
    result = evaluate(prepared, tmp_path / "syn", tmp_path / "again")
    assert [f["training_id"] for f in result.flagged] == [rows[0][0]]
    assert said.format(gone) in result.warnings
    document = json.loads((tmp_path / "again" / "report.json").read_text(encoding="utf-8"))
    assert said.format("isic/train.csv") in document["notes"]
    assert str(tmp_path) not in json.dumps(document["notes"])


def test_training_photos_gone_from_the_folder_are_read_from_the_download_or_said(
        runner: CliRunner, tmp_path: Path, prepared: Path) -> None:
    rows = _training(prepared)
    rows[1][1].unlink()  # the download lost one: the folder's copy is still compared
    rows[3][2].unlink()  # the folder lost one: the download's file stands in
    rows[4][1].unlink()
    rows[4][2].unlink()  # both lost one: said, not dropped silently
    synthetic_set(tmp_path / "syn", [photo(7700 + i) for i in range(2)])
    code, _, stderr = invoke(runner, "evaluate", "--real", prepared, "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 0, stderr
    said = squeezed(stderr)
    borrowed = (f"1 training image of data/manifest.csv is not in data/img/1_melanoma and is "
                f"read from the ISIC download it was prepared from, which may have changed "
                f"since (first: {rows[3][1].name})")
    gone = (f"1 training image named by data/manifest.csv is gone from data/img/1_melanoma "
            f"and from the ISIC download (first: {rows[4][1].name})")
    assert "".join(borrowed.split()) in said and "".join(gone.split()) in said
    result = evaluate(prepared, tmp_path / "syn", tmp_path / "again")
    assert borrowed in result.warnings and gone in result.warnings
    document = json.loads((tmp_path / "again" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_training"] == len(rows) - 1
    assert borrowed in document["notes"] and gone in document["notes"]


def test_a_run_whose_training_photos_are_all_gone_is_told_how_to_get_them_back(
        runner: CliRunner, tmp_path: Path, prepared: Path) -> None:
    """Every training photo gone from img/ and from the download: nothing to compare with,
    said with how to have them again."""
    write_run(tmp_path / "run", prepared, tmp_path / "base.safetensors")
    rows = _training(prepared)
    for _, source, copy in rows:
        source.unlink()
        copy.unlink()
    synthetic_set(tmp_path / "syn", [photo(7800)])
    line = one_line_error(*invoke(runner, "evaluate", "--lora", tmp_path / "run", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report"))
    assert line == (f"Error: {prepared} has no training images to compare with (the {len(rows)} "
                    "training images of its manifest.csv are gone from its img/ folder and "
                    "from the ISIC download it was prepared from); prepare it again from the "
                    "download, or evaluate with the download as --real")
