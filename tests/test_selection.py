"""The default selection on mixed metadata: melanomas are prepared, every other row is left out.

Both ISIC layouts, every column the selection reads, and the spellings real exports use;
checked on what the user gets (manifest, files on disk, summary), not on the mask alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import PrepareOptions, prepare, summary
from medsynth_kohya.data.synth import SyntheticSet, make_dataset

from .conftest import invoke

ISIC2020_TARGET = (1, 0, 1, 0, None, 1, 0, 0, 1, 0)
ISIC2020_DIAGNOSIS = ("melanoma", "nevus", " Melanoma ", "unknown", None, "MELANOMA",
                      "seborrheic keratosis", "melanoma in situ", "melanoma", "lentigo NOS")
ARCHIVE_DIAGNOSIS_3 = ("Melanoma Invasive", "Nevus", "Melanoma in situ", None,
                       "Melanoma, NOS", "Atypical melanocytic neoplasm", " Melanoma metastasis",
                       "Basal cell carcinoma", "Pigmented benign keratosis", "Melanoma Invasive")
ARCHIVE_DIAGNOSIS = ("melanoma", "nevus", "Melanoma", None, "basal cell carcinoma",
                     "melanoma", "MELANOMA ", "unknown", "nevus", "solar lentigo")


def _relabel(made: SyntheticSet, drop: tuple[str, ...], **columns: tuple[object, ...]
             ) -> list[str]:
    """Rewrite the metadata's class columns; returns the ids each label makes a melanoma."""
    frame = made.frame.drop(columns=[*drop, "synthetic_hair"])
    for name, values in columns.items():
        frame[name] = pd.Series(values, dtype=object)
    frame.to_csv(made.metadata, index=False)
    return list(frame.iloc[:, 0])


def _prepared_ids(out: Path) -> list[str]:
    """Stems of the images in the prepared training folder."""
    return sorted(p.stem for p in (out / "img").glob("*_melanoma/*.jpg"))


@pytest.fixture
def mixed2020(tmp_path: Path) -> SyntheticSet:
    """Ten ISIC 2020-style rows with images for all of them; the labels are set by each test."""
    return make_dataset(tmp_path / "src", 10, seed=21, melanoma_fraction=0.5,
                        sizes=((320, 240),))


@pytest.fixture
def mixed_archive(tmp_path: Path) -> SyntheticSet:
    """Ten ISIC Archive-style rows with images beside metadata.csv."""
    return make_dataset(tmp_path / "src", 10, seed=22, layout="archive",
                        melanoma_fraction=0.5, sizes=((320, 240),))


def _check_prepared(made: SyntheticSet, out: Path, expected: list[str]) -> None:
    result = prepare(made.root, out, workers=1)
    assert sorted(result.manifest["id"]) == sorted(expected)
    assert _prepared_ids(out) == sorted(expected)
    assert sorted(p.stem for p in (out / "img").glob("*_melanoma/*.txt")) == sorted(expected)
    assert result.skipped.empty  # rows of other classes are not selected, so not "skipped"
    assert dict(summary(result))["selected and prepared"] == str(len(expected))


def test_isic2020_target_keeps_melanomas_only(mixed2020: SyntheticSet, tmp_path: Path) -> None:
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"),
                   target=ISIC2020_TARGET, diagnosis=ISIC2020_DIAGNOSIS)
    expected = [i for i, t in zip(ids, ISIC2020_TARGET, strict=True) if t == 1]
    assert 0 < len(expected) < len(ids)
    _check_prepared(mixed2020, tmp_path / "out", expected)


def test_isic2020_target_wins_over_diagnosis(mixed2020: SyntheticSet, tmp_path: Path) -> None:
    flipped = tuple(None if t is None else 1 - t for t in ISIC2020_TARGET)
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"),
                   target=flipped, diagnosis=ISIC2020_DIAGNOSIS)
    expected = [i for i, t in zip(ids, flipped, strict=True) if t == 1]
    _check_prepared(mixed2020, tmp_path / "out", expected)


