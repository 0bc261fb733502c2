"""How long huggingface_hub waits for the Hub. It sends its API calls (whoami, model_info,
create_repo, the commit) with no timeout, so a server that takes the connection and never
answers would hang `push` and `sample --lora` until Ctrl-C.

Inside `bounded`, each request waits at most CONNECT seconds (or less, see `limits`) to connect
and MEDSYNTH_HUB_TIMEOUT seconds (default READ) for each read or write: a limit on each
socket operation, not on the whole transfer, so an upload or download that keeps moving is never
cut. A limit the library sets itself (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT) stays. The
limits are given through huggingface_hub's own hook for its HTTP client (0.x:
`configure_http_backend`, a requests Session per thread; 1.x and 2.x: `set_client_factory`, one
httpx client), and its previous factory is put back after, for code that uses the library in
the same process. Xet transfers (hf_xet) keep their own limits.

A download (`sample --lora`) is bounded in all as well, by `within`: a server that sends a byte
now and then never runs into the limit on each read, and the client resumes a download that
stalls, so without it `sample` could run until Ctrl-C.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from medsynth_kohya.errors import UserError

ENV = "MEDSYNTH_HUB_TIMEOUT"
CONNECT = 10.0
"""Seconds to wait for a connection (the most; less when MEDSYNTH_HUB_TIMEOUT is less)."""
READ = 60.0
"""Seconds to wait for each read or write when MEDSYNTH_HUB_TIMEOUT is unset."""
DEADLINE_ENV = "MEDSYNTH_HUB_DOWNLOAD_DEADLINE"
DEADLINE = 1800.0
"""Seconds a download from the Hub may take in all when MEDSYNTH_HUB_DOWNLOAD_DEADLINE is unset:
minutes for a LoRA of a few hundred MB over a slow link."""
_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    """Seconds to wait for a connection, and for each read or write on it."""

    connect: float
    read: float


def _seconds(name: str, default: float, what: str) -> float:
    """The seconds the variable `name` (read now) gives, else `default`; a UserError saying
    `what` it sets for a value that is not a number of seconds above 0."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{name} {raw!r} is not a number of seconds above 0: set it to {what} "
                        f"(default {default:g}), or unset it")
    return seconds


def limits() -> Limits:
    """The limits MEDSYNTH_HUB_TIMEOUT (read now) sets, else the defaults; a UserError for a
    value that is not a number of seconds above 0."""
    seconds = _seconds(ENV, READ, "how long to wait for each answer of the Hub")
    return Limits(min(CONNECT, seconds), seconds)


def advice(connecting: bool = False) -> str:
    """How to wait longer than the limit now in force: the read limit, or, for a connection
    not made in time, the connect limit, which the variable lengthens up to CONNECT only."""
    try:
        chosen = limits()
    except UserError:
        chosen = Limits(CONNECT, READ)
    if not connecting:
        return f"set {ENV} to more than {chosen.read:g} (seconds) to wait longer for each answer"
    if chosen.connect < CONNECT:
        return (f"set {ENV} to more than {chosen.connect:g} (seconds) to wait longer for the "
                "connection")
    return f"a connection is given at most {CONNECT:g} s whatever {ENV} says"


def deadline() -> float:
    """The seconds a download may take in all: MEDSYNTH_HUB_DOWNLOAD_DEADLINE (read now), else
    DEADLINE; a UserError for a value that is not a number of seconds above 0."""
    return _seconds(DEADLINE_ENV, DEADLINE, "how long a download from the Hub may take in all")


class DeadlinePassed(Exception):
    """A call `within` bounds ran past its `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"took over {seconds:g} s")
        self.seconds = seconds


def within(seconds: float, call: Callable[[], _T]) -> _T:
    """What `call()` returns or raises, or DeadlinePassed once it has run `seconds`. It runs in
    a daemon thread, left behind at the deadline (a thread cannot be stopped) for the process
    to end without it. Leaving `bounded` then ends its transfer with huggingface_hub >= 1,
    which closes the bounded client; with 0.x it runs until its transfer ends."""
    done: list[_T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=run, name="medsynth-hub-download", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DeadlinePassed(seconds)
    if failed:
        raise failed[0]
    return done[0]


@contextmanager
def bounded() -> Iterator[Limits]:
    """huggingface_hub's requests bounded by `limits()` until the block ends; its HTTP client
    factory is put back after."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    chosen = limits()
    configure: Any = getattr(huggingface_hub, "set_client_factory", None)
    if configure is not None:  # >= 1: one httpx client, made by the factory
        previous: Any = _http._GLOBAL_CLIENT_FACTORY
        made: Callable[[Any, Limits], Any] = _hooked
    else:  # 0.x: a requests Session for each thread, made by the backend factory
        from huggingface_hub import configure_http_backend

        configure = configure_http_backend
        previous = _http._GLOBAL_BACKEND_FACTORY  # type: ignore[attr-defined]
        made = _mounted
    configure(lambda: made(previous(), chosen))
    try:
        yield chosen
    finally:
        configure(previous)


def _hooked(client: Any, chosen: Limits) -> Any:
    """`client` (httpx) with a request hook that sets each limit the request leaves unset
    (huggingface_hub passes `timeout=None` for most API calls, which overrides the client's)."""

    def fill(request: Any) -> None:
        given = dict(request.extensions.get("timeout") or {})
        for name, seconds in (("connect", chosen.connect), ("read", chosen.read),
                              ("write", chosen.read)):
            if given.get(name) is None:
                given[name] = seconds
        request.extensions = {**request.extensions, "timeout": given}

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks.get("request", ()), fill]}
    return client


class _BoundedAdapter:
    """A requests transport adapter that hands each request on to `inner` with the limits set
    where the caller set none."""

    def __init__(self, inner: Any, chosen: Limits) -> None:
        self.inner = inner
        self.chosen = chosen

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout")
        if timeout is None:
            timeout = (self.chosen.connect, self.chosen.read)
        elif isinstance(timeout, tuple):
            connect, read = timeout
            timeout = (self.chosen.connect if connect is None else connect,
                       self.chosen.read if read is None else read)
        return self.inner.send(request, *args, **{**kwargs, "timeout": timeout})

    def close(self) -> None:
        self.inner.close()


def _mounted(session: Any, chosen: Limits) -> Any:
    """`session` (requests) with each of its adapters wrapped in a _BoundedAdapter."""
    for prefix, adapter in list(session.adapters.items()):
        session.mount(prefix, _BoundedAdapter(adapter, chosen))
    return session
