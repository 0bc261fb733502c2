"""How each value a Python caller gives the API is checked and converted (arguments.py), told
apart from what the caller sees: the value the command gets, or the one line naming the
parameter, the kind it takes and the value given."""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

import medsynth_kohya as mk
from medsynth_kohya import arguments
from medsynth_kohya.arguments import PathArg
from medsynth_kohya.machine.gpus import Gpu


class Colour(str, Enum):
    """An option's enum, as the option classes declare theirs."""

    red = "red"
    blue = "blue"


class Knob:
    """A class the package does not export."""


class Where(os.PathLike[str]):
    """A path object that is no pathlib.Path (as a py.path or a notebook's own class)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __fspath__(self) -> str:
        return self.text


class BytesWhere:
    """A path object whose path is bytes, which no command takes."""

    def __fspath__(self) -> bytes:
        return b"/data"


@dataclasses.dataclass(frozen=True)
class Settings:
    """An option class as the package writes one: frozen, checked in `__post_init__`."""

    n: int = 1
    like: Path | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        arguments.check_fields(self)


def _said(call: Callable[[], object]) -> str:
    """The one line a caller is told."""
    with pytest.raises(mk.UserError) as raised:
        call()
    assert "\n" not in str(raised.value)
    return str(raised.value)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_path_is_a_str_or_path_object_with_its_tilde_expanded(home: Path) -> None:
    assert arguments.path("~/runs/a", "out") == home / "runs" / "a"
    assert arguments.path(Path("~/runs"), "out") == home / "runs"
    assert arguments.path(Where("~/set"), "out") == home / "set"
    assert arguments.path("data/x", "out") == Path("data/x")
    assert arguments.optional_path("~/x", "like") == home / "x"
    assert arguments.optional_path(None, "like") is None


def test_a_tilde_naming_no_user_is_one_line_saying_to_give_the_path_in_full() -> None:
    assert _said(lambda: arguments.path("~no-such-user-medsynth/x", "out")) == (
        "out ~no-such-user-medsynth/x: cannot expand its ~ (no such user or no home "
        "directory); give the path in full")


def test_fspath_keeps_the_text_as_given() -> None:
    """`sample`'s LoRA is a path or a Hub id: its text is passed on unchanged."""
    assert arguments.fspath(Where("./runs/../a"), "lora") == "./runs/../a"
    assert arguments.fspath("alice/lora", "lora") == "alice/lora"


@pytest.mark.parametrize(("value", "shown"), [
    (b"/data", "bytes"), ("", "''"), (3, "3"), (None, "None"), (BytesWhere(), "BytesWhere"),
    (Where(""), "Where")])
def test_what_is_no_path_is_refused_naming_the_parameter(value: object, shown: str) -> None:
    said = f"out must be a path (a str or pathlib.Path), not {shown}"
    assert _said(lambda: arguments.fspath(value, "out")) == said
    assert _said(lambda: arguments.path(value, "out")) == said


def test_an_enum_is_taken_as_a_member_or_its_value() -> None:
    assert arguments.choice(Colour.red, Colour, "colour") is Colour.red
    assert arguments.choice("blue", Colour, "colour") is Colour.blue
    assert _said(lambda: arguments.choice("green", Colour, "colour")) == (
        "colour 'green' is not one of: 'red', 'blue'")


def test_options_left_out_are_the_defaults_and_given_ones_are_kept() -> None:
    assert arguments.options(None, mk.Cluster) == mk.Cluster()
    given = mk.Cluster(submit=True)
    assert arguments.options(given, mk.Cluster) is given


def test_a_bare_string_is_no_list_of_strings_read_letter_by_letter() -> None:
    assert arguments.texts(["a=1", "b=2"], "overrides") == ("a=1", "b=2")
    assert arguments.texts(("a=1",), "overrides") == ("a=1",)
    assert _said(lambda: arguments.texts("a=1", "overrides")) == (
        'overrides must be a list of strings (e.g. ["key=value"]), not \'a=1\'')


def test_a_seed_out_of_range_names_the_option_its_range_and_the_images_it_covers() -> None:
    assert _said(lambda: arguments.check_seed(-1)) == "--seed must be 0 to 4294967295 (got -1)"
    assert _said(lambda: arguments.check_seed(2**32 - 1, 2, "seed")) == (
        "seed must be 0 to 4294967294 for 2 images (seeds run from S to S + n - 1) "
        "(got 4294967295)")
    arguments.check_seed(2**32 - 2, 2)


