"""The Hub's verdict on the token (hub/access.py), the one line each Hub or network failure
becomes (hub/failures.py) and the limits on each wait (hub/timeouts.py), read whole, against
the loopback Hub or a loopback server that answers as told: never the network."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya import __version__
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import failures, timeouts
from medsynth_kohya.hub.access import Unanswered, hub_api, read_token, refusal, writer
from medsynth_kohya.hub.failures import hub_error, no_token

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
PUBLIC = "https://huggingface.co"
OTHER = "https://hub.example.org"


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the server's `status`, `headers` and `body`; or never, while
    the server's `hang` is set; or cut short after the headers, while its `short` is set; or
    closes the connection without an answer, while its `drop` is set."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.server.hang or self.server.drop:
            self.server.stopping.wait(30 * self.server.hang)
            self.close_connection = True
            return
        self.send_response(self.server.status)
        for key, value in {"Content-Type": "application/json",
                           "Content-Length": str(len(self.server.body) + 64 * self.server.short),
                           **self.server.headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(self.server.body)
        self.close_connection = self.server.short

    do_GET = do_POST = do_CONNECT = _answer  # CONNECT: a proxy's answer to an HTTPS tunnel


class _Server(ThreadingHTTPServer):
    """A loopback server: what it answers (`answer`) and the requests it saw."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.hang = self.short = self.drop = False
        self.stopping = threading.Event()
        self.status, self.body, self.headers = 200, b"{}", dict[str, str]()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Print nothing: a client that drops a refused tunnel mid-answer is no failure here,
        and a trace on stderr would land in the CLI output a test reads."""


@contextmanager
def serving(served: _Server) -> Iterator[_Server]:
    """`served` answering on a thread of its own until the block ends."""
    thread = threading.Thread(target=served.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.stopping.set()
        served.shutdown()
        served.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    """A loopback server that answers 200 `{}` until told otherwise (`answer`)."""
    with serving(_Server()) as served:
        yield served


def answer(server: _Server, status: int, payload: Any, message: str | None = None) -> None:
    """Make `server` answer `status` with `payload` as JSON (and the Hub's error header)."""
    server.status, server.body = status, json.dumps(payload).encode()
    server.headers = {} if message is None else {"X-Error-Message": message}


def url_of(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def caught(call: Any) -> BaseException:
    """What `call()` raises: a real client's exception, to hand to hub_error."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


def one_line(runner: CliRunner, *args: object) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the CLI, stderr's words joined on one line."""
    code, stdout, stderr = invoke(runner, *args)
    assert "Traceback" not in stderr, stderr
    return code, stdout, " ".join(stderr.split())


# --- the verdict on the token (access.py) -------------------------------------------------------

def _whoami(role: Any = "write", orgs: Any = ({"type": "org", "name": "Lab"},),
            name: Any = "alice") -> dict[str, Any]:
    return {"type": "user", "name": name, "orgs": list(orgs),
            "auth": {"type": "access_token", "accessToken": {"role": role}}}


@pytest.mark.parametrize("endpoint", [PUBLIC, OTHER])
def test_a_read_only_token_is_refused_in_one_whole_line(endpoint: str) -> None:
    login = "`hf auth login`" if endpoint == PUBLIC else f"`HF_ENDPOINT={endpoint} hf auth login`"
    assert refusal(_whoami("read"), "alice/x", endpoint, "--repo-id") == (
        f"the token of alice at {endpoint} is read-only: a push needs one with the write role "
        f"({endpoint}/settings/tokens); set HF_TOKEN to it or run {login}")


def test_a_namespace_the_account_cannot_write_to_is_refused_in_one_whole_line() -> None:
    said = refusal(_whoami(orgs=({"name": "Lab"}, {"name": "clinic"})), "bob/lora", OTHER,
                   "--push")
    assert said == (f"--push bob/lora: the token belongs to alice, who cannot write to bob at "
                    f"{OTHER}; push to alice/lora or an organisation of theirs (Lab, clinic), "
                    "or use a token of an account that can write to bob")
    assert refusal(_whoami(orgs=()), "bob/lora", OTHER, "--repo-id") == (
        f"--repo-id bob/lora: the token belongs to alice, who cannot write to bob at {OTHER}; "
        "push to alice/lora, or use a token of an account that can write to bob")


def test_an_organisation_in_which_the_account_may_only_read_is_refused() -> None:
    """whoami names the account's role in each organisation: with the read role it cannot
    write there, and reproduce --push found that out at the push, after the training."""
    info = _whoami(orgs=({"name": "Lab", "roleInOrg": "read"},
                         {"name": "clinic", "roleInOrg": "contributor"},
                         {"name": "ward", "roleInOrg": "admin"}))
    assert refusal(info, "lab/lora", OTHER, "--push") == (
        f"--push lab/lora: the token belongs to alice, whose role in lab at {OTHER} is read; "
        "push to alice/lora or an organisation of theirs (clinic, ward), or ask an admin of lab "
        "for the write role")
    for writable in ("clinic/lora", "WARD/lora", "alice/lora"):
        assert refusal(info, writable, OTHER, "--push") is None, writable
    only = _whoami(orgs=({"name": "lab", "roleInOrg": "read"},))
    said = refusal(only, "lab/lora", OTHER, "--repo-id")
    assert said is not None and "push to alice/lora, or ask an admin of lab" in said
    said = refusal(only, "bob/lora", OTHER, "--repo-id")
    assert said is not None and "push to alice/lora, or use a token of an account" in said


def test_organisations_are_read_by_name_and_the_rest_of_whoami_is_ignored() -> None:
    """An organisation entry without a name, or not an object, names no namespace; the names
    are compared without case; an answer without `auth`, or with an `auth` of another shape,
    is judged by its namespace alone; one without a user name is left to the Hub."""
    odd = _whoami(orgs=({"type": "org"}, "lab", {"name": ""}, {"name": "Clinic"}))
    assert refusal(odd, "CLINIC/x", OTHER, "--repo-id") is None
    said = refusal(odd, "lab/x", OTHER, "--repo-id")
    assert said is not None and "organisation of theirs (Clinic)," in said
    assert refusal(_whoami(), "ALICE/x", OTHER, "--repo-id") is None
    assert refusal(_whoami(), "lab/x", OTHER, "--repo-id") is None
    for auth in (None, "read", {"accessToken": "read"}, {"accessToken": {"role": "READ"}}):
        info = {**_whoami(), "auth": auth}
        assert refusal(info, "alice/x", OTHER, "--repo-id") is None, auth
    assert refusal({**_whoami(), "orgs": None}, "alice/x", OTHER, "--repo-id") is None
    assert refusal(_whoami(name=None), "bob/x", OTHER, "--repo-id") is None
    assert refusal(_whoami(name=""), "bob/x", OTHER, "--repo-id") is None


def test_the_writer_is_the_account_whoami_names_asked_with_the_tools_user_agent(
        fake_hub: FakeHub) -> None:
    fake_hub.user, fake_hub.orgs = "carol", ("lab",)
    assert writer(hub_api(fake_hub.url, TOKEN), "Lab/lora") == "carol"
    assert fake_hub.requests == [("GET", "/api/whoami-v2")]
    headers = {key.lower(): value for key, value in fake_hub.headers_seen[0].items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert f"medsynth-kohya/{__version__}" in headers["user-agent"]


def test_the_writer_refuses_what_whoami_rules_out_naming_the_endpoint_and_option(
        fake_hub: FakeHub) -> None:
    api = hub_api(fake_hub.url, TOKEN)
    with pytest.raises(UserError) as raised:
        writer(api, "bob/lora", option="--push")
    assert str(raised.value) == (
        f"--push bob/lora: the token belongs to alice, who cannot write to bob at {fake_hub.url};"
        " push to alice/lora or an organisation of theirs (medsynth-lab), or use a token of an "
        "account that can write to bob")
    fake_hub.role = "read"
    with pytest.raises(UserError) as raised:
        writer(api, "alice/lora")
    assert str(raised.value) == (
        f"the token of alice at {fake_hub.url} is read-only: a push needs one with the write "
        f"role ({fake_hub.url}/settings/tokens); set HF_TOKEN to it or run `HF_ENDPOINT="
        f"{fake_hub.url} hf auth login`")
    assert not isinstance(raised.value, Unanswered)


def test_a_push_to_an_organisation_the_account_may_only_read_is_refused_at_the_token_check(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback Hub's whoami gives alice the read role in medsynth-lab: the refusal comes
    from the token check, with nothing written and nothing asked after it."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    original = fake_hub.whoami

    def reader() -> dict[str, Any]:
        info = original()
        info["orgs"][0]["roleInOrg"] = "read"
        return info

    monkeypatch.setattr(fake_hub, "whoami", reader)
    run = make_run(tmp_path)
    code, _, said = one_line(runner, "push", run, "--repo-id", "medsynth-lab/lora",
                             "--endpoint", fake_hub.url, "--dry-run")
    assert code == 1 and said == (
        f"Error: --repo-id medsynth-lab/lora: the token belongs to alice, whose role in "
        f"medsynth-lab at {fake_hub.url} is read; push to alice/lora, or ask an admin of "
        "medsynth-lab for the write role")
    assert fake_hub.requests == [("GET", "/api/whoami-v2")]


def test_an_account_without_a_name_writes_as_nobody_the_hub_judges_the_push(
        server: _Server) -> None:
    answer(server, 200, {"type": "user", "orgs": []})
    assert writer(hub_api(url_of(server), TOKEN), "bob/lora") == ""


@pytest.mark.parametrize(("status", "refused"), [(401, True), (403, True), (404, False),
                                                 (429, False), (500, False), (400, False)])
def test_whoami_refusals_are_verdicts_and_other_failures_are_not(
        server: _Server, status: int, refused: bool) -> None:
    """401 and 403 refuse (a dry run stops on them as the push would); a server error, a rate
    limit or a server without the Hub's API give no verdict on the token (a dry run goes on);
    the Hub's words never carry the token."""
    answer(server, status, {"error": f"no {TOKEN} here"}, message=f"no {TOKEN} here")
    for option, named in (("--push", "--push"), (None, "--repo-id")):
        with pytest.raises(UserError) as raised:
            if option is None:
                writer(hub_api(url_of(server), TOKEN), "alice/lora", secrets=(TOKEN,))
            else:
                writer(hub_api(url_of(server), TOKEN), "alice/lora", option=option,
                       secrets=(TOKEN,))
        said = str(raised.value)
        assert isinstance(raised.value, Unanswered) is not refused
        assert TOKEN not in said and "\n" not in said
        named_as = {400: f"check {named} and run", 403: f"({named} YOUR-NAME/lora)"}
        assert named_as.get(status, said) in said, said


def test_whoami_answered_with_json_that_is_no_account_is_one_line_not_a_traceback(
        server: _Server) -> None:
    """A server at the endpoint that answers JSON of another shape (a list): whoami's answer
    was read as a mapping, and push ended in an AttributeError's traceback."""
    for payload in (["not", "an", "account"], "ok", 3):
        answer(server, 200, payload)
        with pytest.raises(Unanswered) as raised:
            writer(hub_api(url_of(server), TOKEN), "alice/lora")
        assert str(raised.value) == (
            f"{url_of(server)} did not answer as the Hugging Face Hub does during the check of "
            "the token (it sent a web page or other text where the Hub sends its JSON answer): "
            f"check --endpoint / HF_ENDPOINT (the public Hub is {PUBLIC}), then run the same "
            "command again")


def test_a_push_to_a_server_answering_json_that_is_no_account_is_one_line(
        runner: CliRunner, server: _Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    answer(server, 200, [])
    run = make_run(tmp_path)
    code, _, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint",
                             url_of(server))
    assert code == 1 and said.startswith(f"Error: {url_of(server)} did not answer as the "
                                         "Hugging Face Hub does during the check of the token")
    code, stdout, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  url_of(server), "--dry-run")
    assert code == 0 and f"Would push to {url_of(server)}/{REPO}" in stdout
    assert "did not answer as the Hugging Face Hub does" in said


def test_a_token_that_cannot_be_read_names_the_library_s_first_line_or_its_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreadable(error: Exception) -> Any:
        def get_token() -> str:
            raise error
        return get_token

    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token",
                        unreadable(OSError(" No id token for resource MAX.\nmore ")))
    with pytest.raises(UserError) as raised:
        read_token()
    assert str(raised.value) == ("the Hub token cannot be read: No id token for resource MAX; "
                                 "hf auth login, or export HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", unreadable(RuntimeError()))
    monkeypatch.setenv("HF_OIDC_RESOURCE", "")
    with pytest.raises(UserError, match=r"^the Hub token cannot be read: RuntimeError; hf auth "):
        read_token()
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_stored")
    assert read_token() == "hf_stored"


# --- a refusal by something between this machine and the Hub -------------------------------------

PAGE = b"<!DOCTYPE html><html><body><h1>Access denied by policy</h1></body></html>"


def refuse_as_a_proxy(server: _Server, body: bytes = PAGE, content_type: str = "text/html",
                      **headers: str) -> None:
    """Make `server` answer 403 as a proxy or firewall does: its own page, no Hub error."""
    server.status, server.body = 403, body
    server.headers = {"Content-Type": content_type, **headers}


def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_a_403_from_a_proxy_names_the_proxy_not_the_token(
        runner: CliRunner, server: _Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that will not pass requests to the Hub's host answers whoami 403 with its own
    page: the line said the token had no write access, and a dry run stopped on it."""
    no_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", url_of(server))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    refuse_as_a_proxy(server, Via="1.1 proxy.example.org (squid/6.10)")
    endpoint = "http://hub.example.org"
    run = make_run(tmp_path)
    code, _, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint", endpoint)
    assert code == 1 and said == (
        f"Error: the proxy HTTP_PROXY names refused the request to {endpoint} during the check "
        "of the token (403 with a web page, not the Hub's error): ask whoever runs that proxy to "
        "allow hub.example.org, or add hub.example.org to NO_PROXY if it is reached without "
        "one, then run the same command again")
    assert server.seen[0][1] == f"{endpoint}/api/whoami-v2"  # asked through the proxy
    code, stdout, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  endpoint, "--dry-run")
    assert code == 0 and f"Would push to {endpoint}/{REPO}" in stdout  # no verdict on the token
    assert "the proxy HTTP_PROXY names refused the request" in said


@pytest.mark.parametrize(("body", "content_type", "what"), [
    (PAGE, "text/html; charset=utf-8", "a web page"),
    (b"{}", "application/json", "an answer without the Hub's error"),
    (b"Forbidden", "text/plain", "an answer without the Hub's error")])
def test_a_403_that_is_not_the_hubs_is_refused_between_here_and_the_endpoint(
        server: _Server, monkeypatch: pytest.MonkeyPatch, body: bytes, content_type: str,
        what: str) -> None:
    """The Hub's 403 carries its error (X-Error-Message, a JSON `error`); one without it, with
    no proxy set, came from a firewall or filtering proxy on the way."""
    no_proxies(monkeypatch)
    refuse_as_a_proxy(server, body, content_type)
    url = url_of(server)
    with pytest.raises(Unanswered) as raised:
        writer(hub_api(url, TOKEN), REPO, option="--push")
    assert str(raised.value) == (
        f"something between this machine and {url} (a firewall or a filtering proxy) refused "
        f"the request during the check of the token (403 with {what}, not the Hub's error): "
        "check HF_ENDPOINT and ask the network's administrator to allow 127.0.0.1, then run the "
        "same command again")


def test_a_403_from_a_proxy_to_sample_lora_names_the_proxy_not_the_token(
        server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sample --lora` through a proxy that refuses the Hub's host: the line said to set
    HF_TOKEN to a token that may read the repository."""
    import huggingface_hub.constants

    from medsynth_kohya.hub.pull import pull_lora

    no_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", url_of(server))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    refuse_as_a_proxy(server)
    endpoint = "http://hub.example.org"
    with pytest.raises(UserError) as raised:
        pull_lora(REPO, endpoint=endpoint)
    assert str(raised.value).startswith(
        f"the proxy HTTP_PROXY names refused the request to {endpoint} (403 with a web page, not "
        "the Hub's error; ask whoever runs that proxy to allow hub.example.org, or add "
        "hub.example.org to NO_PROXY if it is reached without one), and the Hugging Face cache")


@pytest.mark.parametrize("hub_says", [{"X-Error-Message": "Forbidden"}, {}])
def test_the_hubs_own_403_still_blames_the_token_behind_its_cdn(
        server: _Server, monkeypatch: pytest.MonkeyPatch, hub_says: dict[str, str]) -> None:
    """The Hub's answers pass a CDN that adds `Via` (huggingface_hub reads CloudFront's
    X-Amz-Cf-Id from them): a 403 with the Hub's JSON error is the Hub's, Via or not."""
    no_proxies(monkeypatch)
    refuse_as_a_proxy(server, json.dumps({"error": "Forbidden"}).encode(), "application/json",
                      Via="1.1 abc.cloudfront.net (CloudFront)", **hub_says)
    with pytest.raises(UserError) as raised:
        writer(hub_api(url_of(server), TOKEN), REPO)
    assert not isinstance(raised.value, Unanswered)
    assert str(raised.value).startswith(f"no write access to {REPO} (403)")


# --- whoami's answers through the CLI -------------------------------------------------------------

@pytest.mark.parametrize(("status", "line"), [
    (401, "the Hub at {url} rejected the token (401): set HF_TOKEN to a valid token with write "
          "access, or run `HF_ENDPOINT={url} hf auth login`"),
    (403, f"no write access to {REPO} (403): it belongs to another user or organisation, or "
          "the token is read-only; push to your own namespace (--repo-id YOUR-NAME/"
          f"{REPO.split('/')[1]}) with a write token"),
    (404, "{url} answered 404 during the check of the token, which any Hugging Face Hub "
          "answers: check --endpoint / HF_ENDPOINT (the public Hub is https://huggingface.co), "
          "then run the same command again"),
    (429, "the Hub at {url} is rate-limiting this token (429); wait a few minutes and run the "
          "same command again"),
    (503, "the Hub at {url} failed with 503 during the check of the token: injected failure "
          "503; run the same command again later"),
    (400, "the Hub at {url} answered 400 during the check of the token: injected failure 400; "
          "check --repo-id and run the same command again")])
def test_each_whoami_failure_is_its_own_whole_line_and_only_refusals_stop_a_dry_run(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, status: int, line: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 404 to whoami is no repository missing (a push makes the repository): it said
    "alice/melanoma-lora was not found", and told the user to check --repo-id."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("GET", r"/api/whoami-v2", status)
    run = make_run(tmp_path)
    import huggingface_hub

    expected = line.format(url=fake_hub.url)
    if int(huggingface_hub.__version__.split(".")[0]) < 1:  # 0.x keeps no X-Error-Message here
        expected = expected.replace(f": injected failure {status}", "")
    code, _, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert code == 1 and said == f"Error: {expected}"
    code, stdout, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url, "--dry-run")
    if status in (401, 403):
        assert code == 1 and said == f"Error: {expected}" and "Would push" not in stdout
    else:
        assert code == 0 and expected in said and f"Would push to {fake_hub.url}" in stdout
    assert {path for _, path in fake_hub.requests} == {"/api/whoami-v2"}


# --- each failure's line (failures.py) ------------------------------------------------------------

def test_no_token_names_the_login_of_the_hub_pushed_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf auth login` checks the token at HF_ENDPOINT's Hub: a push to the public Hub while
    HF_ENDPOINT names another says so too."""
    monkeypatch.setenv("HF_ENDPOINT", OTHER + "/")
    assert no_token(PUBLIC).endswith(f"or run `HF_ENDPOINT={PUBLIC} hf auth login`")
    monkeypatch.setenv("HF_ENDPOINT", PUBLIC + "/")
    assert no_token(PUBLIC).endswith("or run `hf auth login`")
    monkeypatch.delenv("HF_ENDPOINT")
    assert no_token(PUBLIC) == ("no Hugging Face token found: set HF_TOKEN to a token with "
                                f"write access ({PUBLIC}/settings/tokens) or run `hf auth "
                                "login`")
    assert no_token(OTHER) == (f"no Hub token found: set HF_TOKEN to a token of {OTHER} with "
                               f"write access ({OTHER}/settings/tokens) or run `HF_ENDPOINT="
                               f"{OTHER} hf auth login`")


def test_a_missing_token_or_offline_mode_anywhere_in_the_chain_is_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = LocalTokenNotFoundError("no token")
    assert hub_error(wrapped, REPO, OTHER) == no_token(OTHER)
    later = RuntimeError("later")
    later.__context__ = OfflineModeIsEnabled("offline")
    assert hub_error(later, REPO, OTHER) == (
        f"HF_HUB_OFFLINE is set, so huggingface_hub sends nothing to {OTHER}: unset it (it is "
        "for `sample` from the Hub cache) and run the same command again")


@pytest.mark.parametrize("during", [failures.PUSHING, "a read of the repository"])
def test_server_errors_say_what_failed_and_the_hubs_first_line(
        server: _Server, during: str) -> None:
    from huggingface_hub import HfApi

    url = url_of(server)
    answer(server, 502, {"error": "x"}, message="Bad gateway " + "z" * 300)
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    unfinished = "the push did not finish: " if during == failures.PUSHING else ""
    assert hub_error(exc, REPO, url, during=during) == (
        f"the Hub at {url} failed with 502 during {during}: Bad gateway {'z' * 188}; "
        f"{unfinished}run the same command again later")
    answer(server, 500, {})
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    assert hub_error(exc, REPO, url) == (f"the Hub at {url} failed with 500 during the push; "
                                         "the push did not finish: run the same command again "
                                         "later")


def test_other_answers_name_the_status_and_the_option(server: _Server) -> None:
    from huggingface_hub import HfApi

    url = url_of(server)
    answer(server, 409, {"error": "x"}, message="Conflict here")
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    assert hub_error(exc, REPO, url, during="a read of the repository", option="--push") == (
        f"the Hub at {url} answered 409 during a read of the repository: Conflict here; check "
        "--push and run the same command again")
    answer(server, 404, {})
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    assert hub_error(exc, REPO, url, option="--push") == (  # reproduce: no --endpoint
        f"{REPO} was not found at {url} (404): check --push's namespace (your user name or an "
        "organisation you belong to) and HF_ENDPOINT")
    answer(server, 403, {"error": "Forbidden"})  # the Hub's 403 carries its error
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    assert str(hub_error(exc, REPO, url, option="--push")).endswith(
        f"push to your own namespace (--push YOUR-NAME/{REPO.split('/')[1]}) with a write token")
    answer(server, 401, {})
    exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).whoami())
    assert hub_error(exc, REPO, PUBLIC) == (
        f"the Hub at {PUBLIC} rejected the token (401): set HF_TOKEN to a valid token with write "
        "access, or run `hf auth login`")


