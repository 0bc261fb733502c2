"""Ordinary Python values as the API takes them: a path as `str` or `os.PathLike`, an option's
enum as its string value, checked and converted once where a command's function starts."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TypeAlias, TypeVar

from medsynth_kohya.errors import UserError

PathArg: TypeAlias = str | os.PathLike[str]
"""What a path parameter of the API takes."""
E = TypeVar("E", bound=Enum)
T = TypeVar("T")
MAX_SEED = 2**32 - 1
"""The largest seed: numpy, pandas and scikit-learn take 0 to 2**32 - 1, sd-scripts gives its
seed to numpy, and most tools that read a seed back expect 32 bits."""


def fspath(value: object, name: str) -> str:
    """`value`'s path text, unchanged; a UserError naming parameter `name` when it is no
    (non-empty) `str` or `os.PathLike[str]`."""
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str) or not text:
        raise UserError(f"{name} must be a path (a str or pathlib.Path), not {value!r}")
    return text


def path(value: object, name: str) -> Path:
    """`value` (a `str` or `os.PathLike[str]`) as a Path."""
    return value if isinstance(value, Path) else Path(fspath(value, name))


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


def options(value: T | None, kind: type[T], name: str = "options") -> T:
    """`value` when it is a `kind` (the option class of a command), `kind()` for None."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise UserError(f"{name} must be a medsynth_kohya.{kind.__name__}(...), not "
                        f"{type(value).__name__}")
    return value


def texts(value: object, name: str) -> tuple[str, ...]:
    """`value`, a list or tuple of strings, as a tuple; a bare string (which would be read
    letter by letter) is refused."""
    if isinstance(value, str) or not isinstance(value, list | tuple) or not all(
            isinstance(item, str) for item in value):
        raise UserError(f"{name} must be a list of strings, e.g. [\"key=value\"], not {value!r}")
    return tuple(value)


def check_seed(seed: int, count: int = 1, name: str = "--seed") -> None:
    """Refuse a seed the libraries that get it would reject late; with `count`, the seeds S to
    S + count - 1 (one per image) must all fit."""
    top = MAX_SEED - count + 1
    if not 0 <= seed <= top:
        per = f" for {count} images (seeds run from S to S + n - 1)" if count > 1 else ""
        raise UserError(f"{name} must be 0 to {top}{per} (got {seed})")
