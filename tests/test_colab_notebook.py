"""The Colab notebook runs for real: its cells go through IPython, as in Colab, with Google's
modules (`drive.mount`, `userdata.get`) and `%pip` replaced, every `!` line run by bash against
the stand-ins for isic-cli, sd-scripts and the Hub. A disconnect in the middle of training
(every process killed) is survived by running the whole notebook again."""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from medsynth_kohya import locks
from medsynth_kohya.pipeline.reproduce import PRESET, reproduce
from medsynth_kohya.sdscripts import checkout, launch

from .command_lines import PROGRAM, parse
from .conftest import REPO
from .fake_gen import PYTHON, FakeGen, install_gpus, make_fake_gen
from .fake_hub import TOKEN, FakeHub
from .fakes import install_fake_isic

NOTEBOOK = REPO / "notebooks" / "medsynth_kohya_colab.ipynb"
DRIVE = "/content/drive"
_PROGRAM = """#!/bin/sh
PYTHONPATH="{repo}:$PYTHONPATH" exec "{python}" -c '
import sys
from medsynth_kohya.entry import main
from medsynth_kohya.sdscripts import checkout, launch
checkout.PINNED_COMMIT = "{pin}"  # the release commit of the stand-in upstream
checkout.checkout_root = lambda: None  # installed from a wheel, as in Colab
main()' "$@"
"""
"""`medsynth-kohya` as pip installs it in Colab, with the stand-in upstream's commit as the pin."""
_PARAM = re.compile(r"^(?P<name>[A-Z_]+) = (?P<value>.+?)\s+#@param", re.MULTILINE)


def _code_cells() -> list[str]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_valid_with_empty_outputs_and_original_defaults() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    params = {m["name"]: ast.literal_eval(m["value"]) for c in code
              for m in _PARAM.finditer(c.source)}
    assert set(params) == {"REPO_ID", "PRESET", "N_IMAGES", "STEPS"}
    assert params["PRESET"] == PRESET
    assert params["STEPS"] == ""  # the preset's own: none forced on another preset
    assert params["N_IMAGES"] == inspect.signature(reproduce).parameters["n"].default
    text = "\n".join(c.source for c in code)
    assert "hf_" not in text and 'userdata.get("HF_TOKEN")' in text


def _settings(**fields: Any) -> dict[str, Any]:
    """The first cell's form fields and what it builds from them (REPRODUCE), with `fields`
    changed as a user changes them in Colab's form."""
    source = _with_fields(_code_cells(), **fields)[0]
    block = source[_PARAM.search(source).start():].split("\n\n", 1)[0]  # type: ignore[union-attr]
    names: dict[str, Any] = {}
    exec(block, names)  # the notebook's own assignments
    return names


def _command_lines(cells: slice = slice(None), **fields: Any) -> list[str]:
    """Every medsynth-kohya command line of the notebook's `cells`, its {NAME}s filled in."""
    names = _settings(**fields)
    text = "\n".join(_code_cells()[cells]).replace("\\\n", " ")
    lines = [line[1:] for line in text.splitlines() if line.startswith("!")]
    parts = [part.strip() for line in lines for part in re.split(r";|&&|\bthen\b|\belse\b", line)]
    filled = [re.sub(r"\{([A-Z_]+)\}", lambda m: str(names[m[1]]), part) for part in parts]
    return [part for part in filled if part.startswith(PROGRAM + " ")]


@pytest.mark.parametrize("preset", ["medsynthx-2023", "t4-16gb"])
def test_the_notebook_s_command_lines_parse_and_keep_the_preset_s_steps(preset: str) -> None:
    lines = _command_lines(PRESET=preset)
    assert [parse(line)[0] for line in lines] == [
        "install-sd-scripts", "reproduce", "doctor", "fetch-isic", "reproduce", "reproduce",
        "push"]
    assert not any("max_train_steps" in line for line in lines)
    chosen = _command_lines(PRESET=preset, STEPS="24")
    assert all(line.count("--set max_train_steps=24") == 1 for line in chosen
               if parse(line) == ("reproduce",))


