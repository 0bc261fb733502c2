"""One training run on several machines: who takes part, whether they can, and when to start.

Every machine runs the same `train` with its own `--machine-rank`; the run folder (shared by
all, as the prepared folder and sd-scripts' files must be) is where they meet, never a
scheduler of ours. Each machine writes its report (`RUN/nodes/machine-R.json`: host, pid,
GPUs) while holding the run folder's part-lock `machine-R`. Rank 0 renders and checks the run,
waits for every report, checks every machine's GPUs against the config (bf16 on each, enough
of them), records them all in run.json and writes its decision (`RUN/nodes/launch.json`: go
with the launch values, or the refusal). The others wait for that decision, then start their
own `accelerate launch`; accelerate's rendezvous at rank 0's address does the rest.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medsynth_kohya import files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sdscripts import checks
from medsynth_kohya.sdscripts.launch import DEFAULT_PORT, Machines, own_command
from medsynth_kohya.training.record import GpuRecord

FOLDER = "nodes"
"""RUN/nodes/: the machines' reports and rank 0's decision."""
DECISION = "launch.json"
WAIT_S = 900.0
"""How long a machine waits for the others (SLURM starts a job's machines together; by hand
they may be started one after another)."""
POLL_S = 0.5


def part(rank: int) -> str:
    """The name of machine `rank`'s part-lock on the run folder."""
    return f"machine-{rank}"


def _report_path(run_dir: Path, rank: int) -> Path:
    return run_dir / FOLDER / f"{part(rank)}.json"


def describe_gpus(gpus: Sequence[Gpu]) -> list[dict[str, Any]]:
    """GPUs as the run record notes them."""
    return [GpuRecord.of(gpu).to_dict() for gpu in gpus]


def _gpus(report: Mapping[str, Any]) -> list[Gpu]:
    """The GPUs a machine's report names (an entry that is not a GPU is left out)."""
    return [GpuRecord.from_dict(entry).gpu() for entry in report.get("gpus") or []
            if isinstance(entry, dict)]


def report(rank: int, gpus: Sequence[Gpu]) -> dict[str, Any]:
    """What a machine says of itself: rank, host, pid and GPUs."""
    return {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
            "gpus": describe_gpus(gpus)}


def write_report(run_dir: Path, rank: int, gpus: Sequence[Gpu], **status: Any) -> dict[str, Any]:
    """Write this machine's report, with its status (waiting, running, how its launch ended)."""
    written = {**report(rank, gpus), "time": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), **status}
    files.write_json(_report_path(run_dir, rank), written)
    return written


def _live_report(run_dir: Path, rank: int) -> dict[str, Any] | None:
    """Machine `rank`'s report when the process that wrote it still holds its part-lock and
    waits for a go (one still running an earlier launch would follow no new one)."""
    try:
        report: dict[str, Any] = json.loads(_report_path(run_dir, rank).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("status") != "waiting":
        return None
    holder = locks.holder(run_dir, part(rank))
    if holder is None or (holder.host, holder.pid) != (report.get("host"), report.get("pid")):
        return None
    return report


def present(run_dir: Path, count: int) -> list[dict[str, Any]]:
    """The reports of machines 1..count-1 whose process is still there waiting, by rank."""
    return [r for r in (_live_report(run_dir, rank) for rank in range(1, count)) if r]


def gather(run_dir: Path, count: int, own: dict[str, Any],
           wait_s: float = WAIT_S) -> list[dict[str, Any]]:
    """Every machine's report, rank 0's first, waiting up to `wait_s` for the others."""
    deadline = time.monotonic() + wait_s
    while True:
        others = present(run_dir, count)
        if len(others) == count - 1:
            return [own, *others]
        if time.monotonic() >= deadline:
            missing = sorted(set(range(1, count)) - {int(r["rank"]) for r in others})
            raise UserError(f"{'machine' if len(missing) == 1 else 'machines'} "
                            f"{', '.join(map(str, missing))} of {count} did not "
                            f"report in {run_dir / FOLDER} within {wait_s:g} s: start `train` "
                            "with the same options and --machine-rank there, on the same run "
                            "folder (a shared file system)")
        time.sleep(POLL_S)


def mismatches(reports: Sequence[Mapping[str, Any]], machines: Machines) -> list[str]:
    """Machines started with another machine count or port than rank 0: accelerate would
    start them all and then wait for machines that never join."""
    found = []
    ours = {"--num-machines": machines.count, "--main-process-port": machines.main_port}
    for report in reports:
        theirs = {"--num-machines": report.get("num_machines", machines.count),
                  "--main-process-port": report.get("main_process_port", machines.main_port)}
        if theirs != ours:
            found.append(f"machine {report['rank']} ({report['host']}) was started with "
                         f"{_flags(theirs)}, machine 0 with {_flags(ours)}: start every "
                         "machine with the same values")
    return found


def _flags(values: Mapping[str, Any]) -> str:
    return " ".join(f"{flag} {value}" for flag, value in values.items())


def problems(options: Mapping[str, Any], reports: Sequence[Mapping[str, Any]],
             processes: int, min_memory_gib: float) -> list[str]:
    """What any machine's GPUs cannot run, one line each, naming the machine."""
    found = []
    for report in reports:
        where = f"machine {report['rank']} ({report['host']})"
        gpus = _gpus(report)
        if not gpus:
            found.append(f"{where} reports no NVIDIA GPU (nvidia-smi found none)")
            continue
        found += [f"{where}: {line}" for line in
                  checks.gpu_errors(options, gpus, processes, min_memory_gib)]
    return found


def decide(run_dir: Path, **decision: Any) -> None:
    """Rank 0's decision for the others: `status="go"` with the launch values, or "refused"
    with the message; `leader` makes every decision new, so none is mistaken for an old one."""
    leader = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time_ns()}
    files.write_json(run_dir / FOLDER / DECISION, {**decision, "leader": leader})


