"""The upload plan's rules, piece by piece: which names are secrets, how paths are published,
and what the last scan finds in a file's bytes, its PNG text, its safetensors header, and
across the blocks a large file is read in."""

from __future__ import annotations

import getpass
import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

from medsynth_kohya.hub import privacy

USER = "zoe-kowalski"
SECRET = "wb_ScanMe0123456789"


def _policy(tmp_path: Path) -> privacy.Policy:
    home = tmp_path / "home" / USER
    policy = privacy.Policy(home / "runs" / "r1", allowed=[f"{USER}/melanoma-lora"],
                            home=str(home), users=[USER])
    policy.add_secret(SECRET)
    return policy


def _png(*chunks: tuple[bytes, bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + header + b"".join(chunk(k, d) for k, d in chunks)
            + chunk(b"IEND", b""))


def _safetensors(metadata: dict[str, str], payload: bytes) -> bytes:
    header = json.dumps({"__metadata__": metadata}).encode()
    return struct.pack("<Q", len(header)) + header + payload


def test_environment_secrets_are_the_long_values_of_secret_names() -> None:
    environ = {"WANDB_API_KEY": "0123456789", "HF_TOKEN": " short ", "PATH": "/usr/bin:/bin",
               "GITHUB_AUTH": "12345678", "HOME": "/home/zoe-kowalski"}
    assert privacy.environment_secrets(environ) == ["0123456789", "12345678"]


def test_a_secret_is_remembered_once_and_only_when_long_enough(tmp_path: Path) -> None:
    policy = privacy.Policy.for_run(tmp_path, token=" hf_Tok3n ", environ={
        "MY_SECRET": "s3cr3t-value", "OTHER": "not-a-secret-name"})
    for value in ("abc", privacy.REDACTED, "hf_Tok3n", 12345, "  "):
        policy.add_secret(value)
    assert policy.secrets == ["hf_Tok3n", "s3cr3t-value", "12345"]
    assert privacy.Policy.for_run(tmp_path, environ={}).secrets == []


def test_secret_values_are_redacted_wherever_they_sit(tmp_path: Path) -> None:
    policy = privacy.Policy(tmp_path / "run", home="/", users=[])
    document = {"hf_token": {"nested": ["tok-in-a-list", 12345, True]}, "flag_key": False,
                "empty_key": "", "versions": {"token": "1.2.3"}, "note": "uses tok-in-a-list"}
    policy.collect(document)
    assert policy.secrets == ["tok-in-a-list", "12345"]
    published = policy.data(document)
    assert published == {"hf_token": privacy.REDACTED, "flag_key": privacy.REDACTED,
                          "empty_key": "",
                          "versions": {"token": "1.2.3"},
                          "note": f"uses {privacy.REDACTED}"}
    assert policy.data({"servers": [{"name": "s3", "password": "pw-in-a-table"}]}) == {
        "servers": [{"name": "s3", "password": privacy.REDACTED}]}
    assert policy.override("wandb_api_key=c2VjcmV0LXZhbHVl==") == (
        f"wandb_api_key={privacy.REDACTED}")
    policy.override("api_key=XsecretX")
    assert {"pw-in-a-table", "c2VjcmV0LXZhbHVl==", "XsecretX"} <= set(policy.secrets)
    assert policy.override("keep_tokens=2") == "keep_tokens=2"
    assert policy.override(" api_key = 'quoted-secret' ") == f" api_key ={privacy.REDACTED}"
    assert "quoted-secret" in policy.secrets
    assert policy.data(["--keep_tokens=3", "lr=1e-4", "not an assignment key=x"]) == [
        "--keep_tokens=3", "lr=1e-4", "not an assignment key=x"]


def test_paths_as_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / USER
    run = home / "runs" / "r1"
    (run / "output").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    policy = privacy.Policy(run, home=str(home), users=[USER])
    assert policy.text("~/models/base.safetensors") == "<local>/base.safetensors"
    assert policy.text("~/runs/r1/output") == "output"
    assert policy.text("runs/r1/output") == "output"
    assert policy.text("runs/r1/missing") == "runs/r1/missing"
    assert policy.text("/") == "/" and policy.text("//server/share") == "//server/share"
    assert policy.text(f"saved to {home}/elsewhere/x.bin") == "saved to <local>/x.bin"
    assert policy.text(f"log in {run}/logs, done") == "log in logs, done"
    assert policy.text(f"{run}") == "."
    assert policy.text(r"D:\data\isic") == "<local>/isic"
    assert policy.text(r"saved to D:\data\isic.jpg now") == "saved to <local>/isic.jpg now"
    assert policy.path("relative/name.txt") == "<local>/name.txt"
    assert policy.is_local("~") and policy.is_local("~\\x") and not policy.is_local("~x")


def test_the_scan_finds_each_private_thing_and_names_it(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    home = policy.home
    cases = {
        f"key {SECRET}": "a secret value (a token, or a value of a key that names a secret)",
        f"cache {home}/x": f"the home folder {home}",
        f"made by {USER.upper()} on a laptop": f"the user name {USER!r}",
        "weights at /usr/share/models/x.bin": "the local path /usr/share/models/x.bin",
        r"weights at C:\Users\x\y.bin": r"the local path C:\Users\x\y.bin",
        f"prefix {sys.prefix}/lib": f"the local path {sys.prefix}",
        f"working in {Path.cwd()}/x": f"the local path {Path.cwd()}",
    }
    for text, finding in cases.items():
        assert policy.findings(text.encode(), "notes.txt") == finding, text
    clean = (f"see https://huggingface.co/{USER}/melanoma-lora and /nonexistent-top/a/b, "
             f"head/neck, {USER}x, x{USER}0")
    assert policy.findings(clean.encode(), "README.md") is None


def test_the_text_of_an_image_or_weights_file_is_scanned(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    name = f"made by {USER}".encode()
    assert policy.findings(b"\xff\xd8" + name, "x.jpg") is None
    assert policy.findings(b"\xff\xd8" + SECRET.encode(), "x.JPG") is not None
    assert policy.findings(_png((b"tEXt", b"parameters\0" + name)), "s.png") is not None
    assert policy.findings(_png((b"iTXt", b"parameters\0" + name)), "s.PNG") is not None
    zipped = b"parameters\0\0" + zlib.compress(name)
    assert policy.findings(_png((b"zTXt", zipped)), "s.png") is not None
    assert policy.findings(_png((b"zTXt", b"parameters\0\0not zlib " + name)), "s.png")
    assert policy.findings(_png((b"tEXt", USER.encode() + b"\0x")), "s.png") is not None
    assert policy.findings(_png((b"zTXt", b"no separator " + name)), "s.png") is not None
    two = _png((b"tEXt", b"Author\0" + USER.encode()), (b"tEXt", b"Software\0x"))
    assert policy.findings(two, "s.png") == f"the user name {USER!r}"
    assert policy.findings(_png((b"IDAT", name)), "s.png") is None
    after_end = _png() + struct.pack(">I", len(name)) + b"tEXt" + name + b"\0\0\0\0"
    assert policy.findings(after_end, "s.png") is None
    assert policy.findings(_safetensors({"ss_author": USER}, b"\0" * 16), "l.safetensors")
    assert policy.findings(_safetensors({}, name), "l.safetensors") is None


def test_a_large_file_is_scanned_across_its_blocks(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "BLOCK", 64)
    policy = _policy(tmp_path)
    path = tmp_path / "big.bin"
    for at in (0, 50, 60, 63, 64, 200):
        data = bytearray(b"\0" * 300)
        data[at:at + len(SECRET)] = SECRET.encode()
        path.write_bytes(bytes(data))
        assert privacy.scan_file(policy, path, "big.bin") == policy.findings(
            bytes(data), "big.bin"), at
        assert privacy.scan_file(policy, path, "big.bin") is not None, at
    path.write_bytes(b"\0" * 300)
    assert privacy.scan_file(policy, path, "big.bin") is None
    weights = tmp_path / "l.safetensors"
    weights.write_bytes(_safetensors({"ss_author": USER}, b"\0" * 300))
    assert privacy.scan_file(policy, weights, "l.safetensors") == f"the user name {USER!r}"
    weights.write_bytes(_safetensors({}, f"made by {USER}".encode() + b"\0" * 300))
    assert privacy.scan_file(policy, weights, "l.safetensors") is None
    notes = tmp_path / "notes.bin"
    notes.write_bytes(b"\0" * 100 + f" by {USER} ".encode() + b"\0" * 100)
    assert privacy.scan_file(policy, notes, "notes.bin") is None
    small = tmp_path / "small.txt"
    small.write_bytes(f"by {USER}".encode())
    assert privacy.scan_file(policy, small, "small.txt") == f"the user name {USER!r}"


@pytest.mark.parametrize(("home", "login", "users"), [
    ("zoe-kowalski", "zkowal", ["zkowal", "zoe-kowalski"]),
    ("Ubuntu", "root", []),
    ("zoe-kowalski", "ab", ["zoe-kowalski"]),
    ("jovyan", None, []),
])
def test_the_user_names_searched_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     home: str, login: str | None, users: list[str]) -> None:
    """The home folder's name and the login, unless short or shared by every machine of a
    kind; a login that cannot be found (a container's unnamed uid) is no error."""
    monkeypatch.setenv("HOME", str(tmp_path / home))

    def no_login() -> str:
        raise KeyError("getpwuid(): uid not found: 1000")

    if login is None:
        monkeypatch.setattr(getpass, "getuser", no_login)
    else:
        monkeypatch.setenv("LOGNAME", login)
    assert privacy.Policy(tmp_path / "run").users == users
