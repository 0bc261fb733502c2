"""`push` against a fake Hub on 127.0.0.1, through huggingface_hub's own client."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data import archive, manifest
from medsynth_kohya.data.prepare import PrepareOptions
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import ARCHIVE, HAM10000, ISIC2020, OWN, Source
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import card, contents
from medsynth_kohya.hub import push as hubmod
from medsynth_kohya.sdscripts import render

from .conftest import invoke, squeezed
from .fake_hub import TOKEN, FakeHub

CONFIG_SECRET = "hf_ConfigSecretN0tForTheHub1234"
REPO = "alice/melanoma-lora"
SAMPLE_NAMES = ("melanoma_000010_00_20240102030405_42.png",
                "melanoma_000010_01_20240102030407_43.png")
OLD_SAMPLES = ("melanoma_000005_00_20240102020000_42.png",
               "melanoma_000005_01_20240102020002_43.png")
# huggingface_hub 2.x hands LFS uploads to httpx2 as `data=`, which httpx2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

PROMPTS = ("photo of female skin, me1anoma on torso, at age 45",
           "photo of male skin, me1anoma on head/neck, at age 70, hairy")


def _lora(step: int, payload: bytes = b"") -> bytes:
    header = json.dumps({"__metadata__": {"ss_output_name": "melanoma", "ss_steps": str(step)},
                         "lora_unet.weight": {"dtype": "F16", "shape": [4, 4],
                                              "data_offsets": [0, 32]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(32)) + payload


def _png(seed: int) -> bytes:
    """PNG-framed bytes of their own for each seed, whole to their IEND chunk."""
    return (b"\x89PNG\r\n\x1a\n" + hashlib.sha256(str(seed).encode()).digest() * 8
            + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def _manifest(folder: Path, patients: Sequence[str] = ()) -> Path:
    """The prepared manifest of six training photos and one validation photo; `patients`
    their patient ids in turn (else `IP_0`, `IP_1`, ...)."""
    rows = []
    spread = [("female", 45, "torso"), ("female", 52, "lower extremity"), ("male", 70, "torso"),
              ("male", 66, "head/neck"), ("female", None, "torso"), (None, 23, None)]
    for i, (sex, age, site) in enumerate(spread):
        rows.append({"id": f"ISIC_{i:07d}", "source": f"/data/isic/ISIC_{i:07d}.jpg",
                     "patient_id": patients[i % len(patients)] if patients else f"IP_{i}",
                     "sex": sex, "age": age, "site": site,
                     "diagnosis": archive.MELANOMA, "hairy": i % 3 == 0, "hair_score": 0.5,
                     "caption": PROMPTS[i % 2],
                     "width": 640, "height": 480, "split": "train"})
    rows.append({**rows[0], "id": "ISIC_9999999", "split": "val"})
    path = folder / "manifest.csv"
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write(manifest.conform(pd.DataFrame(rows)), path)
    download = folder.parent / "isic"  # prepared from an ISIC 2020 challenge download
    (download / "train").mkdir(parents=True, exist_ok=True)
    (download / "train.csv").write_text("image_name,target\n", encoding="utf-8")
    table = manifest.read(path)  # prepare records the Archive node its rows share
    PreparedFolder(folder).write_state(Source(ISIC2020, download / "train.csv",
                                              (download / "train",)), PrepareOptions(), None,
                                       archive.common_node(table["diagnosis"]))
    return path


def make_run(root: Path, *, step: int = 10, samples: tuple[str, ...] = SAMPLE_NAMES,
             secret: str | None = CONFIG_SECRET, patients: Sequence[str] = ()) -> Path:
    """A run folder as `medsynth-kohya train` leaves it after a successful run (its manifest's
    patient ids `patients`, see `_manifest`)."""
    prepared = root / "prepared"
    manifest_path = _manifest(prepared, patients)
    run = root / "run"
    output = run / "output"
    (output / "sample").mkdir(parents=True)
    config = {"output_dir": str(output.resolve()), "output_name": "melanoma",
              "pretrained_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0",
              "network_module": "networks.lora", "network_dim": 32, "network_alpha": 16,
              "learning_rate": 0.0001, "max_train_steps": step, "mixed_precision": "bf16",
              "resolution": "1024,1024", "seed": 42, "vae": "vae/sdxl_vae.safetensors"}
    if secret:
        config["huggingface_token"] = secret
    render.write_toml({"medsynth_run": config}, run / "config.toml")
    render.write_toml({
        "general": {"caption_extension": ".txt"},
        "datasets": [{"resolution": [1024, 1024], "subsets": [
            {"image_dir": str(prepared / "img" / "4_melanoma"), "num_repeats": 4,
             "class_tokens": "me1anoma"}]}]}, run / "dataset.toml")
    render.write_toml({"prompt": {
        "negative_prompt": "blurry", "width": 1024, "height": 1024, "scale": 12,
        "sample_steps": 28, "subset": [{"prompt": p} for p in PROMPTS]}},
        run / "sample_prompts.toml")
    (run / "train.log").write_text("steps: 100%\n", encoding="utf-8")
    (output / "melanoma-000001.safetensors").write_bytes(_lora(step // 2))
    (output / "melanoma.safetensors").write_bytes(_lora(step))
    for i, name in enumerate(samples):
        (output / "sample" / name).write_bytes(_png(step * 10 + i))
    record = {
        "tool": "medsynth-kohya", "version": "0.1.0", "preset": "h100-80gb",
        "preset_file": "/work/configs/h100-80gb.toml", "overrides": ["learning_rate=1e-4"],
        "config": config,
        "command": ["python", "-m", "accelerate.commands.launch", "--num_processes", "1",
                    "sdxl_train_network.py", "--config_file", str(run / "config.toml")],
        "cwd": "/work/vendor/sd-scripts", "expected_steps": step,
        "versions": {"medsynth_kohya": "0.1.0",
                     "sd_scripts_commit": "ae72efb92babe89ff8e70f057e42db68440e8d61",
                     "torch": "2.5.1", "accelerate": "1.6.0"},
        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559,
                  "compute_capability": [9, 0]}],
        "dataset": {"prepared": str(prepared.resolve()),
                    "manifest_sha256": files.sha256(manifest_path),
                    "train_images": 6, "repeats": 4},
        "start": "2024-01-02T01:00:00+00:00", "end": "2024-01-02T02:30:15+00:00",
        "exit_status": 0, "status": "succeeded", "message": "LoRA written",
        "lora_files": [str(output / "melanoma-000001.safetensors"),
                       str(output / "melanoma.safetensors")],
    }
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "first")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _card(text: str, tmp_path: Path) -> Any:
    """The received README parsed back through huggingface_hub's ModelCard.load."""
    from huggingface_hub import ModelCard

    path = tmp_path / "received-README.md"
    path.write_text(text, encoding="utf-8")
    return ModelCard.load(path)