def test_isic2020_diagnosis_without_target(mixed2020: SyntheticSet, tmp_path: Path) -> None:
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"),
                   diagnosis=ISIC2020_DIAGNOSIS)
    # read through the ISIC Archive's vocabulary, "melanoma in situ" names a melanoma node too
    expected = [i for i, d in zip(ids, ISIC2020_DIAGNOSIS, strict=True)
                if d is not None and d.strip().lower() in ("melanoma", "melanoma in situ")]
    assert len(expected) == 5
    _check_prepared(mixed2020, tmp_path / "out", expected)


def test_isic2020_target_as_text_and_floats(mixed2020: SyntheticSet, tmp_path: Path) -> None:
    values = ("1", "0", "1.0", "0.0", "", "yes", "1", "2", "-1", "0")
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"), target=values)
    expected = [i for i, v in zip(ids, values, strict=True) if v in ("1", "1.0")]
    _check_prepared(mixed2020, tmp_path / "out", expected)


def test_archive_diagnosis_3_keeps_every_melanoma_subtype(mixed_archive: SyntheticSet,
                                                          tmp_path: Path) -> None:
    ids = _relabel(mixed_archive, ("diagnosis_1", "diagnosis_2", "diagnosis_3",
                                   "benign_malignant"),
                   diagnosis_3=ARCHIVE_DIAGNOSIS_3, diagnosis=ARCHIVE_DIAGNOSIS)
    expected = [i for i, d in zip(ids, ARCHIVE_DIAGNOSIS_3, strict=True)
                if d is not None and d.strip().startswith("Melanoma")]
    assert len(expected) == 5
    _check_prepared(mixed_archive, tmp_path / "out", expected)


def test_archive_diagnosis_3_alone_selects(mixed_archive: SyntheticSet, tmp_path: Path) -> None:
    """An export that kept only the finest level still selects, and selects melanomas."""
    ids = _relabel(mixed_archive, ("diagnosis_1", "diagnosis_2", "diagnosis_3",
                                   "benign_malignant"), diagnosis_3=ARCHIVE_DIAGNOSIS_3)
    expected = [ids[i] for i in (0, 2, 4, 6, 9)]
    _check_prepared(mixed_archive, tmp_path / "out", expected)


def test_archive_diagnosis_2_alone_selects(mixed_archive: SyntheticSet, tmp_path: Path) -> None:
    """An export with only the second level selects the melanocytic malignancies."""
    levels = ("Malignant melanocytic proliferations (Melanoma)",
              "Benign melanocytic proliferations", None, "Malignant adnexal epithelial "
              "proliferations - Follicular", "Malignant melanocytic proliferations (Melanoma)",
              "Benign epidermal proliferations", "Malignant melanocytic proliferations "
              "(Melanoma)", "Benign melanocytic proliferations",
              "Benign melanocytic proliferations", "Indeterminate melanocytic proliferations")
    ids = _relabel(mixed_archive, ("diagnosis_1", "diagnosis_2", "diagnosis_3",
                                   "benign_malignant"), diagnosis_2=levels)
    _check_prepared(mixed_archive, tmp_path / "out", [ids[i] for i in (0, 4, 6)])


def test_archive_diagnosis_without_diagnosis_3(mixed_archive: SyntheticSet,
                                               tmp_path: Path) -> None:
    ids = _relabel(mixed_archive, ("diagnosis_1", "diagnosis_2", "diagnosis_3",
                                   "benign_malignant"), diagnosis=ARCHIVE_DIAGNOSIS)
    expected = [i for i, d in zip(ids, ARCHIVE_DIAGNOSIS, strict=True)
                if d is not None and d.strip().lower() == "melanoma"]
    assert len(expected) == 4
    _check_prepared(mixed_archive, tmp_path / "out", expected)


@pytest.mark.parametrize(("layout", "kept", "missing"), [
    ("isic2020", (), "target (or diagnosis)"), ("archive", (), "diagnosis_2 or diagnosis_3"),
    ("archive", ("diagnosis_1",),
     "diagnosis_2 or diagnosis_3 (diagnosis_1 says only benign or malignant)")])
