"""HAM10000 (the ISIC 2018 training set) as it is downloaded: `HAM10000_metadata.csv` beside
its two image folders, read without --column: `dx` is the diagnosis, `localization` the site
(its words read as the Archive's), `lesion_id` groups the split; data without a known id column
is pointed at the column whose values name the image files. The ISIC 2018 Task 3 download (a
one-hot ground truth of the same images) is read too."""

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
from medsynth_kohya.data.sources import HAM10000, ISIC2018
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke

LOCALIZATION = {"back": "posterior torso", "face": "head/neck", "trunk": "torso",
                "hand": "upper extremity", "acral": "palms/soles", "scalp": "head/neck",
                "chest": "anterior torso", "foot": "lower extremity", "genital": "oral/genital",
                "unknown": None}
"""HAM10000's site words, each with the Archive term it must be read as."""
DX = {"Melanoma Invasive": "mel", "Nevus": "nv"}
NEVUS = "Benign:Benign melanocytic proliferations:Nevus"


def _ham(made: SyntheticSet, root: Path, *, dx: bool = True) -> pd.DataFrame:
    """`made` (an Archive export) in HAM10000's layout: its metadata CSV (two photos per
    lesion, the sites in HAM's words) and the images split over its two folders."""
    frame = made.frame
    words = list(LOCALIZATION)
    ham: pd.DataFrame = pd.DataFrame({
        "lesion_id": [f"HAM_{i // 2:07d}" for i in range(len(frame))],
        "image_id": frame["isic_id"],
        "dx": frame["diagnosis_3"].map(DX), "dx_type": "histo",
        "age": frame["age_approx"], "sex": frame["sex"],
        "localization": [words[i % len(words)] for i in range(len(frame))]})
    for index, identifier in enumerate(ham["image_id"]):
        folder = root / f"HAM10000_images_part_{1 + index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(made.images / f"{identifier}.jpg", folder / f"{identifier}.jpg")
    (ham if dx else ham.drop(columns=["dx"])).to_csv(root / "HAM10000_metadata.csv",
                                                      index=False)
    return ham


def test_ham10000_prepares_its_melanomas_with_archive_sites(archive: SyntheticSet,
                                                              tmp_path: Path) -> None:
    root = tmp_path / "ham"
    ham = _ham(archive, root).set_index("image_id")
    melanomas = set(ham.index[ham["dx"] == "mel"])
    assert 0 < len(melanomas) < len(ham)
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.4, seed=1))
    table = result.manifest.set_index("id")
    assert set(table.index) == melanomas
    assert set(table["diagnosis"]) == {vocab.MELANOMA}
    for identifier, row in table.iterrows():
        expected = LOCALIZATION[ham.loc[identifier, "localization"]]
        assert (row["site"] if pd.notna(row["site"]) else None) == expected, identifier
        assert row["patient_id"] == ham.loc[identifier, "lesion_id"]
        assert int(row["age"]) == int(ham.loc[identifier, "age"])
    for _, split in table.groupby("patient_id")["split"]:
        assert split.nunique() == 1  # a lesion's photos stay on one side
    assert {Path(path).parent.name for path in table["source"]} == {
        "HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert not any("localization" in warning or "site is blank" in warning
                   for warning in result.warnings), result.warnings


@pytest.mark.parametrize("term", ["nv", "NV", "Nevus"])
def test_diagnosis_takes_hams_codes(archive: SyntheticSet, tmp_path: Path, term: str) -> None:
    root = tmp_path / "ham"
    ham = _ham(archive, root)
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(diagnosis=term, class_name="nevus"))
    assert set(result.manifest["id"]) == set(ham.loc[ham["dx"] == "nv", "image_id"])
    assert set(result.manifest["diagnosis"]) == {NEVUS}


def test_the_columns_mapped_by_hand_read_the_same(runner: CliRunner, archive: SyntheticSet,
                                                  tmp_path: Path) -> None:
    """The --column mapping a user of an older version passed still selects the melanomas."""
    root = tmp_path / "ham"
    ham = _ham(archive, root)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", "--metadata", root / "HAM10000_metadata.csv",
                             "--images", root, "--out", out, "--workers", 1,
                             "--column", "id=image_id", "--column", "age=age",
                             "--column", "site=localization", "--column", "patient_id=lesion_id")
    assert code == 0, stderr
    prepared = manifest.read(out / "manifest.csv")
    assert set(prepared["id"]) == set(ham.loc[ham["dx"] == "mel", "image_id"])
    assert prepared["site"].notna().any()


@pytest.mark.parametrize("with_images", [False, True])
def test_an_unknown_id_column_is_found_by_the_image_files(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path, with_images: bool) -> None:
    """Without dx the file is no known layout: the id advice names image_id, whose values are
    the file names, not lesion_id (which only looks like an id)."""
    root = tmp_path / "own"
    _ham(archive, root, dx=False)
    source = ["--metadata", root / "HAM10000_metadata.csv", "--images", root] if with_images \
        else [root]
    code, stdout, stderr = invoke(runner, "prepare", *source, "--out", tmp_path / "out")
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "its values name the image files: image_id" in lines[0]
    assert lines[0].endswith("map it with --column id=image_id")


