"""Nothing private leaves the machine: a run trained under a user's home, pushed to the
loopback Hub, with secrets given by --set, by a preset and by the environment."""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.hub import privacy
from medsynth_kohya.resources import data_dir

from .conftest import invoke
from .disk import checksums
from .fake_gen import write_lora
from .fake_hub import TOKEN, FakeHub
from .fakes import make_fake_sd, stand_in
from .private import AUTH_SECRET, ENV_SECRET, PRESET_SECRET, TOKEN_SET_SECRET, USER, make_home, png

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
REPO = "alice/melanoma-lora"
AUTHOR = "Dr. Ada Example"
"""metadata_author: a name, published (`author` is not `auth`)."""
SECRETS = (TOKEN_SET_SECRET, PRESET_SECRET, AUTH_SECRET, ENV_SECRET, TOKEN)


def _png_with_text(text: str) -> bytes:
    """A 1x1 PNG with a tEXt chunk, as image tools write generation parameters."""
    return png((b"tEXt", b"parameters\0" + text.encode()), (b"IDAT", zlib.compress(b"\0\0")))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home folder `.../home/<name>/` that is HOME and the working folder."""
    folder = make_home(tmp_path, monkeypatch)
    (folder / "project").mkdir()
    monkeypatch.chdir(folder / "project")
    return folder


@pytest.fixture
def trained(home: Path, isic2020: SyntheticSet, fake_hub: FakeHub, runner: CliRunner,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run trained with the stand-in sd-scripts from the project folder under `home`."""
    return _train(home, isic2020, runner, monkeypatch)


