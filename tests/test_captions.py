"""Captions: the original run's wording, every combination of missing values, bad templates."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.captions import (
    DEFAULT_TEMPLATE,
    caption_values,
    render_caption,
    validate_template,
)
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError

from .conftest import invoke

MISSING = (None, "")


def test_full_caption_matches_the_original_run() -> None:
    values = {"sex": "male", "site": "torso", "age": "70", "trigger": "me1anoma", "hair": "hairy"}
    assert render_caption(DEFAULT_TEMPLATE, values) == (
        "photo of male skin, me1anoma on torso, at age 70, hairy")


@pytest.mark.parametrize(("sex", "site", "age", "hair"), list(itertools.product(
    ("female", *MISSING), ("lower extremity", *MISSING), ("45", *MISSING), ("hairy", None))))
def test_missing_values_drop_their_clause(sex: str | None, site: str | None, age: str | None,
                                          hair: str | None) -> None:
    caption = render_caption(DEFAULT_TEMPLATE, {"sex": sex, "site": site, "age": age,
                                                "trigger": "me1anoma", "hair": hair})
    assert "me1anoma" in caption
    for bad in ("nan", "None", "at age ,", ",,", ", ,", "  ", " on,", "of  "):
        assert bad not in caption
    assert not caption.endswith(("at age", " on", ",", " ")) and not caption.startswith(",")
    assert ("female" in caption) == bool(sex)
    assert ("on lower extremity" in caption) == bool(site)
    assert ("at age 45" in caption) == bool(age)
    assert caption.endswith(", hairy") == bool(hair)
    assert caption.startswith("photo of ")


def test_everything_missing_keeps_photo_and_trigger() -> None:
    assert render_caption(DEFAULT_TEMPLATE, {"trigger": "me1anoma"}) == "photo of skin, me1anoma"


def test_custom_template_and_hair_placement() -> None:
    template = "{hair} dermoscopy, {trigger}, {age} years old, {sex}"
    values = {"trigger": "mel0", "age": None, "sex": "female", "hair": "hairy"}
    assert render_caption(template, values) == "hairy dermoscopy, mel0, female"


@pytest.mark.parametrize("template", ["photo of {sex} skin", "{trigger} {colour}",
                                      "{trigger} {age:>3}", "{trigger"])
def test_bad_templates_are_user_errors(template: str) -> None:
    with pytest.raises(UserError):
        validate_template(template)


def test_a_row_becomes_its_placeholder_values() -> None:
    assert caption_values("male", 70, "posterior torso", "me1anoma", True, "tan",
                          ["ruler", "vignette"]) == {
        "sex": "male", "age": "70", "site": "posterior torso", "trigger": "me1anoma",
        "hair": "hairy", "tone": "tan", "artefacts": "dark corners, ruler marks"}
    assert caption_values(None, None, None, "sks", False) == {
        "sex": None, "age": None, "site": None, "trigger": "sks", "hair": None, "tone": None,
        "artefacts": None}


def test_age_zero_and_an_unlisted_site_are_kept() -> None:
    values = caption_values("female", 0, "acral", "me1anoma", False, None, ["bubbles"])
    template = "{tone} photo of {sex} skin, {trigger} on {site}, at age {age}, {artefacts}"
    assert render_caption(template, values) == (
        "photo of female skin, me1anoma on acral, at age 0, gel bubbles")


@pytest.mark.parametrize(("template", "caption"), [
    ("{trigger} seen from the {site}", "me1anoma seen"),
    ("{trigger} on {site} , at age {age}", "me1anoma"),
    ("{trigger}, of the {site} at", "me1anoma"),
    ("{trigger}\ton {site}", "me1anoma"),
    ("{trigger} on\n{site}", "me1anoma"),
    ("{trigger} upon {site}", "me1anoma upon"),
    ("{trigger} ON THE {site}", "me1anoma"),
])
def test_linking_words_go_with_a_missing_value_and_nothing_else(template: str,
                                                                caption: str) -> None:
    assert render_caption(template, {"trigger": "me1anoma"}) == caption


@pytest.mark.parametrize(("template", "needles"), [
    ("{trigger", ("'{trigger' is malformed",
                  "use {field} placeholders and {{ }} for literal braces")),
    ("{trigger} {colour}", ("{colour} is unknown",
                            "use {sex}, {site}, {age}, {trigger}, {hair}, {tone}, {artefacts}")),
    ("{sex} skin", ("'{sex} skin' has no {trigger}",
                    ": every caption must carry the trigger token")),
])
def test_a_bad_template_is_one_line_saying_how_to_fix_it(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, template: str,
        needles: tuple[str, ...]) -> None:
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o",
                                  "--caption-template", template)
    lines = stderr.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "Traceback" not in stdout + stderr
    for needle in needles:
        assert needle in lines[0]
    assert lines[0].endswith(needles[-1])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("template", "values", "caption"), [
    ("photo of {sex} skin with {trigger} on {site} at age {age}", {"sex": "male", "age": "35"},
     "photo of male skin with me1anoma at age 35"),
    ("{trigger}, {sex} patient aged {age} on the {site}", {"sex": "male", "site": "torso"},
     "me1anoma, male patient on the torso"),
    ("{trigger} ({sex}, {age})", {"sex": "male"}, "me1anoma (male)"),
    ("{trigger} ({sex}, {age})", {"age": "35"}, "me1anoma (35)"),
    ("{trigger} ({sex}, {age})", {}, "me1anoma"),
    ("{trigger} [{tone}] on {site}", {"site": "torso"}, "me1anoma on torso"),
    ("{trigger}, {age}-year-old {sex}", {"sex": "female"}, "me1anoma, female"),
    ("{trigger}, {age}-year-old {sex}", {"age": "40", "sex": "female"},
     "me1anoma, 40-year-old female"),
    ("{trigger}; site: {site}; tone: {tone}", {"site": "torso"}, "me1anoma; site: torso"),
    ("{trigger}; site: {site}; tone: {tone}", {"tone": "tan"}, "me1anoma; tone: tan"),
    ("{trigger}; {sex}, {age}", {"age": "35"}, "me1anoma, 35"),
    ("{trigger} (at age {age})", {}, "me1anoma"),
    ("{trigger} (age {age}, {sex})", {"sex": "male"}, "me1anoma (male)"),
    ("{trigger} (on {site}, at age {age})", {"age": "35"}, "me1anoma (at age 35)"),
    ("{trigger} [on {site}] at age {age}", {"age": "35"}, "me1anoma at age 35"),
    ("{trigger} (tone: {tone})", {}, "me1anoma"),
    ("{trigger} (tone: {tone}) on {site}", {"site": "torso"}, "me1anoma on torso"),
])
def test_a_missing_value_inside_a_clause_leaves_no_dangling_words(
        template: str, values: dict[str, str], caption: str) -> None:
    """Linking words before a missing value go when another linking phrase or the clause's
    end follows it; so do a label before it, text glued to it and brackets left empty."""
    assert render_caption(template, {"trigger": "me1anoma", **values}) == caption


@pytest.mark.parametrize(("template", "needle"), [
    ("{trigger} {sex!r}", "{sex} has a conversion or format (!r), which captions do not take; "
                          "write {sex}"),
    ("{trigger} {age:>5}", "{age} has a conversion or format (:>5), which captions do not "
                           "take; write {age}")])
def test_a_placeholder_with_a_format_is_named_as_such(template: str, needle: str) -> None:
    with pytest.raises(UserError, match=re.escape(needle)):
        validate_template(template)