@pytest.mark.parametrize("status", [403, 404])
def test_xet_s_words_for_the_hub_s_answer_are_that_answer(status: int) -> None:
    """hf_xet reports the Hub's answer to its token request in a ConnectionError's words; a
    404 there is a Hub that offers no Xet uploads."""
    url = f"{OTHER}/api/models/{REPO}/xet-write-token/main"
    words = ("Request failed: HTTP status client error ({} Not Found) for url ({})")
    exc = ConnectionError(words.format(status, url))
    said = hub_error(exc, REPO, OTHER)
    if status == 404:
        assert said == (f"the Hub at {OTHER} does not offer Xet uploads, which this "
                        "huggingface_hub uses when hf_xet is installed: set HF_HUB_DISABLE_XET=1 "
                        "and run the same command again")
    else:
        assert said is not None and said.startswith(f"no write access to {REPO} (403)")
    assert failures.http_status(exc) == status
    server_side = ConnectionError(words.format(503, url).replace("client", "server"))
    assert failures.http_status(server_side) == 503
    assert failures.http_status(ConnectionError("HTTP status client error (4044)")) is None
    assert failures.http_status(OSError(words.format(404, url))) is None


def test_files_the_hub_will_not_store_give_its_reason_or_say_there_was_none() -> None:
    for start in failures.LFS_REFUSED:
        refused = ValueError(f"{start}:\nEncountered error for file with OID abc: `Too large`")
        assert hub_error(refused, REPO, OTHER) == (
            f"the Hub at {OTHER} would not store a file during the push (Too large); the push "
            "did not finish: check the repository's storage on the Hub, then run the same "
            "command again")
    quoted = ValueError(f"{failures.LFS_REFUSED[1]}:\nEncountered error for file with OID "
                        "abc: `Over quota: `10 GB` used`\nEncountered error for file x: `other`")
    assert str(hub_error(quoted, REPO, OTHER)).startswith(
        f"the Hub at {OTHER} would not store a file during the push (Over quota: `10 GB` used);")
    bare = RuntimeError("upload")
    bare.__context__ = ValueError(f"{failures.LFS_REFUSED[0]}:")
    assert hub_error(bare, REPO, OTHER, during="a read of the repository") == (
        f"the Hub at {OTHER} would not store a file during a read of the repository (no reason "
        "given); check the repository's storage on the Hub, then run the same command again")


