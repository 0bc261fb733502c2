"""The Python API as a researcher first calls it: from a plain script (no `__main__` guard, or
piped on stdin) with prepare's worker pool, and with ordinary values: `str` paths, an option's
enum as its string, the option classes imported from the package."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import medsynth_kohya as mk
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.evaluation import features

from .conftest import REPO, InstallGpus
from .fake_gen import PYTHON, FakeGen
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO as HUB_REPO

SCRIPT = """\
import sys
from pathlib import Path
import medsynth_kohya
main = sys.modules["__main__"]
before = (getattr(main, "__file__", None), main.__spec__)
with open(sys.argv[1], "a") as runs:  # how many times this script's top level runs
    print("ran", file=runs)
result = medsynth_kohya.prepare(Path(sys.argv[2]), Path(sys.argv[3]), workers=2)
assert (getattr(main, "__file__", None), main.__spec__) == before, "__main__ not restored"
print("prepared", len(result.manifest), "scanned", result.scanned)
"""

LOOSE: Any = mk
"""The package as a caller without type checking sees it: any value may be passed."""


@pytest.mark.parametrize("how", ["file", "stdin", "-c"])
def test_prepare_with_workers_runs_from_a_script_without_a_main_guard(
        how: str, archive: SyntheticSet, tmp_path: Path) -> None:
    """Spawned workers would run the script again (and hit prepare's lock): they must start
    without the caller's `__main__`, whether it is a file, stdin or (as in Jupyter) none."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    runs, out = tmp_path / "runs.txt", tmp_path / "prepared"
    args = [str(runs), str(archive.root), str(out)]
    command = {"file": [sys.executable, str(script), *args],
               "stdin": [sys.executable, "-", *args],
               "-c": [sys.executable, "-c", SCRIPT, *args]}[how]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(command, input=SCRIPT if how == "stdin" else None, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert runs.read_text(encoding="utf-8").splitlines() == ["ran"]
    scanned = int(done.stdout.split("scanned")[1])
    assert scanned >= 4  # enough photos for prepare to start its 2-worker pool
    assert (out / "manifest.csv").is_file()


def test_the_option_classes_are_importable_from_the_package() -> None:
    from medsynth_kohya.data.prepare import PrepareOptions
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.evaluation.evaluate import EvaluateOptions
    from medsynth_kohya.sampling.plan import SampleOptions
    from medsynth_kohya.training.train import Cluster

    assert (mk.PrepareOptions, mk.SampleOptions, mk.EvaluateOptions, mk.Cluster,
            mk.UserError) == (PrepareOptions, SampleOptions, EvaluateOptions, Cluster,
                              UserError)
    for name in ("PrepareOptions", "SampleOptions", "EvaluateOptions", "Cluster", "Machines",
                 "MachineShard", "HairMode", "LinkMode", "MetadataStyle", "UserError"):
        assert name in mk.__all__ and isinstance(getattr(mk, name), type), name


def test_prepare_and_train_take_str_paths_and_an_enum_string(
        isic2020: SyntheticSet, tmp_path: Path, fake_gen: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = mk.PrepareOptions(hair="off", link="hard", repeats=2)  # type: ignore[arg-type]
    prepared = mk.prepare(str(isic2020.root), "prepared", workers=1, options=options)
    assert prepared.out == Path("prepared") and prepared.options.hair is mk.HairMode.off
    assert prepared.options.link is mk.LinkMode.hard
    assert PreparedFolder(tmp_path / "prepared").state().options["hair"] == "off"
    assert prepared.manifest["hairy"].eq(False).all()  # off: nobody is tagged hairy

    run = tmp_path / "run"
    planned = mk.train("prepared", "cpu-smoke", run_dir=str(run), dry_run=True,
                       sd_scripts=str(fake_gen.sd_scripts), python=PYTHON,
                       overrides=["max_train_steps=2"])
    assert planned.run_dir == run and planned.config == run / "config.toml"


def test_sample_push_and_evaluate_take_str_paths_and_an_enum_string(
        trained: Path, prepared: Path, tmp_path: Path, fake_gen: FakeGen, fake_hub: FakeHub,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = mk.SampleOptions(n=2, width=64, height=64, steps=2,
                               metadata_style="2020", like=str(prepared))  # type: ignore[arg-type]
    made = mk.sample(str(trained), "synth", options, sd_scripts=str(fake_gen.sd_scripts),
                     python=PYTHON)
    assert made.out == Path("synth") and made.status == "succeeded", made
    assert "image_name" in pd.read_csv(tmp_path / "synth" / "metadata.csv").columns

    pushed = mk.push(str(trained), HUB_REPO, samples="synth", dry_run=True,
                     endpoint=fake_hub.url, token=TOKEN)
    assert any(name.startswith("samples/") for name, _ in pushed.files), pushed.files

    monkeypatch.setattr(features, "missing", lambda *_: ["torch-fidelity"])  # no FID here
    report = mk.evaluate(None, "synth", "report", mk.EvaluateOptions(classifier="none"),
                         lora=str(trained))
    assert report.out == Path("report") and (tmp_path / "report" / "report.json").is_file()


def test_the_other_commands_take_str_paths(isic2020: SyntheticSet, tmp_path: Path,
                                           fake_gen: FakeGen, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    planned = mk.reproduce(str(isic2020.root), str(tmp_path / "work"), dry_run=True)
    assert planned.workdir == tmp_path / "work" and planned.dry_run
    fetched = mk.fetch_isic(str(tmp_path / "isic"), limit=5, dry_run=True)
    assert fetched.out == tmp_path / "isic" and not fetched.ran
    report = mk.doctor(sd_scripts=str(fake_gen.sd_scripts), workdir=str(tmp_path), gpus=[],
                       hub=False)
    disk = next(check for check in report.checks if check.name == "disk")
    assert str(tmp_path) in disk.detail
    demo = mk.demo(str(tmp_path / "demo"), n=10)
    assert demo.prepared.out == tmp_path / "demo" / "prepared"
    (tmp_path / "a-file").touch()
    with pytest.raises(mk.UserError, match="is a file"):
        mk.install_sd_scripts(str(tmp_path / "a-file"))


def test_a_path_starting_with_a_tilde_is_under_home_as_on_the_command_line(
        trained: Path, isic2020: SyntheticSet, tmp_path: Path, fake_gen: FakeGen,
        fake_hub: FakeHub, nvidia_smi: InstallGpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path parameter and option-class path field expands `~` (a notebook has no shell):
    sample(run, "~/synthetic") once made a folder named `~` in the current directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path))

    def home(path: Path) -> str:
        return f"~/{path.relative_to(tmp_path).as_posix()}"

    sd_scripts = home(fake_gen.sd_scripts)
    assert mk.prepare(home(isic2020.root), "~/again", workers=1).out == tmp_path / "again"
    planned = mk.train("~/prepared", "cpu-smoke", run_dir="~/run", dry_run=True,
                       sd_scripts=sd_scripts, python=PYTHON)
    assert planned.run_dir == tmp_path / "run" and planned.config.is_file()
    options = LOOSE.SampleOptions(n=2, width=64, height=64, steps=2, like="~/prepared")
    assert options.like == tmp_path / "prepared"
    made = mk.sample(f"~/{trained.name}", "~/synth", options, sd_scripts=sd_scripts,
                     python=PYTHON)
    assert made.out == tmp_path / "synth" and made.status == "succeeded", made
    monkeypatch.setattr(features, "missing", lambda *_: ["torch-fidelity"])  # no FID here
    report = mk.evaluate(None, "~/synth", "~/report", mk.EvaluateOptions(classifier="none"),
                         lora=f"~/{trained.name}")
    assert report.out == tmp_path / "report" and report.page.is_file()
    pushed = mk.push(f"~/{trained.name}", HUB_REPO, samples="~/synth", evaluation="~/report",
                     dry_run=True, endpoint=fake_hub.url, token=TOKEN)
    assert any(name.startswith("samples/") for name, _ in pushed.files), pushed.files
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    reproduced = mk.reproduce(home(isic2020.root), "~/work", dry_run=True)
    assert reproduced.workdir == tmp_path / "work"
    assert mk.fetch_isic("~/isic", limit=5, dry_run=True).out == tmp_path / "isic"
    report_of = mk.doctor(sd_scripts=sd_scripts, workdir="~", gpus=[], hub=False)
    disk = next(check for check in report_of.checks if check.name == "disk")
    assert str(tmp_path) in disk.detail
    assert mk.demo("~/demo", n=10).prepared.out == tmp_path / "demo" / "prepared"
    assert LOOSE.Cluster(accelerate_config="~/a.yaml").accelerate_config == tmp_path / "a.yaml"
    (tmp_path / "a-file").touch()
    with pytest.raises(mk.UserError, match=re.escape(str(tmp_path / "a-file"))):
        mk.install_sd_scripts("~/a-file")
    assert list(cwd.iterdir()) == []  # no folder named ~, nothing else


@pytest.mark.parametrize(("call", "said"), [
    (lambda p: mk.prepare(3, p),  # type: ignore[arg-type]
     r"^source must be a path \(a str or pathlib.Path\), not 3$"),
    (lambda p: mk.prepare(p, ""), "^out must be a path"),
    (lambda p: mk.PrepareOptions(hair="sed"),  # type: ignore[arg-type]
     r"^hair 'sed' is not one of: 'auto', 'seed', 'off', 'metadata'$"),
    (lambda p: mk.SampleOptions(metadata_style="2019"),  # type: ignore[arg-type]
     "^metadata_style '2019' is not one of"),
    (lambda p: mk.prepare(p, p / "out", options={"hair": "off"}),  # type: ignore[arg-type]
     r"^options must be a medsynth_kohya.PrepareOptions\(...\) or None, not dict$"),
    (lambda p: mk.train(p, "cpu-smoke", overrides="max_train_steps=2"),
     "^overrides must be a list of strings"),
    (lambda p: mk.sample(p, p / "out", mk.EvaluateOptions()),  # type: ignore[arg-type]
     r"^options must be a medsynth_kohya.SampleOptions"),
    (lambda p: mk.evaluate(p, None, p / "report"),  # type: ignore[arg-type]
     "^synthetic must be a path"),
    (lambda p: mk.doctor(sd_scripts=p / "none", device="tpu"),
     r"^device 'tpu' is not one of: 'cuda', 'cpu'$"),
])
def test_a_bad_value_is_a_user_error_naming_its_parameter(call: object, said: str,
                                                          tmp_path: Path) -> None:
    assert callable(call)
    with pytest.raises(mk.UserError, match=said):
        call(tmp_path)


def _readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_example_is_python_importing_what_the_package_exports() -> None:
    code = _readme_section().split("```python\n", 1)[1].split("```", 1)[0]
    imported = [alias.name for node in ast.walk(ast.parse(code))
                if isinstance(node, ast.ImportFrom) and node.module == "medsynth_kohya"
                for alias in node.names]
    assert imported and set(imported) <= set(mk.__all__), imported


def test_the_readme_signatures_are_the_functions_own() -> None:
    """Each documented signature has the function's parameters, in order, of the same kind,
    with the same literal defaults (the test hook `detect` is left out)."""
    lines = re.findall(r"^- `(\w+)\((.*)\)` → ", _readme_section(), re.MULTILINE)
    assert {name for name, _ in lines} == {n for n in mk.__all__ if n[0].islower() and
                                          callable(getattr(mk, n))}
    for name, params in lines:
        documented = ast.parse(f"def {name}({params}): pass").body[0]
        assert isinstance(documented, ast.FunctionDef)
        args = documented.args
        shown = [(a.arg, "kw" if a in args.kwonlyargs else "pos")
                 for a in (*args.args, *args.kwonlyargs)]
        real = inspect.signature(getattr(mk, name)).parameters.values()
        kinds = [(p.name, "kw" if p.kind is p.KEYWORD_ONLY else "pos") for p in real
                 if p.name != "detect"]
        assert shown == kinds, name
        defaults = dict(zip([a.arg for a in args.args][::-1], args.defaults[::-1], strict=False))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults,
                                                   strict=True) if d is not None})
        for parameter in real:
            given = defaults.get(parameter.name)
            if isinstance(given, ast.Constant) and given.value is not Ellipsis:
                assert given.value == parameter.default, (name, parameter.name)


COMMANDS = {"prepare": ("p/src", "p/out"), "train": ("p/prepared",), "sample": ("p/run", "p/out"),
            "push": ("p/run", "alice/lora"), "reproduce": ("p/src", "p/work"),
            "evaluate": (None, "p/synthetic", "p/out"), "doctor": (), "demo": ("p/out",),
            "fetch_isic": ("p/out",), "install_sd_scripts": ()}
"""Each function of the API and arguments of the right kinds for its required parameters."""
OPTION_CLASSES = ("PrepareOptions", "SampleOptions", "EvaluateOptions", "Cluster", "Machines",
                  "MachineShard")
REQUIRED = {"MachineShard": {"k": 1, "count": 2}}
"""Values for the option classes' fields without a default."""


@pytest.mark.parametrize(("call", "said"), [
    # trial 8's cases
    (lambda: LOOSE.SampleOptions(n="2"), r"n must be a whole number \(int\) or None, not '2'"),
    (lambda: LOOSE.SampleOptions(n=2, seed=1.5), r"seed must be a whole number \(int\), not 1.5"),
    (lambda: LOOSE.SampleOptions(n=True), r"n must be a whole number \(int\) or None, not True"),
    (lambda: LOOSE.EvaluateOptions(threshold="0.2"),
     r"threshold must be a number \(int or float\), not '0.2'"),
    (lambda: LOOSE.EvaluateOptions(mixes="0,1"), "mixes must be a list of numbers, not '0,1'"),
    (lambda: LOOSE.push("run", None, dry_run=True), "repo_id must be a str, not None"),
    (lambda: LOOSE.push("run", "alice/x", license=None, dry_run=True),
     "license must be a str, not None"),
    (lambda: LOOSE.push("run", "alice/x", endpoint=123, dry_run=True),
     "endpoint must be a str or None, not 123"),
    (lambda: LOOSE.push("run", "alice/x", token=123, dry_run=True),
     "token must be a str or None, not 123"),
    (lambda: LOOSE.push("run", "alice/x", private="false", dry_run=True),
     "private must be True or False, not 'false'"),
    (lambda: LOOSE.reproduce("src", "w", n="3", dry_run=True),
     r"n must be a whole number \(int\), not '3'"),
    (lambda: LOOSE.reproduce("src", "w", columns=["id=isic_id"], dry_run=True),
     r'columns must be a dict of strings to strings \(e.g. \{"key": "value"\}\) or None, not '
     "list"),
    (lambda: LOOSE.sample("run", "out", dry_run="no"), "dry_run must be True or False, not 'no'"),
    (lambda: LOOSE.sample("run", "out", check_copies="yes"),
     "check_copies must be True or False, not 'yes'"),
    # and more
    (lambda: LOOSE.EvaluateOptions(mixes=[0, "1"]),
     "mixes must be a list of numbers, not one holding '1'"),
    (lambda: LOOSE.EvaluateOptions(force=1), "force must be True or False, not 1"),
    (lambda: LOOSE.EvaluateOptions(classifier=None), "classifier must be a str, not None"),
    (lambda: LOOSE.train("prepared", overrides=["a=1", 2]),
     "overrides must be a list of strings .*, not one holding 2"),
    (lambda: LOOSE.reproduce("src", "w", columns={"site": 3}),
     "columns must be a dict .* or None, not one holding 3"),
    (lambda: LOOSE.reproduce("src", "w", push_repo=["alice/x"]),
     "push_repo must be a str or None, not list"),
    (lambda: LOOSE.PrepareOptions(repeats=2.0),
     r"repeats must be a whole number \(int\) or None, not 2.0"),
    (lambda: LOOSE.PrepareOptions(val_frac="0.1"),
     r"val_frac must be a number \(int or float\), not '0.1'"),
    (lambda: LOOSE.PrepareOptions(challenge_sites="yes"),
     "challenge_sites must be True or False, not 'yes'"),
    (lambda: LOOSE.PrepareOptions(trigger=None), "trigger must be a str, not None"),
    (lambda: LOOSE.PrepareOptions(columns="site=x"), "columns must be a dict of strings"),
    (lambda: LOOSE.SampleOptions(scale="7"), r"scale must be a number \(int or float\) or None"),
    (lambda: LOOSE.SampleOptions(prompt=3), "prompt must be a str or None, not 3"),
    (lambda: LOOSE.SampleOptions(like=3), r"like must be a path \(a str or pathlib.Path\) or "
                                          "None, not 3"),
    (lambda: LOOSE.prepare("src", "out", workers="2"),
     r"workers must be a whole number \(int\) or None, not '2'"),
    (lambda: LOOSE.prepare("src", "out", force="yes"), "force must be True or False"),
    (lambda: LOOSE.train("prepared", 3), "preset_name must be a str or None, not 3"),
    (lambda: LOOSE.train("prepared", gpus=True), r"gpus must be a whole number \(int\) or None"),
    (lambda: LOOSE.train("prepared", on_progress=print.__name__),
     "on_progress must be a function or None, not 'print'"),
    (lambda: LOOSE.train("prepared", cluster=None), r"cluster must be a medsynth_kohya.Cluster"),
    (lambda: LOOSE.evaluate(None, "syn", "out", break_lock=1),
     "break_lock must be True or False, not 1"),
    (lambda: LOOSE.doctor(hub="no"), "hub must be True or False, not 'no'"),
    (lambda: LOOSE.doctor(device=None), "device must be a str, not None"),
    (lambda: LOOSE.demo("out", n=True), r"n must be a whole number \(int\), not True"),
    (lambda: LOOSE.fetch_isic("out", limit="5"), r"limit must be a whole number \(int\), not '5'"),
    (lambda: LOOSE.fetch_isic("out", collections=[1.5]),
     "collections must be a list of whole numbers, not one holding 1.5"),
    (lambda: LOOSE.install_sd_scripts(run_pip="yes"), "run_pip must be True or False"),
    (lambda: LOOSE.Machines(count="2"), r"count must be a whole number \(int\), not '2'"),
    (lambda: LOOSE.MachineShard(1, True), r"count must be a whole number \(int\), not True"),
    (lambda: LOOSE.Cluster(slurm="partition=gpu"),
     r'slurm must be a list of strings \(e.g. \["key=value"\]\) or None, not .partition=gpu.'),
    (lambda: LOOSE.Cluster(submit="no"), "submit must be True or False, not 'no'"),
])
def test_a_value_of_the_wrong_kind_is_one_line_naming_the_parameter_and_its_kind(
        call: Callable[[], object], said: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked where the function starts (or the option class is made): nothing is written,
    and no traceback from deep inside, nor a value taken as something else."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mk.UserError, match=f"^{said}") as raised:
        call()
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def _fields(name: str) -> list[tuple[str, str]]:
    return [(name, field.name) for field in dataclasses.fields(getattr(mk, name))]


@pytest.mark.parametrize(("kind", "name"), [pair for kind in OPTION_CLASSES
                                            for pair in _fields(kind)])
def test_every_option_field_refuses_a_value_of_no_kind_and_takes_none_if_optional(
        kind: str, name: str) -> None:
    """Each field is checked by its annotation, one shared way, not a check per field."""
    option_class, required = getattr(mk, kind), REQUIRED.get(kind, {})
    with pytest.raises(mk.UserError, match=rf"^{name} (must be .*, not object|<object .* is "
                                           "not one of)"):
        option_class(**{**required, name: object()})
    if type(None) in typing.get_args(typing.get_type_hints(option_class)[name]):
        assert getattr(option_class(**{**required, name: None}), name) is None


@pytest.mark.parametrize(("command", "name"), [
    (command, name) for command in COMMANDS
    for name in inspect.signature(getattr(mk, command)).parameters if name != "detect"])
def test_every_parameter_refuses_a_value_of_no_kind(command: str, name: str,
                                                    tmp_path: Path) -> None:
    """A new parameter is checked too: its annotation says what it takes."""
    function, required = getattr(mk, command), COMMANDS[command]
    positional = [parameter.name for parameter in inspect.signature(function).parameters
                  .values() if parameter.default is inspect.Parameter.empty]
    given = {key: value.replace("p/", f"{tmp_path}/") if isinstance(value, str) else value
             for key, value in zip(positional, required, strict=True)}
    with pytest.raises(mk.UserError, match=rf"^{name} must be .*not object$"):
        function(**{**given, name: object()})
    assert list(tmp_path.iterdir()) == []


def test_values_of_the_right_kind_are_taken_as_that_kind() -> None:
    """A whole number where a float is meant, any list, a numpy integer, any mapping."""
    import numpy as np

    options = LOOSE.SampleOptions(n=np.int64(3), scale=7, overrides=["a=1"])
    assert (options.n, options.scale, options.overrides) == (3, 7.0, ("a=1",))
    assert type(options.n) is int and type(options.scale) is float
    assert LOOSE.EvaluateOptions(mixes=[0, 1], threshold=0).mixes == (0.0, 1.0)
    columns = LOOSE.PrepareOptions(columns=types.MappingProxyType({"site": "anatom"})).columns
    assert columns == {"site": "anatom"}
    assert LOOSE.Cluster(slurm=["time=1:00:00"], wait_s=5).slurm == ("time=1:00:00",)
