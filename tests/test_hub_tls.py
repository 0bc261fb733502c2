"""A Hub endpoint whose TLS certificate is not accepted (self-signed, issued for another host):
the one line carries the verification's reason and names the setting that fixes it, against a
loopback HTTPS server with a certificate made here by `openssl`: never the network."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.access import hub_api, writer
from medsynth_kohya.hub.failures import hub_error
from medsynth_kohya.hub.pull import pull_lora
from medsynth_kohya.hub.push import hub_client

from .fake_hub import TOKEN
from .test_hub import REPO, make_run
from .test_hub_access import _Server, answer, one_line, serving

CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` only, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
               ) -> Iterator[_Server]:
    """A loopback HTTPS server with `certificate`, answering whoami as the Hub does; no CA
    bundle of this machine's environment applies."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = _Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    served.socket = context.wrap_socket(served.socket, server_side=True)
    answer(served, 200, {"type": "user", "name": "alice", "orgs": []})
    with serving(served):
        yield served


def _trust_variable() -> str:
    """The variable the installed huggingface_hub's client reads a CA bundle from."""
    import huggingface_hub

    return ("SSL_CERT_FILE" if hasattr(huggingface_hub, "set_client_factory")
            else "REQUESTS_CA_BUNDLE")


def test_a_self_signed_certificate_says_why_and_which_variable_trusts_it(
        runner: CliRunner, tls_server: _Server, certificate: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The line said "could not connect (ConnectError): check the network", without the
    certificate's reason; the variable it names is the one that makes the push go through."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    port = tls_server.server_address[1]
    endpoint = f"https://localhost:{port}"
    run = make_run(tmp_path)
    code, _, said = one_line(runner, "push", run, "--repo-id", REPO, "--endpoint", endpoint)
    variable = _trust_variable()
    assert code == 1 and said == (
        f"Error: the TLS certificate of {endpoint} was not accepted during the check of the "
        "token (certificate verify failed: self-signed certificate): set "
        f"{variable} to a file holding the certificate of the authority that signed it (a "
        "company proxy's, a private Hub's), or check --endpoint / HF_ENDPOINT, then run the "
        "same command again")
    monkeypatch.setenv(variable, str(certificate[0]))
    with hub_client():
        assert writer(hub_api(endpoint, TOKEN), REPO) == "alice"


def test_a_certificate_for_another_host_says_to_name_the_host_it_was_issued_for(
        runner: CliRunner, tls_server: _Server, certificate: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv(_trust_variable(), str(certificate[0]))
    endpoint = f"https://127.0.0.1:{tls_server.server_address[1]}"
    code, _, said = one_line(runner, "push", make_run(tmp_path), "--repo-id", REPO,
                             "--endpoint", endpoint)
    assert code == 1 and said == (
        f"Error: the TLS certificate of {endpoint} was not accepted during the check of the "
        "token (certificate verify failed: IP address mismatch, certificate is not valid for "
        "'127.0.0.1'): give --endpoint / HF_ENDPOINT with the host name the certificate was "
        "issued for, then run the same command again")


def test_the_reason_is_read_through_requests_as_huggingface_hub_0x_raises_it(
        tls_server: _Server) -> None:
    """0.x raises requests' SSLError, the certificate's error three links down its chain."""
    requests = pytest.importorskip("requests")
    url = f"https://localhost:{tls_server.server_address[1]}"
    with pytest.raises(requests.exceptions.SSLError) as raised:
        requests.get(f"{url}/api/whoami-v2", timeout=10)
    said = hub_error(raised.value, REPO, url, during="a read of the repository",
                     option="--push")
    assert said is not None and said.startswith(
        f"the TLS certificate of {url} was not accepted during a read of the repository "
        "(certificate verify failed: self-signed certificate): set ")
    assert said.endswith(", or check HF_ENDPOINT, then run the same command again")


def test_sample_from_a_hub_whose_certificate_is_refused_says_why(
        tls_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sample --lora` falls back to the Hub cache when the Hub cannot be reached: the line
    said "cannot reach" it, not that its certificate was refused, nor why."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    endpoint = f"https://localhost:{tls_server.server_address[1]}"
    with pytest.raises(UserError) as raised:
        pull_lora(REPO, endpoint=endpoint)
    assert str(raised.value).startswith(
        f"the TLS certificate of {endpoint} was not accepted (certificate verify failed: "
        f"self-signed certificate; set {_trust_variable()} to a file holding the certificate of "
        "the authority that signed it (a company proxy's, a private Hub's), or check the "
        "endpoint given), and the Hugging Face cache")
