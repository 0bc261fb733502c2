"""Hub and network failures of a push or a pull, as one line that says what to do and
never holds a secret (HTTP status, lost connection, refused card metadata, no token).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.contents import scrub

NO_TOKEN = ("no Hugging Face token found: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`")


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


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def hub_error(exc: BaseException, repo_id: str, endpoint: str, *, push: bool = True
              ) -> str | None:
    """The one-line message for a Hub or network failure; None for anything else. `push`
    False: the failure came while only reading the repository (a dry run's listing)."""
    during, unfinished = (("the push", "the push did not finish: ") if push
                          else ("a read of the repository", ""))
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    name = repo_id.split("/")[1]
    for link in chain(exc):
        if isinstance(link, LocalTokenNotFoundError):
            return NO_TOKEN
        # HfHubHTTPError, or the client's own error where huggingface_hub lets one through
        # (0.x raises requests.HTTPError after retrying an LFS upload).
        status = getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(link, HfHubHTTPError) or isinstance(status, int):
            if status == 401:
                return (f"the Hub at {endpoint} rejected the token (401): set HF_TOKEN to a "
                        "valid token with write access, or run `hf auth login`")
            if status == 403:
                return (f"no write access to {repo_id} (403): it belongs to another user or "
                        "organisation, or the token is read-only; push to your own namespace "
                        f"(--repo-id YOUR-NAME/{name}) with a write token")
            if status == 404:
                return (f"{repo_id} was not found at {endpoint} (404): check --repo-id's "
                        "namespace (your user name or an organisation you belong to) and "
                        "--endpoint / HF_ENDPOINT")
            if status == 429:
                return (f"the Hub at {endpoint} is rate-limiting this token (429); wait a few "
                        "minutes and run the same command again")
            message = str(getattr(link, "server_message", "") or "").splitlines()
            detail = f": {message[0][:200]}" if message else ""
            if isinstance(status, int) and status >= 500:
                return (f"the Hub at {endpoint} failed with {status} during {during}{detail}; "
                        f"{unfinished}run the same command again later")
            return (f"the Hub at {endpoint} answered {status} during {during}{detail}; check "
                    "--repo-id and run the same command again")
    network = network_errors()
    for link in chain(exc):
        if isinstance(link, network):
            return (f"lost the connection to {endpoint} during {during} "
                    f"({type(link).__name__}); {unfinished}check the network and run the same "
                    "command again" + (" (files already uploaded are not sent twice)"
                                       if push else ""))
    for link in chain(exc):
        if isinstance(link, ValueError) and str(link).startswith("Invalid metadata in README"):
            return f"the Hub refused the model card's metadata: {str(link).splitlines()[-1]}"
    return None


@contextmanager
def hub_errors(repo_id: str, endpoint: str, secrets: Sequence[str], *, push: bool = True
               ) -> Iterator[None]:
    """Turn a Hub or network failure into a one-line UserError that never holds a secret."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        message = hub_error(exc, repo_id, endpoint, push=push)
        if message is None:
            raise
        raise UserError(scrub(message.encode(), secrets).decode()) from None
