"""The #SBATCH lines of `train --slurm` and `sample --slurm` as sbatch reads them back: a path
or name with spaces, quotes, a backslash or # stays one whole value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine import slurm

from .conftest import invoke
from .fakes import FakeSd


def _sbatch_words(line: str) -> list[str]:
    """The arguments sbatch takes from one #SBATCH line, read as its `_get_argument`
    (src/sbatch/opt.c) reads them: split at unquoted whitespace, ' and " group and are
    removed, a backslash takes the next character as it is, an unquoted # ends the line."""
    rest, at = line.removeprefix("#SBATCH"), 0
    words: list[str] = []
    while True:
        while at < len(rest) and rest[at].isspace():
            at += 1
        if at == len(rest):
            return words
        word, quote, escaped = "", "", False
        while at < len(rest) and (quote or not rest[at].isspace()):
            char, at = rest[at], at + 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    continue
            elif char in "\"'":
                quote = char
                continue
            elif char == "#":
                return [*words, word] if word else words
            word += char
        assert not quote, f"sbatch stops at an unmatched {quote} in {line!r}"
        words.append(word)


def _directives(text: str) -> dict[str, str]:
    """Each #SBATCH line of a script as sbatch reads it: one --key=value argument each."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            [word] = _sbatch_words(line)
            key, _, value = word.removeprefix("--").partition("=")
            found[key] = value
    return found


def test_values_sbatch_would_split_or_cut_are_quoted_as_it_reads_them() -> None:
    tricky = {"job-name": "medsynth-train-a b", "output": "/x/my runs/a b/slurm-%j.out",
              "chdir": "/x/it's \"mine\"", "comment": "run #2 \\ tab\there",
              "partition": "gpu"}
    text = slurm.script(tricky, {"time": "02:00:00"}, ["true"])
    assert _directives(text) == {**tricky, "time": "02:00:00"}
    assert "#SBATCH --partition=gpu\n" in text  # a plain value is written as it is
    with pytest.raises(UserError, match="cannot hold a line break"):
        slurm.script({"output": "/x/a\nb/slurm-%j.out"}, {}, ["true"])


def _scripts(runner: CliRunner, prepared: Path, fake_sd: FakeSd, run: Path, out: Path,
             *extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """The #SBATCH directives of `train --slurm` into `run` and `sample --slurm 2` of it into
    `out`, both dry runs."""
    found = []
    for words in (("train", prepared, "--preset", "cpu-smoke", "--run-dir", run, "--sd-scripts",
                   fake_sd.sd_scripts, "--python", sys.executable, "--num-machines", "2",
                   "--slurm", *extra),
                  ("sample", "--lora", run, "--n", 4, "--out", out, "--slurm", 2)):
        code, stdout, stderr = invoke(runner, *words, "--dry-run")
        assert code == 0, stderr
        found.append(_directives(stdout[stdout.index("#!/bin/bash"):]))
    return found[0], found[1]


def test_train_and_sample_scripts_for_folders_with_spaces(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run = tmp_path / "my runs" / "a b"
    out = tmp_path / "my sets" / "set \"one\""
    trained, sampled = _scripts(runner, prepared, fake_sd, run, out, "--sbatch",
                                "comment=Alice's run #1")
    assert trained["job-name"] == "medsynth-train-a b"
    assert trained["output"] == str(run.resolve() / "slurm-%j.out")
    assert trained["comment"] == "Alice's run #1"
    assert sampled["job-name"] == "medsynth-sample-set \"one\""
    assert sampled["output"] == str(out.resolve() / ".medsynth" / "slurm" / "%A_%a.out")
    code, _, stderr = invoke(runner, "sample", "--lora", run, "--n", 4, "--out",
                             tmp_path / "two\nlines", "--slurm", 2, "--dry-run")
    assert code == 1 and "Traceback" not in stderr and "cannot hold a line break" in stderr


def _sbatch_file_name(pattern: str, job: int, task: int) -> str:
    """The file sbatch writes for an --output `pattern` (`%j`/`%A` job, `%a` task, `%%` a %)."""
    return re.sub(r"%([%jAa])", lambda m: {"%": "%", "j": str(job), "A": str(job),
                                            "a": str(task)}[m.group(1)], pattern)


def test_a_percent_in_a_folder_name_is_not_read_as_a_slurm_pattern(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    run, out = tmp_path / "100%j done" / "run", tmp_path / "50%a" / "set"
    trained, sampled = _scripts(runner, prepared, fake_sd, run, out)
    assert _sbatch_file_name(trained["output"], 7, 0) == str(run.resolve() / "slurm-7.out")
    assert _sbatch_file_name(sampled["output"], 9, 2) == str(
        out.resolve() / ".medsynth" / "slurm" / "9_2.out")


def test_only_the_tool_s_own_variables_expand_in_a_task_a_dollar_in_a_value_stays(
        tmp_path: Path) -> None:
    """A prompt `$HOME` or an --out `set$RUN` reach each task as typed (with `set -u` the
    second killed every task); $SLURM_ARRAY_TASK_ID and $SLURM_NODEID expand per task."""
    from medsynth_kohya.sampling.machines import array_script
    from medsynth_kohya.training.nodes import train_script

    texts = [array_script(["sample", "--prompt", "$HOME", "--out", "set$RUN"], 3, 1,
                          tmp_path / "out", {}),
             train_script(tmp_path / "prep$X", "cpu-smoke", ["metadata_title=$USER"],
                          tmp_path / "run", count=2, gpus=1, port=29500, sd_scripts=None,
                          python=None, resume=False, force=False, sbatch={})]
    said = []
    for text in texts:
        task = re.search(r"^srun .*bash -c (.*)$", text, re.MULTILINE)
        assert task is not None, text
        script = (f"set -u; export MEDSYNTH_MAIN_IP=10.0.0.1; "
                  f"exec() {{ printf '%s\\n' \"$@\"; }}; eval {task.group(1)}")
        said.append(subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                   check=True, env={**os.environ, "SLURM_ARRAY_TASK_ID": "2",
                                                    "SLURM_NODEID": "1"}).stdout.splitlines())
    sample_words, train_words = said
    assert sample_words[:5] == ["sample", "--prompt", "$HOME", "--out", "set$RUN"]
    assert sample_words[-2:] == ["--shard", "2/3"]
    assert str(tmp_path / "prep$X") in train_words and "metadata_title=$USER" in train_words
    assert train_words[train_words.index("--machine-rank") + 1] == "1"
    assert train_words[train_words.index("--main-process-ip") + 1] == "10.0.0.1"


def test_the_submit_hint_pastes_as_shown_for_a_folder_with_spaces(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    import shlex

    run = tmp_path / "my runs" / "a b"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable, "--num-machines", "2", "--slurm")
    assert code == 0, stdout + stderr
    hint = " ".join(stdout.split()).split("submit it with: ")[1]
    assert shlex.split(hint) == ["sbatch", str(run / "train.sbatch")]


@pytest.mark.parametrize(("settings", "extra"), [
    ({"array": "1-2", "ntasks": "1"}, {"array": "1-5"}),
    ({"nodes": "2", "ntasks-per-node": "1"}, {"nodes": "3"}),
    ({"nodes": "2", "ntasks-per-node": "1"}, {"ntasks-per-node": "4"})])
def test_sbatch_may_not_change_the_job_s_shape(settings: dict[str, str],
                                               extra: dict[str, str]) -> None:
    """--slurm 2 with --sbatch array=1-5 ran tasks 3 to 5 as the invalid --shard 3/2."""
    [key] = extra
    with pytest.raises(UserError, match=rf"^--sbatch {key}=… would change the job's shape"):
        slurm.script(settings, extra, ["true"])
    assert "#SBATCH --time=01:00:00" in slurm.script(settings, {"time": "01:00:00"}, ["true"])


@pytest.mark.parametrize(("key", "ours", "given"), [
    ("gpus-per-node", "8", "4"), ("gpus", "4", "a100:2"), ("gpus", "1", "gpu:a100:2")])
def test_sbatch_may_choose_the_gpu_type_but_not_another_count(key: str, ours: str,
                                                              given: str) -> None:
    """Each task runs --gpus G (train) or --num-gpus G (sample): a job given another count
    failed or idled GPUs only once it ran, after its wait in the queue."""
    with pytest.raises(UserError, match=rf"^--sbatch {key}={given} asks for other GPUs than "
                                        rf"the {ours} each task is written for"):
        slurm.script({key: ours}, {key: given}, ["true"])
    text = slurm.script({key: ours}, {key: f"a100:{ours}"}, ["true"])
    assert [line for line in text.splitlines() if line.startswith(f"#SBATCH --{key}=")] == [
        f"#SBATCH --{key}=a100:{ours}"]


def _job(kind: str, sbatch: list[str], tmp_path: Path) -> str:
    """The train script of 2 machines of 8 GPUs, or the sample array of 3 one-GPU tasks."""
    from medsynth_kohya.sampling.machines import array_script
    from medsynth_kohya.training.nodes import train_script

    settings = slurm.parse_settings(sbatch)
    if kind == "sample":
        return array_script(["sample", "--out", "set"], 3, 1, tmp_path / "set", settings)
    return train_script(tmp_path / "prep", "a100-80gb", [], tmp_path / "run", count=2, gpus=8,
                        port=29500, sd_scripts=None, python=None, resume=False, force=False,
                        sbatch=settings)


@pytest.mark.parametrize(("kind", "given", "shape"), [
    ("train", "ntasks=16", "--nodes=2 --ntasks-per-node=1"),
    ("sample", "nodes=2", "--array=1-3 --ntasks=1"),
    ("sample", "ntasks-per-node=4", "--array=1-3 --ntasks=1")])
def test_sbatch_may_not_add_a_shape_setting_the_script_leaves_out(
        kind: str, given: str, shape: str, tmp_path: Path) -> None:
    """--sbatch ntasks=16 beside the train script's --nodes=2 --ntasks-per-node=1 asked SLURM
    for a job the tasks' ranks were not written for; it went into the script unremarked."""
    key = given.partition("=")[0]
    with pytest.raises(UserError) as refused:
        _job(kind, [given], tmp_path)
    assert str(refused.value) == (f"--sbatch {key}=… would change the job's shape, which the "
                                  f"tasks follow (#SBATCH {shape}); leave it out and set the "
                                  "count with --slurm / --num-machines")