# --- a push and what arrived ------------------------------------------------------------------

def test_push_uploads_every_file_byte_for_byte(fake_hub: FakeHub, run: Path,
                                               tmp_path: Path) -> None:
    result = hubmod.push(run, REPO, private=True, endpoint=fake_hub.url, token=TOKEN)

    repo = fake_hub.repos[REPO]
    assert repo.private and len(repo.commits) == 2 and result.commit == repo.head
    assert result.changed and result.url == f"{fake_hub.url}/{REPO}" and result.user == "alice"
    expected = {"melanoma.safetensors": run / "output" / "melanoma.safetensors",
                **{f"samples/{n}": run / "output" / "sample" / n for n in SAMPLE_NAMES},
                "training/sample_prompts.toml": run / "sample_prompts.toml"}
    for path, local in expected.items():
        assert repo.files[path] == local.read_bytes(), path
    assert set(repo.files) == {".gitattributes", "README.md", "training/config.toml",
                               "training/dataset.toml", "training/run.json", contents.PUSHED,
                               *expected}
    dataset = toml.loads(repo.files["training/dataset.toml"].decode())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == "<local>/4_melanoma"
    assert {"melanoma.safetensors", *(f"samples/{n}" for n in SAMPLE_NAMES)} <= repo.lfs
    assert result.files[0][0] == "README.md"
    assert dict(result.files)["melanoma.safetensors"] == (run / "output" /
                                                          "melanoma.safetensors").stat().st_size
    assert not fake_hub.unknown

    card = _card(repo.files["README.md"].decode(), tmp_path)
    assert card.data.base_model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert card.data.license == "cc-by-nc-4.0"
    assert card.data.tags == ["text-to-image", "stable-diffusion-xl", "lora", "medical",
                              "dermatology", "melanoma"]
    assert card.data.instance_prompt == "me1anoma"
    widgets = card.data.widget
    assert [w["text"] for w in widgets] == list(PROMPTS)
    assert [w["output"]["url"] for w in widgets] == [f"samples/{n}" for n in SAMPLE_NAMES]
    assert all(w["output"]["url"] in repo.files for w in widgets)
    text = card.text
    for needle in ("Not for diagnosis", "Rotemberg", "Sci Data", "CC-BY-NC 4.0",
                   "CreativeML Open RAIL++-M", "load_lora_weights", f'"{REPO}"',
                   "sdxl_gen_img.py", "| female | 3 | 50.0 % |", "| unknown | 1 | 16.7 % |",
                   "| 70-79 | 1 | 16.7 % |", "| torso | 3 | 50.0 % |", "`hairy`",
                   "1 x NVIDIA H100 80GB HBM3 (79 GiB); trained with 1 process",
                   "medsynth_kohya 0.1.0, sd-scripts ae72efb92bab, torch 2.5.1, accelerate 1.6.0",
                   "1 h 30 min", "`network_dim` | `32`",
                   "`sdxl_vae.safetensors` (local file)", "6 melanoma images", "h100-80gb"):
        assert needle in text, needle
    assert "/data/isic" not in text and "{{" not in text
    said = " ".join(text.split())
    rendered = sorted(path for path in repo.files if path.endswith(".toml"))
    assert (f"The rendered sd-scripts files ({', '.join(f'`{p}`' for p in rendered)}) and the "
            "run record (`training/run.json`) are in this repository.") in said


def test_the_card_names_only_the_training_files_it_publishes(fake_hub: FakeHub, run: Path,
                                                             tmp_path: Path) -> None:
    """A run folder that lost its rendered TOML files pushes without them: the card must not
    say they are in the repository."""
    for name in ("config.toml", "dataset.toml", "sample_prompts.toml"):
        (run / name).unlink()
    hubmod.push(run, REPO, private=True, endpoint=fake_hub.url, token=TOKEN)
    repo = fake_hub.repos[REPO]
    assert not [path for path in repo.files if path.startswith("training/")
                and path.endswith(".toml")]
    said = " ".join(_card(repo.files["README.md"].decode(), tmp_path).text.split())
    assert ("The run record (`training/run.json`) is in this repository; the run folder held "
            "none of the rendered sd-scripts files (`training/*.toml`) to publish.") in said
    assert "The rendered sd-scripts files (" not in said


def test_secrets_are_redacted_and_the_token_never_written(fake_hub: FakeHub, run: Path,
                                                          tmp_path: Path,
                                                          capfd: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)

    repo = fake_hub.repos[REPO]
    config = toml.loads(repo.files["training/config.toml"].decode())
    assert config["medsynth_run"]["huggingface_token"] == contents.REDACTED
    assert config["medsynth_run"]["network_dim"] == 32
    record = json.loads(repo.files["training/run.json"])
    assert record["config"]["huggingface_token"] == contents.REDACTED
    assert "pushes" not in record
    for path, data in repo.files.items():
        assert TOKEN.encode() not in data and CONFIG_SECRET.encode() not in data, path
    for path, data in _snapshot(tmp_path).items():
        assert TOKEN.encode() not in data, path
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text
    pushes = json.loads((run / "run.json").read_text())["pushes"]
    assert pushes[0]["repo_id"] == REPO and pushes[0]["commit"] == repo.head
    assert all(h.get("Authorization") in (None, f"Bearer {TOKEN}") for h in fake_hub.headers_seen)


