"""The manifest's schema on its own: columns in order with their types, true/false on disk,
older manifests without the optional columns, and one line for every file that is not one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medsynth_kohya import files
from medsynth_kohya.data import manifest
from medsynth_kohya.errors import UserError


def _rows() -> pd.DataFrame:
    """Two rows as prepare makes them, the columns shuffled and one extra."""
    rows: pd.DataFrame = pd.DataFrame({
        "split": ["train", "val"], "extra": [1, 2], "id": ["ISIC_0000001", "ISIC_0000002"],
        "source": ["/d/ISIC_0000001.jpg", "/d/ISIC_0000002.jpg"],
        "patient_id": ["007", None], "sex": ["female", None], "age": [45, None],
        "site": ["torso", "head/neck"], "diagnosis": ["Malignant:Melanoma", None],
        "fitzpatrick_skin_type": ["II", None], "hairy": [True, False],
        "hair_score": [0.25, None], "ita": [41.5, None], "skin_tone": ["light", None],
        "vignette": [True, None], "ruler": [False, True], "bubbles": [None, False],
        "metadata_hairy": [False, None], "marker_pen": [None, True],
        "image_type": ["dermoscopic", None],
        "caption": ["a photo", "another, photo"], "width": [640, 800], "height": [480, 600],
    }, index=[5, 9])
    return rows


def test_conform_orders_and_types_the_columns() -> None:
    frame = manifest.conform(_rows())
    assert tuple(frame.columns) == manifest.COLUMNS
    assert {column: str(frame[column].dtype) for column in frame} == {
        column: str(pd.Series([], dtype=dtype).dtype)
        for column, dtype in manifest.DTYPES.items()}
    assert list(frame.index) == [0, 1]
    assert frame["age"].tolist()[0] == 45 and frame["age"].isna().tolist() == [False, True]


def test_conform_adds_the_optional_columns_blank() -> None:
    old = _rows().drop(columns=list(manifest.OPTIONAL))
    frame = manifest.conform(old)
    assert tuple(frame.columns) == manifest.COLUMNS
    assert all(frame[column].isna().all() for column in manifest.OPTIONAL)


def test_written_and_read_back_unchanged(tmp_path: Path) -> None:
    frame = manifest.conform(_rows())
    path = tmp_path / "manifest.csv"
    manifest.write(frame, path)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(manifest.COLUMNS)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert text["hairy"].tolist() == ["true", "false"]
    assert text["vignette"].tolist() == ["true", ""]
    assert text["bubbles"].tolist() == ["", "false"]
    assert text["patient_id"].tolist() == ["007", ""]
    pd.testing.assert_frame_equal(manifest.read(path), frame)


def test_read_hashed_gives_the_table_and_the_digest_of_the_file_it_read(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    manifest.write(manifest.conform(_rows()), path)
    table, digest = manifest.read_hashed(path)
    pd.testing.assert_frame_equal(table, manifest.read(path))
    assert digest == files.sha256(path)
    with pytest.raises(UserError, match=r"cannot be read \(\[Errno 21\] Is a directory"):
        manifest.read_hashed(tmp_path)


def test_ids_of_digits_keep_their_zeros(tmp_path: Path) -> None:
    """An id is a file stem, whatever it looks like (a layout of numbered photos)."""
    frame = manifest.conform(_rows().assign(id=["000123", "0456"], patient_id=["01", "02"]))
    manifest.write(frame, tmp_path / "manifest.csv")
    back = manifest.read(tmp_path / "manifest.csv")
    assert back["id"].tolist() == ["000123", "0456"]
    assert back["patient_id"].tolist() == ["01", "02"]


@pytest.mark.parametrize("stem", ["NA", "N/A", "null", "nan", "None", "NaN", "<NA>", "n/a"])
def test_ids_that_read_like_missing_values_stay_ids(tmp_path: Path, stem: str) -> None:
    """A file stem of the user's own photos may be any word pandas takes for missing; only a
    number or a flag reads as missing (blank, or spelled `NA` by hand)."""
    rows = _rows().assign(id=[stem, "x"], caption=[stem, "a photo"])
    rows.loc[rows.index[0], "patient_id"] = stem
    frame = manifest.conform(rows)
    path = tmp_path / "manifest.csv"
    manifest.write(frame, path)
    back = manifest.read(path)
    assert back["id"].tolist() == [stem, "x"] and back["caption"].tolist()[0] == stem
    assert back["patient_id"].tolist()[0] == stem and back["patient_id"].isna().tolist()[1]
    assert back["sex"].isna().tolist() == [False, True]
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    text.loc[1, ["age", "hair_score", "vignette"]] = "NA"
    text.to_csv(path, index=False)
    again = manifest.read(path)
    assert again["age"].isna().tolist() == [False, True]
    assert again["hair_score"].isna().tolist()[1] and again["vignette"].isna().tolist()[1]


def test_a_manifest_without_the_optional_columns_reads(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    _rows().drop(columns=list(manifest.OPTIONAL)).to_csv(path, index=False)
    frame = manifest.read(path)
    assert tuple(frame.columns) == manifest.COLUMNS
    assert frame["patient_id"].tolist()[0] == "007"


def test_a_missing_manifest_says_how_to_get_one(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    with pytest.raises(UserError) as caught:
        manifest.read(path)
    assert str(caught.value) == (f"manifest {path} does not exist; run `medsynth-kohya "
                                 "prepare` to write it again")


def test_a_foreign_csv_names_the_columns_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    _rows().drop(columns=["caption", "split", "diagnosis"]).to_csv(path, index=False)
    with pytest.raises(UserError) as caught:
        manifest.read(path)
    assert str(caught.value) == (f"{path} is not a manifest written by prepare (no column "
                                 "caption, split); run `medsynth-kohya prepare` to write it "
                                 "again")


@pytest.mark.parametrize(("content", "reason"), [
    ("", "No columns to parse from file"),
    ('id,source\n"ISIC_1,/a\n', "EOF inside string starting at row 1"),
])
def test_an_unreadable_manifest_is_one_line(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        manifest.read(path)
    said = str(caught.value)
    assert said.startswith(f"manifest {path} cannot be read (") and reason in said
    assert said.endswith("); run `medsynth-kohya prepare` to write it again")
    assert "\n" not in said


def test_a_folder_in_place_of_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot be read \(\[Errno 21\] Is a directory"):
        manifest.read(tmp_path)


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("age", "about forty", "'about forty'"), ("width", "", "to integer"),
    ("hair_score", "high", "'high'")])
def test_a_value_its_column_cannot_take(tmp_path: Path, column: str, value: str,
                                        reason: str) -> None:
    frame = manifest.conform(_rows()).astype({column: object})
    frame.loc[1, column] = value
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError) as caught:
        manifest.read(path)
    said = str(caught.value)
    assert said.startswith(f"manifest {path} holds a value its column cannot take (")
    assert said.endswith("); run `medsynth-kohya prepare` to write it again")
    assert reason in said and "\n" not in said


def test_a_reader_error_without_a_message_is_named_by_its_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*_: object, **__: object) -> pd.DataFrame:
        raise PermissionError

    path = tmp_path / "manifest.csv"
    path.write_text("id\n", encoding="utf-8")
    monkeypatch.setattr(pd, "read_csv", fails)
    with pytest.raises(UserError, match=r"cannot be read \(PermissionError\); run"):
        manifest.read(path)
