"""The upload plan's rules, piece by piece: which names are secrets, how paths are published,
and what the last scan finds in a file's bytes, its PNG text, its safetensors header, and
across the blocks a large file is read in."""

from __future__ import annotations

import getpass
import json
import struct
import sys
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from medsynth_kohya.hub import privacy

from .private import USER, make_home, png

SECRET = "wb_ScanMe0123456789"


def _policy(tmp_path: Path) -> privacy.Policy:
    home = tmp_path / "home" / USER
    policy = privacy.Policy(home / "runs" / "r1", allowed=[f"{USER}/melanoma-lora"],
                            home=str(home), users=[USER])
    policy.add_secret(SECRET)
    return policy


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
    for value in ("abc", privacy.REDACTED, "hf_Tok3n", 12345, "  ", "wxyz"):
        policy.add_secret(value)
    assert policy.secrets == ["hf_Tok3n", "s3cr3t-value", "12345", "wxyz"]
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
    versions = {"versions": {"packages": [{"tokenizers": "0.15.0"}]}}
    assert policy.data(versions) == versions  # package names, however they are spelt
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
    home = make_home(tmp_path, monkeypatch)
    run = home / "runs" / "r1"
    (run / "output").mkdir(parents=True)
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


def test_whole_paths_overrides_and_a_run_folder_with_a_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path, monkeypatch)
    run = home / "My Runs" / "r1"
    (run / "logs").mkdir(parents=True)
    policy = privacy.Policy(run, home=str(home), users=[USER])
    assert policy.text("/data") == "<local>/data" and policy.text("/d") == "<local>/d"
    assert policy.is_local(r"D:\data") and not policy.is_local("/")
    assert policy.path("/") == "<local>"
    assert policy.text(f"log in {run}/logs, done") == "log in logs, done"
    assert policy.text(f"saved in {run}") == "saved in ."
    assert policy.override("tokenizer_cache_dir=~/models/tok") == (
        "tokenizer_cache_dir=<local>/tok")
    assert policy.override(f"{home}/x/notes.txt") == "<local>/notes.txt"  # no `=`: a path
    long_text = "see a/" + "b" * 5000  # too long to name a file: published as written
    assert policy.text(long_text) == long_text


def test_a_linked_run_folder_is_relative_under_either_name(tmp_path: Path) -> None:
    """runs/r1 -> runs/r1-data: the longer name is made relative first, so the shorter one
    does not cut it."""
    real = tmp_path / "runs" / "r1-data"
    (real / "out").mkdir(parents=True)
    link = tmp_path / "runs" / "r1"
    link.symlink_to(real)
    policy = privacy.Policy(link, home="/", users=[])
    assert policy.text(f"saved in {real}/out and {link}/out") == "saved in out and out"