def test_second_push_changes_nothing_and_a_newer_run_is_one_commit(fake_hub: FakeHub, run: Path,
                                                                    tmp_path: Path) -> None:
    first = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    repo = fake_hub.repos[REPO]
    commits, requests = len(repo.commits), len(fake_hub.requests)

    again = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert len(repo.commits) == commits and not again.changed and again.commit == first.commit
    assert not any(method == "PUT" for method, _ in fake_hub.requests[requests:])

    newer = make_run(tmp_path / "second", step=20, samples=OLD_SAMPLES)
    (newer / "output" / "melanoma.safetensors").write_bytes(_lora(20, b"newer weights"))
    result = hubmod.push(newer, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert len(repo.commits) == commits + 1 and result.changed and result.commit == repo.head
    assert repo.files["melanoma.safetensors"].endswith(b"newer weights")
    assert set(result.deleted) == {f"samples/{n}" for n in SAMPLE_NAMES}
    assert {p for p in repo.files if p.startswith("samples/")} == {
        f"samples/{n}" for n in OLD_SAMPLES}


def _sample_set(synth: Path, count: int) -> Path:
    """A `sample` folder of `count` images with a grid, metadata.csv listing them last first."""
    (synth / "images").mkdir(parents=True)
    for i in range(count):
        (synth / "images" / f"SYN_{i:07d}.png").write_bytes(_png(100 + i))
    (synth / "grid.jpg").write_bytes(b"\xff\xd8\xff\xe0grid\xff\xd9")
    rows = ["isic_id,sex,prompt,negative_prompt,seed"] + [
        f"SYN_{i:07d},female,synthetic prompt {i},blurry,{i}" for i in reversed(range(count))]
    (synth / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return synth


def test_all_checkpoints_and_a_sample_folder(fake_hub: FakeHub, run: Path, tmp_path: Path,
                                             ) -> None:
    synth = _sample_set(tmp_path / "synth", 12)

    result = hubmod.push(run, REPO, all_checkpoints=True, samples=synth, endpoint=fake_hub.url,
                         token=TOKEN)

    repo = fake_hub.repos[REPO]
    saved = run / "output" / "melanoma-000001.safetensors"
    assert repo.files["checkpoints/melanoma-000001.safetensors"] == saved.read_bytes()
    assert repo.files["samples/grid.jpg"] == (synth / "grid.jpg").read_bytes()
    uploaded = sorted(p for p in repo.files if p.startswith("samples/SYN_"))
    assert len(uploaded) == contents.MAX_SAMPLE_IMAGES
    assert "samples/SYN_0000011.png" in uploaded  # metadata.csv order, not file name order
    card = _card(repo.files["README.md"].decode(), tmp_path)
    assert [w["text"] for w in card.data.widget] == [f"synthetic prompt {i}"
                                                      for i in (11, 10, 9, 8)]
    assert card.data.widget[0]["parameters"]["negative_prompt"] == "blurry"
    assert "![Sample grid](samples/grid.jpg)" in card.text
    assert ("checkpoints/melanoma-000001.safetensors",
            saved.stat().st_size) in result.files


def test_all_checkpoints_of_a_run_without_saves_warns_and_pushes_the_final_lora(
        runner: CliRunner, fake_hub: FakeHub, run: Path) -> None:
    (run / "output" / "melanoma-000001.safetensors").unlink()  # the run's one epoch save
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                  "--all-checkpoints", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    said = " ".join(stderr.split())
    assert (f"Warning: --all-checkpoints: {run / 'output'} holds no epoch or step save of "
            "melanoma besides the final LoRA (the run saved none, or they were removed): "
            "checkpoints/ gets nothing; pushing melanoma.safetensors alone") in said, said
    assert "melanoma.safetensors" in stdout and "checkpoints/" not in stdout
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                             "--endpoint", fake_hub.url)
    assert code == 0 and "--all-checkpoints" not in stderr, stderr


def test_endpoint_from_hf_endpoint_and_token_from_the_stored_login(
        fake_hub: FakeHub, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    Path(huggingface_hub.constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(huggingface_hub.constants.HF_TOKEN_PATH).write_text(TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)  # set after import: read at call time
    result = hubmod.push(run, "medsynth-lab/melanoma-lora", private=False)
    assert result.url == f"{fake_hub.url}/medsynth-lab/melanoma-lora"
    assert not fake_hub.repos["medsynth-lab/melanoma-lora"].private


# --- the command line --------------------------------------------------------------------------

def test_cli_push_prints_the_url(runner: CliRunner, fake_hub: FakeHub, run: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url, "--public")
    assert code == 0, stderr
    assert f"{fake_hub.url}/{REPO}" in stdout and "alice" in stdout
    assert TOKEN not in stdout + stderr
    assert not fake_hub.repos[REPO].private
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stderr
    assert "unchanged" in stdout and f"{fake_hub.url}/{REPO}" in stdout
    assert "already exists and is public" in stderr
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url, "--dry-run")  # private asked: said before
    assert code == 0, stderr
    assert "already exists and is public" in " ".join(stderr.split())
    assert f"Would push to {fake_hub.url}/{REPO} as alice (an existing public repo)" in stdout
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", "alice/new-lora",
                                  "--endpoint", fake_hub.url, "--dry-run")
    assert code == 0 and "as alice (private if created)" in stdout, stdout + stderr
    assert "already exists" not in stderr


def test_cli_dry_run_lists_files_and_prints_the_card_offline(runner: CliRunner,
                                                             fake_hub: FakeHub,
                                                             run: Path) -> None:
    before = _snapshot(run)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                  "--all-checkpoints", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert fake_hub.requests == []
    for path in ("README.md", "melanoma.safetensors", "checkpoints/melanoma-000001.safetensors",
                 "training/config.toml", "training/run.json", f"samples/{SAMPLE_NAMES[0]}"):
        assert path in stdout, path
    size = (run / "output" / "melanoma.safetensors").stat().st_size
    assert f"{size} B" in stdout
    assert "base_model: stabilityai/stable-diffusion-xl-base-1.0" in stdout
    assert "instance_prompt: me1anoma" in stdout and "## How to use" in stdout
    assert "a real push needs a token" in stderr
    assert _snapshot(run) == before


def _trained_on(run: Path, base: str) -> None:
    """Make `run` a run that trained on `base` (its config and record alike)."""
    config = toml.loads((run / "config.toml").read_text(encoding="utf-8"))
    config["medsynth_run"]["pretrained_model_name_or_path"] = base
    render.write_toml(config, run / "config.toml")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["config"]["pretrained_model_name_or_path"] = base
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def test_a_run_on_a_local_checkpoint_gets_no_false_base_model(runner: CliRunner,
                                                               fake_hub: FakeHub,
                                                               run: Path) -> None:
    """A fine-tune's local file is not passed off as SDXL base: the card names the file and
    no base_model, and push warns that the card cannot know its Hub id."""
    _trained_on(run, "/models/juggernautXL_v9Rundiffusionphoto2.safetensors")
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--show", "README.md")
    assert code == 0, stderr
    assert "base_model:" not in stdout and "stabilityai" not in stdout
    assert ("A LoRA for the local model `juggernautXL_v9Rundiffusionphoto2.safetensors` (its Hub "
            "id was not recorded)") in " ".join(stdout.split())
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run", "--endpoint",
                             fake_hub.url)
    assert code == 0, stderr
    assert squeezed("the run trained on the local model juggernautXL_v9Rundiffusionphoto2."
                    "safetensors, whose Hub id the card cannot know") in squeezed(stderr)
    assert squeezed("pass --base-model OWNER/NAME") in squeezed(stderr)
    named = ("--base-model", "RunDiffusion/Juggernaut-XL-v9")
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--show", "README.md",
                                  *named)
    assert code == 0, stderr
    assert "base_model: RunDiffusion/Juggernaut-XL-v9" in stdout and "stabilityai" not in stdout
    assert ("A LoRA for [RunDiffusion/Juggernaut-XL-v9](https://huggingface.co/RunDiffusion/"
            "Juggernaut-XL-v9) (as the local file `juggernautXL_v9Rundiffusionphoto2."
            "safetensors`)") in " ".join(stdout.split())
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run", "--endpoint",
                             fake_hub.url, *named)
    assert code == 0 and "Hubid" not in squeezed(stderr), stderr
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                             "--base-model", "juggernaut.safetensors")
    assert code != 0 and "Traceback" not in stderr
    assert squeezed("--base-model 'juggernaut.safetensors' must be namespace/name") in squeezed(
        stderr)
    _trained_on(run, "RunDiffusion/Juggernaut-XL-v9")
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--show", "README.md",
                             "--base-model", "someone/other")
    assert code != 0 and len(stderr.strip().splitlines()) == 1, stderr
    assert squeezed("--base-model someone/other is not RunDiffusion/Juggernaut-XL-v9, the Hub "
                    "model the run trained on: leave --base-model out") in squeezed(stderr)
    _trained_on(run, "/models/sd_xl_base_1.0.safetensors")
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert "base_model: stabilityai/stable-diffusion-xl-base-1.0" in stdout
    assert "Hubid" not in squeezed(stderr)

