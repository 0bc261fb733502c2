"""Shared fixtures: generated ISIC-like data sets, the CLI runner, the seed data and sd-scripts."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import medsynth_kohya.data.prepare as preparing
from medsynth_kohya.cli import app
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet, make_dataset

from . import photo_cache
from .fake_gen import FakeGen, make_fake_gen, write_run
from .fake_hub import FakeHub, serve
from .fakes import FakeSd, make_fake_sd

REPO = Path(__file__).resolve().parent.parent


def _seed_folder() -> Path:
    """../shared/seed beside the checkout, or beside a folder up to two levels above it (a git
    worktree, mutmut's mutants/ copy); the tests that need it skip when none is there."""
    for folder in REPO.parents[:3]:
        if (folder / "shared" / "seed").is_dir():
            return folder / "shared" / "seed"
    return REPO.parent / "shared" / "seed"


SEED = _seed_folder()


@pytest.fixture(autouse=True)
def _own_data_home(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees or writes the user's own per-user sd-scripts copy (XDG_DATA_HOME), nor
    trains on the GPUs its shell chose."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "data-home"))
    monkeypatch.delenv("MEDSYNTH_SD_SCRIPTS_URL", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # a GPU runner's own choice


@pytest.fixture(autouse=True)
def _scans_in_process_under_mutmut(monkeypatch: pytest.MonkeyPatch) -> None:
    """While mutmut gathers its statistics or runs a mutant, prepare scans in this process:
    mutmut maps each test to the functions it calls in its own process, so a scan in a worker
    (images.scan, measure) mapped to no test and its mutants passed untested."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        monkeypatch.setattr(preparing, "default_workers", lambda: 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """While mutmut runs a mutant, keep only the tests that judge its module (pyproject's
    [tool.medsynth-kohya.mutation-tests]: files or single tests); a normal run is left alone."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return
    import toml

    judges = toml.load(REPO / "pyproject.toml")["tool"]["medsynth-kohya"]["mutation-tests"]
    files = next((tests for path, tests in judges.items()
                  if mutant.startswith(path.removesuffix(".py").replace("/", ".") + ".")), None)
    if files is None:
        return
    keep = [item for item in items
            if item.nodeid.split("::")[0] in files or item.nodeid.split("[")[0] in files]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def runner() -> CliRunner:
    """A CLI runner; stderr is kept apart so tests can check the one-line errors, and tables
    are 200 columns wide so that no cell wraps."""
    return CliRunner(env={"COLUMNS": "200"})


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC, for tests that build PNG files by hand."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG of an 8-bit RGB header and no pixel data: sized by its header, decoded by nothing."""
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IEND", b""))


def invoke(runner: CliRunner, *args: object) -> tuple[int, str, str]:
    """Run the CLI with `args`; returns exit code, stdout and stderr."""
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, stdout: str, stderr: str) -> str:
    """The one line a refused command printed (after a non-zero exit and no traceback)."""
    assert code != 0 and "Traceback" not in stdout + stderr, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def counted_problems(line: str, head: str) -> list[str]:
    """The problems a one-line error counts after `head` ("Error: HEAD (N problems): p1 | p2;
    ..."), checked to be as many as it says and more than one."""
    assert line.startswith(f"Error: {head} ("), line
    count, rest = line[len(f"Error: {head} ("):].split(" problems): ", 1)
    problems = rest.split(" | ")
    assert int(count) == len(problems) > 1, line
    return problems


def this_python_at(path: Path) -> Path:
    """An executable at `path` that runs this Python, as a user's venv/bin/python would. Not a
    link to it: a link outside a virtual environment's folder runs the base interpreter, without
    the packages of the environment the tests run in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def squeezed(text: str) -> str:
    """`text` without whitespace or a table's vertical rules, so a phrase is found in a table
    cell however the cell wraps it (between words, or a long path folded anywhere) as long as
    the cells beside it are blank on those lines."""
    return "".join(text.translate({ord("│"): None, ord("┃"): None}).split())


def _copy(made: SyntheticSet, root: Path) -> SyntheticSet:
    """A private copy of a generated set, so a test may damage it."""
    shutil.copytree(made.root, root)
    return replace(made, root=root, metadata=root / made.metadata.relative_to(made.root),
                   images=root / made.images.relative_to(made.root), frame=made.frame.copy())


@pytest.fixture(scope="session")
def _isic2020(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    return make_dataset(tmp_path_factory.mktemp("made") / "isic2020", 12, seed=3,
                        melanoma_fraction=1.0, sizes=((640, 480), (800, 600)))


@pytest.fixture(scope="session")
def _archive(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    return make_dataset(tmp_path_factory.mktemp("made") / "archive", 10, seed=4,
                        layout="archive", melanoma_fraction=0.6, sizes=((640, 480),))


@pytest.fixture
def isic2020(_isic2020: SyntheticSet, tmp_path: Path) -> SyntheticSet:
    """A small ISIC 2020-style set: train.csv and train/<id>.jpg, all melanomas."""
    return _copy(_isic2020, tmp_path / "isic2020")


@pytest.fixture
def archive(_archive: SyntheticSet, tmp_path: Path) -> SyntheticSet:
    """A small ISIC Archive-style export: metadata.csv with the images beside it."""
    return _copy(_archive, tmp_path / "archive")


def prepare_set(made: SyntheticSet, out: Path, **options: Any) -> Path:
    """`made` prepared into `out` with these PrepareOptions, on one worker."""
    return prepare(made.root, out, options=PrepareOptions(**options), workers=1).out


@pytest.fixture
def prepared(isic2020: SyntheticSet, tmp_path: Path) -> Path:
    """The generated ISIC 2020 set prepared into tmp_path/prepared, repeats 2."""
    return prepare_set(isic2020, tmp_path / "prepared", repeats=2)


@pytest.fixture
def fake_sd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSd:
    """The stand-in sd-scripts and accelerate (see tests/fakes.py)."""
    return make_fake_sd(tmp_path, monkeypatch)


@pytest.fixture
def fake_gen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    """The stand-in sdxl_gen_img.py (see tests/fake_gen.py)."""
    return make_fake_gen(tmp_path, monkeypatch)


@pytest.fixture
def trained(prepared: Path, tmp_path: Path) -> Path:
    """A finished run folder of `prepared` (run.json and its LoRA), as train leaves it."""
    run = tmp_path / "trained"
    run.mkdir()
    write_run(run, prepared, tmp_path / "base.safetensors")
    return run


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The on-disk cache of generated photos (tests/photo_cache.py)."""
    return photo_cache.folder(tmp_path_factory)


@pytest.fixture
def seed_images() -> Path:
    """The 7 real ISIC 2020 melanomas of the original run (skipped when absent)."""
    folder = SEED / "malignant_images"
    if not folder.is_dir():
        pytest.skip("../shared/seed/malignant_images is not present")
    return folder


@pytest.fixture
def seed_configs() -> Path:
    """The original run's sd-scripts configs (skipped when absent)."""
    folder = SEED / "configs"
    if not folder.is_dir():
        pytest.skip("../shared/seed/configs is not present")
    return folder


@pytest.fixture
def sd_scripts() -> Path:
    """A checkout of sd-scripts: MEDSYNTH_SD_SCRIPTS or vendor/sd-scripts (skipped when absent)."""
    folder = Path(os.environ.get("MEDSYNTH_SD_SCRIPTS", REPO / "vendor" / "sd-scripts"))
    if not (folder / "library" / "config_util.py").is_file():
        pytest.skip("no sd-scripts checkout (git submodule update --init vendor/sd-scripts)")
    return folder


@pytest.fixture
def sd_python() -> str:
    """The Python that has sd-scripts' dependencies: MEDSYNTH_SD_PYTHON or this one."""
    return os.environ.get("MEDSYNTH_SD_PYTHON", sys.executable)


InstallGpus = Callable[..., None]


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallGpus:
    """Put a stand-in nvidia-smi on PATH that reports the given GPU lines."""
    folder = tmp_path / "bin"
    folder.mkdir()

    def install(*lines: str) -> None:
        script = folder / "nvidia-smi"
        body = "\n".join(f"echo '{line}'" for line in lines)
        script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    return install


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running loopback Hub (tests/fake_hub.py); no token or endpoint leaks in."""
    yield from serve(monkeypatch, tmp_path)
