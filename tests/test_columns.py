"""Metadata whose columns don't match is never silent: an absent caption column is an error that
says how to map it (`--column FIELD=COLUMN`), a mostly blank one a warning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.pipeline.reproduce import reproduce

from .conftest import InstallGpus, invoke

RENAMED_2020 = {"sex": "gender", "age_approx": "age", "anatom_site_general_challenge": "location"}


def _error_line(code: int, stdout: str, stderr: str) -> str:
    assert code != 0 and "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _captions(out: Path) -> dict[str, str]:
    table = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return dict(zip(table["id"], table["caption"], strict=True))


def test_archive_with_the_challenge_site_column_is_an_error_then_mapped(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path) -> None:
    reference = prepare(archive.root, tmp_path / "reference", workers=1)
    renamed = archive.frame.rename(columns={"anatom_site_general": "anatom_site_general_challenge"})
    renamed.to_csv(archive.metadata, index=False)

    line = _error_line(*invoke(runner, "prepare", archive.root, "--out", tmp_path / "o"))
    assert "metadata.csv" in line and "no column anatom_site_general for site" in line
    assert "closest: anatom_site_general_challenge" in line
    assert "--column site=anatom_site_general_challenge" in line
    assert not (tmp_path / "o" / "manifest.csv").exists()

    code, _, stderr = invoke(runner, "prepare", archive.root, "--out", tmp_path / "o",
                             "--column", "site=anatom_site_general_challenge")
    assert code == 0, stderr
    assert _captions(tmp_path / "o") == dict(zip(reference.manifest["id"],
                                                 reference.manifest["caption"], strict=True))
    assert any(" on " in caption for caption in _captions(tmp_path / "o").values())


def test_every_absent_caption_column_is_named_in_one_line(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    reference = prepare(isic2020.root, tmp_path / "reference", workers=1)
    isic2020.frame.rename(columns=RENAMED_2020).to_csv(isic2020.metadata, index=False)

    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert "train.csv" in line
    for column in RENAMED_2020:
        assert column in line
    assert "--column age=age" in line
    assert "{age} {sex} {site}" in line  # or drop them from the template

    mapping = [arg for field, column in (("sex", "gender"), ("age", "age"),
                                         ("site", "location"))
               for arg in ("--column", f"{field}={column}")]
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                                  *mapping)
    assert code == 0, stderr
    assert _captions(tmp_path / "o") == dict(zip(reference.manifest["id"],
                                                 reference.manifest["caption"], strict=True))


def test_only_fields_the_template_uses_are_required(isic2020: SyntheticSet,
                                                    tmp_path: Path) -> None:
    isic2020.frame.drop(columns=["anatom_site_general_challenge", "patient_id"]).to_csv(
        isic2020.metadata, index=False)
    template = "photo of {sex} skin, {trigger}, at age {age}"
    result = prepare(isic2020.root, tmp_path / "o", workers=1,
                     options=PrepareOptions(caption_template=template))
    assert len(result.manifest) == 12 and result.manifest["site"].isna().all()
    assert not any(" on " in c for c in result.manifest["caption"])
    assert not any("site" in warning for warning in result.warnings)

    with pytest.raises(UserError, match=r"no column patient_id for patient_id.*--val-frac"):
        prepare(isic2020.root, tmp_path / "v", workers=1,
                options=PrepareOptions(caption_template=template, val_frac=0.25))
    with pytest.raises(UserError, match=r"anatom_site_general_challenge for site.*\{site\}"):
        prepare(isic2020.root, tmp_path / "d", workers=1)


def test_any_layout_maps_every_field(isic2020: SyntheticSet, tmp_path: Path) -> None:
    reference = prepare(isic2020.root, tmp_path / "reference", workers=1,
                        options=PrepareOptions(val_frac=0.3))
    own = isic2020.frame.rename(columns={**RENAMED_2020, "image_name": "file",
                                         "patient_id": "subject"})
    own.to_csv(tmp_path / "mine.csv", index=False)
    columns = {"id": "file", "patient_id": "subject", "sex": "gender", "age": "age",
               "site": "location"}
    result = prepare(None, tmp_path / "o", metadata=tmp_path / "mine.csv",
                     images=isic2020.images, workers=1,
                     options=PrepareOptions(val_frac=0.3, columns=columns))
    assert result.source.kind == "isic2020"  # by its target column: melanomas selected alike
    mine = result.manifest.drop(columns=["source"])
    assert mine.equals(reference.manifest.drop(columns=["source"]))


def test_without_an_id_column_the_error_names_the_option(runner: CliRunner,
                                                         isic2020: SyntheticSet,
                                                         tmp_path: Path) -> None:
    isic2020.frame.rename(columns={"image_name": "image"}).to_csv(isic2020.metadata,
                                                                  index=False)
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert "image_name or isic_id" in line and "--column id=image" in line
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                             "--column", "id=image")
    assert code == 0, stderr


@pytest.mark.parametrize(("value", "needle"), [
    ("site", "FIELD=COLUMN"), ("place=location", "FIELD=COLUMN"), ("site=", "FIELD=COLUMN"),
    ("site=anatom_site", "no column anatom_site for site"),
])
def test_bad_column_options(runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
                            value: str, needle: str) -> None:
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                               "--column", value))
    assert needle in line


def test_the_same_field_twice_is_refused(runner: CliRunner, isic2020: SyntheticSet,
                                         tmp_path: Path) -> None:
    line = _error_line(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                               "--column", "sex=sex", "--column", "sex=gender"))
    assert "twice" in line


def test_a_mostly_blank_field_is_a_warning_above_the_table(runner: CliRunner,
                                                           isic2020: SyntheticSet,
                                                           tmp_path: Path) -> None:
    frame = isic2020.frame.copy()
    frame["sex"] = ["unknown"] * 7 + ["male"] * 5  # 7 of 12 rows blank
    frame["anatom_site_general_challenge"] = [None] * 6 + ["torso"] * 6  # half: no warning
    frame.to_csv(isic2020.metadata, index=False)

    result = prepare(isic2020.root, tmp_path / "fn", workers=1)
    blank = [w for w in result.warnings if "blank" in w]
    assert len(blank) == 1 and blank[0].startswith("sex is blank in 7 of 12 selected rows")
    assert "--column sex=COLUMN" in blank[0]

    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "cli")
    assert code == 0, stderr
    assert "sex is blank in 7 of 12" in stderr and "selected and prepared" in stdout


def test_reproduce_checks_and_maps_columns(runner: CliRunner, archive: SyntheticSet,
                                           tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    archive.frame.rename(columns={"sex": "gender"}).to_csv(archive.metadata, index=False)
    line = _error_line(*invoke(runner, "reproduce", archive.root, "--workdir",
                               tmp_path / "w", "--dry-run"))
    assert "no column sex for sex" in line and "--column sex=" in line
    code, _, stderr = invoke(runner, "reproduce", archive.root, "--workdir",
                                  tmp_path / "w", "--dry-run", "--column", "sex=gender")
    assert code == 0, stderr
    with pytest.raises(UserError, match="no column gender_x"):
        reproduce(archive.root, tmp_path / "w", columns={"sex": "gender_x"}, dry_run=True)


@pytest.mark.parametrize(("separator", "encoding"), [(";", "utf-8"), ("\t", "utf-8"),
                                                     (";", "utf-8-sig")])
def test_semicolon_or_tab_separated_metadata_is_read(runner: CliRunner, isic2020: SyntheticSet,
                                                     tmp_path: Path, separator: str,
                                                     encoding: str) -> None:
    """Excel saves "CSV" with semicolons where the decimal mark is a comma; some tools write
    tabs. Either is read as the comma-separated file would be, a byte-order mark or not."""
    reference = prepare(isic2020.root, tmp_path / "reference", workers=1).manifest
    frame = isic2020.frame.astype({"age_approx": float})  # written 45,0 with ";"
    frame.to_csv(isic2020.metadata, sep=separator, index=False, encoding=encoding,
                 decimal="," if separator == ";" else ".")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o")
    assert code == 0, stderr
    table = pd.read_csv(tmp_path / "o" / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(table["id"]) == list(reference["id"])
    assert list(table["caption"]) == list(reference["caption"])


@pytest.mark.parametrize(("separator", "first"), [(",", "# exported by tool; version 2"),
                                                  (";", "# exported by tool, version 2")])
def test_a_comment_holding_the_other_separator_is_named_whole_as_not_the_header(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, separator: str,
        first: str) -> None:
    """A comment above the header whose only separator is the other one (";" above a
    comma-separated file, "," above a ";"-separated one) is named whole as the line to remove,
    and without it the file is read by its own separator."""
    isic2020.frame.to_csv(isic2020.metadata, sep=separator, index=False)
    table = isic2020.metadata.read_text(encoding="utf-8")
    isic2020.metadata.write_text(f"{first}\n{table}", encoding="utf-8")
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata, "--images",
                               isic2020.images, "--out", tmp_path / "out"))
    assert "is not its header" in line and "remove that line" in line
    with pytest.raises(UserError) as refused:
        prepare(None, tmp_path / "out", metadata=isic2020.metadata, images=isic2020.images)
    assert f"the first line of {isic2020.metadata} ({first}) is not" in str(refused.value)
    isic2020.metadata.write_text(table, encoding="utf-8")
    result = prepare(None, tmp_path / "out", metadata=isic2020.metadata,
                     images=isic2020.images, workers=1)
    assert sorted(result.manifest["id"]) == sorted(isic2020.frame["image_name"])


def test_a_file_of_ids_alone_says_it_has_no_other_columns(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """A CSV of image_name alone, with the default caption template, listed "(present: )"
    for each column it lacked."""
    isic2020.frame[["image_name"]].to_csv(isic2020.metadata, index=False)
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata, "--images",
                               isic2020.images, "--out", tmp_path / "out", "--query",
                               'image_name != ""'))
    assert "present: )" not in line
    assert ("has no column age_approx for age; nor sex for sex; nor "
            "anatom_site_general_challenge for site (the file has no other columns)") in line


@pytest.mark.parametrize("first", ["# exported by tool", "# exported by tool, version 2",
                                   "Melanoma images 2020"])
def test_a_line_above_the_header_is_named_as_not_the_header(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, first: str) -> None:
    """A comment line above the header was read as the header: "no column image_name ...
    (present: # exported by tool) ... map it with --column id=COLUMN"."""
    isic2020.metadata.write_text(first + "\n" + isic2020.metadata.read_text(encoding="utf-8"),
                                 encoding="utf-8")
    line = _error_line(*invoke(runner, "prepare", "--metadata", isic2020.metadata, "--images",
                               isic2020.images, "--out", tmp_path / "out"))
    assert "is not its header" in line and "remove that line" in line
    assert "--column" not in line