def test_no_class_column_is_a_one_line_error(runner: CliRunner, tmp_path: Path,
                                             layout: str, kept: tuple[str, ...],
                                             missing: str) -> None:
    made = make_dataset(tmp_path / "src", 3, seed=23, layout=layout, sizes=((320, 240),))
    drop = [c for c in made.frame.columns if (c in ("target", "diagnosis")
            or c.startswith("diagnosis_")) and c not in kept]
    made.frame.drop(columns=drop).to_csv(made.metadata, index=False)
    code, stdout, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "out")
    assert code != 0 and "Traceback" not in stdout + stderr
    assert stderr.strip().endswith(f"{made.metadata} is missing column {missing} to select "
                                   "melanomas; add it or pass --query or --diagnosis"), stderr


def test_cli_prepares_only_the_melanomas(runner: CliRunner, mixed2020: SyntheticSet,
                                         tmp_path: Path) -> None:
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"),
                   target=ISIC2020_TARGET, diagnosis=ISIC2020_DIAGNOSIS)
    expected = sorted(i for i, t in zip(ids, ISIC2020_TARGET, strict=True) if t == 1)
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", mixed2020.root, "--out", out)
    assert code == 0, stderr
    assert "selected and prepared" in stdout and f" {len(expected)} " in stdout
    assert _prepared_ids(out) == expected
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert sorted(manifest["id"]) == expected
    left_out = sorted(set(ids) - set(expected))
    assert not np.isin(left_out, manifest["id"]).any()


@pytest.mark.parametrize(("query", "needle"), [
    ("no_such_column == 1", "no_such_column is neither a column nor a measurement"),
    ("age_approx + 1", "must give one True/False per row"),
    ("1 == 1", "must give one True/False per row"),
    ("patient_id", "must give one True/False per row"),
])
def test_a_query_that_is_not_a_row_filter_is_refused(runner: CliRunner, mixed2020: SyntheticSet,
                                                     tmp_path: Path, query: str,
                                                     needle: str) -> None:
    code, stdout, stderr = invoke(runner, "prepare", mixed2020.root, "--out", tmp_path / "out",
                                  "--query", query)
    assert code != 0 and "Traceback" not in stdout + stderr
    assert f"--query {query!r}" in stderr and needle in stderr, stderr


def test_a_query_with_string_methods_selects(mixed2020: SyntheticSet, tmp_path: Path) -> None:
    """Queries run on pandas' Python engine, so `.str` methods work whatever is installed."""
    ids = _relabel(mixed2020, ("target", "diagnosis", "benign_malignant"),
                   target=ISIC2020_TARGET, diagnosis=ISIC2020_DIAGNOSIS)
    options = PrepareOptions(query='diagnosis.str.strip().str.lower() == "melanoma"',
                             hair=HairMode.off)
    result = prepare(mixed2020.root, tmp_path / "out", options=options, workers=1)
    assert sorted(result.manifest["id"]) == sorted(ids[i] for i in (0, 2, 5, 8))


@pytest.mark.parametrize(("query", "needle"), [
    ("skin_tone == light", 'quote text values (skin_tone == "light")'),
    ("width", "must give one True/False per row"),
    ("ruler = True", "assigns instead of comparing: write == for equals"),
    ('hair_score > "0.3"', 'write the number without quotes (--query \'hair_score > 0.3\')'),
    ("sex == 'male' and ita > 'dark'", "failed:"),
])
def test_a_query_mistake_on_measurements_is_refused_before_any_scan(
        runner: CliRunner, mixed2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, query: str, needle: str) -> None:
    """A query is tried whole before the scan: no image is read, and the new --out is not left
    behind (a refused command leaves every file as it was)."""
    def no_scan(*args: object) -> None:
        raise AssertionError("an image was scanned")

    monkeypatch.setattr("medsynth_kohya.data.prepare._scan_all", no_scan)
    out = tmp_path / "out"
    code, stdout, stderr = invoke(runner, "prepare", mixed2020.root, "--out", out,
                                  "--query", query, "--workers", "1")
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert f"--query {query!r}" in message and needle in message, message
    assert not out.exists()
