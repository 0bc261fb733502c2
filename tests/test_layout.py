"""Repeats from --target-steps on counts that do not divide, and re-preparing a changed source.

Rounding repeats down would train fewer steps than asked; a re-prepare that wrote into an
old hard link (`--link hard`) would change the user's own photo.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import pytest
import toml

from medsynth_kohya.data import layout
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.layout import LinkMode
from medsynth_kohya.data.prepare import PrepareOptions, prepare, summary
from medsynth_kohya.data.synth import encode_jpeg, lesion_image, make_dataset

# (images, target_steps, epochs, batch_size): none of them divides exactly
UNEVEN = ((7, 1000, 10, 1), (7, 1000, 10, 4), (13, 1600, 3, 2), (584, 7200, 50, 1),
          (3, 10, 4, 1), (11, 2500, 7, 3), (1, 5, 3, 2), (9, 100, 1, 8))


@pytest.mark.parametrize(("images", "target", "epochs", "batch"), UNEVEN)
def test_repeats_round_up_and_reach_the_target(images: int, target: int, epochs: int,
                                               batch: int) -> None:
    assert (target * batch) % (epochs * images)  # the case where floor and ceil differ
    chosen = layout.repeats_for(images, repeats=None, target_steps=target, epochs=epochs,
                                batch_size=batch)
    r = chosen.repeats
    assert r == math.ceil(target * batch / (epochs * images))
    assert epochs * images * r >= target * batch > epochs * images * (r - 1)  # the fewest
    assert epochs * layout.steps_per_epoch(images, r, batch) >= target
    assert chosen.formula.endswith(f"= {r}")
    assert f"ceil({target} x {batch} / ({epochs} x {images}))" in chosen.formula


def test_repeats_given_or_defaulted() -> None:
    assert layout.repeats_for(5, repeats=7, target_steps=None, epochs=3, batch_size=2).repeats == 7
    plain = layout.repeats_for(5, repeats=None, target_steps=None, epochs=3, batch_size=2)
    assert (plain.repeats, plain.formula) == (1, "")
    assert layout.repeats_for(0, repeats=None, target_steps=10, epochs=2,
                              batch_size=1).repeats == 5
    assert layout.repeats_for(50, repeats=None, target_steps=1, epochs=10,
                              batch_size=1).repeats == 1


@pytest.mark.parametrize(("images", "repeats", "batch", "steps"),
                         [(7, 3, 2, 11), (7, 3, 1, 21), (10, 1, 4, 3), (0, 5, 1, 0),
                          (1, 1, 8, 1)])
def test_steps_per_epoch_counts_the_last_partial_batch(images: int, repeats: int, batch: int,
                                                       steps: int) -> None:
    assert layout.steps_per_epoch(images, repeats, batch) == steps


def test_prepare_on_an_uneven_count(tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 7, seed=31, melanoma_fraction=1.0,
                        sizes=((320, 240),))
    out = tmp_path / "out"
    options = PrepareOptions(target_steps=1000, epochs=10, batch_size=4, hair=HairMode.off)
    result = prepare(made.root, out, options=options, workers=1)
    assert result.repeats.repeats == 58  # ceil(1000 x 4 / (10 x 7)) = ceil(57.14)
    assert result.train_dir == out / "img" / "58_melanoma"
    assert sorted(p.name for p in (out / "img").iterdir()) == ["58_melanoma"]
    assert result.steps_per_epoch == 102  # ceil(7 x 58 / 4)
    assert 10 * result.steps_per_epoch >= 1000
    subset = toml.load(out / "dataset.toml")["datasets"][0]["subsets"][0]
    assert subset["num_repeats"] == 58
    rows = dict(summary(result))
    assert rows["repeats"] == "58" and rows["steps per epoch (batch 4)"] == "102"


def _photo(path: Path, width: int, height: int, *, hairy: bool, seed: int) -> bytes:
    data = encode_jpeg(lesion_image(width, height, hairy=hairy, seed=seed))
    path.write_bytes(data)
    return data


def _inode(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _holds(placed: Path, source: Path, link: LinkMode) -> bool:
    """Whether the layout file `placed` holds `source`'s bytes the way `link` says: its own
    copy, or the source's file itself."""
    return (placed.read_bytes() == source.read_bytes()
            and placed.samefile(source) == (link is LinkMode.hard))


