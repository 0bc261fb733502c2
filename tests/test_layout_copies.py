"""The layout holds its own copy of each image (`--link copy`, the default), or with `--link
hard` the source's file itself.

A crop in place of a prepared image must never reach the user's download; a source photo
rewritten in place is measured and copied again on the re-run, never blamed on the prepared
folder; a folder an earlier version prepared with hard links gets copies on its re-run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data.layout import LinkMode
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.synth import SyntheticSet, encode_jpeg, lesion_image, make_dataset
from medsynth_kohya.errors import UserError

from .conftest import invoke


def _made(tmp_path: Path, seed: int) -> SyntheticSet:
    return make_dataset(tmp_path / "src", 4, seed=seed, melanoma_fraction=1.0,
                        hair_fraction=0.0, sizes=((320, 240),))


def _edit_in_place(path: Path, *, crop: bool) -> None:
    """What an image editor does to the file it opened: a crop, or a stroke drawn on it,
    saved over the same file (its inode kept)."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if crop:
        image = image.crop((0, 0, image.width // 2, image.height // 2))
    else:
        ImageDraw.Draw(image).rectangle((5, 5, 60, 60), fill=(255, 0, 255))
    inode = path.stat().st_ino
    image.save(path, format="JPEG")
    assert path.stat().st_ino == inode


def _rewrite_in_place(path: Path, width: int, height: int) -> bytes:
    """A new photo written into the source's own file (`cp new.jpg src/X.jpg`)."""
    data = encode_jpeg(lesion_image(width, height, hairy=True, seed=11))
    inode = path.stat().st_ino
    with path.open("r+b") as file:
        file.truncate()
        file.write(data)
    assert path.stat().st_ino == inode
    return data


def test_a_crop_in_place_of_a_prepared_image_never_reaches_the_source(
        runner: CliRunner, tmp_path: Path) -> None:
    made = _made(tmp_path, 51)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out)
    assert code == 0, stderr
    image = sorted((out / "img" / "1_melanoma").glob("*.jpg"))[0]
    source = made.images / image.name
    original = source.read_bytes()

    _edit_in_place(image, crop=True)
    assert source.read_bytes() == original, "the download keeps its photo"
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out)
    assert code == 1 and "changed since" in stderr and image.name in stderr
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out, "--force")
    assert code == 0, stderr
    assert image.read_bytes() == original and not image.samefile(source)


def test_an_edit_keeping_the_pixel_size_is_refused_and_a_touch_is_not(tmp_path: Path) -> None:
    """Any write to a prepared image since it was placed is an edit, not only a crop; a file
    whose time alone changed still holds its source's bytes and is no edit."""
    made = _made(tmp_path, 52)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1)
    image = sorted(first.train_dir.glob("*.jpg"))[0]
    source = made.images / image.name
    original = source.read_bytes()

    _edit_in_place(image, crop=False)
    edited = image.read_bytes()
    with pytest.raises(UserError, match="changed since"):
        prepare(made.root, out, workers=1)
    assert image.read_bytes() == edited and source.read_bytes() == original
    prepare(made.root, out, workers=1, force=True)
    assert image.read_bytes() == original

    os.utime(image)  # touched: the same bytes, a new time
    again = prepare(made.root, out, workers=1)
    assert image.read_bytes() == original and again.reused == len(again.manifest)
    assert not [w for w in again.warnings if "hard links" in w]


def test_link_hard_shares_the_source_files_and_a_plain_re_run_copies_them(
        runner: CliRunner, tmp_path: Path) -> None:
    made = _made(tmp_path, 53)
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out, "--link", "hard")
    assert code == 0, stderr
    images = sorted((out / "img" / "1_melanoma").glob("*.jpg"))
    assert len(images) == 4
    assert all(path.samefile(made.images / path.name) for path in images)
    assert PreparedFolder(out).state().options["link"] == "hard"

    code, _, stderr = invoke(runner, "prepare", made.root, "--out", out)
    assert code == 0, stderr
    assert "4 images under" in stderr and "are now copies" in " ".join(stderr.split())
    for path in images:
        source = made.images / path.name
        assert path.read_bytes() == source.read_bytes() and not path.samefile(source)
    assert PreparedFolder(out).state().options["link"] == "copy"
    code, stdout, _ = invoke(runner, "prepare", "--help")
    assert code == 0 and "--link" in stdout and "changes your source" in " ".join(stdout.split())


@pytest.mark.parametrize("link", list(LinkMode))
def test_a_source_rewritten_in_place_is_measured_and_placed_again(tmp_path: Path,
                                                                  link: LinkMode) -> None:
    made = _made(tmp_path, 54)
    out = tmp_path / "out"
    options = PrepareOptions(link=link)
    first = prepare(made.root, out, workers=1, options=options)
    identifier = str(first.manifest["id"].iloc[0])
    source = made.images / f"{identifier}.jpg"
    image = first.train_dir / source.name
    old = source.read_bytes()

    new = _rewrite_in_place(source, 400, 300)
    if link is LinkMode.copy:
        assert image.read_bytes() == old, "training keeps the photo its caption describes"
    second = prepare(made.root, out, workers=1, options=options)

    row = second.manifest.set_index("id").loc[identifier]
    assert (int(row["width"]), int(row["height"])) == (400, 300)
    assert bool(row["hairy"]) and str(row["caption"]).endswith(", hairy")
    assert (second.train_dir / f"{identifier}.txt").read_text(encoding="utf-8") == row["caption"]
    assert image.read_bytes() == new and image.samefile(source) == (link is LinkMode.hard)
    assert (second.scanned, second.reused) == (1, 3)


