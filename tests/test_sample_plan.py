"""`sample`'s plan on its own: its options' checks, the generation settings, and where the
prompts come from (--prompt, --prompts FILE, --like MANIFEST with --query) with what identifies
them on a re-run. The CLI runs of the same checks are in test_sample.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from medsynth_kohya import files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.captions import DEFAULT_TEMPLATE
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import plan, prompts
from medsynth_kohya.sampling.lora import Captions
from medsynth_kohya.sampling.plan import (
    SampleOptions,
    check_options,
    generation_settings,
    prompt_source,
)
from medsynth_kohya.training.record import DatasetRecord, RunRecord

TRIGGER = "me1anoma"
NAMES = Captions(DEFAULT_TEMPLATE, TRIGGER, None, known=True)


def _manifest(path: Path, sexes: tuple[str, ...] = ("male", "female", "female")) -> Path:
    """A prepare manifest of one image per sex given (ages 40, 41…, torso, every other one
    hairy)."""
    count = len(sexes)
    frame = pd.DataFrame({
        "id": [f"ISIC_{i:07d}" for i in range(count)], "source": ["/data/x.jpg"] * count,
        "patient_id": [None] * count, "sex": list(sexes), "age": [40 + i for i in range(count)],
        "site": ["torso"] * count, "hairy": [i % 2 == 0 for i in range(count)],
        "hair_score": [None] * count, "caption": ["c"] * count, "width": [64] * count,
        "height": [64] * count, "split": ["train"] * count})
    manifest.write(manifest.conform(frame), path)
    return path


def _refused(options: SampleOptions, n: int | None = None, record: RunRecord | None = None,
             ) -> str:
    with pytest.raises(UserError) as caught:
        prompt_source(options, n, record, NAMES)
    return str(caught.value)


@pytest.mark.parametrize(("options", "message"), [
    (SampleOptions(n=0), "--n must be 1 to 10,000,000 (got 0)"),
    (SampleOptions(num_gpus=0), "--num-gpus must be at least 1 (got 0)"),
    (SampleOptions(id_prefix="A/B"), "--id-prefix 'A/B' must be letters, digits, '_' or '-'"),
    (SampleOptions(id_prefix="_x"), "--id-prefix '_x' must be letters, digits, '_' or '-'"),
    (SampleOptions(id_prefix=""), "--id-prefix '' must be letters, digits, '_' or '-'"),
    (SampleOptions(id_prefix="SYN\n"),  # `$` alone lets a last line break through
     "--id-prefix 'SYN\\n' must be letters, digits, '_' or '-'"),
])
def test_bad_options_are_refused_with_what_to_give(options: SampleOptions, message: str) -> None:
    with pytest.raises(UserError) as caught:
        check_options(options)
    assert str(caught.value) == message


def test_an_unknown_sampler_lists_the_choices() -> None:
    with pytest.raises(UserError) as caught:
        check_options(SampleOptions(sampler="euler_b"))
    assert str(caught.value).startswith("unknown sampler 'euler_b'; choose one of: ddim, ")
    assert ", euler_a, " in str(caught.value)


@pytest.mark.parametrize("options", [
    SampleOptions(), SampleOptions(n=1, num_gpus=1), SampleOptions(id_prefix="9a-b_C"),
    SampleOptions(sampler="euler_a"), SampleOptions(sampler="ddim"),
])
def test_good_options_pass(options: SampleOptions) -> None:
    check_options(options)


def test_generation_settings_are_the_original_run_s_unless_given() -> None:
    original = prompts.original_settings()
    assert generation_settings(SampleOptions()) == original
    given = generation_settings(SampleOptions(width=832, height=1216, steps=30, scale=7.5,
                                              sampler="ddim", negative_prompt="blurry"))
    assert given == prompts.Settings("blurry", 832, 1216, 30, 7.5, "ddim")
    zero = generation_settings(SampleOptions(negative_prompt="", scale=0.0))
    assert (zero.negative_prompt, zero.scale, zero.steps) == ("", 0.0, original.steps)
    with pytest.raises(UserError, match="--steps 0 must be between 1 and 1000"):
        generation_settings(SampleOptions(steps=0))


@pytest.mark.parametrize("option", ["width", "height"])
@pytest.mark.parametrize("value", [0, -8])
def test_a_size_that_is_not_positive_is_refused_not_replaced(option: str, value: int) -> None:
    """--width 0 is no request for the default size: it is refused like any other bad size."""
    with pytest.raises(UserError) as caught:
        generation_settings(SampleOptions(**{option: value}))  # type: ignore[arg-type]
    assert str(caught.value) == (f"--{option} {value} must be a multiple of 32 (as SDXL's UNet "
                                 "needs) from 64 to 4096: use 64")


def test_prompts_from_a_file_one_per_line(tmp_path: Path) -> None:
    listing = tmp_path / "prompts.txt"
    listing.write_text("# mine\n  me1anoma on the back  \n\n#x\nmole on the arm\n",
                       encoding="utf-8")
    source, count = prompt_source(SampleOptions(prompts_file=listing), None, None, NAMES)
    texts = ["me1anoma on the back", "mole on the arm"]
    assert (source.drawn.prompts, count) == (texts, 2)
    assert [w.split(": ")[1] for w in source.warnings] == ["prompt 2 'mole on the arm'; write it "
                                                           "into each prompt that should look "
                                                           "like the training images"]
    assert source.identity == {"kind": "prompts", "sha256": hashlib.sha256(
        "\n".join(texts).encode()).hexdigest()}
    source, count = prompt_source(SampleOptions(prompts_file=listing), 5, None, NAMES)
    assert (source.drawn.prompts, count) == ([*texts, *texts, texts[0]], 5)


def test_a_prompt_without_the_trigger_is_warned_about(tmp_path: Path) -> None:
    source, count = prompt_source(SampleOptions(prompt="a mole"), 3, None, NAMES)
    assert (source.drawn.prompts, count) == (["a mole"] * 3, 3)
    assert source.warnings == (
        "the prompts do not mention the trigger 'me1anoma' the LoRA was trained with",)
    unknown = Captions(DEFAULT_TEMPLATE, TRIGGER, None, known=False)
    assert prompt_source(SampleOptions(prompt="a mole"), 3, None, unknown)[0].warnings == ()


def test_prompts_of_which_some_lack_the_trigger_are_counted_and_named(tmp_path: Path) -> None:
    """The warning came only when no prompt held the trigger: a file where most prompts
    forgot it generated them without the LoRA's look, silently."""
    listing = tmp_path / "prompts.txt"
    listing.write_text("me1anoma on the back\na mole\n# note\nnevus on the arm\n",
                       encoding="utf-8")
    source, _ = prompt_source(SampleOptions(prompts_file=listing), None, None, NAMES)
    assert source.warnings == (
        f"2 of 3 prompts of {listing} do not mention the trigger 'me1anoma' the LoRA was "
        "trained with: prompt 2 'a mole', prompt 3 'nevus on the arm'; write it into each "
        "prompt that should look like the training images",)
    many = "\n".join(["me1anoma", *(f"mole {i}" for i in range(5))])
    listing.write_text(many, encoding="utf-8")
    source, _ = prompt_source(SampleOptions(prompts_file=listing), None, None, NAMES)
    assert source.warnings[0].startswith(
        f"5 of 6 prompts of {listing} do not mention the trigger 'me1anoma' the LoRA was "
        "trained with: prompt 2 'mole 0', prompt 3 'mole 1', prompt 4 'mole 2' and 2 more;")
    listing.write_text("me1anoma\nme1anoma on the arm\n", encoding="utf-8")
    assert prompt_source(SampleOptions(prompts_file=listing), None, None, NAMES)[0].warnings == ()
    assert plan._without_trigger(["me1anoma", "mole"], "me1anoma", None)[0].startswith(
        "1 of 2 prompts do not mention")  # captions, edited by hand: no file to name


