"""Mutation score of the code that decides what users get, one area at a time (not part of CI).

    pip install -e ".[dev,mutation]"
    python3 benchmarks/mutation.py                  # every area below, then the table
    python3 benchmarks/mutation.py split hair       # some areas only
    python3 benchmarks/mutation.py --jobs 1         # one mutant at a time (default: one per CPU)
    python3 benchmarks/mutation.py --all hair       # every mutant, also in sampled areas
    python3 benchmarks/mutation.py --seed 7 hair    # another draw of a sampled area's mutants
    python3 benchmarks/mutation.py --sample 100 hair  # a smaller (or larger) draw

Runs mutmut (configured in pyproject.toml's [tool.mutmut]) on one area at a time, as many
mutants side by side as there are CPUs. Each mutant is tested against the tests that judge its
module (pyproject's [tool.medsynth-kohya.mutation-tests], applied by tests/conftest.py), not
every test whose set-up passes through it; a mutant that runs past mutmut's CPU limit (a few
times its tests' time, `timeout_multiplier`) counts as caught. An area with a `sample` size
(hair: 1334 mutants, most of them in tuning arithmetic) tests that many of its mutants, drawn
with a fixed seed, unless `--all`; its score is then an estimate, printed with its 95%
interval. The draw is fixed (SEED) so runs compare; `--seed N` draws another sample, to check
that a score holds on mutants the tests were not written against. Prints killed / mutants per
area
against the 85% target, the wall and CPU minutes of each area and of the whole run, and the
machine's load: on a shared machine the wall time depends on the others' work, the CPU time
does not, and CPU minutes / CPUs is what the run takes on an idle machine. Results stay in
mutants/ (`python3 -m mutmut results`, `python3 -m mutmut show NAME`). Mutants judged
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
KILLED = {1, 3, 36, 24, -24, 152, 255, 37, -11}
"""mutmut exit codes that count as caught: failed tests, a timeout, the type checker, a crash
(SIGSEGV: OpenCV handed an argument a mutant broke)."""
NO_TESTS = {5, 33}
SAMPLE = 300
"""Mutants tested in a sampled area: a score within about ±4 points (95%) at 85%."""
SEED = 18


@dataclass(frozen=True)
class Area:
    """Functions of one module that make one decision users see."""

    name: str
    path: str
    functions: tuple[str, ...] = ()
    """Mutated functions (mutmut's mangled names without `x_`); empty for the whole module."""
    sample: int | None = None
    """How many of its mutants the default run tests (a seeded draw); None for all."""

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
    Area("hair", "medsynth_kohya/data/hair.py", sample=SAMPLE),
    Area("option checks", "medsynth_kohya/sdscripts/checks.py"),
    Area("training verdict", "medsynth_kohya/training/train.py", ("verdict",)),
    Area("train run", "medsynth_kohya/training/train.py", sample=SAMPLE),
    Area("sample planning", "medsynth_kohya/sampling/prompts.py"),
    Area("sample planning", "medsynth_kohya/sampling/plan.py",
         ("check_options", "generation_settings", "_read_prompts_file", "_read_manifest",
          "prompt_source")),
    Area("upload plan", "medsynth_kohya/hub/contents.py",
         ("plan", "_public_ids", "_public_record", "_run_files", "scrub", "scan")),
    Area("upload scan", "medsynth_kohya/hub/privacy.py"),
    Area("near-copies", "medsynth_kohya/evaluation/copies.py"),
    Area("near-copies", "medsynth_kohya/evaluation/copycheck.py"),
    Area("config rendering", "medsynth_kohya/sdscripts/render.py"),
    Area("run plan", "medsynth_kohya/training/plan.py"),
    Area("command lines", "medsynth_kohya/sdscripts/launch.py",
         ("accelerate_args", "train_command", "own_command", "sbatch_command",
          "isic_download_command", "gen_flags", "gen_command", "Machines.problems",
          "Command.shell")),
    Area("saves and states", "medsynth_kohya/sdscripts/launch.py",
         ("_saves", "_launch_named", "_save_rank", "_counts", "_lora_step", "lora_files",
          "_train_state", "_step_offset", "final_steps", "state_step", "settle_states",
          "name_by_run_step", "out_of_the_way", "_take_name", "name_as_one_run",
          "count_steps", "from_run_start", "_state_folders", "final_state", "latest_state",
          "_state_rank", "_emptied", "prune_states", "_remove_state")),
    Area("manifest schema", "medsynth_kohya/data/manifest.py"),
    Area("measurements", "medsynth_kohya/data/measure.py", sample=SAMPLE),
    Area("prepared state", "medsynth_kohya/data/prepared.py"),
    Area("shards", "medsynth_kohya/sampling/machines.py"),
    Area("synthetic set", "medsynth_kohya/sampling/synthset.py", sample=SAMPLE),
    Area("locks", "medsynth_kohya/locks.py", sample=SAMPLE),
    Area("run record", "medsynth_kohya/training/record.py"),
    Area("model card", "medsynth_kohya/hub/card.py", sample=SAMPLE),
    Area("isic schema", "medsynth_kohya/data/archive.py", sample=SAMPLE),
    Area("query", "medsynth_kohya/data/query.py", sample=SAMPLE),
    Area("image checks", "medsynth_kohya/data/images.py",
         ("sniff", "content_fits", "_jpeg_complete", "_refined", "_png_chunks", "_png_complete",
          "_alpha_flagged", "_in_pillow", "_complete", "_grey_filled", "scan", "output_suffix")),
    Area("file safety", "medsynth_kohya/files.py"),
    Area("file safety", "medsynth_kohya/outputs.py"),
    Area("push deletions", "medsynth_kohya/hub/push.py",
         ("removals", "Removals.warning", "_named", "_removals", "_commit")),
    Area("push flow", "medsynth_kohya/hub/push.py",
         ("Removals.refusal", "ReplaceRefused.__init__", "resolve_endpoint", "_url_problem",
          "_prepared_of", "_push", "_create_repo", "_sent", "replaced_before", "_preview",
          "_visibility", "_visibility_kept", "_unlisted"), sample=SAMPLE),
    Area("lora source", "medsynth_kohya/hub/pull.py", sample=SAMPLE),
    Area("lora source", "medsynth_kohya/sampling/lora.py"),
    Area("sample run", "medsynth_kohya/sampling/sample.py", sample=SAMPLE),
    Area("synthetic set reading", "medsynth_kohya/evaluation/sets.py", sample=SAMPLE),
    Area("synthetic set reading", "medsynth_kohya/evaluation/features.py"),
    Area("reproduce", "medsynth_kohya/pipeline/reproduce.py", sample=SAMPLE),
    Area("several machines", "medsynth_kohya/training/nodes.py", sample=SAMPLE),
    Area("several machines", "medsynth_kohya/machine/slurm.py"),
    Area("prepare run", "medsynth_kohya/data/prepare.py", sample=SAMPLE),
    Area("new user's checks", "medsynth_kohya/machine/doctor.py", sample=SAMPLE),
    Area("new user's checks", "medsynth_kohya/sdscripts/checkout.py", sample=SAMPLE),
    Area("demo", "medsynth_kohya/pipeline/demo.py"),
    Area("demo", "medsynth_kohya/sdscripts/smoke_model.py"),
    Area("evaluate run", "medsynth_kohya/evaluation/evaluate.py", sample=SAMPLE),
    Area("evaluate run", "medsynth_kohya/evaluation/report.py", sample=SAMPLE),
    Area("sd-scripts options", "medsynth_kohya/sdscripts/sdopts.py", sample=SAMPLE),
    Area("sd-scripts options", "medsynth_kohya/sdscripts/install.py"),
    Area("evaluation measures", "medsynth_kohya/evaluation/utility.py", sample=SAMPLE),
    Area("evaluation measures", "medsynth_kohya/evaluation/fidelity.py"),
    Area("evaluation measures", "medsynth_kohya/evaluation/adherence.py"),
    Area("hub access", "medsynth_kohya/hub/access.py"),
    Area("hub access", "medsynth_kohya/hub/failures.py", sample=SAMPLE),
    Area("hub access", "medsynth_kohya/hub/timeouts.py"),
    Area("isic download", "medsynth_kohya/data/fetch.py"),
    Area("isic download", "medsynth_kohya/data/duplicates.py"),
    Area("generator processes", "medsynth_kohya/sampling/generator.py", sample=SAMPLE),
    Area("generator processes", "medsynth_kohya/sampling/shards.py", sample=SAMPLE),
    Area("generator processes", "medsynth_kohya/sampling/grid.py", sample=SAMPLE),
    Area("generator processes", "medsynth_kohya/machine/gpus.py", sample=SAMPLE),
    Area("argument checks", "medsynth_kohya/arguments.py", sample=SAMPLE),
    Area("presets and evaluation card", "medsynth_kohya/sdscripts/presets.py"),
    Area("presets and evaluation card", "medsynth_kohya/hub/eval_card.py", sample=SAMPLE),
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


def _drawn(area: Area, jobs: int, seed: int = SEED, size: int | None = None) -> list[str]:
    """`area.sample` of its mutants, the same ones every run (mutmut makes every mutant of the
    configured files, and its statistics, on a run that names no mutant of theirs)."""
    import random

    meta = ROOT / "mutants" / f"{area.path}.meta"
    if not meta.is_file():
        # mutmut writes the meta file, then stops on the filter that names no mutant.
        _mutmut([f"{area.globs()[0].split('*')[0]}__no_such_function__*"], jobs, area,
                made=meta)
    names = sorted(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    names = [name for name in names if area.owns(name)]
    return sorted(random.Random(seed).sample(names, min(size or area.sample or len(names),
                                                        len(names))))


NOTHING_MATCHES = "Filtered for specific mutants, but nothing matches"
"""mutmut's words on a filter that names no mutant, after it has written the meta files."""


def _mutmut(names: list[str], jobs: int, area: Area, made: Path | None = None) -> None:
    """Run mutmut on `names`; a failure stops the run with mutmut's last words, unless the one
    thing wanted of it was to write the file `made` and it stopped only on a filter that
    matched nothing (a failing statistics run still stops it)."""
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names]
    done = subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if done.returncode and not (made and made.is_file() and NOTHING_MATCHES in done.stdout):
        lines = [line for line in done.stdout.replace("\r", "\n").splitlines() if line.strip()]
        tail = "\n".join(lines[-15:])
        raise SystemExit(f"mutmut failed on {area.name} (exit {done.returncode}):\n{tail}")


def measure(area: Area, jobs: int, everything: bool, seed: int = SEED,
            size: int | None = None) -> tuple[dict[str, int | None], bool, float, float]:
    """Run mutmut on one area (its sample unless `everything`); the tested mutants' exit codes,
    whether they were a sample, the wall time and the CPU time in seconds (on a shared machine
    the CPU time is the figure that does not depend on the load)."""
    started, cpu = time.perf_counter(), _cpu()
    sampled = area.sample is not None and not everything
    chosen = _drawn(area, jobs, seed, size) if sampled else area.globs()
    _mutmut(chosen, jobs, area)
    codes = _results(area)
    if sampled:
        codes = {name: codes[name] for name in chosen}
    return codes, sampled, time.perf_counter() - started, _cpu() - cpu


def _interval(killed: int, total: int) -> str:
    """The 95% Wilson interval of a sampled score, in points."""
    import math

    if not total:
        return ""
    share, z = killed / total, 1.96
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (
        1 + z * z / total)
    return f" (sample; 95%: {centre - half:.1%}-{centre + half:.1%})"


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help="areas to measure (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="mutants side by side (default: one per CPU)")
    parser.add_argument("--all", action="store_true", help="every mutant of sampled areas too")
    parser.add_argument("--seed", type=int, default=SEED, help="draw of a sampled area")
    parser.add_argument("--sample", type=int, help="size of a sampled area's draw")
    args = parser.parse_args(argv)
    jobs, everything, seed, size, argv = args.jobs, args.all, args.seed, args.sample, args.areas
    wanted = [a for a in AREAS if not argv or a.name.split()[0] in argv or a.name in argv]
    print(f"{'area':22} {'module':38} {'mutants':>7} {'killed':>6} {'survived':>8} "
          f"{'no tests':>8} {'score':>6} {'minutes':>7} {'cpu min':>7} {'load':>5}")
    below = 0
    started, cpu_started, load = time.perf_counter(), _cpu(), os.getloadavg()[0]
    for area in wanted:
        codes, sampled, seconds, cpu = measure(area, jobs, everything, seed, size)
        total = len(codes)
        killed = sum(code in KILLED for code in codes.values())
        untested = sum(code in NO_TESTS for code in codes.values())
        score = killed / total if total else 0.0
        below += score < TARGET
        print(f"{area.name:22} {area.path:38} {total:7d} {killed:6d} "
              f"{total - killed - untested:8d} {untested:8d} {score:6.1%} "
              f"{seconds / 60:7.1f} {cpu / 60:7.1f} {os.getloadavg()[0]:5.1f}"
              f"{_interval(killed, total) if sampled else ''}"
              f"{f' seed {seed}' if sampled else ''}", flush=True)
    wall, cpu = (time.perf_counter() - started) / 60, (_cpu() - cpu_started) / 60
    cpus = os.cpu_count() or 1
    print(f"all: {wall:.1f} wall minutes, {cpu:.1f} CPU minutes with --jobs {jobs} on {cpus} "
          f"CPUs (an idle machine: about {cpu / min(jobs, cpus):.1f} minutes); load "
          f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"target: {TARGET:.0%} killed per area; survivors: `python3 -m mutmut results`")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
