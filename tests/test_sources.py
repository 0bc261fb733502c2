"""What `prepare` takes for its source: never this tool's own outputs (a synthetic set, a
prepared folder's links), any file that is no CSV refused in one line, and metadata read
however a spreadsheet or isic-cli wrote it (encoding, letter case, unknown subtypes)."""

from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import archive as vocab
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import BELOW_SKIP, PrepareOptions, prepare, summary
from medsynth_kohya.data.synth import SyntheticSet, encode_jpeg, lesion_image, make_dataset
from medsynth_kohya.errors import UserError

from .conftest import invoke, prepare_set
from .fake_gen import PYTHON, FakeGen

INVASIVE = "Malignant:Malignant melanocytic proliferations (Melanoma):Melanoma Invasive"
NEVUS = "Benign:Benign melanocytic proliferations:Nevus"


def _error_line(code: int, stdout: str, stderr: str) -> str:
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _sources(out: Path) -> list[Path]:
    table = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return [Path(path) for path in table["source"]]


@pytest.fixture
def synthetic(runner: CliRunner, fake_gen: FakeGen, trained: Path, tmp_path: Path) -> Path:
    """A synthetic set made by `sample` (from a run on the generated ISIC 2020 set)."""
    out = tmp_path / "syn1"
    code, stdout, stderr = invoke(runner, "sample", "--lora", trained, "--n", 3, "--out", out,
                                  "--width", 64, "--height", 64, "--steps", 2,
                                  "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON)
    assert code == 0, stdout + stderr
    return out


def test_a_synthetic_set_is_never_taken_for_training_data(
        runner: CliRunner, synthetic: Path, isic2020: SyntheticSet, tmp_path: Path) -> None:
    for args in ([synthetic], ["--metadata", synthetic / "metadata.csv",
                               "--images", synthetic / "images"]):
        line = _error_line(*invoke(runner, "prepare", *args, "--out", tmp_path / "o"))
        assert "generated" in line and "its own output" in line
        assert str(synthetic / "metadata.csv") in line
    assert not (tmp_path / "o" / "manifest.csv").exists()

    workspace = tmp_path / "wsp"
    shutil.copytree(synthetic, workspace / "a_synthetic")
    (workspace / "a_copy").mkdir()  # its metadata alone, without sample's state folder
    shutil.copy(synthetic / "metadata.csv", workspace / "a_copy" / "metadata.csv")
    line = _error_line(*invoke(runner, "prepare", workspace, "--out", tmp_path / "o"))
    assert "a_copy" in line and "its own output" in line
    shutil.rmtree(workspace / "a_copy")
    shutil.copytree(isic2020.root, workspace / "b_isic")
    result = prepare(workspace, tmp_path / "o", workers=1)
    assert result.source.metadata == workspace / "b_isic" / "train.csv"
    assert len(result.manifest) == len(isic2020.frame)
    rows = dict(summary(result))
    assert rows["metadata"] == str(workspace / "b_isic" / "train.csv")
    assert rows["images"] == str((workspace / "b_isic" / "train").resolve())


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "7z"])
def test_an_archive_as_source_is_one_line_saying_extract_it(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "download" / f"isic.{kind}"
    path.parent.mkdir()
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as made:
            for file in [isic2020.metadata, *sorted(isic2020.images.iterdir())]:
                made.write(file, file.relative_to(isic2020.root))
    elif kind == "7z":
        path.write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(200))
    else:
        with tarfile.open(path, "w:gz" if kind.endswith("gz") else "w") as made:
            made.add(isic2020.root, "isic")
    line = _error_line(*invoke(runner, "prepare", path, "--out", tmp_path / "o"))
    assert f"{path} is a" in line and "archive: extract it and pass the folder" in line
    line = _error_line(*invoke(runner, "prepare", path.parent, "--out", tmp_path / "o"))
    assert f"({path.name} is an archive: extract it here)" in line  # in the SOURCE folder


