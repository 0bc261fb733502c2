"""The Hub is asked whose token this is before anything is written (reproduce --push, push and
push --dry-run with a token), the plan names the endpoint push uses, and huggingface_hub's
progress bars and log lines stay out of piped output."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import access
from medsynth_kohya.hub import push as hubmod
from medsynth_kohya.pipeline.reproduce import reproduce

from .conftest import invoke
from .disk import entries
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .fake_hub import TOKEN, FakeHub
from .test_hub import make_run

QUICK = ("--set", "max_train_steps=6", "--set", "save_every_n_steps=3")
"""The original config, shortened so the stand-in trains in a moment."""
WHOAMI = ("GET", "/api/whoami-v2")
ESCAPES = ("\r", "\x1b[A")
"""What tqdm frames leave in a file: carriage returns and cursor-up escapes."""

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_original_gen(tmp_path, monkeypatch)


def _token_case(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, case: str) -> tuple[str, str]:
    """Set the Hub and HF_TOKEN up for one refusal; the repo to push to and what is said."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    if case == "rejected":
        monkeypatch.setenv("HF_TOKEN", "hf_RevokedLongAgo0123456789abcdef")
        return "alice/lora", f"the Hub at {fake_hub.url} rejected the token (401)"
    if case == "read-only":
        fake_hub.role = "read"
        return "alice/lora", "the token of alice at"
    fake_hub.add_repo("someone-else/lora", "someone-else")
    return "someone-else/lora", "the token belongs to alice, who cannot write to someone-else"


CASES = ("rejected", "read-only", "namespace")


def _one_error(code: int, stdout: str, stderr: str) -> str:
    assert code == 1, stdout + stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.strip().startswith("Error: "), stderr
    assert "hf_" not in stdout + stderr
    return stderr.strip()


@pytest.mark.parametrize("case", CASES)
def test_reproduce_asks_the_hub_before_its_first_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo_id, said = _token_case(fake_hub, monkeypatch, case)
    workdir = tmp_path / "work"
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                  "--n", "2", *QUICK, "--sd-scripts", fake.sd_scripts,
                                  "--python", PYTHON, "--push", repo_id)
    message = _one_error(code, stdout, stderr)
    assert said in message
    assert "--repo-id" not in message
    assert not workdir.exists()  # nothing prepared, trained or sampled
    assert fake_hub.requests == [WHOAMI]

    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                  "--n", "2", *QUICK, "--sd-scripts", fake.sd_scripts,
                                  "--python", PYTHON, "--push", repo_id, "--dry-run")
    assert code == 0, stderr
    stops = [line for line in stderr.splitlines() if "a real run would stop at: " in line]
    assert len(stops) == 1 and said in stops[0], stderr
    assert not workdir.exists()


def test_reproduce_refuses_in_one_line_when_the_hub_cannot_be_reached(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen, fake_hub: FakeHub,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError) as refused:
        reproduce(isic2020.root, tmp_path / "work", push_repo="alice/lora", n=2,
                  overrides=QUICK[1::2], sd_scripts=fake.sd_scripts, python=PYTHON)
    message = str(refused.value)
    assert message.startswith("could not connect to http://127.0.0.1:9 during the check "
                              "of the token (") and "\n" not in message
    assert not (tmp_path / "work").exists()


def test_a_push_reproduce_lets_through_names_the_push_option(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fine-grained token's per-repo permissions are not guessed: the Hub's own 403 comes
    at the push, and its advice names reproduce's option."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.role, fake_hub.scoped = "fineGrained", {"alice": ("repo.content.read",)}
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--n", "2", *QUICK, "--sd-scripts",
                                  fake.sd_scripts, "--python", PYTHON, "--push", "alice/lora")
    assert code == 1, stdout + stderr
    last = stderr.strip().splitlines()[-1]
    assert "no write access to alice/lora (403)" in last
    assert "(--push YOUR-NAME/lora)" in last and "--repo-id" not in last


