"""Hub and network failures of a push or a pull, as one line that says what to do and
never holds a secret (HTTP status, lost connection, refused card metadata, no token).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.contents import scrub
from medsynth_kohya.hub.timeouts import advice

DEFAULT_ENDPOINT = "https://huggingface.co"


def login(endpoint: str) -> str:
    """The login that stores a token of the Hub at `endpoint`: `hf auth login` checks the token
    at HF_ENDPOINT's Hub (the public one where it is unset), not at --endpoint's."""
    asked = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    plain = endpoint == DEFAULT_ENDPOINT and asked == DEFAULT_ENDPOINT
    return f"`{'' if plain else f'HF_ENDPOINT={endpoint} '}hf auth login`"


def no_token(endpoint: str) -> str:
    """The line for a push without a token: the token page of the Hub at `endpoint`, and a
    login that checks the token there."""
    if endpoint == DEFAULT_ENDPOINT:
        return ("no Hugging Face token found: set HF_TOKEN to a token with write access "
                f"({DEFAULT_ENDPOINT}/settings/tokens) or run {login(endpoint)}")
    return (f"no Hub token found: set HF_TOKEN to a token of {endpoint} with write access "
            f"({endpoint}/settings/tokens) or run {login(endpoint)}")


def network_errors() -> tuple[type[BaseException], ...]:
    """Exception kinds of a failed connection: httpx2 (huggingface_hub >= 1), requests (0.x)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout")),
                          ("requests.exceptions", ("ChunkedEncodingError",)),
                          ("urllib3.exceptions", ("ProtocolError",))):
        if module.split(".")[0] not in sys.modules:
            continue
        loaded = importlib.import_module(module)
        kinds += [getattr(loaded, name) for name in names if hasattr(loaded, name)]
    return tuple(kinds)


MISMATCH = (62, 64)
"""OpenSSL's verify codes for a certificate issued for another host name or IP address."""


def trust_variable() -> str:
    """The variable that names a CA bundle to the installed huggingface_hub's client: httpx
    (>= 1) reads SSL_CERT_FILE, requests (0.x) REQUESTS_CA_BUNDLE."""
    import huggingface_hub

    return ("SSL_CERT_FILE" if hasattr(huggingface_hub, "set_client_factory")
            else "REQUESTS_CA_BUNDLE")


def untrusted(exc: BaseException, setting: str) -> tuple[str, str] | None:
    """Why the endpoint's TLS certificate was not accepted (OpenSSL's reason, as in
    "certificate verify failed: self-signed certificate") and what fixes it: the host name it
    was issued for in `setting`, or a CA bundle that holds its issuer; None for other failures."""
    import ssl

    refused = next((link for link in chain(exc)
                    if isinstance(link, ssl.SSLCertVerificationError)), None)
    if refused is None:
        return None
    said = str(refused.verify_message or refused.reason or "no reason given").rstrip(".")
    reason = f"certificate verify failed: {said}"
    if refused.verify_code in MISMATCH:
        return reason, f"give {setting} with the host name the certificate was issued for"
    return reason, (f"set {trust_variable()} to a file holding the certificate of the authority "
                    f"that signed it (a company proxy's, a private Hub's), or check {setting}")


def timed_out(exc: BaseException) -> BaseException | None:
    """The link of `exc`'s chain that says the Hub did not answer in time (timeouts.py), if
    any: httpx's TimeoutException (huggingface_hub >= 1), requests' Timeout, or urllib3's
    ReadTimeoutError, which requests lets through as a ConnectionError while it reads an answer
    (0.x). Not urllib3's ConnectTimeoutError: its NewConnectionError is a refused connection."""
    kinds: list[type[BaseException]] = [TimeoutError]
    for module, name in (("httpx2", "TimeoutException"), ("httpx", "TimeoutException"),
                         ("requests.exceptions", "Timeout"),
                         ("urllib3.exceptions", "ReadTimeoutError")):
        loaded = sys.modules.get(module)
        kinds += [getattr(loaded, name)] if hasattr(loaded, name) else []
    return next((link for link in chain(exc) if isinstance(link, tuple(kinds))), None)


