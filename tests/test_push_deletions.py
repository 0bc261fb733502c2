"""What a push deletes from the repo: only files an earlier push of the tool uploaded (its list
in the repo, contents.PUSHED), still as it sent them, and this one lacks; a file the user put or
edited there stays (issue 9), also when the edit lands while the push runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya import __version__, files
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub import contents
from medsynth_kohya.hub import push as hubmod
from medsynth_kohya.sdscripts import render

from .conftest import invoke
from .fake_hub import TOKEN, FakeHub, Repo, git_blob_sha1
from .test_hub import OLD_SAMPLES, REPO, SAMPLE_NAMES, _refused, make_run

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
MINE = {"samples/my-own-figure.png": b"\x89PNG the user's own figure",
        "training/notes.md": b"# what I changed by hand\n",
        "evaluation/reader-study.csv": b"reader,score\n1,0.8\n"}


def _put(fake_hub: FakeHub, found: dict[str, bytes]) -> None:
    """Files added to the repo by hand (the web editor, another tool)."""
    repo = fake_hub.repos[REPO]
    repo.files.update(found)
    repo.commit("added by hand")


def _newer(tmp_path: Path) -> Path:
    """A second run whose training samples differ from the first run's."""
    return make_run(tmp_path / "second", step=20, samples=OLD_SAMPLES)