def test_a_file_pandas_cannot_read_as_csv_is_one_short_line(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    noise = bytes((i * 7919 + 13) % 256 for i in range(20000))
    zstd = b"\x28\xb5\x2f\xfd" + noise
    sheet = io.BytesIO()
    with zipfile.ZipFile(sheet, "w") as made:
        made.writestr("[Content_Types].xml", "<Types/>")
        made.writestr("xl/workbook.xml", "<workbook/>")
    cases = {"junk.zst": (noise, "binary data"),
             "isic.xlsx": (sheet.getvalue(), "export it as CSV"),
             "sheet.csv": (sheet.getvalue(), "export it as CSV"),
             "old.xls": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + noise, "export it as CSV"),
             "train.csv": (noise, "binary data")}
    if importlib.util.find_spec("zstandard") is None:
        cases["real.csv.zst"] = (zstd, "pip install zstandard")
    for name, (content, needle) in cases.items():
        (tmp_path / name).write_bytes(content)
        line = _error_line(*invoke(runner, "prepare", tmp_path / name, "--out", tmp_path / "o"))
        assert needle in line and len(line) < 300, line
    long_header = "x" * 5000 + ",y\n1,2\n"
    (tmp_path / "wide.csv").write_text(long_header, encoding="utf-8")
    line = _error_line(*invoke(runner, "prepare", tmp_path / "wide.csv", "--out", tmp_path / "o"))
    assert "--column id=" in line and len(line) < 600, line

    packed = tmp_path / "train.csv.gz"  # one compressed CSV is read as before
    packed.write_bytes(gzip.compress(isic2020.metadata.read_bytes()))
    result = prepare(None, tmp_path / "gz", metadata=packed, images=isic2020.images, workers=1)
    assert len(result.manifest) == len(isic2020.frame)


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
    assert "is not an ISIC Archive value; read as its deepest known level" in text
    assert "melanoma invasive'" not in text  # a known term in another case is no warning


def test_earlier_outputs_under_images_are_never_sources(
        runner: CliRunner, isic2020: SyntheticSet, synthetic: Path, trained: Path,
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(isic2020.images, data / "train")
    prepare(None, data / "prepared", metadata=isic2020.metadata, images=data / "train",
            workers=1)
    shutil.copytree(synthetic, data / "generated")
    ids = list(isic2020.frame["image_name"])
    made = sorted((data / "generated" / "images").iterdir())
    for path, name in zip(made, ids, strict=False):  # generated images named like real ones
        path.rename(path.with_name(f"{name}.png"))
    shutil.copytree(trained, data / "run")  # and a run's sample images
    (data / "run" / "output" / "sample").mkdir()
    shutil.copy(made[0].with_name(f"{ids[0]}.png"), data / "run" / "output" / "sample" /
                f"{ids[-1]}.png")
    (data / "notes").mkdir()  # a run.json of another tool is no run of this one
    (data / "notes" / "run.json").write_text('{"tool": "other"}', encoding="utf-8")
    shutil.copy(data / "train" / f"{ids[0]}.jpg", data / "notes" / "ISIC_0000001.jpg")
    out = tmp_path / "again"
    code, stdout, stderr = invoke(runner, "prepare", "--metadata", isic2020.metadata,
                                  "--images", data, "--out", out)
    assert code == 0, stdout + stderr
    assert {path.parent for path in _sources(out)} == {(data / "train").resolve()}
    assert "two folders" not in stdout + stderr
    skipped = pd.read_csv(out / "skipped.csv", dtype=str).set_index("id")
    notes = (data / "notes" / "ISIC_0000001.jpg").resolve()
    assert skipped.loc["ISIC_0000001", "source"] == str(notes)
    for inside in (data / "prepared" / "img", data / "generated"):
        line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata,
                                   "--images", inside, "--out", tmp_path / "o"))
        assert f"--images {inside} is in" in line and "which medsynth-kohya wrote" in line

    copy = data / "more"  # a second, different file for one id is named
    copy.mkdir()
    (copy / f"{ids[0]}.jpg").write_bytes(encode_jpeg(lesion_image(320, 240, hairy=False,
                                                                   seed=9)))
    result = prepare(None, out, metadata=isic2020.metadata, images=data, workers=1)
    warning = next(w for w in result.warnings if "two folders" in w)
    assert f"{ids[0]}: " in warning and str(copy / f"{ids[0]}.jpg") in warning


