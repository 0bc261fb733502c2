"""sd-scripts' search order and `install-sd-scripts`, against a local git repository standing
in for kohya-ss/sd-scripts (its tag and commit replace the pin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.doctor import FAIL, OK, Check, diagnose
from medsynth_kohya.sdscripts import checkout
from medsynth_kohya.sdscripts.install import install

from .conftest import REPO, invoke

TAG = "v9.9.9"


def _git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c",
                             "user.email=t@t", *args], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny sd-scripts repository with the release tag; the pin is its tagged commit, the
    install URL points at it, and neither this checkout nor $MEDSYNTH_SD_SCRIPTS is searched."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    (repo / "sdxl_train_network.py").write_text("print('train')\n", encoding="utf-8")
    (repo / "requirements.txt").write_text("toml==0.10.2\n-e .\n", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "release")
    _git(repo, "tag", TAG)
    pin = _git(repo, "rev-parse", "HEAD")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "after the release")
    monkeypatch.setattr(checkout, "PINNED_COMMIT", pin)
    monkeypatch.setattr(checkout, "PINNED_RELEASE", TAG)
    monkeypatch.setattr(checkout, "checkout_root", lambda: None)
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    url = repo.as_uri()
    monkeypatch.setenv(checkout.ENV_URL, url)
    return url


def _sd_row(stdout: str) -> str:
    """The doctor's sd-scripts row, joined across wrapped lines."""
    return " ".join(stdout.split())


def test_installs_into_the_per_user_folder_found_from_anywhere(
        upstream: str, runner: CliRunner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert checkout.find().rule == checkout.NOT_FOUND
    code, stdout, stderr = invoke(runner, "install-sd-scripts")
    assert code == 0, stderr
    folder = tmp_path / "data" / "medsynth-kohya" / "sd-scripts"
    assert checkout.commit(folder) == checkout.PINNED_COMMIT
    assert "cloned" in stdout and "found by the per-user copy" in stdout
    assert f"cd {folder} && {sys.executable} -m pip install -r requirements.txt" in stdout
    assert checkout.find() == checkout.Location(folder, checkout.USER)
    assert not list(folder.parent.glob(".*partial*"))

    code, stdout, _ = invoke(runner, "install-sd-scripts")
    assert code == 0 and "already at the pin" in stdout


def test_a_clone_at_another_commit_is_moved_to_the_pin(upstream: str, tmp_path: Path) -> None:
    first = install(tmp_path / "sd")
    _git(first.path, "commit", "-q", "--allow-empty", "-m", "local")
    assert checkout.commit(first.path) != checkout.PINNED_COMMIT
    again = install(tmp_path / "sd")
    assert again.action == "moved to the pin"
    assert checkout.commit(again.path) == checkout.PINNED_COMMIT
    assert again.found_by is None


def test_a_foreign_folder_is_refused_untouched(upstream: str, runner: CliRunner,
                                               tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    code, stdout, stderr = invoke(runner, "install-sd-scripts", "--dir", foreign)
    assert code == 1 and "not empty and is not an sd-scripts clone" in stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert "Traceback" not in stdout + stderr


def test_a_tag_at_another_commit_installs_nothing(upstream: str, runner: CliRunner,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkout, "PINNED_COMMIT", "0" * 40)
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd")
    assert code == 1 and f"{TAG} at {upstream}" in stderr and "0" * 40 in stderr
    assert not (tmp_path / "sd").exists()


def test_an_unreachable_remote_is_one_line(upstream: str, runner: CliRunner,
                                           tmp_path: Path) -> None:
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd",
                             "--url", (tmp_path / "nowhere").as_uri())
    assert code == 1 and "git clone failed" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sd").exists()


def test_pip_runs_the_requirements_in_the_clone(upstream: str, runner: CliRunner,
                                                tmp_path: Path) -> None:
    record = tmp_path / "pip.json"
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}, "
                    f"open({str(record)!r}, 'w'))\n", encoding="utf-8")
    fake.chmod(0o755)
    code, stdout, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd", "--pip",
                                  "--python", fake)
    assert code == 0, stderr
    ran = json.loads(record.read_text(encoding="utf-8"))
    assert ran == {"argv": ["-m", "pip", "install", "-r", "requirements.txt"],
                   "cwd": str(tmp_path / "sd")}
    assert f"MEDSYNTH_SD_SCRIPTS={tmp_path / 'sd'}" in stdout