def _as_an_earlier_version_wrote_it(out: Path) -> None:
    """written.json as a list of names, without the images' stamps, as versions before copies
    wrote it."""
    written = out / ".medsynth" / "written.json"
    written.write_text(json.dumps(sorted(json.loads(written.read_text(encoding="utf-8")))),
                       encoding="utf-8")


def test_a_folder_an_earlier_version_hard_linked_gets_copies_without_a_false_edit(
        tmp_path: Path) -> None:
    made = _made(tmp_path, 55)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1, options=PrepareOptions(link=LinkMode.hard))
    _as_an_earlier_version_wrote_it(out)
    identifier = str(first.manifest["id"].iloc[0])
    source = made.images / f"{identifier}.jpg"
    new = _rewrite_in_place(source, 400, 300)  # the layout's link shows it: another pixel size

    second = prepare(made.root, out, workers=1)

    assert next(w for w in second.warnings if "were hard links" in w).startswith("4 images")
    for path in made.images.glob("*.jpg"):
        placed = second.train_dir / path.name
        assert placed.read_bytes() == path.read_bytes() and not placed.samefile(path)
    assert (second.train_dir / source.name).read_bytes() == new
    row = second.manifest.set_index("id").loc[identifier]
    assert (int(row["width"]), int(row["height"])) == (400, 300)


def test_a_crop_is_still_refused_in_a_folder_without_recorded_stamps(tmp_path: Path) -> None:
    made = _made(tmp_path, 56)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1)
    _as_an_earlier_version_wrote_it(out)
    image = sorted(first.train_dir.glob("*.jpg"))[0]
    _edit_in_place(image, crop=True)
    with pytest.raises(UserError, match="changed since"):
        prepare(made.root, out, workers=1)


def test_a_read_only_source_gives_a_copy_its_owner_may_edit(tmp_path: Path) -> None:
    """git-annex and DVC keep their objects read-only; the layout's copy of one is for the
    user to crop."""
    made = _made(tmp_path, 57)
    for path in made.images.glob("*.jpg"):
        path.chmod(0o444)
    result = prepare(made.root, tmp_path / "out", workers=1)
    for path in made.images.glob("*.jpg"):
        placed = result.train_dir / path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert stat.S_IMODE(placed.stat().st_mode) == 0o644
        assert placed.stat().st_mtime_ns == path.stat().st_mtime_ns


def test_a_clone_falls_back_to_a_byte_copy_where_the_file_system_refuses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def refuse(fd: int, request: int, arg: int) -> None:
        asked.append(request)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(fcntl, "ioctl", refuse)
    source = tmp_path / "a.jpg"
    source.write_bytes(os.urandom(3 * 2**20 + 7))
    os.utime(source, ns=(10**18, 10**18))
    target = tmp_path / "b.jpg"
    files.clone(source, target)
    assert asked == [files.FICLONE] and files.FICLONE == 0x40049409
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_mtime_ns == 10**18 and not target.samefile(source)


@pytest.mark.parametrize("link", list(LinkMode))
def test_a_disk_too_full_for_the_copies_says_how_much_and_the_ways_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: LinkMode) -> None:
    made = _made(tmp_path, 58)

    def full(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files, "clone", full)
    monkeypatch.setattr(os, "link", cross_device)
    with pytest.raises(UserError) as refused:
        prepare(made.root, tmp_path / "out", workers=1, options=PrepareOptions(link=link))
    said = str(refused.value)
    assert "no space left" in said and "4 images" in said
    assert re.search(r" \(\d+(\.\d)? kB in all\)", said), said  # small photos: not "0.0 GB"
    assert ("pass --link hard" in said) == (link is LinkMode.copy)
    assert "\n" not in said


def test_a_full_disk_on_another_file_system_offers_no_hard_links_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hard links cannot cross file systems: the way on is an --out on the images' own."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to put --out on")
    made = _made(tmp_path, 58)

    def full(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "clone", full)
    out = Path(tempfile.mkdtemp(dir=shm)) / "out"
    try:
        with pytest.raises(UserError) as refused:
            prepare(made.root, out, workers=1)
    finally:
        shutil.rmtree(out.parent)
    assert ("choose another --out, or one on the images' own file system with --link hard, "
            "where hard links take no space") in str(refused.value)


def test_sizes_are_never_rounded_to_nothing() -> None:
    assert [files.size_text(n) for n in (0, 940, 1000, 9_940, 12_345, 999_999, 4_200_000,
                                         12_600_000_000)] == [
        "0 B", "940 B", "1.0 kB", "9.9 kB", "12 kB", "1.0 MB", "4.2 MB", "13 GB"]


def test_link_hard_that_cannot_link_says_how_many_images_were_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--link hard where no hard link can be made (another file system) copied every image
    without a word: the disk the user asked not to spend was spent."""
    made = _made(tmp_path, 56)

    def refused(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", refused)
    result = prepare(made.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(link=LinkMode.hard))
    [warning] = [w for w in result.warnings if "could not be hard-linked" in w]
    assert warning.startswith(f"{len(result.manifest)} images were copied")
    again = prepare(made.root, tmp_path / "out", workers=1,
                    options=PrepareOptions(link=LinkMode.hard))
    assert [w for w in again.warnings if "could not be hard-linked" in w] == [warning]
