"""The hair detectors' scores on the 7 real seed photos, pinned with a tolerance.

A change that moves every score passes the tag checks on these photos but changes the tags on
other data; a pinned score catches it. The tolerance absorbs JPEG decoder and OpenCV build
differences (a few tenths of a percent), not a change of method or threshold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth_kohya.data import hair
from medsynth_kohya.data.hair import HairMode
from medsynth_kohya.data.images import scan
from medsynth_kohya.data.prepare import PrepareOptions, prepare

# id: (width, height, auto score in long sides, seed score in full-resolution pixels),
# measured with OpenCV 4.14.0 on /work/shared/seed/malignant_images. The auto scores are those
# of the issue-12 detector (data/measure.py): it finds ISIC_4874581's three strands of hair,
# which the original caption did not tag. Crossing hairs are measured whole (their crossings
# are not cut out as thick cores), so the hairy photos score about twice what they did.
PINNED = {
    "ISIC_4525317": (3264, 2448, 7.3751, 21219.3589),
    "ISIC_4619789": (2592, 1936, 0.0, 0.0),
    "ISIC_4649440": (640, 480, 2.6345, 2835.4428),
    "ISIC_4676270": (2592, 1936, 0.0, 0.0),
    "ISIC_4810142": (5184, 3456, 0.0, 9123.3358),
    "ISIC_4842587": (3264, 2448, 0.0, 292.1076),
    "ISIC_4874581": (3264, 2448, 0.5284, 6506.5511),
}
TOLERANCE = {HairMode.auto: (0.02, 0.01), HairMode.seed: (0.01, 1.0)}
"""(relative, absolute) tolerance of each detector's score."""


def _near(expected: float, mode: HairMode) -> object:
    relative, absolute = TOLERANCE[mode]
    return pytest.approx(expected, rel=relative, abs=absolute)


def _photo(seed_images: Path, identifier: str) -> str:
    return str(seed_images / f"{identifier}.jpg")


@pytest.mark.parametrize("identifier", sorted(PINNED))
def test_auto_scores_are_pinned(seed_images: Path, identifier: str) -> None:
    width, height, expected, _ = PINNED[identifier]
    result = scan(_photo(seed_images, identifier), HairMode.auto)
    assert (result.reason, result.kind, result.width, result.height) == ("", "jpeg", width,
                                                                        height)
    assert result.hair_score == _near(expected, HairMode.auto)


@pytest.mark.parametrize("identifier", sorted(PINNED))
def test_seed_scores_are_pinned(seed_images: Path, identifier: str) -> None:
    width, height, _, expected = PINNED[identifier]
    result = scan(_photo(seed_images, identifier), HairMode.seed)
    assert (result.width, result.height) == (width, height)
    assert result.hair_score == _near(expected, HairMode.seed)


def test_tags_follow_each_detectors_cut_off() -> None:
    auto = {i: hair.is_hairy(v[2], HairMode.auto) for i, v in PINNED.items()}
    seed = {i: hair.is_hairy(v[3], HairMode.seed) for i, v in PINNED.items()}
    assert sorted(i for i, tag in auto.items() if tag) == ["ISIC_4525317", "ISIC_4649440",
                                                           "ISIC_4874581"]
    assert sorted(i for i, tag in seed.items() if tag) == ["ISIC_4525317", "ISIC_4810142",
                                                           "ISIC_4874581"]
    assert not hair.is_hairy(hair.AUTO_THRESHOLD, HairMode.auto)
    assert hair.is_hairy(hair.AUTO_THRESHOLD + 1e-4, HairMode.auto)
    assert not hair.is_hairy(hair.SEED_THRESHOLD, HairMode.seed)
    assert hair.is_hairy(hair.SEED_THRESHOLD + 1e-4, HairMode.seed)
    assert not hair.is_hairy(hair.AUTO_THRESHOLD + 1, HairMode.seed)


@pytest.mark.parametrize("mode", [HairMode.auto, HairMode.seed])
def test_prepare_records_the_pinned_scores(seed_images: Path, tmp_path: Path,
                                           mode: HairMode) -> None:
    """The same figures reach the manifest and the captions through `prepare`."""
    import pandas as pd

    ids = sorted(PINNED)
    pd.DataFrame({"image_name": ids, "patient_id": [f"IP_{i}" for i in range(len(ids))],
                  "sex": "male", "age_approx": 60, "anatom_site_general_challenge": "torso",
                  "target": 1}).to_csv(tmp_path / "train.csv", index=False)
    result = prepare(None, tmp_path / "out", metadata=tmp_path / "train.csv",
                     images=seed_images, options=PrepareOptions(hair=mode), workers=1)
    column = 2 if mode is HairMode.auto else 3
    table = result.manifest.set_index("id")
    for identifier, values in PINNED.items():
        assert float(table.loc[identifier, "hair_score"]) == _near(values[column], mode)
        hairy = hair.is_hairy(values[column], mode)
        assert bool(table.loc[identifier, "hairy"]) == hairy
        assert str(table.loc[identifier, "caption"]).endswith(", hairy") == hairy
