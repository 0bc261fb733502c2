"""The Python API as a researcher first calls it: from a plain script (no `__main__` guard, or
piped on stdin) with prepare's worker pool, and with ordinary values: `str` paths, an option's
enum as its string, the option classes imported from the package."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize(("call", "said"), [
    (lambda p: mk.prepare(3, p),  # type: ignore[arg-type]
     r"^source must be a path \(a str or pathlib.Path\), not 3$"),
    (lambda p: mk.prepare(p, ""), "^out must be a path"),
    (lambda p: mk.PrepareOptions(hair="sed"),  # type: ignore[arg-type]
     r"^hair 'sed' is not one of: 'auto', 'seed', 'off', 'metadata'$"),
    (lambda p: mk.SampleOptions(metadata_style="2019"),  # type: ignore[arg-type]
     "^metadata_style '2019' is not one of"),
    (lambda p: mk.prepare(p, p / "out", options={"hair": "off"}),  # type: ignore[arg-type]
     r"^options must be a medsynth_kohya.PrepareOptions\(...\), not dict$"),
    (lambda p: mk.train(p, "cpu-smoke", overrides="max_train_steps=2"),
     "^overrides must be a list of strings"),
    (lambda p: mk.sample(p, p / "out", mk.EvaluateOptions()),  # type: ignore[arg-type]
     r"^options must be a medsynth_kohya.SampleOptions"),
    (lambda p: mk.evaluate(p, None, p / "report"),  # type: ignore[arg-type]
     "^synthetic must be a path"),
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
