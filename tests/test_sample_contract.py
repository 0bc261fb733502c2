"""Every option `sample` passes to sdxl_gen_img.py exists in its parser, and its prompt lines
read back as sd-scripts reads them: against the packaged snapshot always, and against the real
checkout's own parser when sd-scripts and its dependencies are present (skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.sample import SampleOptions, SampleResult, sample
from medsynth_kohya.sdscripts import launch, sdopts

from .fake_gen import PYTHON, FakeGen, make_fake_gen, write_run

_PARSE = """
import json, sys
try:
    import sdxl_gen_img
    from library import train_util
except ImportError as exc:
    print("IMPORT-FAILED", exc)
    sys.exit(3)
argv = json.loads(sys.argv[1])
args = sdxl_gen_img.setup_parser().parse_args(argv)
line = train_util.line_to_prompt_dict(sys.argv[2])
print("RESULT" + json.dumps({"args": vars(args), "line": line}))
"""


@pytest.fixture
def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SampleResult, FakeGen]:
    """A dry run that passes as many options as sample ever does (every inherited one)."""
    fake = make_fake_gen(tmp_path, monkeypatch)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    manifest = prepared / "manifest.csv"
    manifest.write_text("id,source,patient_id,sex,age,site,hairy,hair_score,caption,width,"
                        "height,split\nISIC_1,/x.jpg,P1,female,45,torso,True,2.0,c,64,64,train\n",
                        encoding="utf-8")
    run = tmp_path / "trained"
    run.mkdir()
    (tmp_path / "tokenizers").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"vae")
    write_run(run, prepared, tmp_path / "base.safetensors", mixed_precision="fp16",
              vae=str(tmp_path / "vae.safetensors"), clip_skip=2,
              tokenizer_cache_dir=str(tmp_path / "tokenizers"),
              network_args=["conv_dim=4", "conv_alpha=1"])
    gpu = Gpu("NVIDIA H100", 81559, (9, 0))
    result = sample(run, tmp_path / "synth",
                    SampleOptions(n=3, width=64, height=64, steps=2, sampler="k_euler_a",
                                  overrides=("network_mul=0.8", "highres_fix_scale=1.5",
                                             "vae_batch_size=1")),
                    sd_scripts=fake.sd_scripts, python=PYTHON, dry_run=True,
                    detect=lambda: [gpu])
    return result, fake


def _flags(argv: list[str]) -> list[str]:
    return [word for word in argv if word.startswith("--")]


def test_every_flag_is_in_the_snapshot(planned: tuple[SampleResult, FakeGen]) -> None:
    result, _ = planned
    [shard] = result.shards
    argv = shard.command.argv
    assert argv[1] == launch.GEN_SCRIPT
    known = {flag for option in sdopts.load("sdxl_gen_img").values() for flag in option.flags}
    used = _flags(argv[2:])
    assert set(used) <= known
    for flag in ("--fp16", "--vae", "--clip_skip", "--tokenizer_cache_dir", "--network_args",
                 "--highres_fix_scale", "--from_file", "--outdir", "--sequential_file_name"):
        assert flag in used


def test_the_real_parser_takes_the_command_and_the_prompt_line(
        planned: tuple[SampleResult, FakeGen], sd_scripts: Path, sd_python: str) -> None:
    result, _ = planned
    [shard] = result.shards
    line = result.plan.line(0)
    environment = {**os.environ, "PYTHONPATH": str(sd_scripts)}
    parsed = subprocess.run([sd_python, "-c", _PARSE, json.dumps(shard.command.argv[2:]), line],
                            cwd=sd_scripts, env=environment, capture_output=True, text=True,
                            timeout=600, check=False)
    if parsed.returncode == 3:
        pytest.skip(f"sd-scripts' dependencies are not importable: {parsed.stdout.strip()}")
    assert parsed.returncode == 0, parsed.stdout[-2000:] + parsed.stderr[-3000:]
    payload = json.loads(parsed.stdout.split("RESULT", 1)[1])
    args = payload["args"]
    assert args["sampler"] == "k_euler_a" and args["W"] == 64 and args["steps"] == 2
    assert args["network_mul"] == [0.8] and args["network_args"] == ["conv_dim=4;conv_alpha=1"]
    assert args["fp16"] is True and args["sequential_file_name"] is True
    assert args["highres_fix_scale"] == 1.5
    settings = result.plan.settings
    assert payload["line"] == {"prompt": result.plan.drawn.prompts[0],
                               "negative_prompt": settings.negative_prompt,
                               "width": 64, "height": 64, "sample_steps": 2,
                               "scale": float(prompts.DEFAULT_SCALE), "seed": 0}
