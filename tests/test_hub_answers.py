"""`push` and `sample --lora` against servers that answer, but not as the Hub does (a proxy's
login page, a mirror's web site at HF_ENDPOINT): one line naming the endpoint, never a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.pull import pull_lora

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO, make_run

# huggingface_hub 2.x hands LFS uploads to httpx2 as `data=`, which httpx2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.mark.parametrize(("method", "path"), [("GET", r"/api/whoami-v2"),
                                              ("POST", r"/api/repos/create"),
                                              ("GET", r"/api/models/"),
                                              ("POST", r"/preupload/"),
                                              ("POST", r"/commit/")])
def test_a_push_to_a_server_that_is_not_the_hub_is_one_line(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, method: str, path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    fake_hub.fail(method, path, "html")
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert f"{fake_hub.url} did not answer as the Hugging Face Hub does" in lines[0]
    assert "--endpoint / HF_ENDPOINT" in lines[0] and TOKEN not in stderr


def test_a_dry_run_against_a_server_that_is_not_the_hub_says_so(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("GET", r"/api/", "html")
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert "Traceback" not in stderr and f"Would push to {fake_hub.url}/{REPO}" in stdout
    assert f"{fake_hub.url} did not answer as the Hugging Face Hub does" in " ".join(
        stderr.split())


def test_a_lora_from_a_server_that_is_not_the_hub_is_one_line(
        fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    fake_hub.add_repo(REPO, "alice")
    fake_hub.fail("GET", r"/api/models/", "html")
    with pytest.raises(UserError) as caught:
        pull_lora(REPO)
    message = str(caught.value)
    assert f"{fake_hub.url} did not answer as the Hugging Face Hub does" in message
    assert "\n" not in message and "(check HF_ENDPOINT" in message
    monkeypatch.delenv("HF_ENDPOINT")
    with pytest.raises(UserError, match=r"\(check the endpoint given"):
        pull_lora(REPO, endpoint=fake_hub.url)


@pytest.mark.parametrize("shape", ["json-object", "json-list", "json-text"])
def test_a_repository_read_answered_with_json_of_another_shape_is_one_line(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, shape: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server at the endpoint answers the repository's read with JSON that is not the Hub's
    (another API's answer): the dry run warns, the push and `sample --lora` refuse, each in
    one line naming the endpoint, never huggingface_hub's KeyError or TypeError."""
    import huggingface_hub.constants

    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    fake_hub.add_repo(REPO, "alice")
    fake_hub.fail("GET", r"/api/models/", shape)
    said = f"{fake_hub.url} did not answer as the Hugging Face Hub does"
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run")
    assert code == 0 and "Traceback" not in stderr, stderr
    assert said in " ".join(stderr.split()) and f"Would push to {fake_hub.url}/{REPO}" in stdout
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO)
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert said in stderr and TOKEN not in stderr
    with pytest.raises(UserError) as caught:
        pull_lora(REPO)
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("proxy", "bypassed"), [(None, False), ("HTTP_PROXY", False),
                                                ("all_proxy", False), ("HTTP_PROXY", True)])