def test_search_order(upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def project(folder: Path) -> Path:
        (folder / "vendor" / "sd-scripts").mkdir(parents=True)
        (folder / "vendor" / "sd-scripts" / checkout.TRAIN_SCRIPT).touch()
        return folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    user = install().path
    assert checkout.find() == checkout.Location(user, checkout.USER)
    root = project(tmp_path / "project")
    monkeypatch.setattr(checkout, "checkout_root", lambda: root)
    assert checkout.find() == checkout.Location(root / "vendor" / "sd-scripts",
                                                  checkout.CHECKOUT)
    monkeypatch.setenv(checkout.ENV_DIR, str(tmp_path / "env"))
    assert checkout.find() == checkout.Location(tmp_path / "env", checkout.ENV)
    assert checkout.find(tmp_path / "given") == checkout.Location(tmp_path / "given",
                                                                    checkout.GIVEN)


def test_only_a_checkout_of_this_project_counts(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkout.checkout_root() == REPO
    site = tmp_path / "site-packages"
    (site / "medsynth_kohya").mkdir(parents=True)
    monkeypatch.setattr(checkout, "_PACKAGE", site / "medsynth_kohya")
    assert checkout.checkout_root() is None
    (site / "pyproject.toml").write_text('[project]\nname = "other"\n', encoding="utf-8")
    assert checkout.checkout_root() is None


def test_doctor_says_where_and_by_which_rule(upstream: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    def row() -> Check:
        report = diagnose(gpus=[], workdir=tmp_path, python=sys.executable, hub=False)
        return next(c for c in report.checks if c.name == "sd-scripts")

    missing = row()
    assert missing.status == FAIL and missing.fix.startswith("medsynth-kohya install-sd-scripts")
    assert str(checkout.user_dir()) in missing.detail
    folder = install().path
    found = row()
    assert found.status == OK and found.detail == (
        f"{folder} at {TAG} ({checkout.PINNED_COMMIT[:8]}); found by the per-user copy")
    monkeypatch.setenv(checkout.ENV_DIR, str(tmp_path / "gone"))
    gone = row()
    assert gone.status == FAIL and f"from ${checkout.ENV_DIR}" in gone.detail
    assert gone.fix.startswith(f"medsynth-kohya install-sd-scripts --dir {tmp_path / 'gone'}")
    monkeypatch.setenv(checkout.ENV_DIR, str(tmp_path / "sd scripts"))
    assert row().fix.startswith(
        f"medsynth-kohya install-sd-scripts --dir '{tmp_path / 'sd scripts'}',")
    odd = checkout.Location(tmp_path / "my sd", checkout.GIVEN)
    assert checkout.pin_fix(odd).startswith(f"git -C '{tmp_path / 'my sd'}' fetch --tags && ")


def test_doctor_wraps_its_fixes_at_80_columns(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, stdout, _ = invoke(CliRunner(env={"COLUMNS": "80"}), "doctor", "--sd-scripts",
                             tmp_path / "missing", "--python", tmp_path / "no-python")
    assert code == 1 and "…" not in stdout
    assert max(len(line) for line in stdout.splitlines()) <= 80
    fixes = "".join(line.split("│")[-2].replace(" ", "") for line in stdout.splitlines()
                    if line.count("│") == 5)
    assert "pass--pythonwiththeinterpreterthathassd-scripts'packages" in fixes
    assert f"medsynth-kohyainstall-sd-scripts--dir{tmp_path / 'missing'}" in fixes


def test_doctor_points_a_checkout_at_its_empty_submodule(upstream: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    root = tmp_path / "my project"
    (root / "vendor" / "sd-scripts").mkdir(parents=True)  # a clone without --recursive
    monkeypatch.setattr(checkout, "checkout_root", lambda: root)
    report = diagnose(gpus=[], workdir=tmp_path, python=sys.executable, hub=False)
    missing = next(c for c in report.checks if c.name == "sd-scripts")
    assert missing.status == FAIL
    assert f"{root / 'vendor' / 'sd-scripts'} empty" in missing.detail
    assert missing.fix.startswith(
        f"git -C '{root}' submodule update --init vendor/sd-scripts, or medsynth-kohya "
        "install-sd-scripts")


def test_a_clone_with_local_changes_in_the_way_names_git_s_own_reason(
        upstream: str, runner: CliRunner, tmp_path: Path) -> None:
    """It said 'git -C failed: Aborting': the option, not the command, and git's last line,
    not its reason."""
    clone = tmp_path / "sd"
    subprocess.run(["git", "clone", "-q", upstream, str(clone)], check=True)
    (clone / "sdxl_train_network.py").write_text("print('v2')\n", encoding="utf-8")
    _git(clone, "commit", "-qam", "a later version")  # the pin's file differs from it
    (clone / "sdxl_train_network.py").write_text("print('mine')\n", encoding="utf-8")
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", clone)
    line = " ".join(stderr.split())
    assert code == 1 and "git checkout failed: error: Your local changes to the following " \
        "files would be overwritten by checkout" in line, line
    assert (clone / "sdxl_train_network.py").read_text(encoding="utf-8") == "print('mine')\n"


def test_a_folder_of_other_files_is_not_offered_as_an_install_target(tmp_path: Path) -> None:
    """doctor advised `install-sd-scripts --dir FOLDER`, which refuses a non-empty folder."""
    folder = tmp_path / "ex1"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    for rule, named in ((checkout.GIVEN, "--sd-scripts"), (checkout.ENV, f"${checkout.ENV_DIR}")):
        fix = checkout.missing_fix(checkout.Location(folder, rule))
        assert fix == (f"{folder} holds other files: point {named} at the folder that holds "
                       f"{checkout.TRAIN_SCRIPT}, or install it into a new folder with "
                       "`medsynth-kohya install-sd-scripts --dir NEW`"), fix
    (folder / "notes.txt").unlink()
    assert checkout.missing_fix(checkout.Location(folder, checkout.GIVEN)).startswith(
        f"medsynth-kohya install-sd-scripts --dir {folder}")


def test_a_failed_clone_leaves_no_partial_copy_and_names_gits_reason(
        upstream: str, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkout, "PINNED_COMMIT", "0" * 40)
    code, _, _ = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd")
    assert code == 1 and not list(tmp_path.glob(".sd.partial*"))
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd2",
                             "--url", (tmp_path / "nowhere").as_uri())
    assert code == 1 and "git clone failed: fatal: " in " ".join(stderr.split())
    assert not list(tmp_path.glob(".sd2.partial*"))


def test_an_empty_folder_is_cloned_into_and_a_file_is_refused(upstream: str,
                                                             tmp_path: Path) -> None:
    from medsynth_kohya.errors import UserError

    (tmp_path / "empty").mkdir()
    assert install(tmp_path / "empty").action == "cloned"
    (tmp_path / "file").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="is a file; choose another --dir"):
        install(tmp_path / "file")
    assert (tmp_path / "file").read_text(encoding="utf-8") == "mine"


def test_a_folder_inside_another_git_repository_is_no_clone(upstream: str,
                                                            tmp_path: Path) -> None:
    """A copy of sd-scripts' files in a folder of the user's own repository: moving "it" to
    the pin would check out that repository."""
    from medsynth_kohya.errors import UserError

    project = tmp_path / "project"
    inner = project / "sd"
    inner.mkdir(parents=True)
    (inner / "sdxl_train_network.py").write_text("", encoding="utf-8")
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "mine")
    head = _git(project, "rev-parse", "HEAD")
    with pytest.raises(UserError, match="is not empty and is not an sd-scripts clone"):
        install(inner)
    assert _git(project, "rev-parse", "HEAD") == head


def test_a_failing_pip_is_one_line_and_a_run_one_is_said(upstream: str, tmp_path: Path) -> None:
    from medsynth_kohya.errors import UserError

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit \"${PIP_EXIT:-0}\"\n", encoding="utf-8")
    fake.chmod(0o755)
    assert install(tmp_path / "sd", python=str(fake), run_pip=True).pip_ran
    assert not install(tmp_path / "sd", python=str(fake)).pip_ran
    fake.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    with pytest.raises(UserError, match="pip install exited with 1"):
        install(tmp_path / "sd", python=str(fake), run_pip=True)


def test_git_never_waits_for_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private or mistyped URL makes git prompt for credentials, which would hang a Colab
    cell; git is run with GIT_TERMINAL_PROMPT=0."""
    from medsynth_kohya.errors import UserError

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "prompt"
    (bin_dir / "git").write_text(f"#!/bin/sh\necho \"$GIT_TERMINAL_PROMPT\" > {record}\n"
                                 "echo \"Cloning into 'sd'...\" >&2\n"
                                 "echo 'fatal: could not read Username' >&2\nexit 128\n",
                                 encoding="utf-8")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("GIT_TERMINAL_PROMPT", raising=False)
    with pytest.raises(UserError, match="git clone failed: fatal: could not read Username"):
        install(tmp_path / "sd", url="https://example.invalid/private.git")
    assert record.read_text(encoding="utf-8").strip() == "0"


def test_a_link_to_an_empty_folder_is_cloned_through_and_a_dangling_one_refused(
        upstream: str, runner: CliRunner, tmp_path: Path) -> None:
    """--dir a link to a folder on a bigger disk crashed with NotADirectoryError after the
    clone (rmdir of the link); a dangling link crashed the same way."""
    disk = tmp_path / "big disk" / "sd"
    disk.mkdir(parents=True)
    link = tmp_path / "sd"
    link.symlink_to(disk)
    code, stdout, stderr = invoke(runner, "install-sd-scripts", "--dir", link)
    assert code == 0, stderr
    assert link.is_symlink() and checkout.commit(disk) == checkout.PINNED_COMMIT
    assert str(link) in stdout and "cloned" in stdout
    assert not list(disk.parent.glob(".*partial*")) and not list(tmp_path.glob(".*partial*"))
    assert install(link).action == "already at the pin"

    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "unmounted" / "sd")
    code, stdout, stderr = invoke(runner, "install-sd-scripts", "--dir", dangling)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert " ".join(stderr.split()) == (
        f"Error: {dangling} is a link to {tmp_path / 'unmounted' / 'sd'}, which does not "
        "exist; create that folder or choose another --dir")
    assert dangling.is_symlink() and not (tmp_path / "unmounted").exists()


def test_a_python_that_cannot_run_pip_is_one_line(upstream: str, runner: CliRunner,
                                                  tmp_path: Path) -> None:
    """--pip with a mistyped --python printed a FileNotFoundError traceback."""
    missing = tmp_path / "venv" / "bin" / "python"
    code, stdout, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd", "--pip",
                                  "--python", missing)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert " ".join(stderr.split()) == (
        f"Error: cannot run {missing} (No such file or directory); sd-scripts itself is in place "
        f"at {tmp_path / 'sd'}: pass --python the Python for sd-scripts and re-run with --pip")
    assert checkout.commit(tmp_path / "sd") == checkout.PINNED_COMMIT


def test_a_clone_is_moved_to_the_pin_from_the_url_given(upstream: str, tmp_path: Path) -> None:
    """A clone of a fork without the release tag: --url (or $MEDSYNTH_SD_SCRIPTS_URL) was
    ignored and the fetch from origin failed."""
    from medsynth_kohya.errors import UserError

    fork = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", "--no-tags", upstream, str(fork)], check=True)
    _git(fork, "commit", "-q", "--allow-empty", "-m", "the fork's own")
    assert _git(fork, "tag") == ""
    clone = tmp_path / "sd"
    subprocess.run(["git", "clone", "-q", "--no-tags", fork.as_uri(), str(clone)], check=True)
    assert checkout.commit(clone) != checkout.PINNED_COMMIT
    with pytest.raises(UserError, match="git fetch failed"):
        install(clone, url=fork.as_uri())
    moved = install(clone, url=upstream)
    assert moved.action == "moved to the pin"
    assert checkout.commit(clone) == checkout.PINNED_COMMIT
    assert _git(clone, "describe", "--tags") == TAG  # the release's tag came with it


def _fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A `git` first on PATH that runs the shell `body`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.parametrize(("stderr", "code", "reason"), [
    ("hint: use --force\\nerror: the reason\\nfatal: later", 1, "error: the reason"),
    ("Cloning into 'sd'...\\nsomething odd", 128, "Cloning into 'sd'..."),
    ("", 5, "exit code 5"),
])
def test_a_failing_git_is_one_line_with_its_reason(
        stderr: str, code: int, reason: str, runner: CliRunner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """git's first `fatal:` or `error:` line, else its first line, else its exit code."""
    _fake_git(tmp_path, monkeypatch, f'printf "{stderr}" >&2\nexit {code}')
    exit_code, stdout, said = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd",
                                     "--url", "https://example.invalid/sd-scripts.git")
    assert exit_code == 1 and "Traceback" not in stdout + said
    assert said.strip() == f"Error: git clone failed: {reason}"
    assert not (tmp_path / "sd").exists() and not list(tmp_path.glob(".sd.partial*"))


