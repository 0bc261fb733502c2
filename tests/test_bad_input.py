"""Bad input through the CLI: one-line errors for unusable metadata, skips for bad rows/files."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import prepare
from medsynth_kohya.data.synth import SyntheticSet, encode_jpeg, lesion_image

from .conftest import invoke


def _skipped(out: Path) -> dict[str, str]:
    frame = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    return dict(zip(frame["id"], frame["reason"], strict=True))


def _assert_one_line_error(code: int, stdout: str, stderr: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stdout + stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("column", ["image_name", "sex", "anatom_site_general_challenge"])
def test_missing_required_column(runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
                                 column: str) -> None:
    isic2020.frame.drop(columns=[column]).to_csv(isic2020.metadata, index=False)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o")
    needle = "image_name" if column == "image_name" else column
    _assert_one_line_error(code, stdout, stderr, "train.csv", needle)


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02\xff" * 64, b'"a,b\n"c'])
def test_unusable_metadata_file(runner: CliRunner, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.csv").write_bytes(content)
    code, stdout, stderr = invoke(runner, "prepare", tmp_path / "src", "--out", tmp_path / "o")
    _assert_one_line_error(code, stdout, stderr, "train.csv")


def test_no_metadata_found(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, stdout, stderr = invoke(runner, "prepare", tmp_path / "empty", "--out", tmp_path / "o")
    _assert_one_line_error(code, stdout, stderr, "--metadata")


def test_bad_rows_and_files_are_skipped_with_reasons(runner: CliRunner, isic2020: SyntheticSet,
                                                     tmp_path: Path) -> None:
    frame, images = isic2020.frame.copy(), isic2020.images
    ids = list(frame["image_name"])
    (images / f"{ids[0]}.jpg").write_bytes(b"")
    whole = (images / f"{ids[1]}.jpg").read_bytes()
    (images / f"{ids[1]}.jpg").write_bytes(whole[: len(whole) // 2])
    (images / f"{ids[2]}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 5000 + b"\xff\xd9")
    _, png = cv2.imencode(".png", lesion_image(640, 480, hairy=False, seed=1))
    (images / f"{ids[3]}.jpg").write_bytes(png.tobytes())
    (images / f"{ids[4]}.jpg").unlink()
    (images / "ISIC_9999999.jpg").write_bytes(encode_jpeg(lesion_image(640, 480, hairy=False,
                                                                       seed=2)))
    (images / "notes.txt").write_text("not an image", encoding="utf-8")
    extra = frame.iloc[[5, 5, 6, 6]].copy()
    extra["image_name"] = [ids[5], "../escape", "a/b", ids[6] + "\\x"]
    frame["age_approx"] = frame["age_approx"].astype(object)
    frame.loc[7, "age_approx"] = "unknown"
    pd.concat([frame, extra]).to_csv(isic2020.metadata, index=False)
    out = tmp_path / "out"

    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)

    assert code == 0, stderr
    reasons = _skipped(out)
    assert reasons[ids[0]] == "empty file"
    assert reasons[ids[1]] == "truncated"
    assert reasons[ids[2]].startswith("undecodable")
    assert reasons[ids[3]] == "content is png, extension says jpeg"
    assert reasons[ids[4]] == "no image file"
    assert reasons["ISIC_9999999"] == "no metadata row"
    assert reasons[ids[5]] == "duplicate id"
    for unsafe in ("../escape", "a/b", ids[6] + "\\x"):
        assert reasons[unsafe].startswith("unsafe id")
    assert "notes" not in reasons
    assert "duplicate" in stderr
    table = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert len(table) == 12 - 5
    assert table.loc[table["id"] == ids[7], "caption"].item().count("at age") == 0
    assert not (tmp_path / "escape").exists() and not list(tmp_path.rglob("b.jpg"))
    for label in ("empty file", "truncated", "no metadata row", "duplicate id"):
        assert label in stdout
    written = {p.resolve() for p in out.rglob("*") if p.is_file()}
    assert all(out.resolve() in p.parents for p in written)


@pytest.mark.parametrize("layout", ["isic2020", "archive"])
def test_macos_extras_are_no_images(runner: CliRunner, isic2020: SyntheticSet,
                                    archive: SyntheticSet, tmp_path: Path, layout: str) -> None:
    """A download copied from a Mac to another disk holds a ._ AppleDouble file beside each
    photo (and its zip, a __MACOSX folder of them): none is an image, an id or a skip row,
    and an id whose photo is missing is still found missing, not in __MACOSX."""
    made = isic2020 if layout == "isic2020" else archive
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", tmp_path / "before")
    assert code == 0, stderr
    selected = list(pd.read_csv(tmp_path / "before" / "manifest.csv", dtype=str)["id"])
    extras = made.root / "__MACOSX" / made.images.relative_to(made.root)
    extras.mkdir(parents=True)
    for photo in made.images.glob("*.jpg"):
        for folder in (photo.parent, extras):
            (folder / f"._{photo.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02Mac OS X")
    gone = made.images / f"{selected[0]}.jpg"
    (extras / gone.name).write_bytes(gone.read_bytes())
    gone.unlink()
    out = tmp_path / "out"

    code, stdout, stderr = invoke(runner, "prepare", made.root, "--out", out)

    assert code == 0, stderr
    assert _skipped(out) == {selected[0]: "no image file"}
    assert "two folders" not in stderr and "._" not in stdout + stderr
    assert list(pd.read_csv(out / "manifest.csv", dtype=str)["id"]) == selected[1:]


def test_upper_case_extensions_are_found(runner: CliRunner, isic2020: SyntheticSet,
                                         tmp_path: Path) -> None:
    ids = list(isic2020.frame["image_name"])
    images = isic2020.images
    (images / f"{ids[0]}.jpg").rename(images / f"{ids[0]}.JPG")
    (images / f"{ids[1]}.jpg").rename(images / f"{ids[1]}.jpeg")
    (images / f"{ids[2]}.jpg").rename(images / f"{ids[2]}.Jpeg")
    _, png = cv2.imencode(".png", lesion_image(640, 480, hairy=False, seed=3))
    (images / f"{ids[3]}.jpg").unlink()
    (images / f"{ids[3]}.PNG").write_bytes(png.tobytes())
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--repeats", 2)
    assert code == 0, stderr
    folder = out / "img" / "2_melanoma"
    names = {p.name for p in folder.iterdir()}
    assert {f"{ids[0]}.jpg", f"{ids[1]}.jpg", f"{ids[2]}.jpg", f"{ids[3]}.png"} <= names
    assert len([n for n in names if n.endswith(".txt")]) == 12


def test_bad_options_are_one_line_errors(runner: CliRunner, isic2020: SyntheticSet,
                                         tmp_path: Path) -> None:
    cases = [
        (["--repeats", "2", "--target-steps", "100"], "--target-steps"),
        (["--val-frac", "1.5"], "--val-frac"),
        (["--caption-template", "{sex} skin"], "{trigger}"),
        (["--query", "no_such_column == 1"], "--query"),
        (["--class-name", "../up"], "--class-name"),
        (["--resolution", "1000"], "--resolution"),
        (["--repeats", "0"], "--repeats must be 1 to 2147483647 (got 0)"),
        (["--repeats", str(2**31)], f"--repeats must be 1 to 2147483647 (got {2**31})"),
        (["--target-steps", "99999999999999999999"], "--target-steps must be 1 to 2147483647"),
        (["--epochs", str(2**31)], "--epochs must be 1 to 2147483647"),
        (["--batch-size", "-1"], "--batch-size must be 1 to 2147483647 (got -1)"),
        (["--seed", "-1"], "--seed must be 0 to 4294967295 (got -1)"),
        (["--seed", str(2**32)], f"--seed must be 0 to 4294967295 (got {2**32})"),
    ]
    for extra, needle in cases:
        code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out",
                                      tmp_path / "o", *extra)
        _assert_one_line_error(code, stdout, stderr, needle)


def test_a_choice_option_given_another_word_names_the_choices_plainly(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Typer checks choices through pydantic, whose reason starts "Value error, ": the line
    says what was given and what may be, nothing of the validator's wording."""
    for option, word, choices in (("--hair", "bogus", ("auto", "seed", "off", "metadata")),
                                  ("--link", "sym", ("copy", "hard"))):
        code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out",
                                      tmp_path / "o", option, word)
        line = (stdout + stderr).strip().splitlines()[-1]
        assert code == 2 and line.startswith(f"Error: Invalid value for '{option}': '{word}' ")
        assert all(choice in line for choice in choices) and "Value error" not in line
        assert not (tmp_path / "o").exists()