@pytest.mark.parametrize(("text", "prompt", "message"), [
    ("", "", "--prompts {path} is empty; give a text file with one prompt per line"),
    ("# only\n\n   \n", "", "--prompts {path} holds no prompts (one per line; # starts a "
     "comment)"),
    ("a mole\nb --n c\n", "", "prompt 2 of {path} holds ' --', which sd-scripts reads as a "
     "prompt option: 'b --n c'"),
    (None, "", "--prompts {path} does not exist"),
    (None, "{a|b} mole", "--prompt holds { or }, which sd-scripts reads as dynamic-prompt "
     "variants: '{a|b} mole'"),
])
def test_bad_prompts_are_refused_in_one_line(tmp_path: Path, text: str | None, prompt: str,
                                             message: str) -> None:
    """A --prompts file's problem names the file (and the line); a --prompt's names it."""
    path = tmp_path / "prompts.txt"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    options = SampleOptions(prompt=prompt) if prompt else SampleOptions(prompts_file=path)
    assert _refused(options) == message.replace("{path}", str(path))


@pytest.mark.parametrize("prompt", ["", "  "])
def test_an_empty_prompt_says_how_to_fix_it(prompt: str) -> None:
    """"--prompt is empty: ''" said what was wrong but not what to do."""
    assert _refused(SampleOptions(prompt=prompt)) == (
        f"--prompt {prompt!r} is empty: give the text to generate from, or leave --prompt out "
        "to draw the prompts from the run's training captions (with --n N)")