@pytest.mark.parametrize("reason", [
    "fatal: unable to access 'https://github.com/kohya-ss/sd-scripts.git/': Could not resolve "
    "host: github.com",
    "fatal: unable to access 'https://github.com/kohya-ss/sd-scripts.git/': Failed to connect "
    "to github.com port 443 after 2 ms: Couldn't connect to server",
])
def test_a_clone_without_network_says_how_to_install_anyway(
        reason: str, runner: CliRunner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, git's reason alone left the user without a way on: clone it where there is
    a network and point the commands at it, or clone from a mirror this machine reaches."""
    _fake_git(tmp_path, monkeypatch, f'echo "{reason}" >&2\nexit 128')
    fix = (f"{reason}; this machine cannot reach the repository: install sd-scripts where one "
           "can (medsynth-kohya install-sd-scripts --dir DIR), copy DIR here and give it as "
           "--sd-scripts DIR or MEDSYNTH_SD_SCRIPTS=DIR, or clone from a mirror this machine "
           "reaches with --url URL")
    code, stdout, said = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd")
    assert code == 1 and "Traceback" not in stdout + said
    assert said.strip() == f"Error: git clone failed: {fix}"
    with pytest.raises(UserError) as refused:
        install(tmp_path / "sd2", url="https://github.com/kohya-ss/sd-scripts.git")
    assert str(refused.value) == f"git clone failed: {fix}"


def test_a_hung_git_ends_after_its_time_and_a_missing_git_is_named(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.sdscripts import install as install_module

    monkeypatch.setattr(install_module, "GIT_TIMEOUT_S", 1)
    _fake_git(tmp_path, monkeypatch, "exec sleep 30")
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd")
    assert code == 1 and stderr.strip() == (
        "Error: git clone took over 1 s; check the network and re-run")
    assert not list(tmp_path.glob(".sd.partial*"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, stderr = invoke(runner, "install-sd-scripts", "--dir", tmp_path / "sd")
    assert code == 1 and " ".join(stderr.split()) == (
        "Error: git is not installed: install it (https://git-scm.com) and re-run "
        "medsynth-kohya install-sd-scripts")


def test_a_copy_of_sd_scripts_that_is_no_clone_is_refused(upstream: str, tmp_path: Path) -> None:
    """sd-scripts' files without a git repository: nothing to move to the pin."""
    from medsynth_kohya.errors import UserError

    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / checkout.TRAIN_SCRIPT).write_text("print('train')\n", encoding="utf-8")
    with pytest.raises(UserError) as refused:
        install(copy)
    assert str(refused.value) == (f"{copy} is not empty and is not an sd-scripts clone; empty it "
                                  "or choose another --dir")
    assert [path.name for path in copy.iterdir()] == [checkout.TRAIN_SCRIPT]


