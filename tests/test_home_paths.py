"""Paths under the user's home written `~/…` where no shell expands them (`--out=~/runs`, a
notebook form, a preset file, an environment variable): every command reads and writes the
home folder's files, and no folder named `~` appears."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.resources import data_dir

from .conftest import InstallGpus, invoke, this_python_at
from .fake_gen import make_fake_gen
from .fake_hub import TOKEN, FakeHub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
SMALL = ("--width", 64, "--height", 64, "--steps", 2)
SD = "~/tools/sd scripts"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME is `tmp/home/ana`; the working folder is `~/work`."""
    folder = tmp_path / "home" / "ana"
    (folder / "work").mkdir(parents=True)
    (folder / "tools").mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.chdir(folder / "work")
    return folder


def _tildes(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if "~" in path.name]


def test_every_stage_takes_paths_written_from_the_home_folder(
        runner: CliRunner, home: Path, isic2020: SyntheticSet, fake_hub: FakeHub,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(isic2020.root, home / "isic")
    gen = make_fake_gen(home / "tools", monkeypatch)
    this_python_at(home / "bin" / "python")
    (home / "models").mkdir()
    (home / "models" / "base.safetensors").write_bytes(b"base")
    preset = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    preset["settings"]["pretrained_model_name_or_path"] = "~/models/base.safetensors"
    (home / "presets").mkdir()
    (home / "presets" / "mine.toml").write_text(toml.dumps(preset), encoding="utf-8")

    code, _, stderr = invoke(runner, "prepare", "~/isic", "--out=~/data/prepared", "--repeats",
                             2, "--workers", 1)
    assert code == 0, stderr
    assert (home / "data" / "prepared" / "manifest.csv").is_file()

    code, stdout, stderr = invoke(runner, "train", "~/data/prepared", "--preset",
                                  "~/presets/mine.toml", "--run-dir=~/runs/r1", "--sd-scripts",
                                  SD, "--python", "~/bin/python")
    assert code == 0, stdout + stderr
    run = home / "runs" / "r1"
    config = toml.loads((run / "config.toml").read_text(encoding="utf-8"))
    options = {k: v for table in config.values() for k, v in table.items()}
    assert options["pretrained_model_name_or_path"] == str(home / "models" / "base.safetensors")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded" and "~" not in json.dumps(record["config"])

    monkeypatch.setenv("MEDSYNTH_SD_PYTHON", "~/bin/python")
    (home / "models" / "vae.safetensors").write_bytes(b"vae")
    code, stdout, stderr = invoke(runner, "sample", "--lora=~/runs/r1", "--out=~/synth", "--n",
                                  2, *SMALL, "--sd-scripts", SD,
                                  "--set", "vae=~/models/vae.safetensors")
    assert code == 0, stdout + stderr
    assert len(list((home / "synth" / "images").glob("*.png"))) == 2
    assert gen.calls()[0]["args"]["vae"] == str(home / "models" / "vae.safetensors")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", "~/runs/r1", "--repo-id", "alice/mel",
                                  "--samples=~/synth", "--endpoint", fake_hub.url)
    assert code == 0, stdout + stderr
    assert any(p.startswith("samples/SYN_") for p in fake_hub.repos["alice/mel"].files)

    code, stdout, _ = invoke(runner, "fetch-isic", "--out=~/more", "--dry-run")
    assert code == 0 and str(home / "more") in stdout
    assert _tildes(tmp_path) == [] and list((home / "work").iterdir()) == []


def test_reproduce_plans_in_the_home_folder(runner: CliRunner, home: Path,
                                             isic2020: SyntheticSet, tmp_path: Path,
                                             nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    shutil.copytree(isic2020.root, home / "isic")
    code, stdout, stderr = invoke(runner, "reproduce", "~/isic", "--workdir=~/w", "--dry-run")
    assert code == 0, stderr
    assert str(home / "w" / "run" / "config.toml") in stdout
    assert _tildes(tmp_path) == []


@pytest.mark.parametrize("args", [
    ("prepare", "~nosuchuser-medsynth/isic", "--out", "OUT"),
    ("train", "~nosuchuser-medsynth/prepared", "--run-dir", "OUT", "--dry-run"),
    ("sample", "--lora", "~nosuchuser-medsynth/run", "--n", "1", "--out", "OUT", "--dry-run"),
    ("evaluate", "--real", "~nosuchuser-medsynth/isic", "--synthetic", "OUT", "--out", "OUT"),
    ("push", "~nosuchuser-medsynth/run", "--repo-id", "alice/x", "--dry-run"),
])
def test_a_tilde_of_no_such_user_is_one_line(runner: CliRunner, tmp_path: Path,
                                             args: tuple[str, ...]) -> None:
    given = [str(tmp_path / "out") if arg == "OUT" else arg for arg in args]
    code, stdout, stderr = invoke(runner, *given)
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert "~nosuchuser-medsynth/" in message and "cannot expand its ~" in message
    assert not (tmp_path / "out").exists()


NO_ONE = "~nosuchuser-medsynth"


@pytest.mark.parametrize(("args", "named"), [
    (("train", "PREPARED", "--preset", f"{NO_ONE}/p.toml"), "--preset"),
    (("train", "PREPARED", "--set", f"vae={NO_ONE}/v.safetensors"), "--set vae"),
    (("train", "PREPARED", "--set", f"pretrained_model_name_or_path={NO_ONE}/m.safetensors"),
     "--set pretrained_model_name_or_path"),
    (("train", "PREPARED", "--python", f"{NO_ONE}/bin/python"), "--python"),
    (("train", "PREPARED", "ENV"), "$MEDSYNTH_SD_SCRIPTS"),
    (("sample", "--lora", "TRAINED", "--base-model", f"{NO_ONE}/m.safetensors"),
     "--base-model"),
    (("sample", "--lora", "TRAINED", "--set", f"vae={NO_ONE}/v.safetensors"), "--set vae"),
    (("doctor", "--python", f"{NO_ONE}/bin/python"), "--python"),
    (("train", "PREPARED", "--accelerate-config", f"{NO_ONE}/a.yaml"), "accelerate_config"),
    (("sample", "--lora", "TRAINED", "--like", f"{NO_ONE}/m.csv"), "like"),
    (("sample", "--lora", "TRAINED", "--prompts", f"{NO_ONE}/p.txt"), "prompts_file"),
])
def test_an_option_value_from_the_home_of_no_such_user_is_one_line(
        runner: CliRunner, trained: Path, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], named: str) -> None:
    """Values inside options (--preset, --set, --python, --base-model, $MEDSYNTH_SD_SCRIPTS)
    were expanded with no check: `~user` of no one ended in a RuntimeError traceback; the
    options checked as the command's options are built (--accelerate-config, --like,
    --prompts) raised their one-line error as a traceback."""
    if "ENV" in args:
        monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", f"{NO_ONE}/sd-scripts")
    places = {"PREPARED": str(prepared), "TRAINED": str(trained)}
    given = [places.get(arg, arg) for arg in args if arg != "ENV"]
    if given[0] != "doctor":
        given += ["--dry-run", *(("--run-dir", str(tmp_path / "run")) if given[0] == "train"
                                 else ("--n", "1", "--out", str(tmp_path / "syn")))]
    code, stdout, stderr = invoke(runner, *given)
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert f"{named} {NO_ONE}/" in message and "cannot expand its ~" in message, message
