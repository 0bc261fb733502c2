"""The ISIC 2017 and ISIC 2016 challenges' lesion classification downloads (Part 3) as they are
unpacked, read without --column or --query: 2017's ground truth (`image_id, melanoma,
seborrheic_keratosis`) merged with its metadata (`age_approximate, sex`) from inside the data
folder, whose `_superpixels.png` maps are no photos; 2016's headerless ground truth (`benign` /
`malignant`, or the test set's 0.0 / 1.0) read from its first row. Fields a layout lacks (site,
patient; 2016's sex and age) are left out of the captions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import archive as vocab
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import ISIC2016, ISIC2017
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke, one_line_error

SPLITS_2017 = ("Training", "Validation", "Test_v2")
SPLITS_2016 = ("Training", "Test")


def _images(made: SyntheticSet, folder: Path, ids: pd.Series) -> None:
    """`made`'s photos of `ids` in `folder`, each with a superpixel map beside it (a PNG that
    is no photo, as ISIC 2017's data folders hold)."""
    folder.mkdir(parents=True)
    for identifier in ids:
        shutil.copy(made.images / f"{identifier}.jpg", folder / f"{identifier}.jpg")
        shutil.copy(made.images / f"{identifier}.jpg", folder / f"{identifier}_superpixels.png")


def _melanoma(made: SyntheticSet) -> pd.Series:
    """Whether each of `made`'s photos is a melanoma."""
    return made.frame["diagnosis_3"].astype("string").str.startswith("Melanoma").fillna(False)


def _isic2017(made: SyntheticSet, root: Path, split: str = "Training", *,
              metadata: bool = True) -> pd.DataFrame:
    """`made` as ISIC 2017's `split` download: the Part 3 ground truth beside the data folder,
    the metadata CSV inside it (one sex and one age `unknown`), the last benign photo a
    seborrheic keratosis."""
    frame = made.frame
    melanoma = _melanoma(made)
    keratosis = pd.Series(False, index=frame.index)
    keratosis[melanoma[~melanoma].index[-1]] = True
    table = pd.DataFrame({"image_id": frame["isic_id"],
                          "melanoma": melanoma.astype(float),
                          "seborrheic_keratosis": keratosis.astype(float),
                          "age_approximate": frame["age_approx"].astype("Int64").astype(str),
                          "sex": frame["sex"]})
    table.loc[table.index[0], "sex"] = "unknown"
    table.loc[table.index[1], "age_approximate"] = "unknown"
    data = root / f"ISIC-2017_{split}_Data"
    _images(made, data, table["image_id"])
    table[["image_id", "melanoma", "seborrheic_keratosis"]].to_csv(
        root / f"ISIC-2017_{split}_Part3_GroundTruth.csv", index=False)
    if metadata:
        table[["image_id", "age_approximate", "sex"]].to_csv(
            data / f"ISIC-2017_{split}_Data_metadata.csv", index=False)
    indexed: pd.DataFrame = table.set_index("image_id")
    return indexed


def _isic2016(made: SyntheticSet, root: Path, split: str = "Training") -> pd.DataFrame:
    """`made` as ISIC 2016's `split` download: a ground truth with no header row (`benign` /
    `malignant` for training, 0.0 / 1.0 for test), the first row a melanoma."""
    frame = made.frame
    melanoma = _melanoma(made)
    order = [*melanoma.index[melanoma][:1], *(i for i in frame.index if i != melanoma.idxmax())]
    ids = pd.Series([f"ISIC_{number:07d}" for number in range(len(order))])
    folder = root / f"ISBI2016_ISIC_Part3_{split}_Data"
    _images(made, folder, frame.loc[order, "isic_id"])
    for old, new in zip(frame.loc[order, "isic_id"], ids, strict=True):
        for suffix in (".jpg", "_superpixels.png"):
            (folder / f"{old}{suffix}").rename(folder / f"{new}{suffix}")
    flags = melanoma[order]
    labels = flags.map({True: "malignant", False: "benign"}) if split == "Training" \
        else flags.astype(float)
    table = pd.DataFrame({"image_id": ids.to_numpy(), "label": labels.to_numpy()})
    table.to_csv(root / f"ISBI2016_ISIC_Part3_{split}_GroundTruth.csv", index=False,
                 header=False)
    indexed: pd.DataFrame = table.assign(melanoma=flags.to_numpy()).set_index("image_id")
    return indexed


