"""Secrets inside a run's values never reach the Hub: the bytes that leave are checked.

`test_hub.py` and `test_privacy.py` prove the redaction of secret-named keys. Here each kind of
secret (the Hub token, an environment secret, the value of a secret-named key in the config,
of a `--set`, of a `key=value` item of a list such as `optimizer_args`, of a `--key=value`
launch argument) also sits inside other, innocent values in every place a run record holds
values: the overrides, the config, a nested list, the launch command. Every copy must arrive
as `<redacted>` with the text around it intact, and every uploaded file must still parse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.hub import contents, privacy
from medsynth_kohya.hub import push as hubmod

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub
from .private import ARGUMENT, ENV, KEYED, LISTED, SET, make_home
from .test_hub import REPO, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SOURCES = {"token": TOKEN, "environment": ENV, "config key": KEYED, "--set": SET,
           "list item": LISTED, "launch argument": ARGUMENT}
"""Where a secret comes from: how push learns that the value is one."""
PLACES = ("overrides", "config", "nested list", "command")
"""Where a copy of it sits inside an innocent value."""


def _declare(run: Path) -> None:
    """Give every secret its source: the secret-named key, `--set`, list item or argument."""
    config = toml.loads((run / "config.toml").read_text(encoding="utf-8"))
    config["medsynth_run"]["huggingface_token"] = KEYED
    config["medsynth_run"]["optimizer_args"] = ["weight_decay=0.01", f"api_key={LISTED}"]
    (run / "config.toml").write_text(toml.dumps(config), encoding="utf-8")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["config"]["huggingface_token"] = KEYED
    record["config"]["optimizer_args"] = ["weight_decay=0.01", f"api_key={LISTED}"]
    record["overrides"] = ["learning_rate=1e-4", f'wandb_api_key="{SET}"']
    record["command"] = [*record["command"], f"--wandb_api_key={ARGUMENT}"]
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def _hide(run: Path, secret: str, place: str) -> str:
    """Put `secret` inside an innocent value at `place`; the text it must be published as."""
    value = f"run-{secret}-7"
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    if place == "overrides":
        record["overrides"].append(f"log_tracker_name={value}")
    elif place == "command":
        record["command"] += ["--log_tracker_name", value]
    else:
        entry: Any = value if place == "config" else [["wandb", value]]
        record["config"]["log_tracker_name"] = entry
        config = toml.loads((run / "config.toml").read_text(encoding="utf-8"))
        config["medsynth_run"]["log_tracker_name"] = entry
        (run / "config.toml").write_text(toml.dumps(config), encoding="utf-8")
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return f"run-{privacy.REDACTED}-7"


def _leaks(files: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(path, name) for path, data in files.items() for name, secret in SOURCES.items()
            if secret.encode() in data]


def _planned(run: Path) -> dict[str, bytes]:
    planned = contents.plan(run, REPO, token=TOKEN, environ={"WANDB_API_KEY": ENV})
    assert planned.findings == ()
    return {u.path_in_repo: u.source if isinstance(u.source, bytes) else u.source.read_bytes()
            for u in planned.uploads}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("source", list(SOURCES))
def test_a_secret_inside_a_value_is_redacted_in_place(tmp_path: Path, source: str,
                                                      place: str) -> None:
    run = make_run(tmp_path / "first")
    _declare(run)
    published = _hide(run, SOURCES[source], place)

    files = _planned(run)
    assert _leaks(files) == []
    record = json.loads(files["training/run.json"])
    if place == "overrides":
        assert f"log_tracker_name={published}" in record["overrides"]
        assert f"`--set log_tracker_name={published}`" in files["README.md"].decode()
    elif place == "command":
        assert record["command"][-3:] == [f"--wandb_api_key={privacy.REDACTED}",
                                          "--log_tracker_name", published]
    else:
        config = toml.loads(files["training/config.toml"].decode())["medsynth_run"]
        expected = published if place == "config" else [["wandb", published]]
        assert config["log_tracker_name"] == record["config"]["log_tracker_name"] == expected


def test_secret_keys_in_lists_and_arguments_are_redacted(tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    _declare(run)

    files = _planned(run)
    record = json.loads(files["training/run.json"])
    config = toml.loads(files["training/config.toml"].decode())["medsynth_run"]
    args = ["weight_decay=0.01", f"api_key={privacy.REDACTED}"]
    assert config["optimizer_args"] == record["config"]["optimizer_args"] == args
    assert record["command"][-1] == f"--wandb_api_key={privacy.REDACTED}"
    assert record["overrides"] == ["learning_rate=1e-4", f"wandb_api_key={privacy.REDACTED}"]
    assert config["huggingface_token"] == privacy.REDACTED


def test_no_secret_arrives_at_the_hub(fake_hub: FakeHub, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import ModelCard

    monkeypatch.setenv("WANDB_API_KEY", ENV)
    run = make_run(tmp_path / "first")
    _declare(run)
    for place, secret in zip(PLACES, (TOKEN, ENV, SET, LISTED), strict=True):
        _hide(run, secret, place)

    hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)

    files = fake_hub.repos[REPO].files
    assert _leaks(files) == []
    config = toml.loads(files["training/config.toml"].decode())["medsynth_run"]
    assert config["network_dim"] == 32
    assert config["log_tracker_name"] == [["wandb", f"run-{privacy.REDACTED}-7"]]
    record = json.loads(files["training/run.json"])
    assert record["overrides"][0] == "learning_rate=1e-4"
    assert "sdxl_train_network.py" in record["command"]
    (tmp_path / "received.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "received.md")
    assert card.data.base_model == "stabilityai/stable-diffusion-xl-base-1.0"


def test_the_dry_run_shows_no_secret(runner: CliRunner, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", ENV)
    run = make_run(tmp_path / "first")
    _declare(run)
    _hide(run, ENV, "overrides")
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run")
    assert code == 0, stderr
    assert f"`--set log_tracker_name=run-{privacy.REDACTED}-7`" in stdout
    assert [name for name, s in SOURCES.items() if s in stdout + stderr] == []


def test_a_user_named_like_the_tool_or_a_hub_model_can_push(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan looks for the user's name, but not inside the public names that may hold it:
    the repo id, the tool's own name and Hub model ids in the config."""
    make_home(tmp_path, monkeypatch, "kohya")
    run = make_run(tmp_path / "first")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["config"]["vae"] = "kohya/sdxl-vae-fp16"
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    planned = contents.plan(run, "kohya/melanoma-lora", token=TOKEN, environ={})
    assert planned.findings == ()
    assert "kohya-ss/sd-scripts" in planned.card and "medsynth-kohya" in planned.card

    (run / "vae").mkdir()
    (run / "vae" / "kohya").mkdir()
    record["config"]["vae"] = "vae/kohya"  # a folder of the run, not a Hub id
    record["message"] = "trained by kohya"
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    found = contents.plan(run, "kohya/melanoma-lora", token=TOKEN, environ={}).findings
    assert found == (("training/run.json", "the user name 'kohya'"),)