def test_a_partial_clone_left_under_this_process_id_is_cleared(upstream: str,
                                                               tmp_path: Path) -> None:
    """A killed run's `.NAME.partial-PID`, its process id since taken by this run."""
    import os

    stale = tmp_path / f".sd.partial-{os.getpid()}"
    stale.mkdir()
    (stale / "half.pack").write_text("x", encoding="utf-8")
    assert install(tmp_path / "sd").action == "cloned"
    assert not stale.exists() and checkout.commit(tmp_path / "sd") == checkout.PINNED_COMMIT


_KILLED_INSTALL = """
import sys
from medsynth_kohya.sdscripts import checkout
from medsynth_kohya.sdscripts.install import install
checkout.PINNED_COMMIT, checkout.PINNED_RELEASE = sys.argv[1], sys.argv[2]
install(sys.argv[3], url=sys.argv[4])
"""


def test_a_clone_left_half_moved_to_the_pin_by_a_killed_install_is_never_used(
        upstream: str, tmp_path: Path) -> None:
    """An install killed (SIGKILL) in the middle of moving a clone to the pin leaves it with
    files of both commits and git's index locked: the re-run tripped over git's lock (`git
    checkout failed: fatal: Unable to create ...index.lock`), and with the lock gone over the
    half-written files ("Your local changes ..."). It names the folder and how to clear it,
    and once cleared the clone is taken as at the pin."""
    import os
    import shutil

    clone = tmp_path / "sd"
    install(clone)
    (clone / "sdxl_train_network.py").write_text("print('v2')\n", encoding="utf-8")
    _git(clone, "commit", "-qam", "a later version")
    real = shutil.which("git")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/bin/sh\n"
        'if [ "$3" = checkout ]; then  # as checkout leaves it when killed: half written\n'
        '  echo "print(\'half\')" > "$2/sdxl_train_network.py"; : > "$2/.git/index.lock"\n'
        "  kill -9 $PPID; kill -9 $$\n"
        "fi\n"
        f'exec {real} "$@"\n', encoding="utf-8")
    (bin_dir / "git").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    killed = subprocess.run([sys.executable, "-c", _KILLED_INSTALL, checkout.PINNED_COMMIT,
                             checkout.PINNED_RELEASE, str(clone), upstream],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    lock = clone / ".git" / "index.lock"
    fix = (f"rm -f {lock} && git -C {clone} checkout --force --detach {checkout.PINNED_COMMIT}")
    for _ in range(2):
        with pytest.raises(UserError) as refused:
            install(clone)
        assert str(refused.value) == (
            f"{clone} was left half-moved to the pin by an install-sd-scripts that was stopped, "
            "so its files may mix two commits: remove the folder and re-run, or, to keep it, "
            f"run `{fix}` (it discards changes made in the folder), then re-run")
        lock.unlink(missing_ok=True)  # nor does a lock removed by hand make it complete
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--force", "--detach",
                    checkout.PINNED_COMMIT], check=True)
    assert install(clone).action == "already at the pin"
    assert install(clone).action == "already at the pin"


