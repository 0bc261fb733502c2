"""Where `medsynth-kohya` and `python -m medsynth_kohya` start: imports nothing heavy itself, so
that Ctrl-C while the command line is still imported (its first ~0.7 s) is caught here too."""

from __future__ import annotations

RESUMABLE = "interrupted; re-run the same command to continue where it stopped"
"""What Ctrl-C says by default: most commands pick up where they stopped."""


def main() -> None:
    """Console-script entry point. Ctrl-C before a command's own handling begins (while the
    command line is imported or Typer builds the commands) is one line and exit code 130, not a
    traceback."""
    try:
        from medsynth_kohya.cli import app

        app()
    except KeyboardInterrupt:
        from medsynth_kohya import ui

        ui.error(RESUMABLE)
        raise SystemExit(130) from None
