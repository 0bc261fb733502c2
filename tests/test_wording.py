"""How summaries word figures: a count meets its noun in the right number, and a share is one
percent figure (one decimal, half up) in the evaluation report and in the model card alike."""

from __future__ import annotations

from collections import Counter

from medsynth_kohya import files
from medsynth_kohya.data.measure import Measurement
from medsynth_kohya.evaluation.adherence import Prompted, adherence
from medsynth_kohya.hub import card


def _photo(hairy: bool) -> Measurement:
    return Measurement(0.0, hairy, 50.0, "light", False, False, False)


def test_counts_and_percents() -> None:
    assert [files.counted(k, "image") for k in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert [files.percent(k, 8) for k in (1, 3, 8)] == ["12.5 %", "37.5 %", "100.0 %"]
    assert files.percent(1, 16) == "6.3 %" and files.percent(0.625) == "62.5 %"
    assert [files.agreeing(k, word) for k in (0, 1, 2) for word in ("is", "was", "has", "it")] == [
        "are", "were", "have", "them", "is", "was", "has", "it", "are", "were", "have", "them"]


def test_the_report_and_the_card_write_a_share_alike() -> None:
    """1/8 and 3/8 of the photos: 12.5 % and 37.5 % in evaluate's adherence table and in the
    card's share tables (the report rounded half to even: 12 % and 38 %)."""
    for hairy in (1, 3):
        photos = [_photo(i < hairy) for i in range(8)]
        table = dict(adherence(photos, photos, [Prompted(None, None)] * 8)["table"])
        shown = card._share_table("hairy", Counter({"yes": hairy, "no": 8 - hairy}),
                                  ["yes"], 8)
        share = files.percent(hairy, 8)
        assert table["hairy"][:2] == [f"{hairy}/8 ({share})"] * 2
        assert f"| yes | {hairy} | {share} |" in shown