def wait_advice(late: BaseException) -> str:
    """timeouts.advice for the link `late` of timed_out: a connection not made in time
    (httpx's or requests' ConnectTimeout) has its own, shorter limit."""
    return advice(connecting=type(late).__name__ == "ConnectTimeout")


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, IndexError)
"""What huggingface_hub raises where an answer is JSON but not of the Hub's shape (ModelInfo
reads `data["id"]`): from its own code, as no error of a call made to it is."""


def _raised_in_client(link: BaseException) -> bool:
    """Whether `link` was raised by huggingface_hub's own code (its innermost frame is the
    library's), not by a call into it."""
    frames = traceback.extract_tb(link.__traceback__)
    return bool(frames) and f"{os.sep}huggingface_hub{os.sep}" in frames[-1].filename


def not_the_hub(exc: BaseException) -> bool:
    """Whether `exc` comes of an answer that is not the Hub's JSON (a proxy's login page, a web
    site at HF_ENDPOINT, another API's JSON): huggingface_hub lets the parser's error, or the
    one of reading a field the answer lacks, through."""
    return any(isinstance(link, json.JSONDecodeError)
               or (isinstance(link, _SHAPE_ERRORS) and _raised_in_client(link))
               for link in chain(exc))


def proxies_for(endpoint: str) -> list[str]:
    """The variables naming the proxy a request to `endpoint` goes through (its scheme's, then
    ALL_PROXY, in either case), none where NO_PROXY names its host."""
    from urllib.parse import urlsplit
    from urllib.request import proxy_bypass

    scheme, _, rest = endpoint.partition("://")
    if proxy_bypass(urlsplit(endpoint).netloc or rest):
        return []
    return [name for name in (f"{scheme.upper()}_PROXY", "ALL_PROXY")
            if os.environ.get(name) or os.environ.get(name.lower())]


def answered_instead(endpoint: str, setting: str) -> str:
    """What to check when `endpoint` answered with a web page: `setting` (what chose it) for
    another Hub; for the public Hub, which no setting chose, what answers in its place: the
    proxy the environment names for its scheme (unless NO_PROXY names the Hub's host), else
    a network's sign-in page."""
    if endpoint != DEFAULT_ENDPOINT:
        return f"check {setting} (the public Hub is {DEFAULT_ENDPOINT})"
    proxies = proxies_for(endpoint)
    if proxies:
        return (f"the proxy {' / '.join(proxies)} names answered in its place: check that "
                "proxy (and sign in to it if it asks)")
    return ("something between this machine and the Hub answered in its place, such as a "
            "network's sign-in page or a filtering proxy: sign in to the network or use another")


def endpoint_setting(option: str) -> str:
    """What sets the Hub's address for the command that names its repository by `option`:
    push (--repo-id) has --endpoint; reproduce (--push) reads HF_ENDPOINT alone."""
    return "--endpoint / HF_ENDPOINT" if option == "--repo-id" else "HF_ENDPOINT"


def answered_otherwise(endpoint: str, during: str, option: str = "--repo-id") -> str:
    """The line for an answer the Hub never gives (a web page, JSON of another shape) to a
    request made during `during` (`option`: as for `hub_error`)."""
    return (f"{endpoint} did not answer as the Hugging Face Hub does during {during} (it sent a "
            "web page or other text where the Hub sends its JSON answer): "
            f"{answered_instead(endpoint, endpoint_setting(option))}, then run the same "
            "command again")


LFS_REFUSED = ("LFS batch API returned errors", "LFS batch endpoint returned errors")
"""How huggingface_hub (2.x, 0.x) starts the error it raises when the Hub will not store an
upload (the LFS batch's per-object errors: too large, storage quota used up)."""
PUSHING = "the push"
"""What `hub_error` says failed by default: an unfinished push, which a re-run completes."""


def _answer(exc: BaseException) -> BaseException | None:
    """The first Hub answer in `exc`'s chain: HfHubHTTPError, or the client's own error where
    huggingface_hub lets one through (0.x raises requests.HTTPError after retrying an LFS
    upload)."""
    from huggingface_hub.errors import HfHubHTTPError

    return next((link for link in chain(exc) if isinstance(link, HfHubHTTPError)
                 or isinstance(_status(link), int)), None)


_XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})\b")
"""How hf_xet (huggingface_hub's Xet uploads) words the Hub's answer to one of its requests, in
the ConnectionError it raises for any failure."""


def _status(link: BaseException | None) -> int | None:
    status = getattr(getattr(link, "response", None), "status_code", None)
    if isinstance(status, int):
        return status
    found = _XET_STATUS.search(str(link)) if isinstance(link, ConnectionError) else None
    return int(found[1]) if found else None


