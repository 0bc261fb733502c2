"""`push`: publish a training run's LoRA to the Hugging Face Hub with a model card.

Flow: run folder -> plan (the files and their place in the repo, the card rendered from
`templates/model_card.md` through huggingface_hub's ModelCard/ModelCardData) -> whoami (access:
a rejected or read-only token, or another's namespace, is refused before anything is sent; a
dry run with a token asks too) -> create_repo(exist_ok) -> one create_commit. Nothing is staged
on disk: the final LoRA (and with `all_checkpoints` the epoch saves) and sample images are sent
from where they lie, the card and the redacted config files and run record from memory, so a
failure leaves nothing half-written locally. Unchanged files are skipped by the client, so
pushing the same run twice makes no new commit. The token (argument, HF_TOKEN or the stored
login) is only ever handed to HfApi.
Each push uploads its list of files with their digests (contents.PUSHED); the next deletes, in
its commit, only files of the folders push owns that an earlier push listed, the Hub still holds
as that push sent them, and it no longer uploads; it replaces a file the Hub holds in another
version than an earlier push sent (the user's, another model's, edited on the Hub) only with
`force`. The commit names the head it was computed from (parent_commit): when another push or
edit lands in between, the Hub refuses it (412) and the push reads the repo again and
recomputes, ATTEMPTS times in all. While it talks to the Hub,
huggingface_hub's log says only errors, its progress bars are off when stderr is no
terminal (they would leave their frames in a log), and each request's wait is bounded
(`timeouts`).

The parts: `contents` (what is sent, and the privacy scan), `card` (the model card),
`access` (whoami), `failures` (Hub errors as one line); this module uploads and notes the push
in the run record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from medsynth_kohya import __version__, arguments, files, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.access import Unanswered, hub_api, writer
from medsynth_kohya.hub.card import DEFAULT_LICENSE
from medsynth_kohya.hub.contents import (
    PUSHED,
    check_repo_id,
    plan,
    read_pushed,
    refuse_findings,
)
from medsynth_kohya.hub.failures import DEFAULT_ENDPOINT, hub_errors, no_token
from medsynth_kohya.hub.timeouts import bounded
from medsynth_kohya.sampling.machines import ensure_made
from medsynth_kohya.training.record import RunFolder

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi, ModelInfo

    from medsynth_kohya.hub.contents import Upload

MANAGED = ("checkpoints/", "samples/", "training/", "evaluation/")
"""Repo folders that `push` owns: a file there that an earlier push uploaded (its PUSHED list),
unchanged on the Hub since, and this push lacks is deleted; any other file there stays. So is a
top-level .safetensors (the LoRA, named by the run's output_name): see `managed`."""
SHOWN = 5
"""Kept files of each kind named in the warning (then a count)."""
TOOL_CARD = re.compile(r"\bby medsynth-kohya \d")
"""The line of templates/model_card.md that tells a card rendered by push."""
ATTEMPTS = 3
"""Commits tried when other commits keep landing between the push's read and its commit."""


@dataclass(frozen=True)
class Removals:
    """What a push deletes from the repo, and the files of its folders it leaves alone."""

    delete: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    """Files of the kinds push uploads (`managed`) that no earlier push listed (the user's,
    another tool's, or pushed by a version of medsynth-kohya that kept no list)."""
    edited: tuple[str, ...] = ()
    """Files an earlier push listed whose version on the Hub is not the one it sent (replaced
    by the user on the Hub since)."""
    replaced: tuple[str, ...] = ()
    """Files the push uploads over another version on the Hub that no earlier push sent."""

    def warning(self, repo_id: str) -> str | None:
        """One line naming the kept files and why each was kept, or None when there are none."""
        kinds = [f"{len(paths)} {why} ({_named(paths)})" for paths, why in (
            (self.kept, f"that no earlier push of medsynth-kohya listed in {PUSHED}"),
            (self.edited, "edited on the Hub since medsynth-kohya pushed them")) if paths]
        if not kinds:
            return None
        return (f"left {files.counted(len(self.kept) + len(self.edited))} in {repo_id}: "
                f"{' and '.join(kinds)}; delete them on the Hub if they should go")

    def refusal(self, repo_id: str) -> str:
        """One line saying which files only --force replaces, and why."""
        return (f"{repo_id} holds {files.counted(len(self.replaced))} that this push would "
                f"replace ({_named(self.replaced)}) in another version than medsynth-kohya "
                "pushed: put there by hand or another tool, or edited on the Hub since; keep a "
                "copy of what you need, then run `medsynth-kohya push` again with --force to "
                "replace them (the repo's history keeps the old versions)")


class ReplaceRefused(UserError):
    """push's refusal to replace files of the repo that it did not send (`replaced`), so a
    caller (reproduce) can word its own way past it without asking the Hub again."""

    def __init__(self, message: str, replaced: tuple[str, ...]) -> None:
        super().__init__(message)
        self.replaced = replaced


def _named(paths: Sequence[str]) -> str:
    """The first SHOWN paths, then how many more."""
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def managed(path: str) -> bool:
    """Whether a repo path is of a kind `push` uploads and so may delete: under MANAGED, or a
    top-level LoRA (a run of another output_name left beside the new one would be the model
    `sample --lora USER/REPO` finds ambiguous, and the card describes only the new one)."""
    return path.startswith(MANAGED) or ("/" not in path and path.endswith(".safetensors"))


def removals(on_hub: Mapping[str, str | None], pushed: Mapping[str, frozenset[str] | None],
             wanted: Collection[str],
             sending: Mapping[str, frozenset[str] | None] | None = None) -> Removals:
    """Files of the kinds push uploads (`managed`) that this push does not upload: deleted when
    the repo's PUSHED list
    (`pushed`: path -> digests it recorded, None in an older list) names them and the Hub's
    digest of the file (`on_hub`: path -> lfs sha256 or git blob id) is one it recorded; kept
    otherwise, so nothing the tool did not upload, or the user replaced, is lost. With
    `sending` (path -> digests of what this push uploads), the files it would replace that
    are not the tool's in that sense."""
    left = sorted(path for path in on_hub if managed(path) and path not in wanted)
    listed = [path for path in left if path in pushed]
    edited = tuple(path for path in listed
                   if (recorded := pushed[path]) is not None and on_hub[path] not in recorded)
    replaced = tuple(sorted(
        path for path, mine in (sending or {}).items()
        if path in on_hub and path != PUSHED and mine is not None and on_hub[path] not in mine
        and (path not in pushed or ((recorded := pushed[path]) is not None
                                    and on_hub[path] not in recorded))))
    return Removals(tuple(path for path in listed if path not in edited),
                    tuple(path for path in left if path not in pushed), edited, replaced)


@dataclass(frozen=True)
class PushResult:
    """What `push` sent (or, in a dry run, would send) and where it landed."""

    repo_id: str
    url: str
    files: tuple[tuple[str, int], ...]
    """(path in the repo, size in bytes), README.md first."""
    card: str
    dry_run: bool
    private: bool
    """The repo's visibility: an existing repo's own, which push keeps (in a dry run, when
    `exists`); else the one asked for."""
    commit: str | None = None
    """The repo's head commit after the push (None in a dry run)."""
    changed: bool = False
    """True when the push made a new commit; False when the Hub already had these files."""
    deleted: tuple[str, ...] = ()
    """Files the push deleted from the repo (in a dry run: would delete)."""
    replaced: tuple[str, ...] = ()
    """Files of another version than an earlier push sent that the push replaced (--force; in a
    dry run: would replace)."""
    listed: bool = False
    """In a dry run: whether the repo was read, so `deleted` is exactly what a push deletes."""
    exists: bool = False
    """In a dry run: the repo was read and exists; `private` is then its visibility, kept."""
    user: str | None = None
    """The account the token belongs to, as the Hub said (None: no token, or not asked)."""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    scanned: int = 0
    """Bytes the last scan searched (all of them) before anything was sent."""


def resolve_endpoint(endpoint: str | None) -> str:
    """The Hub URL: the argument, else HF_ENDPOINT read now (not at import), else the public Hub;
    a UserError for one that names no server or holds credentials (not echoed)."""
    chosen = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT) if endpoint is None else endpoint
    given = "--endpoint" if endpoint is not None else "HF_ENDPOINT"
    if not chosen.startswith(("http://", "https://")):
        raise UserError(f"{given} {chosen!r} must be an http:// or https:// URL")
    authority = re.split(r"[/?#]", chosen.partition("://")[2], maxsplit=1)[0]
    if "@" in authority:  # never echoed: the part before @ may be a password
        shown = chosen.replace(authority, f"…@{authority.rpartition('@')[2]}", 1)
        raise UserError(f"{given} {shown!r} holds a user name or password before its host: the "
                        "Hub takes the token alone (HF_TOKEN or `hf auth login`); remove them "
                        "from the URL")
    problem = _url_problem(chosen)
    if problem:
        raise UserError(f"{given} {chosen!r} is not a URL the Hub can be reached at ({problem}); "
                        f"give one such as {DEFAULT_ENDPOINT}")
    return chosen.rstrip("/")


