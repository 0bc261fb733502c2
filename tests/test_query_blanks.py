"""A blank value (a photo whose skin tone could not be measured, an empty metadata cell) matches
no comparison: neither `==` nor `!=`, `in` nor `not in`, `<` nor `>`, in any column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medsynth_kohya.data import manifest, query
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke


def _frame() -> pd.DataFrame:
    """One row with a value in every column, one blank in every column, of each kind of dtype
    prepare and sample read: nullable, numpy float, object text."""
    frame: pd.DataFrame = pd.DataFrame({
        "tone": pd.array(["light", None], dtype="string"),
        "ita": pd.array([40.0, None], dtype="Float64"), "age": [50.0, float("nan")],
        "site": ["torso", None], "hairy": pd.array([False, None], dtype="boolean")})
    return frame


@pytest.mark.parametrize("text", [
    'tone != "dark"', 'tone == "light"', '"dark" != tone', 'tone not in ["dark"]',
    'tone in ["light"]', "ita != 3", "ita < 55", "ita > 3", "age != 3", "age >= 50",
    'site != "head"', 'site not in ["head", "neck"]', "ita + 1 > 3", 'tone.str.len() != 1',
    'not (tone == "dark")', '~(site == "head")', "not hairy", "hairy != True",
    "3 < ita < 55", 'tone != "dark" & site != "head"', 'tone != "dark" or age > 90',
    'tone != "dark" & tone.notna()'])
def test_a_blank_matches_no_comparison(text: str) -> None:
    assert query.evaluate(_frame(), text, example="age > 50").tolist() == [True, False]


@pytest.mark.parametrize(("text", "expected"), [
    ("tone.isna()", [False, True]), ("tone.notna()", [True, False]),
    ('tone.isna() or tone != "dark"', [True, True]), ('tone == "dark"', [False, False]),
    ('age > 90 or tone.isna()', [False, True])])
def test_a_blank_is_still_found_by_isna(text: str, expected: list[bool]) -> None:
    assert query.evaluate(_frame(), text, example="age > 50").tolist() == expected


def _greyed(made: SyntheticSet) -> list[str]:
    """Make two of `made`'s photos greyscale (no skin tone can be measured); their ids."""
    ids = sorted(str(i) for i in made.frame["image_name"])[3:5]
    for identifier in ids:
        jpeg = made.images / f"{identifier}.jpg"
        Image.open(jpeg).convert("L").save(jpeg)
    return ids


def test_prepare_leaves_a_photo_with_no_skin_tone_out_of_a_not_equal(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    grey = _greyed(isic2020)
    everything = prepare(isic2020.root, tmp_path / "all", workers=1).manifest
    assert everything.set_index("id").loc[grey, "skin_tone"].isna().all()
    for at, text in enumerate(['skin_tone != "dark"', 'skin_tone not in ["dark", "brown"]',
                               'not (skin_tone == "dark")']):
        kept = prepare(isic2020.root, tmp_path / f"q{at}", workers=1,
                       options=PrepareOptions(query=text)).manifest
        assert sorted(kept["id"]) == sorted(set(everything["id"]) - set(grey)), text


def test_the_cli_leaves_a_photo_with_no_skin_tone_out_of_a_not_equal(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path) -> None:
    grey = _greyed(isic2020)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "out",
                                  "--workers", 1, "--query", 'skin_tone != "dark"')
    assert code == 0, stderr
    kept = set(manifest.read(tmp_path / "out" / "manifest.csv")["id"])
    assert not kept & set(grey) and len(kept) == len(isic2020.frame) - 2
    assert "left out by --query on measurements │ 2" in stdout
