"""`push`: publish a training run's LoRA to the Hugging Face Hub with a model card.

Flow: run folder -> plan (the files and their place in the repo, the card rendered from
`templates/model_card.md` through huggingface_hub's ModelCard/ModelCardData) -> whoami ->
create_repo(exist_ok) -> one create_commit. Nothing is staged on disk: the final LoRA (and with
`all_checkpoints` the epoch saves) and sample images are sent from where they lie, the card and
the redacted config files and run record from memory, so a failure leaves nothing half-written
locally. Unchanged files are skipped by the client, so pushing the same run twice makes no new
commit. The token (argument, HF_TOKEN or the stored login) is only ever handed to HfApi.
Each push uploads its list of files (contents.PUSHED); the next deletes, in its commit, only
files of the folders push owns that an earlier push listed and it no longer uploads.

The parts: `contents` (what is sent, and the privacy scan), `card` (the model card),
`failures` (Hub errors as one line); this module uploads and notes the push in the run record.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya import __version__, locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.card import DEFAULT_LICENSE
from medsynth_kohya.hub.contents import (
    PUSHED,
    check_repo_id,
    plan,
    read_pushed,
    refuse_findings,
)
from medsynth_kohya.hub.failures import NO_TOKEN, hub_errors
from medsynth_kohya.sampling.machines import ensure_made
from medsynth_kohya.training.record import RunFolder

if TYPE_CHECKING:
    from huggingface_hub import HfApi, ModelInfo

DEFAULT_ENDPOINT = "https://huggingface.co"
MANAGED = ("checkpoints/", "samples/", "training/", "evaluation/")
"""Repo folders that `push` owns: a file there that an earlier push uploaded (its PUSHED list)
and this push lacks is deleted; any other file there stays."""
SHOWN = 5
"""Kept files named in the warning (then a count)."""


@dataclass(frozen=True)
class Removals:
    """What a push deletes from the repo, and the files of its folders it leaves alone."""

    delete: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    """Files under MANAGED that no earlier push listed (the user's, another tool's, or pushed
    by a version of medsynth-kohya that kept no list)."""

    def warning(self, repo_id: str) -> str | None:
        """One line naming the kept files, or None when there are none."""
        if not self.kept:
            return None
        more = f" and {len(self.kept) - SHOWN} more" if len(self.kept) > SHOWN else ""
        return (f"left {len(self.kept)} file(s) in {repo_id} that no earlier push of "
                f"medsynth-kohya listed in {PUSHED}: {', '.join(self.kept[:SHOWN])}{more}; "
                "delete them on the Hub if they should go")


def removals(on_hub: Iterable[str], pushed: Collection[str], wanted: Collection[str],
             ) -> Removals:
    """Files under MANAGED that this push does not upload: deleted when the repo's PUSHED list
    (`pushed`) names them, kept otherwise, so nothing the tool did not upload is lost."""
    left = sorted(path for path in on_hub if path.startswith(MANAGED) and path not in wanted)
    return Removals(tuple(path for path in left if path in pushed),
                    tuple(path for path in left if path not in pushed))


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
    commit: str | None = None
    """The repo's head commit after the push (None in a dry run)."""
    changed: bool = False
    """True when the push made a new commit; False when the Hub already had these files."""
    deleted: tuple[str, ...] = ()
    """Files the push deleted from the repo (in a dry run: would delete)."""
    listed: bool = False
    """In a dry run: whether the repo was read, so `deleted` is exactly what a push deletes."""
    user: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    scanned: int = 0
    """Bytes the last scan searched (all of them) before anything was sent."""


def resolve_endpoint(endpoint: str | None) -> str:
    """The Hub URL: the argument, else HF_ENDPOINT read now (not at import), else the public Hub."""
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if not chosen.startswith(("http://", "https://")):
        raise UserError(f"--endpoint {chosen!r} must be an http:// or https:// URL")
    return chosen.rstrip("/")


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


def push(run_dir: Path, repo_id: str, *, private: bool = True, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, dry_run: bool = False, samples: Path | None = None,
         endpoint: str | None = None, token: str | None = None,
         break_lock: bool = False, evaluation: Path | None = None,
         allow_copies: bool = False) -> PushResult:
    """Upload a run's LoRA, configs, record, samples and model card to `repo_id` in one commit.

    The token is `token`, else HF_TOKEN, else the stored login (`hf auth login`). A dry run
    renders everything and sends nothing. Pushing unchanged files makes no new commit. A push
    holds the run folder's lock (locks.py) until it has noted itself in run.json, so a run
    still training, or pushed by another process, is refused, and so is a `samples` set that
    `sample` is still making. `evaluation` (an `evaluate`
    report folder) adds its figures to the card and its files under evaluation/; sample images
    flagged as near-copies are refused unless `allow_copies`.
    """
    def run() -> PushResult:
        return _push(run_dir, repo_id, private=private, license=license,
                     all_checkpoints=all_checkpoints, dry_run=dry_run, samples=samples,
                     endpoint=endpoint, token=token, evaluation=evaluation,
                     allow_copies=allow_copies)

    if samples is not None:  # a set still being made would be published half made
        ensure_made(samples, "push", break_lock=break_lock)
    if dry_run:
        locks.ensure_idle(run_dir, "push", break_lock=break_lock)
        return run()
    with locks.hold(run_dir, "push", break_lock=break_lock) as lock:
        result = run()
    return result if lock.note is None else replace(result, warnings=(lock.note,
                                                                       *result.warnings))