def _url_problem(url: str) -> str | None:
    """What keeps `url` from naming a server (no host, a bad port, a space, a query or
    fragment), else None: the client would fail on it with its own traceback, take it for a lost
    connection, or put its API paths after the query or fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if not parts.hostname:
        return "no host"
    if any(char.isspace() for char in url):
        return "it holds a space"
    if "?" in url or "#" in url:
        return "a query or fragment: remove the part from its ? or #"
    return None if port is None or 0 < port < 65536 else f"port {port} is out of range"


@contextmanager
def hub_client() -> Iterator[None]:
    """huggingface_hub set up for one command's requests, all restored after: each request's
    wait bounded (timeouts.bounded), its log at ERROR and, when stderr is no terminal, its
    progress bars off (their carriage returns and cursor-up escapes would stay in a log), unless
    the user's HF_HUB_DISABLE_PROGRESS_BARS=0 asks for them. Its logging module is imported
    first: importing it sets the log's level, which would undo ours when a client call imports
    it later."""
    import huggingface_hub.utils.logging  # noqa: F401
    from huggingface_hub import constants
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    forced = constants.HF_HUB_DISABLE_PROGRESS_BARS is False  # HF_HUB_DISABLE_PROGRESS_BARS=0
    bars = not (forced or are_progress_bars_disabled() or sys.stderr.isatty())
    with bounded():
        logger.setLevel(max(level, logging.ERROR))
        if bars:
            disable_progress_bars()
        try:
            yield
        finally:
            logger.setLevel(level)
            if bars:
                enable_progress_bars()


@contextmanager
def _default_endpoint(endpoint: str) -> Iterator[None]:
    """Make `endpoint` huggingface_hub's default for the push.

    huggingface_hub reads HF_ENDPOINT once, at import, and 0.x builds the CommitInfo that
    create_commit returns from that default, not from HfApi(endpoint=...): against any other
    endpoint the commit succeeds and then fails to parse its own URL.
    """
    from huggingface_hub import constants

    saved = constants.ENDPOINT
    constants.ENDPOINT = endpoint
    try:
        yield
    finally:
        constants.ENDPOINT = saved


@arguments.checked
def push(run_dir: arguments.PathArg, repo_id: str, *, private: bool = True,
         license: str = DEFAULT_LICENSE, all_checkpoints: bool = False, dry_run: bool = False,
         samples: arguments.PathArg | None = None, endpoint: str | None = None,
         token: str | None = None, break_lock: bool = False,
         evaluation: arguments.PathArg | None = None, allow_copies: bool = False,
         option: str = "--repo-id", force: bool = False,
         base_model: str | None = None) -> PushResult:
    """Upload a run's LoRA, configs, record, samples and model card to `repo_id` in one commit.

    The token is `token`, else HF_TOKEN, else the stored login (`hf auth login`). A dry run
    renders everything and sends nothing. Pushing unchanged files makes no new commit. A push
    holds the run folder's lock (locks.py) until it has noted itself in run.json, so a run
    still training, or pushed by another process, is refused, and so is a `samples` set that
    `sample` is still making. `evaluation` (an `evaluate`
    report folder) adds its figures to the card and its files under evaluation/; sample images
    flagged as near-copies are refused unless `allow_copies`. A file the repo holds in another
    version than an earlier push sent is replaced only with `force`. `option` names `repo_id`
    in messages (reproduce's is --push). `base_model` is the Hub id of a local checkpoint the
    run trained on, which the card names.
    """
    run_dir, samples = arguments.path(run_dir, "run_dir"), arguments.optional_path(samples,
                                                                                   "samples")
    evaluation = arguments.optional_path(evaluation, "evaluation")

    def run() -> PushResult:
        return _push(run_dir, repo_id, private=private, license=license,
                     all_checkpoints=all_checkpoints, dry_run=dry_run, samples=samples,
                     endpoint=endpoint, token=token, evaluation=evaluation,
                     allow_copies=allow_copies, option=option, force=force,
                     base_model=base_model)

    prepared = _prepared_of(run_dir)
    # each folder read is marked before it is checked: a sample or prepare starting in between
    # finds the mark and refuses, instead of changing files the push is sending
    with contextlib.ExitStack() as marks:
        if samples is not None:  # a set still being made would be published half made
            marks.enter_context(locks.reading(samples, "push"))
            ensure_made(samples, "push", "--samples", break_lock=break_lock)
        if prepared is not None:  # the card's data table reads its manifest
            marks.enter_context(locks.reading(prepared, "push"))
            locks.ensure_idle(prepared, "push", writers=("prepare",), break_lock=break_lock)
        if dry_run:
            locks.ensure_idle(run_dir, "push", break_lock=break_lock)
            return run()
        with locks.hold(run_dir, "push", break_lock=break_lock) as lock:
            result = run()
    return result if lock.note is None else replace(result, warnings=(lock.note,
                                                                       *result.warnings))


def _prepared_of(run_dir: Path) -> Path | None:
    """The prepared folder the run trained on, if its record says (plan refuses a bad one)."""
    try:
        return RunFolder(run_dir).load().prepared
    except (OSError, ValueError):
        return None


def _push(run_dir: Path, repo_id: str, *, private: bool, license: str, all_checkpoints: bool,
          dry_run: bool, samples: Path | None, endpoint: str | None,
          token: str | None, evaluation: Path | None, allow_copies: bool, option: str,
          force: bool, base_model: str | None) -> PushResult:
    repo_id = check_repo_id(repo_id, option)
    endpoint = resolve_endpoint(endpoint)
    from medsynth_kohya.hub.access import read_token

    token = token or read_token()
    planned = plan(run_dir, repo_id, license=license, all_checkpoints=all_checkpoints,
                   samples=samples, token=token, evaluation=evaluation,
                   allow_copies=allow_copies, base=base_model)
    refuse_findings(planned, run_dir)
    secrets = planned.secrets
    url = f"{endpoint}/{repo_id}"
    files = tuple((u.path_in_repo, u.size) for u in planned.uploads)
    scanned = sum(size for _, size in files)
    result = PushResult(repo_id, url, files, planned.card, dry_run=dry_run, private=private,
                        warnings=planned.warnings, scanned=scanned)
    wanted = _sent(planned.uploads)
    if dry_run:
        if not token:
            return replace(result, warnings=(
                *planned.warnings, f"a real push needs a token; {no_token(endpoint)}; without one "
                "the dry run cannot list what the push would delete from the repo"))
        with hub_client():
            return _preview(result, hub_api(endpoint, token), wanted, secrets, option, force)
    if not token:
        raise UserError(no_token(endpoint))

    warnings = list(planned.warnings)
    with hub_client(), hub_errors(repo_id, endpoint, secrets, option=option):
        api = hub_api(endpoint, token)
        user = writer(api, repo_id, option=option, secrets=secrets)
        _create_repo(api, repo_id, private)
        before, gone, info = _commit(api, repo_id, planned.uploads, wanted, force)
    warnings += _visibility_kept(repo_id, before, private)
    kept = gone.warning(repo_id)
    warnings += [kept] if kept else []
    commit = str(info.oid)
    changed = commit != before.sha
    folder = RunFolder(run_dir)
    try:
        folder.add_push({"repo_id": repo_id, "url": url, "commit": commit, "changed": changed,
                         "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    except (OSError, ValueError) as exc:
        warnings.append(f"pushed, but could not note the push in {folder.record_file}: {exc}")
    return replace(result, commit=commit, changed=changed, private=_visibility(before, private),
                   deleted=gone.delete if changed else (),
                   replaced=gone.replaced if changed else (), user=user or None,
                   warnings=tuple(warnings))


def _create_repo(api: HfApi, repo_id: str, private: bool) -> None:
    """Create the repo unless it exists. huggingface_hub takes the repo's URL from the answer
    unchecked: one without it (from a proxy; the Hub sends it always) is a KeyError after the
    status said the repo exists (409) or was made, so it is passed over; the read of the repo
    that follows says, in one line, when it is not there."""
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
    except KeyError as exc:
        if exc.args != ("url",):
            raise


def _sent(uploads: Sequence[Upload]) -> dict[str, frozenset[str] | None]:
    """Every path a push uploads, with the digests of what it sends there (from its PUSHED
    list, which holds them already)."""
    listed = next((u.source for u in uploads if u.path_in_repo == PUSHED), b"")
    digests = read_pushed(listed) if isinstance(listed, bytes) else {}
    return {u.path_in_repo: digests.get(u.path_in_repo) for u in uploads}


def _commit(api: HfApi, repo_id: str, uploads: Sequence[Upload],
            wanted: Mapping[str, frozenset[str] | None], force: bool,
            ) -> tuple[ModelInfo, Removals, CommitInfo]:
    """Read the repo, then commit `uploads` and the deletions judged from that read on top of
    the commit read (parent_commit); when another commit lands in between (412), read again and
    recompute, ATTEMPTS times in all, so no deletion or replacement rests on a stale view of
    the repo. A file not the tool's that the commit would replace is refused without `force`."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(ATTEMPTS):
        before = api.model_info(repo_id, files_metadata=True)
        gone = _removals(api, before, wanted)
        if gone.replaced and not force:
            raise ReplaceRefused(gone.refusal(repo_id), gone.replaced)
        # fresh operations each try: create_commit marks them committed and keeps upload state
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=u.path_in_repo,
                               path_or_fileobj=u.source if isinstance(u.source, bytes)
                               else str(u.source))
            for u in uploads]
        operations += [CommitOperationDelete(path_in_repo=path) for path in gone.delete]
        try:
            with _default_endpoint(api.endpoint):
                info = api.create_commit(
                    repo_id, operations, commit_message="Push a medsynth-kohya training run",
                    commit_description=f"Pushed by medsynth-kohya {__version__}.",
                    parent_commit=before.sha)
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) != 412:
                raise
            continue
        return before, gone, info
    raise UserError(f"another push changed {repo_id} while this one ran ({ATTEMPTS} tries); "
                    "nothing was committed: run the same command again")