def test_a_secret_given_as_the_next_argument_and_the_push_history_stay_home(
        tmp_path: Path) -> None:
    """`--password VALUE` (two launch arguments) hides VALUE and nothing around it, however
    the secret word stands in the option's name; the record's pushes (repos, URLs, times) are
    not published."""
    run = make_run(tmp_path / "first")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["command"] += ["--password", ARGUMENT, "--output_name", "melanoma",
                          "--wandb_api_key", LISTED]
    record["pushes"] = [{"repo": "lab/private-draft", "commit": "abc1234",
                         "url": "https://huggingface.co/lab/private-draft",
                         "time": "2024-01-03T00:00:00+00:00"}]
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    files = _planned(run)
    assert _leaks(files) == []
    published = json.loads(files["training/run.json"])
    assert published["command"][-7:] == [
        "config.toml", "--password", privacy.REDACTED, "--output_name", "melanoma",
        "--wandb_api_key", privacy.REDACTED]
    assert "pushes" not in published and b"private-draft" not in files["training/run.json"]


def test_a_record_without_overrides_or_command_is_published_without_them(
        tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    del record["overrides"], record["command"]
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    text = _planned(run)["training/run.json"]
    assert text.startswith(b'{\n  "tool": ') and text.endswith(b"}\n")  # as train writes it
    published = json.loads(text)
    assert "overrides" not in published and "command" not in published
    assert published["config"]["network_dim"] == 32


def test_the_published_record_names_no_machine(tmp_path: Path) -> None:
    """Host names, process ids and the cluster's address stay in the local run.json."""
    run = make_run(tmp_path / "first")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record.update(host="gpu07.radiology.example.org", pid=4242, machines={
        "count": 2, "main_process_ip": "10.1.2.3", "main_process_port": 29500,
        "processes_per_machine": 4}, nodes=[
        {"rank": 0, "host": "gpu07.radiology.example.org", "pid": 4242, "gpus": []},
        {"rank": 1, "host": "gpu08.radiology.example.org", "pid": 77, "gpus": []}])
    (run / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    text = _planned(run)["training/run.json"]
    assert b"radiology" not in text and b"10.1.2.3" not in text and b"4242" not in text
    published = json.loads(text)
    assert "host" not in published and "pid" not in published
    assert published["machines"] == {"count": 2, "processes_per_machine": 4}
    assert published["nodes"] == [{"rank": 0, "gpus": []}, {"rank": 1, "gpus": []}]
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["host"] == record["host"]
