"""sdscripts.checkout's small rules: the per-user folder, the Python given, modules a checkout
or an interpreter holds, paths as sd-scripts sees them, and the fix for an old checkout."""

from __future__ import annotations

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