def test_the_notebook_runs_the_readme_walkthrough_and_pushes_reproduce_s_set() -> None:
    """One synthetic set: the one reproduce writes in its workdir, which both push."""
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("<!-- walkthrough:", 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    walkthrough = [line for line in block[1].splitlines() if line.startswith(PROGRAM + " ")]
    notebook = _command_lines(slice(1, None))  # the first cell installs and looks back
    assert [parse(line) for line in notebook] == [parse(line) for line in walkthrough]
    for lines in (walkthrough, notebook):
        workdir = re.search(r"reproduce \S+ --workdir (\S+)", "\n".join(lines))
        assert workdir is not None
        push = [line for line in lines if parse(line) == ("push",)]
        assert len(push) == 1 and f"--samples {workdir[1]}/synthetic" in push[0]


@dataclass
class Ran:
    """One `!` line as bash ran it, after IPython put the notebook's variables in."""

    command: str
    code: int
    output: str


class Colab(InteractiveShell):
    """IPython as Colab runs it, except that `!` lines are recorded and may be cut short."""

    ran: list[Ran]
    pip: list[str]
    disconnect_when: Callable[[], bool] | None = None

    def system(self, cmd: str) -> None:
        """Run a `!` line with bash; a disconnect SIGKILLs it and everything it started."""
        command = self.var_expand(cmd, depth=1)
        log = Path(os.environ["COLAB_TEST_LOG"])
        with log.open("w", encoding="utf-8") as sink:
            process = subprocess.Popen(["bash", "-c", command], stdout=sink,
                                       stderr=subprocess.STDOUT)
            while process.poll() is None:
                if self.disconnect_when is not None and self.disconnect_when():
                    _kill_tree(process.pid)
                time.sleep(0.05)
        self.ran.append(Ran(command, process.returncode, log.read_text(encoding="utf-8")))
        self.user_ns["_exit_code"] = process.returncode


def _kill_tree(root: int) -> None:
    """SIGKILL `root` and every process under it, whatever session it started: the runtime
    going away."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    doomed, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in doomed]
        doomed.update(children)
        frontier.extend(children)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Session:
    """One Colab runtime: a fresh kernel (and home folder) running the notebook's cells."""

    shell: Colab
    drive: Path

    def run(self, sources: list[str], stop_after: int | None = None) -> None:
        for index, source in enumerate(sources):
            result = self.shell.run_cell(source.replace(DRIVE, str(self.drive)),
                                         store_history=False)
            result.raise_error()
            if stop_after == index:
                return


@pytest.fixture
def colab(tmp_path: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
          ) -> Iterator[Callable[[str], Session]]:
    """Starts Colab runtimes against the stand-ins; Google's modules are fakes."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the processes a disconnect kills")
    fake: FakeGen = make_fake_gen(tmp_path / "sd", monkeypatch)
    install_gpus(fake, tmp_path, monkeypatch, 1)
    install_fake_isic(tmp_path, monkeypatch)
    upstream = fake.sd_scripts  # kohya-ss/sd-scripts for install-sd-scripts to clone
    for args in (("init", "-q"), ("add", "."), ("commit", "-qm", "release"),
                 ("tag", checkout.PINNED_RELEASE)):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=upstream, check=True)
    pin = checkout.commit(upstream)
    program = tmp_path / "bin" / "medsynth-kohya"
    program.write_text(_PROGRAM.format(repo=REPO, python=sys.executable, pin=pin),
                       encoding="utf-8")
    program.chmod(0o755)
    drive = tmp_path / "content" / "drive"
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    env = {checkout.ENV_URL: str(upstream), "MEDSYNTH_SD_PYTHON": PYTHON,
           "HF_ENDPOINT": fake_hub.url, "HF_HUB_DISABLE_XET": "1", "COLUMNS": "200",
           "HF_HOME": str(tmp_path / "hf-home"), "COLAB_TEST_LOG": str(tmp_path / "ran.log"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_TOKEN", "")  # so that what the push cell sets is undone after
    monkeypatch.delenv("HF_TOKEN")

    def mount(mountpoint: str, force_remount: bool = False) -> None:
        (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)
        print(f"Mounted at {mountpoint}")

    def get(key: str) -> str:
        if key != "HF_TOKEN":
            raise KeyError(f"Secret {key} does not exist.")
        return TOKEN

    modules = {name: ModuleType(name) for name in
               ("google.colab", "google.colab.drive", "google.colab.userdata")}
    modules["google.colab.drive"].__dict__["mount"] = mount
    modules["google.colab.userdata"].__dict__["get"] = get
    modules["google.colab"].__dict__.update(drive=modules["google.colab.drive"],
                                            userdata=modules["google.colab.userdata"])
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.chdir(tmp_path)
    shells: list[Colab] = []
    names = set(vars(builtins))

    def start(name: str) -> Session:
        home = tmp_path / "vm" / name
        home.mkdir(parents=True)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        config = Config()
        config.HistoryManager.enabled = False
        shell = Colab(config=config)
        shell.ran, shell.pip = [], []

        def pip(line: str) -> None:
            shell.pip.append(line)

        assert shell.magics_manager is not None
        shell.magics_manager.register_function(pip, "line", "pip")
        shells.append(shell)
        return Session(shell, drive)

    yield start
    for shell in shells:
        shell.cleanup()
    for name in set(vars(builtins)) - names:  # IPython's __IPYTHON__ and display
        delattr(builtins, name)


def _with_fields(sources: list[str], **values: Any) -> list[str]:
    """The cells with these form fields changed, as a user changes them in Colab's form."""
    def change(match: re.Match[str]) -> str:
        name = match["name"]
        return match[0] if name not in values else match[0].replace(
            match["value"], repr(values[name]), 1)
    return [_PARAM.sub(change, source) for source in sources]


def _medsynth(session: Session) -> list[list[str]]:
    """The medsynth-kohya commands bash ran, in order, as argument lists."""
    found = []
    for ran in session.shell.ran:
        for part in re.split(r";|&&|\bthen\b|\belse\b", ran.command):
            words = part.split()
            if words[:1] == ["medsynth-kohya"]:
                found.append(words[1:])
    return found


def _notebook(fake_hub: FakeHub) -> tuple[list[str], int]:
    """The cells with short form values (24 steps, 3 images, the loopback Hub's repo), and
    the index of the training cell."""
    cells = _with_fields(_code_cells(), REPO_ID=f"{fake_hub.user}/medsynth-melanoma-lora",
                         N_IMAGES=3, STEPS="24")
    return cells, next(i for i, c in enumerate(cells) if c.endswith("{REPRODUCE}"))


def _disconnected(colab: Callable[[str], Session], fake_hub: FakeHub, output: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Session:
    """A first runtime, cut off once training has saved its first state (the original preset
    saves every 2 epochs: at 12 of the 24 steps with the stand-in isic's 6 images)."""
    cells, train_cell = _notebook(fake_hub)
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    first = colab("first")
    first.shell.disconnect_when = lambda: any(output.glob("*-state/random_states_0.pkl"))
    first.run(cells, stop_after=train_cell)
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    killed = first.shell.ran[-1]
    assert killed.code < 0 and "reproduce" in killed.command
    assert [p.name for p in output.glob("*-state")] == ["melanoma-000002-state"]
    assert not (output / "melanoma.safetensors").exists()
    assert all(r.code == 0 for r in first.shell.ran[:-1]), first.shell.ran
    assert "starting fresh" in next(r.output for r in first.shell.ran
                                    if "reproduce.json" in r.command)
    assert first.shell.pip and "medsynth-kohya[train,fetch]" in first.shell.pip[0]
    # xformers' wheels each need one torch: pinning the runtime's own keeps Colab's build
    assert f'xformers "torch=={sys.modules["torch"].__version__}"' in first.shell.pip[0]
    return first


def _resumed_from() -> str:
    argv: list[str] = json.loads(
        Path(os.environ["FAKE_SD_RECORD"]).read_text(encoding="utf-8"))["argv"]
    return argv[argv.index("--resume") + 1] if "--resume" in argv else ""


def test_runs_top_to_bottom_and_survives_a_disconnect_in_training(
        colab: Callable[[str], Session], fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "content" / "drive" / "MyDrive" / "medsynth-kohya"
    first = _disconnected(colab, fake_hub, work / PRESET / "run" / "output", monkeypatch)
    cells, _ = _notebook(fake_hub)

    # A new runtime, from the top: the first cell says what will resume; training resumes.
    second = colab("second")
    second.run(cells)
    assert all(r.code == 0 for r in second.shell.ran), second.shell.ran
    status = next(r.output for r in second.shell.ran if "--dry-run" in r.command)
    assert re.search(r"prepare\s*│?\s*skip", status)
    assert re.search(r"train\s*│?\s*resume", status)
    assert _resumed_from().endswith("melanoma-000002-state")
    record = json.loads((work / PRESET / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded" and record["config"]["max_train_steps"] == 24
    assert len(list((work / PRESET / "synthetic" / "images").glob("*.png"))) == 3
    saved = [p.name for p in (work / PRESET / "run" / "output").iterdir()]
    assert sorted(saved) == [launch.STEP_OFFSET, "melanoma-000002.safetensors",
                             "melanoma-state", "melanoma.safetensors"]  # one state left
    published = fake_hub.repos[f"{fake_hub.user}/medsynth-melanoma-lora"]
    assert "melanoma.safetensors" in published.files and "README.md" in published.files
    assert [c[0] for c in _medsynth(second)] == [
        "install-sd-scripts", "reproduce", "doctor", "fetch-isic", "reproduce", "reproduce",
        "push"]
    clone = tmp_path / "vm" / "second" / ".local" / "share" / "medsynth-kohya" / "sd-scripts"
    assert "cloned" in next(r.output for r in second.shell.ran if "install-sd" in r.command)
    trained_in = json.loads(Path(os.environ["FAKE_SD_RECORD"]).read_text())["cwd"]
    assert Path(trained_in).resolve() == clone.resolve()

    # Another runtime changes nothing: every stage is skipped, the Hub gets no new commit.
    commits = list(published.commits)
    third = colab("third")
    third.run(cells)
    assert all(r.code == 0 for r in third.shell.ran), third.shell.ran
    status = next(r.output for r in third.shell.ran if "--dry-run" in r.command)
    assert len(re.findall(r"skip \(inputs unchanged\)", status)) == 3
    assert published.commits == commits
    everything = [r.output for s in (first, second, third) for r in s.shell.ran]
    assert not any(TOKEN in output for output in everything)


def _moved(work: Path, silent_s: float) -> None:
    """The lock records on Drive as the disconnected VM left them: another host's, its last
    heartbeat `silent_s` ago (a new Colab runtime is another machine)."""
    beat = (datetime.now(timezone.utc) - timedelta(seconds=silent_s)).isoformat(
        timespec="seconds")
    for lock in work.rglob(".medsynth-lock*"):
        record = json.loads(lock.read_text(encoding="utf-8"))
        lock.write_text(json.dumps({**record, "host": "colab-vm-that-disconnected",
                                    "beat": beat}), encoding="utf-8")


def test_a_new_runtime_on_another_host_resumes_once_the_old_one_is_silent(
        colab: Callable[[str], Session], fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "content" / "drive" / "MyDrive" / "medsynth-kohya"
    _disconnected(colab, fake_hub, work / PRESET / "run" / "output", monkeypatch)
    cells, train_cell = _notebook(fake_hub)

    # Reconnected at once: the old VM may still be writing, so the training cell says so.
    _moved(work, silent_s=60)
    second = colab("second")
    second.run(cells, stop_after=train_cell)
    assert all(r.code == 0 for r in second.shell.ran[:-1]), second.shell.ran
    status = " ".join(next(r.output for r in second.shell.ran if "--dry-run" in r.command
                           ).split())  # the first cell says so already
    assert "is locked by `medsynth-kohya reproduce`" in status and "min ago" in status
    refused = second.shell.ran[-1]
    assert refused.code != 0 and "Traceback" not in refused.output
    said = " ".join(refused.output.split())
    assert "on colab-vm-that-disconnected" in said and "--break-lock" in said
    assert f"taken over after {locks.STALE_S // 60} min" in said

    # Later, its heartbeat long stopped: the records are taken over and training resumes.
    _moved(work, silent_s=locks.STALE_S + 60)
    third = colab("third")
    third.run(cells, stop_after=train_cell)
    assert all(r.code == 0 for r in third.shell.ran), third.shell.ran[-1]
    assert "took over the lock" in " ".join(third.shell.ran[-1].output.split())
    assert _resumed_from().endswith("melanoma-000002-state")
    assert not list(work.rglob(".medsynth-lock*"))
