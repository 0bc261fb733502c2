"""`sample --lora USER/REPO` against the loopback Hub: the LoRA and its pushed run record come
through huggingface_hub's cache; the base model from the record, else the LoRA's metadata,
else SDXL base, said in each case."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
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
def _cache(tmp_path: Path) -> Path:
    """The Hub cache under the test's HF_HOME."""
    return tmp_path / "hf-home" / "hub"


SDXL = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors"}


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The loopback Hub as HF_ENDPOINT, with a Hub cache of this test's own (HF_HOME in
    tmp_path, for a CLI process too)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(_cache(tmp_path)))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
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
    cached = list(_cache(tmp_path).rglob("melanoma.safetensors"))
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


@pytest.mark.parametrize("spec", ["carol/x--y", "carol/.lora", "carol/lora-",
                                  "carol/lora.git:x.safetensors", "carol/" + "x" * 97])
def test_a_repo_id_the_hub_cannot_hold_is_one_line(runner: CliRunner, hub: FakeHub,
                                                   fake_gen: FakeGen, tmp_path: Path,
                                                   spec: str) -> None:
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "out", "--lora", spec,
                              "--prompt", "a")
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "is not a valid Hub namespace/name" in lines[0] and "--lora" in lines[0]
    assert hub.requests == []


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


RECORD: dict[str, object] = {
    "config": {"pretrained_model_name_or_path": "my-org/sdxl-derm",
               "network_module": "networks.lora"},
    "dataset": {"trigger": "sks melanoma", "caption_template": TEMPLATE,
                "class_name": "melanoma", "prepared": "<local>/prepared"}}


def _offline_cli(fake: FakeGen, out: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """`sample --dry-run` as its own process with HF_HUB_OFFLINE=1 (huggingface_hub reads it
    at import), the test's HF_HOME and endpoint inherited."""
    return subprocess.run(
        [sys.executable, "-m", "medsynth_kohya", "sample", *map(str, args), "--out", str(out),
         "--n", "2", "--dry-run", "--sd-scripts", str(fake.sd_scripts), "--python", PYTHON],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}, check=False)


def test_offline_the_cached_commit_of_main_is_used_and_named(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, manifest: Path,
        tmp_path: Path) -> None:
    first = _publish(hub, "alice/mel-lora", tmp_path, {"melanoma.safetensors": SDXL}, RECORD)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "online", "--lora", "alice/mel-lora",
                              "--like", manifest)
    assert code == 0, stderr
    assert (_cache(tmp_path) / "models--alice--mel-lora" / "refs" / "main").read_text() == first
    later = hub.repos["alice/mel-lora"].edit({"README.md": b"newer"})  # main moves on the Hub
    asked = len(hub.requests)
    done = _offline_cli(fake_gen, tmp_path / "offline", "--lora", "alice/mel-lora", "--like",
                        manifest)
    notes = _joined(done.stderr)
    assert done.returncode == 0, done.stderr
    assert len(hub.requests) == asked  # the Hub was not asked
    assert (f"LoRA alice/mel-lora:melanoma.safetensors at {first[:12]}, from the Hugging Face "
            "cache") in notes and later[:12] not in notes
    assert "without asking the Hub (HF_HUB_OFFLINE is set): the commit main named" in notes
    assert "base model my-org/sdxl-derm, from the pushed run record" in notes  # cached too
    assert f"alice/mel-lora at {first[:12]} (melanoma.safetensors, sha256" in done.stdout


def test_offline_with_nothing_cached_says_how_to_fill_the_cache(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    commit = _publish(hub, "alice/pinned", tmp_path, {"m.safetensors": SDXL})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "a", "--lora", "alice/pinned",
                              "--prompt", "a mole")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, stderr
    assert (f"HF_HUB_OFFLINE is set, and the Hugging Face cache ({_cache(tmp_path)}) has no "
            "alice/pinned at main") in _joined(stderr)
    assert "run this command once (--dry-run is enough) where the Hub can be reached" in (
        _joined(stderr))
    # a compute node's case: downloaded once by commit (--revision SHA), then run offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "b", "--lora", "alice/pinned",
                              "--revision", commit, "--prompt", "a mole")
    assert code == 0, stderr
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "c", "--lora", "alice/pinned",
                              "--revision", commit, "--prompt", "a mole")
    assert code == 0 and f"LoRA alice/pinned:m.safetensors at {commit[:12]}, from the" in (
        _joined(stderr)), stderr
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "d", "--lora", "alice/pinned",
                              "--prompt", "a mole")
    assert code == 1 and f"it holds alice/pinned only at commit {commit}" in _joined(stderr)