@pytest.mark.parametrize(("kind", "given", "ours"), [
    ("train", "gpus=4", "gpus-per-node=8"), ("train", "gpus-per-task=a100:8", "gpus-per-node=8"),
    ("sample", "gpus-per-node=2", "gpus=1"), ("sample", "gpus-per-task=1", "gpus=1")])
def test_sbatch_may_not_ask_for_gpus_through_another_setting(
        kind: str, given: str, ours: str, tmp_path: Path) -> None:
    """--sbatch gpus=4 beside the train script's --gpus-per-node=8 asked SLURM for GPUs the
    tasks were not written for (or SLURM refused the job only once it was submitted)."""
    key, _, value = ours.partition("=")
    with pytest.raises(UserError) as refused:
        _job(kind, [given], tmp_path)
    assert str(refused.value) == (
        f"--sbatch {given} asks for other GPUs than the {value} each task is written for "
        f"(#SBATCH --{ours}); set the count with --gpus (train) or --num-gpus (sample), and "
        f"a type as --sbatch {key}=TYPE:{value}")
    assert f"#SBATCH --{key}=h100:{value}" in _job(kind, [f"{key}=h100:{value}"], tmp_path)


def test_a_shape_setting_given_to_train_slurm_is_one_line(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--sd-scripts",
                                  fake_sd.sd_scripts, "--python", sys.executable,
                                  "--num-machines", "2", "--slurm", "--sbatch", "ntasks=4",
                                  "--dry-run")
    assert code == 1 and "#!/bin/bash" not in stdout and "Traceback" not in stderr
    assert "--sbatch ntasks=… would change the job's shape" in " ".join(stderr.split())


