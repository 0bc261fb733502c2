"""`sample --lora USER/REPO` against the loopback Hub: the LoRA and its pushed run record come
through huggingface_hub's cache; the base model from the record, else the LoRA's metadata,
else SDXL base, said in each case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.sdscripts.presets import BASE_MODEL

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen, make_fake_gen, write_lora
from .fake_hub import FakeHub

fake_gen = pytest.fixture(make_fake_gen, name="fake_gen")
TEMPLATE = "dermoscopy of {trigger} on {site}, {sex}, age {age}"
SDXL = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors"}


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The loopback Hub as HF_ENDPOINT, with a Hub cache of this test's own."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return fake_hub


@pytest.fixture
def manifest(isic2020: SyntheticSet, tmp_path: Path) -> Path:
    return prepare(isic2020.root, tmp_path / "prepared", options=PrepareOptions(repeats=1),
                   workers=1).out / "manifest.csv"


def _publish(hub: FakeHub, repo_id: str, tmp_path: Path, files: dict[str, dict[str, str]],
             record: dict[str, object] | None = None, private: bool = False) -> str:
    """A model repo holding LoRA files (path -> safetensors metadata) and a run record."""
    repo = hub.add_repo(repo_id, repo_id.split("/")[0], private=private)
    for path, metadata in files.items():
        repo.files[path] = write_lora(tmp_path / "made" / repo_id / path, metadata).read_bytes()
        repo.lfs.add(path)
    if record is not None:
        repo.files["training/run.json"] = json.dumps(record).encode()
    return repo.commit("upload")


def _sample(runner: CliRunner, fake: FakeGen, out: Path, *args: object) -> tuple[int, str, str]:
    return invoke(runner, "sample", *args, "--out", out, "--n", 3, "--dry-run",
                  "--sd-scripts", fake.sd_scripts, "--python", PYTHON)


def _joined(text: str) -> str:
    return " ".join(text.split())


def test_base_model_trigger_and_template_come_from_the_pushed_record(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, manifest: Path,
        tmp_path: Path) -> None:
    record = {"config": {"pretrained_model_name_or_path": "my-org/sdxl-derm",
                         "network_module": "networks.lora", "max_token_length": 225},
              "dataset": {"trigger": "sks melanoma", "caption_template": TEMPLATE,
                          "class_name": "melanoma", "prepared": "/elsewhere/prepared"}}
    commit = _publish(hub, "alice/mel-lora", tmp_path, {"melanoma.safetensors": SDXL}, record)
    out = tmp_path / "syn"
    code, _, stderr = invoke(runner, "sample", "--lora", "alice/mel-lora", "--out", out, "--n",
                             3, "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON)
    assert code == 1 and ("the LoRA was trained on /elsewhere/prepared, which is not on this "
                          "machine: give --like") in _joined(stderr), stderr
    code, stdout, stderr = invoke(runner, "sample", "--lora", "alice/mel-lora", "--like",
                                  manifest, "--out", out, "--n", 3, "--width", 64, "--height",
                                  64, "--steps", 2, "--sd-scripts", fake_gen.sd_scripts,
                                  "--python", PYTHON)  # a dry run writes no prompt file
    assert code == 0, stderr
    notes = _joined(stderr)
    assert f"LoRA alice/mel-lora:melanoma.safetensors at {commit[:12]}" in notes
    assert "base model my-org/sdxl-derm, from the pushed run record" in notes
    assert "my-org/sdxl-derm" in stdout
    lines = [line for p in (out / ".medsynth").rglob("*.txt")
             for line in p.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and all(line.startswith("dermoscopy of sks melanoma on")
                                   for line in lines)
    cached = list((tmp_path / "hf-cache").rglob("melanoma.safetensors"))
    assert cached and ("GET", "/alice/mel-lora/resolve/" + commit + "/training/run.json") in [
        (m, p) for m, p in hub.requests]


def test_without_a_record_the_lora_metadata_then_sdxl_base(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, tmp_path: Path) -> None:
    _publish(hub, "bob/loras", tmp_path, {
        "a.safetensors": {**SDXL, "ss_sd_model_name": "stabilityai/sdxl-turbo"},
        "checkpoints/b.safetensors": SDXL})
    code, stdout, stderr = _sample(runner, fake_gen, tmp_path / "one", "--lora", "bob/loras",
                                   "--prompt", "a mole")
    assert code == 0, stderr
    assert "base model stabilityai/sdxl-turbo, from the LoRA's metadata" in _joined(stderr)
    code, stdout, stderr = _sample(runner, fake_gen, tmp_path / "two", "--lora",
                                   "bob/loras:checkpoints/b.safetensors", "--prompt", "a mole")
    assert code == 0, stderr
    assert f"using {BASE_MODEL}" in _joined(stderr) and "sdxl_base_v1-0" in _joined(stderr)
    assert BASE_MODEL in stdout


def test_hub_problems_are_one_line(runner: CliRunner, hub: FakeHub, fake_gen: FakeGen,
                                   tmp_path: Path) -> None:
    _publish(hub, "carol/two", tmp_path, {"x.safetensors": SDXL, "y.safetensors": SDXL})
    _publish(hub, "carol/sd15", tmp_path,
             {"x.safetensors": {**SDXL, "ss_base_model_version": "sd_v1"}})
    cases = [(("--lora", "carol/nothing-here"), "was not found at"),
             (("--lora", "carol/two"), "choose one as carol/two:FILE"),
             (("--lora", "carol/two:z.safetensors"), "has no z.safetensors"),
             (("--lora", "carol/two:x.safetensors", "--revision", "v9"), "has no revision 'v9'"),
             (("--lora", "carol/sd15"), "trained for sd_v1, not SDXL"),
             (("--lora", tmp_path / "x.safetensors", "--revision", "main"),
              "for a LoRA on the Hub")]
    for args, needle in cases:
        code, _, stderr = _sample(runner, fake_gen, tmp_path / "out", *args, "--prompt", "a")
        assert code == 1 and needle in _joined(stderr), (args, stderr)
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2


def test_a_private_repo_needs_the_token_and_a_revision_pins_it(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    commit = _publish(hub, "alice/private-lora", tmp_path, {"m.safetensors": SDXL}, private=True)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "a", "--lora", "alice/private-lora",
                              "--prompt", "a")
    assert code == 1 and "HF_TOKEN" in stderr
    monkeypatch.setenv("HF_TOKEN", hub.token)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "b", "--lora", "alice/private-lora",
                              "--revision", commit, "--prompt", "a")
    assert code == 0, stderr
    assert f"at {commit[:12]}" in _joined(stderr) and hub.token not in stderr