def test_foreign_out_is_refused_without_force(runner: CliRunner, isic2020: SyntheticSet,
                                              tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.me").write_text("x", encoding="utf-8")
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    _assert_one_line_error(code, stdout, stderr, "--force")
    assert sorted(p.name for p in out.iterdir()) == ["keep.me"]


@pytest.mark.parametrize(("content", "needle"), [
    (None, "does not exist"),
    (b"", "cannot be read"),
    (b"x,y\n1,2\n", "no column id or caption"),
    (b"id,y\n1,2\n", "no column source, patient_id"),
    (b'"a,b\n"c', "is not a manifest written by prepare"),
    (b"\xff\xfe\x00\x81" * 64, "cannot be read"),
])
def test_a_broken_manifest_stops_train_in_one_line(runner: CliRunner, prepared: Path,
                                                   tmp_path: Path, content: bytes | None,
                                                   needle: str) -> None:
    path = prepared / "manifest.csv"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--dry-run")
    _assert_one_line_error(code, stdout, stderr, "manifest.csv", needle,
                           "run `medsynth-kohya prepare` to write it again")


def test_a_manifest_value_its_column_cannot_hold_is_one_error(prepared: Path) -> None:
    from medsynth_kohya.data import manifest
    from medsynth_kohya.errors import UserError

    path = prepared / "manifest.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[0, "width"] = "wide"
    table.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"holds a value its column cannot take \(.+\); run"):
        manifest.read(path)


