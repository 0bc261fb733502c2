"""Ordinary Python values as the API takes them: a path as `str` or `os.PathLike` (a leading `~`
expanded, as the CLI does), an option's enum as its string value, and every other value of the
kind its annotation names, checked and converted once where a command's function starts
(`checked`) or an option class is made (`check_fields`)."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import numbers
import os
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

from medsynth_kohya.errors import UserError

PathArg: TypeAlias = str | os.PathLike[str]
"""What a path parameter of the API takes."""
E = TypeVar("E", bound=Enum)
T = TypeVar("T")
F = TypeVar("F", bound=collections.abc.Callable[..., Any])
MAX_SEED = 2**32 - 1
"""The largest seed: numpy, pandas and scikit-learn take 0 to 2**32 - 1, sd-scripts gives its
seed to numpy, and most tools that read a seed back expect 32 bits."""


class _Wrong(UserError):
    """A value not of the kind that `hint` names; `shown` is how the message names it."""

    def __init__(self, name: str, hint: object, shown: str) -> None:
        super().__init__(f"{name} must be {describe(hint)}, not {shown}")
        self.shown = shown


def fspath(value: object, name: str) -> str:
    """`value`'s path text, unchanged; a UserError naming parameter `name` when it is no
    (non-empty) `str` or `os.PathLike[str]`."""
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str) or not text:
        raise _Wrong(name, Path, _shown(value))
    return text


def path(value: object, name: str) -> Path:
    """`value` (a `str` or `os.PathLike[str]`) as a Path, a leading `~` expanded as a shell
    would (a notebook has none): never a folder named `~` in the current directory."""
    given = value if isinstance(value, Path) else Path(fspath(value, name))
    try:
        return given.expanduser()
    except RuntimeError:  # ~user of no such user, or no home directory to expand ~ to
        raise UserError(f"{name} {given}: cannot expand its ~ (no such user or no home "
                        "directory); give the path in full") from None


def optional_path(value: object, name: str) -> Path | None:
    """`path`, with None kept for a parameter that may be left out."""
    return None if value is None else path(value, name)


def choice(value: object, kind: type[E], name: str) -> E:
    """`value` as a member of `kind`, given as one or as its value (`hair="seed"`)."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise UserError(f"{name} {value!r} is not one of: {allowed}") from None


def options(value: T | None, kind: type[T]) -> T:
    """`value`, a command's option object (`checked` has checked its kind), or `kind()` for
    None."""
    return kind() if value is None else value


def texts(value: object, name: str) -> tuple[str, ...]:
    """`value`, a list or tuple of strings, as a tuple; a bare string (which would be read
    letter by letter) is refused."""
    return cast(tuple[str, ...], conform(value, tuple[str, ...], name))


def check_seed(seed: int, count: int = 1, name: str = "--seed") -> None:
    """Refuse a seed the libraries that get it would reject late; with `count`, the seeds S to
    S + count - 1 (one per image) must all fit."""
    top = MAX_SEED - count + 1
    if not 0 <= seed <= top:
        per = f" for {count} images (seeds run from S to S + n - 1)" if count > 1 else ""
        raise UserError(f"{name} must be 0 to {top}{per} (got {seed})")


def _shown(value: object) -> str:
    """`value` as an error message names it: a short scalar's repr, else its type's name."""
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:37]}..."
    return type(value).__name__


def _arms(hint: object) -> tuple[object, ...] | None:
    """The types of a union (`X | Y`, `Optional[X]`), None for any other hint."""
    origin = typing.get_origin(hint)
    return typing.get_args(hint) if origin in (typing.Union, types.UnionType) else None


def describe(hint: object) -> str:
    """The kind of value `hint` takes, in words, as an error message says it."""
    import medsynth_kohya

    arms = _arms(hint)
    if arms is not None:
        return " or ".join(describe(arm) for arm in arms)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if hint is Path:
        return "a path (a str or pathlib.Path)"
    if origin is collections.abc.Mapping:
        return f'a dict of {_WORDS[args[0]]} to {_WORDS[args[1]]} (e.g. {{"key": "value"}})'
    if origin in (tuple, collections.abc.Sequence):
        example = ' (e.g. ["key=value"])' if args[0] is str else ""
        return f"a list of {_WORDS.get(args[0]) or f'items each {describe(args[0])}'}{example}"
    if origin is collections.abc.Callable:
        return "a function"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(member.value) for member in hint)
    if hint in _SCALARS:
        return _SCALARS[hint]
    if isinstance(hint, type):
        exported = hint.__name__ in medsynth_kohya.__all__
        return f"a {'medsynth_kohya.' if exported else ''}{hint.__name__}(...)"
    return str(hint)