def _hub_error_in(response: object) -> bool:
    """Whether `response` carries an error as the Hub words one (its X-Error-Message or
    X-Error-Code header, or a JSON object with `error`). Not `Via`: the Hub's own answers pass
    a CDN that sets it (huggingface_hub reads CloudFront's X-Amz-Cf-Id from them)."""
    headers = getattr(response, "headers", {})
    if headers.get("X-Error-Message") or headers.get("X-Error-Code"):
        return True
    try:
        body = response.json()  # type: ignore[attr-defined]
    except (ValueError, RuntimeError):  # not JSON; a streamed body not read (httpx)
        return False
    return isinstance(body, dict) and "error" in body


def refused_on_the_way(exc: BaseException) -> str | None:
    """What answered a 403 in `exc`'s chain where the Hub did not (a proxy's or firewall's
    page, an answer without the Hub's error): "a web page" or "an answer without the Hub's
    error"; None for the Hub's own 403, another status, or no answer to judge (hf_xet's)."""
    answer = _answer(exc)
    response = getattr(answer, "response", None)
    if _status(answer) != 403 or response is None or _hub_error_in(response):
        return None
    kind = str(getattr(response, "headers", {}).get("Content-Type", "")).lower()
    return "a web page" if "html" in kind else "an answer without the Hub's error"


def in_the_way(endpoint: str, setting: str) -> tuple[str, str]:
    """Who refused a request to `endpoint` with a 403 that is not the Hub's, and what to do:
    the proxy the environment names for it, else something else between this machine and it
    (`setting`: what chose the endpoint)."""
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).hostname or endpoint
    proxies = proxies_for(endpoint)
    if proxies:
        return (f"the proxy {' / '.join(proxies)} names refused the request to {endpoint}",
                f"ask whoever runs that proxy to allow {host}, or add {host} to NO_PROXY if it "
                "is reached without one")
    return (f"something between this machine and {endpoint} (a firewall or a filtering proxy) "
            "refused the request",
            f"check {setting} and ask the network's administrator to allow {host}")