def read_decision(run_dir: Path) -> dict[str, Any] | None:
    """Rank 0's decision now in the run folder (an earlier one, or None). A machine reads it
    before it reports, since rank 0 may answer its report at once."""
    try:
        data: dict[str, Any] = json.loads((run_dir / FOLDER / DECISION).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data


def await_decision(run_dir: Path, mine: Mapping[str, Any], old: Mapping[str, Any] | None,
                   wait_s: float = WAIT_S) -> dict[str, Any]:
    """Rank 0's go for this machine's report (a decision other than `old`, read before the
    report was written); its refusal, or a timeout, is a UserError."""
    deadline = time.monotonic() + wait_s
    key = (mine["rank"], mine["host"], mine["pid"])
    while True:
        decision = read_decision(run_dir)
        if decision is not None and decision != old:
            if decision.get("status") == "refused":
                raise UserError(f"machine 0 refused the run: {decision.get('message')}")
            if key in {(r["rank"], r["host"], r["pid"]) for r in decision.get("machines", [])}:
                return decision
        if time.monotonic() >= deadline:
            raise UserError(f"machine 0 did not start the run in {run_dir} within {wait_s:g} s: "
                            "start `train` with the same options and --machine-rank 0 on the "
                            "machine at --main-process-ip")
        time.sleep(POLL_S)


def from_accelerate_config(path: Path) -> tuple[Machines, int]:
    """The machines and the total process count an `accelerate config` file sets, refusing
    one that accelerate would start and then hang on (its processes do not divide evenly
    over its machines, a rank out of range, no address for rank 0)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"--accelerate-config {path} cannot be read as accelerate's YAML or "
                        f"JSON config: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"--accelerate-config {path} holds no settings; write it with "
                        "`accelerate config --config_file FILE`")
    try:
        count = int(data.get("num_machines") or 1)
        total = int(data.get("num_processes") or 0)
        machines = Machines(count, int(data.get("machine_rank") or 0),
                            data.get("main_process_ip") or None,
                            int(data.get("main_process_port") or DEFAULT_PORT))
    except (TypeError, ValueError):
        raise UserError(f"--accelerate-config {path}: num_machines, num_processes, "
                        "machine_rank and main_process_port must be whole numbers") from None
    found = machines.problems()
    if total < 1:
        found.append("num_processes is not set; accelerate needs it (all machines' processes "
                     "together)")
    elif total % count:
        found.append(f"num_processes {total} does not divide over num_machines {count}: "
                     f"accelerate would start {total // count} per machine and the run would "
                     f"wait for the rest; use a multiple of {count}")
    if found:
        raise UserError(f"--accelerate-config {path}: {found[0]}")
    return machines, total // count


def train_script(prepared: Path, preset: str, overrides: Sequence[str], run_dir: Path, *,
                 count: int, gpus: int, port: int, sd_scripts: Path | None, python: str | None,
                 resume: bool, force: bool, sbatch: Mapping[str, str]) -> str:
    """The sbatch script of a training run on `count` machines of `gpus` GPUs each (0: a CPU
    preset's run, which asks SLURM for none): one task per machine runs `train` with its rank
    from SLURM (SLURM_NODEID) and rank 0's address (the job's first host), and so one
    `accelerate launch` per machine; `resume` and `force` as given, so the job goes on from
    the run or starts it over as asked."""
    from medsynth_kohya.machine import slurm

    preset_arg = str(Path(preset).resolve()) if Path(preset).suffix == ".toml" else preset
    args = ["train", str(prepared.resolve()), "--preset", preset_arg,
            *[word for item in overrides for word in ("--set", item)],
            "--run-dir", str(run_dir.resolve()), *(["--gpus", str(gpus)] if gpus else []),
            "--num-machines", str(count), "--machine-rank", slurm.Variable("$SLURM_NODEID"),
            "--main-process-ip", slurm.Variable("$MEDSYNTH_MAIN_IP"), "--main-process-port",
            str(port)]
    if sd_scripts is not None:
        args += ["--sd-scripts", str(sd_scripts.resolve())]
    if python is not None:
        args += ["--python", python]
    args += [flag for flag, given in (("--resume", resume), ("--force", force)) if given]
    settings = {"job-name": f"medsynth-train-{run_dir.resolve().name}", "nodes": str(count),
                "ntasks-per-node": "1", **({"gpus-per-node": str(gpus)} if gpus else {}),
                "chdir": str(Path.cwd()), "output": slurm.log_file(run_dir, "slurm-%j.out")}
    # assigned apart from `export`, whose own status would hide scontrol's failure from set -e;
    # no `| head -n 1`: under pipefail, the pipe it closes kills a long listing's scontrol
    hosts = 'MEDSYNTH_HOSTS="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"'
    main_ip = 'MEDSYNTH_MAIN_IP="${MEDSYNTH_HOSTS%%[[:space:]]*}"'  # the first line's host
    # scontrol may answer 0 with no host: no task may start with an empty --main-process-ip
    named = ('test -n "$MEDSYNTH_MAIN_IP" || { echo "scontrol show hostnames named no host '
             'for $SLURM_JOB_NODELIST, so no task has rank 0\'s address" >&2; exit 1; }')
    return slurm.script(settings, sbatch, slurm.quote(own_command(*args)),
                        srun=("srun", f"--nodes={count}", "--ntasks-per-node=1"),
                        before=(hosts, main_ip, named, "export MEDSYNTH_MAIN_IP"))
