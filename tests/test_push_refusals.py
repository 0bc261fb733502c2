"""A push refused by its last scan: the line names where in the file the private thing sits,
gives the `--show` command with every option that plans the same files, says how to take it out
of that kind of file, and `--show` prints a weights file's or an image's text, not its bytes."""

from __future__ import annotations

import json
import shlex
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import invoke, one_line_error
from .fake_hub import TOKEN, FakeHub
from .private import png
from .test_hub import REPO, _sample_set, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

COMMENT = "trained by bob from /scratch/bob/isic on gpu17.hpc.uni-x.edu"


def _lora(metadata: dict[str, str]) -> bytes:
    header = json.dumps({"__metadata__": metadata, "lora_unet.weight": {
        "dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(32))


def _shown(runner: CliRunner, line: str) -> tuple[int, str, str]:
    """Run the `--show` command a refusal suggests, as the user would paste it."""
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["medsynth-kohya", "push"], line
    return invoke(runner, *command[1:])


def test_a_cluster_path_in_a_sample_image_is_refused_with_a_show_command_that_works(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path / "first")
    synth = _sample_set(tmp_path / "my synth", 3)
    image = synth / "images" / "SYN_0000000.png"
    image.write_bytes(png((b"tEXt", b"parameters\0--ckpt /scratch/bob/sd.safetensors")))

    line = one_line_error(*invoke(runner, "push", run, "--repo-id", REPO, "--samples", synth,
                                  "--license", "mit", "--endpoint", fake_hub.url))
    assert ("samples/SYN_0000000.png would publish the path /scratch/bob/sd.safetensors "
            "(PNG text chunk parameters)") in line
    assert f"save {shlex.quote(str(image))} again without its text chunks" in line
    assert REPO not in fake_hub.repos

    code, stdout, stderr = _shown(runner, line)
    assert code == 0, stderr
    assert stdout == "parameters: --ckpt /scratch/bob/sd.safetensors\n"
    assert "push refuses it" in stderr


def test_a_path_in_the_lora_metadata_is_refused_and_shown_as_json(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path / "first")
    lora = run / "output" / "melanoma.safetensors"
    lora.write_bytes(_lora({"ss_output_name": "melanoma", "ss_training_comment": COMMENT}))

    line = one_line_error(*invoke(runner, "push", run, "--repo-id", REPO, "--all-checkpoints",
                                  "--endpoint", fake_hub.url))
    assert ("melanoma.safetensors would publish the path /scratch/bob/isic (metadata "
            "ss_training_comment)") in line
    assert " --all-checkpoints --show melanoma.safetensors`" in line
    assert f"write the metadata of {lora} without it" in line

    code, stdout, stderr = _shown(runner, line)
    assert code == 0, stderr
    assert json.loads(stdout) == {"ss_output_name": "melanoma", "ss_training_comment": COMMENT}


def test_show_of_an_image_without_text_says_where_to_open_it(
        runner: CliRunner, tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    synth = _sample_set(tmp_path / "synth", 2)
    for path in ("samples/grid.jpg", "samples/SYN_0000001.png"):
        line = one_line_error(*invoke(runner, "push", run, "--repo-id", REPO, "--samples",
                                      synth, "--show", path))
        assert f"--show {path}: " in line and "open " in line, line