def test_the_scan_finds_each_private_thing_and_names_it(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    home = policy.home
    cases = {
        f"key {SECRET}": "a secret value (a token, or a value of a key that names a secret)",
        f"cache {home}/x": f"the home folder {home}",
        f"made by {USER.upper()} on a laptop": f"the user name {USER!r}",
        "weights at /usr/share/models/x.bin": "the path /usr/share/models/x.bin",
        r"weights at C:\Users\x\y.bin": r"the path C:\Users\x\y.bin",
        f"prefix {sys.prefix}/lib": f"the local path {sys.prefix}",
        f"working in {Path.cwd()}/x": f"the local path {Path.cwd()}",
    }
    for text, finding in cases.items():
        assert policy.findings(text.encode(), "notes.txt") == finding, text
    clean = f"see https://huggingface.co/{USER}/melanoma-lora and head/neck, {USER}x, x{USER}0"
    assert policy.findings(clean.encode(), "README.md") is None


def test_the_text_of_an_image_or_weights_file_is_scanned(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    name = f"made by {USER}".encode()
    assert policy.findings(b"\xff\xd8" + name, "x.jpg") is None
    assert policy.findings(b"\xff\xd8" + SECRET.encode(), "x.JPG") is not None
    assert policy.findings(png((b"tEXt", b"parameters\0" + name)), "s.png") is not None
    assert policy.findings(png((b"iTXt", b"parameters\0" + name)), "s.PNG") is not None
    zipped = b"parameters\0\0" + zlib.compress(name)
    assert policy.findings(png((b"zTXt", zipped)), "s.png") is not None
    assert policy.findings(png((b"zTXt", b"parameters\0\0not zlib " + name)), "s.png")
    assert policy.findings(png((b"tEXt", USER.encode() + b"\0x")), "s.png") is not None
    assert policy.findings(png((b"zTXt", b"no separator " + name)), "s.png") is not None
    two = png((b"tEXt", b"Author\0" + USER.encode()), (b"tEXt", b"Software\0x"))
    assert policy.findings(two, "s.png") == f"the user name {USER!r} (PNG text chunk Author)"
    assert policy.findings(png((b"IDAT", name)), "s.png") is None
    after_end = png() + struct.pack(">I", len(name)) + b"tEXt" + name + b"\0\0\0\0"
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
    assert privacy.scan_file(policy, weights, "l.safetensors") == (
        f"the user name {USER!r} (metadata ss_author)")
    weights.write_bytes(_safetensors({}, f"made by {USER}".encode() + b"\0" * 300))
    assert privacy.scan_file(policy, weights, "l.safetensors") is None
    notes = tmp_path / "notes.bin"
    notes.write_bytes(b"\0" * 100 + f" by {USER} ".encode() + b"\0" * 100)
    assert privacy.scan_file(policy, notes, "notes.bin") is None
    small = tmp_path / "small.txt"
    small.write_bytes(f"by {USER}".encode())
    assert privacy.scan_file(policy, small, "small.txt") == f"the user name {USER!r}"


def test_the_scan_names_the_most_precise_path_of_this_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run folder inside the working folder is named as the run folder; short system
    folders (/tmp, /usr) are no finding on their own (a weights file holds such bytes by
    chance), a longer one is."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r1"
    policy = privacy.Policy(run, home=str(tmp_path / "elsewhere" / USER), users=[USER])
    assert policy.findings(f"log in {run}/logs".encode(), "notes.txt") == (
        f"the local path {run}")
    assert policy.findings(f"{tmp_path}/x".encode(), "l.bin") == f"the local path {tmp_path}"
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    assert policy.findings(b"\0/tmp\0/usr\0", "l.bin") is None
    monkeypatch.setattr(tempfile, "tempdir", "/data")
    assert policy.findings(b"\0/data\0", "l.bin") == "the local path /data"


def test_a_home_folder_is_searched_unless_it_is_the_root(tmp_path: Path) -> None:
    """HOME=/ (a container's) would match every path; any other home, however short, is
    searched for."""
    root = privacy.Policy(tmp_path / "run", home="/", users=[])
    assert root.findings(b"/opt/x", "l.bin") is None and root.text("a/b, c") == "a/b, c"
    short = privacy.Policy(tmp_path / "run", home="/h", users=[])
    assert short.findings(b"cache /h/x", "l.bin") == "the home folder /h"
    assert short.text("file:/h/x") == "file:<local>/x"


def test_public_ids_hide_the_user_name_only_where_they_stand(tmp_path: Path) -> None:
    """An id that holds the user name may be published (the repo id, a Hub model id), even
    when a shorter public id stands inside it; the name right beside an id, or with an empty
    id among them, is still found."""
    long_id = f"lab/{USER}-melanoma"
    policy = privacy.Policy(tmp_path / "run", allowed=["melanoma", long_id], home="/",
                            users=[USER])
    assert policy.findings(f"base model {long_id}".encode(), "README.md") is None
    assert policy.findings(f"{long_id}{USER}".encode(), "README.md") == (
        f"the user name {USER!r}")
    policy.allowed.append("")
    assert policy.findings(f"by {USER}".encode(), "README.md") == f"the user name {USER!r}"


def test_a_text_that_is_not_utf8_is_still_searched(tmp_path: Path) -> None:
    latin1 = f"Zoë's run, made by {USER}".encode("latin-1")
    assert _policy(tmp_path).findings(b"\xff\xfe" + latin1, "notes.txt") == (
        f"the user name {USER!r}")


def test_every_block_of_a_large_text_file_is_searched_as_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A text file over a block (a large report) is searched for the user name and absolute
    paths in every block and where two meet (a block that ends inside a path names the path's
    beginning); a secret longer than a block is found too."""
    monkeypatch.setattr(privacy, "BLOCK", 64)
    policy = _policy(tmp_path)
    path = tmp_path / "report.html"
    for at in (0, 58, 64, 150):
        for planted, finding in ((USER, f"the user name {USER!r}"),
                                 ("/usr/share/x", "the path /usr/s")):
            data = bytearray(b" " * 300)
            data[at:at + len(planted)] = planted.encode()
            path.write_bytes(bytes(data))
            found = privacy.scan_file(policy, path, "report.html")
            assert found is not None and found.startswith(finding), (planted, at)
    path.write_bytes(b" " * 64)
    assert privacy.scan_file(policy, path, "report.html") is None
    long_secret = "L0ng-" * 30
    policy.add_secret(long_secret)
    path.write_bytes(b"\0" * 50 + long_secret.encode() + b"\0" * 50)
    assert privacy.scan_file(policy, path, "l.bin") == (
        "a secret value (a token, or a value of a key that names a secret)")


def test_a_large_image_has_its_text_chunks_searched(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "BLOCK", 64)
    image = tmp_path / "s.png"
    image.write_bytes(png((b"IDAT", b"\0" * 200), (b"tEXt", f"parameters\0{USER}".encode())))
    assert privacy.scan_file(_policy(tmp_path), image, "samples/s.png") == (
        f"the user name {USER!r} (PNG text chunk parameters)")


def test_a_large_file_is_scanned_in_bounded_memory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file is never read whole: a 4 MiB LoRA in 64 KiB blocks peaks far below its
    size, and its header is read once more on its own."""
    monkeypatch.setattr(privacy, "BLOCK", 64 * 1024)
    weights = tmp_path / "l.safetensors"
    weights.write_bytes(_safetensors({"ss_author": USER}, b"\0" * (4 * 2**20)))
    policy = _policy(tmp_path)
    tracemalloc.start()
    try:
        found = privacy.scan_file(policy, weights, "l.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == f"the user name {USER!r} (metadata ss_author)"
    assert peak < 2**20


@pytest.mark.parametrize(("home", "login", "users"), [
    ("zoe-kowalski", "zkowal", ["zkowal", "zoe-kowalski"]),
    ("Ubuntu", "root", []),
    ("zoe-kowalski", "ab", ["zoe-kowalski"]),
    ("ana", "bob", ["ana", "bob"]),
    ("jovyan", KeyError, []),
    ("zoe-kowalski", OSError, ["zoe-kowalski"]),
])
def test_the_user_names_searched_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str,
                                     login: str | type[Exception], users: list[str]) -> None:
    """The home folder's name and the login, unless short or shared by every machine of a
    kind; a login that cannot be found (a container's unnamed uid: KeyError, OSError from
    Python 3.13) is no error."""
    monkeypatch.setenv("HOME", str(tmp_path / home))

    def no_login() -> str:
        assert isinstance(login, type)
        raise login("getpwuid(): uid not found: 1000")

    if isinstance(login, str):
        monkeypatch.setenv("LOGNAME", login)
    else:
        monkeypatch.setattr(getpass, "getuser", no_login)
    assert privacy.Policy(tmp_path / "run").users == users


def test_a_path_of_another_machine_is_found_and_named_where_it_stands(tmp_path: Path) -> None:
    """A run trained on a cluster and pushed from a laptop: its paths name no folder here, yet
    publish the cluster's folders and user; the metadata key or PNG text chunk is named. What
    sd-scripts writes there itself (its keys, bare folder names, `1/8`, URLs, an architecture id)
    and an evaluate page's inline images are no path."""
    policy = _policy(tmp_path)
    comment = "trained by bob from /scratch/bob/isic on gpu17"
    assert policy.findings(_safetensors({"ss_training_comment": comment}, b"\0" * 16),
                           "l.safetensors") == (
        "the path /scratch/bob/isic (metadata ss_training_comment)")
    assert policy.findings(png((b"tEXt", b"parameters\0--ckpt /scratch/bob/sd.safetensors")),
                           "s.png") == (
        "the path /scratch/bob/sd.safetensors (PNG text chunk parameters)")
    for text, found in (("from ~bob/isic", "~bob/isic"), (r"at D:\U\bob\x", r"D:\U\bob\x"),
                        ("at E:/U/bob/x", "E:/U/bob/x"), ("--vae=/work/m/v.pt", "/work/m/v.pt")):
        assert policy.findings(text.encode(), "notes.txt") == f"the path {found}", text
    sd_scripts = {"ss_output_name": "melanoma", "ss_dataset_dirs": json.dumps(
        {"4_melanoma": {"n_repeats": 4, "img_count": 7}}), "ss_sd_model_name":
        "stabilityai/stable-diffusion-xl-base-1.0", "ss_optimizer":
        "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01)", "ss_network_module":
        "networks.lora", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "ss_tag_frequency": json.dumps({"4_melanoma": {"head/neck": 1, "1/8 hair": 2}}),
        "modelspec.resolution": "1024x1024", "ss_network_args": json.dumps({"conv_dim": "4"})}
    assert policy.findings(_safetensors(sd_scripts, b"\0" * 16), "l.safetensors") is None
    generated = png(*((b"tEXt", key + b"\0" + value) for key, value in (
        (b"prompt", b"dermoscopy of melanoma, head/neck, ~1/8 hairy"), (b"seed", b"42"),
        (b"raw-prompt", b"melanoma --n blurry --w 1024 --h 1024 --d 42"))))
    assert policy.findings(generated, "s.png") is None
    page = "<img src='data:image/jpeg;base64,/9j/4AAQSk+/ab/cd=='></td> see https://x.org/a/b"
    assert policy.findings(page.encode(), "report.html") is None


def test_a_patient_id_is_refused_where_it_stands_whole(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest's patient id is found in the text of a file (a report's training id, a PNG's
    text chunk, a LoRA's metadata, a large file's blocks) in any case, but not inside a longer
    word or number; a short or common one (`p`, `1`, `unknown`) is not searched for."""
    policy = _policy(tmp_path)
    policy.add_patients(["IP_1234500", "p", "1", "1234", "unknown", "Patient", "  ", "IP_77777"])
    found = "the patient id 'IP_1234500' (a patient_id of the run's prepared manifest)"
    for text in ("SYN_0000000 ~ IP_1234500_Smith_John_019: 0.498", '"training_id": "ip_1234500"',
                 "photo-IP_1234500.jpg"):
        assert policy.findings(text.encode(), "evaluation/report.json") == found, text
    clean = ("XIP_1234500 IP_12345001 IP_1234500a p 1 1234 unknown patient Patient P 12345 "
             "IP_7777 IP_777770")
    assert policy.findings(clean.encode(), "evaluation/report.html") is None
    assert policy.findings(png((b"tEXt", b"parameters\0like IP_77777")), "s.png") == (
        "the patient id 'IP_77777' (a patient_id of the run's prepared manifest) "
        "(PNG text chunk parameters)")
    assert policy.findings(_safetensors({"ss_comment": "IP_1234500"}, b"\0" * 16),
                           "l.safetensors") == f"{found} (metadata ss_comment)"
    monkeypatch.setattr(privacy, "BLOCK", 64)
    path = tmp_path / "report.html"
    for at in (0, 58, 64, 150):
        data = bytearray(b" " * 300)
        data[at:at + 10] = b"IP_1234500"
        path.write_bytes(bytes(data))
        assert privacy.scan_file(policy, path, "report.html") == found, at