def test_a_web_page_in_place_of_the_public_hub_names_what_answered(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, proxy: str | None,
        bypassed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no endpoint set, the public Hub (the fake one stands in) was asked: a proxy the
    environment names (the fake Hub is that proxy too), or, where there is none or NO_PROXY
    names the Hub's host, a network's sign-in page, answered in its place; HF_ENDPOINT and
    --endpoint, which nobody set, are not what to check."""
    import huggingface_hub.constants

    from medsynth_kohya.hub import failures, push

    monkeypatch.setattr(push, "DEFAULT_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(failures, "DEFAULT_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if proxy is not None:
        monkeypatch.setenv(proxy, fake_hub.url)
    if not bypassed:  # the fake Hub's fixture names its host in NO_PROXY
        monkeypatch.delenv("NO_PROXY")
    fake_hub.add_repo(REPO, "alice")
    fake_hub.fail("GET", r"/api/", "html")
    with pytest.raises(UserError) as caught:
        pull_lora(REPO)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, _, stderr = invoke(runner, "push", make_run(tmp_path), "--repo-id", REPO)
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    for message in (str(caught.value), " ".join(stderr.split())):
        assert f"{fake_hub.url} did not answer as the Hugging Face Hub does" in message
        assert "HF_ENDPOINT" not in message and "--endpoint" not in message
        if proxy is None or bypassed:
            assert "a network's sign-in page" in message and "_PROXY" not in message
        else:
            assert f"the proxy {proxy.upper()} names answered in its place" in message


@pytest.mark.parametrize("endpoint", ["http://", "https://", "http://127.0.0.1:99999",
                                      "http://[::1", "http://hub example.org",
                                      "https://hub.example.org:port"])
@pytest.mark.parametrize("given", ["--endpoint", "HF_ENDPOINT"])
def test_an_endpoint_that_is_no_url_is_one_line_before_any_request(
        runner: CliRunner, tmp_path: Path, endpoint: str, given: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    args: tuple[str, ...] = ()
    if given == "HF_ENDPOINT":
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    else:
        args = ("--endpoint", endpoint)
    for dry in ((), ("--dry-run",)):
        code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, *args, *dry)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert f"{given} {endpoint!r}" in lines[0] and "https://huggingface.co" in lines[0]
    if given == "HF_ENDPOINT":
        with pytest.raises(UserError, match="HF_ENDPOINT"):
            pull_lora(REPO)


def test_a_file_the_hub_will_not_store_is_one_line(runner: CliRunner, fake_hub: FakeHub,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The LFS batch answers an error for each object (git-lfs' per-object errors): the line
    gives the Hub's reason, and nothing is committed."""
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.lfs_refusal = "Storage quota exceeded for this repository"
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "Storage quota exceeded for this repository" in lines[0]
    assert fake_hub.url in lines[0] and "run the same command again" in lines[0]
    assert len(fake_hub.repos[REPO].commits) == 1


def test_an_endpoint_with_a_password_is_refused_without_showing_it(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub would send the URL's credentials instead of the token (a 401 that then
    prints the URL): refused before any request, the password never shown."""
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "https://bob:S3cretPassw0rd@hub.example.org")
    for dry in ((), ("--dry-run",)):
        code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, *dry)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert "HF_ENDPOINT" in lines[0] and "hub.example.org" in lines[0]
        assert "S3cretPassw0rd" not in stdout + stderr
    with pytest.raises(UserError) as refused:
        pull_lora(REPO)
    assert "S3cretPassw0rd" not in str(refused.value)


@pytest.mark.parametrize("tail", ["/?x=1", "?", "#frag", "/#", "/api?token=1#top"])
def test_an_endpoint_with_a_query_or_fragment_is_refused_before_any_request(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, tail: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub puts its API paths after the endpoint, so after its query or fragment:
    every request would go to the server's root page."""
    run = make_run(tmp_path)
    endpoint = fake_hub.url + tail
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for dry in ((), ("--dry-run",)):
        code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint", endpoint,
                                 *dry)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert f"--endpoint {endpoint!r}" in lines[0] and "query or fragment" in lines[0]
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(UserError, match=r"HF_ENDPOINT .*query or fragment"):
        pull_lora(REPO)
    assert fake_hub.requests == []


@pytest.mark.parametrize(("status", "expected"), [
    (403, f"no write access to {REPO} (403)"),
    (404, "set HF_HUB_DISABLE_XET=1 and run the same command again")])
