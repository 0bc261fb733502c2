"""What the CLI writes by default, and what the README's walkthrough writes, run from a
checkout, is git-ignored: `git add .` after a run never stages photos, LoRAs or reports."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

from .command_lines import PROGRAM, commands
from .conftest import REPO

_IGNORED = set((REPO / ".gitignore").read_text(encoding="utf-8").splitlines())
_OUTPUTS = ("--out", "--workdir", "--run-dir")


def test_every_default_output_folder_is_ignored_at_the_root() -> None:
    defaults = {Path(param.default).parts[0] for _, command in commands()
                for param in command.params
                if isinstance(param.default, Path) and param.default.parts}
    train = dict(commands())[("train",)]
    run_dir = next(param for param in train.params if param.name == "run_dir")
    defaults |= set(re.findall(r"default (\w+)/", run_dir.help or ""))  # runs/<preset>-<time>
    assert {"prepared", "synthetic", "medsynth-demo", "isic2020", "medsynthx-2023",
            "runs"} <= defaults
    assert {f"/{name}/" for name in defaults} <= _IGNORED


def test_the_walkthrough_s_outputs_are_ignored() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("<!-- walkthrough:", 1)[1]
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    written = set()
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == [PROGRAM]:
            written |= {Path(value).parts[0] for option, value in itertools.pairwise(words)
                        if option in _OUTPUTS}
    assert written and {f"/{name}/" for name in written} <= _IGNORED