def _isic2018(made: SyntheticSet, root: Path, *, ham: bool = False) -> pd.DataFrame:
    """`made` in the ISIC 2018 Task 3 download's layout: its one-hot ground truth (AKIEC where
    2019 has AK, no SCC; the diagnoses alone) and ISIC2018_Task3_Training_Input/; with `ham`,
    HAM10000_metadata.csv beside it, as a user who also fetched HAM10000's metadata has."""
    images = root / "ISIC2018_Task3_Training_Input"
    frame = _ham(made, images, dx=True)
    for part in images.glob("HAM10000_images_part_*"):
        for image in part.iterdir():
            image.rename(images / image.name)
        part.rmdir()
    (images / "HAM10000_metadata.csv").unlink()
    frame.loc[frame.index[-1], "dx"] = "akiec"
    if ham:
        frame.to_csv(root / "HAM10000_metadata.csv", index=False)
    codes = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AKIEC", "bkl": "BKL", "df": "DF",
             "vasc": "VASC"}
    truth = pd.DataFrame({"image": frame["image_id"],
                          **{column: frame["dx"].eq(code).astype(float)
                             for code, column in codes.items()}})
    truth.to_csv(root / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    return frame


def test_the_isic_2018_ground_truth_selects_by_its_one_hot_columns(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """ISIC 2018 Task 3's download is found by its names and read like ISIC 2019's one-hot
    ground truth, AKIEC as actinic keratosis; it is recorded as ISIC 2018, for the card."""
    root = tmp_path / "isic2018"
    frame = _isic2018(archive, root)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", root, "--out", out, "--workers", 1,
                             "--caption-template", "photo of skin, {trigger}")
    assert code == 0, stderr
    prepared = manifest.read(out / "manifest.csv")
    assert set(prepared["id"]) == set(frame.loc[frame["dx"] == "mel", "image_id"])
    assert set(prepared["diagnosis"]) == {vocab.MELANOMA}
    assert {Path(path).parent.name for path in prepared["source"]} == {
        "ISIC2018_Task3_Training_Input"}
    assert PreparedFolder(out).state().origin == ISIC2018
    keratosis = prepare(root, tmp_path / "ak", workers=1, options=PrepareOptions(
        diagnosis="Solar or actinic keratosis", class_name="ak",
        caption_template="photo of skin, {trigger}"))
    assert list(keratosis.manifest["id"]) == [frame["image_id"].iloc[-1]]


def test_the_isic_2018_ground_truth_alone_asks_for_hams_metadata(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """Captions need sex, age and site, which only HAM10000's metadata holds: one line says
    where to put it, or how to caption without them."""
    root = tmp_path / "isic2018"
    _isic2018(archive, root)
    code, stdout, stderr = invoke(runner, "prepare", root, "--out", tmp_path / "out")
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "ISIC 2018 Task 3" in lines[0] and "HAM10000_metadata.csv" in lines[0]
    assert f"put it in {root}" in lines[0]
    assert lines[0].endswith("from --caption-template")


def test_hams_metadata_beside_the_isic_2018_download_is_read_first(
        archive: SyntheticSet, tmp_path: Path) -> None:
    """With HAM10000_metadata.csv beside the ground truth, prepare reads it (sexes, ages,
    sites, lesions) and finds the images in ISIC2018_Task3_Training_Input/."""
    root = tmp_path / "isic2018"
    frame = _isic2018(archive, root, ham=True).set_index("image_id")
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.4, seed=1))
    table = result.manifest.set_index("id")
    assert set(table.index) == set(frame.index[frame["dx"] == "mel"])
    assert result.source.metadata.name == "HAM10000_metadata.csv"
    assert (table["patient_id"] == frame.loc[table.index, "lesion_id"]).all()
    assert table["site"].notna().any() and table["age"].notna().all()
    assert PreparedFolder(result.out).state().origin == HAM10000


def test_the_isic_2018_training_ground_truth_is_read_before_the_validation_one(
        archive: SyntheticSet, tmp_path: Path) -> None:
    """With the validation (or test) ground truth downloaded beside the training one, prepare
    reads the training set's, which README names, and notes the other as not read."""
    root = tmp_path / "isic2018"
    frame = _isic2018(archive, root)
    training = pd.read_csv(root / "ISIC2018_Task3_Training_GroundTruth.csv")
    for part in ("Validation", "Test"):
        training.head(1).to_csv(root / f"ISIC2018_Task3_{part}_GroundTruth.csv", index=False)
    result = prepare(root, tmp_path / "out", workers=1,
                     options=PrepareOptions(caption_template="photo of skin, {trigger}"))
    assert result.source.metadata.name == "ISIC2018_Task3_Training_GroundTruth.csv"
    assert set(result.manifest["id"]) == set(frame.loc[frame["dx"] == "mel", "image_id"])
    assert any("ISIC2018_Task3_Validation_GroundTruth.csv" in warning
               for warning in result.warnings), result.warnings


def test_the_isic_2018_ground_truth_given_by_name_asks_for_hams_metadata_in_its_place(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    """Given with --metadata, the ground truth is read whatever lies beside it: the line says to
    give HAM10000_metadata.csv in its place, not to put it in a folder that is not searched."""
    root = tmp_path / "isic2018"
    _isic2018(archive, root, ham=True)
    code, stdout, stderr = invoke(
        runner, "prepare", "--metadata", root / "ISIC2018_Task3_Training_GroundTruth.csv",
        "--images", root / "ISIC2018_Task3_Training_Input", "--out", tmp_path / "out")
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "ISIC 2018 Task 3" in lines[0] and "put it in" not in lines[0]
    assert "give it in place of ISIC2018_Task3_Training_GroundTruth.csv" in lines[0]
    code, _, stderr = invoke(
        runner, "prepare", "--metadata", root / "HAM10000_metadata.csv",
        "--images", root / "ISIC2018_Task3_Training_Input", "--out", tmp_path / "out")
    assert code == 0, stderr