def _removals(api: HfApi, info: ModelInfo,
              wanted: Mapping[str, frozenset[str] | None]) -> Removals:
    """What a push of `wanted` (path -> digests of what it sends) deletes from the repo as
    `info` (read with files_metadata) shows it, and replaces there, judged by the repo's
    PUSHED list. A repo without a readable list whose card is the tool's was pushed by an older
    medsynth-kohya: its files are the tool's to replace (never to delete). Files are read into a
    temporary folder, so nothing lands in the Hub cache; not under _default_endpoint:
    hf_hub_url moves only URLs of the import-time endpoint to `endpoint`."""
    from huggingface_hub import hf_hub_download

    on_hub = {sibling.rfilename: sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
              for sibling in info.siblings or []}

    def read(filename: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="medsynth-push-") as folder:
            return Path(hf_hub_download(info.id, filename, revision=info.sha, local_dir=folder,
                                        endpoint=api.endpoint, token=api.token)).read_bytes()

    pushed = read_pushed(read(PUSHED)) if PUSHED in on_hub else {}
    gone = removals(on_hub, pushed, wanted, wanted)
    if gone.replaced and not pushed and "README.md" in on_hub and TOOL_CARD.search(
            read("README.md").decode("utf-8", "replace")):
        return replace(gone, replaced=())
    return gone