def proxy_login(exc: BaseException, endpoint: str) -> tuple[str, str] | None:
    """Who asks for a login (407) on the way to `endpoint`, and where to give it: the proxy's
    answer, or (through an HTTPS tunnel) the client's ProxyError naming it; None otherwise."""
    if not any(_status(link) == 407 or "407 Proxy Authentication" in str(link)
               for link in chain(exc)):
        return None
    names = proxies_for(endpoint)
    variable = names[0] if names else f"{endpoint.partition(':')[0].upper()}_PROXY"
    who = f"the proxy {' / '.join(names)} names" if names else "a proxy on the way"
    return (f"{who} asks for a login (407) on the way to {endpoint}",
            f"write its user name and password into {variable} "
            "(http://USER:PASSWORD@HOST:PORT)")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status the Hub answered with (None: no answer, e.g. a lost connection)."""
    return _status(_answer(exc))


def hub_error(exc: BaseException, repo_id: str, endpoint: str, *, during: str = PUSHING,
              option: str = "--repo-id") -> str | None:
    """The one-line message for a Hub or network failure; None for anything else. `during`
    names what failed when it is not the push itself (a dry run's read of the repository, the
    check of the token); `option` is the one the user named the repository by."""
    unfinished = "the push did not finish: " if during == PUSHING else ""
    setting = endpoint_setting(option)
    from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

    name = repo_id.split("/")[1]
    if any(isinstance(link, LocalTokenNotFoundError) for link in chain(exc)):
        return no_token(endpoint)
    if any(isinstance(link, OfflineModeIsEnabled) for link in chain(exc)):
        return (f"HF_HUB_OFFLINE is set, so huggingface_hub sends nothing to {endpoint}: unset "
                "it (it is for `sample` from the Hub cache) and run the same command again")
    asked = proxy_login(exc, endpoint)
    if asked is not None:
        return f"{asked[0]} during {during}: {asked[1]}, then run the same command again"
    answer = _answer(exc)
    if answer is not None:
        status = _status(answer)
        url = str(getattr(getattr(answer, "response", None), "url", ""))
        if status == 404 and "/xet-write-token/" in str(answer):
            return (f"the Hub at {endpoint} does not offer Xet uploads, which this "
                    "huggingface_hub uses when hf_xet is installed: set HF_HUB_DISABLE_XET=1 "
                    "and run the same command again")
        if status == 401:
            return (f"the Hub at {endpoint} rejected the token (401): set HF_TOKEN to a "
                    f"valid token with write access, or run {login(endpoint)}")
        if status == 404 and "/api/whoami" in url:  # asks for no repository: not the Hub's API
            return (f"{endpoint} answered 404 during {during}, which any Hugging Face Hub "
                    f"answers: {answered_instead(endpoint, setting)}, then "
                    "run the same command again")
        on_the_way = refused_on_the_way(exc)
        if on_the_way is not None:
            who, fix = in_the_way(endpoint, setting)
            return (f"{who} during {during} (403 with {on_the_way}, not the Hub's error): "
                    f"{fix}, then run the same command again")
        if status == 403:
            return (f"no write access to {repo_id} (403): it belongs to another user or "
                    "organisation, or the token is read-only; push to your own namespace "
                    f"({option} YOUR-NAME/{name}) with a write token")
        if status == 404:
            return (f"{repo_id} was not found at {endpoint} (404): check {option}'s "
                    f"namespace (your user name or an organisation you belong to) and {setting}")
        if status == 429:
            return (f"the Hub at {endpoint} is rate-limiting this token (429); wait a few "
                    "minutes and run the same command again")
        message = str(getattr(answer, "server_message", "") or "").splitlines()
        detail = f": {message[0][:200]}" if message else ""
        if "validate-yaml" in url:
            return (f"the Hub at {endpoint} refused the model card's metadata ({status}"
                    f"{detail}); check the values the card takes from you (--license, the "
                    "run's prompts) and run the same command again")
        if isinstance(status, int) and status >= 500:
            return (f"the Hub at {endpoint} failed with {status} during {during}{detail}; "
                    f"{unfinished}run the same command again later")
        return (f"the Hub at {endpoint} answered {status} during {during}{detail}; check "
                f"{option} and run the same command again")
    refused = next((str(link) for link in chain(exc) if isinstance(link, ValueError)
                    and str(link).startswith(LFS_REFUSED)), None)
    if refused is not None:  # "...errors:\nEncountered error for file with OID X: `REASON"
        reason = next(iter(refused.splitlines()[1:]), "").partition(": `")[2].strip("` ")
        return (f"the Hub at {endpoint} would not store a file during {during} "
                f"({reason[:200] or 'no reason given'}); {unfinished}check the repository's "
                "storage on the Hub, then run the same command again")
    certificate = untrusted(exc, setting)
    if certificate is not None:
        reason, fix = certificate
        return (f"the TLS certificate of {endpoint} was not accepted during {during} "
                f"({reason}): {fix}, then run the same command again")
    if not_the_hub(exc):
        return answered_otherwise(endpoint, during, option)
    network = network_errors()
    for link in chain(exc):
        if isinstance(link, ConnectionRefusedError) or type(link).__name__ == "ConnectError":
            return (f"could not connect to {endpoint} during {during} ({type(link).__name__}):"
                    f" check {setting} and the network, then run the same command again")
    late = timed_out(exc)
    if late is not None:
        return (f"{endpoint} did not answer in time during {during} ({type(late).__name__}); "
                f"{unfinished}check the network and {setting}, then run the same command "
                f"again; {wait_advice(late)}")
    for link in chain(exc):
        if isinstance(link, network):
            return (f"lost the connection to {endpoint} during {during} "
                    f"({type(link).__name__}); {unfinished}check the network and run the same "
                    "command again" + (" (files already uploaded are not sent twice)"
                                       if unfinished else ""))
    for link in chain(exc):
        if isinstance(link, ValueError) and str(link).startswith("Invalid metadata in README"):
            return f"the Hub refused the model card's metadata: {str(link).splitlines()[-1]}"
    return None


@contextmanager
def hub_errors(repo_id: str, endpoint: str, secrets: Sequence[str], *, during: str = PUSHING,
               option: str = "--repo-id") -> Iterator[None]:
    """Turn a Hub or network failure into a one-line UserError that never holds a secret."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        message = hub_error(exc, repo_id, endpoint, during=during, option=option)
        if message is None:
            raise
        raise UserError(scrub(message.encode(), secrets).decode()) from None
