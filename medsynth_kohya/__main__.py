"""Allow ``python -m medsynth_kohya``."""

from medsynth_kohya.entry import main

main()
