"""What a push publishes: the files of a run (the final LoRA, saves, redacted sd-scripts
files and run record, sample images) with the card first, exactly as they leave the machine,
and the scan that refuses a push holding something private. No network.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medsynth_kohya import files
from medsynth_kohya.data.captions import DEFAULT_TRIGGER
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copycheck
from medsynth_kohya.hub import eval_card, privacy
from medsynth_kohya.hub.card import (
    DEFAULT_LICENSE,
    HUB_LICENSES,
    TAGS,
    Sample,
    base_model,
    base_warnings,
    filled,
    licence_warnings,
    metadata,
    render_card,
    spread_section,
    training_data,
    vocabulary_rows,
)
from medsynth_kohya.hub.eval_card import CardEvaluation
from medsynth_kohya.sampling.grid import shown_ids
from medsynth_kohya.sampling.prompts import DEFAULT_SCALE, DEFAULT_SIZE, DEFAULT_STEPS
from medsynth_kohya.sampling.synthset import (
    GRID,
    IMAGES,
    METADATA,
    SynthRow,
    complete_jpeg,
    complete_png,
    image_files,
    made_with,
    read_metadata,
    unlisted,
)
from medsynth_kohya.sdscripts import launch, render
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import (
    PUBLISHED_RECORD,
    RECORD_FILE,
    NotARecord,
    RunFolder,
    RunRecord,
)
from medsynth_kohya.training.train import retrain_advice

MAX_SAMPLE_IMAGES = 8
"""Sample images uploaded (besides the grid); the first WIDGETS become card widgets."""
REDACTED = privacy.REDACTED
_NAME_CHARACTERS = re.compile(r"^[A-Za-z0-9._-]+$")
REPO_NAME_MAX = 96
"""The most characters the Hub allows in each part of a repo id."""
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
PUSHED = ".medsynth/pushed.json"
"""The repo's list of the files the last push uploaded, with the digests of what it sent: a
later push deletes only files listed there that the Hub still holds as sent, so a file the user
or another tool put in the repo, or edited there since, stays."""


@dataclass(frozen=True)
class Upload:
    """One file of the commit: where it goes in the repo and its bytes or local file."""

    path_in_repo: str
    source: Path | bytes
    own: tuple[str, ...] = ()
    """Names the tool chose in a file it writes (a document's keys, its own files' paths):
    with its templates' and modules' wording, the last scan does not take the user's name
    there for a leak."""
    named: str | None = None
    """For a file rendered from a template: the values filled in, where the last scan looks
    for the user's name (the template's own text is the tool's)."""

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def digests(self) -> dict[str, str]:
        """sha256 and git blob sha1 of the content (a file read in blocks): the Hub names an LFS
        file's version by the first (lfs.sha256), a regular file's by the second (blobId)."""
        sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % self.size)
        for block in ([self.source] if isinstance(self.source, bytes)
                      else files.blocks(self.source)):
            sha256.update(block)
            git.update(block)
        return {"sha256": sha256.hexdigest(), "git": git.hexdigest()}


@dataclass(frozen=True)
class PushPlan:
    """What a push sends: every file (README.md first) and the rendered card."""

    repo_id: str
    uploads: tuple[Upload, ...]
    card: str
    warnings: tuple[str, ...] = ()
    findings: tuple[tuple[str, str], ...] = ()
    """(path in the repo, what private thing it holds): a push with any is refused."""
    secrets: tuple[str, ...] = ()
    """Values that must not leave the machine, for scrubbing error messages."""
    options: tuple[str, ...] = ()
    """The push options that make this plan (--samples, --eval, …), as typed after the repo
    id: what a suggested `push --show` command needs to find the same files."""


def check_repo_id(repo_id: str, option: str = "--repo-id") -> str:
    """`namespace/name` with Hub-valid parts, else a UserError (naming `option`, the one the
    user gave it by) saying which of the Hub's rules it breaks."""
    parts = repo_id.strip().split("/")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"{option} {repo_id!r} must be namespace/name (your user name or an "
                        "organisation, then letters, digits, '-', '_' or '.'), e.g. "
                        "your-name/melanoma-sdxl-lora")
    problem = next(filter(None, (_part_problem(label, part) for label, part in
                                 zip(("namespace", "name"), parts, strict=True))), None)
    if problem is None and parts[1].lower().endswith(".git"):
        problem = "its name may not end in .git"
    if problem:
        raise UserError(f"{option} {repo_id!r} is not a valid Hub namespace/name: {problem}")
    return "/".join(parts)