def test_a_prompts_file_in_windows_encoding_is_read_with_a_note(tmp_path: Path) -> None:
    """A file saved by a Windows editor (cp1252) is read as prepare reads such a CSV: the
    same prompts as its UTF-8 copy, and a note saying how it was read."""
    texts = ["me1anoma, café-au-lait macule", "me1anoma on the naevus, Ø 6 mm"]
    utf8, windows = tmp_path / "utf8.txt", tmp_path / "windows.txt"
    utf8.write_text("\n".join(texts), encoding="utf-8")
    windows.write_bytes("\r\n".join(texts).encode("cp1252"))
    read, _ = prompt_source(SampleOptions(prompts_file=utf8), None, None, NAMES)
    source, count = prompt_source(SampleOptions(prompts_file=windows), None, None, NAMES)
    assert (source.drawn.prompts, count) == (read.drawn.prompts, 2) == (texts, 2)
    assert source.identity == read.identity and read.warnings == ()
    assert source.warnings == (f"--prompts {windows} is not UTF-8: read as cp1252; check that "
                               "accented words came out right, or save it as UTF-8",)


def test_a_prompts_file_in_utf16_or_latin1_is_read_as_such(tmp_path: Path) -> None:
    """Notepad's "Unicode" (UTF-16 with its byte-order mark) is text like UTF-8; a byte that
    cp1252 leaves undefined falls back to Latin-1, with the note naming it."""
    texts = ["me1anoma, café-au-lait macule", "me1anoma \x81 on the back"]
    utf16, latin1 = tmp_path / "utf16.txt", tmp_path / "latin1.txt"
    utf16.write_text("\n".join(texts), encoding="utf-16")
    latin1.write_bytes("\n".join(texts).encode("latin-1"))
    source, _ = prompt_source(SampleOptions(prompts_file=utf16), None, None, NAMES)
    assert (source.drawn.prompts, source.warnings) == (texts, ())
    source, _ = prompt_source(SampleOptions(prompts_file=latin1), None, None, NAMES)
    assert source.drawn.prompts == texts
    assert source.warnings == (f"--prompts {latin1} is not UTF-8: read as latin-1; check that "
                               "accented words came out right, or save it as UTF-8",)


def test_a_prompts_path_that_is_no_text_file_says_what_it_is(tmp_path: Path) -> None:
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"me1anoma\0\x01\x02")
    assert _refused(SampleOptions(prompts_file=tmp_path)) == (
        f"--prompts {tmp_path} is a folder; give a text file with one prompt per line")
    assert _refused(SampleOptions(prompts_file=Path(os.devnull))) == (
        f"--prompts {os.devnull} is empty; give a text file with one prompt per line")
    assert _refused(SampleOptions(prompts_file=binary)) == (
        f"--prompts {binary} is not a text file (it holds binary data); give a text file "
        "with one prompt per line")
    assert _refused(SampleOptions(prompts_file=binary / "prompts.txt")) == (
        f"cannot read --prompts {binary / 'prompts.txt'}: Not a directory")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n", encoding="utf-8")
    assert _refused(SampleOptions(prompts_file=blank)) == (
        f"--prompts {blank} is empty; give a text file with one prompt per line")


def test_prompts_come_from_one_place(tmp_path: Path) -> None:
    like = _manifest(tmp_path / "manifest.csv")
    one = "give one of --like, --prompt and --prompts"
    assert _refused(SampleOptions(like=like, prompt="a"), 2) == one
    assert _refused(SampleOptions(prompt="a", prompts_file=like), 2) == one
    assert _refused(SampleOptions(like=like, prompts_file=like), 2) == one
    query = "--query filters the rows of --like; it does not apply to --prompt(s)"
    assert _refused(SampleOptions(prompt="a", query="sex == 'male'"), 2) == query
    assert _refused(SampleOptions(prompts_file=like, query="sex == 'male'"), 2) == query


