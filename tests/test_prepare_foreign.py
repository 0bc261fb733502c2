"""`prepare --force` never deletes or trains on files it did not write."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, locate_source, selected_images
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke
from .disk import checksums


def test_foreign_files_are_kept_and_never_trained_on(runner: CliRunner, tmp_path: Path,
                                                     isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    mine = out / "img" / "notes" / "my-photo.jpg"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own file")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force",
                             "--repeats", "3")
    assert code == 0, stderr
    assert mine.read_bytes() == b"the user's own file"
    assert "kept as found: 1 file under" in " ".join(stderr.split())
    assert not list((out / "img").glob("1_melanoma/*")), "the old class folder is pruned"

    train = next((out / "img").glob("3_melanoma"))
    intruder = train / "ISIC_intruder.jpg"
    intruder.write_bytes(b"not part of this data set")
    before = checksums(out)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force",
                             "--repeats", "2")
    assert code == 1 and "would be trained on" in stderr and "Traceback" not in stderr
    assert checksums(out) == before, "a refused prepare changes nothing"

    intruder.unlink()
    caption = next(train.glob("*.txt"))
    caption.write_text("my own caption", encoding="utf-8")
    (out / ".medsynth" / "written.json").write_text(json.dumps([
        name for name in json.loads((out / ".medsynth" / "written.json").read_text())
        if not name.endswith(caption.name)]), encoding="utf-8")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force",
                             "--repeats", "3")
    assert code == 1 and "would be trained on" in stderr
    assert caption.read_text(encoding="utf-8") == "my own caption"
    caption.unlink()
    (train / "README.md").write_text("notes sd-scripts never reads", encoding="utf-8")
    (train / "ISIC_shy.Jpg").write_bytes(b"a letter case sd-scripts skips")
    (train / f"._{caption.stem}.jpg").write_bytes(b"macOS's AppleDouble file: hidden")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force",
                             "--repeats", "3")
    assert code == 0 and "kept as found: 4 files" in " ".join(stderr.split()), stderr
    assert (train / "README.md").is_file() and (train / "ISIC_shy.Jpg").is_file()


def test_force_into_a_foreign_folder_keeps_its_files(runner: CliRunner, tmp_path: Path,
                                                     isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    (out / "img" / "10_melanoma").mkdir(parents=True)
    (out / "img" / "10_melanoma" / "mine.jpg").write_bytes(b"mine")
    (out / "README.txt").write_text("mine", encoding="utf-8")
    before = checksums(out)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 1 and "would be trained on" in stderr
    assert checksums(out) == before
    assert not (out / ".medsynth").exists()


def test_a_prepared_folder_that_lost_its_state_is_never_told_to_use_a_force_that_refuses(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet) -> None:
    """Copied without its hidden .medsynth/, a prepared folder was refused with 'pass --force',
    and --force then refused its files: each refusal now offers only what works."""
    import shutil

    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    shutil.rmtree(out / ".medsynth")
    for force in ((), ("--force",)):
        code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, *force)
        said = " ".join(stderr.split())
        assert code == 1 and "--force" not in said, said
        assert ("which prepare did not write (it has no .medsynth/ of its own: a prepared "
                "folder copied without its hidden files?) and would replace; prepare into a "
                "new or empty --out") in said
    for name in ("manifest.csv", "skipped.csv", "dataset.toml"):
        (out / name).unlink()
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    said = " ".join(stderr.split())
    assert code == 1 and said == (f"Error: --out {out} is not empty (it holds img) and was "
                                  "not made by medsynth-kohya prepare; choose an empty "
                                  "folder"), said
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "fresh")
    assert code == 0, stderr


def test_force_never_replaces_a_manifest_or_dataset_config_it_did_not_write(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("manifest.csv", "dataset.toml", "skipped.csv"):
        (out / name).write_text(f"my own {name}", encoding="utf-8")
    before = checksums(out)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 1 and "Traceback" not in stderr
    assert "holds manifest.csv, skipped.csv, dataset.toml, which prepare did not write" in stderr
    assert checksums(out) == before
    assert not (out / ".medsynth").exists()

    (out / "manifest.csv").unlink()
    (out / "skipped.csv").unlink()
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 1 and "holds dataset.toml," in stderr
    (out / "dataset.toml").unlink()
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 0, stderr
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force",
                             "--repeats", "2")
    assert code == 0, stderr



def test_rows_of_generated_images_merged_into_real_metadata_are_never_trained_on(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    import pandas as pd

    ids = list(isic2020.frame["image_name"])
    for column in ("image_manipulation", "Image_Manipulation"):
        frame = isic2020.frame.assign(**{column: ""})
        frame.loc[[1, 3], column] = ["synthetic", " Synthetic "]
        frame.to_csv(isic2020.metadata, index=False)
        out = tmp_path / f"out-{column}"
        code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out,
                                      "--hair", "off", "--workers", 1)
        assert code == 0, stdout + stderr
        kept = set(pd.read_csv(out / "manifest.csv", dtype=str)["id"])
        assert kept == set(ids) - {ids[1], ids[3]}
        skipped = pd.read_csv(out / "skipped.csv", dtype=str).set_index("id")
        assert set(skipped.index) == {ids[1], ids[3]}
        assert set(skipped["reason"]) == {"generated image (image_manipulation = synthetic)"}
        assert "2 selected rows describe generated images" in " ".join((stdout + stderr).split())
        located = locate_source(isic2020.root, None, None, PrepareOptions(), tmp_path / "o")
        assert selected_images(located, PrepareOptions()) == len(ids) - 2  # reproduce's plan
