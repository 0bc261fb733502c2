"""Allow ``python -m medsynth_kohya``."""

from medsynth_kohya.cli import main

main()
