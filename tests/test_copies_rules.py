"""The near-copy rules one by one: the hash, the views a training photo is indexed under, the
lookup's distances and the threshold, and the record of a check (copycheck)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copies, copycheck
from medsynth_kohya.training.record import RunRecord

from .eval_data import isic_source, photo, synthetic_set


def _square(image: Any, position: float, side: int = 1024) -> Any:
    """The largest square of `image` at `position` (0 to 1) along its long side, resized to
    `side` px as a square generation would frame it."""
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (int((height - short) * position), int((width - short) * position))
    return cv2.resize(image[top:top + short, left:left + short], (side, side),
                      interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (600, 400)])
def test_a_square_crop_anywhere_along_the_long_side_is_a_near_copy(size: tuple[int, int]
                                                                   ) -> None:
    """A training photo reframed as a square (what a square generation reproduces) is
    flagged wherever the square lies, landscape or portrait, 4:3 or 3:2."""
    training = [photo(40 + i, hairy=i % 2 == 0, size=size) for i in range(6)]
    index = copies.HashIndex()
    for i, image in enumerate(training):
        index.add(f"T{i}", image)
    for i, image in enumerate(training):
        for position in np.linspace(0, 1, 11):
            matches = index.nearest(copies.query_hash(_square(image, position)))
            assert matches[0].training_id == f"T{i}", position
            assert copies.is_copy(matches), (position, matches[0].distance)


def _bits(hashes: Any) -> Any:
    """The unpacked bits of packed hashes, one row each (256: 255 and the padding)."""
    return np.unpackbits(np.asarray(hashes), axis=1)


def test_a_hash_is_255_bits_half_of_them_set() -> None:
    """Each bit is a coefficient above the median of the 255: 127 are set, the padding never,
    the last (the highest frequency) in some hashes."""
    hashes = np.concatenate([copies.reference_hashes(photo(60 + i, hairy=i % 2 == 0))
                             for i in range(4)] + [copies.query_hash(photo(70))])
    assert hashes.shape[1:] == (32,) and hashes.dtype == np.uint8
    bits = _bits(hashes)
    assert set(bits[:, :copies.HASH_BITS].sum(axis=1)) == {copies.HASH_BITS // 2}
    assert not bits[:, copies.HASH_BITS:].any()
    assert bits[:, copies.HASH_BITS - 1].any()


@pytest.mark.parametrize("size", [(128, 128), (100, 75), (96, 128), (64, 64)])
def test_an_image_up_to_the_working_size_hashes_as_its_64_px_thumbnail(
        size: tuple[int, int]) -> None:
    """Nothing finer than a 64 x 64 thumbnail (shrunk by pixel area) reaches the hash, and an
    image no longer than 128 px is not enlarged first."""
    image = cv2.cvtColor(photo(80, hairy=True, size=size), cv2.COLOR_BGR2GRAY)
    thumbnail = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    assert (copies.query_hash(image)[0] == copies.query_hash(thumbnail)[0]).all()
    assert (copies.reference_hashes(image)[0] == copies.reference_hashes(thumbnail)[0]).all()


@pytest.mark.parametrize("size", [(2000, 1500), (1500, 2000), (3000, 300), (2000, 3),
                                  (3, 2000)])
def test_a_large_photo_is_hashed_as_its_128_px_reduction(size: tuple[int, int]) -> None:
    """A photo is reduced by pixel area to 128 px on its long side (at least a pixel on the
    short one) before it and its crops are hashed; a grey photo is hashed as its BGR self."""
    image = photo(81, size=size)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    width, height = size
    scale = 128 / max(size)
    reduced = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    assert (copies.reference_hashes(image) == copies.reference_hashes(reduced)).all()
    assert (copies.query_hash(image) == copies.query_hash(reduced)).all()
    assert (copies.reference_hashes(grey) == copies.reference_hashes(image)).all()


def test_the_eight_query_hashes_are_the_same_whichever_way_the_photo_lies() -> None:
    """The query holds the hash of each quarter turn and of its mirror: a photo flipped or
    turned any way gives the same 8 rows."""
    image = photo(82, hairy=True)
    rows = {bytes(row) for row in copies.query_hash(image)}
    assert len(rows) == 8
    for turned in (image[::-1], image[:, ::-1], np.rot90(image), np.rot90(image, 3),
                   image.transpose(1, 0, 2)):
        query = copies.query_hash(np.ascontiguousarray(turned))
        assert query.shape == (8, 32) and {bytes(row) for row in query} == rows


def test_the_index_holds_only_the_views_the_crop_step_needs() -> None:
    """Every lookup compares with every hash: a 4:3 photo is indexed under 68 views (itself,
    4 x 4 crops of 95 %, 6 x 6 of 90 %, 15 squares), a square one under 53."""
    assert len(copies.reference_hashes(photo(83))) == 68
    assert len(copies.reference_hashes(photo(84, size=(300, 400)))) == 68
    assert len(copies.reference_hashes(photo(85, size=(256, 256)))) == 53


def test_the_distance_is_the_fraction_of_bits_to_the_nearest_view() -> None:
    training = [photo(90 + i) for i in range(5)]
    index = copies.HashIndex()
    for i, image in enumerate(training):
        index.add(f"T{i}", image)
    query = copies.query_hash(cv2.GaussianBlur(training[3], (0, 0), 4)[20:, 30:])
    matches = index.nearest(query, k=5)
    assert sorted(m.training_id for m in matches) == [f"T{i}" for i in range(5)]
    for match in matches:
        views = copies.reference_hashes(training[int(match.training_id[1:])])
        differing = (_bits(views)[None] != _bits(query)[:, None]).sum(axis=2)
        assert match.distance == differing.min() / copies.HASH_BITS
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    assert len(index.nearest(query)) == copies.NEAREST == 3
    assert index.nearest(query, k=1)[0].training_id == "T3"


def test_photos_added_after_a_lookup_are_looked_up_too() -> None:
    first, second = photo(100), photo(101)
    index = copies.HashIndex()
    assert index.nearest(copies.query_hash(first)) == [] and len(index) == 0
    index.add("first", first)
    assert index.nearest(copies.query_hash(first))[0].distance == 0.0
    index.add("second", second)
    assert len(index) == 2
    assert [m.training_id for m in index.nearest(copies.query_hash(second))] == [
        "second", "first"]
    assert index.nearest(copies.query_hash(second))[0].distance == 0.0


def test_photos_at_the_same_distance_are_listed_in_the_order_they_were_indexed() -> None:
    """The same photo under several ids (ISIC has duplicates) is reported the same way on
    every run: by the order the ids were indexed."""
    photos = [photo(110 + i) for i in range(3)]
    order = np.random.default_rng(5).permutation(np.repeat(np.arange(3), 40))
    index = copies.HashIndex()
    for position, which in enumerate(order):
        index.add(f"P{which}-{position:03d}", photos[which])
    for which, image in enumerate(photos):
        expected = [f"P{which}-{p:03d}" for p in np.flatnonzero(order == which)[:10]]
        assert [m.training_id for m in index.nearest(copies.query_hash(image), k=10)] == (
            expected)


def test_a_near_copy_is_at_or_below_the_threshold() -> None:
    assert copies.is_copy([copies.Match("a", copies.THRESHOLD), copies.Match("b", 0.0)])
    assert not copies.is_copy([copies.Match("a", copies.THRESHOLD + 1 / copies.HASH_BITS)])
    assert copies.is_copy([copies.Match("a", 0.3)], threshold=0.3)
    assert not copies.is_copy([copies.Match("a", 0.3)], threshold=0.29)
    assert not copies.is_copy([]) and not copies.is_copy([], threshold=1.0)
    assert copies.THRESHOLD == 0.25 and copies.UNRELATED == 0.5


def _flags(count: int) -> tuple[copycheck.Flag, ...]:
    return tuple(copycheck.Flag(f"S{i}", f"T{i}", i / 100) for i in range(count))


def test_the_summary_names_the_first_five_pairs_and_counts_the_rest() -> None:
    def summary(flagged: int) -> str:
        return copycheck.CopyCheck(0.25, "prepared", 40, tuple(f"S{i}" for i in range(9)),
                                   _flags(flagged)).summary()

    pairs = [f"S{i} ~ T{i} (0.0{i})" for i in range(7)]
    assert summary(7) == ("7 of 9 images are near-copies of training photos of prepared: "
                          + ", ".join(pairs[:5]) + " and 2 more")
    assert summary(6).endswith(", ".join(pairs[:5]) + " and 1 more")
    assert summary(5).endswith(": " + ", ".join(pairs[:5]))
    assert summary(1).endswith("prepared: S0 ~ T0 (0.00)")
    assert copycheck.CopyCheck(0.25, "data", 1, ("S0",), ()).summary() == (
        "no near-copies: 1 image checked against 1 training photo of data")


def test_broken_files_are_skipped_and_the_threshold_is_the_one_given(tmp_path: Path) -> None:
    """An undecodable training photo or synthetic image is listed once in `skipped` (which set,
    which id); the rest is checked, each stage reported to its last image."""
    paths = isic_source(tmp_path / "isic", 4, 0, seed=21)
    melanomas = sorted(paths)
    paths[melanomas[0]].write_bytes(b"no jpeg")
    kept = cv2.imread(str(paths[melanomas[2]]))
    assert kept is not None
    ids = synthetic_set(tmp_path / "syn", [photo(7500), kept, photo(7501), kept[30:, 25:]])
    (tmp_path / "syn" / "images" / f"{ids[2]}.png").write_bytes(b"no png")
    progress: list[tuple[str, int, int]] = []
    result = copycheck.check(tmp_path / "syn", tmp_path / "isic",
                             on_progress=lambda *step: progress.append(step))
    assert result.skipped == ({"set": "real", "id": melanomas[0], "reason": "undecodable"},
                              {"set": "synthetic", "id": ids[2], "reason": "undecodable"})
    assert result.checked == (ids[0], ids[1], ids[3]) and result.n_training == 3
    assert result.flagged[0] == copycheck.Flag(ids[1], melanomas[2], 0.0)
    assert [f.synthetic_id for f in result.flagged] == [ids[1], ids[3]]
    assert result.flagged[1].distance > 0 and result.threshold == copies.THRESHOLD
    assert progress[-1] == ("near-copy check", 4, 4)
    assert ("training photos", 4, 4) in progress and ("training photos", 1, 4) in progress
    exact = copycheck.check(tmp_path / "syn", tmp_path / "isic", threshold=0.0)
    assert exact.threshold == 0.0 and exact.flagged == result.flagged[:1]
    copycheck.write(tmp_path / "syn", result)
    assert copycheck.read(tmp_path / "syn") == result


def test_no_decodable_training_photo_is_one_line(tmp_path: Path) -> None:
    paths = isic_source(tmp_path / "isic", 2, 1, seed=22)
    for path in sorted(paths)[:2]:
        paths[path].write_bytes(b"")
    synthetic_set(tmp_path / "syn", [photo(7600)])
    with pytest.raises(UserError) as raised:
        copycheck.check(tmp_path / "syn", tmp_path / "isic")
    assert str(raised.value) == (f"none of the training photos of {tmp_path / 'isic'} could "
                                 "be decoded: give a download or prepared folder whose photos "
                                 "open as images")


def test_the_record_holds_what_was_checked_when_and_by_what(tmp_path: Path) -> None:
    ids = synthetic_set(tmp_path / "syn", [photo(7700), photo(7701)])
    result = copycheck.CopyCheck(0.2, "prepared", 12, tuple(ids),
                                 (copycheck.Flag(ids[1], "ISIC_1", 0.125),),
                                 ({"set": "real", "id": "ISIC_2", "reason": "undecodable"},))
    before = datetime.now().astimezone()
    document = json.loads(copycheck.write(tmp_path / "syn", result).read_text("utf-8"))
    created = datetime.fromisoformat(document.pop("created"))
    assert created.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= created <= datetime.now().astimezone()
    digests = document.pop("sha256")
    assert sorted(digests) == ids and len(set(digests.values())) == 2
    assert document == {
        "tool": "medsynth-kohya", "threshold": 0.2, "training": "prepared", "n_training": 12,
        "checked": ids,
        "flagged": [{"synthetic_id": ids[1], "training_id": "ISIC_1", "distance": 0.125}],
        "skipped": [{"set": "real", "id": "ISIC_2", "reason": "undecodable"}]}


def test_a_record_read_for_some_images_checks_only_those(tmp_path: Path) -> None:
    """`among` (a push's published images) keeps those ids alone; a record written before
    digests were kept counts every id it names as checked."""
    ids = synthetic_set(tmp_path / "syn", [photo(7800 + i) for i in range(3)])
    result = copycheck.CopyCheck(0.25, "isic", 3, tuple(ids), _flags(1))
    copycheck.write(tmp_path / "syn", result)
    some = copycheck.read(tmp_path / "syn", among={ids[2], ids[0], "SYN_9999999"})
    assert some is not None and some.checked == (ids[0], ids[2])
    assert some.flagged == result.flagged and some.skipped == ()
    document = json.loads((tmp_path / "syn" / "copies.json").read_text("utf-8"))
    del document["sha256"], document["skipped"]
    (tmp_path / "syn" / "copies.json").write_text(json.dumps(document), "utf-8")
    (tmp_path / "syn" / "images" / f"{ids[1]}.png").unlink()
    old = copycheck.read(tmp_path / "syn")
    assert old is not None and old.checked == tuple(ids) and old.skipped == ()
    assert copycheck.unchanged(tmp_path / "syn", [ids[1]], None) == (ids[1],)
    assert copycheck.unchanged(tmp_path / "syn", [ids[0], ids[1]], {}) == ()


@pytest.mark.parametrize("record", [
    "{", '{"threshold": 0.25}', '{"threshold": "x", "training": "t", "n_training": 1, '
    '"checked": [], "flagged": []}',
    '{"threshold": 0.25, "training": "t", "n_training": 1, "checked": 3, "flagged": []}'])
def test_a_damaged_record_says_how_to_write_it_again(tmp_path: Path, record: str) -> None:
    (tmp_path / "copies.json").write_text(record, "utf-8")
    with pytest.raises(UserError) as raised:
        copycheck.read(tmp_path)
    assert str(raised.value) == (f"{tmp_path / 'copies.json'} is unreadable; re-run "
                                 "`medsynth-kohya sample --check-copies` to write it again")


def _record(prepared: Path, manifest_sha256: str | None = None) -> RunRecord:
    return RunRecord.from_dict({"dataset": {"prepared": str(prepared),
                                            "manifest_sha256": manifest_sha256}})


def test_the_training_folder_is_the_one_the_run_trained_on_or_one_line(tmp_path: Path
                                                                      ) -> None:
    (tmp_path / "prepared").mkdir()
    manifest = tmp_path / "prepared" / "manifest.csv"
    manifest.write_text("id\n", "utf-8")
    folder = tmp_path / "prepared"
    for trained in (_record(folder, files.sha256(manifest)), _record(folder)):
        with copycheck.training_folder(trained) as found:
            assert found == folder
    bare = ("--check-copies needs the training images: give --lora a train run folder (its "
            "run.json names the prepared data), not a bare LoRA")
    gone = (f"--check-copies needs the training images, but the prepared folder "
            f"{tmp_path / 'gone'} the run was trained on is not on this machine")
    again = (f"--check-copies needs the photos the LoRA was trained on, but {folder} was "
             "prepared again since the run trained on it (manifest changed): leave out "
             "--check-copies and evaluate the set with --real <the ISIC download it was "
             "prepared from>, or train again")
    for record, message in ((None, bare), (RunRecord(), bare),
                            (_record(tmp_path / "gone"), gone),
                            (_record(folder, "0" * 64), again)):
        with pytest.raises(UserError) as raised, copycheck.training_folder(record):
            pass
        assert str(raised.value) == message