def test_isic_2017_prepares_its_melanomas_captioned_with_sex_and_age(
        archive: SyntheticSet, tmp_path: Path) -> None:
    """The default template: sex and age from the metadata CSV in the data folder, no site
    (2017 has none) and no refusal for it; superpixel maps are neither taken nor skipped."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root)
    melanomas = set(table.index[table["melanoma"] == 1])
    assert 0 < len(melanomas) < len(table)
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.4, seed=1))
    prepared = result.manifest.set_index("id")
    assert set(prepared.index) == melanomas
    assert set(prepared["diagnosis"]) == {vocab.MELANOMA}
    for identifier, row in prepared.iterrows():
        sex, age = table.loc[identifier, "sex"], table.loc[identifier, "age_approximate"]
        assert (f"photo of {sex} skin" in row["caption"]) == (sex != "unknown"), row["caption"]
        assert (f"at age {age}" in row["caption"]) == (age != "unknown"), row["caption"]
        assert " on " not in row["caption"] and pd.isna(row["site"])
        assert Path(row["source"]).parent == (root / "ISIC-2017_Training_Data").resolve()
    assert not any("superpixels" in str(path) for path in result.skipped["source"])
    assert any("ISIC 2017 has no site" in warning for warning in result.warnings)
    assert any("ISIC 2017 names no patient" in warning for warning in result.warnings)
    assert PreparedFolder(result.out).state().origin == ISIC2017


@pytest.mark.parametrize("split", SPLITS_2017)
def test_each_isic_2017_split_prepares_from_the_cli(runner: CliRunner, archive: SyntheticSet,
                                                    tmp_path: Path, split: str) -> None:
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root, split)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", root, "--out", out, "--workers", 1)
    assert code == 0, stderr
    prepared = manifest.read(out / "manifest.csv")
    assert set(prepared["id"]) == set(table.index[table["melanoma"] == 1])
    assert prepared["sex"].notna().any() and prepared["age"].notna().any()
    skipped = pd.read_csv(PreparedFolder(out).skipped, dtype=str)
    assert not skipped["source"].fillna("").str.contains("superpixels").any()


def test_isic_2017_selects_by_diagnosis_and_query(archive: SyntheticSet, tmp_path: Path) -> None:
    """Neither melanoma nor seborrheic keratosis is a nevus, 2017's third class."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root)
    keratoses = set(table.index[table["seborrheic_keratosis"] == 1])
    nevi = set(table.index[(table["melanoma"] == 0) & (table["seborrheic_keratosis"] == 0)])
    assert keratoses and nevi
    by_diagnosis = prepare(root, tmp_path / "sk", workers=1, options=PrepareOptions(
        diagnosis="Seborrheic keratosis", class_name="keratosis"))
    assert set(by_diagnosis.manifest["id"]) == keratoses
    by_query = prepare(root, tmp_path / "queried", workers=1, options=PrepareOptions(
        query="seborrheic_keratosis == 1", class_name="keratosis"))
    assert set(by_query.manifest["id"]) == keratoses
    nevus = prepare(root, tmp_path / "nevi", workers=1,
                    options=PrepareOptions(diagnosis="nevus", class_name="nevus"))
    assert set(nevus.manifest["id"]) == nevi
    ages = pd.to_numeric(table["age_approximate"], errors="coerce")
    older = set(table.index[(table["melanoma"] == 1) & (ages > ages.min())])
    assert older
    by_age = prepare(root, tmp_path / "older", workers=1, options=PrepareOptions(
        query=f"melanoma == 1 and age_approximate > {ages.min()}"))
    assert set(by_age.manifest["id"]) == older