def test_prompts_drawn_like_a_manifest(tmp_path: Path) -> None:
    like = _manifest(tmp_path / "manifest.csv")
    source, count = prompt_source(SampleOptions(like=like, seed=5), 40, None, NAMES)
    table = manifest.read(like)
    assert count == 40 and source.drawn == prompts.draw(table, 40, 5, DEFAULT_TEMPLATE, TRIGGER)
    assert source.identity == {"kind": "like", "manifest_sha256": files.sha256(like),
                               "query": None, "template": DEFAULT_TEMPLATE, "trigger": TRIGGER}
    narrowed, _ = prompt_source(SampleOptions(like=like, query="sex == 'female'"), 40, None,
                                NAMES)
    assert set(narrowed.drawn.sex) == {"female"}
    assert narrowed.identity["query"] == "sex == 'female'"


def test_prompts_drawn_like_the_run_s_own_data(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    like = _manifest(prepared / "manifest.csv", ("male",))
    record = RunRecord(dataset=DatasetRecord(prepared=str(prepared)))
    source, count = prompt_source(SampleOptions(), 2, record, NAMES)
    assert count == 2 and set(source.drawn.sex) == {"male"}
    assert source.identity["manifest_sha256"] == files.sha256(like)
    assert _refused(SampleOptions(), None, record) == (
        "give --n N, the number of images to generate (or --prompts FILE for one image per "
        "line of it)")
    for orphan in (None, RunRecord()):
        assert _refused(SampleOptions(), 2, orphan) == (
            "give --like OUT/manifest.csv (or --prompt / --prompts): the LoRA has no train "
            "run record naming its prepared data")


def test_a_manifest_that_cannot_be_drawn_from_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    assert _refused(SampleOptions(like=missing), 2) == (
        f"--like {missing} does not exist; give the manifest.csv that `medsynth-kohya "
        "prepare` wrote")
    other = tmp_path / "other.csv"
    other.write_text("id,sex\nISIC_1,male\n", encoding="utf-8")
    assert _refused(SampleOptions(like=other), 2) == (
        f"{other} is not a manifest written by prepare (no column source, patient_id, age, "
        "site, hairy, hair_score, caption, width, height, split); run `medsynth-kohya prepare` "
        "to write it again")
    like = _manifest(tmp_path / "manifest.csv")
    broken = tmp_path / "broken.csv"
    broken.write_text(like.read_text(encoding="utf-8").replace(",40,", ",forty,"),
                      encoding="utf-8")
    assert _refused(SampleOptions(like=broken), 2).startswith(
        f"manifest {broken} holds a value its column cannot take (")
    empty = tmp_path / "empty.csv"
    empty.write_text(like.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert _refused(SampleOptions(like=empty), 2) == f"--like {empty} has no rows"
    assert _refused(SampleOptions(like=like, query="sex == 'none'"), 2) == (
        f"--query \"sex == 'none'\" matches no rows of {like}; its sex values: female, male")
    assert _refused(SampleOptions(like=like, query="age > 90 and site == 'torso'"), 2) == (
        f"--query \"age > 90 and site == 'torso'\" matches no rows of {like}; its age values: "
        "40 to 42; its site values: torso")
    assert _refused(SampleOptions(like=like, query="sex =="), 2).startswith(
        "--query 'sex ==' is not a valid expression (invalid syntax): compare columns, e.g. ")


@pytest.mark.parametrize("key", ["network_module", "network_mul"])
def test_set_may_change_but_not_remove_what_applies_the_lora(key: str) -> None:
    """`--set network_module=` removed the option, so the images were the base model's while
    metadata.csv named the LoRA."""
    from medsynth_kohya.sampling.generator import parse_overrides

    with pytest.raises(UserError, match=rf"^--set {key}= would generate without the LoRA"):
        parse_overrides([f"{key}="])
    assert parse_overrides(["network_mul=0.8"]) == {"network_mul": [0.8]}


def test_an_array_mixing_whole_numbers_and_decimals_is_read_as_numbers() -> None:
    """toml 0.10.2 refuses `[1, 0.5]`, valid TOML: it was kept as the text "[1, 0.5]" and then
    refused as 'must be a TOML array of numbers'."""
    from medsynth_kohya.sampling.generator import parse_overrides
    from medsynth_kohya.training.train import parse_overrides as train_overrides

    assert parse_overrides(["network_mul=[1, 0.5]"]) == {"network_mul": [1.0, 0.5]}
    assert train_overrides(["text_encoder_lr=[1, 5e-5]", "network_args=[\"a=1\", 2]"]) == {
        "text_encoder_lr": [1.0, 5e-5], "network_args": "[\"a=1\", 2]"}
