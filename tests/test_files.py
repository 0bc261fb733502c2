"""files.py and outputs.py: writes that never leave half a file, copies that keep the user's
bytes and times, and the one-line words every stage says about folders, sizes and counts."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from medsynth_kohya import files, outputs
from medsynth_kohya.errors import UserError


def test_a_temporary_names_its_writer_and_keeps_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "img" / "ISIC_1.jpg"
    made = {files.temporary(path) for _ in range(50)}
    assert len(made) == 50  # unique to each call
    for temporary in made:
        assert temporary.parent == path.parent and temporary.suffix == ".jpg"
        assert temporary.name.startswith(".ISIC_1.jpg.") and temporary.name.endswith(".tmp.jpg")
        assert files.writer(temporary) == files.Writer(files.HOST, os.getpid())
    bare = files.temporary(tmp_path / "README")
    assert bare.name.endswith(".tmp") and files.writer(bare) == files.Writer(files.HOST,
                                                                             os.getpid())


@pytest.mark.parametrize(("name", "found"), [
    (".state.json.abcdef-12-0123abcd.tmp.json", files.Writer("abcdef", 12)),
    (".README.0a1b2c-7-ffffffff.tmp", files.Writer("0a1b2c", 7)),
    (".a.b.c.012345-99999-00000000.tmp.", files.Writer("012345", 99999)),
    ("state.json.abcdef-12-0123abcd.tmp.json", None),  # not hidden
    (".state.json.abcde-12-0123abcd.tmp.json", None),  # a host of 5 hex digits
    (".state.json.abcdefa-12-0123abcd.tmp.json", None),
    (".state.json.ABCDEF-12-0123abcd.tmp.json", None),
    (".state.json.abcdef-x2-0123abcd.tmp.json", None),
    (".state.json.abcdef--0123abcd.tmp.json", None),
    (".state.json.abcdef-12-0123abc.tmp.json", None),  # a token of 7
    (".state.json.abcdef-12-0123abcd.tmp.tar.gz", None),  # temporary keeps one suffix
    (".state.json.abcdef-12-0123abcd.txt", None),
    ("..abcdef-12-0123abcd.tmp", None),  # no name before the host
    (".draft.txt.tmp", None),
])
def test_only_a_name_temporary_makes_names_a_writer(name: str, found: files.Writer | None
                                                    ) -> None:
    assert files.writer(Path("/run") / name) == found


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "notes.txt"
    files.write_text(path, "first")
    files.write_text(path, "Ünïcode \u2013 second")  # its parents now exist
    assert path.read_bytes() == "Ünïcode \u2013 second".encode()
    assert [p.name for p in path.parent.iterdir()] == ["notes.txt"]


def test_a_rewritten_file_keeps_the_permissions_the_user_gave_it(tmp_path: Path) -> None:
    """A manifest made private (chmod 600) stays private when a command rewrites it; a hard
    link put in its place leaves its source's own alone."""
    private = tmp_path / "manifest.csv"
    private.write_text("id\n", encoding="utf-8")
    private.chmod(0o600)
    files.write_text(private, "id\nISIC_1\n")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text(encoding="utf-8") == "id\nISIC_1\n"
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"jpeg")
    source.chmod(0o644)
    with files.replacing(private, keep_mode=False) as written:
        os.link(source, written)
    assert stat.S_IMODE(source.stat().st_mode) == 0o644  # the source was not changed


def test_a_text_is_utf_8_whatever_the_locale_says(tmp_path: Path) -> None:
    """A machine whose locale is ASCII (a bare container, PYTHONCOERCECLOCALE=0) or Windows'
    cp1252 writes captions and records as the same UTF-8 bytes as this one, which every reader
    expects."""
    text = "caf\u00e9 \u2013 naevus"
    files.write_text(tmp_path / "here.txt", text)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0",
           "PYTHONUTF8": "0", "PYTHONPATH": str(Path(files.__file__).parents[1])}
    code = ("import sys; from pathlib import Path; from medsynth_kohya import files; "
            f"files.write_text(Path(sys.argv[1]), {text!a})")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ascii.txt")], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert {(tmp_path / name).read_bytes() for name in ("here.txt", "ascii.txt")} == {
        text.encode()}