def _part_problem(label: str, part: str) -> str | None:
    """Which of the Hub's rules for a repo id's namespace or name `part` breaks, if any."""
    wrong = sorted({char for char in part if not _NAME_CHARACTERS.match(char)})
    if wrong:
        return (f"its {label} holds {', '.join(map(repr, wrong))}: the Hub allows only "
                "letters, digits, '-', '_' and '.'")
    if len(part) > REPO_NAME_MAX:
        return (f"its {label} has {len(part)} characters; the Hub allows at most "
                f"{REPO_NAME_MAX}")
    if "--" in part or ".." in part:
        return f"its {label} holds '--' or '..', which the Hub does not allow"
    if not (part[0].isalnum() and part[-1].isalnum()):
        return f"its {label} must start and end with a letter or digit"
    return None


def check_license(license: str) -> str:
    """One of the Hub's licence ids (HUB_LICENSES), else a UserError naming the closest."""
    if license in HUB_LICENSES and license != "other":
        return license
    if license == "other":
        raise UserError("--license other needs a license_name and a LICENSE file in the repo, "
                        "which push does not write: choose one of the Hub's licence ids, or "
                        "edit README.md on the Hub after the push")
    close = difflib.get_close_matches(license.strip().lower().replace(" ", "-"),
                                      HUB_LICENSES, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close[:-1])} or {close[-1]}? " if len(close) > 1 else
            f"did you mean {close[0]}? " if close else "")
    raise UserError(f"--license {license!r} is not a licence id the Hub knows; {hint}see "
                    "https://huggingface.co/docs/hub/repositories-licenses (e.g. cc-by-nc-4.0, "
                    "mit or openrail++)")


def _read_record(folder: RunFolder) -> RunRecord:
    path = folder.record_file
    files.ensure_folder(folder.path, "pass the run folder that `medsynth-kohya train` wrote")
    if not folder.exists():
        raise UserError(f"{folder.path} is not a training run (no {RECORD_FILE}): pass the run "
                        "folder that `medsynth-kohya train` wrote")
    try:
        record = folder.load()
    except NotARecord:
        record = RunRecord()
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); re-run `medsynth-kohya train`") from None
    if record.config is None:
        raise UserError(f"{path} is not a run record of `medsynth-kohya train`")
    return record


def _check_safetensors(path: Path, record: RunRecord, run_dir: Path) -> None:
    """A safetensors file starts with an 8-byte header length and a JSON object."""
    if files.safetensors_header(path) is None:
        raise UserError(f"{path} is not a safetensors file (empty or damaged); "
                        f"{retrain_advice(record, run_dir)}")


def _lora_files(folder: RunFolder, record: RunRecord, all_checkpoints: bool,
                ) -> tuple[Path, list[Path], list[str]]:
    """The final LoRA, the epoch/step saves to upload and warnings."""
    name = record.output_name
    status = record.status or "unknown"
    run_dir, output = folder.path, folder.output
    final = folder.final_lora(name)
    if not name or not final.is_file():
        raise UserError(f"{run_dir} has no LoRA file ({final.relative_to(run_dir)}); "
                        f"{retrain_advice(record, run_dir)}")
    _check_safetensors(final, record, run_dir)
    warnings = []
    if status != "succeeded":
        warnings.append(f"{RECORD_FILE} says the run is {status}, yet {final.name} exists; "
                        "pushing it")
    saves = [path for path in launch.lora_files(output, name) if path != final]
    if all_checkpoints:
        for path in saves:
            _check_safetensors(path, record, run_dir)
        if not saves:
            warnings.append(f"--all-checkpoints: {output} holds no epoch or step save of {name} "
                            "besides the final LoRA (the run saved none, or they were "
                            f"removed): checkpoints/ gets nothing; pushing {final.name} alone")
    return final, saves if all_checkpoints else [], warnings


def _toml(path: Path) -> dict[str, Any]:
    """One of the run's rendered sd-scripts files; nothing when it is absent. One that cannot be
    read is a UserError: published as nothing, it would leave the card's claims unbacked."""
    import toml

    try:
        document: dict[str, Any] = toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot read {path} ({why.splitlines()[0]}): push publishes the run's "
                        "rendered sd-scripts files; restore it, or delete it to push without "
                        "it") from None
    return document