def test_the_users_files_survive_and_the_tools_old_files_go(fake_hub: FakeHub, tmp_path: Path,
                                                            ) -> None:
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    _put(fake_hub, MINE)

    result = hubmod.push(_newer(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)

    files = fake_hub.repos[REPO].files
    assert {p: files.get(p) for p in MINE} == MINE
    assert set(result.deleted) == {f"samples/{n}" for n in SAMPLE_NAMES}
    assert not any(f"samples/{n}" in files for n in SAMPLE_NAMES)
    assert all(f"samples/{n}" in files for n in OLD_SAMPLES)
    [warning] = [w for w in result.warnings if "left 3 files" in w]
    assert all(path in warning for path in MINE) and "\n" not in warning


def test_the_commit_says_it_is_a_push_of_this_version_and_leaves_no_cache(
        fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's history names the tool and its version; the earlier push's list, read to
    judge deletions, is read into a temporary folder, not the user's Hugging Face cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    hubmod.push(_newer(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)
    pushes = fake_hub.repos[REPO].messages[-2:]
    assert pushes == [("Push a medsynth-kohya training run",
                       f"Pushed by medsynth-kohya {__version__}.")] * 2
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_a_kept_file_warning_names_both_kinds_and_at_most_five_of_each() -> None:
    five = tuple(f"samples/{i}.png" for i in range(5))
    gone = hubmod.Removals(kept=five, edited=("training/run.toml",))
    assert gone.warning(REPO) == (
        f"left 6 files in {REPO}: 5 that no earlier push of medsynth-kohya listed in "
        f"{contents.PUSHED} ({', '.join(five)}) and 1 edited on the Hub since medsynth-kohya "
        "pushed them (training/run.toml); delete them on the Hub if they should go")
    six = hubmod.Removals(edited=(*five, "samples/5.png"))
    assert f"({', '.join(five)} and 1 more)" in str(six.warning(REPO))


def test_the_list_names_every_uploaded_repo_path_and_nothing_local(fake_hub: FakeHub,
                                                                    tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    result = hubmod.push(run, REPO, endpoint=fake_hub.url, token=TOKEN)

    repo = fake_hub.repos[REPO]
    data = repo.files[contents.PUSHED]
    uploaded = {path for path, _ in result.files} - {contents.PUSHED}
    listed = json.loads(data)
    assert listed["tool"] == "medsynth-kohya" and list(listed["files"]) == sorted(uploaded)
    assert uploaded == set(repo.files) - {".gitattributes", contents.PUSHED}
    for path, recorded in listed["files"].items():  # as the Hub names the version it holds
        sibling = repo.sibling(path)
        assert (sibling["lfs"]["sha256"] == recorded["sha256"] if "lfs" in sibling
                else sibling["blobId"] == recorded["git"]), path
    assert {"lfs" in repo.sibling(path) for path in uploaded} == {True, False}
    assert "melanoma.safetensors" in uploaded and "README.md" in uploaded
    assert str(tmp_path).encode() not in data and str(Path.home()).encode() not in data
    assert contents.plan(run, REPO, token=TOKEN, environ={}).findings == ()


def test_a_repo_pushed_without_a_list_loses_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    """A repo from an older version (no list) or with a damaged list: nothing is deleted."""
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    repo = fake_hub.repos[REPO]
    del repo.files[contents.PUSHED]
    repo.commit("as an older medsynth-kohya left it")

    result = hubmod.push(_newer(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)

    assert result.deleted == ()
    assert all(f"samples/{n}" in repo.files for n in (*SAMPLE_NAMES, *OLD_SAMPLES))
    assert any(f"left {files.counted(len(SAMPLE_NAMES))}" in w for w in result.warnings)
    repo.files[contents.PUSHED] = b"{not json"
    repo.commit("a damaged list")
    again = hubmod.push(make_run(tmp_path / "third", step=30), REPO, endpoint=fake_hub.url,
                        token=TOKEN)
    assert again.deleted == () and all(f"samples/{n}" in repo.files for n in OLD_SAMPLES)
    assert json.loads(repo.files[contents.PUSHED])["files"]  # the push writes a good one


def test_the_dry_run_lists_exactly_what_would_be_deleted_and_sends_nothing(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    _put(fake_hub, MINE)
    repo = fake_hub.repos[REPO]
    before, commits, seen = dict(repo.files), list(repo.commits), len(fake_hub.requests)
    newer = _newer(tmp_path)

    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert code == 0 and "Would delete from" not in stdout  # no token: the repo is not read
    assert "cannot list what the push would delete" in stderr
    assert len(fake_hub.requests) == seen

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    [line] = [line for line in stdout.splitlines() if line.startswith("Would delete from")]
    assert line == (f"Would delete from {REPO}: "
                    + ", ".join(sorted(f"samples/{n}" for n in SAMPLE_NAMES)))
    assert "left 3 files" in " ".join(stderr.split())
    assert repo.files == before and repo.commits == commits
    assert {method for method, _ in fake_hub.requests[seen:]} <= {"GET", "HEAD"}

    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stderr
    assert set(before) - set(repo.files) == {f"samples/{n}" for n in SAMPLE_NAMES}


def test_a_dry_run_of_a_new_repo_deletes_nothing(runner: CliRunner, fake_hub: FakeHub,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path / "first"), "--repo-id",
                                  REPO, "--dry-run", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert f"Would delete from {REPO}: nothing" in stdout and REPO not in fake_hub.repos


def test_an_unreadable_repo_makes_the_dry_run_say_so(runner: CliRunner, fake_hub: FakeHub,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fake_hub.fail("GET", r"/api/models/", 503)
    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path / "first"), "--repo-id",
                                  REPO, "--dry-run", "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert "Would delete from" not in stdout
    said = " ".join(stderr.split())
    assert f"could not read {REPO} to list what the push would delete" in said
    assert "failed with 503 during a read of the repository" in said
    assert "did not finish" not in said, "a dry run pushes nothing"
    assert TOKEN not in stdout + stderr

    code, stdout, stderr = invoke(runner, "push", make_run(tmp_path / "second"), "--repo-id",
                                  REPO, "--dry-run", "--endpoint", "http://127.0.0.1:9")
    said = " ".join(stderr.split())
    assert code == 0 and "could not connect to http://127.0.0.1:9 during the check" in said, said
    assert "push did not finish" not in said and "already uploaded" not in said


def test_removals_keep_what_no_push_listed_or_the_hub_changed() -> None:
    def hub(path: str) -> str:
        return f"{path}@hub"

    paths = ["README.md", "old.safetensors", "samples/a.png", "samples/b.png", "samples/mine.png",
             "checkpoints/x.safetensors", "training/run.json", "notes/samples/a.png",
             "samples/edited.png", "training/edited.toml", "samples/old-list.png"]
    on_hub: dict[str, str | None] = {path: hub(path) for path in paths}
    listed: dict[str, frozenset[str] | None] = {
        path: frozenset({hub(path), "sha"}) for path in paths if path != "samples/mine.png"}
    listed |= {"samples/edited.png": frozenset({"sha", "git"}),
               "training/edited.toml": frozenset({"sha", "git"}), "samples/old-list.png": None}
    gone = hubmod.removals(on_hub, listed, {"README.md", "samples/b.png", "training/run.json"})
    assert gone.delete == ("checkpoints/x.safetensors", "old.safetensors", "samples/a.png",
                           "samples/old-list.png")
    assert gone.kept == ("samples/mine.png",)
    assert gone.edited == ("samples/edited.png", "training/edited.toml")
    warning = str(gone.warning(REPO))
    assert warning.startswith(f"left 3 files in {REPO}: 1 that no earlier push")
    assert "2 edited on the Hub since medsynth-kohya pushed them (samples/edited.png, " in warning
    unknown = hubmod.removals({"samples/a.png": None}, {"samples/a.png": frozenset({"sha"})}, ())
    assert unknown.delete == () and unknown.edited == ("samples/a.png",)
    assert hubmod.removals(on_hub, {}, set()).delete == ()
    many = hubmod.Removals(kept=tuple(f"samples/{i}.png" for i in range(8)))
    assert many.warning(REPO) is not None and "and 3 more" in str(many.warning(REPO))
    assert hubmod.Removals().warning(REPO) is None


def test_read_pushed_takes_digests_by_path_and_an_older_list_of_paths() -> None:
    a, b = contents.Upload("a", b"first"), contents.Upload("b", b"second")
    assert contents.read_pushed(contents.pushed_list([b, a])) == {
        "a": frozenset(a.digests().values()), "b": frozenset(b.digests().values())}
    assert a.digests()["git"] == git_blob_sha1(b"first")
    assert contents.read_pushed(b'{"files": ["b", "a", 1]}') == {"a": None, "b": None}
    for damaged in (b"", b"[1]", b'{"files": "samples/a.png"}', b"\xff",
                    b'{"files": {"x": "abc", "y": {"sha256": 1}, "z": {"other": "abc"}}}'):
        assert contents.read_pushed(damaged) == {}


def test_a_file_edited_on_the_hub_since_the_push_stays(runner: CliRunner, fake_hub: FakeHub,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The dry run lists exactly what the push then deletes: the unchanged old sample."""
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    repo = fake_hub.repos[REPO]
    edited, unchanged = (f"samples/{n}" for n in SAMPLE_NAMES)
    repo.edit({edited: b"\x89PNG a better sample the user chose"})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    newer = _newer(tmp_path)

    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--dry-run",
                                  "--endpoint", fake_hub.url)
    assert code == 0, stderr
    assert f"Would delete from {REPO}: {unchanged}" in stdout.splitlines()
    code, stdout, stderr = invoke(runner, "push", newer, "--repo-id", REPO, "--endpoint",
                                  fake_hub.url)
    assert code == 0, stderr
    assert repo.files[edited] == b"\x89PNG a better sample the user chose"
    assert unchanged not in repo.files
    assert (f"left 1 file in {REPO}: 1 edited on the Hub since medsynth-kohya pushed them "
            f"({edited})") in " ".join(stderr.split())


def _commits(fake_hub: FakeHub) -> int:
    return sum(method == "POST" and "/commit/" in path for method, path in fake_hub.requests)


def test_a_commit_landing_while_the_push_runs_is_read_again(fake_hub: FakeHub,
                                                            tmp_path: Path) -> None:
    """The user replaces an old sample between the push's read and its commit: the stale
    commit is refused (412), and the push reads again and keeps the user's file."""
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    edited, unchanged = (f"samples/{n}" for n in SAMPLE_NAMES)
    theirs = {edited: b"\x89PNG replaced meanwhile", "samples/theirs.png": b"\x89PNG added"}
    fake_hub.interleave(lambda repo: repo.edit(theirs))
    seen = _commits(fake_hub)

    result = hubmod.push(_newer(tmp_path), REPO, endpoint=fake_hub.url, token=TOKEN)

    files = fake_hub.repos[REPO].files
    assert {path: files.get(path) for path in theirs} == theirs
    assert result.deleted == (unchanged,) and unchanged not in files
    assert all(f"samples/{n}" in files for n in OLD_SAMPLES)
    assert _commits(fake_hub) - seen == 2 and result.changed
    assert any(f"edited on the Hub since medsynth-kohya pushed them ({edited})" in w
               for w in result.warnings)


def test_a_repo_that_keeps_changing_fails_the_push_in_one_line(runner: CliRunner,
                                                               fake_hub: FakeHub,
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    repo = fake_hub.repos[REPO]

    def another_push(changed: Repo) -> None:
        changed.edit({f"samples/other-{len(changed.commits)}.png": b"\x89PNG another push"})

    fake_hub.interleave(another_push, times=hubmod.ATTEMPTS)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before, seen = dict(repo.files), _commits(fake_hub)

    line = _refused(runner, _newer(tmp_path), "--repo-id", REPO, "--endpoint", fake_hub.url)

    assert line == (f"Error: another push changed {REPO} while this one ran "
                    f"({hubmod.ATTEMPTS} tries); nothing was committed: run the same command "
                    "again")
    assert _commits(fake_hub) - seen == hubmod.ATTEMPTS
    assert {path: repo.files.get(path) for path in before} == before  # nothing pushed or gone
    assert len(repo.files) == len(before) + hubmod.ATTEMPTS


def test_a_check_before_the_files_exist_finds_what_the_push_would_replace(
        fake_hub: FakeHub, tmp_path: Path) -> None:
    """replaced_before, reproduce's check before training: any version of a file at a path
    asked about that no push of the tool sent is refused as the push refuses it (unless
    forced); the tool's own files, files at other paths and a repo not made yet are not."""
    asked = {"endpoint": fake_hub.url, "token": TOKEN, "option": "--push"}
    assert hubmod.replaced_before(REPO, ["README.md"], force=False, **asked) == ()
    sent = [path for path, _ in hubmod.push(make_run(tmp_path / "first"), REPO,
                                            endpoint=fake_hub.url, token=TOKEN).files]
    assert hubmod.replaced_before(REPO, sent, force=False, **asked) == ()
    _put(fake_hub, {**MINE, "README.md": b"# rewritten by hand\n"})
    with pytest.raises(hubmod.ReplaceRefused) as refused:
        hubmod.replaced_before(REPO, [*sent, "samples/my-own-figure.png"], force=False,
                               **asked)
    assert refused.value.replaced == ("README.md", "samples/my-own-figure.png")
    assert "--force" in str(refused.value) and "\n" not in str(refused.value)
    assert hubmod.replaced_before(REPO, sent, force=True, **asked) == ("README.md",)
    repo_head = fake_hub.repos[REPO].head
    fake_hub.fail("GET", rf"^/api/models/{REPO}$", 500, times=1)
    with pytest.raises(UserError) as unread:
        hubmod.replaced_before(REPO, sent, force=False, **asked)
    assert not isinstance(unread.value, hubmod.ReplaceRefused)
    assert "500" in str(unread.value) and TOKEN not in str(unread.value)
    assert fake_hub.repos[REPO].head == repo_head


def _renamed(run: Path, name: str) -> Path:
    """`run` as if trained with output_name `name`: its LoRA files and record say so."""
    output = run / "output"
    for path in output.glob("melanoma*.safetensors"):
        path.rename(path.with_name(path.name.replace("melanoma", name)))
    config = toml.loads((run / "config.toml").read_text(encoding="utf-8"))
    config["medsynth_run"]["output_name"] = name
    render.write_toml(config, run / "config.toml")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["config"]["output_name"] = name
    record["lora_files"] = [p.replace("melanoma", name) for p in record["lora_files"]]
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return run


def test_a_run_with_another_output_name_replaces_the_earlier_pushed_lora(
        runner: CliRunner, fake_hub: FakeHub, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's top-level LoRA is the model the card describes and `sample --lora USER/REPO`
    loads: the one an earlier push sent goes when a run of another output name is pushed (the
    dry run says so first), while one the user put there stays, with a warning."""
    hubmod.push(make_run(tmp_path / "first"), REPO, endpoint=fake_hub.url, token=TOKEN)
    _put(fake_hub, {"mine.safetensors": b"the user's own LoRA"})
    newer = _renamed(_newer(tmp_path), "nevus")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push = ("push", newer, "--repo-id", REPO, "--endpoint", fake_hub.url)

    code, stdout, stderr = invoke(runner, *push, "--dry-run")
    assert code == 0, stderr
    [line] = [line for line in stdout.splitlines() if line.startswith("Would delete from")]
    assert "melanoma.safetensors" in line and "mine.safetensors" not in line
    code, stdout, stderr = invoke(runner, *push)
    assert code == 0, stderr

    files = fake_hub.repos[REPO].files
    assert sorted(p for p in files if p.endswith(".safetensors")) == [
        "mine.safetensors", "nevus.safetensors"]
    assert "mine.safetensors" in " ".join(stderr.split()) and "left 1 file" in stderr
