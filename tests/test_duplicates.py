"""Photos held twice (data/duplicates.py), as prepare keeps them: one readable copy of each,
joined however the duplicates list joins them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medsynth_kohya.data.prepare import prepare
from medsynth_kohya.data.synth import SyntheticSet, make_dataset

LIST = "ISIC_2020_Training_Duplicates.csv"
LISTED = f"(listed in {LIST})"


def _listed(made: SyntheticSet, *pairs: tuple[str, str]) -> None:
    """ISIC 2020's duplicates list beside the metadata, naming `pairs`."""
    (made.root / LIST).write_text(
        "image_name_1,image_name_2\n" + "".join(f"{a},{b}\n" for a, b in pairs),
        encoding="utf-8")


def _reasons(out: Path) -> dict[str, str]:
    """skipped.csv as id -> reason."""
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    return dict(zip(skipped["id"], skipped["reason"], strict=True))


def test_a_chain_through_an_id_without_a_file_still_joins_its_ends(tmp_path: Path) -> None:
    """a ~ b and b ~ c make a and c one photo, even where b's file was never downloaded (a
    --limit, a download cut short): one of them is trained, not both."""
    made = make_dataset(tmp_path / "src", 6, seed=6, melanoma_fraction=1.0)
    ids = sorted(made.frame["image_name"])
    middle, ends = ids[2], (ids[4], ids[1])
    _listed(made, (ends[0], middle), (middle, ends[1]), (ids[5], "ISIC_9999999"))
    (made.images / f"{middle}.jpg").unlink()
    result = prepare(made.root, tmp_path / "out", workers=1)
    assert sorted(result.manifest["id"]) == [ids[0], ids[1], ids[3], ids[5]]
    assert _reasons(tmp_path / "out") == {
        middle: "no image file", ids[4]: f"duplicate image of {ids[1]} {LISTED}"}


def test_the_copy_kept_of_a_listed_pair_is_one_that_reads(tmp_path: Path) -> None:
    """The copy a pair would keep (the first id) is truncated: the other copy is trained in its
    place, not left out as the duplicate of a photo that is itself left out."""
    made = make_dataset(tmp_path / "src", 5, seed=6, melanoma_fraction=1.0)
    ids = sorted(made.frame["image_name"])
    _listed(made, (ids[3], ids[1]), (ids[0], ids[4]))
    broken = made.images / f"{ids[1]}.jpg"
    broken.write_bytes(broken.read_bytes()[:2000])
    result = prepare(made.root, tmp_path / "out", workers=1)
    assert sorted(result.manifest["id"]) == [ids[0], ids[2], ids[3]]
    assert _reasons(tmp_path / "out") == {
        ids[1]: "truncated", ids[4]: f"duplicate image of {ids[0]} {LISTED}"}
    (warning,) = [w for w in result.warnings if "duplicate" in w]
    assert warning.startswith(f"1 selected image duplicates another (1 {LISTED[1:-1]})")


def test_the_preferred_copy_is_kept_whichever_way_the_two_are_known(tmp_path: Path) -> None:
    """evaluate's real set keeps the copy its training set holds (`preferred`), even where its
    twin sorts first: of a listed pair and of identical files alike."""
    import shutil

    from medsynth_kohya.data.duplicates import IDENTICAL, twins
    from medsynth_kohya.data.sources import locate

    made = make_dataset(tmp_path / "src", 5, seed=6, melanoma_fraction=1.0)
    ids = sorted(made.frame["image_name"])
    _listed(made, (ids[0], ids[1]))
    shutil.copy(made.images / f"{ids[3]}.jpg", made.images / f"{ids[2]}.jpg")
    paths = {i: made.images / f"{i}.jpg" for i in ids}
    source = locate(made.root)
    assert twins(paths, source) == (
        {ids[1]: (ids[0], f"listed in {LIST}"), ids[3]: (ids[2], IDENTICAL)}, [])
    assert twins(paths, source, preferred={ids[1], ids[3], ids[4]}) == (
        {ids[0]: (ids[1], f"listed in {LIST}"), ids[2]: (ids[3], IDENTICAL)}, [])


def test_files_of_one_size_are_twins_only_with_the_same_bytes(tmp_path: Path) -> None:
    """Size only narrows the search: two photos of one size and other bytes are two photos."""
    from medsynth_kohya.data.duplicates import IDENTICAL, identical_twins

    contents = {"a": b"same size 1", "b": b"same size 2", "c": b"same size 1", "d": b"other"}
    paths = {name: tmp_path / f"{name}.jpg" for name in contents}
    for name, data in contents.items():
        paths[name].write_bytes(data)
    assert identical_twins(paths) == {"c": ("a", IDENTICAL)}


def test_a_duplicates_list_without_its_columns_is_named_as_an_empty_one_is(
        tmp_path: Path) -> None:
    """A list whose header is not image_name_1, image_name_2 (columns a, b, c) was read by
    position and matched nothing without a word, while an empty one warned."""
    made = make_dataset(tmp_path / "src", 4, seed=6, melanoma_fraction=1.0)
    ids = sorted(made.frame["image_name"])
    (made.root / LIST).write_text(f"a,b,c\n{ids[0]},{ids[1]},x\n", encoding="utf-8")
    result = prepare(made.root, tmp_path / "out", workers=1)
    assert sorted(result.manifest["id"]) == ids
    (warning,) = [w for w in result.warnings if LIST in w]
    assert warning == (f"{made.root / LIST} has no column image_name_1 nor image_name_2 (its "
                       "columns: a, b, c), where ISIC 2020's list pairs the ids of one image "
                       "in image_name_1 and image_name_2: its duplicates are not skipped")
