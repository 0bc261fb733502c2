"""Sample planning on its own: which manifest row each image gets, its prompt, line and checks."""

from __future__ import annotations

import pandas as pd
import pytest

from medsynth_kohya.data import captions
from medsynth_kohya.data.captions import DEFAULT_TEMPLATE
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.prompts import Settings

MASK = (1 << 64) - 1


def splitmix64(seed: int, index: int) -> int:
    """The reference splitmix64 output for the state seed + (index + 1) x golden gamma."""
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**40 + 3, 2**64 - 1])
@pytest.mark.parametrize("rows", [1, 7, 584])
def test_rows_follow_splitmix64(seed: int, rows: int) -> None:
    chosen = prompts.rows_for(seed, 50, rows).tolist()
    assert chosen == [splitmix64(seed, i) % rows for i in range(50)]
    assert prompts.rows_for(seed, 20, rows).tolist() == chosen[:20]  # never depends on count


def test_rows_are_spread_over_the_manifest() -> None:
    chosen = prompts.rows_for(0, 7000, 7).tolist()
    counts = [chosen.count(row) for row in range(7)]
    assert min(counts) > 850 and max(counts) < 1150


def _table() -> pd.DataFrame:
    table: pd.DataFrame = pd.DataFrame({
        "sex": pd.array(["male", "female", None, "female"], dtype="string"),
        "age": pd.array([70, None, 45, 30], dtype="Int64"),
        "site": pd.array(["torso", "head/neck", "torso", None], dtype="string"),
        "hairy": [True, False, False, True],
    })
    return table


def test_draw_renders_each_row_with_the_template() -> None:
    table = _table()
    drawn = prompts.draw(table, 40, 3, DEFAULT_TEMPLATE, "me1anoma")
    rows = prompts.rows_for(3, 40, 4).tolist()
    expected = {
        0: ("photo of male skin, me1anoma on torso, at age 70, hairy", "male", 70, "torso", True),
        1: ("photo of female skin, me1anoma on head/neck", "female", None, "head/neck", False),
        2: ("photo of skin, me1anoma on torso, at age 45", None, 45, "torso", False),
        3: ("photo of female skin, me1anoma, at age 30, hairy", "female", 30, None, True),
    }
    assert len(drawn) == 40
    for index, row in enumerate(rows):
        text, sex, age, site, hairy = expected[row]
        assert (drawn.prompts[index], drawn.sex[index], drawn.age[index], drawn.site[index],
                drawn.hairy[index]) == (text, sex, age, site, hairy)
    assert set(rows) == {0, 1, 2, 3}


def test_draw_renders_skin_tone_and_artefacts() -> None:
    """A row's skin tone and the artefacts it shows go into its prompt and the image's
    record; a missing tone is none, a missing flag is no artefact."""
    table = _table().assign(
        skin_tone=pd.array(["light", None, "dark", "tan"], dtype="string"),
        vignette=pd.array([True, None, False, True], dtype="boolean"),
        ruler=pd.array([False, False, True, True], dtype="boolean"),
        bubbles=pd.array([None, False, True, False], dtype="boolean"))
    template = "photo of {tone} skin, {trigger}, {artefacts}"
    values = {0: ("male", 70, "torso", True, "light", ("vignette",)),
              1: ("female", None, "head/neck", False, None, ()),
              2: (None, 45, "torso", False, "dark", ("ruler", "bubbles")),
              3: ("female", 30, None, True, "tan", ("vignette", "ruler"))}
    drawn = prompts.draw(table, 40, 3, template, "me1anoma")
    for index, row in enumerate(prompts.rows_for(3, 40, 4).tolist()):
        sex, age, site, hairy, tone, artefacts = values[row]
        assert drawn.prompts[index] == captions.render_caption(template, captions.caption_values(
            sex, age, site, "me1anoma", hairy, tone, artefacts))
        assert drawn.skin_tone[index] == tone
    assert "photo of dark skin, me1anoma, ruler marks, gel bubbles" in drawn.prompts


def test_draw_refuses_what_cannot_be_drawn() -> None:
    with pytest.raises(UserError, match=r"^the manifest has no rows to draw prompts from$"):
        prompts.draw(_table().iloc[:0], 3, 0, DEFAULT_TEMPLATE, "me1anoma")
    with pytest.raises(UserError, match="trigger"):
        prompts.draw(_table(), 3, 0, "photo of {sex} skin", "me1anoma")
    with pytest.raises(UserError, match=r"^the caption drawn from .* dynamic-prompt"):
        prompts.draw(_table(), 3, 0, DEFAULT_TEMPLATE, "{me1anoma}")


def test_repeat_cycles_the_given_prompts() -> None:
    drawn = prompts.repeat(["a", "b", "c"], 7)
    assert drawn.prompts == ["a", "b", "c", "a", "b", "c", "a"]
    blank: list[object] = [None] * 7
    assert [drawn.sex, drawn.age, drawn.site, drawn.hairy, drawn.skin_tone] == [blank] * 5
    assert prompts.repeat(["x"], 0).prompts == []
    with pytest.raises(UserError, match=r"^no prompts given$"):
        prompts.repeat([], 3)


EMPTY, LINES = "is empty", "spans several lines"
COMMENT = "starts with '#' (a comment in sd-scripts' prompt files)"
OPTION = "holds ' --', which sd-scripts reads as a prompt option"
VARIANTS = "holds { or }, which sd-scripts reads as dynamic-prompt variants"