def test_two_files_of_one_id_in_one_folder_are_named_with_how_to_choose(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """X.jpg and X.png side by side: --images cannot choose between them, so the warning says
    which one is used and to remove or rename the other."""
    import cv2

    photo = sorted(isic2020.images.glob("*.jpg"))[0]
    other = photo.with_suffix(".png")
    cv2.imwrite(str(other), lesion_image(320, 240, hairy=False, seed=4))
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    (warning,) = [w for w in result.warnings if photo.stem in w]
    assert warning.startswith("1 image id has two files in one folder")
    assert f"{photo.stem}: {photo.name}, not {other.name} in {other.parent}" in warning
    assert "remove or rename the file not to train on" in warning and "--images" not in warning
    source = result.manifest.set_index("id").loc[photo.stem, "source"]
    assert Path(source).name == photo.name


def test_two_files_of_several_ids_in_one_folder_are_to_be_renamed_in_the_plural(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Three ids with two files each were told to "remove or rename the file"."""
    for photo in sorted(isic2020.images.glob("*.jpg"))[:3]:
        shutil.copy(photo, photo.with_suffix(".jpeg"))
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    (warning,) = [w for w in result.warnings if "two files in one folder" in w]
    assert warning.startswith("3 image ids have two files in one folder"), warning
    assert warning.endswith(": remove or rename the files not to train on"), warning


def test_of_two_files_of_one_id_the_one_whose_content_fits_its_extension_is_used(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """X.PNG holding JPEG bytes sorts before X.jpg, yet the valid X.jpg is used (in one folder
    or in another folder searched later); the warning still names both."""
    photos = sorted(isic2020.images.glob("*.jpg"))
    beside = photos[0].with_suffix(".PNG")
    shutil.copy(photos[0], beside)
    first = isic2020.root / "a-first"  # searched before train/
    first.mkdir()
    shutil.copy(photos[1], first / f"{photos[1].stem}.png")
    result = prepare(None, tmp_path / "out", metadata=isic2020.metadata,
                     images=isic2020.root, workers=1)
    sources = result.manifest.set_index("id")["source"]
    assert Path(sources[photos[0].stem]) == photos[0]
    assert Path(sources[photos[1].stem]) == photos[1]
    assert result.skipped.empty
    (one,) = [w for w in result.warnings if "two files in one folder" in w]
    assert f"{photos[0].stem}: {photos[0].name}, not {beside.name} in {beside.parent}" in one
    (two,) = [w for w in result.warnings if "two folders" in w]
    assert f"{photos[1].stem}: {photos[1]}, not {first / photos[1].stem}.png" in two


@pytest.mark.parametrize("extra", ["a-extra", "zz-extra"])
def test_of_two_copies_of_one_id_a_good_one_wins_over_a_truncated_one(
        isic2020: SyntheticSet, tmp_path: Path, extra: str) -> None:
    """An id with a truncated copy in the folder searched first and a good one in the other
    (extra/ before or after train/) is trained on from the good copy, with a warning naming
    both; only the broken copy's other copy is scanned besides the ids' first copies."""
    photos = sorted(isic2020.images.glob("*.jpg"))
    photo = photos[0]
    folder = isic2020.root / extra
    folder.mkdir()
    copy = folder / photo.name
    shutil.copy(photo, copy)
    broken, good = (copy, photo) if extra < isic2020.images.name else (photo, copy)
    broken.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    result = prepare(None, tmp_path / "out", metadata=isic2020.metadata,
                     images=isic2020.root, workers=1)
    assert result.skipped.empty
    assert Path(result.manifest.set_index("id").at[photo.stem, "source"]) == good.absolute()
    assert result.scanned == len(photos) + 1
    (warning,) = [w for w in result.warnings if photo.stem in w]
    assert f"{photo.stem}: {good}, not {broken} (truncated)" in warning
    assert not [w for w in result.warnings if "two folders" in w]


def test_images_in_subfolders_of_the_layouts_image_folder_are_found(
        isic2020: SyntheticSet) -> None:
    """train/batch2/X.jpg of an ISIC 2020 download is found from SOURCE as --images finds it;
    an --out inside train/ is still never searched, on a re-run neither."""
    photos = sorted(isic2020.images.glob("*.jpg"))
    batch = isic2020.images / "batch2"
    batch.mkdir()
    for photo in photos[::3]:
        photo.rename(batch / photo.name)
    out = isic2020.images / "prepared"
    for _ in range(2):
        result = prepare(isic2020.root, out, workers=1)
        assert result.skipped.empty and len(result.manifest) == len(photos)
        sources = {Path(p).parent for p in result.manifest["source"]}
        assert sources == {isic2020.images.absolute(), batch.absolute()}


def test_an_image_below_the_metadatas_folder_is_named_with_the_images_to_pass(
        tmp_path: Path) -> None:
    """The metadata's own folder is searched alone: an id whose file is in a subfolder of it is
    skipped with where the file is, and a warning gives the --images that takes it."""
    archive = make_dataset(tmp_path / "isic", 6, seed=3, layout="archive",
                           melanoma_fraction=1.0)
    photos = sorted(archive.images.glob("*.jpg"))
    batch = archive.root / "batch2"
    batch.mkdir()
    moved = photos[:2]
    for photo in moved:
        photo.rename(batch / photo.name)
    result = prepare(archive.root, tmp_path / "out", workers=1)
    skipped = result.skipped.set_index("id")
    assert sorted(skipped.index) == sorted(photo.stem for photo in moved)
    assert set(skipped["reason"]) == {BELOW_SKIP}
    assert {Path(path).name for path in skipped["source"]} == {photo.name for photo in moved}
    (warning,) = [w for w in result.warnings if "subfolders of" in w]
    root = archive.root.resolve()
    assert warning.startswith(f"2 selected images are only in subfolders of {root} ")
    assert warning.endswith(f"pass --images {root} to take them")
    again = prepare(None, tmp_path / "again", metadata=archive.metadata, images=root, workers=1)
    assert again.skipped.empty and len(again.manifest) == len(photos)


def test_preparing_into_the_images_folder_never_takes_its_own_links(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(isic2020.images, data / "train")
    for _ in range(2):  # the second run finds img/ full of the first one's links
        prepare(None, data, metadata=isic2020.metadata, images=data, workers=1, force=True)
        assert {path.parent for path in _sources(data)} == {(data / "train").resolve()}
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata,
                               "--images", data / "img", "--out", data))
    assert "which medsynth-kohya wrote" in line


def test_a_folder_prepared_into_the_images_folder_is_not_searched_by_another_prepare(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """prepare --out IMAGES --force, then prepare into another folder, found the first one's
    layout below the images folder and warned of every id as files in two folders."""
    prepare(isic2020.root, isic2020.images, workers=1, force=True)
    again = prepare(isic2020.root, tmp_path / "again", workers=1)
    assert not [w for w in again.warnings if "two folders" in w]
    assert {path.parent for path in _sources(tmp_path / "again")} == {
        isic2020.images.resolve()}


def test_symlinked_image_folders_are_followed_once(isic2020: SyntheticSet, tmp_path: Path,
                                                   runner: CliRunner) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "linked").symlink_to(isic2020.images, target_is_directory=True)
    (isic2020.images / "loop").symlink_to(images, target_is_directory=True)
    result = prepare(None, tmp_path / "out", metadata=isic2020.metadata, images=images,
                     workers=1)
    assert len(result.manifest) == len(isic2020.frame)
    assert not [w for w in result.warnings if "two folders" in w]
    searched = [folder.resolve() for folder in result.source.image_dirs]
    assert len(set(searched)) == len(searched) == 2  # the loop is walked once

    (tmp_path / "empty").mkdir()
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata,
                               "--images", tmp_path / "empty", "--out", tmp_path / "o"))
    assert "no .jpg/.jpeg/.png files in" in line and "pass --images" not in line


def zipped_download(made: SyntheticSet, folder: Path) -> Path:
    """An ISIC 2020 download not yet extracted: `made`'s metadata CSV in `folder` beside
    ISIC_2020_Training_JPEG.zip of its images (under train/), which is returned."""
    folder.mkdir()
    shutil.copy(made.metadata, folder / made.metadata.name)
    archive = folder / "ISIC_2020_Training_JPEG.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for image in sorted(made.images.iterdir()):
            packed.write(image, f"train/{image.name}")
    return archive


def test_an_unextracted_download_beside_the_metadata_is_named(
        isic2020: SyntheticSet, tmp_path: Path, runner: CliRunner) -> None:
    """A folder of the metadata CSV and ISIC_2020_Training_JPEG.zip said only 'pass --images
    DIR'."""
    source = tmp_path / "download"
    archive = zipped_download(isic2020, source)
    line = _error_line(*invoke(runner, "prepare", source, "--out", tmp_path / "o"))
    assert line.endswith(f"no .jpg/.jpeg/.png files in {source}, but {archive.name} is there: "
                         f"extract it (unzip {archive} -d {source}) and run this again"), line
    assert f"from {len(isic2020.frame)} selected rows:" in line


def test_a_latin1_spreadsheet_export_is_read_with_a_warning(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    frame = isic2020.frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(object)
    frame.loc[0, "patient_id"] = "Hospital Clínic de Barcelona"
    frame.to_csv(isic2020.metadata, index=False, encoding="cp1252", sep=";")
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    assert any("not UTF-8" in w and "cp1252" in w for w in result.warnings)
    patients = set(result.manifest["patient_id"])
    assert "Hospital Clínic de Barcelona" in patients
    assert len(result.manifest) == len(frame)

    frame.to_csv(isic2020.metadata, index=False, encoding="utf-16", sep="\t")  # "Unicode text"
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    assert "Hospital Clínic de Barcelona" in set(result.manifest["patient_id"])
    assert not any("not UTF-8" in w for w in result.warnings)

    frame.to_csv(isic2020.metadata, index=False, sep="|")  # a database's export
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    assert "Hospital Clínic de Barcelona" in set(result.manifest["patient_id"])
    assert list(result.manifest["age"].dropna()) == list(frame["age_approx"].dropna())


def test_a_utf8_file_with_a_bom_and_one_stray_western_byte_keeps_its_first_column(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Read as cp1252, the UTF-8 byte-order mark became 'ï»¿' in the first column's name, so
    image_name was not found and the user was told to map ---column id=ï»¿image_name."""
    frame = isic2020.frame.copy()
    frame["patient_id"] = frame["patient_id"].astype(object)
    frame.loc[0, "patient_id"] = "IP_Zoë"
    text = frame.to_csv(index=False)
    isic2020.metadata.write_bytes(codecs.BOM_UTF8 + text.encode("cp1252"))
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    assert len(result.manifest) == len(frame) and "IP_Zoë" in set(result.manifest["patient_id"])
    assert any("not UTF-8: read as cp1252" in w for w in result.warnings)


def test_option_mistakes_are_named_as_they_are(runner: CliRunner, isic2020: SyntheticSet,
                                               tmp_path: Path) -> None:
    out = tmp_path / "o"
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--images", isic2020.metadata,
                               "--out", out))
    assert f"--images {isic2020.metadata} is a file" in line
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.root,
                               "--images", isic2020.images, "--out", out))
    assert f"--metadata {isic2020.root} is a folder" in line

    isic2020.frame.drop(columns=["sex"]).to_csv(isic2020.metadata, index=False)
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", out))
    assert "drop {sex} from --caption-template" in line and "{age}" not in line

    frame = isic2020.frame.copy()
    frame.insert(3, "sex ", frame["sex"])
    frame.to_csv(isic2020.metadata, index=False)
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", out))
    assert "more than one column named 'sex'" in line


def test_column_names_match_in_any_letter_case(isic2020: SyntheticSet, tmp_path: Path) -> None:
    reference = prepare_set(isic2020, tmp_path / "reference")
    renamed = {"image_name": "Image_Name", "sex": "SEX", "target": "Target",
               "anatom_site_general_challenge": "Anatom_Site_General_Challenge"}
    frame = isic2020.frame.rename(columns=renamed)
    frame.loc[0, "Target"] = 0
    frame.to_csv(isic2020.metadata, index=False)
    out = prepare_set(isic2020, tmp_path / "out")
    table = pd.read_csv(out / "manifest.csv", dtype=str)
    expected = pd.read_csv(reference / "manifest.csv", dtype=str)
    expected = expected.loc[expected["id"] != isic2020.frame["image_name"][0]]
    assert list(table["caption"]) == list(expected["caption"])

    frame.insert(3, "Sex", frame["SEX"])  # two spellings: which one is meant is unclear
    frame.to_csv(isic2020.metadata, index=False)
    with pytest.raises(UserError, match="no column sex for sex"):
        prepare(isic2020.root, tmp_path / "o", workers=1,
                options=PrepareOptions(hair=HairMode.off))


def _isic2019(made: SyntheticSet, root: Path) -> pd.DataFrame:
    """`made` (an Archive export) in the ISIC 2019 challenge's layout: a one-hot ground truth
    CSV, a metadata CSV (lesions, no patients) and the images in ISIC_2019_Training_Input/."""
    frame: pd.DataFrame = made.frame.copy()
    frame["lesion_id"] = [f"L{i // 2}" for i in range(len(frame))]  # two photos per lesion
    melanoma = frame["diagnosis_3"].eq("Melanoma Invasive").astype(float)
    truth = pd.DataFrame({"image": frame["isic_id"], "MEL": melanoma, "NV": 1.0 - melanoma,
                          **dict.fromkeys(("BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"),
                                          0.0)})
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    for identifier in frame["isic_id"]:
        shutil.copy(made.images / f"{identifier}.jpg", images / f"{identifier}.jpg")
    truth.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    frame.rename(columns={"isic_id": "image"})[
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]].iloc[::-1].to_csv(
        root / "ISIC_2019_Training_Metadata.csv", index=False)
    return frame


def test_the_isic_2019_pair_of_csvs_is_merged_on_the_image(archive: SyntheticSet,
                                                            tmp_path: Path) -> None:
    assert all(vocab.diagnosis_path(term) for term in vocab.CLASSES_2019.values())
    root = tmp_path / "isic2019"
    frame = _isic2019(archive, root)
    melanomas = frame.loc[frame["diagnosis_3"] == "Melanoma Invasive"]
    reference = prepare(archive.root, tmp_path / "reference", workers=1)
    for source in (root, root / "ISIC_2019_Training_GroundTruth.csv",
                   root / "ISIC_2019_Training_Metadata.csv"):
        out = tmp_path / "out" / source.name
        result = prepare(source, out, workers=1,
                         options=PrepareOptions(val_frac=0.4, seed=1))
        table = result.manifest.set_index("id")
        assert set(table.index) == set(melanomas["isic_id"]), source
        assert set(table["diagnosis"]) == {vocab.MELANOMA}
        assert dict(zip(reference.manifest["id"], reference.manifest["caption"],
                        strict=True)) == dict(table["caption"])
        lesions = melanomas.set_index("isic_id")["lesion_id"]
        for _, split in table.groupby(lesions.reindex(table.index))["split"]:
            assert split.nunique() == 1  # both photos of a lesion on one side
        assert set(table["split"]) == {"train", "val"}


def test_isic_2019_ids_the_metadata_csv_lacks_are_named(archive: SyntheticSet,
                                                        tmp_path: Path) -> None:
    """A ground truth id without a row in the metadata CSV was prepared with blank sex, age and
    site, its caption short of them, without a word."""
    root = tmp_path / "isic2019"
    frame = _isic2019(archive, root)
    melanomas = sorted(frame.loc[frame["diagnosis_3"] == "Melanoma Invasive", "isic_id"])
    metadata = root / "ISIC_2019_Training_Metadata.csv"
    table = pd.read_csv(metadata, dtype=str)
    table[~table["image"].isin(melanomas[:2])].to_csv(metadata, index=False)
    result = prepare(root, tmp_path / "out", workers=1)
    assert (f"2 selected ids of ISIC_2019_Training_GroundTruth.csv have no row in "
            f"ISIC_2019_Training_Metadata.csv (first: {melanomas[0]}), so no sex, age or site "
            "for their captions: use the two CSVs of one ISIC 2019 download") in result.warnings
    _isic2019(archive, tmp_path / "whole")
    whole = prepare(tmp_path / "whole", tmp_path / "whole-out", workers=1)
    assert not [w for w in whole.warnings if "no row in" in w]


def test_isic_2019_blank_caption_fields_name_the_metadata_csv_that_holds_them(
        archive: SyntheticSet, tmp_path: Path) -> None:
    """Sex, age and site blank in most rows were said to be columns of the ground truth CSV,
    which has none of them."""
    root = tmp_path / "isic2019"
    frame = _isic2019(archive, root)
    metadata = root / "ISIC_2019_Training_Metadata.csv"
    table = pd.read_csv(metadata, dtype=str)
    table.loc[:, ["age_approx", "anatom_site_general", "sex"]] = ""
    table.to_csv(metadata, index=False)
    melanomas = frame.loc[frame["diagnosis_3"] == "Melanoma Invasive", "isic_id"]
    for source in (root, root / "ISIC_2019_Training_Metadata.csv"):
        result = prepare(source, tmp_path / "out" / source.name, workers=1)
        blank = [w for w in result.warnings if " is blank in " in w]
        assert len(blank) == 3, result.warnings
        for name, column in (("sex", "sex"), ("age", "age_approx"),
                             ("site", "anatom_site_general")):
            assert (f"{name} is blank in {len(melanomas)} of {len(melanomas)} selected rows, "
                    f"so their captions go without it: check column {column} of "
                    f"ISIC_2019_Training_Metadata.csv or map another with --column "
                    f"{name}=COLUMN") in blank


def test_isic_2019_ids_pandas_would_read_as_missing_are_merged_as_written(
        archive: SyntheticSet, tmp_path: Path) -> None:
    root = tmp_path / "isic2019"
    frame = _isic2019(archive, root)
    melanomas = list(frame.loc[frame["diagnosis_3"] == "Melanoma Invasive", "isic_id"])
    renamed = {melanomas[0]: "NA", melanomas[1]: "null"}
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        table = pd.read_csv(root / name, dtype=str, keep_default_na=False)
        table["image"] = table["image"].replace(renamed)
        if "age_approx" in table:
            table.loc[table["image"] == melanomas[2], "age_approx"] = "NA"
        table.to_csv(root / name, index=False)
    for old, new in renamed.items():
        (root / "ISIC_2019_Training_Input" / f"{old}.jpg").rename(
            root / "ISIC_2019_Training_Input" / f"{new}.jpg")
    table = prepare(root, tmp_path / "out", workers=1).manifest.set_index("id")
    assert set(table.index) == {renamed.get(i, i) for i in melanomas}
    truth = frame.set_index("isic_id")
    for old, new in renamed.items():  # the metadata CSV's columns reached the renamed rows
        assert table.loc[new, "sex"] == truth.loc[old, "sex"]
    assert pd.isna(table.loc[melanomas[2], "age"])  # an age written NA is none


@pytest.mark.parametrize(("kept", "missing"), [
    ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"),
    ("ISIC_2019_Training_Metadata.csv", "ISIC_2019_Training_GroundTruth.csv")])
def test_one_isic_2019_csv_without_the_other_says_which_to_download(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path, kept: str,
        missing: str) -> None:
    """No --column advice that cannot work: the other half of the pair is named, whether the
    folder or the CSV is given."""
    root = tmp_path / "isic2019"
    _isic2019(archive, root)
    (root / missing).unlink()
    for source in (root, root / kept):
        line = _error_line(*invoke(runner, "prepare", source, "--out", tmp_path / "out"))
        assert f"{missing} is missing beside {root / kept}" in line, line
        assert "--column" not in line and "no ISIC metadata found" not in line


def test_an_isic_2019_row_with_two_classes_set_is_named(archive: SyntheticSet,
                                                        tmp_path: Path) -> None:
    root = tmp_path / "isic2019"
    frame = _isic2019(archive, root)
    truth_file = root / "ISIC_2019_Training_GroundTruth.csv"
    truth = pd.read_csv(truth_file)
    first = frame.loc[frame["diagnosis_3"] == "Melanoma Invasive", "isic_id"].min()
    truth.loc[truth["image"] == first, "NV"] = 1.0
    truth.to_csv(truth_file, index=False)
    result = prepare(root, tmp_path / "out", workers=1)
    said = [w for w in result.warnings if "more than one class" in w]
    assert said == [f"1 selected row has more than one class set (first: {first}: MEL, NV), "
                    "each read as its first (MEL): correct the ground truth, or leave them out "
                    "with --query 'MEL + NV + BCC + AK + BKL + DF + VASC + SCC == 1'"]
    again = prepare(root, tmp_path / "out2", workers=1, options=PrepareOptions(
        query="MEL == 1 and MEL + NV + BCC + AK + BKL + DF + VASC + SCC == 1"))
    assert first not in set(again.manifest["id"])


def test_other_metadata_files_beside_the_one_read_are_named(isic2020: SyntheticSet,
                                                            tmp_path: Path) -> None:
    """A folder with train.csv and ISIC_2020_Training_GroundTruth.csv (the challenge's and
    Kaggle's) read one by the documented order and said nothing of the other."""
    beside = isic2020.root / "ISIC_2020_Training_GroundTruth_v2.csv"
    shutil.copy(isic2020.metadata, beside)
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    read = result.source.metadata
    [other] = {isic2020.metadata, beside} - {read}
    assert (f"{read.name} is read as the metadata; also in {read.parent} and not read: "
            f"{other.name} (give another with --metadata FILE)") in result.warnings
    chosen = prepare(None, tmp_path / "chosen", metadata=other, images=isic2020.images,
                     workers=1)  # a file the user named: nothing to say
    assert not [w for w in chosen.warnings if "is read as the metadata" in w]


def test_a_target_that_is_not_0_or_1_is_named_with_the_query_that_takes_it(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """`yes` or `2` in ISIC 2020's target was neither selected nor named: those melanomas
    were left out silently."""
    frame = isic2020.frame.copy()
    frame["target"] = frame["target"].map({1: "yes", 0: "0"})
    frame.to_csv(isic2020.metadata, index=False)
    count = int((frame["target"] == "yes").sum())
    with pytest.raises(UserError, match=r"no images were prepared \(the default selection is "
                       rf"target 1\): {count} rows .* neither 0 nor 1 \(first: 'yes'\)"):
        prepare(isic2020.root, tmp_path / "o", workers=1)  # none is 1: the refusal says why
    frame.loc[frame.index[0], "target"] = "1"
    frame.to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "o", workers=1)
    odd = count - (isic2020.frame["target"].iloc[0] == 1)
    assert (f"{odd} rows of {isic2020.metadata.name} have a target that is neither 0 nor 1 "
            "(first: 'yes') and were not selected: write 1 for a melanoma, or choose rows "
            "with --query (--query 'target == \"yes\"')") in result.warnings
    chosen = prepare(isic2020.root, tmp_path / "q", workers=1, options=PrepareOptions(
        query='target == "yes"'))
    assert len(chosen.manifest) == odd and not [
        w for w in chosen.warnings if "neither 0 nor 1" in w]


@pytest.mark.parametrize("written", [{1: True, 0: False}, {1: "true", 0: "FALSE"}])
def test_a_true_false_target_is_1_and_0_with_no_warning(
        isic2020: SyntheticSet, tmp_path: Path, written: dict[int, object]) -> None:
    """True/False (a spreadsheet's booleans) was taken as 1/0 by the selection but warned of
    as neither 0 nor 1, with a --query that matched none."""
    frame = isic2020.frame.copy()
    frame["target"] = frame["target"].map(written)
    frame.to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "o", workers=1)
    assert len(result.manifest) == int((isic2020.frame["target"] == 1).sum())
    assert not [w for w in result.warnings if "neither 0 nor 1" in w]


def test_the_query_a_numeric_odd_target_warning_suggests_selects_those_rows(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """A target of 2 in a numeric column was suggested as --query 'target == "2"', which
    matches nothing: the suggestion must select the rows it names."""
    frame = isic2020.frame.copy()
    frame.loc[frame.index[:3], "target"] = 2
    frame.to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "o", workers=1)
    [warning] = [w for w in result.warnings if "neither 0 nor 1" in w]
    query = warning.rsplit("--query '", 1)[1].removesuffix("')")
    chosen = prepare(isic2020.root, tmp_path / "q", workers=1,
                     options=PrepareOptions(query=query))
    assert len(chosen.manifest) == 3


def test_a_symlink_loop_as_the_folder_to_leave_out_is_passed_over(isic2020: SyntheticSet,
                                                                   tmp_path: Path) -> None:
    from medsynth_kohya.data.sources import locate

    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    found = locate(isic2020.root, exclude=tmp_path / "loop-a" / "prepared")
    assert found.image_dirs == locate(isic2020.root).image_dirs
    assert any(folder.iterdir() for folder in found.image_dirs)
    images = locate(None, isic2020.root / "train.csv", isic2020.root / "train",
                    exclude=tmp_path / "loop-b")
    assert images.image_dirs == (isic2020.root.resolve() / "train",)