def _push(run_dir: Path, repo_id: str, *, private: bool, license: str, all_checkpoints: bool,
          dry_run: bool, samples: Path | None, endpoint: str | None,
          token: str | None, evaluation: Path | None, allow_copies: bool) -> PushResult:
    repo_id = check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    from huggingface_hub import get_token

    token = token or get_token()
    planned = plan(run_dir, repo_id, license=license, all_checkpoints=all_checkpoints,
                   samples=samples, token=token, evaluation=evaluation,
                   allow_copies=allow_copies)
    refuse_findings(planned)
    secrets = planned.secrets
    url = f"{endpoint}/{repo_id}"
    files = tuple((u.path_in_repo, u.size) for u in planned.uploads)
    scanned = sum(size for _, size in files)
    result = PushResult(repo_id, url, files, planned.card, dry_run=dry_run, private=private,
                        warnings=planned.warnings, scanned=scanned)
    wanted = {u.path_in_repo for u in planned.uploads}
    if dry_run:
        if not token:
            return replace(result, warnings=(
                *planned.warnings, f"a real push needs a token; {NO_TOKEN}; without one the "
                "dry run cannot list what the push would delete from the repo"))
        return _preview(result, endpoint, token, wanted, secrets)
    if not token:
        raise UserError(NO_TOKEN)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    warnings = list(planned.warnings)
    with hub_errors(repo_id, endpoint, secrets):
        api = _api(endpoint, token)
        user = str(api.whoami().get("name") or "")
        api.create_repo(repo_id, private=private, exist_ok=True)
        before = api.model_info(repo_id)
        if before.private is not None and bool(before.private) != private:
            warnings.append(f"{repo_id} already exists and is "
                            f"{'private' if before.private else 'public'}; push does not "
                            "change the visibility (do it in the repo's settings on the Hub)")
        gone = _removals(api, before, wanted)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=u.path_in_repo,
                               path_or_fileobj=u.source if isinstance(u.source, bytes)
                               else str(u.source))
            for u in planned.uploads]
        operations += [CommitOperationDelete(path_in_repo=path) for path in gone.delete]
        with _default_endpoint(endpoint):
            info = api.create_commit(
                repo_id, operations, commit_message="Push a medsynth-kohya training run",
                commit_description=f"Pushed by medsynth-kohya {__version__}.")
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
    return replace(result, commit=commit, changed=changed,
                   deleted=gone.delete if changed else (), user=user or None,
                   warnings=tuple(warnings))


def _api(endpoint: str, token: str) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="medsynth-kohya",
                 library_version=__version__)


def _removals(api: HfApi, info: ModelInfo, wanted: Collection[str]) -> Removals:
    """What a push of `wanted` deletes from the repo as `info` shows it, judged by the repo's
    PUSHED list (read into a temporary folder, so nothing lands in the Hub cache). Not under
    _default_endpoint: hf_hub_url moves only URLs of the import-time endpoint to `endpoint`."""
    from huggingface_hub import hf_hub_download

    names = [sibling.rfilename for sibling in info.siblings or []]
    pushed: frozenset[str] = frozenset()
    if PUSHED in names:
        with tempfile.TemporaryDirectory(prefix="medsynth-push-") as folder:
            path = hf_hub_download(info.id, PUSHED, revision=info.sha, local_dir=folder,
                                   endpoint=api.endpoint, token=api.token)
            pushed = read_pushed(Path(path).read_bytes())
    return removals(names, pushed, wanted)


def _preview(result: PushResult, endpoint: str, token: str, wanted: Collection[str],
             secrets: Sequence[str]) -> PushResult:
    """A dry run's list of what the push would delete: the repo is read, never written; when it
    cannot be read, a warning says what the push would delete is unknown."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        with hub_errors(result.repo_id, endpoint, secrets):
            api = _api(endpoint, token)
            try:
                info = api.model_info(result.repo_id)
            except RepositoryNotFoundError:
                return replace(result, listed=True)
            gone = _removals(api, info, wanted)
    except UserError as exc:
        return replace(result, warnings=(
            *result.warnings, f"could not read {result.repo_id} to list what the push would "
            f"delete from it: {exc}"))
    kept = gone.warning(result.repo_id)
    return replace(result, deleted=gone.delete, listed=True,
                   warnings=(*result.warnings, *([kept] if kept else [])))
