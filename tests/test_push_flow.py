"""`push`'s flow as a user sees it: what a dry run says of an existing repo, the refusals and
their whole lines (naming the option the repo was given by), the folders a push waits for, and
the run record's note of the push."""

from __future__ import annotations

import importlib
import json
import logging
import socket
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import push as hubmod

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub
from .test_hub import REPO, _png, _refused, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
CARD = b"---\nlicense: mit\n---\n# What this model is, as its owner wrote it on the Hub\n"


def _said(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def _kept(repo_id: str, visibility: str) -> str:
    """The warning that an existing repo keeps its visibility."""
    return (f"{repo_id} already exists and is {visibility}; push does not change the visibility "
            "(do it in the repo's settings on the Hub)")


@pytest.mark.parametrize("existing", ["private", "public"])
def test_a_dry_run_shows_the_visibility_an_existing_repo_keeps(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path, existing: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's own visibility, whatever was asked; a warning only when the ask differs."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path)
    fake_hub.add_repo(REPO, "alice", private=existing == "private")
    other = "public" if existing == "private" else "private"
    for asked, warned in ((existing, False), (other, True)):
        code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                      f"--{asked}", "--endpoint", fake_hub.url)
        assert code == 0, stderr
        assert (f"Would push to {fake_hub.url}/{REPO} as alice (an existing {existing} repo)"
                in _said(stdout))
        assert (_kept(REPO, existing) in _said(stderr)) is warned, stderr
    assert len(fake_hub.repos[REPO].commits) == 1


def test_a_push_keeps_an_existing_repos_visibility_and_says_so(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The result's `private` is the repo's visibility after the push, not the one asked for."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path)
    fake_hub.add_repo(REPO, "alice", private=False)
    result = hubmod.push(run, REPO, private=True, endpoint=fake_hub.url)
    assert result.changed and result.private is False and _kept(REPO, "public") in result.warnings
    fake_hub.add_repo("alice/other-lora", "alice", private=True)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", "alice/other-lora",
                                  "--public", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert _kept("alice/other-lora", "private") in _said(stderr)
    assert fake_hub.repos["alice/other-lora"].private
    assert f"{fake_hub.url}/alice/other-lora" in stdout


def test_replacing_a_file_the_tool_did_not_send_is_refused_in_one_whole_line(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal says which file, why, and how past it; a dry run says the push would be
    refused, unless --force, where it lists what the push replaces instead."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path)
    hubmod.push(run, REPO, endpoint=fake_hub.url)
    repo = fake_hub.repos[REPO]
    repo.edit({"README.md": CARD})
    head = repo.head
    newer = make_run(tmp_path / "second", step=20)
    refusal = (f"{REPO} holds 1 file that this push would replace (README.md) in another "
               "version than medsynth-kohya pushed: put there by hand or another tool, or "
               "edited on the Hub since; keep a copy of what you need, then run "
               "`medsynth-kohya push` again with --force to replace them (the repo's history "
               "keeps the old versions)")

    message = _refused(runner, newer, "--repo-id", REPO, "--endpoint", fake_hub.url)
    assert _said(message) == f"Error: {refusal}"
    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0 and f"the push will be refused: {refusal}" in _said(stderr), stderr
    assert "Would replace" not in stdout
    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--force", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert "will be refused" not in stderr and f"Would replace in {REPO}: README.md" in stdout
    assert repo.head == head and repo.files["README.md"] == CARD


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_refusal_names_the_option_the_repo_was_given_by(fake_hub: FakeHub, tmp_path: Path,
                                                          dry_run: bool) -> None:
    """reproduce pushes with `option="--push"`: the line names that, not --repo-id."""
    with pytest.raises(UserError) as refused:
        hubmod.push(make_run(tmp_path), "bob/melanoma-lora", endpoint=fake_hub.url,
                    token=TOKEN, dry_run=dry_run, option="--push")
    assert str(refused.value).startswith(
        "--push bob/melanoma-lora: the token belongs to alice, who cannot write to bob")
    assert fake_hub.requests == [("GET", "/api/whoami-v2")] and not fake_hub.repos


def test_a_check_that_cannot_read_the_repo_does_not_say_a_push_failed(
        fake_hub: FakeHub, tmp_path: Path) -> None:
    """replaced_before runs before anything is pushed: its failure is a read's."""
    hubmod.push(make_run(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)
    fake_hub.fail("GET", rf"^/api/models/{REPO}$", 500, times=1)
    with pytest.raises(UserError) as unread:
        hubmod.replaced_before(REPO, ["README.md"], endpoint=fake_hub.url, token=TOKEN,
                               option="--push", force=False)
    message = str(unread.value)
    assert f"the Hub at {fake_hub.url} failed with 500 during a read of the repository" in message
    assert "push did not finish" not in message


@pytest.mark.parametrize(("endpoint", "shown"), [
    ("https://bob:S3cret@hub.example.org/api", "https://…@hub.example.org/api"),
    ("https://bob@lab.example:S3cret@hub.example.org", "https://…@hub.example.org")])
def test_an_endpoint_with_a_password_is_one_whole_line_without_it(
        runner: CliRunner, tmp_path: Path, endpoint: str, shown: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when the user name is an e-mail address: the host is what follows the last @."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    message = _refused(runner, make_run(tmp_path), "--repo-id", REPO, "--endpoint", endpoint)
    assert _said(message) == (
        f"Error: --endpoint {shown!r} holds a user name or password before its host: the Hub "
        "takes the token alone (HF_TOKEN or `hf auth login`); remove them from the URL")


def test_an_endpoint_ending_in_a_slash_gives_the_repos_url(fake_hub: FakeHub,
                                                           tmp_path: Path) -> None:
    result = hubmod.push(make_run(tmp_path), REPO, endpoint=fake_hub.url + "/", token=TOKEN)
    assert result.url == f"{fake_hub.url}/{REPO}" and result.commit == fake_hub.repos[REPO].head


def test_a_dry_run_without_a_token_scans_every_byte_a_push_sends(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path) -> None:
    """What the dry run says it searched is what then lands on the Hub; without a token it
    says it cannot list deletions, and asks nothing."""
    run = make_run(tmp_path)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0 and fake_hub.requests == [], stderr
    assert ("; without one the dry run cannot list what the push would delete from the repo"
            in _said(stderr)), stderr
    pushed = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    sent = sum(len(fake_hub.repos[REPO].files[path]) for path, _ in pushed.files)
    assert sent > 0 and f"Privacy scan passed: {len(pushed.files)} files, {sent} B searched" in (
        _said(stdout))


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_push_waits_for_a_prepare_rewriting_the_runs_data(fake_hub: FakeHub, tmp_path: Path,
                                                            dry_run: bool) -> None:
    """The card describes the prepared folder's manifest: one prepare is rewriting is refused
    before anything is sent."""
    run = make_run(tmp_path)
    prepared = Path(json.loads((run / "run.json").read_text())["dataset"]["prepared"])
    with locks.hold(prepared, "prepare"), pytest.raises(
            UserError, match=rf"{prepared} is still being written by `medsynth-kohya prepare`"):
        hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN, dry_run=dry_run)
    assert fake_hub.requests == [] and not fake_hub.repos


def _other_hosts_lock(folder: Path, command: str) -> None:
    """The lock record a command running on another machine keeps in `folder`."""
    assert socket.gethostname() != "lab-node-7"
    (folder / locks.LOCK_NAME).write_text(json.dumps(
        {"command": command, "pid": 4242, "host": "lab-node-7",
         "since": "2026-01-01T00:00:00+00:00"}))


@pytest.mark.parametrize("command", ["prepare", "sample"])
def test_another_hosts_prepare_or_sample_is_waited_for_until_break_lock(
        fake_hub: FakeHub, tmp_path: Path, command: str) -> None:
    """A prepare of the run's data or a sample of the set pushed, on another machine, cannot
    be seen to run: its lock refuses the push, which --break-lock passes."""
    run = make_run(tmp_path)
    synth = tmp_path / "synthetic"
    (synth / "images").mkdir(parents=True)
    (synth / "images" / "SYN_0000000.png").write_bytes(_png(7))
    (synth / "metadata.csv").write_text("isic_id,prompt\nSYN_0000000,a prompt\n",
                                        encoding="utf-8")
    prepared = Path(json.loads((run / "run.json").read_text())["dataset"]["prepared"])
    _other_hosts_lock(prepared if command == "prepare" else synth, command)
    for dry_run in (True, False):
        with pytest.raises(UserError, match=r"still being written by .*lab-node-7.*--break-lock"):
            hubmod.push(run, REPO, samples=synth, endpoint=fake_hub.url, token=TOKEN,
                        dry_run=dry_run)
    assert not fake_hub.repos
    result = hubmod.push(run, REPO, samples=synth, endpoint=fake_hub.url, token=TOKEN,
                         break_lock=True)
    repo = fake_hub.repos[REPO]
    assert result.changed and result.commit == repo.head
    assert repo.files["samples/SYN_0000000.png"] == _png(7)


def test_a_lock_broken_with_break_lock_is_said_and_the_push_noted(
        fake_hub: FakeHub, tmp_path: Path) -> None:
    """Another host's lock on the run refuses the push; --break-lock passes it, with a
    warning, and the run record notes the push where it landed."""
    run = make_run(tmp_path)
    _other_hosts_lock(run, "push")
    with pytest.raises(UserError, match="lab-node-7"):
        hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert fake_hub.requests == []

    result = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN, break_lock=True)
    assert "broke (--break-lock)" in result.warnings[0] and "lab-node-7" in result.warnings[0]
    pushes = json.loads((run / "run.json").read_text())["pushes"]
    assert len(pushes) == 1 and set(pushes[0]) == {"repo_id", "url", "commit", "changed", "time"}
    assert pushes[0]["repo_id"] == REPO and pushes[0]["url"] == f"{fake_hub.url}/{REPO}"
    assert pushes[0]["commit"] == fake_hub.repos[REPO].head == result.commit
    assert pushes[0]["changed"] is True


def test_the_clients_log_and_progress_bars_are_as_they_were_after_a_push(
        fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From Python (a notebook), a push, failed or not, leaves huggingface_hub's log level and
    progress bars as the caller had them."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled

    logger = logging.getLogger("huggingface_hub")
    monkeypatch.setattr(logger, "level", logger.level)
    logger.setLevel(logging.INFO)
    assert not are_progress_bars_disabled()
    run = make_run(tmp_path)
    hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)
    assert logger.level == logging.INFO and not are_progress_bars_disabled()
    fake_hub.fail("POST", r"/commit/", 500)
    with pytest.raises(UserError, match="failed with 500"):
        hubmod.push(make_run(tmp_path / "second", step=20), REPO, endpoint=fake_hub.url,
                    token=TOKEN)
    assert logger.level == logging.INFO and not are_progress_bars_disabled()


def test_progress_bars_asked_for_are_left_on_without_a_warning(
        fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_DISABLE_PROGRESS_BARS=0 (read by huggingface_hub at import) keeps the bars, and
    push does not try to turn them off, which would warn that it cannot."""
    bars = importlib.import_module("huggingface_hub.utils.tqdm")  # the module, not its class
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS", False)
    monkeypatch.setattr(bars, "HF_HUB_DISABLE_PROGRESS_BARS", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hubmod.push(make_run(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)
    assert not [w for w in caught if "progress bars" in str(w.message)], caught


def test_a_push_that_cannot_note_itself_in_the_run_record_says_so(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub has the files: a record that cannot take the note (broken while the push ran)
    is a warning naming it, not a failed push."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = make_run(tmp_path)
    fake_hub.interleave(lambda _: (run / "run.json").write_text("{ broken", encoding="utf-8"))
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stderr
    assert (f"pushed, but could not note the push in {run / 'run.json'}:"
            in _said(stderr)), stderr
    assert f"{fake_hub.url}/{REPO}" in stdout and len(fake_hub.repos[REPO].commits) == 2
