"""`sample --lora USER/REPO`: a published LoRA, and the run record pushed with it, through
huggingface_hub's cache.

The base model comes from the pushed record (`training/run.json`), else from the LoRA's own
metadata (`ss_sd_model_name` when it is a Hub id, `ss_base_model_version`), else it is the SDXL
base model, and the notes say which. The record also carries the trigger and caption template,
so prompts match training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.access import read_token
from medsynth_kohya.hub.contents import check_repo_id
from medsynth_kohya.hub.failures import (
    answered_instead,
    chain,
    in_the_way,
    network_errors,
    not_the_hub,
    proxy_login,
    refused_on_the_way,
    timed_out,
    untrusted,
    wait_advice,
)
from medsynth_kohya.hub.push import hub_client, resolve_endpoint
from medsynth_kohya.hub.timeouts import DEADLINE_ENV, DeadlinePassed, deadline, within
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import PUBLISHED_RECORD, RunRecord

_SPEC = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<file>[^:]+\.safetensors))?")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hub_spec(value: str) -> tuple[str, str | None] | None:
    """(repo id, file or None) for `USER/REPO` or `USER/REPO:FILE.safetensors`; else None."""
    match = _SPEC.fullmatch(value)
    return (match["repo"], match["file"]) if match else None


@dataclass(frozen=True)
class HubOrigin:
    """Where a LoRA from the Hub came from, as a synthetic set records it."""

    repo_id: str
    commit: str
    """The full commit sha the file was taken at."""
    path: str
    """The file's path in the repository."""


@dataclass(frozen=True)
class PulledLora:
    """A LoRA file from the Hub cache, what it was trained on, and how that was decided."""

    origin: HubOrigin
    file: Path
    record: RunRecord | None
    base_model: str
    notes: tuple[str, ...]


