"""A small Hugging Face Hub on 127.0.0.1 for tests: just the endpoints `push` uses.

huggingface_hub's own client (0.34 on requests, 1.x/2.x on httpx2) talks to it through
`HfApi(endpoint=...)`, over the legacy LFS path (the tests switch Xet off):

- GET  /api/whoami-v2                                    the token's account, its organisations
  and the token's role (read, write, or fineGrained with per-namespace permissions), shaped as
  the Hub answers
- POST /api/repos/create                                 409 with the URL when it exists
- GET  /api/models/NS/NAME[/revision/REV]                id, sha, private, siblings, xetEnabled;
  with ?blobs=true each sibling's size and blobId, and lfs {size, sha256, pointerSize} for LFS
- POST /api/validate-yaml                                README metadata check before a commit
- POST /api/models/NS/NAME/preupload/REV                 upload mode and remote oid per file
- POST /NS/NAME.git/info/lfs/objects/batch               basic-transfer upload actions, or
  per-object errors (`lfs_refusal`)
- PUT  /lfs/OID                                          the LFS object itself (sha256 checked)
- POST /api/models/NS/NAME/commit/REV                    ndjson: file, lfsFile, deletedFile;
  412 when the header's parentCommit is not the head
- HEAD/GET /NS/NAME/resolve/REV/PATH                     a file, with X-Repo-Commit and ETag
  (what hf_hub_download asks); REV is main or the head commit

Reads of a public repo need no token; everything else does.

Anything else answers 404 and is listed in `unknown`. `fail(method, path_regex, status, "drop",
"html", "short", "hang", "slow" or "trickle")` makes matching requests answer that status, close
the connection without an answer, answer 200 with a web page (a server that is not the Hub: a
proxy's login page, a mirror's site), close it partway through a 200 answer's body (a download
cut short), never answer (until the server stops, or for `HANG` seconds: a client without
a timeout then sees the connection closed), answer as usual with a pause of `SLOW`
seconds before each piece written (its headers, its body), or answer 200 with a body of a MiB
sent one byte every `TRICKLE` seconds (until the server stops, or for `HANG` seconds).
`Repo.edit` changes files as a user on the Hub's web editor would; `interleave` lands such a
commit just before a commit request is answered, as another push between a client's read and
its commit.
The server stops when the test's fixture stops it; it answers at most `max_requests` requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".png", ".jpg", ".jpeg")
REPO = r"(?P<repo>[^/]+/[^/]+?)"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a regular file, as the Hub reports it for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The pointer git stores for an LFS file (the Hub's blobId of it is the pointer's)."""
    return (f"version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()


@dataclass
class Repo:
    """One model repo: its files, which of them are LFS, and its commits."""

    owner: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    """Each commit's summary and description, as the repo's history shows them."""

    @property
    def head(self) -> str:
        return self.commits[-1]

    def commit(self, summary: str, description: str = "") -> str:
        self.messages.append((summary, description))
        digest = hashlib.sha1()
        digest.update((self.commits[-1] if self.commits else "").encode())
        digest.update(summary.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        self.commits.append(digest.hexdigest())
        return self.commits[-1]

    def oid(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs else git_blob_sha1(data)

    def sibling(self, path: str) -> dict[str, Any]:
        """A file as model info with ?blobs=true shows it: size, blobId and, for LFS, lfs."""
        data = self.files[path]
        if path not in self.lfs:
            return {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
        pointer = lfs_pointer(data)
        return {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(pointer),
                "lfs": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "pointerSize": len(pointer)}}

    def edit(self, changes: dict[str, bytes], summary: str = "edited on the Hub") -> str:
        """Replace or add files in one commit, as a user on the Hub would (LFS by suffix)."""
        for path, data in changes.items():
            self.files[path] = data
            if path.endswith(LFS_SUFFIXES):
                self.lfs.add(path)
            else:
                self.lfs.discard(path)
        return self.commit(summary)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    action: int | str
    times: int | None
    hits: int = 0


class FakeHub:
    """The server and its state; `url` is the endpoint to give huggingface_hub."""

    def __init__(self, token: str, user: str = "alice", orgs: tuple[str, ...] = ("medsynth-lab",),
                 max_requests: int = 300) -> None:
        self.token = token
        self.user = user
        self.orgs = orgs
        self.role = "write"
        """The token's role: "read", "write" or "fineGrained" (then `scoped` decides)."""
        self.scoped: dict[str, tuple[str, ...]] = {}
        """A fine-grained token's permissions per user or organisation it names."""
        self.max_requests = max_requests
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.faults: list[Fault] = []
        self.interleaved: list[Callable[[Repo], object]] = []
        self.lfs_refusal: str | None = None
        """When set, the LFS batch answers each object with this error (code 422), as the Hub
        does for a file it will not store (too large, storage quota used up)."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        """Set when the server stops: "hang" faults end then."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_repo(self, repo_id: str, owner: str, *, private: bool = False) -> Repo:
        """A repo as the Hub creates it: one initial commit holding .gitattributes."""
        repo = Repo(owner, private, files={".gitattributes": b"*.safetensors filter=lfs\n"})
        repo.commit("initial commit")
        self.repos[repo_id] = repo
        return repo

    def fail(self, method: str, path: str, action: int | str, times: int | None = None) -> None:
        """Answer matching requests with status `action`, close the connection ("drop"), answer
        with a web page ("html"), cut a 200 answer's body short ("short"), never answer
        ("hang") or answer slowly ("slow")."""
        self.faults.append(Fault(method, re.compile(path), action, times))

    def interleave(self, change: Callable[[Repo], object], times: int = 1) -> None:
        """Run `change` on the repo just before each of the next `times` commit requests is
        answered: another commit lands between the client's read and its commit."""
        self.interleaved += [change] * times

    def can_write(self, namespace: str) -> bool:
        """Whether the token may write there: the user's or an org's namespace, as its role
        (or, when fine-grained, its permissions for that namespace) allows."""
        if namespace != self.user and namespace not in self.orgs:
            return False
        if self.role == "fineGrained":
            return "repo.write" in self.scoped.get(namespace, ())
        return self.role == "write"

    def can_read(self, namespace: str) -> bool:
        return namespace == self.user or namespace in self.orgs

    def whoami(self) -> dict[str, Any]:
        """GET /api/whoami-v2 as the Hub answers it for a user's access token."""
        token: dict[str, Any] = {"displayName": "test", "role": self.role,
                                 "createdAt": "2026-01-02T03:04:05.000Z"}
        if self.role == "fineGrained":
            token["fineGrained"] = {
                "canReadGatedRepos": False, "global": ["discussion.write", "post.write"],
                "scoped": [{"entity": {"_id": f"id-{name}", "name": name,
                                       "type": "user" if name == self.user else "org"},
                            "permissions": list(permissions)}
                           for name, permissions in self.scoped.items()]}
        return {"type": "user", "id": f"id-{self.user}", "name": self.user,
                "fullname": self.user.title(), "email": f"{self.user}@example.org",
                "emailVerified": True, "canPay": False, "periodEnd": None, "isPro": False,
                "avatarUrl": "/avatars/default.svg",
                "orgs": [{"type": "org", "id": f"id-{org}", "name": org, "fullname": org,
                          "email": None, "canPay": False, "periodEnd": None,
                          "avatarUrl": "/avatars/org.svg", "roleInOrg": "write",
                          "isEnterprise": False} for org in self.orgs],
                "auth": {"type": "access_token", "accessToken": token}}


SLOW = 0.7
"""Seconds a "slow" answer pauses before each piece it writes."""
HANG = 30.0
"""Seconds a "hang" fault keeps the connection without answering (at most)."""
OTHER_JSON: dict[str, Any] = {"json-object": {"status": "ok", "data": {}},
                              "json-list": [], "json-text": "ok"}
"""Faults answering 200 with JSON the Hub never sends (another API's answer at HF_ENDPOINT)."""
TRICKLE = 0.1
"""Seconds between the bytes of a "trickle" answer: well under any per-read limit."""


class _Slow:
    """A handler's output that pauses SLOW seconds before each write: an answer that keeps
    coming, but takes longer in all than a short per-read timeout."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, data: bytes) -> int:
        time.sleep(SLOW)
        written: int = self.inner.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: Any
    query = ""

    @property
    def hub(self) -> FakeHub:
        hub: FakeHub = self.server.hub
        return hub

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""

    # --- plumbing ---------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None,
              ) -> None:
        body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        """200 with a web page, as a server that is not the Hub answers any URL."""
        page = b"<!DOCTYPE html><html><body><h1>Sign in to continue</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    def _trickle(self) -> None:
        """200 with a MiB body sent a byte at a time, never in time to finish: a download that
        keeps moving, each read well within its limit, until the server stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(2**20))
        self.end_headers()
        self.close_connection = True
        ends = time.monotonic() + HANG
        try:
            while not self.hub.stopping.wait(TRICKLE) and time.monotonic() < ends:
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:  # the client gave up
            return

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _handle(self, method: str) -> None:
        hub = self.hub
        path, self.query = urlsplit(self.path).path, urlsplit(self.path).query
        body = self._body()
        with hub.lock:
            hub.requests.append((method, path))
            hub.headers_seen.append(dict(self.headers.items()))
            count = len(hub.requests)
            fault = next((f for f in hub.faults if f.method == method and f.path.search(path)
                          and (f.times is None or f.hits < f.times)), None)
            if fault is not None:
                fault.hits += 1
        if count > hub.max_requests:
            self._error(400, "request limit of the fake Hub reached")
            return
        if fault is not None and fault.action == "slow":  # this answer only, not the next
            plain, self.wfile = self.wfile, cast(BufferedIOBase, _Slow(self.wfile))
            try:
                with hub.lock:
                    self._route(method, path, body)
            finally:
                self.wfile = plain
            return
        if fault is not None:
            if fault.action == "hang":
                hub.stopping.wait(HANG)
                self.close_connection = True
                return
            if fault.action == "drop":
                self.close_connection = True
                return
            if fault.action == "html":
                self._page()
                return
            if fault.action in OTHER_JSON:  # JSON, but not the shape the Hub answers with
                self._send(200, OTHER_JSON[str(fault.action)])
                return
            if fault.action == "trickle":
                self._trickle()
                return
            if fault.action == "short":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(2**20))
                self.end_headers()
                self.wfile.write(b"\0" * 64)
                self.close_connection = True
                return
            self._error(int(fault.action), f"injected failure {fault.action}")
            return
        with hub.lock:
            self._route(method, path, body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    # --- the endpoints ----------------------------------------------------------------------

    def _route(self, method: str, path: str, body: bytes) -> None:
        hub = self.hub
        if method == "PUT" and (m := re.fullmatch(r"/lfs/(?P<oid>[0-9a-f]{64})", path)):
            self._lfs_put(m["oid"], body)
            return
        read = re.fullmatch(rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?|"
                            rf"/{REPO.replace('repo', 'file_repo')}/resolve/(?P<file_rev>[^/]+)"
                            r"/(?P<file>.+)", path)
        if read and method in ("GET", "HEAD"):
            repo_id = read["repo"] or read["file_repo"]
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                # as the Hub: 401 without a token, 404 with one, both coded RepoNotFound
                self._error(404 if self._authorized() else 401, "Repository not found",
                            "RepoNotFound")
                return
            if (read["rev"] or read["file_rev"] or "main") not in ("main", repo.head):
                self._error(404, "Revision Not Found", "RevisionNotFound")
            elif read["file"] is not None:
                self._file(repo, read["file"], method == "HEAD")
            else:
                self._info(repo_id, body)
            return
        if not self._authorized():
            self._error(401, "Invalid credentials in Authorization header")
            return
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/models/{REPO}(?:/revision/[^/]+)?", self._info),
            ("POST", rf"/api/models/{REPO}/preupload/[^/]+", self._preupload),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self._batch),
            ("POST", rf"/api/models/{REPO}/commit/[^/]+", self._commit),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                handler(match.groupdict().get("repo"), body)
                return
        hub.unknown.append((method, path))
        self._error(404, f"fake Hub has no {method} {path}")

    def _repo(self, repo_id: str | None, write: bool) -> Repo | None:
        """The repo if this user may read (or write) it; else an error was sent."""
        repo = self.hub.repos.get(repo_id or "")
        if repo is None or (repo.private and not self.hub.can_read(repo.owner)):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if write and not self.hub.can_write(repo.owner):
            self._error(403, f"You don't have write access to {repo_id}")
            return None
        return repo

    def _whoami(self, _: str | None, __: bytes) -> None:
        self._send(200, self.hub.whoami())

    def _create(self, _: str | None, body: bytes) -> None:
        hub = self.hub
        payload = json.loads(body)
        namespace = payload.get("organization") or hub.user
        repo_id = f"{namespace}/{payload['name']}"
        if not hub.can_write(namespace):
            self._error(403, f"You don't have the rights to create a model under {namespace}")
            return
        if repo_id in hub.repos:
            self._send(409, {"error": "You already created this model repo",
                             "url": f"{hub.url}/{repo_id}"},
                       {"X-Error-Message": "You already created this model repo"})
            return
        private = payload.get("private", payload.get("visibility") == "private")
        hub.add_repo(repo_id, namespace, private=bool(private))
        self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, _: str | None, body: bytes) -> None:
        content = json.loads(body)["content"]
        if not content.startswith("---\n") or "\n---\n" not in content[4:]:
            self._send(400, {"errors": [{"message": "no metadata block"}]})
            return
        self._send(200, {"errors": [], "warnings": []})

    def _info(self, repo_id: str | None, _: bytes) -> None:
        repo = self._repo(repo_id, write=False)
        blobs = "blobs=true" in self.query.lower().split("&")
        if repo is not None:
            self._send(200, {"id": repo_id, "modelId": repo_id, "author": repo.owner,
                             "sha": repo.head, "private": repo.private, "xetEnabled": False,
                             "siblings": [repo.sibling(p) if blobs else {"rfilename": p}
                                          for p in sorted(repo.files)]})

    def _file(self, repo: Repo, path: str, head: bool) -> None:
        if path not in repo.files:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        data = repo.files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", repo.head)
        self.send_header("ETag", f'"{repo.oid(path)}"')
        if path in repo.lfs:
            self.send_header("X-Linked-Etag", f'"{repo.oid(path)}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _preupload(self, repo_id: str | None, body: bytes) -> None:
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        files = []
        for item in json.loads(body)["files"]:
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES) or item["size"] > 10 * 2**20
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False,
                          "oid": repo.oid(path) if path in repo.files else None})
        self._send(200, {"files": files, "commitOid": repo.head})

    def _batch(self, repo_id: str | None, body: bytes) -> None:
        if self._repo(repo_id, write=True) is None:
            return
        hub = self.hub
        objects = []
        for item in json.loads(body)["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"],
                                     "authenticated": True}
            if hub.lfs_refusal is not None:
                entry["error"] = {"code": 422, "message": hub.lfs_refusal}
            elif item["oid"] not in hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{hub.url}/lfs/{item['oid']}",
                                               "header": {}}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, "sha256 of the uploaded object does not match its oid")
            return
        self.hub.lfs_objects[oid] = body
        self._send(200, {})

    def _commit(self, repo_id: str | None, body: bytes) -> None:
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        if self.hub.interleaved:
            self.hub.interleaved.pop(0)(repo)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        parent = next((line["value"].get("parentCommit") for line in lines
                       if line["key"] == "header"), None)
        if parent is not None and parent != repo.head:
            self._error(412, "A commit has happened since. Please refresh and try again.")
            return
        summary = description = ""
        files = dict(repo.files)
        lfs = set(repo.lfs)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary, description = value["summary"], value.get("description") or ""
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    self._error(400, f"LFS object {value['oid']} was never uploaded")
                    return
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                    return
                del files[value["path"]]
                lfs.discard(value["path"])
            else:
                self._error(400, f"unsupported commit operation {key}")
                return
        repo.files, repo.lfs = files, lfs
        oid = repo.commit(summary, description)
        self._send(200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}",
                         "commitOid": oid, "pullRequestUrl": None, "success": True})


TOKEN = "hf_TeStToKeN4d0n0tL3ak9f8e7d6c5b4a3"
"""The token the fake Hub accepts; tests check it never leaks."""


class _NoSleep:
    """huggingface_hub's `time` module with instant sleeps: its retries stay, the waits go."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub; no token or endpoint leaks in from the environment."""
    import huggingface_hub.constants
    import huggingface_hub.utils._http

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH",
                        str(tmp_path / "hf-home" / "token"))
    # Xet storage needs its own CAS service; the fake Hub speaks the LFS protocol.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.utils._http, "time", _NoSleep())
    server = FakeHub(TOKEN).start()
    try:
        yield server
    finally:
        server.stop()
