"""`fetch-isic` at its boundary: the exact isic-cli command, and prepare on what it writes."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.fetch import MARK_FILE
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts.launch import ISIC_MELANOMA_SEARCH

from .conftest import invoke
from .fakes import install_fake_isic, put_isic


@pytest.fixture
def fake_isic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_fake_isic(tmp_path, monkeypatch)


def test_dry_run_prints_the_exact_command(runner: CliRunner, tmp_path: Path) -> None:
    code, stdout, _ = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--limit", 5,
                             "--dry-run")
    assert code == 0
    words = shlex.split(stdout.strip().split("&&", 1)[1])
    assert words == ["isic", "image", "download", "--search", ISIC_MELANOMA_SEARCH,
                     "--collections", "70", "--limit", "5", str(tmp_path / "isic")]


def test_dry_run_says_that_a_missing_isic_cli_would_stop_the_real_run(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, stdout, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--dry-run")
    assert code == 0 and "isic image download" in stdout
    said = " ".join(stderr.split())
    assert "a real run would stop at: isic-cli is not installed" in said
    assert "pip install 'medsynth-kohya[fetch]'" in said
    install_fake_isic(tmp_path, monkeypatch)
    code, stdout, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--dry-run")
    assert code == 0 and "isic image download" in stdout and "not installed" not in stderr


def test_download_then_prepare(runner: CliRunner, tmp_path: Path, fake_isic: Path) -> None:
    out = tmp_path / "my isic"  # the next command it suggests quotes the folder
    code, stdout, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    argv = ["image", "download", "--search", ISIC_MELANOMA_SEARCH, "--collections", "70",
            str(out)]
    assert json.loads(fake_isic.read_text(encoding="utf-8")) == argv
    assert json.loads((out / MARK_FILE).read_text(encoding="utf-8")) == {
        "tool": "medsynth-kohya", "command": "fetch-isic", "argv": ["isic", *argv]}
    assert "Downloaded 6 images" in stdout
    assert shlex.split(stdout.split("next: ", 1)[1]) == [
        "medsynth-kohya", "prepare", str(out), "--out", "data/melanoma"]
    code, stdout, stderr = invoke(runner, "prepare", out, "--out", tmp_path / "data")
    assert code == 0, stderr
    assert len(list((tmp_path / "data" / "img" / "1_melanoma").glob("*.jpg"))) == 6
    skipped = (tmp_path / "data" / "skipped.csv").read_text(encoding="utf-8").splitlines()
    assert skipped == ["id,source,reason"]


def test_a_download_under_way_is_not_prepared_nor_one_being_read_fetched_into(
        runner: CliRunner, tmp_path: Path, fake_isic: Path) -> None:
    """prepare of a folder fetch-isic was still downloading into prepared the photos there so
    far; fetch-isic into a download an evaluate reads (--real) changed it under it. fetch-isic,
    which has no --force, is not told that --force would not help."""
    from medsynth_kohya import locks

    out = tmp_path / "isic"
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    with locks.hold(out, "fetch-isic"):
        code, _, stderr = invoke(runner, "prepare", out, "--out", tmp_path / "data")
    said = " ".join(stderr.split())
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{out} is still being written by `medsynth-kohya fetch-isic`" in said
    assert "`prepare` needs it finished" in said and not (tmp_path / "data" / "img").exists()
    with locks.reading(out, "evaluate"):
        code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    said = " ".join(stderr.split())
    assert code == 1 and f"{out} is being read by `medsynth-kohya evaluate`" in said, stderr
    assert "write into another folder" in said and "--force" not in said, said
    with locks.hold(out, "fetch-isic"):
        code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    said = " ".join(stderr.split())
    assert code == 1 and f"{out} is in use by `medsynth-kohya fetch-isic`" in said, stderr
    assert said.rstrip().endswith("then run this again") and "--force" not in said, said


def test_a_download_being_prepared_is_not_fetched_into(
        runner: CliRunner, tmp_path: Path, fake_isic: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch-isic started into a download while prepare read it changed its photos under
    prepare: it is refused while prepare runs, and runs once prepare has ended."""
    from medsynth_kohya.data import prepare as preparing
    from medsynth_kohya.data.fetch import fetch_isic
    from medsynth_kohya.errors import UserError

    out = tmp_path / "isic"
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    refusals: list[str] = []
    choose = preparing._choose

    def fetch_meanwhile(*args: object, **kwargs: object) -> object:
        try:
            fetch_isic(out)
        except UserError as exc:
            refusals.append(str(exc))
        return choose(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(preparing, "_choose", fetch_meanwhile)
    code, _, stderr = invoke(runner, "prepare", out, "--out", tmp_path / "data")
    assert code == 0, stderr
    assert len(refusals) == 1 and f"{out} is being read by `medsynth-kohya prepare`" in \
        refusals[0], refusals
    monkeypatch.setattr(preparing, "_choose", choose)
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr


def test_a_first_download_under_way_without_its_metadata_yet_is_not_prepared(
        runner: CliRunner, tmp_path: Path) -> None:
    """isic-cli writes metadata.csv after every image: prepare of a first download under way
    says that fetch-isic is still writing it, not that the folder has no metadata."""
    from medsynth_kohya import locks
    from medsynth_kohya.data.synth import make_dataset

    out = tmp_path / "isic"
    with locks.hold(out, "fetch-isic"):
        made = make_dataset(out, 3, seed=5, layout="archive")
        made.metadata.unlink()
        code, _, stderr = invoke(runner, "prepare", out, "--out", tmp_path / "data")
    said = " ".join(stderr.split())
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{out} is still being written by `medsynth-kohya fetch-isic`" in said, said
    assert "`prepare` needs it finished" in said and not (tmp_path / "data" / "img").exists()

def test_failures_are_one_line_errors(runner: CliRunner, tmp_path: Path, fake_isic: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ISIC_EXIT", "2")
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "Error: isic image download failed (exit 2); check the messages above and run the "
        "same command again"), stderr
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic2")
    assert code == 1 and "medsynth-kohya[fetch]" in stderr


def test_a_silent_isic_cli_is_given_up_after_the_timeout(runner: CliRunner, tmp_path: Path,
                                                         fake_isic: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ISIC_HANG", "60")
    started = time.monotonic()
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--timeout", 2)
    assert time.monotonic() - started < 30
    assert code == 1 and "Traceback" not in stderr
    assert "waiting for isic-cli to reach the ISIC Archive (https://api.isic-archive.com)" in (
        " ".join(stderr.split()))
    assert "still waiting for isic-cli" in stderr
    assert (f"Error: isic-cli wrote nothing to {tmp_path / 'isic'} for 2 s: check that this "
            "machine reaches https://api.isic-archive.com (network, proxy), then run the same "
            "command again (--timeout to wait longer)") in " ".join(stderr.split())


def test_a_folder_fetch_isic_did_not_make_is_refused(runner: CliRunner, tmp_path: Path,
                                                     fake_isic: Path) -> None:
    """A user's own metadata.csv is never replaced by isic-cli's; fetch-isic's own folder is
    continued by a re-run."""
    from .disk import checksums

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metadata.csv").write_text("my own metadata\n", encoding="utf-8")
    before = checksums(mine)
    for extra in ((), ("--dry-run",)):
        code, _, stderr = invoke(runner, "fetch-isic", "--out", mine, *extra)
        assert code == 1 and "was not made by medsynth-kohya fetch-isic" in stderr, stderr
        assert checksums(mine) == before
    assert not fake_isic.exists(), "isic-cli never ran"

    out = tmp_path / "isic"
    for _ in range(2):
        code, stdout, stderr = invoke(runner, "fetch-isic", "--out", out)
        assert code == 0 and "Downloaded 6 images" in stdout, stderr


@pytest.mark.parametrize("timeout", ["0", "-5", "nan"])
def test_a_timeout_that_never_gives_up_is_refused(runner: CliRunner, tmp_path: Path,
                                                  fake_isic: Path, timeout: str) -> None:
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--timeout",
                             timeout)
    assert code == 1 and "Traceback" not in stderr
    assert f"--timeout must be more than 0 seconds (got {timeout})" in stderr
    assert not (tmp_path / "isic").exists()


def test_a_download_that_exits_0_without_its_metadata_is_a_failure(
        runner: CliRunner, tmp_path: Path, fake_isic: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    check = ("check its messages above (a search that matched no image, an isic-cli that "
             "writes elsewhere: pip install -U 'medsynth-kohya[fetch]'), then run the same "
             "command again")
    monkeypatch.setenv("FAKE_ISIC_NO_METADATA", "1")
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic")
    assert code == 1 and " ".join(stderr.split()).endswith(
        f"Error: isic-cli finished but wrote no metadata.csv (only 6 images) into "
        f"{tmp_path / 'isic'}; {check}"), stderr
    monkeypatch.delenv("FAKE_ISIC_NO_METADATA")
    monkeypatch.setenv("FAKE_ISIC_NOTHING", "1")
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "empty")
    assert code == 1 and " ".join(stderr.split()).endswith(
        f"Error: isic-cli finished but wrote no metadata.csv or images into "
        f"{tmp_path / 'empty'}; {check}"), stderr


def test_an_unfinished_download_given_to_prepare_says_to_finish_it(
        runner: CliRunner, tmp_path: Path, fake_isic: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch cut short (images, no metadata.csv) was refused as holding no ISIC metadata,
    with --metadata advice that cannot work: the fix is the same fetch-isic again."""
    from medsynth_kohya.data.prepare import prepare

    out = tmp_path / "my isic"
    monkeypatch.setenv("FAKE_ISIC_NO_METADATA", "1")
    monkeypatch.setenv("FAKE_ISIC_EXIT", "1")
    assert invoke(runner, "fetch-isic", "--out", out, "--limit", 4)[0] == 1
    again = shlex.join(["medsynth-kohya", "fetch-isic", "--out", str(out), "--limit", "4"])
    said = f"{out} is an unfinished fetch-isic download: run `{again}` again to finish it"
    for args in (("prepare", out, "--out", tmp_path / "data"),
                 ("reproduce", out, "--workdir", tmp_path / "work", "--dry-run")):
        code, stdout, stderr = invoke(runner, *args)
        assert code == 1 and "Traceback" not in stdout + stderr, stderr
        assert " ".join(stderr.split()) == f"Error: {said}", stderr
    with pytest.raises(UserError) as raised:
        prepare(out, tmp_path / "data")
    assert str(raised.value) == said
    assert not (tmp_path / "data").exists()
    monkeypatch.delenv("FAKE_ISIC_NO_METADATA")
    monkeypatch.delenv("FAKE_ISIC_EXIT")
    code, _, stderr = invoke(runner, *shlex.split(again)[1:])
    assert code == 0, stderr
    assert invoke(runner, "prepare", out, "--out", tmp_path / "data")[0] == 0


def test_an_unfinished_download_of_the_whole_set_says_the_plain_command(
        runner: CliRunner, tmp_path: Path, fake_isic: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ISIC_NO_METADATA", "1")
    assert invoke(runner, "fetch-isic", "--out", tmp_path / "isic")[0] == 1
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data")
    assert code == 1 and " ".join(stderr.split()).endswith(
        f"run `medsynth-kohya fetch-isic --out {tmp_path / 'isic'}` again to finish it"), stderr


@pytest.mark.parametrize(("args", "said"), [
    (("--limit", "-1"), "--limit must be 0 (everything) or more"),
    (("--timeout", "0"), "--timeout must be more than 0 seconds")])
def test_a_bad_limit_or_timeout_is_one_line(runner: CliRunner, tmp_path: Path,
                                            args: tuple[str, str], said: str) -> None:
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", *args,
                             "--dry-run")
    assert code == 1 and said in stderr and len(stderr.strip().splitlines()) == 1


def test_a_limit_of_one_is_passed_on(runner: CliRunner, tmp_path: Path) -> None:
    code, stdout, _ = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--limit", 1,
                             "--dry-run")
    assert code == 0 and "--limit 1 " in stdout


def test_an_out_that_is_a_file_is_refused(runner: CliRunner, tmp_path: Path,
                                          fake_isic: Path) -> None:
    (tmp_path / "isic").write_text("not a folder", encoding="utf-8")
    for dry in ((), ("--dry-run",)):
        code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", *dry)
        assert code == 1 and f"{tmp_path / 'isic'} is a file" in stderr, stderr
    assert (tmp_path / "isic").read_text(encoding="utf-8") == "not a folder"


def test_a_lock_left_by_a_dead_fetch_is_taken_over_and_said(runner: CliRunner, tmp_path: Path,
                                                           fake_isic: Path) -> None:
    import socket
    import subprocess
    import sys

    from medsynth_kohya import locks

    out = tmp_path / "isic"
    out.mkdir()
    (out / MARK_FILE).write_text("{}", encoding="utf-8")
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    path = locks.lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": "fetch-isic", "pid": gone.pid,
                                "host": socket.gethostname(),
                                "since": "2026-03-01T12:00:00+00:00"}), encoding="utf-8")
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    assert f"took over the lock on {out} left by `medsynth-kohya fetch-isic` (pid {gone.pid}" in (
        " ".join(stderr.split()))


def test_isic_cli_outliving_a_killed_fetch_keeps_the_folder_locked(
        runner: CliRunner, tmp_path: Path, fake_isic: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch continuing an earlier one, killed outright (the OOM killer, kill -9) while
    isic-cli downloads: isic-cli goes on writing into OUT and holds its lock until it ends, so
    no prepare reads the download half done and no second fetch writes beside it."""
    import contextlib
    import os
    import signal

    from medsynth_kohya import locks
    from medsynth_kohya.data.prepare import prepare
    from medsynth_kohya.errors import UserError

    from .processes import living_children, start, wait_for

    out = tmp_path / "isic"
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    fake_isic.unlink()
    monkeypatch.setenv("FAKE_ISIC_HANG", "60")
    fetch = start("fetch-isic", "--out", out)
    wait_for(fake_isic.is_file, what="isic-cli to start")
    (isic,) = living_children(fetch.pid)
    os.kill(fetch.pid, signal.SIGKILL)
    fetch.wait()  # not its output: isic-cli holds the pipes open
    try:
        with pytest.raises(UserError) as refused:
            prepare(out, tmp_path / "data")
        said = str(refused.value)
        assert f"{out} is still being written by pid {isic} " in said, said
        assert "medsynth-kohya fetch-isic" in said and "`prepare` needs it finished" in said
        with pytest.raises(UserError), locks.hold(out, "fetch-isic"):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(isic, signal.SIGKILL)
        fetch.communicate()


def test_a_dry_run_of_another_search_gives_its_command_and_downloads_nothing(
        tmp_path: Path) -> None:
    """From Python, another search and collections reach isic-cli's command; a dry run
    (any positive --timeout, a fraction of a second too) has downloaded nothing."""
    from medsynth_kohya.data.fetch import fetch_isic

    out = tmp_path / "nevi"
    fetched = fetch_isic(out, search='diagnosis_3:"Nevus"', collections=(249, 70), limit=3,
                         timeout=0.5, dry_run=True)
    assert fetched.command.argv == ["isic", "image", "download", "--search",
                                    'diagnosis_3:"Nevus"', "--collections", "249,70",
                                    "--limit", "3", str(out)]
    assert (fetched.out, fetched.images, fetched.ran) == (out, 0, False)
    assert not out.exists()


def test_a_download_from_python_gives_what_it_ran_and_what_it_got(tmp_path: Path,
                                                                   fake_isic: Path) -> None:
    from medsynth_kohya.data.fetch import fetch_isic

    out = tmp_path / "isic"
    fetched = fetch_isic(out, limit=6)
    argv = ["image", "download", "--search", ISIC_MELANOMA_SEARCH, "--collections", "70",
            "--limit", "6", str(out)]
    assert json.loads(fake_isic.read_text(encoding="utf-8")) == argv
    assert fetched.command.argv == ["isic", *argv]
    assert (fetched.out, fetched.images, fetched.ran, fetched.warnings) == (out, 6, True, ())

def test_refusals_are_the_whole_line_with_the_fix(tmp_path: Path) -> None:
    from medsynth_kohya.data.fetch import fetch_isic
    from medsynth_kohya.errors import UserError

    with pytest.raises(UserError) as limit:
        fetch_isic(tmp_path / "isic", limit=-1)
    assert str(limit.value) == "--limit must be 0 (everything) or more"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "attribution.txt").write_text("my photos", encoding="utf-8")
    with pytest.raises(UserError) as foreign:
        fetch_isic(mine, dry_run=True)
    assert str(foreign.value) == (
        f"--out {mine} is not empty (it holds attribution.txt) and was not made by "
        "medsynth-kohya fetch-isic (isic-cli would replace its metadata.csv and "
        "attribution.txt); choose a new or empty folder")


def test_a_fetch_locked_or_read_on_another_host_goes_on_only_with_break_lock(
        runner: CliRunner, tmp_path: Path, fake_isic: Path) -> None:
    """A fresh mark of an evaluate reading the download on another machine sharing the folder,
    then a fetch-isic's lock there, are refused, naming that machine and --break-lock; with
    --break-lock the download goes on and says what it broke."""
    from datetime import datetime, timezone

    from medsynth_kohya import locks

    out = tmp_path / "isic"
    code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
    assert code == 0, stderr
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    refusals = (
        ("reader-lab", "evaluate", f"{out} is being read by `medsynth-kohya evaluate` (pid 4243 "
                                   "on lab-node-7, since", "`fetch-isic` would change the files"),
        (None, "fetch-isic", f"{out} is locked by `medsynth-kohya fetch-isic` (pid 4242 on "
                             "lab-node-7, since", "--break-lock"))
    for part, command, who, then in refusals:
        locks.lock_path(out, part).write_text(json.dumps(
            {"command": command, "pid": 4243 if part else 4242, "host": "lab-node-7",
             "since": now, "beat": now}), encoding="utf-8")
        code, _, stderr = invoke(runner, "fetch-isic", "--out", out)
        said = " ".join(stderr.split())
        assert code == 1 and who in said and then in said and "--break-lock" in said, said
    code, stdout, stderr = invoke(runner, "fetch-isic", "--out", out, "--break-lock")
    assert code == 0 and "Downloaded 6 images" in stdout, stderr
    said = " ".join(stderr.split())
    for what, command in (("lock", "fetch-isic"), ("reading mark", "evaluate")):
        assert f"broke (--break-lock) the {what} on {out} of `medsynth-kohya {command}` (pid" in (
            said)


WRAPPER = """#!/bin/sh
# isic-cli as a wrapper script starts it: the program that waits is a child of the script
"{python}" -c 'import os, signal, sys, time
def stop(*_):
    open(os.environ["FAKE_ISIC_SIGNALLED"], "w").write("SIGINT")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
open(os.environ["FAKE_ISIC_PID"], "w").write(str(os.getpid()))
time.sleep(300)'
echo "isic ended"
"""


def _install_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `isic` shell script on PATH whose child waits 300 s; returns where it writes the
    child's pid (and, beside it, `signalled` once the child gets SIGINT)."""
    put_isic(tmp_path, monkeypatch, WRAPPER)
    monkeypatch.setenv("FAKE_ISIC_PID", str(tmp_path / "pid"))
    monkeypatch.setenv("FAKE_ISIC_SIGNALLED", str(tmp_path / "signalled"))
    return tmp_path / "pid"


def test_the_timeout_stops_the_children_of_a_wrapper_script_too(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the script was terminated: its child went on waiting, orphaned, holding the
    command's output open (a pipe to it never closed)."""
    from medsynth_kohya.data.fetch import fetch_isic
    from medsynth_kohya.errors import UserError

    from .processes import alive, wait_for

    pid_file = _install_wrapper(tmp_path, monkeypatch)
    code, _, stderr = invoke(runner, "fetch-isic", "--out", tmp_path / "isic", "--timeout", 1)
    assert code == 1 and "isic-cli wrote nothing to" in stderr, stderr
    child = int(pid_file.read_text(encoding="utf-8"))
    wait_for(lambda: not alive(child), timeout=20, what=f"isic's child {child} to end")
    pid_file.unlink()
    with pytest.raises(UserError, match="isic-cli wrote nothing to"):
        fetch_isic(tmp_path / "isic2", timeout=1)
    child = int(pid_file.read_text(encoding="utf-8"))
    wait_for(lambda: not alive(child), timeout=20, what=f"isic's child {child} to end")


def test_ctrl_c_reaches_isic_and_its_children(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal's Ctrl-C goes to the command's process group: isic-cli, in a group of
    its own so the timeout can stop all of it, must still be interrupted (and so get to stop
    as it does on Ctrl-C), children included, and the command end in one line."""
    import os
    import signal

    from .processes import alive, finish, start, wait_for

    pid_file = _install_wrapper(tmp_path, monkeypatch)
    fetch = start("fetch-isic", "--out", tmp_path / "isic", group=True)
    try:
        wait_for(pid_file.is_file, what="isic to start")
        wait_for(lambda: pid_file.read_text(encoding="utf-8") != "", what="its pid")
        child = int(pid_file.read_text(encoding="utf-8"))
        os.killpg(fetch.pid, signal.SIGINT)
        done = finish(fetch, timeout=60)
    finally:
        if fetch.poll() is None:
            os.killpg(fetch.pid, signal.SIGKILL)
    assert done.code == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: isic was interrupted; run the same command again to continue (files already "
        "downloaded are kept)"), done.stderr
    assert (tmp_path / "signalled").read_text(encoding="utf-8") == "SIGINT"
    wait_for(lambda: not alive(child), timeout=20, what=f"isic's child {child} to end")