def lora_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file ({} when there is none or it is unreadable)."""
    metadata = (files.safetensors_header(path) or {}).get("__metadata__")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _read_record(path: Path) -> RunRecord | None:
    """The pushed run record (None when it is not one)."""
    try:
        return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except ValueError:
        return None


def base_model(record: RunRecord | None, metadata: Mapping[str, str]) -> tuple[str, str]:
    """The SDXL model the LoRA was trained on, and a note saying where that came from."""
    named = record.base_model if record else ""
    if named:
        return str(named), f"base model {named}, from the pushed run record ({PUBLISHED_RECORD})"
    model = metadata.get("ss_sd_model_name", "")
    version = metadata.get("ss_base_model_version", "")
    if version and not version.startswith("sdxl"):
        raise UserError(f"the LoRA was trained for {version}, not SDXL; sample generates "
                        "with SDXL (sdxl_gen_img.py)")
    if _HUB_ID.fullmatch(model) and not model.endswith((".safetensors", ".ckpt")):
        return model, f"base model {model}, from the LoRA's metadata (ss_sd_model_name)"
    seen = ", ".join(f"{k} {v!r}" for k, v in (("ss_sd_model_name", model),
                                               ("ss_base_model_version", version)) if v)
    return BASE_MODEL, (f"no run record and no Hub id in the LoRA's metadata "
                        f"({seen or 'none'}): using {BASE_MODEL}; --base-model chooses another")


def _choose(names: list[str], repo_id: str, holder: str) -> str:
    """The repository's one top-level LoRA (push puts the final LoRA there), else its only
    LoRA in a folder; `holder` names where `names` were listed (the repository, or its copy
    in the cache)."""
    top = [name for name in names if "/" not in name and name.endswith(".safetensors")]
    listed = sorted(name for name in names if name.endswith(".safetensors"))
    if len(top) == 1 or len(listed) == 1:
        return (top or listed)[0]
    if not listed:
        raise UserError(f"{holder} holds no .safetensors file: is it a LoRA repository?")
    raise UserError(f"{holder} holds {len(listed)} .safetensors files; choose one as "
                    f"{repo_id}:FILE, e.g. {repo_id}:{listed[0]}")


_COMMIT = re.compile(r"[0-9a-f]{40}")


class _Unreachable(Exception):
    """The Hub could not be asked (HF_HUB_OFFLINE, no connection, a server error): the Hub
    cache answers instead. Its text says why, as the start of a message."""


@contextmanager
def _download_errors(repo_id: str, endpoint: str, revision: str | None,
                     setting: str) -> Iterator[None]:
    """A missing repository, revision or file as one line; a Hub that cannot be asked as
    `_Unreachable`. `setting` names what chose `endpoint`."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        links = list(chain(exc))
        late = next((link for link in links if isinstance(link, DeadlinePassed)), None)
        if late is not None:
            raise UserError(f"the download of {repo_id} from {endpoint} took over "
                            f"{late.seconds:g} s and was stopped: set {DEADLINE_ENV} to more "
                            f"seconds (now {late.seconds:g}) if the network is this slow, then "
                            "run the same command again") from None
        if any(isinstance(link, OfflineModeIsEnabled) for link in links):
            raise _Unreachable("HF_HUB_OFFLINE is set") from None
        waited = timed_out(exc)
        if waited is not None:
            raise _Unreachable(f"{endpoint} did not answer in time ({type(waited).__name__}: "
                               f"{wait_advice(waited)})") from None
        asked = proxy_login(exc, endpoint)
        if asked is not None:
            raise _Unreachable(f"{asked[0]}: {asked[1]}") from None
        certificate = untrusted(exc, setting)
        if certificate is not None:
            raise _Unreachable(f"the TLS certificate of {endpoint} was not accepted "
                               f"({'; '.join(certificate)})") from None
        if any(isinstance(link, network_errors()) for link in links):
            raise _Unreachable(f"cannot reach {endpoint}") from None
        if not_the_hub(exc):
            raise _Unreachable(f"{endpoint} did not answer as the Hugging Face Hub does "
                               f"({answered_instead(endpoint, setting)})") from None
        on_the_way = refused_on_the_way(exc)
        if on_the_way is not None:
            who, fix = in_the_way(endpoint, setting)
            raise _Unreachable(f"{who} (403 with {on_the_way}, not the Hub's error; {fix})"
                               ) from None
        for link in links:
            if isinstance(link, LocalEntryNotFoundError):  # the client found no cached copy
                continue
            if isinstance(link, GatedRepoError):
                raise UserError(f"{repo_id} is gated: accept its terms on the Hub and set "
                                "HF_TOKEN (or `hf auth login`)") from None
            if isinstance(link, RepositoryNotFoundError):
                raise UserError(f"{repo_id} was not found at {endpoint}: check the name, and "
                                "for a private repository set HF_TOKEN (or `hf auth login`)"
                                ) from None
            if isinstance(link, RevisionNotFoundError):
                raise UserError(f"{repo_id} has no revision {revision!r}: check --revision "
                                "(a branch, tag or commit)") from None
            if isinstance(link, EntryNotFoundError):
                raise UserError(f"{repo_id} has no such file: {link}".splitlines()[0]) from None
            if isinstance(link, HfHubHTTPError):
                status = getattr(getattr(link, "response", None), "status_code", "an error")
                if isinstance(status, int) and status >= 500:
                    raise _Unreachable(f"the Hub at {endpoint} answered {status}") from None
                hint = ("set HF_TOKEN to a token that may read it (or `hf auth login`)"
                        if status in (401, 403) else "run the same command again later")
                raise UserError(f"the Hub at {endpoint} answered {status} for {repo_id}; "
                                f"{hint}") from None
        if any(isinstance(link, LocalEntryNotFoundError) for link in links):
            raise _Unreachable(f"cannot reach {endpoint}") from None
        raise


def _snapshot_commit(file: Path, filename: str) -> str | None:
    """The commit of the cache snapshot `file` (`.../snapshots/COMMIT/FILENAME`) lies in."""
    snapshot = file
    for _ in filename.split("/"):
        snapshot = snapshot.parent
    name = snapshot.name
    return name if snapshot.parent.name == "snapshots" and _COMMIT.fullmatch(name) else None


def _download(repo_id: str, wanted: str | None, revision: str | None, endpoint: str,
              token: str | None) -> tuple[HubOrigin, Path, Path | None]:
    """The LoRA file and the pushed record (None when the repository has none), downloaded
    by `revision` (default main), so that the cache keeps refs/REVISION for a run offline."""
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision)
    names = [sibling.rfilename for sibling in info.siblings or []]
    filename = wanted or _choose(names, repo_id, repo_id)
    if filename not in names:
        raise UserError(f"{repo_id} has no {filename}; its .safetensors files: "
                        + (", ".join(n for n in names if n.endswith(".safetensors"))
                           or "none"))
    file = Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint,
                                token=token))
    commit = _snapshot_commit(file, filename) or str(info.sha)  # main may have moved since
    record = (Path(hf_hub_download(repo_id, PUBLISHED_RECORD, revision=commit,
                                   endpoint=endpoint, token=token))
              if PUBLISHED_RECORD in names else None)
    return HubOrigin(repo_id, commit, filename), file, record


