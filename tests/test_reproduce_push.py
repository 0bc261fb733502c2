"""`reproduce --push` to a repo whose files the user edited on the Hub: the push refuses to
replace them, and the refusal says how to finish with reproduce itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .fake_hub import TOKEN, FakeHub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
REPO = "alice/melanoma-lora"
CARD = b"# The card as its owner rewrote it on the Hub\n"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_original_gen(tmp_path, monkeypatch)


def test_a_card_edited_on_the_hub_is_refused_then_replaced_with_force_push(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    workdir = tmp_path / "work"

    def reproduce(n: int, *extra: str) -> tuple[int, str, str]:
        return invoke(runner, "reproduce", isic2020.root, "--workdir", workdir, "--n", n,
                      "--set", "max_train_steps=12", "--set", "save_every_n_steps=3",
                      "--sd-scripts", fake.sd_scripts, "--python", PYTHON, "--push", REPO,
                      *extra)

    assert reproduce(2)[0] == 0
    repo = fake_hub.repos[REPO]
    repo.edit({"README.md": CARD})
    head = repo.head

    code, _, stderr = reproduce(3)  # a new sample set: the push stage runs again
    lines = stderr.strip().splitlines()
    assert code == 1 and "Traceback" not in stderr
    refusal = " ".join(lines[-1].split())
    assert "README.md" in refusal and "same reproduce command again with --force-push" in refusal
    assert "`medsynth-kohya push`" not in refusal
    assert repo.head == head and repo.files["README.md"] == CARD

    code, stdout, stderr = reproduce(3, "--force-push")
    assert code == 0, stderr
    assert repo.files["README.md"] != CARD and "published at" in stdout
    state = json.loads((workdir / "reproduce.json").read_text(encoding="utf-8"))["stages"]
    assert state["push"]["status"] == "done"
    code, stdout, _ = reproduce(3)
    assert code == 0 and "already done (inputs unchanged): published" in stdout
