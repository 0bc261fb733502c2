"""Every module from another distribution that the package, its tests and its benchmarks import
is one pyproject.toml names: a fresh machine has nothing else (Pillow was once imported and
never declared, and a fresh clone's CI failed on it)."""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import toml

from .conftest import REPO

SD_SCRIPTS_MODULES = {"library", "sdxl_train_network", "sdxl_gen_img"}
"""sd-scripts' own modules, imported only by code run in sd-scripts' Python."""


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised as PEP 503 does."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _declared(*extras: str) -> set[str]:
    """The distributions the base install and the given extras (all of them with none) name."""
    project = toml.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    lists = [project["dependencies"]] + [optional[extra] for extra in extras or optional]
    return {_name(requirement) for listed in lists for requirement in listed}


def _imported(folder: Path) -> dict[str, set[str]]:
    """Top-level names of the absolute imports in `folder`'s Python files that are neither the
    standard library's nor this repository's, each with the files that import it."""
    local = {path.stem for path in REPO.iterdir()} | {"medsynth_kohya", "tests"}
    found: dict[str, set[str]] = defaultdict(set)
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.partition(".")[0] for name in names}:
                if top not in sys.stdlib_module_names and top != "__future__" and top not in local:
                    found[top].add(str(path.relative_to(REPO)))
    return found


def _provided(distributions: set[str]) -> set[str]:
    """The top-level modules the installed ones of `distributions` hold, from their file lists
    (Python 3.10's packages_distributions reads only top_level.txt, which some wheels lack), and
    the name of each one not installed here (the train extra's), as its module's."""
    modules = set()
    for name in distributions:
        try:
            listed = distribution(name).files or []
        except PackageNotFoundError:
            modules.add(name.replace("-", "_"))
            continue
        modules |= {file.parts[0].removesuffix(".py") for file in listed
                    if file.parts[0] != ".." and not file.parts[0].endswith(".dist-info")
                    and (len(file.parts) > 1 or file.suffix == ".py")}
    return modules


def _undeclared(folder: str, *extras: str) -> list[str]:
    """Each imported module of `folder` that no declared distribution provides."""
    provided = _provided(_declared(*extras))
    return [f"{module} (imported by {', '.join(sorted(files))})"
            for module, files in sorted(_imported(REPO / folder).items())
            if module not in SD_SCRIPTS_MODULES and module not in provided]


def test_the_package_imports_only_what_its_install_or_an_extra_declares() -> None:
    assert _undeclared("medsynth_kohya") == []


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_tests_and_benchmarks_import_only_what_the_dev_install_declares(folder: str) -> None:
    assert _undeclared(folder, "dev") == []


def test_an_undeclared_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself bites: Pillow dropped from the declared list is reported by name."""
    real = _declared
    monkeypatch.setattr(sys.modules[__name__], "_declared",
                        lambda *extras: real(*extras) - {"pillow"})
    assert any(line.startswith("PIL (imported by") for line in _undeclared("medsynth_kohya"))