def _cached(repo_id: str, revision: str) -> tuple[str | None, dict[str, Path], list[str]]:
    """The commit `revision` (a branch, tag or commit) names in the Hub cache and the files
    cached at it (path in the repository -> file); else None and {}, with the commits the
    cache holds of the repository at all."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except CacheNotFound:
        return None, {}, []
    revisions = [cached for repo in repos if repo.repo_id == repo_id
                 and repo.repo_type == "model" for cached in repo.revisions]
    for cached in revisions:
        if revision in cached.refs or cached.commit_hash == revision:
            return cached.commit_hash, {
                file.file_path.relative_to(cached.snapshot_path).as_posix(): file.file_path
                for file in cached.files}, []
    return None, {}, sorted(cached.commit_hash for cached in revisions)


def _from_cache(repo_id: str, wanted: str | None, revision: str | None,
                reason: str) -> tuple[HubOrigin, Path, Path | None, str]:
    """The LoRA and the record as the Hub cache holds them at `revision` (default main),
    with a note saying which commit that is; one line saying how to fill the cache when it
    holds neither."""
    from huggingface_hub import constants

    named = revision or "main"
    commit, cached, others = _cached(repo_id, named)
    online = ("run this command once (--dry-run is enough) where the Hub can be reached, "
              "without HF_HUB_OFFLINE and with the same HF_HOME, to download it")
    if commit is None:
        held = (f" (it holds {repo_id} only at commit {', '.join(others[:3])}: --revision "
                "COMMIT uses one)" if others else "")
        raise UserError(f"{reason}, and the Hugging Face cache ({constants.HF_HUB_CACHE}) has "
                        f"no {repo_id} at {named}{held}; {online}")
    if wanted is None and not any(name.endswith(".safetensors") for name in cached):
        raise UserError(f"{reason}, and the Hugging Face cache holds no LoRA file of {repo_id} "
                        f"at {commit[:12]} (a download that did not finish); {online}")
    filename = wanted or _choose(list(cached), repo_id, f"the cached {repo_id} at {commit[:12]}")
    if filename not in cached:
        raise UserError(f"{reason}, and the Hugging Face cache holds no {filename} of "
                        f"{repo_id} at {commit[:12]}; {online}")
    which = ("" if commit == revision else
             f": the commit {named} named when it was last downloaded; the Hub may hold a "
             "newer one")
    note = (f"LoRA {repo_id}:{filename} at {commit[:12]}, from the Hugging Face cache "
            f"({cached[filename]}) without asking the Hub ({reason}){which}")
    return (HubOrigin(repo_id, commit, filename), cached[filename],
            cached.get(PUBLISHED_RECORD), note)


def pull_lora(spec: str, *, revision: str | None = None,
              endpoint: str | None = None) -> PulledLora:
    """Download the LoRA named by `spec` (and the pushed run record) into the Hub cache; with
    HF_HUB_OFFLINE, or when the Hub cannot be reached, take them from the cache instead. The
    client's retries are not logged: the one line of a failure says what happened."""
    from huggingface_hub import constants

    parsed = hub_spec(spec)
    if parsed is None:
        raise UserError(f"--lora {spec!r} is not a Hub LoRA: use USER/REPO or "
                        "USER/REPO:FILE.safetensors")
    repo_id, wanted = parsed
    repo_id = check_repo_id(repo_id, "--lora")  # one line, where huggingface_hub would raise
    url = resolve_endpoint(endpoint)
    try:
        if constants.HF_HUB_OFFLINE:
            raise _Unreachable("HF_HUB_OFFLINE is set")
        setting = "HF_ENDPOINT" if endpoint is None else "the endpoint given"
        token = read_token()  # one line where the library cannot read it, not its traceback
        seconds = deadline()
        with hub_client(), _download_errors(repo_id, url, revision, setting):
            origin, file, record_file = within(
                seconds, lambda: _download(repo_id, wanted, revision, url, token))
        note = (f"LoRA {repo_id}:{origin.path} at {origin.commit[:12]}, from the Hugging Face "
                f"cache ({file})")
    except _Unreachable as reason:
        origin, file, record_file, note = _from_cache(repo_id, wanted, revision, str(reason))
    record = None if record_file is None else _read_record(record_file)
    notes = [note]
    if record is None:
        notes.append(f"{repo_id} has no {PUBLISHED_RECORD}: prompts use prepare's default "
                     "template and trigger unless --prompt or --like says otherwise")
    model, base_note = base_model(record, lora_metadata(file))
    return PulledLora(origin, file, record, model, (*notes, base_note))