def test_partial_clones_of_killed_installs_are_cleared_and_a_running_ones_refused(
        upstream: str, tmp_path: Path) -> None:
    """A clone goes into `.NAME.partial-PID` and is renamed into place: one whose install was
    killed stayed beside the folder for good, however often install was re-run."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = tmp_path / f".sd.partial-{ended.pid}"
    (stale / ".git").mkdir(parents=True)
    (stale / ".git" / "half.pack").write_text("x", encoding="utf-8")
    (tmp_path / ".other.partial-1").mkdir()  # another folder's: not this install's business
    assert install(tmp_path / "sd").action == "cloned"
    assert not stale.exists() and (tmp_path / ".other.partial-1").is_dir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        try:
            busy = tmp_path / f".sd2.partial-{running.pid}"
            busy.mkdir()
            with pytest.raises(UserError) as refused:
                install(tmp_path / "sd2")
            assert str(refused.value) == (
                f"another install-sd-scripts (process {running.pid}) is cloning into "
                f"{tmp_path / 'sd2'}: wait for it to end and re-run (if no such install is "
                f"running, remove {busy} first)")
            assert busy.is_dir() and not (tmp_path / "sd2").exists()
        finally:
            running.kill()


_INSTALL_ON = "import socket, sys\nsocket.gethostname = lambda: sys.argv[5]\n" + _KILLED_INSTALL
"""_KILLED_INSTALL on the machine named by its fifth argument."""


def _cloning(tmp_path: Path, upstream: str, folder: Path, host: str,
             end: str) -> subprocess.Popen[bytes]:
    """An install on machine `host` that has begun its clone (its partial holds a .git) and is
    then killed (`end` "kill") or goes on cloning (`end` "hang") until the test ends it."""
    import os
    import shutil
    import time

    real = shutil.which("git")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "git").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = clone ]; then\n'
        '  for dest; do :; done; mkdir -p "$dest/.git"\n'
        f'  {"kill -9 $PPID; kill -9 $$" if end == "kill" else "exec sleep 60"}\n'
        "fi\n"
        f'exec {real} "$@"\n', encoding="utf-8")
    (bin_dir / "git").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    started = subprocess.Popen([sys.executable, "-c", _INSTALL_ON, checkout.PINNED_COMMIT,
                                checkout.PINNED_RELEASE, str(folder), upstream, host],
                               env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while not list(folder.parent.glob(f".{folder.name}.partial-*/.git")):
            assert started.poll() in (None, -9) and time.monotonic() < deadline
            time.sleep(0.05)
        if end == "kill":
            assert started.wait(timeout=60) == -9
    except BaseException:
        _end(started)
        raise
    return started


def _end(started: subprocess.Popen[bytes]) -> None:
    """Kill an install `_cloning` started, with the git it waits on (its process group)."""
    import contextlib
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.pid, signal.SIGKILL)
    started.wait()


def _partial(folder: Path) -> Path:
    """The one partial clone beside `folder`, a single name in its parent folder."""
    found = list(folder.parent.glob(f".{folder.name}.partial-*"))
    assert len(found) == 1 and found[0].is_dir()
    return found[0]


def test_a_partial_clone_of_another_machine_is_left_until_it_is_stale(
        upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a folder several machines share (a home on NFS), another machine's clone in progress
    has a pid that means nothing here: it is refused, naming that machine, while it changes;
    unchanged for locks.STALE_S (its install was surely stopped), it is cleared."""
    import os
    import socket
    import time

    from medsynth_kohya import locks

    monkeypatch.setattr(socket, "gethostname", lambda: "login-1.cluster")
    folder = tmp_path / "sd"
    killed = _cloning(tmp_path, upstream, folder, "gpu-7.cluster", "kill")
    partial = _partial(folder)
    pack = partial / ".git" / "objects" / "pack"
    pack.mkdir(parents=True)
    (pack / "tmp_pack_1").write_bytes(b"a pack on its way")
    old = time.time() - locks.STALE_S - 60
    # a clone writes in the folder, its .git, and the pack it receives: each keeps it in use
    for fresh in (None, pack / "tmp_pack_1", pack, partial / ".git", partial):
        for path in (partial, *partial.rglob("*")):
            os.utime(path, None if path == fresh or fresh is None else (old, old))
        with pytest.raises(UserError) as refused:
            install(folder)
        assert str(refused.value) == (
            f"another install-sd-scripts (process {killed.pid} on gpu-7.cluster) is cloning "
            f"into {folder}: wait for it to end and re-run (if nothing runs there, remove "
            f"{partial} first)")
        assert (pack / "tmp_pack_1").is_file() and not folder.exists()
    for path in (partial, *partial.rglob("*")):
        os.utime(path, (old, old))
    assert install(folder).action == "cloned"
    assert not partial.exists() and checkout.commit(folder) == checkout.PINNED_COMMIT