def test_a_refused_xet_upload_is_said_as_the_hub_said_it(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, status: int, expected: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub >= 1 uploads through Xet when hf_xet is installed; hf_xet reports the
    Hub's answer to its token request as a ConnectionError, not a lost connection."""
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.utils._runtime import is_xet_available

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
    if int(huggingface_hub.__version__.split(".")[0]) < 1 or not is_xet_available():
        pytest.skip("this huggingface_hub uploads through Xet only when the Hub offers it")
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("GET", r"/xet-write-token/", status)
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert expected in " ".join(lines[0].split()) and "lost the connection" not in lines[0]


def test_a_push_with_hf_hub_offline_set_says_so(fake_hub: FakeHub, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE (set for `sample` on a machine without network) keeps huggingface_hub
    from sending anything: the line names it, not the network. In a process of its own, as
    huggingface_hub reads the variable at import."""
    run = make_run(tmp_path)
    for dry in ((), ("--dry-run",)):
        done = subprocess.run(
            [sys.executable, "-m", "medsynth_kohya", "push", str(run), "--repo-id", REPO,
             "--endpoint", fake_hub.url, *dry], capture_output=True, text=True, timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN, "COLUMNS": "200"},
            check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == (0 if dry else 1) and "Traceback" not in done.stderr
        assert any("HF_HUB_OFFLINE is set" in line for line in lines), done.stderr
        assert dry or len(lines) == 1
    assert fake_hub.requests == []


@pytest.mark.parametrize(("status", "exists"), [(409, True), (409, False), (200, False)])
def test_a_repo_creation_answered_without_its_url_is_no_traceback(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, status: int, exists: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads the repo's URL from the creation's answer unchecked (a KeyError
    when a proxy drops it): the push goes on to an existing repo, and says in one line that a
    repo the answer claimed is not there."""
    run = make_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    if exists:
        fake_hub.add_repo(REPO, "alice")
    fake_hub.fail("POST", r"/api/repos/create", status)
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert "Traceback" not in stderr and "KeyError" not in stderr, stderr
    if exists:
        assert code == 0, stderr
        assert fake_hub.repos[REPO].files["melanoma.safetensors"] == (
            run / "output" / "melanoma.safetensors").read_bytes()
    else:
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1, stderr
        assert f"{REPO} was not found at {fake_hub.url} (404)" in lines[0]


def _unreadable_token() -> str:
    raise PermissionError(13, "Permission denied", "/home/someone/.cache/huggingface/token")


@pytest.mark.parametrize("extra", [(), ("--dry-run",), ("--show", "README.md")])
def test_a_token_the_hub_library_cannot_read_is_one_line(
        runner: CliRunner, tmp_path: Path, extra: tuple[str, ...],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub raises where it cannot read the token (a token file left by `sudo hf
    auth login`, HF_OIDC_RESOURCE without an id token): push printed its traceback."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", _unreadable_token)
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path), "--repo-id", REPO, *extra)
    said = " ".join(stderr.split())
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stdout + stderr
    assert said == ("Error: the Hub token cannot be read: [Errno 13] Permission denied: "
                    "'/home/someone/.cache/huggingface/token'; hf auth login, or export "
                    "HF_TOKEN")
    monkeypatch.setenv("HF_OIDC_RESOURCE", "someone/model")
    code, _, stderr = invoke(runner, "push", make_run(tmp_path / "again"), "--repo-id", REPO,
                             *extra)
    assert code == 1 and " ".join(stderr.split()).endswith(
        "; unset HF_OIDC_RESOURCE (or set HF_OIDC_ID_TOKEN)"), stderr


def test_a_hub_lora_is_not_asked_for_with_a_token_that_cannot_be_read(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sample --lora USER/REPO: huggingface_hub read the token inside its download and the
    traceback ended the run; offline, from the cache, no token is read."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", _unreadable_token)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    fake_hub.add_repo(REPO, "alice")
    with pytest.raises(UserError, match=r"^the Hub token cannot be read: \[Errno 13\] "
                                        r"Permission denied: .*; hf auth login, or export "
                                        r"HF_TOKEN$"):
        pull_lora(REPO)
    code, _, stderr = invoke(runner, "sample", "--lora", REPO, "--out", tmp_path / "set",
                             "--n", 2, "--dry-run")
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert "the Hub token cannot be read" in stderr and not fake_hub.requests