def test_push_help_lists_its_options(runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "push", "--help")
    assert code == 0
    for option in ("--repo-id", "--private", "--public", "--license", "--all-checkpoints",
                   "--samples", "--endpoint", "--dry-run", "HF_TOKEN"):
        assert option in stdout, option


def test_push_help_and_the_readme_say_which_sample_images_are_published(
        runner: CliRunner) -> None:
    """push publishes only the first MAX_SAMPLE_IMAGES of a --samples set plus its grid: the
    --samples help and the README's push section say so, with that number."""
    first = f"first{contents.MAX_SAMPLE_IMAGES}images"
    _, stdout, _ = invoke(runner, "push", "--help")
    assert f"itsfirst{contents.MAX_SAMPLE_IMAGES}images" in squeezed(stdout)
    assert "grid.jpg" in stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = squeezed(readme.split("sample images under `samples/`", 1)[1][:300])
    assert first in section and "grid" in section


# --- bad input and failures --------------------------------------------------------------------

def _refused(runner: CliRunner, run: Path, *args: object) -> str:
    """Run the CLI expecting a one-line error; returns it."""
    code, stdout, stderr = invoke(runner, "push", run, *args)
    assert code == 1, stdout + stderr
    # huggingface_hub's upload bars and retry warnings may come first; the error is one line.
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert TOKEN not in stdout + stderr
    return errors[0]


@pytest.mark.parametrize("repo_id", ["melanoma-lora", "alice/x/y", "-alice/x", "alice/x--y",
                                     "alice/", "alice/x.git"])