@pytest.mark.parametrize(("hint", "words"), [
    (int | None, "a whole number (int) or None"),
    (typing.Optional[str], "a str or None"),  # noqa: UP045 - the older spelling reads the same
    (bool, "True or False"),
    (float, "a number (int or float)"),
    (Path, "a path (a str or pathlib.Path)"),
    (Mapping[str, str], 'a dict of strings to strings (e.g. {"key": "value"})'),
    (Mapping[str, int], 'a dict of strings to whole numbers (e.g. {"key": "value"})'),
    (tuple[float, ...], "a list of numbers"),
    (Sequence[int], "a list of whole numbers"),
    (Sequence[str], 'a list of strings (e.g. ["key=value"])'),
    (Sequence[Gpu], "a list of items each a Gpu(...)"),
    (Callable[[int], None], "a function"),
    (Colour, "one of 'red', 'blue'"),
    (mk.Cluster, "a medsynth_kohya.Cluster(...)"),
    (Knob, "a Knob(...)"),
    (typing.Literal["a"], "typing.Literal['a']"),
])
def test_each_kind_is_named_in_words(hint: object, words: str) -> None:
    assert arguments.describe(hint) == words


def test_a_value_of_the_right_kind_is_taken_as_that_kind(home: Path) -> None:
    import numpy as np

    assert arguments.conform(None, int | None, "n") is None
    assert arguments.conform("~/x", Path | None, "like") == home / "x"
    assert arguments.conform("red", Colour, "colour") is Colour.red
    taken = arguments.conform(np.int64(3), int, "n")
    assert taken == 3 and type(taken) is int
    taken = arguments.conform(7, float, "scale")
    assert taken == 7.0 and type(taken) is float
    assert arguments.conform(True, bool, "force") is True
    assert arguments.conform(["a"], tuple[str, ...], "tags") == ("a",)
    assert arguments.conform(["a"], Sequence[str], "needs") == ["a"]
    assert arguments.conform(("a",), Sequence[str], "needs") == ("a",)
    assert arguments.conform([1, 2.5], tuple[float, ...], "mixes") == (1.0, 2.5)
    mapping = arguments.conform(types.MappingProxyType({"site": "x"}), Mapping[str, str], "c")
    assert mapping == {"site": "x"} and type(mapping) is dict
    assert arguments.conform({"a": 2}, Mapping[str, int], "counts") == {"a": 2}
    cluster = mk.Cluster()
    assert arguments.conform(cluster, mk.Cluster, "cluster") is cluster
    assert arguments.conform(print, Callable[[str], None], "on_wait") is print
    given = object()
    assert arguments.conform(given, typing.Literal["a"], "free") is given


def test_a_path_parameters_value_is_left_to_the_functions_own_path_check() -> None:
    """`str | os.PathLike[str]` parameters are converted by the function's `path` call, which
    knows whether the value may be a Hub id or a Location too."""
    given = object()
    assert arguments.conform(given, PathArg, "out") is given
    assert arguments.conform(given, PathArg | None, "out") is given


@pytest.mark.parametrize(("value", "hint", "said"), [
    (None, int, r"n must be a whole number (int), not None"),
    (True, int, "n must be a whole number (int), not True"),
    (2.0, int, "n must be a whole number (int), not 2.0"),
    ("2", int | None, "n must be a whole number (int) or None, not '2'"),
    (False, float, "n must be a number (int or float), not False"),
    ("7", float, "n must be a number (int or float), not '7'"),
    (1, bool, "n must be True or False, not 1"),
    ("yes", bool, "n must be True or False, not 'yes'"),
    (3, str, "n must be a str, not 3"),
    ("print", Callable[[int], None], "n must be a function, not 'print'"),
    ({"a": 1}, mk.Cluster, "n must be a medsynth_kohya.Cluster(...), not dict"),
    ("red", Knob, "n must be a Knob(...), not 'red'"),
    ("ab", Sequence[str], 'n must be a list of strings (e.g. ["key=value"]), not \'ab\''),
    ("0,1", tuple[float, ...], "n must be a list of numbers, not '0,1'"),
    (["a", 2], tuple[str, ...], 'n must be a list of strings (e.g. ["key=value"]), not one '
                                "holding 2"),
    (["a", 2], tuple[str, ...] | None, 'n must be a list of strings (e.g. ["key=value"]) or '
                                       "None, not one holding 2"),
    ([1.5], int | tuple[int, ...], "n must be a whole number (int) or a list of whole numbers, "
                                   "not list"),
    ("x", int | float, "n must be a whole number (int) or a number (int or float), not 'x'"),
    ({3: "a"}, Mapping[str, str], 'n must be a dict of strings to strings (e.g. {"key": '
                                  '"value"}), not one holding 3'),
    ({"a": 3}, Mapping[str, str], 'n must be a dict of strings to strings (e.g. {"key": '
                                  '"value"}), not one holding 3'),
    ({"a": 3}, Mapping[str, str] | None, 'n must be a dict of strings to strings (e.g. '
                                         '{"key": "value"}) or None, not one holding 3'),
    (3, Path, "n must be a path (a str or pathlib.Path), not 3"),
    (["site=a"], Mapping[str, str], 'n must be a dict of strings to strings (e.g. {"key": '
                                    '"value"}), not list'),
    ("x" * 38, int, f"n must be a whole number (int), not '{'x' * 38}'"),
    ("x" * 39, int, f"n must be a whole number (int), not '{'x' * 36}..."),
    (["red", "green"], tuple[Colour, ...], "n must be a list of items each one of 'red', 'blue', "
                                           "not one holding 'green'"),
])
def test_a_value_of_another_kind_is_one_line_naming_the_parameter_and_its_kind(
        value: object, hint: object, said: str) -> None:
    assert _said(lambda: arguments.conform(value, hint, "n")) == said