def _trigger(folder: RunFolder) -> str:
    """The class token the run trained on, from RUN/dataset.toml."""
    document = _toml(folder.dataset_config)
    for dataset in document.get("datasets", []):
        for subset in dataset.get("subsets", []):
            if subset.get("class_tokens"):
                return str(subset["class_tokens"])
    return DEFAULT_TRIGGER


def _prompt_settings(folder: RunFolder) -> dict[str, Any]:
    """The training run's sample settings and prompts, from RUN/sample_prompts.toml."""
    table = dict(_toml(folder.sample_prompts).get("prompt", {}))
    subsets = table.pop("subset", [])
    prompts = [str(s.get("prompt", "")) for s in subsets if isinstance(s, dict)]
    return {"negative_prompt": table.get("negative_prompt"),
            "width": table.get("width", DEFAULT_SIZE), "height": table.get("height", DEFAULT_SIZE),
            "scale": table.get("scale", DEFAULT_SCALE),
            "steps": table.get("sample_steps", DEFAULT_STEPS), "prompts": prompts}


def _training_samples(run: RunFolder, name: str, prompts: Sequence[str],
                      negative: str | None) -> list[Sample]:
    """The last set of sample images sd-scripts wrote during training (one per prompt).

    sd-scripts names them `NAME_<step:06d | e<epoch:06d>>_<prompt:02d>_<YYYYmmddHHMMSS>[_seed].png`.
    """
    folder = run.samples
    pattern = re.compile(rf"^{re.escape(name)}_(e?\d{{6}})_(\d{{2}})_(\d{{14}})(?:_\d+)?\.png$")
    found = []
    for path in folder.glob("*.png") if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            found.append((match.group(3), match.group(1), int(match.group(2)), path))
    if not found:
        return []
    latest = max(found)[1]
    by_prompt: dict[int, Path] = {}
    for _, suffix, index, path in sorted(found):
        if suffix == latest:
            by_prompt[index] = path
    return [Sample(path, prompts[index] if index < len(prompts) else None, negative)
            for index, path in sorted(by_prompt.items())]


def _synth_samples(folder: Path) -> tuple[list[Sample], Path | None, list[str], list[str]]:
    """Images of a `medsynth-kohya sample` folder (metadata.csv order), its grid, the ids the
    grid shows and warnings. A folder without metadata.csv is refused (nothing tells which of
    its images sample made), as is a grid that may show an image gone from images/: it would
    publish what no check can see any more."""
    images = image_files(folder)
    grid = folder / GRID
    if not images and not grid.is_file():
        raise UserError(f"--samples {folder} holds no images/*.png or grid.jpg: pass the --out "
                        "folder of `medsynth-kohya sample`")
    rows: dict[str, SynthRow] = {}
    for row in read_metadata(folder):
        rows.setdefault(row.id, row)
    strays = unlisted(images, rows)
    if strays:  # not made by sample: it could be anything, a patient's photo included
        raise UserError(f"--samples {folder}: {files.counted(len(strays))} in {IMAGES}/ "
                        f"{files.agreeing(len(strays), 'is')} not in its {METADATA} (first: "
                        f"{strays[0].name}), so not made by `medsynth-kohya sample`; move "
                        f"{files.agreeing(len(strays), 'it')} out of {folder / IMAGES} and "
                        "push again")
    if not rows:  # emptied since sample drew the grid: it shows images the set no longer has
        raise UserError(f"--samples {folder}: its {METADATA} lists no image, so {GRID} shows "
                        "none of this set; run `medsynth-kohya sample` into it again, or leave "
                        "out --samples")
    broken = [path for path in images if not complete_png(path)]
    if broken:  # emptied or cut short since sample made it: a blank widget on the card
        raise UserError(f"--samples {folder}: {files.counted(len(broken), 'image')} in {IMAGES}/ "
                        f"{files.agreeing(len(broken), 'is')} not whole (first: "
                        f"{broken[0].name}: empty or cut short); re-run `medsynth-kohya sample` "
                        "with the same options to make them again, then push")
    if grid.is_file() and not complete_jpeg(grid):
        raise UserError(f"--samples {folder}: {GRID} is not whole (empty or cut short); re-run "
                        "`medsynth-kohya sample` with the same options to make it again, or "
                        f"delete {GRID} to push without it")
    # sample writes metadata.csv and the grid of the same images
    shown = shown_ids(rows) if grid.is_file() else []
    present = {path.stem for path in images}
    gone = [i for i in rows if i not in present]
    lost = [i for i in shown if i not in present]
    if lost:
        raise UserError(f"--samples {folder}: {GRID} shows {files.counted(len(lost), 'image')} "
                        "no longer in "
                        f"{IMAGES}/ (first: {lost[0]}) that {METADATA} lists; re-run "
                        "`medsynth-kohya sample` with the same options to remake them, the "
                        f"metadata and the grid, or delete {GRID} to push without it")
    warnings = [f"--samples {folder.name}: {METADATA} lists {files.counted(len(gone), 'image')} "
                f"no longer in "
                f"{IMAGES}/ (first: {gone[0]}); they are not published"] if gone else []
    order = {stem: i for i, stem in enumerate(rows)}
    images.sort(key=lambda path: (order.get(path.stem, len(order)), path.name))
    samples = []
    for path in images[:MAX_SAMPLE_IMAGES]:
        row = rows[path.stem]
        samples.append(Sample(path, row.prompt or None, row.negative_prompt or None))
    return samples, grid if grid.is_file() else None, shown, warnings


