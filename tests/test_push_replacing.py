"""What a push replaces in an existing repo: files an earlier push of the tool sent, as it sent
them; a file the user put there, edited on the Hub since, or of a repo the tool never pushed
to (another model's card and weights) is replaced only with --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import push as hubmod

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
CARD = b"---\nlicense: mit\n---\n# What this model is, as its owner wrote it on the Hub\n"


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return " ".join(lines[0].split())


def test_a_card_edited_on_the_hub_is_replaced_only_with_force(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url)
    repo = fake_hub.repos[REPO]
    repo.edit({"README.md": CARD})
    head = repo.head
    newer = make_run(tmp_path / "second", step=20)

    code, _, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--endpoint", fake_hub.url)
    message = _one_line(stderr)
    assert code == 1 and "README.md" in message and "--force" in message
    assert repo.head == head and repo.files["README.md"] == CARD

    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0 and repo.head == head
    assert "README.md" in stderr and "--force" in " ".join(stderr.split())

    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--force",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert repo.files["README.md"] != CARD and "README.md" in stdout
    again = hubmod.push(newer, REPO, endpoint=fake_hub.url)  # now the tool's own again
    assert not again.changed


def test_another_models_repo_keeps_its_card_and_weights(fake_hub: FakeHub,
                                                         tmp_path: Path) -> None:
    run = make_run(tmp_path)
    theirs = {"README.md": CARD, "melanoma.safetensors": b"weights of another model",
              "training/config.toml": b"# theirs\n"}
    repo = fake_hub.add_repo(REPO, "alice")
    repo.edit(theirs, "another model")
    head = repo.head

    with pytest.raises(UserError) as refused:
        hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert all(path in str(refused.value) for path in theirs)
    assert repo.head == head and all(repo.files[p] == data for p, data in theirs.items())

    repo.edit({"README.md": b"---\nlicense: mit\n---\n# same path, other text\n"})
    repo.files["melanoma.safetensors"] = (run / "output" / "melanoma.safetensors").read_bytes()
    repo.commit("the same weights uploaded by hand")
    with pytest.raises(UserError) as refused:
        hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert "melanoma.safetensors" not in str(refused.value)  # the same bytes replace nothing

    result = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN, force=True)
    assert result.changed and set(result.replaced) == {"README.md", "training/config.toml"}
