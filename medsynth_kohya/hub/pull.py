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
from medsynth_kohya.hub.failures import chain, network_errors
from medsynth_kohya.hub.push import resolve_endpoint
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import PUBLISHED_RECORD, RunRecord

_SPEC = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<file>[^:]+\.safetensors))?")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hub_spec(value: str) -> tuple[str, str | None] | None:
    """(repo id, file or None) for `USER/REPO` or `USER/REPO:FILE.safetensors`; else None."""
    match = _SPEC.fullmatch(value)
    return (match["repo"], match["file"]) if match else None


@dataclass(frozen=True)
class PulledLora:
    """A LoRA file from the Hub cache, what it was trained on, and how that was decided."""

    repo_id: str
    commit: str
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


def _choose(names: list[str], repo_id: str) -> str:
    """The repository's one top-level LoRA (push puts the final LoRA there)."""
    top = [name for name in names if "/" not in name and name.endswith(".safetensors")]
    if len(top) == 1:
        return top[0]
    listed = [name for name in names if name.endswith(".safetensors")]
    if not listed:
        raise UserError(f"{repo_id} holds no .safetensors file: is it a LoRA repository?")
    raise UserError(f"{repo_id} holds {len(listed)} .safetensors files; choose one as "
                    f"{repo_id}:FILE, e.g. {repo_id}:{listed[0]}")


@contextmanager
def _download_errors(repo_id: str, endpoint: str, revision: str | None) -> Iterator[None]:
    """A missing repository, revision or file, or a failed connection, as one line."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        for link in chain(exc):
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
                hint = ("set HF_TOKEN to a token that may read it (or `hf auth login`)"
                        if status in (401, 403) else "run the same command again later")
                raise UserError(f"the Hub at {endpoint} answered {status} for {repo_id}; "
                                f"{hint}") from None
        if any(isinstance(link, network_errors()) for link in chain(exc)):
            raise UserError(f"cannot reach {endpoint} to download {repo_id}: check the "
                            "network (files already downloaded stay in the Hub cache)") from None
        raise


def pull_lora(spec: str, *, revision: str | None = None,
              endpoint: str | None = None) -> PulledLora:
    """Download the LoRA named by `spec` (and the pushed run record) into the Hub cache."""
    from huggingface_hub import HfApi, hf_hub_download

    parsed = hub_spec(spec)
    if parsed is None:
        raise UserError(f"--lora {spec!r} is not a Hub LoRA: use USER/REPO or "
                        "USER/REPO:FILE.safetensors")
    repo_id, wanted = parsed
    url = resolve_endpoint(endpoint)
    with _download_errors(repo_id, url, revision):
        info = HfApi(endpoint=url).model_info(repo_id, revision=revision)
        commit = str(info.sha)
        names = [sibling.rfilename for sibling in info.siblings or []]
        filename = wanted or _choose(names, repo_id)
        if filename not in names:
            raise UserError(f"{repo_id} has no {filename}; its .safetensors files: "
                            + (", ".join(n for n in names if n.endswith(".safetensors"))
                               or "none"))
        file = Path(hf_hub_download(repo_id, filename, revision=commit, endpoint=url))
        record = None
        if PUBLISHED_RECORD in names:
            text = Path(hf_hub_download(repo_id, PUBLISHED_RECORD, revision=commit, endpoint=url))
            record = _read_record(text)
    notes = [f"LoRA {repo_id}:{filename} at {commit[:12]}, from the Hugging Face cache ({file})"]
    if record is None:
        notes.append(f"{repo_id} has no {PUBLISHED_RECORD}: prompts use prepare's default "
                     "template and trigger unless --prompt or --like says otherwise")
    model, note = base_model(record, lora_metadata(file))
    return PulledLora(repo_id, commit, file, record, model, (*notes, note))
