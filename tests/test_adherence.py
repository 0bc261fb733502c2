"""evaluation.adherence: what a synthetic image's prompt asked for, and how the measurements
of the images are compared with it and spread over each set."""

from __future__ import annotations

from medsynth_kohya.data.measure import Measurement
from medsynth_kohya.evaluation.adherence import Prompted, adherence, asked_for


def _measured(hairy: bool, tone: str | None, ruler: bool = False) -> Measurement:
    return Measurement(0.0, hairy, None if tone is None else 30.0, tone, False, ruler, False)


def test_a_tone_is_asked_for_only_where_the_prompt_names_it() -> None:
    assert asked_for("photo of very light skin, me1anoma", None, "very light").skin_tone == (
        "very light")
    assert asked_for("photo of Tan skin, me1anoma", None, "tan").skin_tone == "tan"
    assert asked_for("photo of skin, me1anoma", None, "tan").skin_tone is None
    assert asked_for("photo of light skin, me1anoma", None, None).skin_tone is None


def test_dark_corners_name_no_dark_skin() -> None:
    """The artefact words of a caption ("dark corners") are not the tone "dark"."""
    prompt = "photo of skin, me1anoma on torso, dark corners"
    assert asked_for(prompt, None, "dark").skin_tone is None
    assert asked_for(prompt.replace("of skin", "of dark skin"), None, "dark").skin_tone == "dark"


def test_hair_is_asked_for_by_its_tag_and_a_bare_row_by_leaving_it_out() -> None:
    assert asked_for("photo of skin, me1anoma, hairy", True, None).hairy is True
    assert asked_for("photo of skin, me1anoma", False, None).hairy is False
    assert asked_for("photo of skin, me1anoma", True, None).hairy is None  # template without it
    assert asked_for("photo of skin, me1anoma, hairyness", True, None).hairy is None
    assert asked_for("photo of skin, me1anoma", None, None) == Prompted(None, None)


def test_agreement_counts_only_what_was_asked_for_and_names_each_miss() -> None:
    synthetic = [_measured(True, "light"), _measured(False, "light"), _measured(True, "tan"),
                 _measured(False, None)]
    prompted = [Prompted(True, "light"), Prompted(True, "tan"), Prompted(None, "tan"),
                Prompted(False, None)]
    figures = adherence([_measured(True, "light")], synthetic, prompted)
    assert figures["hair"] == {"agreement": 2 / 3, "n_prompted": 3, "confusion": {
        "prompted hairy, found": 1, "prompted hairy, not found": 1,
        "prompted bare, not found": 1}}
    assert figures["skin_tone"] == {"agreement": 2 / 3, "n_prompted": 3}
    table = dict(figures["table"])
    assert table["hairy"] == ["1/1 (100.0 %)", "2/4 (50.0 %)", "2/3"]
    assert table["skin tone as prompted"] == ["", "", "2/3"]


def test_tone_shares_leave_out_images_without_skin_and_the_spread_counts_them() -> None:
    real = [_measured(False, "light", ruler=True), _measured(False, None),
            _measured(True, "tan")]
    figures = adherence(real, real[:1], [Prompted()])
    assert dict(figures["table"])["skin tone: light"][:2] == ["1/2 (50.0 %)", "1/1 (100.0 %)"]
    spread = figures["real"]
    assert spread["skin_tone"] == {"light": 1, "unknown": 1, "tan": 1}
    assert (spread["n"], spread["hairy"], spread["ruler"]) == (3, 1 / 3, 1 / 3)
    assert spread["ita"] == [30.0, None, 30.0]
    assert figures["synthetic"]["n"] == 1 and "skin tone as prompted" not in dict(
        figures["table"])
