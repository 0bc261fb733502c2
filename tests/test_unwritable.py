"""An output folder that cannot be made or written in is one line naming it and why, for every
command; an OSError that is a bug keeps its traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke, one_line_error

COMMANDS = {
    "prepare": ["prepare", "{source}", "--out", "{out}"],
    "train": ["train", "{prepared}", "--preset", "cpu-smoke", "--run-dir", "{out}", "--dry-run"],
    "sample": ["sample", "--lora", "{run}", "--n", "2", "--out", "{out}", "--dry-run"],
    "evaluate": ["evaluate", "--synthetic", "{source}", "--real", "{source}", "--out", "{out}"],
    "reproduce": ["reproduce", "{source}", "--workdir", "{out}"],
    "demo": ["demo", "--out", "{out}"],
}


def _invoke(runner: CliRunner, command: str, out: Path, source: Path, prepared: Path,
            run: Path) -> tuple[int, str, str]:
    words = [word.format(source=source, prepared=prepared, run=run, out=out)
             for word in COMMANDS[command]]
    return invoke(runner, *words)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_below_a_file_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                         prepared: Path, trained: Path, command: str) -> None:
    out = isic2020.metadata / "sub"
    line = one_line_error(*_invoke(runner, command, out, isic2020.root, prepared, trained))
    assert f"cannot create {out}" in line
    assert f"{isic2020.metadata} is a file; choose another folder" in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("below", [False, True])
def test_an_out_that_is_a_symlink_to_nothing_is_one_line(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path, trained: Path,
        tmp_path: Path, command: str, below: bool) -> None:
    """The system says only "File exists" (a link is there, to a folder that is not)."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone" / "folder")
    out = link / "sub" if below else link
    line = one_line_error(*_invoke(runner, command, out, isic2020.root, prepared, trained))
    said = " ".join(line.split())
    assert f"cannot create {out}" in said  # demo names the first folder it makes in it
    assert (f": {link} is a symlink to {tmp_path / 'gone' / 'folder'}, which does not exist; "
            "choose another folder") in said


@pytest.mark.parametrize("command", ["prepare", "train", "sample", "evaluate"])
@pytest.mark.parametrize("system", ["/sys", "/proc"])
def test_an_out_the_system_refuses_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                               prepared: Path, trained: Path, command: str,
                                               system: str) -> None:
    if not Path(system, "self").exists() and not Path(system, "kernel").is_dir():
        pytest.skip(f"no Linux {system} here")
    out = Path(system, "medsynth-test")
    line = one_line_error(*_invoke(runner, command, out, isic2020.root, prepared, trained))
    assert line.startswith(f"Error: cannot create {out}: ")
    assert line.endswith("; choose another folder")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_whose_name_is_too_long_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                                   prepared: Path, trained: Path, tmp_path: Path,
                                                   command: str) -> None:
    """A name longer than the file system allows (255 bytes on most) fails every look at the
    path, not only the write: one line saying so, whichever look came first."""
    outs = tmp_path / "outs"
    outs.mkdir()
    out = outs / ("x" * 300) / "out"
    line = one_line_error(*_invoke(runner, command, out, isic2020.root, prepared, trained))
    assert line.endswith("File name too long; choose a shorter path, then run this again")
    assert not list(outs.iterdir())


def test_a_folder_it_may_not_write_in_is_one_line(runner: CliRunner, isic2020: SyntheticSet,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya import locks

    def refuse(*_: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(locks, "_acquire", refuse)
    out = tmp_path / "out"
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", out))
    assert f"cannot write in {out}: Permission denied; choose another folder" in line
    assert not out.exists()  # the folder it made is removed again


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_names_the_file_a_write_was_writing(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A write to an open file fails with no file named in the error (the disk filled while
    writing it): the line names the file all the same, or, where no path wrote it, the disk
    of the folder the command writes to; never "free space there" with no there."""
    from medsynth_kohya.data import prepare

    def fill(*_: object, **__: object) -> None:
        Path("/dev/full").write_bytes(b"photo")  # ENOSPC from write(), as a full disk gives

    monkeypatch.setattr(prepare, "prepare", fill)
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert line.endswith("/dev/full: No space left on device; free space there, then run this "
                         "again")

    def fill_open_file(*_: object, **__: object) -> None:
        with open("/dev/full", "wb", buffering=0) as stream:  # noqa: PTH123 - no Path here
            stream.write(b"photo")

    monkeypatch.setattr(prepare, "prepare", fill_open_file)
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert line.endswith("No space left on device; free space on the disk of the folder this "
                         "command writes to, then run this again")

def test_a_full_disk_is_one_line_and_other_os_errors_stay_visible(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.data import prepare

    failure: OSError = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o/x"))

    def fail(*_: object, **__: object) -> None:
        raise failure

    monkeypatch.setattr(prepare, "prepare", fail)
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert line.endswith(f"{tmp_path / 'o/x'}: No space left on device; free space there, then "
                         "run this again")
    failure = PermissionError(errno.EACCES, "Permission denied", "photo.jpg")
    line = one_line_error(*invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o"))
    assert line.endswith("photo.jpg: Permission denied; check its permissions or choose another "
                         "folder, then run this again")
    failure = FileNotFoundError(errno.ENOENT, "No such file or directory", "gone")
    with pytest.raises(FileNotFoundError):  # a bug: its traceback is kept
        invoke(runner, "prepare", isic2020.root, "--out", tmp_path / "o")
