"""The mutation run's set-up stays whole: mutmut maps a function only to the tests it times
first (pyproject's pytest_add_cli_args_test_selection), so a judge left out of that list never
runs against a mutant, and every mutant it would catch counts as a survivor."""

from __future__ import annotations

import ast
from pathlib import Path

import toml

REPO = Path(__file__).resolve().parent.parent


def _missing(judges: set[str], timed: set[str]) -> set[str]:
    """The judges neither named in `timed` nor inside a file named there."""
    return {judge for judge in judges if judge not in timed and judge.split("::")[0] not in timed}


def test_every_judge_is_timed_once_and_every_timed_test_judges() -> None:
    config = toml.load(REPO / "pyproject.toml")
    listed = config["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    areas = config["tool"]["medsynth-kohya"]["mutation-tests"]
    assert {name for name, tests in {"timed": listed, **areas}.items()
            if len(tests) != len(set(tests))} == set()
    timed = set(listed)
    judges = {test for tests in areas.values() for test in tests}
    assert not _missing(judges, timed)
    assert {entry for entry in timed
            if not any(judge == entry or judge.startswith(entry + "::") for judge in judges)
            } == set()
    named = {test.split("::")[0] for test in judges | timed}
    assert {name for name in named if not (REPO / name).is_file()} == set()
    assert _unknown(judges | timed, REPO) == set()


def _defined(path: Path) -> set[str]:
    """The top-level functions and classes of a test file: the names `FILE::NAME` selects."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _unknown(tests: set[str], root: Path) -> set[str]:
    """The `FILE::NAME` entries whose file defines no NAME (a parametrised id's brackets
    aside): pytest selects nothing by it, silently, so a judge naming a renamed test judges
    nothing."""
    return {test for test in tests if "::" in test
            and test.split("::")[1].split("[")[0] not in _defined(root / test.split("::")[0])}


def test_a_judge_naming_a_test_the_file_does_not_define_is_found(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n\ndef test_kept() -> None:\n    def test_inner() -> None:\n"
        "        pass\n\n\nasync def test_async() -> None:\n    pass\n\n\n"
        "class TestGroup:\n    def test_method(self) -> None:\n        pass\n",
        encoding="utf-8")
    found = {"test_x.py", "test_x.py::test_kept", "test_x.py::test_kept[1-True]",
             "test_x.py::test_async", "test_x.py::TestGroup::test_method"}
    gone = {"test_x.py::test_renamed", "test_x.py::test_inner", "test_x.py::test_method"}
    assert _unknown(found | gone, tmp_path) == gone


def test_a_judge_left_out_of_the_timed_tests_is_found() -> None:
    timed = {"tests/test_a.py", "tests/test_b.py::test_one"}
    judges = {"tests/test_a.py::test_x", "tests/test_b.py::test_one", "tests/test_b.py::test_two",
              "tests/test_c.py"}
    assert _missing(judges, timed) == {"tests/test_b.py::test_two", "tests/test_c.py"}
