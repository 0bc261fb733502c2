"""`reproduce --push` to a repo whose files the user edited on the Hub: the push refuses to
replace them, and the refusal says how to finish with reproduce itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.hub.contents import paths_before
from medsynth_kohya.pipeline.reproduce import ORIGINAL
from medsynth_kohya.sampling.synthset import IMAGES
from medsynth_kohya.training.record import RunFolder

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


def _run(runner: CliRunner, isic2020: SyntheticSet, workdir: Path, fake: FakeGen,
         *extra: str) -> tuple[int, str, str]:
    return invoke(runner, "reproduce", isic2020.root, "--workdir", workdir, "--n", 2,
                  "--set", "max_train_steps=6", "--set", "save_every_n_steps=3",
                  "--sd-scripts", fake.sd_scripts, "--python", PYTHON, "--push", REPO, *extra)


@pytest.mark.parametrize("placed", ["README.md", "training/config.toml", "samples/grid.jpg"])
def test_files_the_push_would_replace_are_refused_before_any_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, placed: str) -> None:
    """A repo made on the Hub by hand holding a file at a path the push uploads: reproduce
    refuses before preparing or training (not hours later at the push), asking the Hub only
    to read; its dry run says a real run would stop there; --force-push goes through."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo = fake_hub.add_repo(REPO, "alice")
    repo.edit({placed: CARD})
    head, workdir = repo.head, tmp_path / "work"

    code, stdout, stderr = _run(runner, isic2020, workdir, fake)
    assert code == 1, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert placed in lines[0] and "--force-push" in lines[0]
    assert not workdir.exists()  # nothing prepared, trained or sampled
    assert {method for method, _ in fake_hub.requests} <= {"GET", "HEAD"}
    assert repo.head == head

    code, stdout, stderr = _run(runner, isic2020, workdir, fake, "--dry-run")
    assert code == 0, stderr
    stops = [line for line in stderr.splitlines() if "a real run would stop at: " in line]
    assert len(stops) == 1 and placed in stops[0], stderr
    assert not workdir.exists()

    code, stdout, stderr = _run(runner, isic2020, workdir, fake, "--force-push")
    assert code == 0, stderr
    assert placed in stdout + stderr and "published at" in stdout
    assert repo.files[placed] != CARD


def test_files_the_push_leaves_alone_do_not_stop_it(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo = fake_hub.add_repo(REPO, "alice")
    theirs = {"notes.md": CARD, "samples/by-hand.png": b"\x89PNG not ours"}
    repo.edit(theirs)
    workdir = tmp_path / "work"
    code, stdout, stderr = _run(runner, isic2020, workdir, fake)
    assert code == 0, stderr
    assert "published at" in stdout and "will replace" not in stdout + stderr
    assert all(repo.files[path] == data for path, data in theirs.items())
    # the paths asked about before training are the ones the push then uploaded
    lora = RunFolder(workdir / "run").final_lora(ORIGINAL.class_name)
    images = sorted(path.name for path in (workdir / "synthetic" / IMAGES).glob("*.png"))
    assert set(paths_before(lora.name, images)) == set(repo.files) - {".gitattributes", *theirs}


def test_a_repo_that_cannot_be_read_before_training_is_checked_at_the_push(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub answering whoami but not the repo's listing is no verdict: reproduce warns and
    runs, and the push stage, which reads the repo again, still refuses what it would replace."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    repo = fake_hub.add_repo(REPO, "alice")
    repo.edit({"README.md": CARD})
    fake_hub.fail("GET", rf"^/api/models/{REPO}$", 500, times=1)
    code, stdout, stderr = _run(runner, isic2020, tmp_path / "work", fake)
    assert code == 1
    assert "could not check before training" in stdout + stderr
    last = stderr.strip().splitlines()[-1]
    assert "README.md" in last and "--force-push" in last
    assert (tmp_path / "work" / "synthetic").is_dir()  # the stages ran
    assert repo.files["README.md"] == CARD


def test_a_hub_that_cannot_be_reached_names_the_setting_reproduce_has(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """reproduce has no --endpoint, yet its refusals said "check --endpoint / HF_ENDPOINT":
    they name HF_ENDPOINT alone, as a web page in place of the Hub does; push keeps both."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for endpoint, said in ((closed, "and the network"), (fake_hub.url, "did not answer as")):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        fake_hub.fail("GET", r"/api/", "html")
        code, stdout, stderr = _run(runner, isic2020, tmp_path / "work", fake)
        line = " ".join(stderr.split())
        assert code == 1 and len(stderr.strip().splitlines()) == 1, stdout + stderr
        assert "check HF_ENDPOINT" in line and "--endpoint" not in line, line
        assert said in line and not (tmp_path / "work").exists()