def _train(home: Path, isic2020: SyntheticSet, runner: CliRunner,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run trained with the stand-in sd-scripts from the project folder under `home`."""
    fake = make_fake_sd(home / "tools", monkeypatch)
    stand_in(home / "tools" / "packages", "wandb")  # the preset logs with it
    prepared = home / "project" / "data" / "prepared"
    prepare(isic2020.root, prepared, options=PrepareOptions(repeats=2), workers=1)
    models = home / "models"
    (models / "tokenizers").mkdir(parents=True)
    (models / "sd_xl_base_1.0.safetensors").write_bytes(b"base")
    preset = home / "presets" / "mine.toml"
    preset.parent.mkdir()
    smoke = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    smoke["logging"] = {"log_with": "wandb", "wandb_api_key": PRESET_SECRET,
                        "metadata_author": AUTHOR}
    preset.write_text(toml.dumps(smoke), encoding="utf-8")
    monkeypatch.setenv("WANDB_API_KEY", ENV_SECRET)
    monkeypatch.setenv("MY_AUTH_HEADER", AUTH_SECRET)
    code, stdout, stderr = invoke(
        runner, "train", "data/prepared", "--preset", str(preset), "--run-dir", "runs/r1",
        "--sd-scripts", fake.sd_scripts, "--python", sys.executable,
        "--set", f'huggingface_token="{TOKEN_SET_SECRET}"',
        "--set", f"log_tracker_name={ENV_SECRET}",
        "--set", f"wandb_run_name={AUTH_SECRET}",
        "--set", f"pretrained_model_name_or_path={models / 'sd_xl_base_1.0.safetensors'}",
        "--set", "tokenizer_cache_dir=~/models/tokenizers",
        "--set", f'log_prefix="{home}/x-"')
    assert code == 0, stdout + stderr
    run = home / "project" / "runs" / "r1"
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded" and str(home) in json.dumps(record)
    return run


def _private(data: bytes, home: Path, tmp_path: Path) -> list[str]:
    """What of the user's, or of this machine, a file that reached the Hub holds."""
    found = [s for s in SECRETS if s.encode() in data]
    found += [s for s in (str(home), USER, str(tmp_path)) if s.encode() in data]
    text = data.decode("utf-8", "replace")
    found += re.findall(r"(?<![\w.:/<>-])/(?:tmp|home|root|work|usr)/\S*", text)
    return found


def test_nothing_private_reaches_the_hub(runner: CliRunner, trained: Path, home: Path,
                                         fake_hub: FakeHub, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stdout + stderr
    received = fake_hub.repos[REPO].files
    for path, data in received.items():
        assert _private(data, home, tmp_path) == [], path

    config = toml.loads(received["training/config.toml"].decode())
    options = {k: v for table in config.values() for k, v in table.items()}
    assert options["output_dir"] == "output" and options["logging_dir"] == "logs"
    assert options["sample_prompts"] == "sample_prompts.toml"
    assert options["pretrained_model_name_or_path"] == "<local>/sd_xl_base_1.0.safetensors"
    assert options["tokenizer_cache_dir"] == "<local>/tokenizers"
    for key in ("huggingface_token", "wandb_api_key", "wandb_run_name"):
        assert options[key] == privacy.REDACTED, key
    assert options["metadata_author"] == AUTHOR
    assert options["network_dim"] == 4 and options["log_prefix"] == "<local>/x-"
    dataset = toml.loads(received["training/dataset.toml"].decode())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == "<local>/2_melanoma"
    record = json.loads(received["training/run.json"])
    assert record["preset_file"] == "<local>/mine.toml"
    assert "huggingface_token=<redacted>" in record["overrides"]
    assert record["lora_files"][-1] == "output/melanoma.safetensors"
    assert "config.toml" in record["command"]

    card_path = tmp_path / "received.md"
    card_path.write_bytes(received["README.md"])
    card = ModelCard.load(card_path)
    assert card.data.base_model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert "`--set huggingface_token=<redacted>`" in card.text
    assert "sd_xl_base_1.0.safetensors` (local file)" in card.text


def test_dry_run_shows_the_scan_and_show_prints_the_uploaded_bytes(
        runner: CliRunner, trained: Path, home: Path, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert "Privacy scan passed" in stdout  # it read the repo (what it would delete), no more
    assert {method for method, _ in fake_hub.requests} <= {"GET", "HEAD"}
    assert _private(stdout.encode(), home, tmp_path) == []
    shown = {}
    for path in ("training/run.json", "training/config.toml", "README.md"):
        code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--show",
                                      path)
        assert code == 0, stderr
        shown[path] = stdout.encode()
    code, _, _ = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert code == 0
    for path, data in shown.items():
        assert fake_hub.repos[REPO].files[path] == data, path
    code, _, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--show", "nope.txt")
    assert code != 0 and "training/run.json" in stderr


@pytest.mark.parametrize("leak", ["home", "secret", "user", "path"])
def test_a_leak_the_rewriting_cannot_fix_refuses_the_push(
        runner: CliRunner, trained: Path, home: Path, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, leak: str) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    text = {"home": f"lora: {home}/loras/x.safetensors", "secret": f"key {TOKEN_SET_SECRET}",
            "user": f"made by {USER} on a laptop",
            "path": f"vae: {tmp_path}/vae.safetensors"}[leak]
    sample = trained / "output" / "sample" / "melanoma_000002_00_20240102030405_42.png"
    sample.parent.mkdir(exist_ok=True)
    sample.write_bytes(_png_with_text(text))
    before = (trained / "run.json").read_bytes()
    for extra in (["--dry-run"], []):
        code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO,
                                      "--endpoint", fake_hub.url, *extra)
        assert code == 1, stdout
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "push refused" in lines[0] and sample.name in lines[0]
        assert f"`medsynth-kohya push runs/r1 --repo-id {REPO} --show " in lines[0]
        assert TOKEN_SET_SECRET not in stderr
    assert fake_hub.requests == [] and REPO not in fake_hub.repos
    assert (trained / "run.json").read_bytes() == before


@pytest.mark.parametrize("login", ["data", "train", "images", "text", "file", "brown", "tan",
                                   "dark", "light", "unknown"])
def test_a_login_that_is_a_word_of_the_card_does_not_block_the_push(
        runner: CliRunner, isic2020: SyntheticSet, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, login: str) -> None:
    """The tool's own wording (the card's prose, the configs' option names) holding the login
    as an ordinary word is no leak; the login in a path or in text the user gave still is."""
    home = make_home(tmp_path, monkeypatch, login)
    (home / "project").mkdir()
    monkeypatch.chdir(home / "project")
    run = _train(home, isic2020, runner, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push = ("push", "runs/r1", "--repo-id", REPO, "--endpoint", fake_hub.url)
    code, stdout, stderr = invoke(runner, *push)
    assert code == 0, stdout + stderr
    card = fake_hub.repos[REPO].files["README.md"].decode()
    assert str(home) not in card
    sample = run / "output" / "sample" / "melanoma_000002_00_20240102030405_42.png"
    sample.parent.mkdir(exist_ok=True)
    negative = toml.loads((run / "sample_prompts.toml").read_text(encoding="utf-8"))
    sample.write_bytes(_png_with_text(  # sd-scripts' parameters: the prompt file's own words
        f"photo of skin, me1anoma\nNegative prompt: {negative['prompt']['negative_prompt']}"))
    code, stdout, stderr = invoke(runner, *push, "--dry-run")
    assert code == 0, stdout + stderr
    for text in (f"made by {login} on a laptop", f"lora: /home/{login}/loras/x.safetensors"):
        sample.write_bytes(_png_with_text(text))
        code, stdout, stderr = invoke(runner, *push, "--dry-run")
        assert code == 1 and f"the user name {login!r}" in stderr, stdout + stderr
    sample.unlink()
    write_lora(run / "output" / "melanoma.safetensors", {"modelspec.author": login})
    code, stdout, stderr = invoke(runner, *push, "--dry-run")
    assert code == 1 and f"the user name {login!r}" in stderr, stdout + stderr
    write_lora(run / "output" / "melanoma.safetensors")
    original = (run / "config.toml").read_text(encoding="utf-8")
    for title in (f"lesions by {login}", f"lesions by {login}: v2", f"{login}-lesions",
                  f"({login}.)"):  # the user's words, a word of the tool's or not
        config = toml.loads(original)
        next(iter(config.values()))["metadata_title"] = title
        (run / "config.toml").write_text(toml.dumps(config), encoding="utf-8")
        code, stdout, stderr = invoke(runner, *push, "--dry-run")
        assert code == 1 and f"the user name {login!r}" in stderr, (title, stdout + stderr)
        assert "training/config.toml" in stderr


def test_secret_names_in_any_case_and_position() -> None:
    for name in ("wandb_api_key", "HF_TOKEN", "s3Credentials", "db_password", "X_AUTH_HEADER",
                 "my_auth_header", "Authorization", "proxy_authorisation", "oauth_client",
                 "AUTH", "author_token", "mySecretValue", "apikey", "TOKENS"):
        assert privacy.is_secret_key(name), name
    for name in ("keep_tokens", "max_token_length", "tokenizer_cache_dir", "class_tokens",
                 "learning_rate", "network_dim", "metadata_author", "AUTHOR", "authors",
                 "authored_by", "Authorship", "certificate_authority"):
        assert not privacy.is_secret_key(name), name


def test_the_author_is_published_unless_it_is_the_user(
        runner: CliRunner, trained: Path, fake_hub: FakeHub,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    lora = trained / "output" / "melanoma.safetensors"
    write_lora(lora, {"ss_output_name": "melanoma", "modelspec.author": AUTHOR})
    code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stdout + stderr
    [published] = [data for path, data in fake_hub.repos[REPO].files.items()
                   if path.endswith("melanoma.safetensors")]
    assert AUTHOR.encode() in published

    write_lora(lora, {"ss_output_name": "melanoma", "modelspec.author": USER})
    before, sent = checksums(trained), len(fake_hub.requests)
    code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 1, stdout
    assert "melanoma.safetensors" in stderr and f"the user name {USER!r}" in stderr
    assert len(fake_hub.requests) == sent and checksums(trained) == before


def test_a_refused_push_leaves_the_run_folder_as_it_was(
        runner: CliRunner, trained: Path, home: Path, fake_hub: FakeHub,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (trained / "my-notes.txt").write_text("mine", encoding="utf-8")
    leak = trained / "output" / "sample" / "melanoma_000002_00_20240102030405_42.png"
    leak.parent.mkdir(exist_ok=True)

    def push(*extra: object, token: str = TOKEN) -> tuple[int, str]:
        monkeypatch.setenv("HF_TOKEN", token)
        code, stdout, stderr = invoke(runner, "push", "runs/r1", "--repo-id", REPO,
                                      "--endpoint", fake_hub.url, *extra)
        assert "Traceback" not in stderr
        return code, stdout + stderr

    leak.write_bytes(_png_with_text(f"lora: {home}/loras/x.safetensors"))
    before = checksums(trained)
    assert push()[0] == 1  # the last scan's finding
    assert checksums(trained) == before
    leak.unlink()
    lora = trained / "output" / "melanoma.safetensors"
    kept = lora.read_bytes()
    before = checksums(trained)
    refusals = [(("--repo-id", "not a repo"), TOKEN), (("--license", "Not A Licence"), TOKEN),
                (("--endpoint", "ftp://example.org"), TOKEN), ((), "hf_WrongToken0000000000"),
                (("--samples", trained / "nowhere"), TOKEN)]
    for extra, token in refusals:
        code, said = push(*extra, token=token)
        assert code == 1, (extra, said)
        assert checksums(trained) == before, extra
    lora.unlink()
    before = checksums(trained)
    code, said = push()
    assert code == 1 and "no LoRA file" in said
    assert checksums(trained) == before and REPO not in fake_hub.repos

    lora.write_bytes(kept)
    before = checksums(trained)
    code, said = push()
    assert code == 0, said
    after = checksums(trained)
    assert {path for path in before if after.get(path) != before[path]} == {"run.json"}


def test_paths_are_relative_to_the_run_or_local(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    policy = privacy.Policy(run, home=str(tmp_path), users=[])
    assert policy.text(str(run / "output")) == "output"
    assert policy.text(str(run)) == "."
    assert policy.text(str(tmp_path / "m" / "base.safetensors")) == "<local>/base.safetensors"
    assert policy.text("stabilityai/stable-diffusion-xl-base-1.0") == (
        "stabilityai/stable-diffusion-xl-base-1.0")
    assert policy.text(f"LoRA written to {run}/output/x.safetensors") == (
        "LoRA written to output/x.safetensors")
    assert policy.text("see https://huggingface.co/a/b and head/neck") == (
        "see https://huggingface.co/a/b and head/neck")
    assert policy.text(r"C:\Users\zoe\model.safetensors") == "<local>/model.safetensors"