@pytest.mark.parametrize(("command", "expected"), [
    (["train", "{gone}", "--dry-run"], "{gone} does not exist: give the --out folder of "),
    (["sample", "--lora", "{gone}", "--out", "{gone}-set", "--dry-run"],
     "LoRA file {gone} does not exist"),
    (["push", "{gone}", "--repo-id", "someone/lora", "--dry-run"], "{gone} does not exist: "),
])
def test_a_folder_that_does_not_exist_is_named_as_such(runner: CliRunner, tmp_path: Path,
                                                       command: list[str], expected: str) -> None:
    gone = str(tmp_path / "no such folder")
    code, stdout, stderr = invoke(runner, *[word.format(gone=gone) for word in command])
    assert code != 0 and "Traceback" not in stdout + stderr
    assert expected.format(gone=gone) in " ".join(stderr.split())


def test_an_image_in_another_format_and_an_empty_id_are_named(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    frame, images = isic2020.frame.copy(), isic2020.images
    ids = list(frame["image_name"])
    photo = lesion_image(640, 480, hairy=False, seed=3)
    for identifier, suffix in ((ids[0], ".webp"), (ids[1], ".TIF")):
        (images / f"{identifier}.jpg").unlink()
        assert cv2.imwrite(str(images / f"{identifier}{suffix.lower()}"), photo)
        if suffix != suffix.lower():
            (images / f"{identifier}{suffix.lower()}").rename(images / f"{identifier}{suffix}")
    frame["image_name"] = frame["image_name"].astype(object)
    frame.loc[2, "image_name"] = ""
    frame.to_csv(isic2020.metadata, index=False)

    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    reasons = _skipped(tmp_path / "out")
    assert reasons[ids[0]] == "only a .webp file: convert it to .jpg or .png"
    assert reasons[ids[1]] == "only a .TIF file: convert it to .jpg or .png"
    assert reasons[""] == "empty id"
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str, keep_default_na=False)
    assert skipped.set_index("id").loc[ids[0], "source"].endswith(f"{ids[0]}.webp")


def test_a_16_bit_greyscale_png_is_skipped_with_why(runner: CliRunner, isic2020: SyntheticSet,
                                                    tmp_path: Path) -> None:
    """PIL opens it as mode I;16 and sd-scripts' convert("RGB") makes it all white; a 16-bit
    colour PNG is read right and kept."""
    ids = list(isic2020.frame["image_name"])
    grey = cv2.cvtColor(lesion_image(640, 480, hairy=False, seed=4), cv2.COLOR_BGR2GRAY)
    colour = lesion_image(640, 480, hairy=False, seed=5)
    for identifier, pixels in ((ids[0], grey), (ids[1], colour)):
        (isic2020.images / f"{identifier}.jpg").unlink()
        assert cv2.imwrite(str(isic2020.images / f"{identifier}.png"),
                           pixels.astype("uint16") * 257)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    reasons = _skipped(tmp_path / "out")
    assert reasons[ids[0]].startswith("16-bit greyscale PNG, which sd-scripts reads as all white")
    assert ids[1] not in reasons