def replaced_before(repo_id: str, paths: Collection[str], *, endpoint: str, token: str,
                    option: str, force: bool) -> tuple[str, ...]:
    """The files of `repo_id` at `paths` that a push would replace though no earlier push sent
    them (any version counts: the push's own files do not exist yet), read from the Hub and
    never written, for a check before the push's files are made (reproduce); ReplaceRefused
    for them without `force`, as the push would. A repo not yet made holds none; a Hub that
    cannot be read is a one-line UserError."""
    from huggingface_hub.errors import RepositoryNotFoundError

    api = hub_api(endpoint, token)
    with hub_client(), hub_errors(repo_id, endpoint, (token,),
                                  during="a read of the repository", option=option):
        try:
            info = api.model_info(repo_id, files_metadata=True)
        except RepositoryNotFoundError:
            return ()
        gone = _removals(api, info, dict.fromkeys(paths, frozenset()))
    if gone.replaced and not force:
        raise ReplaceRefused(gone.refusal(repo_id), gone.replaced)
    return gone.replaced


def _preview(result: PushResult, api: HfApi, wanted: Mapping[str, frozenset[str] | None],
             secrets: Sequence[str], option: str, force: bool) -> PushResult:
    """A dry run's check of the token (refused as the push would refuse it) and list of what
    the push would delete and replace (a warning when it would refuse to): the repo is read,
    never written; when the Hub cannot be asked or
    the repo cannot be read, a warning says what the push would delete is unknown."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        user = writer(api, result.repo_id, option=option, secrets=secrets)
    except Unanswered as exc:
        return _unlisted(result, exc)
    result = replace(result, user=user or None)
    try:
        with hub_errors(result.repo_id, api.endpoint, secrets, during="a read of the repository",
                        option=option):
            try:
                info = api.model_info(result.repo_id, files_metadata=True)
            except RepositoryNotFoundError:
                return replace(result, listed=True)
            gone = _removals(api, info, wanted)
    except UserError as exc:
        return _unlisted(result, exc)
    kept = gone.warning(result.repo_id)
    refused = ([f"the push will be refused: {gone.refusal(result.repo_id)}"]
               if gone.replaced and not force else [])
    return replace(result, deleted=gone.delete, replaced=gone.replaced, listed=True,
                   exists=True,
                   private=_visibility(info, result.private),
                   warnings=(*result.warnings, *_visibility_kept(result.repo_id, info,
                                                                 result.private),
                             *([kept] if kept else []), *refused))


def _visibility(info: ModelInfo, asked: bool) -> bool:
    """Whether the repo `info` is private: its own visibility, which a push keeps, where the
    Hub says it."""
    return bool(info.private) if info.private is not None else asked


def _visibility_kept(repo_id: str, info: ModelInfo, private: bool) -> list[str]:
    """The warning that the existing repo `info` keeps a visibility other than the one asked."""
    if info.private is None or bool(info.private) == private:
        return []
    return [f"{repo_id} already exists and is {'private' if info.private else 'public'}; push "
            "does not change the visibility (do it in the repo's settings on the Hub)"]


def _unlisted(result: PushResult, exc: UserError) -> PushResult:
    """A dry run that could not learn what the push would delete, saying why."""
    return replace(result, warnings=(
        *result.warnings, f"could not read {result.repo_id} to list what the push would "
        f"delete from it: {exc}"))
