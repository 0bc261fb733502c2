"""The prepared folder's own record (data/prepared.py): prepare.json as later stages read it,
the files by name, and the refusals of a folder that is missing, not prepared or interrupted."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya import __version__, files
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import HairAgreement, PrepareOptions
from medsynth_kohya.data.prepared import PreparedFolder, PreparedState
from medsynth_kohya.data.sources import ARCHIVE, ISIC2020, OWN, Source
from medsynth_kohya.errors import UserError

from .conftest import invoke


def _state(folder: Path, data: dict[str, Any]) -> PreparedState:
    """The state of a folder whose prepare.json holds `data`."""
    prepared = PreparedFolder(folder)
    prepared.state_dir.mkdir(parents=True)
    prepared.state_file.write_text(json.dumps(data), encoding="utf-8")
    return prepared.state()


def test_the_files_of_a_prepared_folder_by_name(tmp_path: Path) -> None:
    folder = PreparedFolder(tmp_path)
    assert (folder.manifest, folder.skipped, folder.dataset_config) == (
        tmp_path / "manifest.csv", tmp_path / "skipped.csv", tmp_path / "dataset.toml")
    assert (folder.train_root, folder.val_root) == (tmp_path / "img", tmp_path / "val")
    assert folder.state_file == tmp_path / ".medsynth" / "prepare.json"
    assert folder.unfinished_file == tmp_path / ".medsynth" / "written-unfinished.json"


def test_a_full_state_reads_back_every_field(tmp_path: Path) -> None:
    agreement = {"detector": "auto", "compared": 4, "agree": 3}
    state = _state(tmp_path, {
        "options": {"class_name": 7, "trigger": "me1anoma", "caption_template": "{trigger}",
                    "target_steps": 1500, "columns": {"id": "image_id"}},
        "diagnosis": "melanoma", "hair_agreement": agreement,
        "source": {"kind": ISIC2020, "metadata": "/isic/train.csv", "metadata_sha256": "ab",
                   "image_dirs": ["/isic/a", "/isic/b"],
                   "licence_columns": ["attribution", 3]}})
    assert (state.class_name, state.trigger, state.caption_template) == ("7", "me1anoma",
                                                                          "{trigger}")
    assert state.target_steps == 1500 and state.options["columns"] == {"id": "image_id"}
    assert (state.diagnosis, state.diagnosis_recorded) == ("melanoma", True)
    assert state.source_metadata == Path("/isic/train.csv")
    assert state.source_metadata_sha256 == "ab"
    assert state.source_images == (Path("/isic/a"), Path("/isic/b"))
    assert state.hair_agreement == agreement and state.source_kind == ISIC2020
    assert state.licence_columns == ("attribution", "3")
    assert state.origin == OWN  # the ids come from another column than the layout's own


def test_an_older_or_hand_edited_state_reads_as_not_recorded(tmp_path: Path) -> None:
    state = _state(tmp_path, {"options": {}, "diagnosis": None, "hair_agreement": [1], "source": {
        "metadata": "", "image_dirs": None, "licence_columns": "attribution"}})
    assert state.options == {} and state.diagnosis is None and state.diagnosis_recorded
    assert (state.class_name, state.trigger, state.caption_template, state.target_steps) == (
        None, None, None, None)
    assert state.source_metadata is None and state.source_metadata_sha256 is None
    assert state.source_images == () and state.hair_agreement is None
    assert state.source_kind is None and state.licence_columns is None and state.origin is None
    bare = PreparedState.from_dict({"source": "/isic", "options": {"columns": "id=x"}})
    assert bare.source_metadata is None and bare.source_kind is None and bare.origin is None
    assert not bare.diagnosis_recorded


@pytest.mark.parametrize(("kind", "columns", "expected"), [
    (ISIC2020, None, ISIC2020), (ARCHIVE, {"sex": "gender"}, ARCHIVE),
    (ARCHIVE, {"id": "image"}, OWN), (ARCHIVE, "id=image", ARCHIVE)])
def test_the_origin_follows_the_recorded_kind_and_id_column(kind: str, columns: Any,
                                                             expected: str) -> None:
    options = {} if columns is None else {"columns": columns}
    state = PreparedState.from_dict({"options": options, "source": {"kind": kind}})
    assert state.origin == expected


@pytest.mark.parametrize("data", [[], "state", None, {"options": []}, {"options": "x"},
                                  {"diagnosis": None}])
def test_json_that_is_no_prepare_state_is_a_value_error(data: Any) -> None:
    with pytest.raises(ValueError) as caught:
        PreparedState.from_dict(data)
    assert str(caught.value) == "not a prepare state (a JSON object with options)"


def test_a_folder_that_does_not_exist_names_the_command_that_makes_it(tmp_path: Path) -> None:
    missing = tmp_path / "prepared"
    with pytest.raises(UserError) as caught:
        PreparedFolder(missing).state()
    assert str(caught.value) == (f"{missing} does not exist: give the --out folder of "
                                 "`medsynth-kohya prepare`")


def test_an_empty_folder_is_to_be_prepared_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "my data"
    folder.mkdir()
    with pytest.raises(UserError) as caught:
        PreparedFolder(folder).state()
    assert str(caught.value) == (
        f"{folder} was not made by medsynth-kohya prepare (no .medsynth/prepare.json); run "
        f"`medsynth-kohya prepare SOURCE --out {shlex.quote(str(folder))}` first")


def test_a_folder_inside_a_prepared_one_names_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """img/ (sd-scripts' train_data_dir) or a class folder in it, given where the prepared
    folder goes, names the prepared folder: as given, or absolute where the working folder is
    it or below it."""
    prepared = tmp_path / "prepared"
    _state(prepared, {"options": {"class_name": "melanoma"}})
    deep = prepared / "img" / "2_melanoma"
    deep.mkdir(parents=True)
    (tmp_path / "data" / "img").mkdir(parents=True)  # a folder above holds none: unchanged
    for folder, holder in ((prepared / "img", prepared), (deep, prepared),
                           (tmp_path / "data" / "img", None)):
        with pytest.raises(UserError) as caught:
            PreparedFolder(folder).state()
        assert str(caught.value).startswith(
            f"{folder} is inside the prepared folder {holder}: give {holder}" if holder
            else f"{folder} was not made by medsynth-kohya prepare"), caught.value
    for where, given, named in ((tmp_path, "prepared/img/2_melanoma", "prepared"),
                                (prepared, "img", str(prepared)),
                                (deep, "../../img", str(prepared))):
        monkeypatch.chdir(where)
        with pytest.raises(UserError) as caught:
            PreparedFolder(Path(given)).state()
        assert str(caught.value) == f"{given} is inside the prepared folder {named}: give {named}"


def test_a_folder_of_data_is_to_be_prepared_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "isic download"
    folder.mkdir()
    (folder / "train.csv").write_text("image_name\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        PreparedFolder(folder).state()
    target = tmp_path / "isic download-prepared"
    assert str(caught.value) == (
        f"{folder} was not made by medsynth-kohya prepare (no .medsynth/prepare.json); run "
        f"`medsynth-kohya prepare {shlex.quote(str(folder))} --out "
        f"{shlex.quote(str(target))}` first and give that folder")


def test_a_folder_a_prepare_put_no_image_in_is_not_taken_for_a_source(tmp_path: Path) -> None:
    """prepare refuses a source of which no image could be prepared, leaving its skipped.csv
    and .medsynth/ in OUT: train and sample on OUT say that, not to prepare OUT as a source."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.csv").write_text(("image_name,patient_id,sex,age_approx,"
                                        "anatom_site_general_challenge,diagnosis,"
                                        "benign_malignant,target\n"), encoding="utf-8")
    out = tmp_path / "out"
    code, _, said = invoke(CliRunner(), "prepare", source, "--out", out)
    assert code == 1 and "no images were prepared" in said
    with pytest.raises(UserError) as caught:
        PreparedFolder(out).state()
    assert str(caught.value) == (f"prepare into {out} prepared no image (see "
                                 f"{out / 'skipped.csv'}); fix the source and run prepare again")


