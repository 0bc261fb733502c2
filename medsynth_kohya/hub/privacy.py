"""What may leave this machine: secrets redacted, local paths hidden, and a last scan.

`push` passes every file it publishes through one `Policy`: values of keys that name a secret
become `<redacted>` (and are scrubbed wherever else they appear), absolute paths become
relative to the run folder or `<local>/NAME`, and the last scan searches every byte for the
token, the redacted values, the home folder, the user name and this machine's paths, and the
text for the patient ids of the run's manifest.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from medsynth_kohya import files
from medsynth_kohya.outputs import LOCAL, local_name

REDACTED = "<redacted>"
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "auth", "credential")
_SECRET_NAME = re.compile("|".join(SECRET_WORDS).replace("auth", "auth(?!or(?!i[sz]))"),
                          re.IGNORECASE)
"""A secret word anywhere in a name; `auth` but not `author` (authors, authored, authority:
a person's or an issuer's name, which the last scan checks against the user's own), while
authorization and authorize stay secrets."""
NOT_SECRET = frozenset({"class_tokens", "keep_tokens", "keep_tokens_separator",
                        "max_token_length", "token_warmup_min", "token_warmup_step",
                        "tokenizer_cache_dir"})
"""sd-scripts options (and dataset-config keys) whose names hold a secret word but whose
values are no secret."""
MIN_SECRET = 4
"""Shorter redacted values are not searched for elsewhere (they would match everywhere)."""
MIN_ENV_SECRET = 8
GENERIC_USERS = frozenset({"root", "user", "users", "ubuntu", "runner", "jovyan", "colab",
                           "admin", "nobody", "app", "home", "work", "content"})
"""Account names shared by every machine of a kind (Colab, CI, containers): not identifying."""
_PART = r"[^\s\"'`<>|,;()\[\]{}*/]"
_ABSOLUTE = re.compile(rf"(?<![\w.~:/<>\\+-])(/{_PART}+(?:/{_PART}*)+)")
"""An absolute POSIX path of two or more parts inside text (not a URL's, a relative one's or
base64's)."""
_HOME_OF = re.compile(rf"(?<![\w.~:/<>\\+-])(~[A-Za-z_][\w.-]*/{_PART}*(?:/{_PART}*)*)")
"""A path under a named user's home folder (`~bob/isic`): it names the user."""
_WINDOWS = re.compile(r"(?<![\w])([A-Za-z]:[\\/][^\s\"'`<>|,;*]+)")
"""A Windows path from a drive (`C:\\Users\\bob`, `C:/Users/bob`); a URL's scheme is a word."""
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+=-]+)*;base64,[A-Za-z0-9+/=]*")
"""An inline image (an evaluate page's thumbnails): base64, whose `/` make no path."""
_ASSIGNMENT = re.compile(r"\s*-{0,2}[A-Za-z_][\w.-]*\s*=")
"""A list item `name=value` or `--name=value` (sd-scripts' optimizer_args, a launch argument)."""
MIN_PATIENT = 5
"""Shorter patient ids are not searched for (a `p` or a `12` would match everywhere)."""
PATIENT = "the patient id"
"""How a finding of a patient id starts: the refusal says how to take one out."""
_ALNUM = re.compile(r"[^\W_]+")
"""A run of letters and digits: a patient id is found only where it starts and ends one."""
BINARY = (".safetensors", ".ckpt", ".pt", ".bin", ".png", ".jpg", ".jpeg", ".webp")


def is_secret_key(name: object) -> bool:
    """Whether a key names a secret: token, key, secret, password, auth or credential, in any
    case and any position (wandb_api_key, HF_TOKEN, s3Credentials, my_auth_header), except
    sd-scripts' own non-secret options such as keep_tokens, and author (metadata_author)."""
    return isinstance(name, str) and name not in NOT_SECRET and bool(_SECRET_NAME.search(name))


