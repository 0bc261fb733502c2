"""What must never leave the user's machine, in one place for the tests that check it
(test_privacy, test_push_secrets, test_scan): a user's name and home folder, and secrets of
every source a run can learn them from. Each value is unique, so a leak names its source."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from .conftest import png_chunk

USER = "zoe-kowalski"
"""A login that names a person (not an account name every machine of a kind shares)."""

# Given to a trained run (test_privacy): by --set, in a preset, in the environment.
TOKEN_SET_SECRET = "hf_SetTokenNotHF_TOKEN_4242"
PRESET_SECRET = "preset-Secret-77-xyz"
AUTH_SECRET = "AuthHeaderPrivate-555"
ENV_SECRET = "env-Secret-31337-abc"

# Hidden in a run record's values (test_push_secrets), by how push learns each is a secret.
ENV = "env_WandbFromTheEnvironment0001"
KEYED = "hf_ConfigKeyedToken000000000002"
SET = "wb_SetOnTheCommandLine000000003"
LISTED = "sk_ListedInOptimizerArgs0000004"
ARGUMENT = "wb_InlineLaunchArgument00000005"


def make_home(root: Path, monkeypatch: pytest.MonkeyPatch, name: str = USER) -> Path:
    """A fake home folder `root/home/<name>/` that is HOME, `name` the login: what the scan
    searches published files for."""
    folder = root / "home" / name
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("LOGNAME", name)
    return folder


def png(*chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 PNG with `chunks` (kind, data) between its header and its end, as image tools
    write generation parameters into tEXt, iTXt or zTXt chunks."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + header + b"".join(png_chunk(k, d) for k, d in chunks)
            + png_chunk(b"IEND", b""))