def test_an_interrupted_prepare_is_refused_before_its_state_is_read(tmp_path: Path) -> None:
    folder = PreparedFolder(tmp_path)
    folder.state_dir.mkdir()
    folder.unfinished_file.write_text("{}", encoding="utf-8")  # a first run, stopped early
    said = (f"{tmp_path}: prepare was interrupted; re-run the same prepare command to "
            "finish it")
    for read in (folder.state, folder.state_if_any, folder.ensure_finished):
        with pytest.raises(UserError) as caught:
            read()
        assert str(caught.value) == said
    assert not folder.is_prepared()
    folder.state_file.write_text(json.dumps({"options": {}}), encoding="utf-8")
    assert folder.is_prepared()
    with pytest.raises(UserError, match="prepare was interrupted"):
        folder.state_if_any()
    folder.unfinished_file.unlink()
    folder.ensure_finished()
    state = folder.state_if_any()
    assert state is not None and state.options == {}


def test_missing_images_are_the_rows_whose_file_left_the_class_folder(tmp_path: Path) -> None:
    folder = tmp_path / "img" / "3_melanoma"
    folder.mkdir(parents=True)
    (folder / "ISIC_1.jpg").write_bytes(b"jpeg")
    (folder / "ISIC_3.png").write_bytes(b"png")
    (folder / "ISIC_2.png").write_bytes(b"the wrong format")
    rows = pd.DataFrame({"id": ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"],
                         "source": ["/a/ISIC_1.JPG", "/a/ISIC_2.jpeg", "/a/ISIC_3.png",
                                    "/a/ISIC_4.jpg"]})
    assert PreparedFolder(tmp_path).missing_images(rows, folder) == [
        folder / "ISIC_2.jpg", folder / "ISIC_4.jpg"]