def test_refused_card_metadata_and_failures_of_other_kinds(runner: CliRunner,
                                                           fake_hub: FakeHub, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    """The Hub's check of the card's metadata refuses it: the line says which values come from
    the user; the client's own refusal says its last line; anything else is no Hub failure."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("POST", r"/api/validate-yaml", 422)
    code, _, said = one_line(runner, "push", make_run(tmp_path), "--repo-id", REPO,
                             "--endpoint", fake_hub.url)
    assert code == 1 and said == (
        f"Error: the Hub at {fake_hub.url} refused the model card's metadata (422: injected "
        "failure 422); check the values the card takes from you (--license, the run's "
        "prompts) and run the same command again")
    invalid = ValueError("Invalid metadata in README.md.\n- \"license\" must be one of [...]")
    assert hub_error(invalid, REPO, OTHER) == (
        "the Hub refused the model card's metadata: - \"license\" must be one of [...]")
    for other in (KeyError("url"), ValueError("Invalid repo id"), RuntimeError("boom")):
        assert hub_error(other, REPO, OTHER) is None


def test_a_connection_refused_or_lost_says_which_and_what_a_re_run_does(
        runner: CliRunner, fake_hub: FakeHub, server: _Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    closed = url_of(server)
    server.shutdown()
    server.server_close()
    exc = caught(lambda: HfApi(endpoint=closed, token=TOKEN).model_info(REPO))
    said = hub_error(exc, REPO, closed, during="a read of the repository")
    assert said is not None and said.startswith(
        f"could not connect to {closed} during a read of the repository (")
    assert said.endswith("): check --endpoint / HF_ENDPOINT and the network, then run the "
                         "same command again")
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub 1.x/2.x's client

    unknown = httpx2.ConnectError("[Errno -2] Name or service not known")
    unknown.__cause__ = OSError(-2, "Name or service not known")
    assert hub_error(unknown, REPO, OTHER) == (
        f"could not connect to {OTHER} during the push (ConnectError): check --endpoint / "
        "HF_ENDPOINT and the network, then run the same command again")
    refused = OSError("wrapped")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert hub_error(refused, REPO, OTHER) == (
        f"could not connect to {OTHER} during the push (ConnectionRefusedError): check "
        "--endpoint / HF_ENDPOINT and the network, then run the same command again")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("POST", r"/commit/", "drop")
    code, _, said = one_line(runner, "push", make_run(tmp_path), "--repo-id", REPO,
                             "--endpoint", fake_hub.url)
    assert code == 1 and said.startswith(f"Error: lost the connection to {fake_hub.url} during "
                                         "the push (")
    assert said.endswith("); the push did not finish: check the network and run the same "
                         "command again (files already uploaded are not sent twice)")
    lost = RuntimeError("read")
    lost.__context__ = ConnectionResetError(104, "reset")
    assert hub_error(lost, REPO, OTHER, during="a read of the repository") == (
        f"lost the connection to {OTHER} during a read of the repository (ConnectionResetError);"
        " check the network and run the same command again")


@pytest.mark.parametrize("during", [failures.PUSHING, "the check of the token"])
def test_an_answer_not_in_time_says_how_to_wait_longer(
        monkeypatch: pytest.MonkeyPatch, during: str) -> None:
    monkeypatch.setenv(timeouts.ENV, "2.5")
    late = RuntimeError("late")
    late.__cause__ = TimeoutError("timed out")
    unfinished = "the push did not finish: " if during == failures.PUSHING else ""
    assert hub_error(late, REPO, OTHER, during=during) == (
        f"{OTHER} did not answer in time during {during} (TimeoutError); {unfinished}check the "
        "network and --endpoint / HF_ENDPOINT, then run the same command again; set "
        f"{timeouts.ENV} to more than 2.5 (seconds) to wait longer for each answer")
    assert failures.timed_out(late) is late.__cause__
    assert failures.timed_out(RuntimeError("no")) is None


def test_a_chain_that_loops_or_never_ends_is_read_to_an_end() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert list(failures.chain(first)) == [first, second]
    links = [RuntimeError(str(n)) for n in range(30)]
    for link, following in itertools.pairwise(links):
        link.__context__ = following
    assert list(failures.chain(links[0])) == links[:20]
    links[25].__context__ = TimeoutError("late")
    assert failures.timed_out(links[0]) is None


# --- the limits on each wait (timeouts.py) --------------------------------------------------------

def _set_limit(monkeypatch: pytest.MonkeyPatch, raw: str | None) -> None:
    """MEDSYNTH_HUB_TIMEOUT set to `raw`, or unset for None."""
    if raw is None:
        monkeypatch.delenv(timeouts.ENV, raising=False)
    else:
        monkeypatch.setenv(timeouts.ENV, raw)


@pytest.mark.parametrize(("raw", "connect", "read"), [
    (None, 10.0, 60.0), ("", 10.0, 60.0), ("  ", 10.0, 60.0), ("2.5", 2.5, 2.5),
    (" 10 ", 10.0, 10.0), ("30", 10.0, 30.0)])
def test_the_limits_follow_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str | None,
                                        connect: float, read: float) -> None:
    _set_limit(monkeypatch, raw)
    assert timeouts.limits() == timeouts.Limits(connect, read)


def test_a_limit_that_is_no_number_is_one_whole_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timeouts.ENV, " soon ")
    with pytest.raises(UserError) as raised:
        timeouts.limits()
    assert str(raised.value) == (f"{timeouts.ENV} 'soon' is not a number of seconds above 0: "
                                 "set it to how long to wait for each answer of the Hub "
                                 "(default 60), or unset it")


@pytest.mark.parametrize(("raw", "read", "connecting"), [
    (None, "set MEDSYNTH_HUB_TIMEOUT to more than 60 (seconds) to wait longer for each answer",
     "a connection is given at most 10 s whatever MEDSYNTH_HUB_TIMEOUT says"),
    ("soon", "set MEDSYNTH_HUB_TIMEOUT to more than 60 (seconds) to wait longer for each answer",
     "a connection is given at most 10 s whatever MEDSYNTH_HUB_TIMEOUT says"),
    ("10", "set MEDSYNTH_HUB_TIMEOUT to more than 10 (seconds) to wait longer for each answer",
     "a connection is given at most 10 s whatever MEDSYNTH_HUB_TIMEOUT says"),
    ("0.5", "set MEDSYNTH_HUB_TIMEOUT to more than 0.5 (seconds) to wait longer for each answer",
     "set MEDSYNTH_HUB_TIMEOUT to more than 0.5 (seconds) to wait longer for the connection")])
def test_the_advice_names_the_limit_in_force(monkeypatch: pytest.MonkeyPatch, raw: str | None,
                                             read: str, connecting: str) -> None:
    _set_limit(monkeypatch, raw)
    assert timeouts.advice() == read and timeouts.advice(connecting=True) == connecting


def test_inside_bounded_each_request_waits_the_limits_a_caller_left_unset(
        server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's client sends with no limit of its own; inside `bounded` each wait
    the request leaves unset gets the limit, one it sets (HF_HUB_ETAG_TIMEOUT's) stays, and
    the library's own client factory is back after."""
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub 1.x/2.x's client
    from huggingface_hub import get_session
    from huggingface_hub.utils import _http

    monkeypatch.setenv(timeouts.ENV, "30")
    before = _http._GLOBAL_CLIENT_FACTORY
    with timeouts.bounded() as chosen:
        assert chosen == timeouts.Limits(10.0, 30.0)
        session = get_session()
        unset = session.get(url_of(server), timeout=None).request.extensions["timeout"]
        given = session.get(url_of(server), timeout=httpx2.Timeout(
            5.0, connect=None)).request.extensions["timeout"]
    assert unset == {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": None}
    assert all("X-Amzn-Trace-Id" in headers for _, _, headers in server.seen)  # its own hook
    assert given == {"connect": 10.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    assert _http._GLOBAL_CLIENT_FACTORY is before
    after = get_session().get(url_of(server), timeout=None).request.extensions["timeout"]
    assert after == {"connect": None, "read": None, "write": None, "pool": None}


def test_a_client_factory_of_the_callers_own_is_bounded_and_put_back(
        server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code using huggingface_hub in the same process may have set a client factory of its own
    (without the library's hooks): `bounded` adds its limits to that client and puts the
    caller's factory back."""
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub 1.x/2.x's client
    from huggingface_hub import get_session, set_client_factory
    from huggingface_hub.utils import _http

    def own() -> Any:
        return httpx2.Client(timeout=None)

    monkeypatch.setenv(timeouts.ENV, "4")
    default = _http._GLOBAL_CLIENT_FACTORY
    set_client_factory(own)
    try:
        with timeouts.bounded():
            sent = get_session().get(url_of(server), timeout=None).request.extensions["timeout"]
        assert sent == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": None}
        assert _http._GLOBAL_CLIENT_FACTORY is own
    finally:
        set_client_factory(default)


def test_a_hub_that_never_answers_is_said_by_the_clients_timeout(
        server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    monkeypatch.setenv(timeouts.ENV, "0.5")
    server.hang = True
    url = url_of(server)
    with timeouts.bounded():
        exc = caught(lambda: HfApi(endpoint=url, token=TOKEN).model_info(REPO))
    assert hub_error(exc, REPO, url, during="a read of the repository") == (
        f"{url} did not answer in time during a read of the repository (ReadTimeout); check the "
        "network and --endpoint / HF_ENDPOINT, then run the same command again; set "
        f"{timeouts.ENV} to more than 0.5 (seconds) to wait longer for each answer")


def test_a_requests_session_waits_the_limits_a_caller_left_unset(
        server: _Server) -> None:
    """huggingface_hub 0.x sends through a requests Session for each thread: `bounded` wraps
    its adapters; each wait the caller leaves unset gets the limit, one it gives stays."""
    requests = pytest.importorskip("requests")  # huggingface_hub 0.x's client

    adapter: Any = requests.adapters.HTTPAdapter

    class Recording(adapter):  # type: ignore[misc]  # requests' type, absent when skipped
        """requests' own adapter, noting the limits each request reaches it with."""

        def __init__(self) -> None:
            super().__init__()
            self.timeouts: list[Any] = []

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            self.timeouts.append(kwargs.get("timeout"))
            return super().send(request, *args, **kwargs)

    session = requests.Session()
    inner = Recording()
    session.mount("http://", inner)
    session = timeouts._mounted(session, timeouts.Limits(1.0, 1.5))
    url = url_of(server)
    for timeout in (None, (None, None), (5.0, None), (None, 2.0), 3.0):
        assert session.get(url, timeout=timeout).status_code == 200
    assert inner.timeouts == [(1.0, 1.5), (1.0, 1.5), (5.0, 1.5), (1.0, 2.0), 3.0]
    server.hang = True
    late = caught(lambda: session.get(url, timeout=(None, 0.3)))
    assert isinstance(late, requests.exceptions.ReadTimeout) and "read timeout=0.3" in str(late)
    session.close()
    said = hub_error(late, REPO, OTHER)
    assert said is not None and " during the push (ReadTimeout); the push did not finish" in said


def test_a_read_timing_out_that_requests_calls_a_lost_connection_is_a_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets urllib3's ReadTimeoutError through as a ConnectionError while it reads an
    answer's body: the line is the timeout's, with its advice."""
    requests = pytest.importorskip("requests")  # huggingface_hub 0.x's client
    ReadTimeoutError = pytest.importorskip("urllib3.exceptions").ReadTimeoutError

    monkeypatch.setenv(timeouts.ENV, "7")
    wrapped = requests.exceptions.ConnectionError("Read timed out.")
    wrapped.__context__ = ReadTimeoutError(None, OTHER, "Read timed out.")
    assert hub_error(wrapped, REPO, OTHER) == (
        f"{OTHER} did not answer in time during the push (ReadTimeoutError); the push did not "
        "finish: check the network and --endpoint / HF_ENDPOINT, then run the same command "
        f"again; set {timeouts.ENV} to more than 7 (seconds) to wait longer for each answer")


def test_a_connection_dropped_or_cut_short_through_requests_is_a_lost_connection(
        server: _Server) -> None:
    """huggingface_hub 0.x sends through requests, which reports a connection closed without
    an answer as its ConnectionError and a body cut short as its ChunkedEncodingError (neither
    is Python's ConnectionError)."""
    requests = pytest.importorskip("requests")  # huggingface_hub 0.x's client

    server.drop = True
    exc = caught(lambda: requests.get(url_of(server), timeout=5))
    assert hub_error(exc, REPO, OTHER) == (
        f"lost the connection to {OTHER} during the push (ConnectionError); the push did not "
        "finish: check the network and run the same command again (files already uploaded are "
        "not sent twice)")
    server.drop, server.short = False, True
    exc = caught(lambda: requests.get(url_of(server), timeout=5).content)
    assert isinstance(exc, requests.exceptions.ChunkedEncodingError)
    assert hub_error(exc, REPO, OTHER, during="a read of the repository") == (
        f"lost the connection to {OTHER} during a read of the repository "
        "(ChunkedEncodingError); check the network and run the same command again")


@pytest.mark.parametrize(("endpoint", "variable"), [("http://hub.example.org", "HTTP_PROXY"),
                                                    ("https://hub.example.org", "HTTPS_PROXY")])
def test_a_proxy_that_asks_for_a_login_says_where_to_give_it(
        runner: CliRunner, server: _Server, tmp_path: Path, endpoint: str, variable: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that wants a login answers 407 (to the request itself, or to the tunnel an
    HTTPS request asks for first): push and `sample --lora` name the proxy's variable and how
    a login is written into it, not the Hub, the token or --repo-id."""
    import huggingface_hub.constants

    from medsynth_kohya.hub.pull import pull_lora

    no_proxies(monkeypatch)
    monkeypatch.setenv(variable, url_of(server))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server.status, server.body = 407, PAGE
    server.headers = {"Content-Type": "text/html", "Proxy-Authenticate": 'Basic realm="proxy"'}
    wanted = (f"the proxy {variable} names asks for a login (407) on the way to {endpoint} "
              f"during the check of the token: write its user name and password into "
              f"{variable} (http://USER:PASSWORD@HOST:PORT), then run the same command again")
    code, _, said = one_line(runner, "push", make_run(tmp_path), "--repo-id", REPO,
                             "--endpoint", endpoint)
    assert code == 1 and said == f"Error: {wanted}"
    assert server.seen[0][1] in (f"{endpoint}/api/whoami-v2", "hub.example.org:443")
    with pytest.raises(UserError) as raised:
        pull_lora(REPO, endpoint=endpoint)
    assert f"the proxy {variable} names asks for a login (407)" in str(raised.value)
    assert f"{variable} (http://USER:PASSWORD@HOST:PORT)" in str(raised.value)