def environment_secrets(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names name a secret (WANDB_API_KEY, HF_TOKEN…)."""
    return [value for name, value in environ.items()
            if is_secret_key(name) and len(value.strip()) >= MIN_ENV_SECRET]


def _users() -> list[str]:
    """The user's names on this machine: the home folder's name and the login name."""
    names = {Path.home().name}
    with contextlib.suppress(KeyError, OSError):
        names.add(getpass.getuser())
    return sorted(n for n in names if len(n) >= 3 and n.lower() not in GENERIC_USERS)


@dataclass
class Policy:
    """How one run's files are made public: redaction, path rewriting and the last scan."""

    run_dir: Path
    secrets: list[str] = field(default_factory=list)
    """Values that must never leave: the token, redacted values, environment secrets."""
    allowed: list[str] = field(default_factory=list)
    """Public strings that may contain the user name (the repo id, Hub model ids)."""
    home: str = field(default_factory=lambda: str(Path.home()))
    users: list[str] = field(default_factory=_users)
    patients: dict[str, str] = field(default_factory=dict)
    """Patient ids that must never leave (`add_patients`): their spelling by the id in lower
    case."""
    starts: dict[str, set[int]] = field(default_factory=dict)
    """The lengths of the patient ids by their first run of letters and digits (lower-cased):
    a text is searched in one pass, each of its runs looked up once."""

    @classmethod
    def for_run(cls, run_dir: Path, *, token: str | None = None,
                environ: Mapping[str, str] | None = None, allowed: Sequence[str] = ()) -> Policy:
        """The policy of a push of `run_dir`: the token and environment secrets are known."""
        found = environment_secrets(os.environ if environ is None else environ)
        policy = cls(run_dir, allowed=list(allowed))
        for secret in ([token] if token else []) + found:
            policy.add_secret(secret)
        return policy

    def add_secret(self, value: object) -> None:
        text = str(value).strip()
        if len(text) >= MIN_SECRET and text != REDACTED and text not in self.secrets:
            self.secrets.append(text)

    def add_patients(self, values: Iterable[object]) -> None:
        """Patient ids (a manifest's `patient_id` values) the last scan refuses, their
        punctuation ends dropped; not one shorter than MIN_PATIENT or a word of the tool's
        own text (`unknown`, `patient`): those would be found where they name no one."""
        for value in values:
            text = re.sub(r"^[\W_]+|[\W_]+$", "", str(value))
            first = _ALNUM.match(text)
            if first is None or len(text) < MIN_PATIENT or text.lower() in tool_words():
                continue
            self.patients.setdefault(text.lower(), text)
            self.starts.setdefault(first.group().lower(), set()).add(len(text))

    def patient_findings(self, text: str) -> str | None:
        """The first patient id (`add_patients`) in `text`, in any case, standing whole: no
        letter or digit just before or after it (`IP_1234500_Smith.jpg` holds `IP_1234500`,
        `IP_12345001` does not)."""
        if not self.patients:
            return None
        for run in _ALNUM.finditer(text):
            for length in self.starts.get(run.group().lower(), ()):
                value = self.patients.get(text[run.start():run.start() + length].lower())
                if value and not _ALNUM.match(text, run.start() + length):
                    return f"{PATIENT} {value!r} (a patient_id of the run's prepared manifest)"
        return None

    def longest(self) -> int:
        """The length in bytes of the longest value the last scan searches for whole: the
        overlap of two blocks of a large file."""
        return max(len(text.encode()) for text in (*self.secrets, self.home,
                                                   *self.patients.values()))

    # --- rewriting --------------------------------------------------------------------------

    def _bases(self) -> list[Path]:
        bases = {self.run_dir.absolute(), self.run_dir.resolve()}
        return sorted(bases, key=lambda p: -len(str(p)))

    def path(self, value: str) -> str:
        """A local path as published: relative to the run folder, else `<local>/NAME`."""
        if value.startswith("~"):
            with contextlib.suppress(RuntimeError):  # `~user` of no one: <local>/NAME below
                value = str(Path(value).expanduser())
        candidate = Path(value)
        for base in self._bases():
            for form in (candidate, candidate.resolve()):
                if form.is_relative_to(base):
                    return form.relative_to(base).as_posix()
        return local_name(value)

    def is_local(self, value: str) -> bool:
        """Whether a whole string is an absolute path or one under the home folder (`~`)."""
        return (value.startswith(("~/", "~\\")) or value == "~"
                or (value.startswith("/") and len(value) > 1 and not value.startswith("//"))
                or bool(_WINDOWS.fullmatch(value)))

    def _in_run(self, value: str) -> bool:
        """Whether a relative path (from here) names something inside the run folder; a bare
        word (an option's value such as `fp16`) is never taken for one."""
        if "/" not in value:
            return False
        try:
            return Path(value).exists() and Path(value).resolve().is_relative_to(
                self.run_dir.resolve())
        except (OSError, ValueError):
            return False

    def text(self, value: str) -> str:
        """`value` with secrets scrubbed and every local path inside it rewritten."""
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        if self.is_local(value) or self._in_run(value):
            return self.path(value)
        for base in self._bases():
            pattern = re.escape(str(base)) + r"(?:[/\\]([^\s\"'`<>|,;]*))?"
            value = re.sub(pattern, lambda m: m.group(1) or ".", value)
        for form in (_ABSOLUTE, _HOME_OF, _WINDOWS):
            value = form.sub(lambda m: self.path(m.group(1)), value)
        if len(self.home) > 1:
            value = value.replace(self.home, LOCAL)
        return value

    def data(self, node: Any, *, keys: bool = True) -> Any:
        """A JSON/TOML document as published: secret-named keys' values redacted (and
        remembered), every string rewritten; `keys=False` for tables of package names."""
        if isinstance(node, dict):
            result = {}
            for key, value in node.items():
                if keys and is_secret_key(key) and value not in (None, "", [], {}):
                    self._remember(value)
                    result[key] = REDACTED
                else:
                    result[key] = self.data(value, keys=keys and key != "versions")
            return result
        if isinstance(node, list):
            return [self.override(item) if keys and isinstance(item, str)
                    and _ASSIGNMENT.match(item) else self.data(item, keys=keys) for item in node]
        if isinstance(node, str):
            return self.text(node)
        return node

    def _remember(self, value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                self._remember(item)
        elif isinstance(value, list):
            for item in value:
                self._remember(item)
        elif not isinstance(value, bool):
            self.add_secret(value)

    def collect(self, node: Any) -> None:
        """Remember the secret values of a document without rewriting it (before any text is
        rewritten, so that a secret met later is scrubbed everywhere)."""
        self.data(node)

    def override(self, item: str) -> str:
        """One `--set key=value` (or a `key=value`, `--key=value` list item) as published."""
        key, sep, value = item.partition("=")
        if sep and is_secret_key(key.strip().lstrip("-")):
            self._remember(value.strip().strip("'\""))
            return f"{key}={REDACTED}"
        return f"{key}{sep}{self.text(value)}" if sep else self.text(item)

    # --- the last scan ----------------------------------------------------------------------

    def _machine_paths(self) -> list[str]:
        """Absolute paths of this machine that a published file must not hold."""
        paths = {str(p) for p in self._bases()} | {
            str(Path.cwd()), sys.prefix, sys.exec_prefix, tempfile.gettempdir()}
        return sorted((p for p in paths if len(p) > 4), key=len, reverse=True)

    def literal_findings(self, block: bytes) -> str | None:
        """A secret, the home folder or a path of this machine anywhere in `block`."""
        for secret in self.secrets:
            if secret.encode() in block:
                return "a secret value (a token, or a value of a key that names a secret)"
        if len(self.home) > 1 and self.home.encode() in block:
            return f"the home folder {self.home}"
        for path in self._machine_paths():
            if path.encode() in block:
                return f"the local path {path}"
        return None

    def text_findings(self, text: str, own: Sequence[str] = (),
                      named: str | None = None) -> str | None:
        """The user name (outside the public ids that may hold it, and outside `own`: the
        tool's own wording in the file, where it is an ordinary word; in `named` alone when
        given, the part of the text that is not a template's), a patient id or an absolute
        path in the text of a file: of this machine or any other (a run trained on a cluster
        and pushed from a laptop holds the cluster's paths), inline base64 images aside."""
        named = _without(text if named is None else named, own)
        for allowed in sorted(self.allowed, key=len, reverse=True):
            text = text.replace(allowed, " ") if allowed else text
            named = named.replace(allowed, " ") if allowed else named
        for user in self.users:
            if re.search(rf"(?<![A-Za-z0-9]){re.escape(user)}(?![A-Za-z0-9])", named,
                         re.IGNORECASE):
                return f"the user name {user!r}"
        text = _DATA_URI.sub(" ", text)
        patient = self.patient_findings(text)
        if patient:
            return patient
        found = next(filter(None, (pattern.search(text) for pattern in (
            _ABSOLUTE, _HOME_OF, _WINDOWS))), None)
        return f"the path {found.group(1)}" if found else None

    def findings(self, data: bytes, name: str, own: Sequence[str] = (),
                 named: str | None = None) -> str | None:
        """The first private thing in a file's bytes, or None. Every byte is searched for
        secrets, the home folder and this machine's paths; the text (all of a text file, the
        metadata of a weights file, the text chunks of a PNG, each named where it is found) also
        for any absolute path, the run's patient ids and the user name (outside `own`, the
        tool's own wording in a file it wrote; in `named` when given)."""
        found = self.literal_findings(data)
        lowered = name.lower()
        if found or lowered.endswith(".safetensors"):
            return found or self.header_findings(_safetensors_header(io.BytesIO(data)))
        if lowered.endswith(".png"):
            return next(filter(None, (self._where(self.text_findings(_text(body), own),
                                                  f"PNG text chunk {keyword}")
                                      for keyword, body in png_text(data).items())), None)
        if lowered.endswith(BINARY):
            return None
        return self.text_findings(_text(data), own, named)

    def header_findings(self, header: bytes) -> str | None:
        """The first private thing in a safetensors header: in a value of its `__metadata__`
        (the part its writer filled in; named by its key), else an absolute path anywhere in it
        (the rest is the format's own keys and the tensors' names, such as `data_offsets`)."""
        metadata = _safetensors_metadata(header)
        if metadata is None:
            return self.text_findings(_text(header))
        return next(filter(None, (self._where(self.text_findings(value), f"metadata {key}")
                                  for key, value in metadata.items())), None) or (
            self.text_findings(_text(header), named=""))

    @staticmethod
    def _where(found: str | None, where: str) -> str | None:
        """`found` with where in the file it stands (a metadata key, a text chunk), so the
        refusal says what to take out."""
        return f"{found} ({where})" if found else None


def key_pieces(node: Any) -> tuple[str, ...]:
    """Every key of a JSON, TOML or YAML document as it stands before its value (`"k":`,
    `k =`, `k:`): names the tool, sd-scripts or the Hub chose, never the user's values."""
    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return {str(k) for k in node} | {k for value in node.values() for k in keys(value)}
        if isinstance(node, list):
            return {k for item in node for k in keys(item)}
        return set()

    return tuple(piece for key in sorted(keys(node))
                 for piece in (f'"{key}":', f"{key} =", f"{key}:"))


_PLACEHOLDERS = re.compile(r"\{\{[^{}]*\}\}|\{[^{}]*\}")


_EDGES = " \t,.;:!?-"
"""What `tool_wording` strips from a piece's ends: the punctuation a word takes in a sentence
or a name (`train:`, `image-`), which leaves a bare word the user may have written."""


@cache
def tool_wording() -> tuple[str, ...]:
    """The tool's own wording: the text of its templates and presets and the string literals
    of its modules, cut at their placeholders and lines, punctuation at their ends dropped.
    Only pieces of more than one bare word (`third party`, `sdxl_train_network.py`): a
    single word (`train:` is `train`) the user gave in a value stays searched."""
    pieces = {piece.strip().strip(_EDGES) for text in _tool_texts() for line in text.splitlines()
              for piece in _PLACEHOLDERS.split(line)}
    return tuple(sorted(piece for piece in pieces
                        if any(c.isalpha() for c in piece) and not piece.isalnum()))


@cache
def tool_words() -> frozenset[str]:
    """Every word of letters alone in the tool's own text, lower-cased (`unknown`,
    `patient`, `female`): a patient id that is one names no one."""
    return frozenset(word.lower() for text in _tool_texts()
                     for word in re.findall(r"[^\W\d_]+", text))


@cache
def _tool_texts() -> tuple[str, ...]:
    """The text of the tool's templates and presets (their TOML strings too) and the string
    literals of its modules."""
    import ast

    import toml

    from medsynth_kohya.resources import data_dir

    package = Path(__file__).resolve().parent.parent
    texts: list[str] = []
    for module in sorted(package.rglob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        texts += [node.value for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    for name in ("templates", "configs"):
        for resource in sorted(data_dir(name).iterdir()):
            text = resource.read_text(encoding="utf-8")
            texts.append(text)
            if resource.suffix == ".toml":
                with contextlib.suppress(toml.TomlDecodeError):
                    texts += _strings(toml.loads(text))
    return tuple(texts)


def _strings(node: Any) -> list[str]:
    """The string values of a parsed document."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return [node] if isinstance(node, str) else []


def _without(text: str, own: Sequence[str]) -> str:
    """`text` with each piece of `own` blanked where it stands as a whole (not inside a
    longer word, so a value such as `data_lora` keeps its words)."""
    pieces = sorted({piece for piece in own if piece.strip() and piece in text}, key=len,
                    reverse=True)
    if not pieces:
        return text
    pattern = "|".join((r"(?<!\w)" if piece[0].isalnum() or piece[0] == "_" else "")
                       + re.escape(piece)
                       + (r"(?!\w)" if piece[-1].isalnum() or piece[-1] == "_" else "")
                       for piece in pieces)
    return re.sub(pattern, " ", text)


def _text(data: bytes) -> str:
    """Bytes searched as text: a byte that is not UTF-8 (a binary part, a Latin-1 file) ends
    no search."""
    return data.decode("utf-8", "replace")


def _safetensors_header(file: BinaryIO) -> bytes:
    """The JSON header of a safetensors file read from its start (its length is the first 8
    bytes, little-endian)."""
    return file.read(min(int.from_bytes(file.read(8), "little"), files.MAX_HEADER))


def _safetensors_metadata(header: bytes) -> dict[str, str] | None:
    """A safetensors header's `__metadata__` (its writer's keys and values: sd-scripts' ss_*),
    empty when it has none; None when the header is not JSON."""
    try:
        metadata = json.loads(_text(header)).get("__metadata__") or {}
    except (ValueError, AttributeError):
        return None
    return {str(key): str(value) for key, value in metadata.items()} if isinstance(
        metadata, dict) else None


def png_text(data: bytes) -> dict[str, bytes]:
    """The tEXt, iTXt and zTXt chunks of a PNG (where generators write their parameters),
    each whole (its keyword included) under its keyword."""
    parts: dict[str, bytes] = {}
    at = 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, body = bytes(data[at + 4:at + 8]), bytes(data[at + 8:at + 8 + length])
        if kind == b"zTXt":
            with contextlib.suppress(zlib.error):
                body = body.split(b"\0", 1)[0] + b"\0" + zlib.decompress(
                    body.split(b"\0", 1)[-1][1:])
        elif kind == b"IEND":
            break
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keyword = _text(body.split(b"\0", 1)[0])
            parts[keyword] = parts[keyword] + b"\n" + body if keyword in parts else body
        at += 12 + length
    return parts


BLOCK = 64 * 2**20


def scan_file(policy: Policy, path: Path, name: str, own: Sequence[str] = ()) -> str | None:
    """`Policy.findings` of a file on disk, in bounded memory whatever its size (weights files
    are large): read in blocks, each searched with the end of the one before so that nothing
    is missed where two blocks meet, the text of a text file block by block, then a
    safetensors file's header. A PNG is read whole: its text chunks may sit anywhere, and the
    tool's own wording there (the negative prompt it wrote) is not taken for the user name;
    nor is `own` (a file the tool wrote: the tool's wording and its names there) in a text
    file."""
    lowered = name.lower()
    if lowered.endswith(".png"):  # its text holds the prompt file's words, e.g. "text font"
        return policy.findings(path.read_bytes(), name, (*tool_wording(), *own))
    textual = not lowered.endswith(BINARY)
    overlap = max(policy.longest(), 4096)
    tail = b""
    with path.open("rb") as file:
        while block := file.read(BLOCK):
            data = tail + block
            found = policy.literal_findings(data) or (
                policy.text_findings(_text(data), own) if textual else None)
            if found:
                return found
            tail = data[-overlap:]
        if not lowered.endswith(".safetensors"):
            return None
        file.seek(0)
        header = _safetensors_header(file)
    return policy.header_findings(header)