def test_the_written_state_records_the_source_and_options(tmp_path: Path) -> None:
    source_dir = tmp_path / "isic"
    source_dir.mkdir()
    metadata = source_dir / "metadata.csv"
    metadata.write_text("isic_id,attribution,diagnosis\n", encoding="utf-8")
    out = tmp_path / "out"
    prepared = PreparedFolder(out)
    source = Source(ARCHIVE, metadata, (source_dir,),
                    header=("isic_id", "attribution", "diagnosis"))
    options = PrepareOptions(trigger="m3l", hair=HairMode.seed, target_steps=900,
                             columns={"sex": "gender"})
    prepared.write_state(source, options, HairAgreement("seed", 3, 2, 1, 1), "melanoma")
    text = prepared.state_file.read_text(encoding="utf-8")
    data = json.loads(text)
    assert list(data) == sorted(data) and text.startswith("{\n  ")  # sorted, indented
    assert (data["tool"], data["command"], data["version"]) == ("medsynth-kohya", "prepare",
                                                                __version__)
    assert data["source"] == {"kind": ARCHIVE, "metadata": str(metadata.resolve()),
                              "metadata_sha256": files.sha256(metadata),
                              "image_dirs": [str(source_dir.resolve())],
                              "licence_columns": ["attribution"]}
    assert set(data["options"]) == {field.name for field in dataclasses.fields(options)}
    assert data["options"]["hair"] == "seed" and data["options"]["columns"] == {"sex": "gender"}
    assert data["hair_agreement"] == {"detector": "seed", "compared": 3, "agree": 2,
                                      "metadata_hairy": 1, "detector_hairy": 1,
                                      "accuracy": 0.6667}
    state = prepared.state()
    assert (state.trigger, state.target_steps, state.diagnosis) == ("m3l", 900, "melanoma")
    assert state.source_metadata_sha256 == files.sha256(metadata)
    assert state.licence_columns == ("attribution",) and state.origin == ARCHIVE
    prepared.write_state(source, options, None, None)
    again = prepared.state()
    assert again.hair_agreement is None and again.diagnosis is None and again.diagnosis_recorded


@pytest.mark.parametrize(("text", "why"), [
    (b'{"options": ', "Expecting value"), (b"[1]", "not a prepare state"),
    (b"\xff\xfe{}", "can't decode byte 0xff")])
def test_a_damaged_state_is_one_line_not_a_traceback(runner: CliRunner, tmp_path: Path,
                                                     text: bytes, why: str) -> None:
    folder = PreparedFolder(tmp_path / "prepared")
    folder.state_dir.mkdir(parents=True)
    folder.state_file.write_bytes(text)
    code, _, stderr = invoke(runner, "train", folder.path, "--run-dir", tmp_path / "run",
                             "--dry-run")
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr, stderr
    assert f"{folder.state_file} is damaged (" in said and why in said
    assert said.endswith(f"run the prepare command that made {folder.path} again to rewrite "
                         "it")
    with pytest.raises(ValueError, match="is damaged"):  # the model card goes on without
        folder.state_if_any()