def test_the_script_written_is_the_job_s_text_run_by_anyone_changed_by_its_owner(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `train --slurm` returns (and shows) is the script sbatch was given; the script is
    executable, and no one but its owner can change what the job will run."""
    import stat

    from medsynth_kohya.sdscripts.launch import Machines
    from medsynth_kohya.training.train import Cluster, train

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sbatch").write_text(f'#!/bin/bash\necho "$@" > {tmp_path / "given"}\n'
                                  'echo "4242;cluster-a"\n', encoding="utf-8")
    (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    for submit, job_id in ((False, None), (True, "4242")):
        run = tmp_path / f"run-{submit}"
        job = train(prepared, "cpu-smoke", run_dir=run, sd_scripts=fake_sd.sd_scripts,
                    python=sys.executable, cluster=Cluster(Machines(2), slurm=(),
                                                           submit=submit)).job
        script = run / "train.sbatch"
        assert job is not None and (job.path, job.job_id) == (script, job_id)
        assert job.text == script.read_text(encoding="utf-8")
        assert job.text.startswith("#!/bin/bash\n#SBATCH --job-name=medsynth-train-run-")
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert (tmp_path / "given").read_text().split() == [
        "--parsable", str((tmp_path / "run-True" / "train.sbatch").resolve())]


def test_the_user_s_other_settings_replace_the_script_s(tmp_path: Path) -> None:
    """A job name or log file of the user's own replaces the script's; only the job's shape
    and GPUs are the script's alone."""
    directives = _directives(_job("train", ["job-name=mine", "output=/logs/%j.out"], tmp_path))
    assert (directives["job-name"], directives["output"]) == ("mine", "/logs/%j.out")
    assert (directives["nodes"], directives["gpus-per-node"]) == ("2", "8")


@pytest.mark.parametrize("value", ["a\rb", "a\nb"])
def test_a_line_break_in_a_value_is_one_line_saying_so(value: str) -> None:
    with pytest.raises(UserError) as refused:
        slurm.script({"ntasks": "1"}, {"comment": value}, ["true"])
    assert str(refused.value) == (f"#SBATCH --comment={value!r} cannot hold a line break: "
                                  "rename the folder or choose a value without one")


def _run_train_job(tmp_path: Path, scontrol: str,
                   srun: str | None = None) -> subprocess.CompletedProcess[str]:
    """The train job's script run by bash on nodes n[1-2], with `scontrol` as the stand-in's
    body and an srun whose body is `srun`, by default one that only marks tmp_path/started."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, body in (("scontrol", scontrol),
                       ("srun", srun or f"touch {tmp_path / 'started'}")):
        (tools / name).write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
        (tools / name).chmod(0o755)
    (tmp_path / "job.sbatch").write_text(_job("train", [], tmp_path), encoding="utf-8")
    return subprocess.run(["bash", str(tmp_path / "job.sbatch")], capture_output=True,
                          text=True, env={**os.environ, "SLURM_JOB_NODELIST": "n[1-2]",
                                          "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})


def test_a_job_whose_first_host_cannot_be_found_stops_before_any_task(tmp_path: Path) -> None:
    """scontrol failing in the prologue (not on the compute node's PATH, the controller not
    answering) ends the job at once with its error, not with every task told to give a
    --main-process-ip it cannot give under SLURM."""
    done = _run_train_job(tmp_path, "echo 'scontrol: error: no controller' >&2; exit 1")
    assert done.returncode != 0 and "no controller" in done.stderr
    assert not (tmp_path / "started").exists()


def test_a_job_of_many_hosts_starts_its_tasks_with_the_first(tmp_path: Path) -> None:
    """scontrol lists every host of a large job; reading only the first must not end the job
    (under `set -o pipefail`, `| head -n 1` closing the pipe killed scontrol with SIGPIPE, and
    the script stopped there without a word)."""
    srun = f'echo "$MEDSYNTH_MAIN_IP" > {tmp_path / "started"}'
    done = _run_train_job(tmp_path, 'for ((i = 1; i <= 50000; i++)); do echo "n$i"; done',
                          srun=srun)
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "started").read_text(encoding="utf-8") == "n1\n"


def test_a_value_may_hold_an_equals_sign() -> None:
    assert slurm.parse_settings(["export=ALL,NCCL_DEBUG=INFO", "--time=1:00:00"]) == {
        "export": "ALL,NCCL_DEBUG=INFO", "time": "1:00:00"}


@pytest.mark.parametrize("item", ["partition", "=gpu", "Partition=gpu", "part ition=gpu",
                                  "time=", "time=  ", "comment=a\nb"])
def test_an_sbatch_item_that_is_not_key_value_is_one_line(item: str) -> None:
    with pytest.raises(UserError) as refused:
        slurm.parse_settings(["time=1:00:00", item])
    assert str(refused.value) == (f"--sbatch {item!r} must look like KEY=VALUE, e.g. --sbatch "
                                  "partition=gpu or --sbatch time=24:00:00")


@pytest.mark.parametrize("said", ["", "sbatch: warning: no partition given\n"])
def test_a_job_sbatch_took_without_an_id_is_never_offered_for_submitting_again(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, said: str) -> None:
    """sbatch exiting 0 with no job id on stdout may well have queued the job: the tool said
    "submit it with: sbatch …", inviting a second copy of the job into the queue."""
    import shlex

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sbatch").write_text(f"#!/bin/bash\nprintf %s {shlex.quote(said)}\n"
                                  f"touch {tmp_path / 'took'}\n", encoding="utf-8")
    (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--python", sys.executable, "--num-machines", "2", "--slurm",
                                  "--submit")
    told = " ".join(stdout.split())
    assert code == 0 and (tmp_path / "took").exists(), stdout + stderr
    assert "submit it" not in told and "sbatch " not in told.replace(str(run / "train.sbatch"), "")
    assert f"Handed {run / 'train.sbatch'} to sbatch" in told and "squeue --me" in told



def test_a_training_job_that_asks_no_cpus_is_warned_of(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    """SLURM gives a task one CPU unless asked (or configured) otherwise: every training
    process of the machine and its data loaders would share it."""
    base = ("train", prepared, "--preset", "cpu-smoke", "--run-dir", tmp_path / "run",
            "--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable, "--slurm",
            "--dry-run")
    code, stdout, stderr = invoke(runner, *base)
    assert code == 0 and "#SBATCH --cpus" not in stdout, stderr
    assert "add --sbatch cpus-per-task=N" in " ".join(stderr.split())
    for setting in ("cpus-per-task=16", "cpus-per-gpu=8", "mincpus=32"):
        code, stdout, stderr = invoke(runner, *base, "--sbatch", setting)
        assert code == 0 and f"#SBATCH --{setting}" in stdout.splitlines(), stderr
        assert "cpus-per-task=N" not in " ".join(stderr.split())


def test_an_sbatch_that_does_not_answer_may_have_queued_the_job(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow controller: sbatch given up after its time may still queue the job, so the
    message says to look in the queue before submitting again."""
    from medsynth_kohya.sdscripts import launch

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "sbatch").write_text("#!/bin/bash\nexec sleep 30\n", encoding="utf-8")
    (tools / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(launch, "SHORT_TIMEOUT_S", 0.5)
    run = tmp_path / "run"
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             run, "--sd-scripts", fake_sd.sd_scripts, "--python",
                             sys.executable, "--slurm", "--submit")
    told = " ".join(stderr.split())
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert (f"sbatch did not answer within 0.5 s; it may have queued the job all the same: "
            f"check squeue --me before submitting {run / 'train.sbatch'} again") in told