def test_a_partial_clone_of_this_machine_is_judged_by_its_process(
        upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's partial (its name a single path component, whatever the host name holds)
    is refused while its install runs and cleared once it was killed, fresh as it is."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "lab/node 7")
    folder = tmp_path / "sd"
    running = _cloning(tmp_path, upstream, folder, "lab/node 7", "hang")
    try:
        partial = _partial(folder)
        with pytest.raises(UserError) as refused:
            install(folder)
        assert str(refused.value) == (
            f"another install-sd-scripts (process {running.pid}) is cloning into {folder}: "
            f"wait for it to end and re-run (if no such install is running, remove {partial} "
            "first)")
    finally:
        _end(running)
    assert (partial / ".git").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bin", "upstream", partial.name])
    assert install(folder).action == "cloned"
    assert not partial.exists() and checkout.commit(folder) == checkout.PINNED_COMMIT


def test_the_partials_of_a_folder_named_like_a_pattern_are_its_own_only(
        upstream: str, tmp_path: Path) -> None:
    """A folder `sd[1]` clears its own partials, never those of `sd1` that its name, read as a
    glob pattern, would match."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    others = tmp_path / f".sd1.partial-{ended.pid}"
    mine = tmp_path / f".sd[1].partial-{ended.pid}"
    others.mkdir()
    mine.mkdir()
    assert install(tmp_path / "sd[1]").action == "cloned"
    assert others.is_dir() and not mine.exists()


def test_a_move_to_the_pin_killed_before_git_wrote_a_file_is_resumed(
        upstream: str, tmp_path: Path) -> None:
    """Killed while fetching: the clone is whole at its old commit, so the re-run moves it."""
    clone = tmp_path / "sd"
    install(clone)
    _git(clone, "commit", "-q", "--allow-empty", "-m", "local")
    mark = clone / ".git" / "medsynth-install-unfinished"
    mark.write_text("12345\n", encoding="utf-8")
    assert install(clone).action == "moved to the pin"
    assert checkout.commit(clone) == checkout.PINNED_COMMIT and not mark.exists()
