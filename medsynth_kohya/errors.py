"""The one exception type that the CLI turns into a one-line message and a non-zero exit, and
how a dry run words what would refuse the real run."""

from collections.abc import Iterable


class UserError(Exception):
    """An input or environment problem the user can fix; its message says what and how."""


def would_stop(problems: Iterable[str]) -> tuple[str, ...]:
    """A dry run's refusals, worded apart from its warnings: these stop the real run."""
    return tuple(f"a real run would stop at: {problem}" for problem in problems)