@pytest.mark.parametrize(("kind", "given", "ours"), [
    ("train", "gres=gpu:4", "gpus-per-node=8"), ("train", "gres=gpu:a100:2", "gpus-per-node=8"),
    ("train", "gres=tmpfs:10G,gpu:a100:16", "gpus-per-node=8"),
    ("sample", "gres=gpu", "gpus=2"), ("sample", "gres=gpu:h100:4(S:0)", "gpus=2")])
def test_sbatch_gres_may_not_ask_for_another_gpu_count(kind: str, given: str, ours: str,
                                                       tmp_path: Path) -> None:
    """--sbatch gres=gpu:4 beside the train script's --gpus-per-node=8 went into the script
    unchecked: the job waited in the queue for GPUs its tasks were not written for."""
    from medsynth_kohya.sampling.machines import array_script

    key, _, value = ours.partition("=")

    def job(sbatch: list[str]) -> str:
        if kind == "sample":
            return array_script(["sample", "--out", "set"], 3, int(value), tmp_path / "set",
                                slurm.parse_settings(sbatch))
        return _job(kind, sbatch, tmp_path)

    with pytest.raises(UserError) as refused:
        job([given])
    assert str(refused.value) == (
        f"--sbatch {given} asks for other GPUs than the {value} each task is written for "
        f"(#SBATCH --{ours}); set the count with --gpus (train) or --num-gpus (sample), and "
        f"a type as --sbatch {key}=TYPE:{value}")
    same = f"gres=tmpfs:10G,gpu:h100:{value}"
    assert f"#SBATCH --gres={same.partition('=')[2]}" in job([same])
    assert "#SBATCH --gres=tmpfs:10G" in job(["gres=tmpfs:10G"])