def test_a_bad_repo_id_is_refused_before_any_request(runner: CliRunner, fake_hub: FakeHub,
                                                     run: Path, repo_id: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    message = _refused(runner, run, "--repo-id", repo_id, "--endpoint", fake_hub.url)
    assert "namespace/name" in message and fake_hub.requests == []


@pytest.mark.parametrize("given", ["--endpoint", "HF_ENDPOINT"])
def test_no_token_is_refused_before_any_request(runner: CliRunner, fake_hub: FakeHub,
                                                run: Path, given: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The line names the token page of the Hub pushed to, and a login that checks the token
    there (`hf auth login` asks HF_ENDPOINT's Hub), not huggingface.co's."""
    args: tuple[str, ...] = ("--endpoint", fake_hub.url)
    if given == "HF_ENDPOINT":
        monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
        args = ()
    message = _refused(runner, run, "--repo-id", REPO, *args)
    assert "HF_TOKEN" in message and fake_hub.requests == []
    assert f"({fake_hub.url}/settings/tokens)" in message and "huggingface.co" not in message
    assert f"`HF_ENDPOINT={fake_hub.url} hf auth login`" in message
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run", *args)
    warned = " ".join(stderr.split())
    assert code == 0 and f"({fake_hub.url}/settings/tokens)" in warned, stderr
    assert "huggingface.co" not in warned


def test_no_token_for_the_public_hub_names_its_token_page(runner: CliRunner, run: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(run / "no-token"))
    message = _refused(runner, run, "--repo-id", REPO)
    assert "(https://huggingface.co/settings/tokens) or run `hf auth login`" in message


def test_a_run_without_a_lora_file_is_refused(runner: CliRunner, fake_hub: FakeHub, run: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (run / "output" / "melanoma.safetensors").unlink()
    message = _refused(runner, run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert "no LoRA file" in message and "--resume" in message and fake_hub.requests == []
    record = json.loads((run / "run.json").read_text())
    again = (f"`medsynth-kohya train {record['dataset']['prepared']} --run-dir {run} --resume "
             "--force`")  # train --resume only reports a succeeded run as finished
    assert message.endswith(f"the run succeeded: train it again from step 0 with {again}")
    (run / "output" / "melanoma.safetensors").write_bytes(b"")
    message = _refused(runner, run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert "not a safetensors file" in message and message.endswith(again)
    (run / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    message = _refused(runner, run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    resume = f"medsynth-kohya train {record['dataset']['prepared']} --run-dir {run} --resume"
    assert message.endswith("the run is interrupted: it saved no training state to resume "
                            f"from: start over with `{resume} --force` (same settings)")
    message = _refused(runner, run.parent, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert "no run.json" in message


def test_a_dry_run_says_how_to_train_it_by_the_command_that_made_it(runner: CliRunner,
                                                                   run: Path,
                                                                   tmp_path: Path) -> None:
    """A train --dry-run run is trained by train --resume --force (keeping its preset); demo
    renders a run it never trains where it cannot (no CUDA GPU here), and no train --dry-run
    was ever typed to drop."""
    (run / "output" / "melanoma.safetensors").unlink()
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": "dry-run"}))
    assert _refused(runner, run, "--repo-id", REPO, "--dry-run").endswith(
        f"it was a dry run: train it with `medsynth-kohya train {record['dataset']['prepared']} "
        f"--run-dir {run} --resume --force`")
    out = tmp_path / "my demo"
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0, stderr
    message = _refused(runner, out / "run", "--repo-id", REPO, "--dry-run")
    assert message.endswith(
        "`medsynth-kohya demo` only rendered this run, as it does on a machine without a CUDA "
        f"GPU: on one with a CUDA GPU, run `medsynth-kohya demo --out '{out}'` again or "
        f"`medsynth-kohya train '{out / 'prepared'}'`"), message


def test_sample_metadata_in_the_2020_style_orders_and_a_broken_one_is_refused(
        runner: CliRunner, fake_hub: FakeHub, run: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    for i in range(3):
        (synth / "images" / f"SYN_{i:07d}.png").write_bytes(_png(200 + i))
    rows = ["image_name,prompt"] + [f"SYN_{i:07d},prompt {i}" for i in (2, 0, 1)]
    (synth / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    chosen = contents.plan(run, REPO, samples=synth, token=TOKEN).card
    assert chosen.index("prompt 2") < chosen.index("prompt 0") < chosen.index("prompt 1")
    (synth / "metadata.csv").write_text("name,prompt\nSYN_0000000,a\n", encoding="utf-8")
    message = _refused(runner, run, "--repo-id", REPO, "--samples", synth, "--endpoint",
                       fake_hub.url)
    assert "has no isic_id or image_name column" in message and fake_hub.requests == []


def _failing(fake_hub: FakeHub, case: str) -> tuple[str, str]:
    """Set the fake Hub up for one failure; the repo id to push to and the expected text."""
    if case == "401":
        fake_hub.token = "hf_SomeoneElsesToken"
        return REPO, "rejected the token (401)"
    if case.startswith("403"):  # a fine-grained token that may only read alice's repos
        fake_hub.role, fake_hub.scoped = "fineGrained", {"alice": ("repo.content.read",)}
        if case == "403":
            fake_hub.add_repo(REPO, "alice")
        return REPO, f"no write access to {REPO} (403)"
    if case == "namespace":
        fake_hub.add_repo("bob/melanoma-lora", "bob")
        return "bob/melanoma-lora", "the token belongs to alice, who cannot write to bob"
    if case == "read-only":
        fake_hub.role = "read"
        return REPO, "the token of alice at http://127.0.0.1:"
    if case == "404":
        fake_hub.fail("POST", r"/preupload/", 404)
        return REPO, "was not found"
    if case == "500":
        fake_hub.fail("PUT", r"^/lfs/", 500)
        return REPO, "failed with 500"
    if case == "drop-upload":
        fake_hub.fail("PUT", r"^/lfs/", "drop")
        return REPO, "lost the connection"
    if case == "card-400":
        fake_hub.fail("POST", r"/api/validate-yaml", 400)
        return REPO, ("refused the model card's metadata (400: injected failure 400); check the "
                      "values the card takes from you (--license, the run's prompts)")
    fake_hub.fail("POST", r"/commit/", "drop")
    return REPO, "lost the connection"


@pytest.mark.parametrize("case", ["401", "403", "403-new", "namespace", "read-only", "404", "500",
                                  "drop-upload", "drop-commit", "card-400"])
def test_hub_failures_are_one_line_and_leave_nothing_behind(
        runner: CliRunner, fake_hub: FakeHub, run: Path, tmp_path: Path, case: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    repo_id, expected = _failing(fake_hub, case)
    heads = {name: repo.head for name, repo in fake_hub.repos.items()}
    before = _snapshot(tmp_path)
    message = _refused(runner, run, "--repo-id", repo_id, "--endpoint", fake_hub.url)

    assert expected in message, message
    assert len(fake_hub.requests) < 50
    assert _snapshot(tmp_path) == before
    for name, repo in fake_hub.repos.items():
        assert repo.head == heads.get(name, repo.commits[0]), name
    if case.startswith("403"):
        assert "--repo-id YOUR-NAME/" in message
    if case in ("401", "namespace", "read-only"):  # refused on whoami's answer alone
        assert fake_hub.requests == [("GET", "/api/whoami-v2")]


def test_the_same_push_succeeds_once_the_hub_recovers(runner: CliRunner, fake_hub: FakeHub,
                                                      run: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("POST", r"/commit/", "drop", times=1)
    _refused(runner, run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    puts = sum(method == "PUT" for method, _ in fake_hub.requests)
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert sum(method == "PUT" for method, _ in fake_hub.requests) == puts  # not sent twice
    assert len(fake_hub.repos[REPO].commits) == 2


# --- pieces ------------------------------------------------------------------------------------

def test_repo_ids_and_licences() -> None:
    assert contents.check_repo_id("alice/melanoma-sdxl_lora.v2") == "alice/melanoma-sdxl_lora.v2"
    assert contents.check_repo_id("a/" + "x" * 96) == "a/" + "x" * 96
    for repo_id, rule in (("alice/" + "x" * 97, "its name has 97 characters; the Hub allows at "
                                                "most 96"),
                          ("alice/lora--x", "its name holds '--' or '..'"),
                          ("al..ice/lora", "its namespace holds '--' or '..'"),
                          ("alice/lora.git", "its name may not end in .git"),
                          ("alice/-lora", "its name must start and end with a letter or digit"),
                          ("alice/lo ra", "its name holds ' ': the Hub allows only letters"),
                          ("alice", "must be namespace/name")):
        with pytest.raises(UserError, match=re.escape(rule)):
            contents.check_repo_id(repo_id)
    assert contents.check_license("openrail++") == "openrail++"
    assert contents.check_license("llama3.1") == "llama3.1"
    for license, close in (("CC BY NC", "; did you mean cc-by-nc-4.0, "),
                           ("cc-by-nc", "; did you mean cc-by-nc-4.0, "),
                           ("apache", "; did you mean apache-2.0?"), ("foo", "; see https://")):
        with pytest.raises(UserError, match=f"--license {license!r} is not a licence id the "
                                            f"Hub knows{re.escape(close)}"):
            contents.check_license(license)
    with pytest.raises(UserError, match="needs a license_name"):
        contents.check_license("other")


def test_a_licence_the_hub_does_not_know_is_refused_before_anything_is_sent(
        runner: CliRunner, fake_hub: FakeHub, run: Path) -> None:
    for license in ("foo", "cc-by-nc"):
        code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--license",
                                      license, "--endpoint", fake_hub.url, "--dry-run")
        assert code == 1 and "is not a licence id the Hub knows" in stderr, stdout + stderr
        assert len(stderr.strip().splitlines()) == 1
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", "me/" + "x" * 100,
                                  "--endpoint", fake_hub.url, "--dry-run")
    assert code == 1 and "the Hub allows at most 96" in stderr, stdout + stderr
    code, stdout, _ = invoke(runner, "push", run, "--repo-id", REPO, "--license", "mit",
                             "--show", "README.md")
    assert code == 0 and "license: mit" in stdout.splitlines()
    assert fake_hub.requests == []


def test_a_licence_allowing_commercial_use_of_non_commercial_data_is_warned_of(
        runner: CliRunner, fake_hub: FakeHub, run: Path) -> None:
    """ISIC challenge images are CC-BY-NC 4.0: a push under a licence that allows commercial
    use says so on the command line, not only in the card; a non-commercial one says nothing."""
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--license", "mit",
                                  "--endpoint", fake_hub.url, "--dry-run")
    assert code == 0, stdout + stderr
    assert squeezed("--license mit allows commercial use, but the ISIC 2020 training images "
                    "are CC-BY-NC 4.0") in squeezed(stderr)
    for license in ("cc-by-nc-sa-4.0", "fair-noncommercial-research-license"):
        code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--license",
                                      license, "--endpoint", fake_hub.url, "--dry-run")
        assert code == 0 and "commercial" not in squeezed(stderr), stdout + stderr
    assert card.licence_warnings(card.TrainingData(HAM10000), "apache-2.0") == [
        "--license apache-2.0 allows commercial use, but the HAM10000 training images are for "
        "non-commercial use: their terms may not let you release derived weights so; use "
        "--license cc-by-nc-4.0 unless you hold other rights"]
    for origin in (ARCHIVE, OWN, card.DEMO, None):
        assert card.licence_warnings(card.TrainingData(origin), "mit") == []


def test_a_changed_manifest_is_not_described(fake_hub: FakeHub, run: Path) -> None:
    record = json.loads((run / "run.json").read_text())
    path = Path(record["dataset"]["prepared"]) / "manifest.csv"
    path.write_text(path.read_text() + "\n", encoding="utf-8")
    planned = contents.plan(run, REPO)
    assert "changed after training" in planned.card and "| female |" not in planned.card
    assert any("sha256 differs" in w for w in planned.warnings)


def test_the_card_shows_the_recorded_fitzpatrick_types(run: Path) -> None:
    """The card says the metadata records no skin type only when none is recorded; recorded
    types (an Archive export's fitzpatrick_skin_type) are shown as a table."""
    assert "records no Fitzpatrick skin type" in contents.plan(run, REPO).card
    record = json.loads((run / "run.json").read_text())
    path = Path(record["dataset"]["prepared"]) / "manifest.csv"
    table = manifest.read(path)
    types = ["IV", "II", "II", "VI", "I", "II", "III"]
    table["fitzpatrick_skin_type"] = types
    manifest.write(manifest.conform(table), path)
    record["dataset"]["manifest_sha256"] = files.sha256(path)
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    card = contents.plan(run, REPO).card
    assert "records no" not in card and "no skin type" not in card
    lines = card.splitlines()
    start = lines.index("| Fitzpatrick skin type (recorded) | images | share |")
    train = types[:6]  # the last row is the validation split's
    expected = [f"| {t} | {train.count(t)} | {100 * train.count(t) / 6:.1f} % |"
                for t in ("I", "II", "IV", "VI")]
    assert lines[start + 2:start + 6] == expected


def test_demo_data_and_another_licence_are_stated(run: Path) -> None:
    record = json.loads((run / "run.json").read_text())
    path = Path(record["dataset"]["prepared"]) / "manifest.csv"
    table = manifest.read(path)
    table["id"] = [f"SYN_{i:07d}" for i in range(len(table))]
    manifest.write(table, path)
    record["dataset"]["manifest_sha256"] = files.sha256(path)
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")

    planned = contents.plan(run, REPO, license="mit")
    assert "generated demo data" in planned.card
    assert any("synthetic demo data" in w for w in planned.warnings)
    assert "license: mit" in planned.card and "released under `mit`" in planned.card
    assert "Rotemberg" not in planned.card  # generated images, not ISIC 2020's
    assert "images generated by medsynth-kohya's demo" in planned.card


def test_samples_flagged_as_copies_are_refused_unless_allowed(run: Path, tmp_path: Path) -> None:
    """A set whose copy check flags a published image is refused by default; allowed, it is
    published with a warning beside the run's own (an interrupted run) and the unchecked one's;
    only the final LoRA goes unless every checkpoint is asked for."""
    from medsynth_kohya.evaluation import copycheck

    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    (run / "run.json").write_text(json.dumps({**record, "status": "interrupted"}),
                                  encoding="utf-8")
    def flagged_set(folder: Path, count: int, flagged: str) -> Path:
        """`count` images listed last to first, `flagged` a near-copy by its copy check."""
        (folder / "images").mkdir(parents=True)
        for i in range(count):
            (folder / "images" / f"SYN_{i:07d}.png").write_bytes(_png(100 + i))
        rows = ["isic_id,sex,prompt,negative_prompt,seed"] + [
            f"SYN_{i:07d},female,synthetic prompt {i},blurry,{i}" for i in reversed(range(count))]
        (folder / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        copycheck.write(folder, copycheck.CopyCheck(
            0.1, "isic", 10, ("SYN_0000000", "SYN_0000001"),
            (copycheck.Flag(flagged, "ISIC_0000042", 0.01),)))
        return folder

    synth = flagged_set(tmp_path / "synth", 3, "SYN_0000001")
    with pytest.raises(UserError, match=r"1 sample image is a near-copy .*SYN_0000001 ~ ISIC_"):
        contents.plan(run, REPO, samples=synth)
    gridded = flagged_set(tmp_path / "gridded", 20, "SYN_0000000")  # on the grid only
    contents.plan(run, REPO, samples=gridded)  # the grid is not published without its file
    (gridded / "grid.jpg").write_bytes(b"\xff\xd8\xff\xe0grid\xff\xd9")
    with pytest.raises(UserError, match=r"1 sample image is a near-copy .*SYN_0000000 ~ ISIC_"):
        contents.plan(run, REPO, samples=gridded)
    planned = contents.plan(run, REPO, samples=synth, allow_copies=True)
    first, allowed, unchecked = planned.warnings
    assert first.startswith("run.json says the run is interrupted")
    assert allowed == ("publishing 1 sample image flagged as near-copies of training photos "
                       "(--allow-copies)")
    assert unchecked.startswith("1 published sample image was not checked for near-copies")
    assert not any(u.path_in_repo.startswith("checkpoints/") for u in planned.uploads)


def test_the_unchecked_warning_counts_the_image_files_and_the_grid_apart(
        run: Path, tmp_path: Path) -> None:
    """Of a 12-image set push publishes the first 8 images and the grid (showing all 12): the
    warning counts the 8 files it lists and the 4 seen only in the grid, not 12 files."""
    planned = contents.plan(run, REPO, samples=_sample_set(tmp_path / "synth", 12))
    published = [u for u in planned.uploads if u.path_in_repo.startswith("samples/SYN_")]
    assert len(published) == contents.MAX_SAMPLE_IMAGES == 8
    assert ("8 published sample images, and 4 more shown only in the grid (samples/grid.jpg), "
            "were not checked for near-copies" in " ".join(planned.warnings)), planned.warnings


def test_a_grid_showing_a_deleted_image_is_refused(run: Path, tmp_path: Path) -> None:
    """An image deleted after sample drew the grid (a flagged near-copy, say) is still in
    grid.jpg: the push is refused while the grid may show it; without a grid the rest go, with
    a warning that metadata.csv lists an image that is gone."""
    from medsynth_kohya.evaluation import copycheck

    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    for i in range(4):
        (synth / "images" / f"SYN_{i:07d}.png").write_bytes(_png(200 + i))
    rows = [f"SYN_{i:07d},prompt {i}" for i in range(4)]
    (synth / "metadata.csv").write_text("\n".join(["isic_id,prompt", *rows]) + "\n",
                                        encoding="utf-8")
    (synth / "grid.jpg").write_bytes(b"\xff\xd8\xff\xe0grid\xff\xd9")
    copycheck.write(synth, copycheck.CopyCheck(
        0.1, "isic", 10, tuple(f"SYN_{i:07d}" for i in range(4)),
        (copycheck.Flag("SYN_0000002", "ISIC_0000042", 0.01),)))
    (synth / "images" / "SYN_0000002.png").unlink()
    with pytest.raises(UserError, match=r"grid.jpg shows 1 image no longer in images/ "
                                        r"\(first: SYN_0000002\)"):
        contents.plan(run, REPO, samples=synth)
    (synth / "grid.jpg").unlink()
    planned = contents.plan(run, REPO, samples=synth)
    assert sorted(u.path_in_repo for u in planned.uploads if u.path_in_repo.startswith(
        "samples/")) == [f"samples/SYN_{i:07d}.png" for i in (0, 1, 3)]
    assert any("metadata.csv lists 1 image no longer in images/ (first: SYN_0000002)" in w
               for w in planned.warnings)


def test_an_emptied_set_is_refused_not_pushed_with_its_old_grid(
        runner: CliRunner, fake_hub: FakeHub, run: Path, tmp_path: Path) -> None:
    """metadata.csv down to its header and images/ empty: the grid left there shows images
    the set no longer has, so `push --samples --dry-run` is refused in one line."""
    synth = tmp_path / "emptied"
    (synth / "images").mkdir(parents=True)
    (synth / "metadata.csv").write_text("isic_id,prompt\n", encoding="utf-8")
    (synth / "grid.jpg").write_bytes(b"\xff\xd8\xff\xe0grid\xff\xd9")
    said = _refused(runner, run, "--repo-id", REPO, "--samples", synth, "--dry-run",
                    "--endpoint", fake_hub.url)
    assert said == (f"Error: --samples {synth}: its metadata.csv lists no image, so grid.jpg "
                    "shows none of this set; run `medsynth-kohya sample` into it again, or "
                    "leave out --samples")
    assert fake_hub.requests == []


def test_an_image_sample_did_not_make_is_never_published(run: Path, tmp_path: Path) -> None:
    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    (synth / "images" / "SYN_0000000.png").write_bytes(_png(100))
    (synth / "metadata.csv").write_text("isic_id,prompt\nSYN_0000000,a prompt\n",
                                        encoding="utf-8")
    assert [u.path_in_repo for u in contents.plan(run, REPO, samples=synth).uploads
            if u.path_in_repo.startswith("samples/")] == ["samples/SYN_0000000.png"]
    (synth / "images" / "my_patient.png").write_bytes(_png(7))  # a photo left there
    with pytest.raises(UserError, match=r"1 file in images/ is not in its metadata.csv "
                                        r"\(first: my_patient.png\)"):
        contents.plan(run, REPO, samples=synth, allow_copies=True)
    (synth / "metadata.csv").unlink()  # then nothing tells which images sample made
    with pytest.raises(UserError, match=r"synth has no metadata.csv: give a folder written by "):
        contents.plan(run, REPO, samples=synth, allow_copies=True)
    for image in (synth / "images").iterdir():
        image.unlink()
    (synth / "grid.jpg").write_bytes(_png(7))  # a grid alone, no more telling
    with pytest.raises(UserError, match=r"synth has no metadata.csv"):
        contents.plan(run, REPO, samples=synth, allow_copies=True)


def test_an_image_emptied_or_cut_short_is_never_published(run: Path, tmp_path: Path) -> None:
    """A sample image a full disk or a cut copy left without its end would be a blank card
    widget: the push is refused until sample makes it again."""
    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    rows = [f"SYN_{i:07d},a prompt" for i in range(3)]
    (synth / "metadata.csv").write_text("\n".join(["isic_id,prompt", *rows]) + "\n",
                                        encoding="utf-8")
    for i in range(3):
        (synth / "images" / f"SYN_{i:07d}.png").write_bytes(_png(i))
    assert len(contents.plan(run, REPO, samples=synth).uploads) > 3
    for damage in (b"", _png(1)[:-1]):
        (synth / "images" / "SYN_0000001.png").write_bytes(damage)
        with pytest.raises(UserError, match=r"1 image in images/ is not whole \(first: "
                                            r"SYN_0000001.png: empty or cut short\); re-run "):
            contents.plan(run, REPO, samples=synth)


def test_a_grid_emptied_cut_short_or_not_a_jpeg_is_never_published(run: Path,
                                                                      tmp_path: Path) -> None:
    import cv2
    import numpy as np

    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    (synth / "metadata.csv").write_text("isic_id,prompt\nSYN_0000000,a prompt\n",
                                        encoding="utf-8")
    (synth / "images" / "SYN_0000000.png").write_bytes(_png(0))
    ok, encoded = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    assert ok
    grid = encoded.tobytes()
    (synth / "grid.jpg").write_bytes(grid)
    assert "samples/grid.jpg" in {u.path_in_repo for u in contents.plan(run, REPO,
                                                                         samples=synth).uploads}
    for damage in (b"", grid[: len(grid) // 3], b"garbage", _png(1)):
        (synth / "grid.jpg").write_bytes(damage)
        with pytest.raises(UserError, match=r"synth: grid.jpg is not whole \(empty or cut short\);"
                                            r" re-run `medsynth-kohya sample` with the same "):
            contents.plan(run, REPO, samples=synth)


@pytest.mark.parametrize("name", ["config.toml", "dataset.toml", "sample_prompts.toml"])
def test_a_rendered_file_that_cannot_be_read_is_refused_not_published_empty(
        run: Path, name: str) -> None:
    (run / name).write_text("[[[bad toml", encoding="utf-8")
    with pytest.raises(UserError, match=rf"cannot read {re.escape(str(run / name))} \(.+\): "
                       r"push publishes the run's rendered sd-scripts files; restore it, or "
                       r"delete it to push without it"):
        contents.plan(run, REPO)
    (run / name).unlink()
    planned = contents.plan(run, REPO)
    assert f"training/{name}" not in {u.path_in_repo for u in planned.uploads}


def test_a_run_on_the_demo_s_synthetic_data_says_so(run: Path) -> None:
    """Trained on the demo's synthetic images (SYN_ ids), the push warns and the card says so;
    the training samples' widgets carry the run's negative prompt."""
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    table = Path(record["dataset"]["prepared"]) / "manifest.csv"
    table.write_text(table.read_text(encoding="utf-8").replace("ISIC_", "SYN_"), encoding="utf-8")
    record["dataset"]["manifest_sha256"] = files.sha256(table)
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    planned = contents.plan(run, REPO)
    assert planned.warnings == ("the run trained on the synthetic demo data; the card says so",)
    assert "trained on medsynth-kohya's *generated demo data*" in planned.card
    assert "negative_prompt: blurry" in planned.card
    assert 'weight_name="melanoma.safetensors"' in planned.card
    assert planned.repo_id == REPO and TOKEN in contents.plan(run, REPO, token=TOKEN).secrets


@pytest.mark.parametrize(("repeats", "words"), [(4, "repeated 4 times per epoch"),
                                                (1, "repeated once per epoch"),
                                                (None, "repeated ? times per epoch")])
def test_the_card_says_how_often_each_image_is_repeated(run: Path, repeats: int | None,
                                                        words: str) -> None:
    record = json.loads((run / "run.json").read_text())
    record["dataset"]["repeats"] = repeats
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert words in contents.plan(run, REPO).card