@pytest.mark.parametrize(("text", "problem"), [
    ("", EMPTY), ("   ", EMPTY), ("a\nb", LINES), ("a\rb", LINES), ("a\x0bb", LINES),
    ("a\x0cb", LINES), ("a\x85b", LINES), ("a\u2028b", LINES), ("a\u2029b", LINES),
    ("a\x1cb", LINES), ("ugly, bad\x0b", LINES), ("# note", COMMENT),
    ("  #x", COMMENT), ("photo --n x", OPTION), ("--w 5", OPTION), ("a {b|c}", VARIANTS),
    ("a } b", VARIANTS), ("a { b", VARIANTS), ("a mole " * 20 + "--n x", OPTION),
])
def test_check_prompt_refuses(text: str, problem: str) -> None:
    """One line: where, what is wrong, and the prompt's first 80 characters."""
    with pytest.raises(UserError) as caught:
        prompts.check_prompt(text, "the prompt")
    assert str(caught.value) == f"the prompt {problem}: {text[:80]!r}"


@pytest.mark.parametrize("text", ["photo of skin, me1anoma", "a-b - c?", "a #1 mole", "x--y"])
def test_check_prompt_accepts(text: str) -> None:
    prompts.check_prompt(text, "the prompt")


@pytest.mark.parametrize(("value", "text"), [(12, "12"), (7.5, "7.5"), (12.0, "12"),
                                             (0.1, "0.1"), (1e-7, "0.0000001"),
                                             (2.25, "2.25"), (1e-12, "0")])
def test_format_number(value: float, text: str) -> None:
    assert prompts.format_number(value) == text


def test_prompt_line() -> None:
    settings = Settings("blurry, lowres", width=832, height=1216, steps=30, scale=7.5)
    assert prompts.prompt_line("photo of skin, me1anoma", settings, 42) == (
        "photo of skin, me1anoma --n blurry, lowres --w 832 --h 1216 --s 30 --l 7.5 --d 42")


@pytest.mark.parametrize(("changes", "needle"), [
    ({"width": 63}, "--width 63"), ({"width": 1020}, "--width 1020"),
    ({"height": 56}, "--height 56"), ({"steps": 0}, "--steps 0"), ({"steps": 1001}, "--steps"),
    ({"scale": -1.0}, "--scale"), ({"scale": float("nan")}, "--scale"),
    ({"scale": float("inf")}, "--scale"),
    ({"negative_prompt": "a --b"}, r"^the negative prompt holds"),
])
def test_check_settings_refuses(changes: dict[str, object], needle: str) -> None:
    settings = Settings(**{"negative_prompt": "blurry", **changes})  # type: ignore[arg-type]
    with pytest.raises(UserError, match=needle):
        prompts.check_settings(settings)


@pytest.mark.parametrize("changes", [{}, {"width": 64, "height": 64}, {"steps": 1},
                                     {"steps": 1000}, {"scale": 0.0}, {"negative_prompt": ""},
                                     {"negative_prompt": "   "}])
def test_check_settings_accepts(changes: dict[str, object]) -> None:
    prompts.check_settings(Settings(**{"negative_prompt": "blurry", **changes}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "said"), [
    ({"width": 1000}, "--width 1000 must be a multiple of 32 (as SDXL's UNet needs) from 64 to "
                      "4096: use 992 or 1024"),
    ({"height": 1016}, "--height 1016 must be a multiple of 32 (as SDXL's UNet needs) from 64 "
                       "to 4096: use 992 or 1024"),
    ({"width": 40}, "--width 40 must be a multiple of 32 (as SDXL's UNet needs) from 64 to "
                    "4096: use 64"),
])
def test_a_size_the_sdxl_unet_cannot_take_is_refused_with_the_nearest(
        changes: dict[str, object], said: str) -> None:
    """1000 or 1016 pass sd-scripts' multiple-of-8 check, then crash in the UNet's torch.cat."""
    with pytest.raises(UserError) as refused:
        prompts.check_settings(Settings(**{"negative_prompt": "", **changes}))  # type: ignore[arg-type]
    assert str(refused.value) == said
    prompts.check_settings(Settings("", width=992, height=1024))


def test_trainings_sample_images_have_sides_the_unet_takes() -> None:
    """train writes its sample prompts at the training resolution, which may be 1000."""
    table = prompts.training_document(_table(), DEFAULT_TEMPLATE, "me1anoma", (1000, 1016),
                                      4)["prompt"]
    assert (table["width"], table["height"]) == (992, 992)


def test_original_settings_and_the_training_document() -> None:
    original = prompts.original_settings()
    assert (original.width, original.height, original.steps, original.scale,
            original.sampler) == (1024, 1024, 28, 12, "euler_a")
    assert original.negative_prompt.startswith("(worst quality, low quality")  # 2023's
    document = prompts.training_document(_table(), DEFAULT_TEMPLATE, "me1anoma", (832, 1216),
                                         4, seed=9)
    assert prompts.training_document(_table(), DEFAULT_TEMPLATE, "me1anoma", (832, 1216), 4,
                                     ) == prompts.training_document(
        _table(), DEFAULT_TEMPLATE, "me1anoma", (832, 1216), 4, seed=0)  # seed 0 unless given
    table = document["prompt"]
    assert (table["width"], table["height"], table["scale"]) == (832, 1216, 12)
    drawn = prompts.draw(_table(), 64, 9, DEFAULT_TEMPLATE, "me1anoma")
    subset = table["subset"]
    assert len(subset) == 4 == len({entry["prompt"] for entry in subset})
    for entry in subset:  # each distinct prompt with the seed of its first image
        index = entry["seed"] - 9
        assert drawn.prompts[index] == entry["prompt"]
        assert entry["prompt"] not in drawn.prompts[:index]
    empty = prompts.training_document(_table().iloc[:0], DEFAULT_TEMPLATE, "me1anoma",
                                      (1024, 1024), 4)
    assert empty["prompt"]["subset"] == []