def test_a_job_told_no_first_host_stops_before_any_task(tmp_path: Path) -> None:
    """scontrol answering 0 with no host named gave every task an empty --main-process-ip."""
    done = _run_train_job(tmp_path, "exit 0")
    assert done.returncode != 0 and not (tmp_path / "started").exists()
    assert "named no host for n[1-2]" in done.stderr


@pytest.mark.parametrize("kind", ["train", "sample"])
def test_sbatch_may_not_move_the_job_s_working_folder(kind: str, tmp_path: Path) -> None:
    """--sbatch chdir=/elsewhere replaced the script's own chdir: the tasks' relative paths
    (--python, a --lora or --out as typed) were then read from another folder."""
    with pytest.raises(UserError) as refused:
        _job(kind, ["chdir=/elsewhere"], tmp_path)
    assert str(refused.value) == (
        f"--sbatch chdir=… would move the job out of {Path.cwd()}, the folder its paths are "
        "read from (#SBATCH --chdir); leave it out and run the command from the folder the "
        "job should start in")


@pytest.mark.parametrize(("kind", "given", "full"), [
    ("sample", "arr=1-9", "--array"), ("train", "node=3", "--nodes"),
    ("train", "gpus-per-n=4", "--gpus-per-node"), ("sample", "chd=/elsewhere", "--chdir"),
    ("train", "gre=gpu:4", "--gres")])
def test_a_shortened_name_of_a_checked_setting_is_refused(kind: str, given: str, full: str,
                                                         tmp_path: Path) -> None:
    """sbatch reads #SBATCH options as getopt_long does, a unique start of a name as the whole
    name: --sbatch arr=1-9 went in unchecked and ran shards 4 to 9 of the --shard K/3 job."""
    key = given.partition("=")[0]
    with pytest.raises(UserError) as refused:
        _job(kind, [given], tmp_path)
    assert str(refused.value).startswith(f"--sbatch {key}=… may be read by sbatch as ")
    assert full in str(refused.value) and "write the setting's full name" in str(refused.value)
    assert "#SBATCH --partition=gpu" in _job(kind, ["partition=gpu"], tmp_path)