@pytest.mark.parametrize(("failure", "reason"), [("drop", "cannot reach {}"),
                                                 (503, "the Hub at {} answered 503")])
def test_a_hub_that_cannot_be_reached_falls_back_to_the_cache(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, tmp_path: Path,
        failure: str | int, reason: str) -> None:
    commit = _publish(hub, "bob/lora", tmp_path, {"x.safetensors": SDXL})
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "a", "--lora", "bob/lora",
                              "--prompt", "a mole")
    assert code == 0, stderr
    hub.fail("GET", r"/api/models/.*", failure)  # a lost connection, or the Hub down
    reason = reason.format(hub.url)
    code, _, stderr = _sample(runner, fake_gen, tmp_path / "b", "--lora", "bob/lora",
                              "--prompt", "a mole")
    assert code == 0, stderr
    assert (f"LoRA bob/lora:x.safetensors at {commit[:12]}, from the Hugging Face cache") in (
        _joined(stderr)) and f"without asking the Hub ({reason})" in _joined(stderr)


def test_a_download_cut_short_is_one_line_that_says_so(
        hub: FakeHub, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The Hub answers the file's metadata, then the connection drops partway through the file:
    the cache has the commit but not the LoRA, which is what the one line says (in a process of
    its own, where huggingface_hub's log is set up as a user's is: its retries are not shown)."""
    _publish(hub, "bob/lora", tmp_path, {"x.safetensors": SDXL})
    hub.fail("GET", r"/resolve/", "short")
    done = subprocess.run(
        [sys.executable, "-m", "medsynth_kohya", "sample", "--lora", "bob/lora", "--prompt",
         "a mole", "--out", str(tmp_path / "a"), "--n", "2", "--dry-run", "--sd-scripts",
         str(fake_gen.sd_scripts), "--python", PYTHON],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
        check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert f"cannot reach {hub.url}" in _joined(done.stderr) and "is it a LoRA" not in lines[0]
    assert "holds no LoRA file of bob/lora" in _joined(done.stderr)


def test_the_set_records_the_hub_repo_and_commit(
        runner: CliRunner, hub: FakeHub, fake_gen: FakeGen, manifest: Path,
        tmp_path: Path) -> None:
    commit = _publish(hub, "alice/rec", tmp_path, {"final/melanoma.safetensors": SDXL}, RECORD)
    out = tmp_path / "syn"
    code, stdout, stderr = invoke(runner, "sample", "--lora", "alice/rec:final/melanoma"
                                  ".safetensors", "--out", out, "--n", 2, "--sd-scripts",
                                  fake_gen.sd_scripts, "--python", PYTHON)
    assert code == 1 and ("the folder the LoRA was trained on is not known: its published "
                          "run record hides local paths (<local>/prepared); give --like "
                          "PREPARED") in _joined(stderr), stderr
    code, stdout, stderr = invoke(runner, "sample", "--lora", "alice/rec:final/melanoma"
                                  ".safetensors", "--like", manifest.parent, "--out", out,
                                  "--n", 2, "--width", 64, "--height", 64, "--steps", 2,
                                  "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON)
    assert code == 0, stderr
    assert f"alice/rec at {commit[:12]} (final/melanoma.safetensors, sha256" in _joined(stdout)
    assert "hf-home" not in stdout  # not the cache path
    with (out / "metadata.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and {(row["lora_repo"], row["lora_commit"], row["lora_file"])
                               for row in rows} == {("alice/rec", commit,
                                                     "final/melanoma.safetensors")}
    digest = hashlib.sha256(hub.repos["alice/rec"].files["final/melanoma.safetensors"])
    assert {row["lora_sha256"] for row in rows} == {digest.hexdigest()}
    state = json.loads((out / ".medsynth" / "sample.json").read_text(encoding="utf-8"))
    assert state["lora_hub"] == {"repo_id": "alice/rec", "commit": commit,
                                 "path": "final/melanoma.safetensors"}
