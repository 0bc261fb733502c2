"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """An input or environment problem the user can fix; its message says what and how."""
