"""`prepare` through its public function: layout, manifest, dataset.toml, re-runs, splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import toml

from medsynth_kohya.data import manifest
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.prepare import PrepareOptions, prepare, summary
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (state folder excepted) with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".medsynth" not in p.parts}


def _caption(row: pd.Series, hairy: bool) -> str:
    """The default template's caption of an ISIC 2020 metadata row, written out by hand."""
    sex, site, age = row["sex"], row["anatom_site_general_challenge"], row["age_approx"]
    parts = [f"photo of {sex} skin" if isinstance(sex, str) else "photo of skin",
             f"me1anoma on {site}" if isinstance(site, str) else "me1anoma"]
    parts += [] if pd.isna(age) else [f"at age {int(age)}"]
    return ", ".join(parts + (["hairy"] if hairy else []))


def test_layout_captions_and_manifest(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare(isic2020.root, out, options=PrepareOptions(repeats=5), workers=1)
    folder = out / "img" / "5_melanoma"
    assert result.train_dir == folder
    table = manifest.read(out / "manifest.csv")
    assert list(table.columns) == list(manifest.COLUMNS)
    assert len(table) == len(isic2020.frame) == 12
    for identifier, source, text, hairy in zip(table["id"], table["source"], table["caption"],
                                               table["hairy"], strict=True):
        image, caption = folder / f"{identifier}.jpg", folder / f"{identifier}.txt"
        assert image.read_bytes() == Path(source).read_bytes()
        assert not image.samefile(str(source)), "its own copy: an edit never reaches the source"
        assert caption.read_text(encoding="utf-8") == text
        assert str(text).startswith("photo of") and "me1anoma" in str(text)
        assert str(text).endswith(", hairy") == bool(hairy)
    truth = isic2020.frame.set_index("image_name")
    for identifier, text, hairy in zip(table["id"], table["caption"], table["hairy"],
                                       strict=True):
        assert text == _caption(truth.loc[identifier], bool(hairy))
    assert table.set_index("id")["hairy"].to_dict() == truth["synthetic_hair"].to_dict()
    assert pd.read_csv(out / "skipped.csv").empty


def test_dataset_toml_parses_back(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(isic2020.root, out, options=PrepareOptions(repeats=3, resolution=768,
                                                       batch_size=2), workers=1)
    config = toml.load(out / "dataset.toml")
    assert config["general"]["caption_extension"] == ".txt"
    dataset = config["datasets"][0]
    assert dataset["resolution"] == [768, 768] and dataset["batch_size"] == 2
    assert dataset["min_bucket_reso"] <= 768 <= dataset["max_bucket_reso"]
    subset = dataset["subsets"][0]
    assert Path(subset["image_dir"]) == (out / "img" / "3_melanoma").resolve()
    assert subset["num_repeats"] == 3 and subset["class_tokens"] == "me1anoma"


def test_rerun_is_incremental_and_identical(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(isic2020.root, out, options=PrepareOptions(val_frac=0.25), workers=1)
    before = _tree(out)
    second = prepare(isic2020.root, out, options=PrepareOptions(val_frac=0.25), workers=1)
    assert (first.scanned, first.reused) == (12, 0)
    assert (second.scanned, second.reused) == (0, 12)
    assert _tree(out) == before
    captions = [p.read_text(encoding="utf-8") for p in out.rglob("*.txt")]
    assert all(c.count("hairy") <= 1 for c in captions)


def test_changed_options_leave_no_stale_files(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(isic2020.root, out, options=PrepareOptions(repeats=10), workers=1)
    prepare(isic2020.root, out, options=PrepareOptions(repeats=2, hair=HairMode.off),
            workers=1)
    assert sorted(p.name for p in (out / "img").iterdir()) == ["2_melanoma"]
    assert not any("hairy" in p.read_text(encoding="utf-8") for p in out.rglob("*.txt"))


def test_parallel_run_equals_serial_run(isic2020: SyntheticSet, tmp_path: Path) -> None:
    serial = prepare(isic2020.root, tmp_path / "a", workers=1)
    parallel = prepare(isic2020.root, tmp_path / "b", workers=2)
    columns = ["id", "hairy", "hair_score", "caption", "width", "height"]
    pd.testing.assert_frame_equal(serial.manifest[columns], parallel.manifest[columns])


def test_patient_level_validation_split(tmp_path: Path) -> None:
    from medsynth_kohya.data.synth import make_dataset

    data = make_dataset(tmp_path / "src", 40, seed=8, melanoma_fraction=1.0,
                        sizes=((640, 480),))
    result = prepare(data.root, tmp_path / "out", options=PrepareOptions(val_frac=0.3),
                     workers=1)
    table = result.manifest
    val, train = table[table["split"] == "val"], table[table["split"] == "train"]
    assert 0.2 * len(table) <= len(val) <= 0.45 * len(table)
    assert not set(val["patient_id"].dropna()) & set(train["patient_id"].dropna())
    val_files = sorted(p.stem for p in (tmp_path / "out" / "val" / "1_melanoma").glob("*.jpg"))
    assert val_files == sorted(val["id"])
    assert result.steps_per_epoch == len(train)


def test_target_steps_choose_repeats(isic2020: SyntheticSet, tmp_path: Path) -> None:
    options = PrepareOptions(target_steps=7200, epochs=50, batch_size=1)
    result = prepare(isic2020.root, tmp_path / "out", options=options, workers=1)
    assert result.repeats.repeats == 12  # ceil(7200 / (50 x 12))
    assert "ceil(7200 x 1 / (50 x 12))" in result.repeats.formula
    assert 50 * result.steps_per_epoch >= 7200


def test_archive_export_selects_melanomas(archive: SyntheticSet, tmp_path: Path) -> None:
    result = prepare(archive.root, tmp_path / "out", workers=1)
    expected = archive.frame.loc[archive.frame["diagnosis_3"].str.startswith("Melanoma"),
                                 "isic_id"]
    assert sorted(result.manifest["id"]) == sorted(expected)
    assert result.source.kind == "isic-archive"


def test_query_and_class_name(archive: SyntheticSet, tmp_path: Path) -> None:
    options = PrepareOptions(query='diagnosis_3 == "Nevus"', class_name="nevus",
                             trigger="nev0", hair=HairMode.off)
    result = prepare(archive.root, tmp_path / "out", options=options, workers=1)
    assert result.train_dir.name == "1_nevus"
    assert len(result.manifest) == int((archive.frame["diagnosis_3"] == "Nevus").sum())
    assert all("nev0" in c for c in result.manifest["caption"])


def test_explicit_metadata_and_images(isic2020: SyntheticSet, tmp_path: Path) -> None:
    result = prepare(None, tmp_path / "out", metadata=isic2020.metadata,
                     images=isic2020.images, workers=1)
    assert len(result.manifest) == 12


def test_foreign_output_folder_needs_force(isic2020: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="--force"):
        prepare(isic2020.root, out, workers=1)
    prepare(isic2020.root, out, workers=1, force=True)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / "manifest.csv").is_file()


def test_source_images_are_never_modified(isic2020: SyntheticSet, tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in isic2020.images.iterdir()}
    out = tmp_path / "out"
    prepare(isic2020.root, out, workers=1)
    prepare(isic2020.root, out, options=PrepareOptions(caption_template="{trigger}, {sex}"),
            workers=1)
    assert {p.name: p.read_bytes() for p in isic2020.images.iterdir()} == before


def test_an_interrupted_first_run_can_be_run_again(isic2020: SyntheticSet, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.data.images import scan as real_scan

    out = tmp_path / "out"
    calls = {"n": 0}

    def interrupted(path: str, hair: HairMode) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_scan(path, hair)

    monkeypatch.setattr("medsynth_kohya.data.prepare.scan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(isic2020.root, out, workers=1)
    monkeypatch.setattr("medsynth_kohya.data.prepare.scan", real_scan)
    result = prepare(isic2020.root, out, workers=1)
    assert (result.reused, result.scanned) == (4, 8)
    assert len(result.manifest) == 12


def test_symlinked_images_keep_their_own_names(isic2020: SyntheticSet, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for image in sorted(isic2020.images.glob("*.jpg")):
        blob = blobs / image.stem.lower().replace("_", "")
        image.rename(blob)
        image.symlink_to(blob)
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    assert len(result.manifest) == 12 and result.skipped.empty
    assert all(Path(p).suffix == ".jpg" for p in result.manifest["source"])


def test_symlinked_images_are_placed_as_their_files(isic2020: SyntheticSet,
                                                    tmp_path: Path) -> None:
    """Relative (git-annex, DVC), absolute and chained symlinks give the layout the files they
    name, never a copy of the link (a relative one would dangle there); a link to a missing
    file is skipped with the reason."""
    store = isic2020.root / "store"
    store.mkdir()
    images = sorted(isic2020.images.glob("*.jpg"))
    for index, image in enumerate(images):
        blob = store / f"blob{index}"
        image.rename(blob)
        kind = index % 3
        if kind == 0:
            image.symlink_to(Path("..") / "store" / blob.name)
        elif kind == 1:
            image.symlink_to(blob.resolve())
        else:
            hop = store / f"hop{index}"
            hop.symlink_to(blob.name)
            image.symlink_to(Path("..") / "store" / hop.name)
    gone = images[-1]
    (store / f"blob{len(images) - 1}").unlink()
    out = tmp_path / "out"
    result = prepare(isic2020.root, out, workers=1)
    assert len(result.manifest) == len(images) - 1
    placed = sorted(result.train_dir.glob("*.jpg"))
    assert len(placed) == len(images) - 1
    for path in placed:
        assert not path.is_symlink() and path.is_file()
        assert path.read_bytes() == (isic2020.images / path.name).read_bytes()
    assert list(result.skipped["id"]) == [gone.stem]
    assert result.skipped["reason"].iloc[0].startswith("symlink to a missing file")


def test_images_in_subfolders_are_found_but_never_in_out_or_hidden_ones(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    photos = sorted(isic2020.images.glob("*.jpg"))
    for index, photo in enumerate(photos):
        part = isic2020.images / f"part{index % 2 + 1}"
        part.mkdir(exist_ok=True)
        photo.rename(part / photo.name)
    hidden = isic2020.images / ".thumbs"
    hidden.mkdir()
    gone = photos[0].name
    (hidden / gone).write_bytes((isic2020.images / "part2" / photos[1].name).read_bytes())
    out = isic2020.images / "prepared"
    first = prepare(None, out, metadata=isic2020.metadata, images=isic2020.images, workers=1)
    assert len(first.manifest) == 12 and first.skipped.empty
    assert {Path(p).parent.name for p in first.manifest["source"]} == {"part1", "part2"}
    (isic2020.images / "part1" / gone).unlink()
    again = prepare(None, out, metadata=isic2020.metadata, images=isic2020.images, workers=1)
    assert list(again.skipped["id"]) == [Path(gone).stem]
    assert list(again.skipped["reason"]) == ["no image file"]
    assert all(out not in Path(p).parents for p in again.manifest["source"])


def test_photos_too_small_for_the_resolution_are_named_in_a_warning(tmp_path: Path) -> None:
    """sd-scripts enlarges a 200x150 photo 5x to a 1024x1024 bucket: prepare keeps it but warns,
    names the smallest and the query that leaves such photos out; at 256 px none is warned of."""
    from typer.testing import CliRunner

    from medsynth_kohya.data.synth import make_dataset

    from .conftest import invoke

    made = make_dataset(tmp_path / "isic", 6, seed=5, sizes=((640, 480), (200, 150), (700, 380)),
                        melanoma_fraction=1.0)
    small = sorted(made.frame["image_name"][1::3])
    result = prepare(made.root, tmp_path / "out", workers=1)
    assert len(result.manifest) == 6
    (warning,) = [text for text in result.warnings if "training area" in text]
    assert warning.startswith("2 of 6 images are smaller than a quarter of the 1024x1024 ")
    assert f"(smallest: {small[0]}, 200x150)" in warning
    assert "--query 'width * height >= 262144'" in warning
    assert not [text for text in prepare(made.root, tmp_path / "out256", workers=1,
                                         options=PrepareOptions(resolution=256)).warnings
                if "training area" in text]

    code, _, stderr = invoke(CliRunner(), "prepare", made.root, "--out", tmp_path / "kept",
                             "--query", "width * height >= 262144")
    assert code == 0 and "training area" not in stderr
    kept = manifest.read(tmp_path / "kept" / "manifest.csv")
    assert sorted(kept["id"]) == sorted(set(made.frame["image_name"]) - set(small))


def test_one_photo_more_elongated_than_any_bucket_is_counted_in_the_singular(
        tmp_path: Path) -> None:
    from medsynth_kohya.data.synth import make_dataset

    made = make_dataset(tmp_path / "isic", 4, seed=5, melanoma_fraction=1.0,
                        sizes=((640, 480), (2400, 300), (640, 480), (640, 480)))
    result = prepare(made.root, tmp_path / "out", workers=1)
    (warning,) = [text for text in result.warnings if "elongated" in text]
    assert warning.startswith("1 of 4 images is more elongated than 4:1")
    assert "sd-scripts crops it to that bucket and trains on a part of it: crop it" in warning


def test_photos_more_elongated_than_any_bucket_are_named_in_a_warning(tmp_path: Path) -> None:
    """sd-scripts' buckets at 1024 px go from 512x2048 to 2048x512 (4:1): a 2400x300 (8:1) or
    300x1500 (5:1) photo is cropped to a quarter or so of it, so prepare warns and names the
    most elongated and the query that leaves them out; 4:1 itself fits a bucket."""
    from typer.testing import CliRunner

    from medsynth_kohya.data.synth import make_dataset

    from .conftest import invoke

    sizes = ((640, 480), (2400, 300), (1600, 400), (300, 1500))
    made = make_dataset(tmp_path / "isic", 8, seed=5, melanoma_fraction=1.0, sizes=sizes)
    ids = list(made.frame["image_name"])
    over = [name for index, name in enumerate(ids) if index % 4 in (1, 3)]
    worst = min(name for index, name in enumerate(ids) if index % 4 == 1)
    result = prepare(made.root, tmp_path / "out", workers=1)
    (warning,) = [text for text in result.warnings if "elongated" in text]
    assert warning.startswith("4 of 8 images are more elongated than 4:1")
    assert f"(most: {worst}, 2400x300)" in warning
    query = "width <= 4 * height and height <= 4 * width"
    assert f"--query '{query}'" in warning

    code, _, stderr = invoke(CliRunner(), "prepare", made.root, "--out", tmp_path / "kept",
                             "--query", query)
    assert code == 0 and "elongated" not in stderr
    kept = manifest.read(tmp_path / "kept" / "manifest.csv")
    assert sorted(kept["id"]) == sorted(set(ids) - set(over))


def test_known_and_identical_duplicates_are_trained_once(tmp_path: Path) -> None:
    """The ISIC 2020 duplicates list beside the metadata (a chain of two pairs, and a pair only
    half selected) and a byte-identical copy under another id: one image of each is kept, the
    others are in skipped.csv naming it, and they may no longer land in train and val both."""
    import shutil

    from medsynth_kohya.data.prepare import summary
    from medsynth_kohya.data.synth import make_dataset

    made = make_dataset(tmp_path / "src", 8, seed=6, melanoma_fraction=1.0)
    ids = sorted(made.frame["image_name"])
    (made.root / "ISIC_2020_Training_Duplicates.csv").write_text(
        f"image_name_1,image_name_2\n{ids[1]},{ids[0]}\n{ids[2]}.jpg,{ids[1]}\n"
        f"{ids[5]},ISIC_9999999\n", encoding="utf-8")
    shutil.copy(made.images / f"{ids[3]}.jpg", made.images / f"{ids[4]}.jpg")
    frame = pd.read_csv(made.metadata)
    frame["patient_id"] = [f"P{i}" for i in range(len(frame))]
    frame.to_csv(made.metadata, index=False)
    result = prepare(made.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.5))
    assert sorted(result.manifest["id"]) == [i for i in ids if i not in (ids[1], ids[2], ids[4])]
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str).set_index("id")
    listed = "(listed in ISIC_2020_Training_Duplicates.csv)"
    assert skipped["reason"].to_dict() == {ids[1]: f"duplicate image of {ids[0]} {listed}",
                                           ids[2]: f"duplicate image of {ids[0]} {listed}",
                                           ids[4]: f"duplicate image of {ids[3]} (identical file)"}
    assert skipped.loc[ids[4], "source"] == str(made.images / f"{ids[4]}.jpg")
    (warning,) = [w for w in result.warnings if "duplicate another" in w]
    assert warning.startswith("3 selected images duplicate another (1 identical file, 2 "
                              "listed in ISIC_2020_Training_Duplicates.csv)")
    assert dict(summary(result))["skipped: duplicate image (one copy kept)"] == "3"

    (made.root / "ISIC_2020_Training_Duplicates.csv").write_text(
        "image_name_1\nISIC_0000001\n", encoding="utf-8")
    unlisted = prepare(made.root, tmp_path / "unlisted", workers=1)
    (warning,) = [w for w in unlisted.warnings if "Duplicates.csv" in w]
    assert "has no column image_name_2 (its columns: image_name_1)" in warning
    assert warning.endswith("its duplicates are not skipped")
    assert set(unlisted.skipped["reason"]) == {f"duplicate image of {ids[3]} (identical file)"}


def test_a_split_of_images_without_patient_ids_says_it_is_image_by_image(
        tmp_path: Path) -> None:
    from medsynth_kohya.data.synth import make_dataset

    made = make_dataset(tmp_path / "src", 10, seed=7, melanoma_fraction=1.0)
    frame = pd.read_csv(made.metadata)
    frame.loc[frame.index[:4], "patient_id"] = ""
    frame.to_csv(made.metadata, index=False)
    split = prepare(made.root, tmp_path / "split", workers=1,
                    options=PrepareOptions(val_frac=0.3))
    (warning,) = [w for w in split.warnings if "no patient id" in w]
    assert warning.startswith("4 of 10 images have no patient id (column patient_id is blank): "
                              "--val-frac splits such images one by one")
    unsplit = prepare(made.root, tmp_path / "unsplit", workers=1)
    whole = make_dataset(tmp_path / "whole", 10, seed=7, melanoma_fraction=1.0)
    named = prepare(whole.root, tmp_path / "named", workers=1,
                    options=PrepareOptions(val_frac=0.3))
    assert not [w for r in (unsplit, named) for w in r.warnings if "no patient id" in w]


def test_image_types_are_counted_and_a_mix_is_warned_about(archive: SyntheticSet,
                                                           tmp_path: Path) -> None:
    """Dermoscopic, clinical and TBP-tile photos (the Archive's image_type) in one class are
    named with the --query that keeps one; one type alone is only counted."""
    from medsynth_kohya.data.prepare import summary

    frame = pd.read_csv(archive.metadata)
    kinds = ["clinical: close-up", "TBP tile: close-up", ""]
    frame["image_type"] = [kinds[i % 3] for i in range(len(frame))]
    frame.loc[frame["diagnosis_3"].str.startswith("Melanoma").idxmax(), "image_type"] = \
        "dermoscopic"
    frame.to_csv(archive.metadata, index=False)
    mixed = prepare(archive.root, tmp_path / "mixed", workers=1)
    chosen = frame.set_index("isic_id").loc[list(mixed.manifest["id"]), "image_type"]
    counts = chosen.replace("", "missing").value_counts()
    assert dict(mixed.image_types) == counts.to_dict()
    assert dict(summary(mixed))["image type"] == ", ".join(
        f"{name} {count}" for name, count in mixed.image_types)
    (warning,) = [w for w in mixed.warnings if "mix image types" in w]
    assert len(counts.drop("missing", errors="ignore")) > 1
    assert warning.endswith("keep one with --query 'image_type == \"dermoscopic\"'")

    frame["image_type"] = "dermoscopic"
    frame.to_csv(archive.metadata, index=False)
    single = prepare(archive.root, tmp_path / "single", workers=1)
    assert single.image_types == (("dermoscopic", len(single.manifest)),)
    assert not [w for w in single.warnings if "image types" in w]
    frame.drop(columns="image_type").to_csv(archive.metadata, index=False)
    plain = prepare(archive.root, tmp_path / "plain", workers=1)
    assert plain.image_types == () and "image type" not in dict(summary(plain))


def test_hair_metadata_without_any_tag_says_the_detector_tagged(archive: SyntheticSet,
                                                                tmp_path: Path) -> None:
    """--hair metadata on a source without a hairy column, or with one blank for every
    prepared image, says so; the summary counts the tags by where they came from."""
    from medsynth_kohya.data.prepare import summary

    options = PrepareOptions(hair=HairMode.metadata)
    none = prepare(archive.root, tmp_path / "none", workers=1, options=options)
    prepared = len(none.manifest)
    (warning,) = [w for w in none.warnings if "--hair metadata" in w]
    assert "metadata.csv has no hairy column, so every hair tag came from the auto detector" \
        in warning
    assert dict(summary(none))["hairy"].endswith(
        f"metadata: source's tag 0, auto detector {prepared})")

    frame = pd.read_csv(archive.metadata)
    frame["hairy"] = ""
    frame.to_csv(archive.metadata, index=False)
    blank = prepare(archive.root, tmp_path / "blank", workers=1, options=options)
    (warning,) = [w for w in blank.warnings if "--hair metadata" in w]
    assert "has no hairy tag for any prepared image" in warning

    first = sorted(none.manifest["id"])[0]
    frame["hairy"] = (frame["isic_id"] == first).map({True: "true", False: ""})
    frame.to_csv(archive.metadata, index=False)
    one = prepare(archive.root, tmp_path / "one", workers=1, options=options)
    assert not [w for w in one.warnings if "--hair metadata" in w]
    assert dict(summary(one))["hairy"].endswith(
        f"metadata: source's tag 1, auto detector {prepared - 1})")
    auto = prepare(archive.root, tmp_path / "auto", workers=1)
    assert dict(summary(auto))["hairy"].endswith(", auto)")


def test_images_a_query_on_measurements_leaves_out_are_in_skipped_csv(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """skipped.csv lists every row left out, those the --query terms on measurements drop
    too; also when they drop every image and the run is refused."""
    import imagesize

    from medsynth_kohya.data.prepare import summary

    wide = prepare(isic2020.root, tmp_path / "wide", workers=1,
                   options=PrepareOptions(query="width > 700"))
    skipped = pd.read_csv(tmp_path / "wide" / "skipped.csv", dtype=str)
    narrow = [i for i in isic2020.frame["image_name"]
              if imagesize.get(str(isic2020.images / f"{i}.jpg"))[0] <= 700]
    assert 0 < len(narrow) < len(isic2020.frame)
    assert sorted(skipped["id"]) == sorted(narrow)
    assert set(skipped["reason"]) == {"left out by --query on measurements"}
    assert set(skipped["source"]) == {str(isic2020.images / f"{i}.jpg") for i in narrow}
    rows = dict(summary(wide))
    assert rows["skipped: left out by --query on measurements"] == str(len(narrow))
    assert wide.dropped == len(narrow)

    with pytest.raises(UserError, match="left out all 12 measured images"):
        prepare(isic2020.root, tmp_path / "none", workers=1,
                options=PrepareOptions(query="width > 5000"))
    refused = pd.read_csv(tmp_path / "none" / "skipped.csv", dtype=str)
    assert sorted(refused["id"]) == sorted(isic2020.frame["image_name"])


def test_the_summary_names_metadata_and_images_alike_whatever_was_typed(
        isic2020: SyntheticSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(isic2020.images)
    result = prepare(Path(".."), tmp_path / "out", workers=1)
    rows = dict(summary(result))
    assert rows["metadata"] == str(isic2020.metadata.resolve())
    assert rows["images"] == str(isic2020.images.resolve())


def test_the_manifest_holds_each_photos_measurements(isic2020: SyntheticSet,
                                                      tmp_path: Path) -> None:
    """What `measure` finds on each photo is what its manifest row says, every field."""
    from medsynth_kohya.data.measure import ARTEFACTS, measure

    prepare(isic2020.root, tmp_path / "out")
    table = manifest.read(tmp_path / "out" / "manifest.csv")
    for row in table.itertuples(index=False):
        found = measure(str(row.source))
        assert row.hair_score == pytest.approx(found.hair_score) and row.hairy == found.hairy
        assert row.ita == pytest.approx(found.ita) and row.skin_tone == found.skin_tone
        assert [getattr(row, name) for name in ARTEFACTS] == [
            getattr(found, name) for name in ARTEFACTS]


def test_pairs_joined_through_a_later_pair_make_one_group(tmp_path: Path) -> None:
    """Two groups a later pair bridges become one (the id kept names one that stays), and
    empty files, all alike, are no twins of one another but left to the decoder."""
    from medsynth_kohya.data.duplicates import groups, identical_twins

    assert groups([("a", "b"), ("c", "d"), ("b", "c")]) == [{"a", "b", "c", "d"}]
    assert groups([("a", "b"), ("c", "d")]) == [{"a", "b"}, {"c", "d"}]
    empty = {name: tmp_path / f"{name}.jpg" for name in ("x", "y")}
    for path in empty.values():
        path.write_bytes(b"")
    same = {name: tmp_path / f"{name}.png" for name in ("p", "q")}
    for path in same.values():
        path.write_bytes(b"same bytes")
    assert identical_twins({**empty, **same}) == {"q": ("p", "identical file")}


def test_twins_are_counted_in_the_right_number() -> None:
    from medsynth_kohya.data.duplicates import IDENTICAL, counted

    listed = "listed in ISIC_2020_Training_Duplicates.csv"
    assert counted({"b": ("a", IDENTICAL)}) == "1 identical file"
    assert counted({"b": ("a", IDENTICAL), "c": ("a", IDENTICAL), "e": ("d", listed)}) == (
        f"2 identical files, 1 {listed}")
