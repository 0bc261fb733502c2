"""The mutation run's set-up stays whole: mutmut maps a function only to the tests it times
first (pyproject's pytest_add_cli_args_test_selection), so a judge left out of that list never
runs against a mutant, and every mutant it would catch counts as a survivor."""

from __future__ import annotations

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
    assert {test for test in judges | timed if "::" in test
            and test.split("::")[1] not in _functions(REPO / test.split("::")[0])} == set()


def _functions(path: Path) -> set[str]:
    """Names of the functions a test file defines: a judge naming a renamed test judges
    nothing, silently, as pytest selects no test by a name it does not find."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_a_renamed_test_is_found(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("def test_kept() -> None:\n    assert True\n", encoding="utf-8")
    assert _functions(path) == {"test_kept"}


def test_a_judge_left_out_of_the_timed_tests_is_found() -> None:
    timed = {"tests/test_a.py", "tests/test_b.py::test_one"}
    judges = {"tests/test_a.py::test_x", "tests/test_b.py::test_one", "tests/test_b.py::test_two",
              "tests/test_c.py"}
    assert _missing(judges, timed) == {"tests/test_b.py::test_two", "tests/test_c.py"}
