"""A Hub that takes the connection and never answers: `push` and `sample --lora` end in one
line after MEDSYNTH_HUB_TIMEOUT seconds (1 here) instead of hanging until Ctrl-C; an answer that
keeps coming is not cut; and outside the command huggingface_hub's own client is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import timeouts
from medsynth_kohya.hub.pull import pull_lora

from .conftest import invoke
from .fake_hub import HANG, SLOW, TOKEN, FakeHub
from .test_hub import REPO, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
QUICK = HANG / 3
"""Seconds a bounded wait ends well within (a client without one waits HANG)."""


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The loopback Hub as HF_ENDPOINT with a token, a Hub cache of this test's own and a
    limit of 1 s on each wait."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("MEDSYNTH_HUB_TIMEOUT", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return fake_hub


def _library_waits(hub: FakeHub) -> bool:
    """Whether huggingface_hub's own client, used outside a command, still waits after 2 s on
    a model info the server never answers (it sets no timeout of its own): the command put its
    client back."""
    from huggingface_hub import HfApi

    hub.fail("GET", r"/api/models/", "hang")

    def ask() -> None:
        try:
            HfApi(endpoint=hub.url).model_info(REPO)
        except Exception:  # the server closes the connection when it stops
            return

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(2)
    return asking.is_alive()


@pytest.mark.parametrize(("method", "path", "during"), [
    ("GET", r"/api/whoami-v2", "the check of the token"),
    ("GET", r"/api/models/", "the push"),
    ("POST", r"/commit/", "the push")])
def test_a_hub_that_never_answers_ends_a_push_in_one_line(
        runner: CliRunner, hub: FakeHub, tmp_path: Path, method: str, path: str,
        during: str) -> None:
    run = make_run(tmp_path)
    hub.add_repo(REPO, "alice")
    hub.fail(method, path, "hang")
    started = time.monotonic()
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO)
    took = time.monotonic() - started
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    line = " ".join(lines[0].split())
    assert f"{hub.url} did not answer in time during {during}" in line
    assert "set MEDSYNTH_HUB_TIMEOUT to more than 1 (seconds)" in line and TOKEN not in line
    assert took < QUICK and len(hub.repos[REPO].commits) == 1
    assert _library_waits(hub)


def test_a_dry_run_whose_token_check_never_answers_goes_on_saying_so(
        runner: CliRunner, hub: FakeHub, tmp_path: Path) -> None:
    hub.fail("GET", r"/api/whoami-v2", "hang")
    started = time.monotonic()
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path), "--repo-id", REPO,
                                  "--dry-run")
    assert code == 0 and time.monotonic() - started < QUICK, stderr
    assert f"Would push to {hub.url}/{REPO}" in stdout
    assert f"{hub.url} did not answer in time" in " ".join(stderr.split())


def test_an_answer_slower_in_all_than_the_limit_is_not_cut(
        runner: CliRunner, hub: FakeHub, tmp_path: Path) -> None:
    """The limit is on each read, not on the whole answer: answers that pause SLOW seconds
    (under the limit) before each piece, longer than the limit in all, come through."""
    assert SLOW < 1 < 2 * SLOW
    hub.fail("GET", r"/api/whoami-v2", "slow")
    hub.fail("POST", r"/commit/", "slow")
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path), "--repo-id", REPO)
    assert code == 0, stderr
    assert "melanoma.safetensors" in hub.repos[REPO].files and REPO in stdout


def test_a_hub_that_never_answers_ends_sample_lora_in_one_line_or_uses_the_cache(
        hub: FakeHub) -> None:
    repo = hub.add_repo(REPO, "alice")
    repo.edit({"melanoma.safetensors": b"not read: pull takes the metadata it can"})
    hub.fail("GET", r"/api/models/", "hang")
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        pull_lora(REPO)
    message = str(caught.value)
    assert time.monotonic() - started < QUICK
    assert "\n" not in message and f"{hub.url} did not answer in time" in message
    assert "MEDSYNTH_HUB_TIMEOUT" in message and "cache" in message
    assert _library_waits(hub)
    hub.faults.clear()
    cached = pull_lora(REPO)
    hub.fail("GET", r"/api/models/", "hang")
    again = pull_lora(REPO)
    assert again.file == cached.file and again.origin == cached.origin
    assert any(f"{hub.url} did not answer in time" in note for note in again.notes)


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e999"])
def test_a_timeout_that_is_no_number_of_seconds_is_one_line_before_any_request(
        runner: CliRunner, hub: FakeHub, tmp_path: Path, value: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSYNTH_HUB_TIMEOUT", value)
    for dry in ((), ("--dry-run",)):
        code, _, stderr = invoke(runner, "push", make_run(tmp_path / str(len(dry))),
                                 "--repo-id", REPO, *dry)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert f"MEDSYNTH_HUB_TIMEOUT {value!r} is not a number of seconds" in lines[0]
    with pytest.raises(UserError, match="MEDSYNTH_HUB_TIMEOUT"):
        pull_lora(REPO)
    assert hub.requests == []


@pytest.mark.parametrize("limit", ["1", "60"])
def test_a_connection_not_made_in_time_gives_advice_that_lengthens_that_wait(
        monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    """A connection waits min(CONNECT, MEDSYNTH_HUB_TIMEOUT) seconds: the line asks for more
    than that wait only where raising the variable lengthens it, never for more than the read
    limit, which a connection never reaches."""
    import importlib

    from medsynth_kohya.hub.failures import hub_error
    from medsynth_kohya.hub.timeouts import CONNECT, limits

    # huggingface_hub's HTTP library: httpx2 (2.x), httpx (1.x) or requests (0.x)
    for module in ("httpx2", "httpx", "requests.exceptions"):
        try:
            connect_timeout = importlib.import_module(module).ConnectTimeout
            break
        except ImportError:
            continue
    monkeypatch.setenv("MEDSYNTH_HUB_TIMEOUT", limit)
    connect = limits().connect
    line = hub_error(connect_timeout("timed out"), REPO, "https://hub.example")
    assert line is not None and "did not answer in time" in line and "ConnectTimeout" in line
    if connect < CONNECT:
        assert f"set MEDSYNTH_HUB_TIMEOUT to more than {connect:g} (seconds)" in line
    else:
        assert "MEDSYNTH_HUB_TIMEOUT to more than" not in line
        assert f"{CONNECT:g} s" in line


def test_a_download_that_trickles_forever_ends_at_its_deadline_in_one_line(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every TRICKLE seconds never runs into the limit on each read, and the client
    resumes a download that stalls: `sample --lora` kept downloading until Ctrl-C. The whole
    download now has a deadline, named in the line."""
    repo = hub.add_repo(REPO, "alice")
    repo.edit({"melanoma.safetensors": b"x" * 64})
    hub.fail("GET", r"/resolve/", "trickle")
    monkeypatch.setenv(timeouts.DEADLINE_ENV, "2")
    said: list[BaseException] = []

    def download() -> None:
        try:
            pull_lora(REPO)
        except Exception as exc:
            said.append(exc)

    started = time.monotonic()
    pulling = threading.Thread(target=download, daemon=True)
    pulling.start()
    pulling.join(QUICK)
    assert not pulling.is_alive(), "the download is still running"
    assert 2 <= time.monotonic() - started < QUICK
    assert [str(exc) for exc in said] == [
        f"the download of {REPO} from {hub.url} took over 2 s and was stopped: set "
        f"{timeouts.DEADLINE_ENV} to more seconds (now 2) if the network is this slow, then "
        "run the same command again"]
    assert isinstance(said[0], UserError)


@pytest.mark.parametrize("value", ["soon", "0", "nan"])
def test_a_deadline_that_is_no_number_of_seconds_is_one_line_before_any_request(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(timeouts.DEADLINE_ENV, value)
    with pytest.raises(UserError) as caught:
        pull_lora(REPO)
    assert str(caught.value) == (
        f"{timeouts.DEADLINE_ENV} {value!r} is not a number of seconds above 0: set it to how "
        f"long a download from the Hub may take in all (default {timeouts.DEADLINE:g}), or "
        "unset it")
    assert hub.requests == []
