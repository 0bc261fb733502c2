"""Mutation score of the code that decides what users get, one area at a time (not part of CI).

    pip install -e ".[dev,mutation]"
    python3 benchmarks/mutation.py                  # every area below, then the table
    python3 benchmarks/mutation.py split hair       # some areas only
    python3 benchmarks/mutation.py --jobs 2         # mutants tested side by side

Runs mutmut (configured in pyproject.toml's [tool.mutmut]) on one area at a time. Each mutant
is tested against the tests that judge its module (pyproject's
[tool.medsynth-kohya.mutation-tests], applied by tests/conftest.py), not every test whose
set-up passes through it. Prints killed / mutants per area against the 85% target, and the wall
and CPU minutes of each area (with --jobs 1 on an idle machine the two agree; on a shared one
the CPU minutes are what the run would take there); results stay
in mutants/ (`python3 -m mutmut results`, `python3 -m mutmut show NAME`). Mutants judged
equivalent (no behaviour can tell them apart) are listed with the reason in
benchmarks/mutation.md; the score counts them as survivors all the same.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.85
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}
"""mutmut exit codes that count as caught: failed tests, a timeout, the type checker."""
NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Area:
    """Functions of one module that make one decision users see."""

    name: str
    path: str
    functions: tuple[str, ...] = ()
    """Mutated functions (mutmut's mangled names without `x_`); empty for the whole module."""

    def globs(self) -> list[str]:
        module = self.path.removesuffix(".py").replace("/", ".")
        if not self.functions:
            return [f"{module}.*"]
        return [f"{module}.x{'_' if '.' not in f else ''}{_mangle(f)}__mutmut_*"
                for f in self.functions]

    def owns(self, key: str) -> bool:
        return any(_match(key, glob) for glob in self.globs())


def _mangle(function: str) -> str:
    """mutmut's name for a method `Class.method` (xǁClassǁmethod) or a function (x_name)."""
    if "." in function:
        owner, method = function.split(".")
        return f"ǁ{owner}ǁ{method}"
    return function


def _match(key: str, glob: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(key, glob)


# In the order of the issue: if time runs out, the first areas are the ones measured.
AREAS = (
    Area("selection", "medsynth_kohya/data/sources.py", ("default_selection", "select")),
    Area("captions", "medsynth_kohya/data/captions.py"),
    Area("repeats and layout", "medsynth_kohya/data/layout.py"),
    Area("split", "medsynth_kohya/data/split.py"),
    Area("hair", "medsynth_kohya/data/hair.py"),
    Area("option checks", "medsynth_kohya/sdscripts/checks.py"),
    Area("training verdict", "medsynth_kohya/training/train.py", ("verdict",)),
    Area("sample planning", "medsynth_kohya/sampling/prompts.py"),
    Area("upload plan", "medsynth_kohya/hub/contents.py",
         ("plan", "_public_ids", "_public_record", "_run_files", "scrub", "scan")),
    Area("upload scan", "medsynth_kohya/hub/privacy.py"),
)


def _results(area: Area) -> dict[str, int | None]:
    meta = ROOT / "mutants" / f"{area.path}.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))[
        "exit_code_by_key"]
    return {key: code for key, code in codes.items() if area.owns(key)}


def _cpu() -> float:
    """CPU seconds used so far by the finished child processes (mutmut and its test runs)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def measure(area: Area, jobs: int) -> tuple[dict[str, int | None], float, float]:
    """Run mutmut on one area; its mutants' exit codes, the wall time and the CPU time in
    seconds (on a shared machine the CPU time is the figure that does not depend on the load)."""
    started, cpu = time.perf_counter(), _cpu()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs),
               *area.globs()]
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join(done.stdout.replace("\r", "\n").splitlines()[-15:])
        raise SystemExit(f"mutmut failed on {area.name} (exit {done.returncode}):\n{tail}")
    return _results(area), time.perf_counter() - started, _cpu() - cpu


def main(argv: list[str]) -> int:
    jobs = 1
    if "--jobs" in argv:
        at = argv.index("--jobs")
        jobs = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    wanted = [a for a in AREAS if not argv or a.name.split()[0] in argv or a.name in argv]
    print(f"{'area':22} {'module':38} {'mutants':>7} {'killed':>6} {'survived':>8} "
          f"{'no tests':>8} {'score':>6} {'minutes':>7} {'cpu min':>7}")
    below = 0
    started, load = time.perf_counter(), os.getloadavg()[0]
    for area in wanted:
        codes, seconds, cpu = measure(area, jobs)
        total = len(codes)
        killed = sum(code in KILLED for code in codes.values())
        untested = sum(code in NO_TESTS for code in codes.values())
        score = killed / total if total else 0.0
        below += score < TARGET
        print(f"{area.name:22} {area.path:38} {total:7d} {killed:6d} "
              f"{total - killed - untested:8d} {untested:8d} {score:6.1%} "
              f"{seconds / 60:7.1f} {cpu / 60:7.1f}", flush=True)
    print(f"all: {(time.perf_counter() - started) / 60:.1f} minutes with --jobs {jobs}, "
          f"load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"{os.cpu_count()} CPUs")
    print(f"target: {TARGET:.0%} killed per area; survivors: `python3 -m mutmut results`")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
