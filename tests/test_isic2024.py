"""ISIC 2024 (SLICE-3D) as Kaggle's competition download holds it: `train-metadata.csv` (Archive
column names, the diagnosis levels as `iddx_1..5`, `target` for any malignancy) beside
`train-image/image/`, read without --column or --metadata; an HDF5-only download is named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import archive as vocab
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke, one_line_error


def _slice3d(made: SyntheticSet, root: Path, *, images: bool = True) -> pd.DataFrame:
    """`made` (an Archive export) in ISIC 2024's Kaggle layout, with a test-metadata.csv of
    other ids beside it (never read for training)."""
    frame = made.frame
    levels = frame.filter(regex=r"^diagnosis_\d$").rename(
        columns=lambda name: name.replace("diagnosis_", "iddx_"))
    table: pd.DataFrame = pd.DataFrame({
        "isic_id": frame["isic_id"],
        "target": (frame["diagnosis_1"] == "Malignant").astype(int),
        "patient_id": frame["patient_id"], "age_approx": frame["age_approx"],
        "sex": frame["sex"], "anatom_site_general": frame["anatom_site_general"],
        "image_type": "TBP tile: close-up", "tbp_tile_type": "3D: XP",
        "iddx_full": levels.apply(
            lambda row: "::".join(str(v) for v in row if pd.notna(v) and str(v)), axis=1),
        **levels})
    root.mkdir(parents=True)
    table.to_csv(root / "train-metadata.csv", index=False)
    table.head(2).assign(isic_id=["ISIC_9999998", "ISIC_9999999"])[
        ["isic_id", "patient_id", "age_approx", "sex", "anatom_site_general"]].to_csv(
        root / "test-metadata.csv", index=False)
    if images:
        folder = root / "train-image" / "image"
        folder.mkdir(parents=True)
        for identifier in table["isic_id"]:
            shutil.copy(made.images / f"{identifier}.jpg", folder / f"{identifier}.jpg")
    return table


def test_isic_2024_prepares_its_melanomas_from_the_iddx_levels(archive: SyntheticSet,
                                                               tmp_path: Path) -> None:
    root = tmp_path / "isic-2024-challenge"
    table = _slice3d(archive, root).set_index("isic_id")
    melanomas = set(table.index[table["iddx_3"].astype("string").str.startswith("Melanoma",
                                                                                 na=False)])
    assert 0 < len(melanomas) < len(table)
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.4, seed=1))
    prepared = result.manifest.set_index("id")
    assert set(prepared.index) == melanomas
    assert vocab.under(prepared["diagnosis"], vocab.MELANOMA).all()
    for identifier, row in prepared.iterrows():
        assert row["patient_id"] == table.loc[identifier, "patient_id"]
        assert Path(row["source"]).parent == (root / "train-image" / "image").resolve()


def test_isic_2024_selects_by_its_levels_with_diagnosis_and_query(archive: SyntheticSet,
                                                                  tmp_path: Path) -> None:
    root = tmp_path / "isic-2024-challenge"
    table = _slice3d(archive, root).set_index("isic_id")
    nevi = set(table.index[table["iddx_3"] == "Nevus"])
    assert nevi
    by_level = prepare(root, tmp_path / "nevi", workers=1,
                       options=PrepareOptions(diagnosis="Nevus", class_name="nevus", seed=1))
    assert set(by_level.manifest["id"]) == nevi
    by_query = prepare(root, tmp_path / "queried", workers=1,
                       options=PrepareOptions(query="diagnosis_3 == 'Nevus'",
                                              class_name="nevus", seed=1))
    assert set(by_query.manifest["id"]) == nevi


def test_an_isic_2024_download_of_the_hdf5_alone_is_named(archive: SyntheticSet,
                                                          tmp_path: Path) -> None:
    root = tmp_path / "isic-2024-challenge"
    _slice3d(archive, root, images=False)
    (root / "train-image.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(UserError) as raised:
        prepare(root, tmp_path / "out", workers=1)
    assert "train-image.hdf5" in str(raised.value) and "HDF5" in str(raised.value)
    assert "--images" in str(raised.value)
    code, _, stderr = invoke(CliRunner(), "prepare", root, "--out", tmp_path / "cli")
    assert code != 0
    assert "train-image.hdf5" in stderr and "Traceback" not in stderr


def _levels_dropped(root: Path, *kept: str) -> pd.DataFrame:
    """`root`'s train-metadata.csv without its `iddx_1..5` columns but `kept` (Kaggle's file
    trimmed), as rewritten."""
    metadata = root / "train-metadata.csv"
    table = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    trimmed: pd.DataFrame = table.drop(columns=[
        name for name in table.columns if re.fullmatch(r"iddx_\d", name) and name not in kept])
    trimmed.to_csv(metadata, index=False)
    return trimmed


def test_isic_2024_without_its_levels_reads_them_from_iddx_full(archive: SyntheticSet,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "isic-2024-challenge"
    table = _slice3d(archive, root).set_index("isic_id")
    _levels_dropped(root)
    melanomas = set(table.index[table["iddx_3"].astype("string").str.startswith("Melanoma",
                                                                                 na=False)])
    by_default = prepare(root, tmp_path / "out", workers=1, options=PrepareOptions(seed=1))
    assert set(by_default.manifest["id"]) == melanomas
    assert vocab.under(by_default.manifest["diagnosis"], vocab.MELANOMA).all()
    malignant = prepare(root, tmp_path / "malignant", workers=1,
                        options=PrepareOptions(diagnosis="Malignant", seed=1))
    assert set(malignant.manifest["id"]) == set(table.index[table["iddx_1"] == "Malignant"])
    nevi = prepare(root, tmp_path / "nevi", workers=1,
                   options=PrepareOptions(query='iddx_full.str.contains("Nevus")', seed=1))
    assert set(nevi.manifest["id"]) == set(table.index[table["iddx_3"] == "Nevus"])
    assert nevi.manifest["diagnosis"].str.endswith(":Nevus").all()
    assert any(" prepared images are not Malignant melanocytic proliferations (Melanoma) but "
               "Nevus " in warning for warning in nevi.warnings), nevi.warnings


@pytest.mark.parametrize(("kept", "said"), [((), "iddx_full, iddx_2 or iddx_3 "),
                                            (("iddx_1",), "(iddx_1 says only benign or")])
def test_isic_2024_without_a_diagnosis_names_its_own_columns(archive: SyntheticSet,
                                                             tmp_path: Path, kept: tuple[str],
                                                             said: str) -> None:
    root = tmp_path / "isic-2024-challenge"
    _slice3d(archive, root)
    _levels_dropped(root, *kept).drop(columns=["iddx_full"]).to_csv(
        root / "train-metadata.csv", index=False)
    code, _, stderr = invoke(CliRunner(), "prepare", root, "--out", tmp_path / "out")
    line = one_line_error(code, _, stderr)
    assert said in line and "diagnosis_2" not in line and "diagnosis_3" not in line
