"""Every `--dry-run` writes nothing: no file under the test's folder or the (fake) home folder is
created, changed or removed (paths and sha256 before and after), on fresh folders and on
folders an earlier real run wrote (issue 9: nothing of the user's is lost or changed).

`train --dry-run` is one documented writer ("write and check the files"): it renders a new
run folder and nothing else, and leaves an existing run as it was. `demo --dry-run` is the other:
it generates, prepares and renders into its --out as demo does, launching nothing
(tests/test_demo.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.hub import push as hubmod

from .conftest import InstallGpus, invoke
from .fake_gen import PYTHON, FakeGen
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
SMALL = ("--width", 64, "--height", 64, "--steps", 2)
RENDERED = {"config.toml", "dataset.toml", "sample_prompts.toml", "accelerate.json", "run.json"}


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (the lock files included: a dry run leaves none)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home folder with a Hugging Face cache: a dry run writes nothing there either."""
    folder = tmp_path / "home" / "ana"
    (folder / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return folder


def _sample(runner: CliRunner, gen: FakeGen, *args: object) -> tuple[int, str, str]:
    return invoke(runner, "sample", *args, *SMALL, "--sd-scripts", gen.sd_scripts, "--python",
                  PYTHON)


def _made_set(runner: CliRunner, gen: FakeGen, trained: Path, out: Path) -> None:
    """A finished synthetic set of 3 images in `out`, and a user's file beside it."""
    code, _, stderr = _sample(runner, gen, "--lora", trained, "--n", 3, "--out", out)
    assert code == 0, stderr
    (out / "my-notes.txt").write_text("mine\n", encoding="utf-8")


Case = Callable[[CliRunner, Path, FakeGen, Path, Path], list[object]]
"""Sets up what the command needs (a real run first where it reads one) and returns the dry
run's command line."""


def _sample_fresh(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
                  prepared: Path) -> list[object]:
    return ["sample", "--lora", trained, "--n", 3, "--out", tmp / "synth", *SMALL,
            "--sd-scripts", gen.sd_scripts, "--python", PYTHON, "--dry-run"]


def _sample_made(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
                 prepared: Path) -> list[object]:
    _made_set(runner, gen, trained, tmp / "synth")
    return ["sample", "--lora", trained, "--n", 5, "--out", tmp / "synth", *SMALL,
            "--sd-scripts", gen.sd_scripts, "--python", PYTHON, "--force", "--dry-run"]


def _sample_shard(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
                  prepared: Path) -> list[object]:
    _made_set(runner, gen, trained, tmp / "synth")
    return ["sample", "--lora", trained, "--n", 3, "--out", tmp / "synth", *SMALL,
            "--sd-scripts", gen.sd_scripts, "--python", PYTHON, "--shard", "2/2", "--dry-run"]


def _sample_slurm(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
                  prepared: Path) -> list[object]:
    return ["sample", "--lora", trained, "--n", 4, "--out", tmp / "synth", "--slurm", 2,
            "--dry-run"]


def _train_existing(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
                    prepared: Path) -> list[object]:
    return ["train", prepared, "--preset", "cpu-smoke", "--run-dir", trained,
            "--sd-scripts", gen.sd_scripts, "--python", PYTHON, "--dry-run"]


def _fetch(runner: CliRunner, tmp: Path, gen: FakeGen, trained: Path,
           prepared: Path) -> list[object]:
    return ["fetch-isic", "--out", tmp / "isic", "--limit", 5, "--dry-run"]


CASES: dict[str, Case] = {
    "sample into a new folder": _sample_fresh,
    "sample into a finished set, --force": _sample_made,
    "sample --shard into a finished set": _sample_shard,
    "sample --slurm": _sample_slurm,
    "train into a finished run": _train_existing,
    "fetch-isic": _fetch,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_dry_run_creates_changes_and_removes_nothing(
        case: str, runner: CliRunner, tmp_path: Path, home: Path, fake_gen: FakeGen,
        trained: Path, prepared: Path) -> None:
    args = CASES[case](runner, tmp_path, fake_gen, trained, prepared)
    before, folders = _tree(tmp_path), _folders(tmp_path)

    code, stdout, stderr = invoke(runner, *args)

    assert _tree(tmp_path) == before, (stdout, stderr)
    assert _folders(tmp_path) == folders
    assert code == 0 or len(stderr.strip().splitlines()) == 1, stderr


def test_the_push_dry_run_writes_nothing_here_or_in_the_hub_cache(
        runner: CliRunner, tmp_path: Path, home: Path, fake_hub: FakeHub, trained: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It reads the repo (the list of what earlier pushes uploaded) without caching it."""
    hubmod.push(trained, REPO, endpoint=fake_hub.url, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before, folders, commits = _tree(tmp_path), _folders(tmp_path), len(
        fake_hub.repos[REPO].commits)

    code, stdout, stderr = invoke(runner, "push", trained, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url, "--dry-run")

    assert code == 0, stderr
    assert f"Would delete from {REPO}: nothing" in stdout
    assert _tree(tmp_path) == before and _folders(tmp_path) == folders
    assert len(fake_hub.repos[REPO].commits) == commits


def test_the_reproduce_dry_run_writes_nothing(runner: CliRunner, isic2020: SyntheticSet,
                                              tmp_path: Path, home: Path,
                                              nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    before, folders = _tree(tmp_path), _folders(tmp_path)
    code, _, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", tmp_path / "work",
                             "--dry-run")
    assert code == 0, stderr
    assert _tree(tmp_path) == before and _folders(tmp_path) == folders


@pytest.mark.parametrize("slurm", [(), ("--slurm",)])
def test_the_train_dry_run_renders_a_new_run_folder_and_nothing_else(
        runner: CliRunner, tmp_path: Path, home: Path, fake_gen: FakeGen, prepared: Path,
        slurm: tuple[str, ...]) -> None:
    """With --slurm too: the batch script is printed, not written."""
    before = _tree(tmp_path)
    run = tmp_path / "runs" / "new"
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             run, "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON,
                             *slurm, "--dry-run")
    assert code == 0, stderr
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("runs/")} == before
    assert {Path(k).name for k in after if k.startswith("runs/")} == RENDERED


def test_a_sample_dry_run_without_sd_scripts_shows_its_install_first(
        runner: CliRunner, trained: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its command went `cd` into a sd-scripts folder that did not exist, as train's and
    demo's did before they showed the install step."""
    import shlex

    from medsynth_kohya.sdscripts import checkout

    monkeypatch.setattr(checkout, "checkout_root", lambda: None)  # as from a wheel
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    code, stdout, stderr = invoke(runner, "sample", "--lora", trained, "--n", 2, "--out",
                                  tmp_path / "synth", "--dry-run")
    assert code == 0, stdout + stderr
    line = stdout.splitlines()[-1]
    assert line.startswith("medsynth-kohya install-sd-scripts && cd "
                           f"{shlex.quote(str(checkout.user_dir()))} && "), line