def test_a_failed_write_keeps_the_old_file_and_raises_what_failed(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("the user's rows", encoding="utf-8")
    with pytest.raises(OSError, match="disk full"), files.replacing(path) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise OSError(errno.ENOSPC, "disk full")
    with pytest.raises(KeyboardInterrupt), files.replacing(path):  # the block never wrote
        raise KeyboardInterrupt
    assert path.read_text(encoding="utf-8") == "the user's rows"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_json_is_written_as_asked_with_paths_and_dates_as_text(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = {"z": Path("/data/img"), "a": date(2024, 5, 1), "é": [1, None]}
    files.write_json(path, data)
    text = path.read_text(encoding="utf-8")
    assert text == ('{\n  "z": "/data/img",\n  "a": "2024-05-01",\n  "\\u00e9": [\n    1,\n'
                    '    null\n  ]\n}')
    files.write_json(path, data, indent=None, sort_keys=True)
    assert path.read_text(encoding="utf-8") == (
        '{"a": "2024-05-01", "z": "/data/img", "\\u00e9": [1, null]}')
    assert json.loads(path.read_text(encoding="utf-8"))["z"] == "/data/img"


@pytest.mark.parametrize(("mode", "copied"), [(0o644, 0o644), (0o444, 0o644), (0o400, 0o600),
                                              (0o555, 0o755), (0o640, 0o640)])
def test_a_copy_has_the_bytes_time_and_mode_writable_by_its_owner(
        tmp_path: Path, mode: int, copied: int) -> None:
    source, target = tmp_path / "a.jpg", tmp_path / "b.jpg"
    source.write_bytes(os.urandom(2**20 + 3))
    os.utime(source, ns=(10**18, 10**18 + 7))
    source.chmod(mode)
    files.clone(source, target)
    assert target.read_bytes() == source.read_bytes() and not target.samefile(source)
    assert target.stat().st_mtime_ns == 10**18 + 7
    assert stat.S_IMODE(target.stat().st_mode) == copied
    assert stat.S_IMODE(source.stat().st_mode) == mode  # the source is left as it was


def test_a_clone_asks_for_the_source_s_blocks_and_copies_no_bytes_when_it_gets_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the file system clones (btrfs, xfs), the target is made by FICLONE on the target's
    descriptor with the source's as argument, and no byte copy follows."""
    source, target = tmp_path / "a.jpg", tmp_path / "b.jpg"
    source.write_bytes(b"photo" * 1000)
    target.write_bytes(b"an older, longer copy" * 1000)

    def cloned(fd: int, request: int, arg: int) -> None:
        assert request == files.FICLONE
        os.write(fd, os.pread(arg, 10**6, 0))

    def copied(*args: object) -> None:
        raise AssertionError("copied the bytes after a clone")

    monkeypatch.setattr(fcntl, "ioctl", cloned)
    monkeypatch.setattr(shutil, "copyfile", copied)
    files.clone(source, target)
    assert target.read_bytes() == b"photo" * 1000


def test_no_fcntl_is_a_byte_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no fcntl: the import fails and the bytes are copied."""
    monkeypatch.setitem(__import__("sys").modules, "fcntl", None)
    source, target = tmp_path / "a.jpg", tmp_path / "b.jpg"
    source.write_bytes(b"photo")
    files.clone(source, target)
    assert target.read_bytes() == b"photo"


def test_a_digest_reads_the_file_in_blocks_of_a_mebibyte(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    data = os.urandom(2 * 2**20 + 5)
    path.write_bytes(data)
    assert [len(block) for block in files.blocks(path)] == [2**20, 2**20, 5]
    assert files.sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert list(files.blocks(path)) == [] and files.sha256(path) == hashlib.sha256().hexdigest()


def _safetensors(header: bytes, length: int) -> bytes:
    return struct.pack("<Q", length) + header


@pytest.mark.parametrize("more", range(1, 10))
def test_a_header_longer_than_the_file_is_none_even_when_its_json_is_whole(
        tmp_path: Path, more: int) -> None:
    header = b'{"__metadata__": {}}'
    path = tmp_path / "lora.safetensors"
    path.write_bytes(_safetensors(header, len(header) + more))
    assert files.safetensors_header(path) is None
    path.write_bytes(_safetensors(header, len(header)))
    assert files.safetensors_header(path) == {"__metadata__": {}}


@pytest.mark.parametrize(("data", "header"), [
    (_safetensors(b"{}", 2), {}),
    (_safetensors(b"1", 1), None),
    (_safetensors(b"{} ", 2), {}),  # a header shorter than the file: the rest is tensors
    (struct.pack("<Q", 2)[:7], None),
    (struct.pack(">Q", 2) + b"{}", None),  # big-endian: a length of 2**57
])
def test_a_header_is_the_length_s_bytes_after_eight_little_endian_ones(
        tmp_path: Path, data: bytes, header: dict[str, object] | None) -> None:
    path = tmp_path / "lora.safetensors"
    path.write_bytes(data)
    assert files.safetensors_header(path) == header
    assert files.safetensors_header(tmp_path) is None  # a folder: cannot be read


def test_a_header_the_safetensors_library_refuses_is_not_read(tmp_path: Path) -> None:
    """Over 100,000,000 bytes the library sd-scripts loads with refuses the header: no LoRA."""
    path = tmp_path / "lora.safetensors"
    for length, header in ((100_000_000, {}), (100_000_001, None)):
        with path.open("wb") as file:
            file.write(struct.pack("<Q", length) + b"{}")
            file.write(b" " * (length - 2))
            file.write(b"\0" * 64)
        assert files.safetensors_header(path) == header


def test_sizes_keep_two_or_three_figures() -> None:
    """Below 10 of a unit one decimal, from 10 none; a count that rounds to 1.0 of a unit is
    said in it; bytes are whole."""
    assert [files.size_text(n) for n in (949, 960, 999, 9_949, 9_951, 10_000, 99_499,
                                         999_949, 12_345_678_901, 2.5e12, 800.7)] == [
        "949 B", "1.0 kB", "1.0 kB", "9.9 kB", "10 kB", "10 kB", "99 kB", "1.0 MB", "12 GB",
        "2500 GB", "800 B"]
    # decimal units: 1.05 of each, which a unit a byte larger would show as 1.0
    assert [files.size_text(1.05 * 1000**k) for k in (1, 2, 3)] == ["1.1 kB", "1.1 MB",
                                                                     "1.1 GB"]


def test_a_count_is_of_files_unless_it_names_its_noun() -> None:
    assert [files.counted(k) for k in (0, 1, 2)] == ["0 files", "1 file", "2 files"]


def test_folder_refusals_name_what_stands_in_the_way(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("x", encoding="utf-8")
    below = file / "a" / "b"
    with pytest.raises(files.FolderError) as raised:
        files.make_folder(below)
    assert str(raised.value) == f"cannot create {below}: {file} is a file; choose another folder"
    assert isinstance(raised.value, UserError)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(files.FolderError) as raised:
        files.make_folder(link / "sub")
    assert str(raised.value) == (f"cannot create {link / 'sub'}: {link} is a symlink to "
                                 f"{tmp_path / 'gone'}, which does not exist; choose another "
                                 "folder")
    refused = files.folder_error(tmp_path / "new", OSError(errno.EACCES, "Permission denied"),
                                 "write in")
    assert str(refused) == (f"cannot write in {tmp_path / 'new'}: Permission denied; choose "
                            "another folder")
    bare = files.folder_error(tmp_path, OSError("no reason given"))
    assert str(bare) == f"cannot create {tmp_path}: no reason given; choose another folder"
    assert files.folder_problem(tmp_path / "new", "Permission denied", "write in") == (
        f"cannot write in {tmp_path / 'new'}: Permission denied")  # the refusal less its fix


def test_a_folder_that_cannot_be_made_is_told_without_making_anything(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("x", encoding="utf-8")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    for folder in (file / "a" / "b", link / "sub", link):
        with pytest.raises(files.FolderError) as made:
            files.make_folder(folder)
        assert str(files.unmakeable(folder)) == str(made.value)
    assert files.unmakeable(tmp_path / "new" / "deeper") is None
    assert files.unmakeable(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt"]


def test_a_folder_the_system_refuses_is_one_line_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(files.FolderError) as raised:
        files.make_folder(tmp_path / "out")
    assert str(raised.value) == (f"cannot create {tmp_path / 'out'}: Read-only file system; "
                                 "choose another folder")


def test_make_folder_makes_parents_and_keeps_what_is_there(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "c"
    files.make_folder(folder)
    (folder / "kept.txt").write_text("the user's", encoding="utf-8")
    files.make_folder(folder)
    assert (folder / "kept.txt").read_text(encoding="utf-8") == "the user's"


def test_a_folder_argument_that_is_no_folder_is_one_line(tmp_path: Path) -> None:
    files.ensure_folder(tmp_path, "give another")  # a folder: nothing to say
    (tmp_path / "file").write_text("x", encoding="utf-8")
    said = []
    for path, option in ((tmp_path / "file", "--images"), (tmp_path / "none", "--images"),
                         (tmp_path / "file", "")):
        with pytest.raises(UserError) as raised:
            files.ensure_folder(path, "give the folder of the photos", option)
        said.append(str(raised.value))
    assert said == [
        f"--images {tmp_path / 'file'} is a file, not a folder: give the folder of the photos",
        f"--images {tmp_path / 'none'} does not exist: give the folder of the photos",
        f"{tmp_path / 'file'} is a file, not a folder: give the folder of the photos"]
    with pytest.raises(UserError, match=f"^{tmp_path / 'none'} does not exist: give it$"):
        files.ensure_folder(tmp_path / "none", "give it")


@pytest.mark.parametrize(("path", "shared"), [
    ("/home/ana/isic/prepared", "<local>/prepared"), ("prepared", "<local>/prepared"),
    ("C:\\Users\\ana\\isic\\run", "<local>/run"), ("/home/ana/run/", "<local>/run"),
    ("/", "<local>"), ("", "<local>"), ("C:\\", "<local>")])
def test_a_local_path_is_shared_by_its_last_name_alone(path: str, shared: str) -> None:
    assert outputs.local_name(path) == shared


def test_a_problems_line_counts_its_problems_and_claims_no_fix_they_do_not_name() -> None:
    """It closed with "fix each as it says" after problems that name no fix (an unknown option
    with no similar name, a machine with no GPU), and "fix each" after reproduce's one."""
    unknown = "unknown sd-scripts option 'x'; no option has a similar name"
    gpu = "machine 2 reports no NVIDIA GPU (nvidia-smi found none)"
    assert files.problems_line("it cannot run", [unknown], "run it elsewhere", alone=False) == (
        f"it cannot run (1 problem): {unknown}; fix it, or run it elsewhere")
    assert files.problems_line("it cannot run", [unknown, gpu]) == (
        f"it cannot run (2 problems): {unknown} | {gpu}; fix each")
    assert files.problems_line("it cannot run", [gpu]) == gpu


def test_a_missing_path_is_offered_the_one_that_exists_with_its_typo_mended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first missing part of the path, in another letter case or misspelt, replaced by
    the name beside it; nothing offered where that would not exist either, or none is alike."""
    (tmp_path / "isic-2020" / "train").mkdir(parents=True)
    (tmp_path / "Lora.safetensors").write_bytes(b"x")
    for given, meant in ((tmp_path / "isic_2020" / "train", tmp_path / "isic-2020" / "train"),
                         (tmp_path / "isic-2020" / "trian", tmp_path / "isic-2020" / "train"),
                         (tmp_path / "lora.safetensors", tmp_path / "Lora.safetensors")):
        assert files.near_name(given) == f" (did you mean {meant}?)"
    for given in (tmp_path / "isic_2020" / "val", tmp_path / "elsewhere",
                  tmp_path / "isic-2020" / "train"):
        assert files.near_name(given) == ""
    monkeypatch.chdir(tmp_path)
    assert files.near_name(Path("ISIC-2020/train")) == (
        f" (did you mean {Path('isic-2020/train')}?)")