def test_isic_2017_ground_truth_without_its_metadata_names_the_csv(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """Sex and age are in the data folder's metadata CSV: one line names it; a template without
    them prepares from the ground truth alone."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root, metadata=False)
    code, stdout, stderr = invoke(runner, "prepare", root, "--out", tmp_path / "out")
    line = one_line_error(code, stdout, stderr)
    assert "ISIC-2017_Training_Data_metadata.csv is missing" in line
    assert line.endswith(f"download it into {root / 'ISIC-2017_Training_Data'}")
    code, _, stderr = invoke(runner, "prepare", root, "--out", tmp_path / "plain", "--workers",
                             1, "--caption-template", "photo of skin, {trigger}")
    assert code == 0, stderr
    prepared = manifest.read(tmp_path / "plain" / "manifest.csv")
    assert set(prepared["id"]) == set(table.index[table["melanoma"] == 1])


@pytest.mark.parametrize("split", SPLITS_2016)
def test_isic_2016_reads_its_headerless_ground_truth(runner: CliRunner, archive: SyntheticSet,
                                                     tmp_path: Path, split: str) -> None:
    """The first row is a photo, not a header: the melanoma there is prepared too, captioned
    without the sex, age and site 2016 lacks."""
    root = tmp_path / "isic2016"
    root.mkdir()
    table = _isic2016(archive, root, split)
    melanomas = set(table.index[table["melanoma"]])
    assert table.index[0] in melanomas and len(melanomas) < len(table)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", root, "--out", out, "--workers", 1)
    assert code == 0, stderr
    prepared = manifest.read(out / "manifest.csv")
    assert set(prepared["id"]) == melanomas
    assert set(prepared["diagnosis"]) == {vocab.MELANOMA}
    bare = prepared["caption"].str.replace(r", hairy$", "", regex=True)
    assert (bare == "photo of skin, me1anoma").all(), prepared["caption"]
    assert PreparedFolder(out).state().origin == ISIC2016
    skipped = pd.read_csv(PreparedFolder(out).skipped, dtype=str)
    assert not skipped["source"].fillna("").str.contains("superpixels").any()


@pytest.mark.parametrize("split", SPLITS_2016)
def test_isic_2016_selects_benign_and_by_query(archive: SyntheticSet, tmp_path: Path,
                                               split: str) -> None:
    root = tmp_path / "isic2016"
    root.mkdir()
    table = _isic2016(archive, root, split)
    benign = set(table.index[~table["melanoma"]])
    by_diagnosis = prepare(root, tmp_path / "benign", workers=1,
                           options=PrepareOptions(diagnosis="Benign", class_name="benign"))
    assert set(by_diagnosis.manifest["id"]) == benign
    by_query = prepare(root, tmp_path / "queried", workers=1,
                       options=PrepareOptions(query="melanoma == 0", class_name="benign"))
    assert set(by_query.manifest["id"]) == benign


def test_the_isic_2017_data_folder_given_finds_its_ground_truth_beside_it(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """SOURCE the data folder: its metadata CSV is read with the ground truth from the folder
    above; without that ground truth, one line names it and where it goes."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root, "Validation")
    data = root / "ISIC-2017_Validation_Data"
    result = prepare(data, tmp_path / "out", workers=1)
    assert set(result.manifest["id"]) == set(table.index[table["melanoma"] == 1])
    assert result.source.partner == root / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    assert result.manifest["sex"].notna().any()
    (root / "ISIC-2017_Validation_Part3_GroundTruth.csv").unlink()
    code, stdout, stderr = invoke(runner, "prepare", data, "--out", tmp_path / "again")
    line = one_line_error(code, stdout, stderr)
    assert "ISIC-2017_Validation_Part3_GroundTruth.csv is missing" in line
    assert line.endswith(f"download it into {root}")


def test_isic_2017_rows_with_both_classes_and_no_metadata_row_are_named(
        archive: SyntheticSet, tmp_path: Path) -> None:
    """A melanoma also marked a seborrheic keratosis is read as a melanoma, with a warning; a
    selected id the metadata CSV lacks is named, with the 2017 download to take both from."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root)
    truth_file = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    truth = pd.read_csv(truth_file)
    both = truth.loc[truth["melanoma"] == 1, "image_id"].iloc[0]
    truth.loc[truth["image_id"] == both, "seborrheic_keratosis"] = 1.0
    truth.to_csv(truth_file, index=False)
    metadata_file = root / "ISIC-2017_Training_Data" / "ISIC-2017_Training_Data_metadata.csv"
    metadata = pd.read_csv(metadata_file)
    metadata[metadata["image_id"] != both].to_csv(metadata_file, index=False)
    result = prepare(root, tmp_path / "out", workers=1)
    assert set(result.manifest["id"]) == set(table.index[table["melanoma"] == 1])
    assert any(f"{both}: melanoma, seborrheic_keratosis" in warning
               for warning in result.warnings), result.warnings
    assert any(f"(first: {both})" in warning and "one ISIC 2017 download" in warning
               for warning in result.warnings), result.warnings


def test_part3_labels_read_as_archive_diagnoses() -> None:
    """2017: melanoma, else seborrheic keratosis, else a nevus; 2016 (melanoma alone): else
    benign; a row whose label is missing has no diagnosis."""
    nevus = vocab.diagnosis_path("Nevus")
    keratosis = vocab.diagnosis_path("Seborrheic keratosis")
    year_2017 = pd.DataFrame({"melanoma": [1.0, 0.0, 0.0, 0.0, None],
                              "seborrheic_keratosis": [1.0, 1.0, 0.0, None, 0.0]})
    assert list(vocab.part3_diagnosis(year_2017).fillna("")) == [
        vocab.MELANOMA, keratosis, nevus, "", ""]
    year_2016 = pd.DataFrame({"melanoma": [1.0, 0.0, None]})
    assert list(vocab.part3_diagnosis(year_2016).fillna("")) == [vocab.MELANOMA, "Benign", ""]


def test_isic_2017_metadata_beside_the_ground_truth_is_read(archive: SyntheticSet,
                                                            tmp_path: Path) -> None:
    """Unpacked beside the ground truth rather than in the data folder, the metadata CSV is
    merged just the same."""
    root = tmp_path / "isic2017"
    table = _isic2017(archive, root, "Test_v2")
    name = "ISIC-2017_Test_v2_Data_metadata.csv"
    (root / "ISIC-2017_Test_v2_Data" / name).rename(root / name)
    result = prepare(root, tmp_path / "out", workers=1)
    assert result.source.partner == root / name
    prepared = result.manifest.set_index("id")
    assert set(prepared.index) == set(table.index[table["melanoma"] == 1])
    known = table.loc[prepared.index, "sex"] != "unknown"
    assert (prepared.loc[known[known].index, "sex"] == table.loc[known[known].index, "sex"]).all()
