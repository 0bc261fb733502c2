"""evaluation.adherence: what a synthetic image's prompt asked for, and how the measurements
of the images are compared with it and spread over each set."""

from __future__ import annotations

import pytest

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


def test_every_row_and_figure_counts_the_measurements_it_names() -> None:
    """Random measurements and prompts: each tone's and artefact's row, the hair confusion and
    both spreads are the counts of the measurements, as the report shows them."""
    import random
    from collections import Counter

    from medsynth_kohya.data.measure import ARTEFACTS, TONES
    from medsynth_kohya.files import percent

    draw = random.Random(11)
    names = [name for name, _ in TONES]

    def measured(count: int) -> list[Measurement]:
        tones = [draw.choice([*names, None]) for _ in range(count)]
        return [Measurement(draw.random(), draw.random() < 0.4,
                            None if tone is None else draw.uniform(-40, 60), tone,
                            *(draw.random() < 0.3 for _ in ARTEFACTS)) for tone in tones]

    def rate(values: list[bool]) -> str:
        return f"{sum(values)}/{len(values)} ({percent(sum(values), len(values))})"

    real, synthetic = measured(40), measured(30)
    prompted = [Prompted(draw.choice([True, False, None]), draw.choice([*names, None]))
                for _ in synthetic]
    figures = adherence(real, synthetic, prompted)
    table = dict(figures["table"])
    for name in names:
        shares = [rate([m.skin_tone == name for m in side if m.skin_tone])
                  for side in (real, synthetic)]
        assert table[f"skin tone: {name}"] == [*shares, ""]
    for artefact in ARTEFACTS:
        assert table[artefact] == [rate([getattr(m, artefact) for m in side])
                                   for side in (real, synthetic)] + [""]
    hair = [(p.hairy, m.hairy) for p, m in zip(prompted, synthetic, strict=True)
            if p.hairy is not None]
    tone = [(p.skin_tone, m.skin_tone) for p, m in zip(prompted, synthetic, strict=True)
            if p.skin_tone is not None]
    agree = sum(a == b for a, b in hair)
    assert table["hairy"] == [rate([m.hairy for m in real]), rate([m.hairy for m in synthetic]),
                              f"{agree}/{len(hair)}"]
    assert table["skin tone as prompted"] == ["", "", f"{sum(a == b for a, b in tone)}/"
                                                      f"{len(tone)}"]
    assert list(table) == ["hairy", *(f"skin tone: {n}" for n in names),
                           "skin tone as prompted", *ARTEFACTS]
    words = {True: ("hairy", "found"), False: ("bare", "not found")}
    assert figures["hair"] == {"agreement": agree / len(hair), "n_prompted": len(hair),
                               "confusion": dict(Counter(
                                   f"prompted {words[p][0]}, {words[f][1]}" for p, f in hair))}
    assert figures["skin_tone"] == {"agreement": sum(a == b for a, b in tone) / len(tone),
                                    "n_prompted": len(tone)}
    for side, spread in ((real, figures["real"]), (synthetic, figures["synthetic"])):
        assert spread == {
            "n": len(side), "hairy": sum(m.hairy for m in side) / len(side),
            "skin_tone": dict(Counter(m.skin_tone or "unknown" for m in side)),
            "ita": [m.ita for m in side],
            **{a: sum(getattr(m, a) for m in side) / len(side) for a in ARTEFACTS}}


def test_nothing_measured_or_prompted_is_a_dash_and_zero_rates() -> None:
    figures = adherence([], [_measured(True, "tan")], [Prompted()])
    table = dict(figures["table"])
    assert table["hairy"] == ["-", "1/1 (100.0 %)", "-"]
    assert table["skin tone: tan"][0] == "-" and table["ruler"][0] == "-"
    assert figures["hair"] == {"agreement": None, "n_prompted": 0, "confusion": {}}
    assert figures["skin_tone"] == {"agreement": None, "n_prompted": 0}
    assert figures["real"] == {"n": 0, "hairy": 0.0, "skin_tone": {}, "ita": [],
                               "vignette": 0.0, "ruler": 0.0, "bubbles": 0.0}
    assert figures["method"].startswith("Every ") and figures["method"].endswith(".")


def test_a_prompt_for_each_synthetic_image_or_a_refusal() -> None:
    with pytest.raises(ValueError, match="zip"):
        adherence([], [_measured(True, "tan")] * 2, [Prompted(True, "tan")])