_SCALARS: dict[object, str] = {bool: "True or False", int: "a whole number (int)",
                               float: "a number (int or float)", str: "a str"}
_WORDS: dict[object, str] = {str: "strings", int: "whole numbers", float: "numbers"}


def conform(value: object, hint: object, name: str) -> Any:
    """`value` as parameter `name` of type `hint` takes it: checked (no bool for an int, no str
    for a bool or a number, no bare str for a list), a path expanded (`path`), an enum from
    its value (`choice`), an int as a float, numpy's bool as a bool, a list as a tuple; a
    one-line UserError naming `name` and the kind it takes otherwise. A hint it does not know
    passes the value as is."""
    arms = _arms(hint)
    if arms is not None:
        if value is None and type(None) in arms:
            return None
        if os.PathLike in map(typing.get_origin, arms):  # a path parameter: the function's
            return value                                 # own `path` call checks it
        kinds, shown = [arm for arm in arms if arm is not type(None)], _shown(value)
        for kind in kinds:
            try:
                return conform(value, kind, name)
            except _Wrong as wrong:  # one kind besides None: its finding, e.g. the bad item
                shown = wrong.shown if len(kinds) == 1 else shown
        raise _Wrong(name, hint, shown)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Path:
        return path(value, name)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return choice(value, hint, name)
    if origin in (tuple, collections.abc.Sequence) and args:
        if isinstance(value, list | tuple):  # not a bare str, read letter by letter
            items = [_item(item, args[0], hint, name) for item in value]
            return tuple(items) if origin is tuple else type(value)(items)
    elif origin is collections.abc.Mapping:
        if isinstance(value, collections.abc.Mapping):
            return {_item(key, args[0], hint, name): _item(item, args[1], hint, name)
                    for key, item in value.items()}
    elif origin is collections.abc.Callable:
        if callable(value):
            return value
    elif hint is bool:
        import numpy

        if isinstance(value, bool | numpy.bool_):  # numpy's, as a numpy integer for an int
            return bool(value)
    elif hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return _float(value, name)
    elif isinstance(hint, type):
        if isinstance(value, hint):
            return value
    else:
        return value
    raise _Wrong(name, hint, _shown(value))


def _float(value: numbers.Real, name: str) -> float:
    """`value` as a float; a whole number too large for one is a UserError, not an
    OverflowError's traceback."""
    try:
        return float(value)
    except OverflowError:
        top = sys.float_info.max
        raise UserError(f"{name} must be a number from {-top:.1e} to {top:.1e} (a float), not "
                        f"{_shown(value)}") from None


def _item(value: object, hint: object, whole: object, name: str) -> Any:
    """One item of list parameter `name` (of type `whole`) conformed to `hint`, its items'."""
    try:
        return conform(value, hint, name)
    except UserError:
        raise _Wrong(name, whole, f"one holding {_shown(value)}") from None


_HINTS: dict[object, dict[str, Any]] = {}


def _hints(owner: object) -> dict[str, Any]:
    """The resolved annotations of a function or class, read once (on first use: a class
    named in them may be defined later in its module)."""
    if owner not in _HINTS:
        _HINTS[owner] = typing.get_type_hints(owner)
    return _HINTS[owner]


def check_fields(instance: Any) -> None:
    """Conform each field of dataclass `instance` to its annotation (`conform`), in place:
    what an option class's `__post_init__` calls, so that each field is checked one way."""
    hints = _hints(type(instance))
    for field in dataclasses.fields(instance):
        given = getattr(instance, field.name)
        object.__setattr__(instance, field.name, conform(given, hints[field.name], field.name))


def checked(function: F) -> F:
    """`function` with each argument given conformed to its parameter's annotation (`conform`)
    before its body runs: a value of the wrong kind is a UserError naming the parameter."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        hints = _hints(function)
        for name, given in bound.arguments.items():
            if name in hints:
                bound.arguments[name] = conform(given, hints[name], name)
        return function(*bound.args, **bound.kwargs)

    return cast(F, call)