@pytest.mark.parametrize("link", list(LinkMode))
def test_a_source_replaced_in_place_is_used_on_re_prepare(tmp_path: Path,
                                                          link: LinkMode) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=32, melanoma_fraction=1.0,
                        hair_fraction=0.0, sizes=((320, 240),))
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1, options=PrepareOptions(link=link))
    identifier = str(first.manifest["id"].iloc[0])
    source = made.images / f"{identifier}.jpg"
    linked = first.train_dir / f"{identifier}.jpg"
    old = source.read_bytes()
    assert _holds(linked, source, link) and not bool(first.manifest["hairy"].iloc[0])

    # a download tool writes the new version beside it and renames it over the old name
    fresh = tmp_path / "fresh.jpg"
    new = _photo(fresh, 400, 300, hairy=True, seed=7)
    fresh.replace(source)
    second = prepare(made.root, out, workers=1, options=PrepareOptions(link=link))

    row = second.manifest.set_index("id").loc[identifier]
    assert (int(row["width"]), int(row["height"])) == (400, 300)
    assert bool(row["hairy"]) and str(row["caption"]).endswith(", hairy")
    assert (second.train_dir / f"{identifier}.txt").read_text(encoding="utf-8") == row["caption"]
    assert linked.read_bytes() == new and _holds(linked, source, link)
    assert (second.scanned, second.reused) == (1, 3)
    assert old != new


@pytest.mark.parametrize("link", list(LinkMode))
def test_re_prepare_from_another_folder_never_writes_into_the_first(tmp_path: Path,
                                                                    link: LinkMode) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=33, melanoma_fraction=1.0,
                        hair_fraction=0.0, sizes=((320, 240),))
    out = tmp_path / "out"
    options = PrepareOptions(link=link)
    prepare(None, out, metadata=made.metadata, images=made.images, workers=1, options=options)
    originals = {p.name: (p.read_bytes(), _inode(p)) for p in made.images.iterdir()}

    # the user's second copy of the set: one photo differs (another size, so another length)
    other = tmp_path / "other"
    other.mkdir()
    for path in made.images.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    changed = sorted(other.glob("*.jpg"))[1]
    new = _photo(changed, 400, 300, hairy=True, seed=8)

    second = prepare(None, out, metadata=made.metadata, images=other, workers=1,
                     options=options)

    assert {p.name: (p.read_bytes(), _inode(p)) for p in made.images.iterdir()} == originals
    placed = second.train_dir / changed.name
    assert placed.read_bytes() == new and _holds(placed, changed, link)
    for path in other.glob("*.jpg"):
        assert _holds(second.train_dir / path.name, path, link)
        assert not (second.train_dir / path.name).samefile(made.images / path.name)
    row = second.manifest.set_index("id").loc[changed.stem]
    assert (int(row["width"]), int(row["height"])) == (400, 300)
    assert str(row["source"]) == str(changed.absolute())


def test_a_same_size_copy_from_another_folder_is_relinked(tmp_path: Path) -> None:
    """`--link hard`, same bytes but another file: the layout follows the new source, the old
    is untouched."""
    made = make_dataset(tmp_path / "src", 3, seed=34, melanoma_fraction=1.0,
                        sizes=((320, 240),))
    out = tmp_path / "out"
    hard = PrepareOptions(link=LinkMode.hard)
    first = prepare(None, out, metadata=made.metadata, images=made.images, workers=1,
                    options=hard)
    other = tmp_path / "other"
    other.mkdir()
    for path in made.images.glob("*.jpg"):
        (other / path.name).write_bytes(path.read_bytes())
    before = {p.name: _inode(p) for p in made.images.glob("*.jpg")}
    second = prepare(None, out, metadata=made.metadata, images=other, workers=1, options=hard)
    assert {p.name: _inode(p) for p in made.images.glob("*.jpg")} == before
    for path in other.glob("*.jpg"):
        assert (second.train_dir / path.name).samefile(path)
    assert list(first.manifest["caption"]) == list(second.manifest["caption"])


