"""sdscripts.checkout's small rules: the per-user folder, the Python given, modules a checkout
or an interpreter holds, paths as sd-scripts sees them, and the fix for an old checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import checkout


def test_a_relative_xdg_data_home_is_ignored_as_the_spec_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_DATA_HOME is read on Linux only")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "data")
    assert checkout.user_dir() == tmp_path / ".local" / "share" / "medsynth-kohya" / "sd-scripts"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert checkout.user_dir() == tmp_path / "xdg" / "medsynth-kohya" / "sd-scripts"


def test_a_python_from_home_is_written_out_and_a_command_name_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert checkout.python("~/venv/bin/python") == str(tmp_path / "venv" / "bin" / "python")
    with pytest.raises(UserError, match="--python ~nosuchuser-medsynth/python: cannot expand"):
        checkout.python("~nosuchuser-medsynth/python")
    monkeypatch.setenv(checkout.ENV_PYTHON, "~nosuchuser-medsynth/python")
    with pytest.raises(UserError, match=f"^\\${checkout.ENV_PYTHON} ~nosuchuser-medsynth/"):
        checkout.python()
    assert checkout.python("python3") == "python3"


def test_a_module_is_a_file_or_a_package_of_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "networks" / "lycoris").mkdir(parents=True)
    (tmp_path / "networks" / "lora.py").write_text("", encoding="utf-8")
    assert checkout.has_module(tmp_path, "networks.lora")
    assert checkout.has_module(tmp_path, "networks.lycoris")
    assert not checkout.has_module(tmp_path, "networks.dylora")


def test_only_a_module_surely_missing_counts_as_not_installed(tmp_path: Path) -> None:
    assert checkout.installed(sys.executable, "json")
    assert not checkout.installed(sys.executable, "no_such_module_here")
    assert checkout.installed(str(tmp_path / "no-python"), "anything")  # cannot be told
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    failing.chmod(0o755)
    assert checkout.installed(str(failing), "anything")


def test_a_path_is_written_out_only_where_sd_scripts_would_not_find_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, sd_dir = tmp_path / "here", tmp_path / "sd-scripts"
    for folder in (here, sd_dir):
        (folder / "models").mkdir(parents=True)
        (folder / "models" / "both.safetensors").write_bytes(b"m")
    (here / "models" / "mine.safetensors").write_bytes(b"m")
    monkeypatch.chdir(here)
    assert checkout.local_path("models/both.safetensors", sd_dir) == "models/both.safetensors"
    assert checkout.local_path("models/mine.safetensors", sd_dir) == str(
        (here / "models" / "mine.safetensors").resolve())
    assert checkout.local_path("owner/model", sd_dir) == "owner/model"


def test_an_old_per_user_copy_is_fixed_by_installing_again(tmp_path: Path) -> None:
    assert checkout.pin_fix(checkout.Location(tmp_path, checkout.USER)) == (
        "medsynth-kohya install-sd-scripts")
    given = checkout.pin_fix(checkout.Location(tmp_path / "my sd", checkout.GIVEN))
    assert given == (f"git -C '{tmp_path / 'my sd'}' fetch --tags && git -C "
                     f"'{tmp_path / 'my sd'}' checkout {checkout.PINNED_COMMIT}")


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c",
                           "user.email=t@t", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_only_a_clone_of_its_own_has_a_commit(tmp_path: Path) -> None:
    """sd-scripts' files copied into a folder of the user's own repository (or a download
    unpacked in one): git answers with that repository's commit, which is not sd-scripts'."""
    project = tmp_path / "project"
    copy = project / "sd-scripts"
    copy.mkdir(parents=True)
    (copy / checkout.TRAIN_SCRIPT).write_text("", encoding="utf-8")
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "mine")
    head = _git(project, "rev-parse", "HEAD")
    assert checkout.commit(project) == head
    assert checkout.commit(copy) is None
    assert checkout.commit(tmp_path / "no-such-folder") is None
    link = tmp_path / "linked"
    link.symlink_to(project, target_is_directory=True)
    assert checkout.commit(link) == head  # a clone reached through a link is still one


def test_a_copy_that_is_no_clone_is_replaced_by_a_new_clone(tmp_path: Path) -> None:
    """git can neither read nor move such a copy's commit: `git -C COPY checkout PIN` would
    run in the repository around it, or fail outside one."""
    for rule, named in ((checkout.GIVEN, "--sd-scripts"), (checkout.ENV, f"${checkout.ENV_DIR}"),
                        (checkout.USER, f"${checkout.ENV_DIR}"),
                        (checkout.CHECKOUT, f"${checkout.ENV_DIR}")):
        assert checkout.pin_fix(checkout.Location(tmp_path, rule), clone=False) == (
            f"medsynth-kohya install-sd-scripts --dir NEW (a new folder), then point {named} "
            "at NEW")


def test_the_pin_is_the_commit_this_projects_submodule_records() -> None:
    """In a checkout of this project the doctor's fix for sd-scripts at another commit is
    `git submodule update --init vendor/sd-scripts`, which checks out the commit the index
    records for the submodule: another commit than the pin would leave the warning standing."""
    root = checkout.checkout_root()
    if root is None or not (root / ".git").exists():
        pytest.skip("not a git checkout of this project")
    entry = _git(root, "ls-files", "--stage", "--", "vendor/sd-scripts").split()
    assert entry[:2] == ["160000", checkout.PINNED_COMMIT]
    assert _git(root, "config", "-f", ".gitmodules", "submodule.vendor/sd-scripts.url") == (
        checkout.UPSTREAM_URL)


def test_the_per_user_folder_on_each_platform(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Where install-sd-scripts puts sd-scripts by default, and the search finds it (on Linux
    without XDG_DATA_HOME: ~/.local/share)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert checkout.user_dir() == tmp_path / ".local" / "share" / "medsynth-kohya" / "sd-scripts"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert checkout.user_dir() == tmp_path / "Local" / "medsynth-kohya" / "sd-scripts"
    monkeypatch.delenv("LOCALAPPDATA")
    assert checkout.user_dir() == (tmp_path / "AppData" / "Local" / "medsynth-kohya" /
                                   "sd-scripts")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert checkout.user_dir() == (tmp_path / "Library" / "Application Support" /
                                   "medsynth-kohya" / "sd-scripts")


def test_locate_is_the_folder_the_search_finds(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkout.ENV_DIR, str(tmp_path / "env"))
    assert checkout.locate() == tmp_path / "env"
    assert checkout.locate(tmp_path / "given") == tmp_path / "given"


def test_a_path_from_the_home_of_no_such_user_names_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^path ~nosuchuser-medsynth/model: cannot expand"):
        checkout.local_path("~nosuchuser-medsynth/model", tmp_path)
    with pytest.raises(UserError, match=r"^--vae ~nosuchuser-medsynth/vae: cannot expand"):
        checkout.local_path("~nosuchuser-medsynth/vae", tmp_path, "--vae")


def test_an_empty_python_is_refused_in_one_line_with_the_fix() -> None:
    with pytest.raises(UserError) as refused:
        checkout.python(" ")
    assert str(refused.value) == (
        f"--python is empty: give the Python that runs sd-scripts, or leave it out for "
        f"${checkout.ENV_PYTHON}, else this one")


def test_an_installed_wheel_without_sd_scripts_is_told_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No submodule to initialise outside a checkout of this project: the doctor's row names
    where it looked and the one command that puts sd-scripts where it looks last."""
    from medsynth_kohya.machine.doctor import FAIL, Check, diagnose

    monkeypatch.setattr(checkout, "checkout_root", lambda: None)
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    report = diagnose(python=str(tmp_path / "no-python"), gpus=[], hub=False, workdir=tmp_path)
    assert next(c for c in report.checks if c.name == "sd-scripts") == Check(
        "sd-scripts", FAIL, f"sd-scripts not found: no --sd-scripts, no ${checkout.ENV_DIR}, "
        f"none in {checkout.user_dir()}", "medsynth-kohya install-sd-scripts (or --sd-scripts DIR)")


def test_a_submodule_at_another_commit_is_updated_by_git(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `git pull` of this project that moved the pin leaves vendor/sd-scripts where it was
    until the submodule is updated: the doctor warns and names that one command."""
    from medsynth_kohya.machine.doctor import WARN, diagnose

    root = tmp_path / "my project"
    sd_dir = root / "vendor" / "sd-scripts"
    sd_dir.mkdir(parents=True)
    (sd_dir / checkout.TRAIN_SCRIPT).write_text("", encoding="utf-8")
    _git(sd_dir, "init", "-q")
    _git(sd_dir, "add", ".")
    _git(sd_dir, "commit", "-qm", "an older sd-scripts")
    monkeypatch.setattr(checkout, "checkout_root", lambda: root)
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    report = diagnose(python=str(tmp_path / "no-python"), gpus=[], hub=False, workdir=tmp_path)
    row = next(c for c in report.checks if c.name == "sd-scripts")
    assert (row.status, row.fix) == (
        WARN, f"git -C '{root}' submodule update --init vendor/sd-scripts")
    assert row.detail == (f"{sd_dir} at {checkout.commit(sd_dir)}, not "
                          f"{checkout.PINNED_RELEASE}; found by {checkout.CHECKOUT}")
