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


def test_a_judge_left_out_of_the_timed_tests_is_found() -> None:
    timed = {"tests/test_a.py", "tests/test_b.py::test_one"}
    judges = {"tests/test_a.py::test_x", "tests/test_b.py::test_one", "tests/test_b.py::test_two",
              "tests/test_c.py"}
    assert _missing(judges, timed) == {"tests/test_b.py::test_two", "tests/test_c.py"}