def test_where_no_hard_link_can_be_made_the_images_are_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--link hard` onto another file system (a USB disk, a mounted bucket): copies, with the
    source's time kept so that a re-prepare recognises them."""
    made = make_dataset(tmp_path / "src", 3, seed=35, melanoma_fraction=1.0,
                        sizes=((320, 240),))

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    result = prepare(made.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(link=LinkMode.hard))
    for path in made.images.glob("*.jpg"):
        placed = result.train_dir / path.name
        assert placed.read_bytes() == path.read_bytes() and not placed.samefile(path)
        assert placed.stat().st_mtime_ns == path.stat().st_mtime_ns
    assert len(list(result.train_dir.glob("*.jpg"))) == 3


def test_captions_are_rewritten_only_when_changed_and_never_through_a_link(
        tmp_path: Path) -> None:
    """An unchanged caption keeps its file; a changed one replaces it, never writing into a
    hard-linked copy the user made of the folder (`cp -al`, rsync --link-dest)."""
    made = make_dataset(tmp_path / "src", 3, seed=36, melanoma_fraction=1.0,
                        sizes=((320, 240),))
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1)
    captions = sorted(first.train_dir.glob("*.txt"))
    texts = {p.name: p.read_text(encoding="utf-8") for p in captions}
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in captions:
        os.utime(path, ns=(10**18, 10**18))
        os.link(path, backup / path.name)

    prepare(made.root, out, workers=1)
    assert [p.stat().st_mtime_ns for p in captions] == [10**18] * 3

    prepare(made.root, out, options=PrepareOptions(trigger="sks"), workers=1)
    for path in captions:
        assert (backup / path.name).read_text(encoding="utf-8") == texts[path.name]
        assert path.read_text(encoding="utf-8") == texts[path.name].replace("me1anoma", "sks")
        assert not path.samefile(backup / path.name)


def test_validation_images_are_listed_once_beside_the_training_folder(tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 8, seed=37, melanoma_fraction=1.0,
                        sizes=((320, 240),))
    out = tmp_path / "out"
    result = prepare(made.root, out, options=PrepareOptions(repeats=4, val_frac=0.25),
                     workers=1)
    split = result.manifest.set_index("id")["split"]
    folders = {"val": out / "val" / "1_melanoma", "train": out / "img" / "4_melanoma"}
    assert result.train_dir == folders["train"]
    for name, folder in folders.items():
        ids = sorted(str(i) for i in split[split == name].index)
        assert ids and sorted(p.stem for p in folder.glob("*.jpg")) == ids
        assert sorted(p.stem for p in folder.glob("*.txt")) == ids
    assert sorted(p.name for p in (out / "val").iterdir()) == ["1_melanoma"]


def test_re_prepare_with_other_repeats_leaves_no_old_folder(tmp_path: Path) -> None:
    """The old training folder's files and the folder itself go; the new one holds all."""
    made = make_dataset(tmp_path / "src", 8, seed=37, melanoma_fraction=1.0,
                        sizes=((320, 240),))
    out = tmp_path / "out"
    prepare(made.root, out, options=PrepareOptions(repeats=5, val_frac=0.25), workers=1)
    assert list((out / "val" / "1_melanoma").glob("*.jpg"))
    result = prepare(made.root, out, options=PrepareOptions(repeats=3), workers=1)
    assert sorted(p.name for p in (out / "img").iterdir()) == ["3_melanoma"]
    assert not any((out / "val").rglob("*"))
    assert len(list(result.train_dir.glob("*.jpg"))) == len(list(made.images.glob("*.jpg")))