def test_an_enum_or_path_refused_inside_an_optional_still_names_the_parameter() -> None:
    assert _said(lambda: arguments.conform("green", Colour | None, "colour")) == (
        "colour 'green' is not one of: 'red', 'blue'")
    assert _said(lambda: arguments.conform("~no-such-user-medsynth", Path | None, "like")) == (
        "like ~no-such-user-medsynth: cannot expand its ~ (no such user or no home "
        "directory); give the path in full")


def test_an_option_class_checks_and_converts_each_field_by_its_annotation(home: Path) -> None:
    import numpy as np

    settings = Settings(n=np.int64(2), like="~/set", tags=["a"])  # type: ignore[arg-type]
    assert (settings.n, settings.like, settings.tags) == (2, home / "set", ("a",))
    assert type(settings.n) is int
    assert Settings().like is None
    assert _said(lambda: Settings(tags="ab")) == (  # type: ignore[arg-type]
        'tags must be a list of strings (e.g. ["key=value"]), not \'ab\'')
    assert _said(lambda: Settings(n=1, like=3)) == (  # type: ignore[arg-type]
        "like must be a path (a str or pathlib.Path) or None, not 3")


def _command(n: int, out: PathArg, needs: Sequence[str] = (),  # type: ignore[no-untyped-def]
             force: bool = False, where: Path | None = None, free=None) -> tuple[object, ...]:
    """A command as the package writes one."""
    return n, out, needs, force, where, free


def test_a_checked_function_gets_each_argument_conformed_to_its_annotation(home: Path) -> None:
    command: Any = arguments.checked(_command)
    assert command.__name__ == "_command" and command.__doc__ == _command.__doc__
    assert inspect.signature(command) == inspect.signature(_command)
    free = object()
    n, out, needs, force, where, kept = command(3, "~/out", ["a"],
                                                where="~/w", free=free)
    assert (n, out, needs, force, where, kept) == (3, "~/out", ["a"], False, home / "w", free)
    assert command(n=2, out="o", force=True)[:4] == (2, "o", (), True)


@pytest.mark.parametrize(("given", "said"), [
    ((True, "o", (), False, None), "n must be a whole number (int), not True"),
    ((1, "o", "train", False, None),
     'needs must be a list of strings (e.g. ["key=value"]), not \'train\''),
    ((1, "o", (), "no", None), "force must be True or False, not 'no'"),
    ((1, "o", (), False, 3), "where must be a path (a str or pathlib.Path) or None, not 3"),
])
def test_a_checked_function_refuses_an_argument_of_another_kind_before_its_body_runs(
        given: tuple[object, ...], said: str) -> None:
    ran: list[object] = []

    def body(n: int, out: PathArg, needs: Sequence[str] = (), force: bool = False,
             where: Path | None = None) -> None:
        ran.append(n)

    command: Any = arguments.checked(body)
    assert _said(lambda: command(*given)) == said
    names = ("n", "out", "needs", "force", "where")
    assert _said(lambda: command(**dict(zip(names, given, strict=True)))) == said
    assert ran == []


def test_a_numpy_bool_is_taken_as_a_bool_as_a_numpy_integer_is_as_an_int() -> None:
    """`force=(scores > 0.5).any()` is numpy's bool: it was refused with "must be True or
    False, not bool", naming the kind it was asked for."""
    import numpy as np

    for given in (np.True_, np.False_):
        taken = arguments.conform(given, bool, "force")
        assert taken is bool(given)
    assert mk.EvaluateOptions(force=np.bool_(True)).force is True  # type: ignore[arg-type]
    assert _said(lambda: arguments.conform(np.int64(1), bool, "force")) == (
        "force must be True or False, not int64")


def test_a_whole_number_too_large_for_a_float_is_one_line_not_a_traceback() -> None:
    """float(10**400) raises OverflowError, which reached the caller as a traceback."""
    assert _said(lambda: arguments.conform(10**400, float, "threshold")) == (
        f"threshold must be a number from -1.8e+308 to 1.8e+308 (a float), not "
        f"{'1' + '0' * 36}...")
    assert _said(lambda: mk.EvaluateOptions(threshold=-(10**400))).startswith(
        "threshold must be a number from -1.8e+308 to 1.8e+308 (a float), not -100")