def _public_ids(record: RunRecord, repo_id: str) -> list[str]:
    """Public strings that may hold the user's name: the repo id, the tool's and sd-scripts'
    names (the card links kohya-ss/sd-scripts) and Hub model ids."""
    ids = [repo_id, "medsynth-kohya", "medsynth_kohya", "kohya-ss", BASE_MODEL]
    for value in record.options.values():
        if isinstance(value, str) and _HUB_ID.fullmatch(value) and not Path(value).exists():
            ids.append(value)
    return ids


MACHINE_KEYS = frozenset({"host", "pid", "main_process_ip", "main_process_port"})
"""Record values that name the machines a run used: kept in run.json, never published."""


def _anonymous(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the keys that name a machine (MACHINE_KEYS)."""
    return {key: value for key, value in values.items() if key not in MACHINE_KEYS}


def _public_record(record: RunRecord, policy: privacy.Policy) -> RunRecord:
    """The run record as published: no push history, no host names, process ids or cluster
    addresses, secrets redacted, paths hidden."""
    private = replace(record, pushes=None, overrides=None, command=None, host=None, pid=None,
                      machines=None if record.machines is None else _anonymous(record.machines),
                      nodes=None if record.nodes is None else [
                          _anonymous(report) for report in record.nodes])
    public = RunRecord.from_dict(policy.data(private.to_dict()))
    command = [str(arg) for arg in record.command or []]
    hidden = {i + 1 for i, arg in enumerate(command[:-1])
              if arg.startswith("--") and "=" not in arg and privacy.is_secret_key(arg[2:])}
    return replace(
        public,
        overrides=None if record.overrides is None else [
            policy.override(str(o)) for o in record.overrides],
        command=None if record.command is None else [
            privacy.REDACTED if i in hidden else policy.text(arg)
            for i, arg in enumerate(command)])


def _run_files(folder: RunFolder, record: RunRecord, policy: privacy.Policy,
               ) -> tuple[list[Upload], RunRecord]:
    """training/: the rendered sd-scripts files and the run record as published, and the
    published record (the card is written from it)."""
    documents = {path.name: _toml(path) for path in folder.training_files if path.is_file()}
    for document in (*documents.values(), record.to_dict()):  # every secret before writing
        policy.collect(document)
    for item in record.overrides or []:
        policy.override(str(item))
    uploads = [Upload(_training_path(name), render.dumps(published).encode(),
                      privacy.key_pieces(published))
               for name, published in ((name, policy.data(document))
                                       for name, document in documents.items())]
    public = _public_record(record, policy)
    text = json.dumps(public.to_dict(), indent=2, default=str) + "\n"
    uploads.append(Upload(PUBLISHED_RECORD, text.encode(),
                          privacy.key_pieces(json.loads(text))))
    return uploads, public


def pushed_list(uploads: Iterable[Upload]) -> bytes:
    """The PUSHED file of one push: the tool's name and, by repo path, the digests of what it
    uploaded there, so a later push can tell a file edited on the Hub since (kept)."""
    listed = {u.path_in_repo: u.digests() for u in uploads}
    document = {"tool": "medsynth-kohya", "files": dict(sorted(listed.items()))}
    return (json.dumps(document, indent=2) + "\n").encode()


def read_pushed(data: bytes) -> dict[str, frozenset[str] | None]:
    """The repo paths a PUSHED file lists, each with the digests of the version pushed (None in
    an older list of paths alone); nothing when it is not one (damaged, edited by hand), and no
    entry whose digests are unreadable, so nothing unsure is deleted."""
    try:
        document = json.loads(data)
    except ValueError:
        return {}
    listed = document.get("files") if isinstance(document, dict) else None
    if isinstance(listed, list):
        return {path: None for path in listed if isinstance(path, str)}
    recorded = {path: frozenset(value for key, value in digests.items()
                                if key in ("sha256", "git") and isinstance(value, str))
                for path, digests in (listed.items() if isinstance(listed, dict) else ())
                if isinstance(digests, dict)}
    return {path: digests for path, digests in recorded.items() if digests}


def scrub(data: bytes, secrets: Sequence[str]) -> bytes:
    """`data` with every occurrence of a secret replaced."""
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), REDACTED.encode())
    return data


def scan(uploads: Sequence[Upload], policy: privacy.Policy) -> tuple[tuple[str, str], ...]:
    """(path in the repo, what it would publish) for every upload that holds something
    private: the token, a redacted value, the home folder, the user name, a patient id or a
    local path."""
    found = []
    for upload in uploads:
        finding = (policy.findings(upload.source, upload.path_in_repo,
                                   (*privacy.tool_wording(), *upload.own), upload.named)
                   if isinstance(upload.source, bytes)  # written by the tool
                   else privacy.scan_file(policy, upload.source, upload.path_in_repo,
                                          (*privacy.tool_wording(), *upload.own)
                                          if upload.own else ()))
        if finding:
            found.append((upload.path_in_repo, finding))
    return tuple(found)


def _copies_gate(folder: Path, chosen: Sequence[Sample], in_grid: Sequence[str],
                 evaluation: CardEvaluation | None, allow: bool) -> list[str]:
    """Refuse to publish sample images flagged as near-copies of training photos (by `sample
    --check-copies` or the --eval report), on their own or in the grid (`in_grid`), unless
    `allow`; warnings for unchecked images (an image the report checked is the one published
    only when their digests agree)."""
    published = {s.path.stem for s in chosen} | set(in_grid)
    recorded = copycheck.read(folder, among=published)
    flagged = {f.synthetic_id: f.training_id for f in recorded.flagged} if recorded else {}
    sources = [copycheck.NAME] if flagged.keys() & published else []
    if evaluation is not None and evaluation.flagged.keys() & published:
        sources.append("the evaluation report")
        flagged = {**evaluation.flagged, **flagged}
    shown = sorted(flagged.keys() & published)
    if shown and not allow:
        pairs = ", ".join(f"{i} ~ {flagged[i]}" for i in shown[:5])
        what = ("images are near-copies of training photos" if len(shown) > 1
                else "image is a near-copy of a training photo")
        raise UserError(f"--samples {folder.name}: {len(shown)} sample {what} ({pairs}; flagged "
                        f"by {' and '.join(sources)}); publish a set without them (sample "
                        "again with another --seed) or pass --allow-copies to publish anyway")
    warnings = [f"publishing {files.counted(len(shown), 'sample image')} flagged as "
                "near-copies of training photos (--allow-copies)"] if shown else []
    vouched = evaluation.checked if evaluation else {}
    checked = set(recorded.checked if recorded else ()) | set(
        copycheck.unchanged(folder, sorted(vouched.keys() & published), dict(vouched)))
    unchecked = published - checked
    if unchecked:
        warnings.append(f"{_unchecked_count(unchecked, chosen)} not checked for near-copies of "
                        "training photos (`sample --check-copies`, or `evaluate` and `push "
                        "--eval`)")
    return warnings


def _unchecked_count(unchecked: set[str], chosen: Sequence[Sample]) -> str:
    """"8 published sample images, and 4 more shown only in the grid (…), were": the unchecked
    images published as files (the samples/ list shows them) apart from those only the grid
    shows, so the count matches the files a push lists."""
    own = len(unchecked & {s.path.stem for s in chosen})
    grid_only = len(unchecked) - own
    where = f"shown only in the grid ({_sample_path(GRID)})"
    verb = files.agreeing(len(unchecked), "was")
    if not grid_only:
        return f"{files.counted(own, 'published sample image')} {verb}"
    if not own:
        return f"{files.counted(grid_only, 'sample image')} {where} {verb}"
    return (f"{files.counted(own, 'published sample image')}, and {grid_only} more {where}, "
            f"{verb}")


def _same_lora(final: Path, samples: Path | None, report: Path | None,
               evaluation: CardEvaluation | None) -> None:
    """Refuse a synthetic set, or the report of one, that another LoRA than the run's `final`
    made (as sample recorded it): the card would show its images and figures as this model's."""
    recorded = [(f"--samples {samples} was made", made_with(samples) if samples else None),
                (f"--eval {report} evaluated a set made",
                 evaluation.lora_sha256 if evaluation else None)]
    if not any(digest for _, digest in recorded):
        return
    mine = files.sha256(final)
    for what, digest in recorded:
        if digest and digest != mine:
            raise UserError(f"{what} with another LoRA (sha256 {digest[:12]}…) than this run's "
                            f"{final.name} (sha256 {mine[:12]}…); sample this run's LoRA "
                            "(`medsynth-kohya sample --lora RUN`) and evaluate that set")


def _prepared_from(record: RunRecord) -> str | None:
    """The sha256 of the ISIC metadata file the run's data was prepared from, as prepare
    recorded it (older folders: of the file, while it is still on this machine); an evaluation
    made with --real on that download covers the run."""
    state = PreparedFolder(record.prepared).state_if_any() if record.prepared else None
    if state is None or state.source_metadata_sha256 is not None:
        return None if state is None else state.source_metadata_sha256
    source = state.source_metadata
    return files.sha256(source) if source is not None and source.is_file() else None


def _same_data(record: RunRecord, report: Path, evaluation: CardEvaluation) -> list[str]:
    """Refuse a report that compared the set with other prepared data than the run trained on
    (its near-copy verdict would be about photos that are not this model's training set);
    warnings when the report cannot be tied to the run's data (its prepared folder, or the
    ISIC download that was prepared from) or LoRA."""
    mine = record.dataset.manifest_sha256 if record.dataset else None
    theirs = evaluation.manifest_sha256
    again = record.prepared_again()  # then `evaluate --lora RUN` refuses the folder
    redo = ("evaluate a set this run's LoRA made with `medsynth-kohya evaluate --real <the ISIC "
            "download its data was prepared from> --synthetic SET`, or train again"
            if again else "evaluate a set this run's LoRA made against its own training data "
            "with `medsynth-kohya evaluate --lora RUN --synthetic SET`")
    if mine and theirs and mine != theirs:
        if again and record.prepared is not None and evaluation.real == record.prepared.name:
            raise UserError(f"--eval {report} compared the set with {evaluation.real} as it "
                            "was prepared again after this run trained on it (manifest sha256 "
                            f"{theirs[:12]}…, the run's {mine[:12]}…), so it checked other "
                            f"photos than the LoRA saw; {redo}")
        raise UserError(f"--eval {report} compared the set with other real data "
                        f"({evaluation.real}, manifest sha256 {theirs[:12]}…) than this run's "
                        f"prepared data (manifest sha256 {mine[:12]}…); {redo}")
    warnings = []
    same_source = (evaluation.source_sha256 is not None
                   and evaluation.source_sha256 == _prepared_from(record))
    if not (mine and theirs) and not same_source:
        warnings.append(f"--eval {report.name} compared the set with {evaluation.real}, which "
                        "cannot be matched with this run's prepared data, so its near-copy "
                        f"check may not cover the run's training photos; {redo}")
    if evaluation.lora_sha256 is None:
        warnings.append(f"--eval {report.name} does not record the LoRA that made the evaluated "
                        f"set, so its figures may not be this model's; {redo}")
    return warnings


def _training_path(name: str) -> str:
    """Where a push puts the rendered sd-scripts file `name` in the repo."""
    return f"training/{name}"


def _sample_path(name: str) -> str:
    """Where a push puts the sample image (or grid) `name` in the repo."""
    return f"samples/{name}"


def paths_before(lora: str, samples: Sequence[str]) -> tuple[str, ...]:
    """The repo paths plan() gives a run's files before the run exists: the card, the LoRA
    file `lora`, the training files and record, the first sample images of a synthetic set
    whose file names are `samples` (in its order) with its grid, and the PUSHED list; what
    reproduce asks the Hub about before training (checkpoints and an evaluation aside)."""
    training = (_training_path(path.name) for path in RunFolder(Path()).training_files)
    shown = (_sample_path(name) for name in (*samples[:MAX_SAMPLE_IMAGES], GRID))
    return ("README.md", lora, *training, PUBLISHED_RECORD, *shown, PUSHED)


def plan(run_dir: Path, repo_id: str, *, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, samples: Path | None = None,
         token: str | None = None, environ: Mapping[str, str] | None = None,
         evaluation: Path | None = None, allow_copies: bool = False,
         base: str | None = None) -> PushPlan:
    """Every file a push of `run_dir` sends, README.md (the card) first and the PUSHED list
    last, exactly as it leaves the machine, and what the last scan found in them; no network.

    This is the one place that decides what is published: secrets (the token, values of keys
    that name a secret in the configs, --set or the environment) are redacted, local paths are
    made relative to the run folder or shown as `<local>/NAME`. Sample images flagged as
    near-copies are refused unless `allow_copies`; an `evaluation` report goes into
    `evaluation/` and its figures into the card. `base` (--base-model) is the Hub id of a
    local checkpoint the run trained on, for the card.
    """
    repo_id = check_repo_id(repo_id)
    license = check_license(license)
    given = check_repo_id(base, "--base-model") if base is not None else None
    folder = RunFolder(run_dir)
    record = _read_record(folder)
    trained_on = base_model(record, given)
    final, saves, warnings = _lora_files(folder, record, all_checkpoints)
    name = record.output_name
    trigger = _trigger(folder)
    prompts = _prompt_settings(folder)
    grid: Path | None = None
    attached = eval_card.card_evaluation(evaluation) if evaluation is not None else None
    _same_lora(final, samples, evaluation, attached)
    if evaluation is not None and attached is not None:
        warnings += _same_data(record, evaluation, attached)
    if samples is not None:
        chosen, grid, in_grid, sample_warnings = _synth_samples(samples)
        warnings += sample_warnings
        warnings += _copies_gate(samples, chosen, in_grid, attached, allow_copies)
    else:
        chosen = _training_samples(folder, name, prompts["prompts"],
                                   prompts["negative_prompt"])
    sample_paths = {s.path: _sample_path(s.path.name) for s in chosen}
    grid_path = _sample_path(grid.name) if grid else None
    spread = spread_section(record)
    data, data_warnings = training_data(record, spread.synthetic)
    warnings += (spread.warnings + data_warnings + licence_warnings(data, license)
                 + base_warnings(trained_on))
    if spread.synthetic:
        warnings.append("the run trained on the synthetic demo data; the card says so")

    policy = privacy.Policy.for_run(run_dir, token=token, environ=environ,
                                    allowed=[*_public_ids(record, repo_id),
                                             *([given] if given else [])])
    policy.add_patients(spread.patients)
    training, public = _run_files(folder, record, policy)
    uploads = [Upload(final.name, final)]
    uploads += [Upload(f"checkpoints/{path.name}", path) for path in saves]
    uploads += training
    uploads += [Upload(sample_paths[s.path], s.path) for s in chosen]
    if grid is not None and grid_path is not None:
        uploads.append(Upload(grid_path, grid))
    if attached is not None:
        uploads += [Upload(path, local, attached.own) for path, local in attached.files]
    files = [(u.path_in_repo, u.size) for u in uploads]
    card = render_card(repo_id=repo_id, record=public, trigger=trigger, weight_name=final.name,
                       license=license, prompts=prompts, samples=chosen,
                       sample_paths=sample_paths, grid=grid_path, spread=spread.markdown,
                       data=data, files=files, evaluation=attached, types=spread.types,
                       base=trained_on)
    card = scrub(card.encode(), policy.secrets).decode()
    named = ("README.md", PUSHED, *(u.path_in_repo for u in uploads if isinstance(
        u.source, bytes)), *(path for path, _ in (attached.files if attached else ())))
    everything = (Upload("README.md", card.encode(), (*privacy.key_pieces(metadata(card)),
                                                      *(f"- {tag}" for tag in TAGS),
                                                      *vocabulary_rows(), *named),
                         filled(card)), *uploads)
    everything += (Upload(PUSHED, pushed_list(everything), named),)
    return PushPlan(repo_id, everything, card, tuple(warnings), scan(everything, policy),
                    tuple(policy.secrets), _options(license, all_checkpoints, samples,
                                                    evaluation, allow_copies, base))


def _options(license: str, all_checkpoints: bool, samples: Path | None,
             evaluation: Path | None, allow_copies: bool, base: str | None) -> tuple[str, ...]:
    """The push options, as typed, that plan the same files: those left at their default are
    left out."""
    return (*(("--license", license) if license != DEFAULT_LICENSE else ()),
            *(("--all-checkpoints",) if all_checkpoints else ()),
            *(("--samples", str(samples)) if samples is not None else ()),
            *(("--eval", str(evaluation)) if evaluation is not None else ()),
            *(("--allow-copies",) if allow_copies else ()),
            *(("--base-model", base) if base else ()))


def show(run_dir: Path, repo_id: str, path_in_repo: str, *, license: str = DEFAULT_LICENSE,
         all_checkpoints: bool = False, samples: Path | None = None,
         token: str | None = None, evaluation: Path | None = None,
         allow_copies: bool = False, base: str | None = None) -> tuple[bytes, str | None]:
    """One file as a push would upload it, and what the scan found in it: a text file's bytes
    exactly; of a weights file its metadata (JSON) and of a PNG its text chunks, the parts the
    scan reads as text (their raw bytes would flood a terminal); any other image is refused."""
    from medsynth_kohya.hub.access import read_token

    planned = plan(run_dir, repo_id, license=license, all_checkpoints=all_checkpoints,
                   samples=samples, token=token or read_token(), evaluation=evaluation,
                   allow_copies=allow_copies, base=base)
    wanted = path_in_repo.strip().lstrip("/")
    for upload in planned.uploads:
        if upload.path_in_repo == wanted:
            return _shown(upload), dict(planned.findings).get(wanted)
    listing = ", ".join(u.path_in_repo for u in planned.uploads)
    raise UserError(f"--show {path_in_repo!r} is not among the files push uploads: {listing}")


def _shown(upload: Upload) -> bytes:
    """What `--show` prints of an upload: see `show`."""
    source, name = upload.source, upload.path_in_repo
    if isinstance(source, bytes):
        return source
    lowered = name.lower()
    if lowered.endswith(".safetensors"):
        header = files.safetensors_header(source) or {}
        text = json.dumps(header.get("__metadata__") or {}, indent=2, ensure_ascii=False)
        return (text + "\n").encode()
    if lowered.endswith(".png"):
        chunks = privacy.png_text(source.read_bytes())
        if chunks:
            return b"".join(keyword.encode() + b": " + body.split(b"\0", 1)[-1] + b"\n"
                            for keyword, body in chunks.items())
        raise UserError(f"--show {name}: the image holds no text chunks, only the picture, "
                        f"which push uploads as it is: open {source} to see it")
    if lowered.endswith(privacy.BINARY):
        raise UserError(f"--show {name}: the file holds no text to print, and push uploads it "
                        f"as it is: open {source} to see it")
    return source.read_bytes()


def refuse_findings(planned: PushPlan, run_dir: Path) -> None:
    """Refuse a push whose files hold something private, naming the file, the finding, the
    command that shows it (with the options that plan the same files) and how to remove it from
    that kind of file."""
    if planned.findings:
        path, finding = planned.findings[0]
        others = len(planned.findings) - 1
        more = f" (and {files.counted(others, 'more file')})" if others else ""
        source = next(u.source for u in planned.uploads if u.path_in_repo == path)
        command = shlex.join(["medsynth-kohya", "push", str(run_dir), "--repo-id",
                              planned.repo_id, *planned.options, "--show", path])
        raise UserError(f"push refused: {path} would publish {finding}{more}; see it with "
                        f"`{command}`, then {_remedy(path, source, finding)}")


def _remedy(path: str, source: Path | bytes, finding: str) -> str:
    """How to take a private thing (`finding`) out of the file that will be `path` in the
    repo."""
    lowered = path.lower()
    if path.startswith("evaluation/") and finding.startswith(privacy.PATIENT):
        return ("rename the photos so their ids hold no patient id and prepare again, or push "
                "without --eval")
    if isinstance(source, bytes):  # written by push from the run's files
        return "remove it from the run's files (its config.toml, run.json or prompts)"
    if lowered.endswith(".safetensors"):
        return (f"write the metadata of {shlex.quote(str(source))} without it (sd-scripts "
                "copies options such as training_comment there) or train again without it")
    if lowered.endswith(".png"):
        return (f"save {shlex.quote(str(source))} again without its text chunks (the picture "
                "stays the same) and push again")
    if path.startswith("evaluation/"):
        return "run `medsynth-kohya evaluate` again without it, or push without --eval"
    return f"remove it from {source}"