def _other_format(kind: str) -> bytes:
    """A photo saved as `kind` (a DICOM only in outline: its preamble and magic)."""
    photo = lesion_image(320, 240, hairy=False, seed=6)
    if kind == "dicom":
        return bytes(128) + b"DICM" + bytes(64)
    if kind == "gif":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(photo[:, :, ::-1]).save(buffer, format="GIF")
        return buffer.getvalue()
    ok, encoded = cv2.imencode({"webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}[kind], photo)
    assert ok
    return encoded.tobytes()


def test_a_jpg_holding_another_format_is_skipped_naming_both(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """A download saved under the wrong name (a WebP from a browser, a DICOM export) is named
    by what its bytes are; bytes of no known format are 'not an image'; a header without a size
    says so."""
    ids = list(isic2020.frame["image_name"])
    kinds = ("webp", "gif", "bmp", "tiff", "dicom")
    for identifier, kind in zip(ids[:5], kinds, strict=True):
        (isic2020.images / f"{identifier}.jpg").write_bytes(_other_format(kind))
    (isic2020.images / f"{ids[5]}.jpg").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    (isic2020.images / f"{ids[6]}.jpg").write_bytes(b"\x00" * 128 + b"DICX" + bytes(64))
    no_frame = (b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00" + bytes(9)  # SOI, APP0: no SOF
                + b"\xff\xda\x00\x08" + bytes(6) + b"\x13" * 100 + b"\xff\xd9")
    (isic2020.images / f"{ids[7]}.jpg").write_bytes(no_frame)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 0, stderr
    reasons = _skipped(tmp_path / "out")
    for identifier, kind in zip(ids[:5], kinds, strict=True):
        assert reasons[identifier] == f"content is {kind}, extension says jpeg"
    assert reasons[ids[5]] == reasons[ids[6]] == "not an image"
    assert reasons[ids[7]] == "undecodable (no image size in header)"
    assert sorted(reasons) == sorted(ids[:8])


@pytest.mark.parametrize("args", [
    ("prepare", "{source}", "--images", ""), ("prepare", "", "--out", "{out}"),
    ("prepare", "{source}", "--out="), ("prepare", "{source}", "-o", ""),
    ("prepare", "{source}", "--metadata", "", "--out", "{out}"),
    ("prepare", "--out", "{out}", "--", ""),
    ("train", "", "--dry-run"), ("train", "{out}", "--run-dir", "", "--dry-run"),
    ("push", "", "--repo-id", "alice/melanoma", "--dry-run"),
    ("sample", "--lora", "{out}", "--out", "", "--dry-run"),
    ("evaluate", "--synthetic", "", "--out", "{out}"), ("demo", "--out", "")])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    """`--images "$DIR"` with DIR unset: Path("") is ".", which the command would search (and
    take another download's images from) or write in."""
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    given = [a.format(source=isic2020.root, out=tmp_path / "out") for a in args]
    code, stdout, stderr = invoke(runner, *given)
    assert code == 2 and "Traceback" not in stdout + stderr, stdout + stderr
    assert "is empty (an unset shell variable?); give a path, or . for the current folder" in (
        " ".join(stderr.split())), stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_a_text_option_may_be_empty_and_a_path_option_may_be_the_current_folder(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an empty *path* is refused: `--query ""` goes on to its own check, and `.` is the
    current folder as asked."""
    monkeypatch.chdir(isic2020.root)
    code, stdout, stderr = invoke(runner, "prepare", ".", "--out", tmp_path / "out",
                                  "--trigger", "", "--workers", 1)
    assert code == 1 and "--trigger" in stderr and "is empty (an unset" not in stderr, stderr
    code, stdout, stderr = invoke(runner, "prepare", ".", "--out", tmp_path / "out",
                                  "--workers", 1)
    assert code == 0, stdout + stderr


def test_a_csv_source_and_another_metadata_csv_are_refused_as_two_answers(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """`prepare train.csv --metadata other.csv` read only other.csv: SOURCE went unread."""
    csv = isic2020.root / "train.csv"
    other = tmp_path / "other.csv"
    other.write_bytes(csv.read_bytes())
    code, stdout, stderr = invoke(runner, "prepare", csv, "--metadata", other, "--out",
                                  tmp_path / "out")
    _assert_one_line_error(code, stdout, stderr, f"SOURCE {csv} is a file and --metadata "
                           f"{other} another: give one metadata CSV")
    assert not (tmp_path / "out").exists()
    code, stdout, stderr = invoke(runner, "prepare", csv, "--metadata", csv, "--out",
                                  tmp_path / "same", "--workers", 1)
    assert code == 0, stdout + stderr
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--metadata", other,
                                  "--out", tmp_path / "folder", "--workers", 1)
    assert code == 0, stdout + stderr  # the folder as the images' place


@pytest.mark.parametrize(("terms", "name"), [("hairy", "hairy"), ("not hairy", "hairy"),
                                             ("hair_score > 0.1 and ita > 0", "hair_score")])
def test_a_query_on_hair_with_hair_off_is_refused_before_the_scan(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, terms: str,
        name: str) -> None:
    """--hair off measures no hair: `hairy` is blank on every photo, so such a query would
    leave out everything (or keep everything) after a whole scan, blaming the query."""
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                                  "--hair", "off", "--query", terms)
    _assert_one_line_error(code, stdout, stderr, f"--query {terms!r} names {name}, which "
                           "--hair off leaves blank on every photo: prepare with --hair auto")
    assert not (tmp_path / "out").exists()
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "ok",
                                  "--hair", "off", "--query", "ita > -90", "--workers", 1)
    assert code == 0, stdout + stderr


def test_rows_of_one_id_that_disagree_are_named(isic2020: SyntheticSet, tmp_path: Path) -> None:
    frame = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False)
    copy = frame.iloc[[0, 1]].copy()
    copy.loc[copy.index[0], ["sex", "age_approx"]] = ["female" if frame.at[0, "sex"] == "male"
                                                     else "male", "33"]
    pd.concat([frame, copy]).to_csv(isic2020.metadata, index=False)
    result = prepare(isic2020.root, tmp_path / "out", workers=1)
    said = [w for w in result.warnings if "disagree" in w]
    first = str(frame.at[0, "image_name"])
    assert said == [f"1 image id has rows that disagree (first: {first}, "
                    "on sex, age); the first row of each is used: correct or remove the wrong "
                    "rows in the metadata"]


@pytest.mark.parametrize(("option", "value"), [("--trigger", "me1\nanoma"),
                                               ("--trigger", "me1\tanoma"),
                                               ("--class-name", "melanoma\n")])
def test_a_control_character_in_the_trigger_or_class_is_refused(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, option: str,
        value: str) -> None:
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                                  option, value)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1 and option in stderr
    assert not (tmp_path / "out").exists()


def test_files_named_in_another_letter_case_are_counted_with_a_fix_in_the_plural(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Skips counted in the plural said "3 image files named in another letter case ...:
    correct the id or rename the file"."""
    from medsynth_kohya.data.prepare import CASE_SKIP, reason_counted

    for path in isic2020.images.iterdir():
        path.rename(path.with_name(path.name.lower()))
    count = len(isic2020.frame)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert (f"{count} image files named in another letter case (see source): correct the ids "
            "or rename the files") in " ".join(stderr.split()), stderr
    assert reason_counted(1, CASE_SKIP) == f"1 {CASE_SKIP}"


def test_ids_skipped_for_what_they_have_are_counted_as_ids_with_fixes_in_their_number(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """"2 only a hidden file (its name begins with a dot): rename it without the dot" and
    "2 only a .tif file: convert it": counted without a noun, the fix said of one file."""
    paths = sorted(isic2020.images.iterdir())
    for path in paths[:2]:
        path.rename(path.with_name(f".{path.name}"))
    for path in paths[2:4]:
        path.rename(path.with_suffix(".tif"))
    paths[4].unlink()
    paths[4].symlink_to(tmp_path / "absent.jpg")
    isic2020.frame.iloc[:5].to_csv(isic2020.metadata, index=False)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert ("2 ids with only a hidden file (its name begins with a dot): rename them without "
            "the dot") in said, said
    assert "2 ids with only a .tif file: convert them to .jpg or .png" in said, said
    assert ("1 symlink to a missing file: fetch its target (git annex get, dvc pull) or "
            "remove the link") in said, said


def test_a_decoders_words_after_a_skip_reason_are_not_put_in_the_plural() -> None:
    """Only a fix (an imperative after the last ": ") is said of many files, not the words
    a decoder gave ("premature end of JPEG file")."""
    from medsynth_kohya.data.prepare import reason_counted

    said = "corrupt JPEG data: premature end of JPEG file"
    assert reason_counted(3, said) == f"3 {said}"
    assert reason_counted(4, "no image file") == "4 ids with no image file"
    assert reason_counted(2, "duplicate id") == "2 duplicate ids"
    assert reason_counted(2, "symlink to a missing file: fetch its target or remove the "
                             "link") == ("2 symlinks to a missing file: fetch their targets or "
                                         "remove the links")


@pytest.mark.parametrize("value", [".", "ÄÖ", "_x", "a/b"])
def test_a_class_name_the_folder_rule_refuses_is_told_that_rule(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, value: str) -> None:
    """'.' and 'ÄÖ' were refused as not "letters, digits, spaces, '.', '_' or '-'", which
    both are: the rule is ASCII only, and a letter or digit first."""
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                                  "--class-name", value)
    _assert_one_line_error(code, stdout, stderr, (
        f"--class-name {value!r} must begin with an ASCII letter or digit and hold only ASCII "
        "letters, digits, spaces, '.', '_' or '-' (it names a folder)"))


def test_an_id_whose_file_differs_only_in_letter_case_is_named_once(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """`isic_1` in the metadata and `ISIC_1.jpg` on disk were two skips ("no image file" and
    "no metadata row") and no hint; now one skip names the file and a warning the fix."""
    ids = sorted(isic2020.frame["image_name"])
    (isic2020.images / f"{ids[0]}.jpg").rename(isic2020.images / f"{ids[0].lower()}.jpg")
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    table = pd.read_csv(out / "skipped.csv", dtype=str)
    assert list(table["id"]) == [ids[0]]
    assert table["reason"].item() == ("image file named in another letter case (see source): "
                                      "correct the id or rename the file")
    assert Path(table["source"].item()).name == f"{ids[0].lower()}.jpg"
    assert (f"1 selected id has an image file only in another letter case (first: {ids[0]}, "
            f"file {ids[0].lower()}.jpg)") in " ".join(stderr.split())


def test_every_file_in_another_letter_case_is_counted_in_the_plural(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """With no image prepared, the refusal said "12 image file named in another letter case"."""
    ids = sorted(isic2020.frame["image_name"])
    for identifier in ids:
        (isic2020.images / f"{identifier}.jpg").rename(
            isic2020.images / f"{identifier.lower()}.jpg")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out")
    assert code == 1
    assert (f"{len(ids)} image files named in another letter case (see source)"
            in " ".join(stderr.split()))


def test_an_id_whose_only_file_is_hidden_names_it(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """`.ISIC_1.jpg` alone was skipped as "no image file", though the id's file is there."""
    ids = sorted(isic2020.frame["image_name"])
    (isic2020.images / f"{ids[0]}.jpg").rename(isic2020.images / f".{ids[0]}.jpg")
    (isic2020.images / f"._{ids[1]}.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS's extras
    (isic2020.images / f"{ids[1]}.jpg").unlink()
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    table = pd.read_csv(out / "skipped.csv", dtype=str).set_index("id")
    assert table.at[ids[0], "reason"] == ("only a hidden file (its name begins with a dot): "
                                          "rename it without the dot")
    assert Path(table.at[ids[0], "source"]).name == f".{ids[0]}.jpg"
    assert table.at[ids[1], "reason"] == "no image file"


def test_an_id_whose_name_is_a_folder_a_fifo_or_a_hidden_file_says_what_it_found(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    """A folder or a named pipe by an id's file name, and `.hidden.jpg` for the id `.hidden`,
    were skipped as "no image file", saying nothing of what stood in the image's place."""
    ids = sorted(isic2020.frame["image_name"])
    images = isic2020.images
    for identifier in ids[:3]:
        (images / f"{identifier}.jpg").unlink()
    (images / f"{ids[0]}.jpg").mkdir()
    os.mkfifo(images / f"{ids[1]}.jpg")
    frame = isic2020.frame.copy()
    frame["image_name"] = frame["image_name"].replace(ids[2], ".hidden")
    frame.to_csv(isic2020.metadata, index=False)
    shutil.copy(images / f"{ids[3]}.jpg", images / ".hidden.jpg")
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    table = pd.read_csv(out / "skipped.csv", dtype=str).set_index("id")
    assert table.at[ids[0], "reason"] == ("only a folder where its image file should be (see "
                                          "source): put the image file in its place")
    assert table.at[ids[1], "reason"] == ("only a named pipe (FIFO) where its image file should "
                                          "be (see source): put the image file in its place")
    assert table.at[".hidden", "reason"] == (
        "only a hidden file (its name begins with a dot), which is never read: remove the dot "
        "from the file's name and the id")
    for identifier, name in ((ids[0], f"{ids[0]}.jpg"), (ids[1], f"{ids[1]}.jpg"),
                             (".hidden", ".hidden.jpg")):
        assert Path(table.at[identifier, "source"]) == images / name
