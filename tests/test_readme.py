"""The README cannot rot: its set-up commands are CI's, and its walkthrough runs for real
(against stand-ins for isic-cli, sd-scripts' two programs and the Hub)."""

from __future__ import annotations

import re
import shlex
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import REPO, invoke
from .fake_gen import PYTHON, FakeGen, install_gpus, make_fake_gen
from .fake_hub import TOKEN, FakeHub
from .fakes import install_fake_isic

# huggingface_hub 2.x hands LFS uploads to httpx2 as `data=`, which httpx2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
README = (REPO / "README.md").read_text(encoding="utf-8")
_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
_Usage = namedtuple("_Usage", "total used free")


def test_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    head = README.split("\n## ", 1)[0]
    blocks = [block.strip() for block in _BLOCK.findall(head)]
    assert len(blocks) == 2 and all("\n" not in block for block in blocks)
    assert "medsynth-kohya demo" in blocks[0] and "pytest" in blocks[1]
    assert blocks[1] in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _walkthrough() -> list[list[str]]:
    after = README.split("<!-- walkthrough:", 1)[1]
    block = _BLOCK.search(after)
    assert block is not None
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("medsynth-kohya ")]


def test_the_walkthrough_runs(runner: CliRunner, tmp_path: Path, fake_hub: FakeHub,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake: FakeGen = make_fake_gen(tmp_path / "sd", monkeypatch)
    install_gpus(fake, tmp_path, monkeypatch, 1)
    (fake.sd_scripts / "vae").mkdir()
    (fake.sd_scripts / "vae" / "sdxl_vae.safetensors").write_bytes(b"vae")
    install_fake_isic(tmp_path, monkeypatch)
    monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", str(fake.sd_scripts))
    monkeypatch.setenv("MEDSYNTH_SD_PYTHON", PYTHON)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    work = tmp_path / "colab"
    work.mkdir()
    monkeypatch.chdir(work)
    # The original config on the 6 stand-in images is 600 epochs with 300 saves of ~2.7 GB,
    # which train rightly refuses on a real disk; here the stand-in trainer's saves are bytes.
    monkeypatch.setattr(shutil, "disk_usage", lambda _: _Usage(10**16, 0, 10**16))
    commands = _walkthrough()
    assert [c[0] for c in commands] == ["doctor", "fetch-isic", "reproduce", "reproduce",
                                        "push"]
    for command in commands:
        args = [a.replace("YOUR_NAME", fake_hub.user) for a in command]
        code, stdout, stderr = invoke(runner, *args)
        assert code == 0, f"{shlex.join(command)}\n{stdout}\n{stderr}"
        assert TOKEN not in stdout + stderr
    assert (work / "medsynthx-2023" / "run" / "output" / "melanoma.safetensors").is_file()
    synthetic = work / "medsynthx-2023" / "synthetic"  # reproduce's, which the push publishes
    assert len(list((synthetic / "images").glob("*.png"))) == 100
    repo = fake_hub.repos[f"{fake_hub.user}/medsynth-melanoma-lora"]
    assert "melanoma.safetensors" in repo.files and "README.md" in repo.files