def test_the_plan_names_the_endpoint_the_push_uses(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url + "/")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--n", "2", *QUICK, "--sd-scripts",
                                  fake.sd_scripts, "--python", PYTHON, "--push",
                                  "medsynth-lab/lora", "--dry-run")
    assert code == 0, stderr
    assert f"push writes {fake_hub.url}/medsynth-lab/lora" in stdout
    assert "huggingface.co" not in stdout
    assert fake_hub.requests == [WHOAMI, ("GET", "/api/models/medsynth-lab/lora")]

    monkeypatch.setenv("HF_ENDPOINT", "hub.example")
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--n", "2", *QUICK, "--sd-scripts",
                                  fake.sd_scripts, "--python", PYTHON, "--push", "alice/lora")
    assert "HF_ENDPOINT 'hub.example' must be an http:// or https:// URL" in _one_error(
        code, stdout, stderr)


@pytest.mark.parametrize("case", CASES)
def test_a_push_dry_run_with_a_token_is_refused_as_the_push_would_be(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        case: str) -> None:
    repo_id, said = _token_case(fake_hub, monkeypatch, case)
    run = make_run(tmp_path / "first")
    before = entries(tmp_path)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", repo_id, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert said in _one_error(code, stdout, stderr)
    assert "Would push" not in stdout
    assert fake_hub.requests == [WHOAMI] and entries(tmp_path) == before

    with pytest.raises(UserError, match=re.escape(said)):
        hubmod.push(run, repo_id, dry_run=True, endpoint=fake_hub.url)


def test_a_push_dry_run_says_who_would_push(runner: CliRunner, fake_hub: FakeHub,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path / "first"), "--repo-id",
                                  "Medsynth-Lab/lora", "--dry-run", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert f"Would push to {fake_hub.url}/Medsynth-Lab/lora as alice" in stdout
    assert "Would delete from Medsynth-Lab/lora: nothing" in stdout


def _whoami(**auth: Any) -> dict[str, Any]:
    return {"type": "user", "name": "alice", "orgs": [{"type": "org", "name": "lab"}],
            "auth": auth}


@pytest.mark.parametrize(("info", "repo_id", "refused"), [
    (_whoami(type="access_token", accessToken={"role": "write"}), "alice/x", None),
    (_whoami(type="access_token", accessToken={"role": "write"}), "LAB/x", None),
    (_whoami(type="access_token", accessToken={"role": "read"}), "alice/x", "read-only"),
    (_whoami(type="access_token", accessToken={"role": "write"}), "bob/x",
     "push to alice/x or an organisation of theirs (lab)"),
    (_whoami(type="access_token", accessToken={"role": "fineGrained", "fineGrained": {
        "scoped": [{"entity": {"type": "user", "name": "alice"},
                    "permissions": ["repo.content.read"]}]}}), "alice/x", None),
    (_whoami(type="access_token", accessToken={"role": "fineGrained"}), "bob/x",
     "cannot write to bob"),
    (_whoami(type="oauth"), "lab/x", None),
    ({"type": "user", "name": "alice", "orgs": [], "auth": {}}, "lab/x", "push to alice/x, or"),
    ({"type": "org", "name": "lab", "auth": {"type": "access_token"}}, "lab/x", None),
])
def test_only_what_whoami_states_plainly_refuses(info: dict[str, Any], repo_id: str,
                                                 refused: str | None) -> None:
    """A fine-grained or OAuth token is judged by its namespace alone: its per-repo
    permissions are left to the Hub."""
    said = access.refusal(info, repo_id, "https://hub.example", "--repo-id")
    assert said is None if refused is None else (said is not None and refused in said), said


class _Kept(logging.Handler):
    """Keeps every record the logger lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_push_output_has_no_progress_frames_or_client_log_lines(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped stderr (CliRunner's is no terminal) gets no tqdm frames, and huggingface_hub's
    logger says nothing below ERROR during the push; both settings are restored after."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    logger = logging.getLogger("huggingface_hub")
    handler = _Kept()
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    run = make_run(tmp_path / "first")
    try:
        for _ in range(2):  # the second finds every file on the Hub already
            code, stdout, stderr = invoke(runner, "push", run, "--repo-id", "alice/lora",
                                          "--endpoint", fake_hub.url)
            assert code == 0, stderr
            assert not any(escape in stderr for escape in ESCAPES), repr(stderr)
            assert all(line.startswith("Warning: ") for line in stderr.splitlines()), stderr
        assert "unchanged" in stdout
        assert [record.getMessage() for record in handler.records] == []
        assert logger.level == logging.INFO and not are_progress_bars_disabled()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
