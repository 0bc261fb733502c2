"""What `sample --lora` takes from a run folder, a file or a Hub id (sampling/lora.py and the
rules of hub/pull.py that need no Hub): each refusal's whole line, which save a run folder
gives, when a run counts as not trained yet, and where the captions and base model come from."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import archive
from medsynth_kohya.data.captions import DEFAULT_TEMPLATE, DEFAULT_TRIGGER
from medsynth_kohya.errors import UserError
from medsynth_kohya.hub.pull import HubOrigin, base_model, hub_spec, lora_metadata, pull_lora
from medsynth_kohya.sampling.lora import (
    check_lora,
    local_or_hub,
    lora_source,
    resolve_lora,
    training_captions,
    untrained_run,
)
from medsynth_kohya.sdscripts import launch
from medsynth_kohya.sdscripts.checkout import ENV_DIR, ENV_PYTHON
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import RunRecord

from .conftest import invoke, one_line_error
from .fake_gen import write_lora
from .fake_hub import FakeHub
from .fakes import FakeSd


def _run(folder: Path, **record: object) -> Path:
    """A run folder whose run.json is `record` (config output_name melanoma unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"config": {"output_name": "melanoma"}, **record}
    (folder / "run.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_a_lora_that_is_missing_empty_or_no_safetensors_is_refused_in_one_line(
        tmp_path: Path) -> None:
    cases = {tmp_path / "none.safetensors": "does not exist", tmp_path / "empty.safetensors":
             "is empty", tmp_path / "text.safetensors": "is not a safetensors file (no JSON "
             "header after its 8-byte length)"}
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "text.safetensors").write_bytes(b"not a safetensors file at all")
    for path, words in cases.items():
        with pytest.raises(UserError) as refused:
            check_lora(path)
        assert str(refused.value) == f"LoRA file {path} {words}"
    with pytest.raises(UserError, match="does not exist"):
        check_lora(tmp_path)  # a folder is no LoRA file
    check_lora(write_lora(tmp_path / "good.safetensors"))


def test_a_run_folder_gives_its_final_lora_else_its_latest_save(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", status="succeeded")
    first = write_lora(run / "output" / "melanoma-000001.safetensors")
    latest = write_lora(run / "output" / "melanoma-000002.safetensors")
    final = write_lora(run / "output" / "melanoma.safetensors")
    file, record = resolve_lora(run)
    assert file == final and record is not None and record.status == "succeeded"
    final.unlink()
    assert resolve_lora(run)[0] == latest
    latest.unlink()
    first.unlink()
    write_lora(run / "output" / "other.safetensors")  # not this run's name
    with pytest.raises(UserError) as refused:
        resolve_lora(run)
    assert str(refused.value) == (
        f"run {run} has no LoRA file yet (status succeeded); the run succeeded: train it again "
        f"from step 0 with `medsynth-kohya train PREPARED --run-dir {run} --resume --force`")
    bare = _run(tmp_path / "bare")
    with pytest.raises(UserError) as refused:
        resolve_lora(bare)
    assert str(refused.value).startswith(f"run {bare} has no LoRA file yet (status unknown); "
                                         "the run is unknown: ")


def test_a_dry_run_run_says_how_to_train_it_as_push_does(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    """"train it first" named no command; push says for the same run how to train it, and
    for a demo's run (rendered only, on a machine without a CUDA GPU) the exact commands."""
    from medsynth_kohya.hub.push import push

    run = _run(tmp_path / "run", status="dry-run", dataset={"prepared": str(tmp_path / "p")})
    with pytest.raises(UserError) as refused:
        resolve_lora(run)
    with pytest.raises(UserError) as pushed:
        push(run, "alice/lora", dry_run=True)
    advice = str(pushed.value).split("; ", 1)[1]
    resume = launch.resume_command(str(tmp_path / "p"), run).line()
    assert advice == f"it was a dry run: train it with `{resume} --force`"
    assert str(refused.value) == f"run {run} has no LoRA file yet (status dry-run); {advice}"
    out = tmp_path / "demo"
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0, stderr
    line = one_line_error(*invoke(runner, "sample", "--lora", out / "run", "--n", 2, "--out",
                                  tmp_path / "synth"))
    assert line == (f"Error: run {out / 'run'} has no LoRA file yet (status dry-run); "
                    "`medsynth-kohya demo` only rendered this run, as it does on a machine "
                    "without a CUDA GPU: on one with a CUDA GPU, run `medsynth-kohya demo --out "
                    f"{out.resolve()}` again or `medsynth-kohya train "
                    f"{out.resolve() / 'prepared'}`")


def test_a_run_without_its_output_folder_finds_the_recorded_one_then_the_listed_files(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    saved = write_lora(elsewhere / "melanoma.safetensors")
    run = _run(tmp_path / "run", config={"output_name": "melanoma",
                                         "output_dir": str(elsewhere)})
    assert resolve_lora(run)[0] == saved
    assert not untrained_run(run)
    assert lora_source(run, None).notes == (
        f"run {run} holds no LoRA of its own ({run / 'output'} has none): sampling with "
        f"{saved}, which its record names outside it; give --lora {saved} to use it on "
        "purpose, or copy the whole run folder",)
    listed = write_lora(tmp_path / "kept" / "lora.safetensors")
    unnamed = _run(tmp_path / "unnamed", config={},
                   lora_files=[str(tmp_path / "gone.safetensors"), str(listed)])
    assert resolve_lora(unnamed)[0] == listed
    assert untrained_run(unnamed)  # no name to find its saves by


def test_a_folder_that_is_no_run_or_whose_record_is_broken_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(UserError) as refused:
        resolve_lora(folder)
    assert str(refused.value) == (f"--lora {folder} is a folder without run.json; give a train "
                                  "run folder or a .safetensors file")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError) as refused:
        resolve_lora(broken)
    assert str(refused.value).startswith(f"cannot read {broken / 'run.json'}: ")
    assert not untrained_run(broken) and not untrained_run(folder)
    assert not untrained_run(tmp_path / "nothing")


def test_a_run_is_untrained_until_its_output_holds_a_lora_of_its_name(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", status="running")
    assert untrained_run(run) and untrained_run(str(run))
    (run / "output").mkdir()
    write_lora(run / "output" / "another.safetensors")
    assert untrained_run(run)
    write_lora(run / "output" / "melanoma-step00000010.safetensors")
    assert not untrained_run(run)


def test_a_file_finds_the_run_whose_output_it_is_in(tmp_path: Path) -> None:
    recorded = tmp_path / "recorded"
    run = _run(tmp_path / "run", config={"output_name": "melanoma",
                                         "output_dir": str(recorded)}, status="succeeded")
    inside = write_lora(run / "output" / "melanoma.safetensors")
    file, record = resolve_lora(inside)
    assert file == inside and record is not None and record.status == "succeeded"
    there = write_lora(recorded / "x.safetensors")
    assert resolve_lora(there)[1] is None  # recorded's parent holds no run.json
    other = write_lora(run / "copies" / "melanoma.safetensors")  # beside output/, not in it
    assert resolve_lora(other) == (other, None)
    moved = _run(tmp_path / "moved", config={"output_name": "melanoma",
                                             "output_dir": str(tmp_path / "moved" / "old")})
    old = write_lora(moved / "old" / "melanoma.safetensors")
    assert resolve_lora(old)[1] is not None  # the record's own output_dir


def test_an_unfinished_runs_lora_says_which_file_and_how_to_finish(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    run = _run(tmp_path / "run", status="failed", dataset={"prepared": str(prepared)})
    final = write_lora(run / "output" / "melanoma.safetensors")
    assert lora_source(run, None).notes == (
        f"run {run} wrote its final LoRA melanoma.safetensors, but its status is failed (see "
        f"{run / 'train.log'}): check why before trusting the images",)
    whole = _run(tmp_path / "whole", status="interrupted", expected_steps=40)
    write_lora(whole / "output" / "melanoma.safetensors", {"ss_steps": "40"})
    assert lora_source(whole, None).notes == ()  # saved at its last step, stopped after
    write_lora(whole / "output" / "melanoma.safetensors", {"ss_steps": "39"})
    assert "but its status is interrupted" in lora_source(whole, None).notes[0]
    chosen = lora_source(final, None)  # a file chosen by name: its run is read, no note
    assert chosen.notes == () and chosen.record is not None and chosen.record.status == "failed"
    final.unlink()
    write_lora(run / "output" / "melanoma-000003.safetensors")
    resume = launch.resume_command(str(prepared), run)
    assert lora_source(run, None).notes == (
        f"run {run} did not finish (status failed): sampling with its latest save, "
        "melanoma-000003.safetensors, not a final LoRA; it saved no training state to resume "
        f"from: fix what failed and start over with `{resume.line()} --force` (same settings)",)
    lonely = _run(tmp_path / "lonely", status="interrupted")
    write_lora(lonely / "output" / "melanoma-000001.safetensors")
    (note,) = lora_source(lonely, None).notes
    assert f"start over with `{launch.resume_command(None, lonely).line()} --force`" in note
    done = _run(tmp_path / "done", status="succeeded")
    write_lora(done / "output" / "melanoma-000001.safetensors")
    source = lora_source(done, None)
    assert source.notes == () and source.record is not None
    assert source.record.status == "succeeded" and source.pulled is None
    file = write_lora(tmp_path / "loose.safetensors")
    assert lora_source(file, None) == lora_source(file, None) and not lora_source(file, None).notes


def test_a_revision_with_a_local_lora_is_refused(tmp_path: Path) -> None:
    file = write_lora(tmp_path / "x.safetensors")
    with pytest.raises(UserError) as refused:
        lora_source(file, "main")
    assert str(refused.value) == "--revision is for a LoRA on the Hub (--lora USER/REPO)"
    assert lora_source(file, "").file == file


def test_a_path_is_taken_as_typed_and_only_a_plain_hub_id_is_left_to_the_hub(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "lora").mkdir()
    assert local_or_hub("alice/lora") == Path("alice/lora")  # exists here: local
    assert local_or_hub("~/alice") == tmp_path / "alice"
    assert local_or_hub("bob/lora") == Path("bob/lora")
    assert local_or_hub("bob/lora:x.safetensors") == Path("bob/lora:x.safetensors")
    assert local_or_hub("bob/lora:sub/x.safetensors") == Path("bob/lora:sub/x.safetensors")
    assert local_or_hub(tmp_path / "no" / "such" / "place") == tmp_path / "no/such/place"
    with pytest.raises(UserError) as refused:
        local_or_hub("~no-such-user-here/lora")
    assert str(refused.value) == ("--lora ~no-such-user-here/lora: cannot expand its ~ (no such "
                                  "user or no home directory); give the path in full")
    for typo, meant in (("./bob/lora", ""), ("alice/lora2", " (did you mean alice/lora?)"),
                        ("bob/lora.safetensors", "")):
        with pytest.raises(UserError) as refused:
            local_or_hub(typo)
        assert str(refused.value) == (f"--lora {typo} does not exist{meant} (a local run folder "
                                      "or .safetensors file; a Hub repo id is owner/name)")


def test_captions_come_from_the_record_then_the_like_folder_then_the_defaults(
        trained: Path, prepared: Path, tmp_path: Path) -> None:
    found = training_captions(None, None)
    assert (found.template, found.trigger, found.known) == (DEFAULT_TEMPLATE, DEFAULT_TRIGGER,
                                                            False)
    assert found.diagnosis == archive.diagnosis_path("melanoma") is not None
    record = RunRecord.from_dict({"config": {"output_name": "nevus"},
                                  "dataset": {"caption_template": "a {trigger}",
                                              "trigger": "zzq"}})
    found = training_captions(record, None)
    assert (found.template, found.trigger, found.known) == ("a {trigger}", "zzq", True)
    assert found.diagnosis == archive.diagnosis_path("nevus") != archive.diagnosis_path(
        "melanoma")
    named = RunRecord.from_dict({"config": {"output_name": "nevus"},
                                 "dataset": {"caption_template": "a {trigger}",
                                             "trigger": "zzq", "class_name": "melanoma"}})
    assert training_captions(named, None).diagnosis == archive.diagnosis_path("melanoma")
    unnamed = RunRecord.from_dict({"dataset": {"caption_template": "a {trigger}",
                                               "trigger": "zzq"}})
    assert training_captions(unnamed, None).diagnosis == archive.diagnosis_path("melanoma")
    like = training_captions(None, prepared / "manifest.csv")
    assert (like.template, like.trigger, like.known) == (DEFAULT_TEMPLATE, DEFAULT_TRIGGER, True)
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    assert training_captions(None, copy / "manifest.csv").known


def test_hub_specs(tmp_path: Path) -> None:
    assert hub_spec("alice/lora") == ("alice/lora", None)
    assert hub_spec("a.b-c/d_e.f") == ("a.b-c/d_e.f", None)
    assert hub_spec("alice/lora:x.safetensors") == ("alice/lora", "x.safetensors")
    assert hub_spec("alice/lora:final/x.safetensors") == ("alice/lora", "final/x.safetensors")
    for value in ("alice", "alice/lora/x", "/alice/lora", "-a/lora", "alice/lora:x.ckpt",
                  "alice/lora:", "alice/lora:a:b.safetensors", "alice/lora x", str(tmp_path)):
        assert hub_spec(value) is None, value


def test_a_loras_metadata_is_its_header_s_strings(tmp_path: Path) -> None:
    file = write_lora(tmp_path / "x.safetensors", {"ss_sd_model_name": "a/b"})
    assert lora_metadata(file) == {"ss_sd_model_name": "a/b"}
    (tmp_path / "bad.safetensors").write_bytes(b"nothing")
    assert lora_metadata(tmp_path / "bad.safetensors") == {}


def test_the_base_model_comes_from_the_record_then_a_hub_id_in_the_metadata_then_sdxl() -> None:
    record = RunRecord.from_dict({"config": {"pretrained_model_name_or_path": "org/model"}})
    assert base_model(record, {"ss_sd_model_name": "x/y"}) == (
        "org/model", "base model org/model, from the pushed run record (training/run.json)")
    empty = RunRecord.from_dict({"config": {}})
    assert base_model(empty, {"ss_sd_model_name": "x/y"}) == (
        "x/y", "base model x/y, from the LoRA's metadata (ss_sd_model_name)")
    assert base_model(None, {"ss_sd_model_name": "x/y", "ss_base_model_version": "sdxl_v1"}
                      )[0] == "x/y"
    for local in ("x/y.safetensors", "x/y.ckpt", "/models/sdxl", "sdxl"):
        assert base_model(None, {"ss_sd_model_name": local})[0] == BASE_MODEL
    assert base_model(None, {"ss_sd_model_name": "a/b.ckpt", "ss_base_model_version": "sdxl"}
                      ) == (BASE_MODEL, "no run record and no Hub id in the LoRA's metadata "
                            "(ss_sd_model_name 'a/b.ckpt', ss_base_model_version 'sdxl'): using "
                            f"{BASE_MODEL}; --base-model chooses another")
    assert base_model(None, {})[1] == (f"no run record and no Hub id in the LoRA's metadata "
                                       f"(none): using {BASE_MODEL}; --base-model chooses "
                                       "another")
    with pytest.raises(UserError) as refused:
        base_model(None, {"ss_sd_model_name": "x/y", "ss_base_model_version": "sd_v1"})
    assert str(refused.value) == ("the LoRA was trained for sd_v1, not SDXL; sample generates "
                                  "with SDXL (sdxl_gen_img.py)")


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The loopback Hub as HF_ENDPOINT, a Hub cache of this test's own, online."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return fake_hub


def _publish(hub: FakeHub, repo_id: str, tmp_path: Path, names: list[str],
             record: dict[str, object] | None = None) -> str:
    """A model repo holding LoRA files `names` (SDXL metadata) and a run record when given."""
    repo = hub.add_repo(repo_id, repo_id.split("/")[0])
    for name in names:
        repo.files[name] = write_lora(tmp_path / "made" / repo_id / name, {
            "ss_base_model_version": "sdxl_base_v1-0"}).read_bytes()
        repo.lfs.add(name)
    if record is not None:
        repo.files["training/run.json"] = json.dumps(record).encode()
    return repo.commit("upload")


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _refusal(spec: str, revision: str | None = None) -> str:
    with pytest.raises(UserError) as refused:
        pull_lora(spec, revision=revision)
    return str(refused.value)


ONLINE = ("run this command once (--dry-run is enough) where the Hub can be reached, without "
          "HF_HUB_OFFLINE and with the same HF_HOME, to download it")


def test_offline_the_cache_gives_the_file_its_record_and_where_they_came_from(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record: dict[str, object] = {"config": {"pretrained_model_name_or_path": "org/derm"},
              "dataset": {"trigger": "zzq", "caption_template": "a {trigger}"}}
    commit = _publish(hub, "alice/lora", tmp_path, ["m.safetensors"], record)
    online = pull_lora("alice/lora")
    assert online.origin == HubOrigin("alice/lora", commit, "m.safetensors")
    assert online.notes[0] == (f"LoRA alice/lora:m.safetensors at {commit[:12]}, from the "
                               f"Hugging Face cache ({online.file})")
    _offline(monkeypatch)
    for revision, which in ((None, ": the commit main named when it was last downloaded; the "
                                   "Hub may hold a newer one"), (commit, "")):
        pulled = pull_lora("alice/lora", revision=revision)
        assert pulled.origin == online.origin and pulled.file == online.file
        assert pulled.record is not None and pulled.record.dataset is not None
        assert pulled.record.dataset.trigger == "zzq" and pulled.base_model == "org/derm"
        assert pulled.notes == (
            f"LoRA alice/lora:m.safetensors at {commit[:12]}, from the Hugging Face cache "
            f"({online.file}) without asking the Hub (HF_HUB_OFFLINE is set){which}",
            "base model org/derm, from the pushed run record (training/run.json)")


def test_offline_what_the_cache_lacks_is_one_line_saying_how_to_fill_it(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    commit = _publish(hub, "carol/two", tmp_path, ["x.safetensors", "y.safetensors"])
    pull_lora("carol/two:x.safetensors")
    pull_lora("carol/two:y.safetensors")
    _offline(monkeypatch)
    cache = huggingface_hub.constants.HF_HUB_CACHE
    start = "HF_HUB_OFFLINE is set, and the Hugging Face cache"
    assert _refusal("alice/nothing") == (f"{start} ({cache}) has no alice/nothing at main; "
                                         f"{ONLINE}")  # another repo's main is not its own
    assert _refusal("carol/two", "v2") == (
        f"{start} ({cache}) has no carol/two at v2 (it holds carol/two only at commit {commit}: "
        f"--revision COMMIT uses one); {ONLINE}")
    assert _refusal("carol/two") == (
        f"the cached carol/two at {commit[:12]} holds 2 .safetensors files; choose one as "
        "carol/two:FILE, e.g. carol/two:x.safetensors")
    assert _refusal("carol/two:z.safetensors") == (
        f"{start} holds no z.safetensors of carol/two at {commit[:12]}; {ONLINE}")


def test_offline_at_most_three_cached_commits_are_named(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    commits = [_publish(hub, "carol/many", tmp_path, ["x.safetensors"])]
    for n in range(4):  # each downloaded by its sha while the head: the fake Hub serves no other
        pull_lora("carol/many", revision=commits[-1])
        commits.append(hub.repos["carol/many"].edit({"README.md": str(n).encode()}))
    commits.pop()
    _offline(monkeypatch)
    cache = huggingface_hub.constants.HF_HUB_CACHE
    assert _refusal("carol/many", "v2") == (
        f"HF_HUB_OFFLINE is set, and the Hugging Face cache ({cache}) has no carol/many at "
        "v2 (it holds carol/many only at commit "
        f"{', '.join(sorted(commits)[:3])}: --revision COMMIT uses one); {ONLINE}")


def test_a_value_that_may_be_a_local_folder_says_none_is_here_beside_the_hubs_answer(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """USER/REPO is also a relative path: run from the wrong folder, the user sees both."""
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    _offline(monkeypatch)
    cache = huggingface_hub.constants.HF_HUB_CACHE
    hubs = (f"HF_HUB_OFFLINE is set, and the Hugging Face cache ({cache}) has no alice/run at "
            f"main; {ONLINE}")
    with pytest.raises(UserError) as refused:
        lora_source(Path("alice/run"), None)
    assert str(refused.value) == (f"no local folder alice/run exists in {tmp_path}, and as a "
                                  f"Hub LoRA: {hubs}")
    with pytest.raises(UserError) as refused:
        lora_source(Path("alice/run:x.safetensors"), None)  # a Hub file only
    assert str(refused.value).startswith("HF_HUB_OFFLINE is set, and the Hugging Face cache")


def test_a_file_the_repo_does_not_hold_is_named_with_the_loras_it_does(
        hub: FakeHub, tmp_path: Path) -> None:
    _publish(hub, "carol/pair", tmp_path, ["y.safetensors", "x.safetensors"],
             {"config": {}})
    assert _refusal("carol/pair:z.safetensors") == (
        "carol/pair has no z.safetensors; its .safetensors files: x.safetensors, y.safetensors")
    _publish(hub, "carol/none", tmp_path, [], {"config": {}})
    assert _refusal("carol/none:z.safetensors") == (
        "carol/none has no z.safetensors; its .safetensors files: none")


def test_a_download_cut_short_leaves_a_cache_without_the_lora(
        hub: FakeHub, tmp_path: Path) -> None:
    commit = _publish(hub, "bob/lora", tmp_path, ["x.safetensors"])
    hub.fail("GET", r"/resolve/", "short")
    assert _refusal("bob/lora") == (
        f"cannot reach {hub.url}, and the Hugging Face cache holds no LoRA file of bob/lora at "
        f"{commit[:12]} (a download that did not finish); {ONLINE}")


def test_a_repo_without_a_lora_or_with_several_is_one_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("alice/empty", "alice").commit("nothing")
    assert _refusal("alice/empty") == ("alice/empty holds no .safetensors file: is it a LoRA "
                                       "repository?")
    commit = _publish(hub, "dave/one", tmp_path, ["final/only.safetensors"])
    assert pull_lora("dave/one").origin == HubOrigin("dave/one", commit, "final/only.safetensors")
    _publish(hub, "carol/deep", tmp_path, ["b/y.safetensors", "a/x.safetensors"])
    assert _refusal("carol/deep") == ("carol/deep holds 2 .safetensors files; choose one as "
                                      "carol/deep:FILE, e.g. carol/deep:a/x.safetensors")


def test_the_commit_named_is_the_one_the_file_was_taken_at_when_main_moves_meanwhile(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main moves between the listing and the download: the file, and the record read with
    it, are the newer commit's, and so is the commit recorded."""
    from huggingface_hub import HfApi

    _publish(hub, "alice/moving", tmp_path, ["final/m.safetensors"],
             {"config": {"pretrained_model_name_or_path": "org/old"}})
    listed = HfApi.model_info

    def moving(self: HfApi, *args: object, **kwargs: object) -> object:
        info = listed(self, *args, **kwargs)  # type: ignore[arg-type]
        hub.repos["alice/moving"].edit({"training/run.json": json.dumps(
            {"config": {"pretrained_model_name_or_path": "org/new"}}).encode()})
        return info

    monkeypatch.setattr(HfApi, "model_info", moving)
    pulled = pull_lora("alice/moving:final/m.safetensors")
    head = hub.repos["alice/moving"].head
    assert pulled.origin == HubOrigin("alice/moving", head, "final/m.safetensors")
    assert pulled.base_model == "org/new" and head in str(pulled.file)


def test_pull_names_what_it_refuses_and_asks_the_endpoint_it_is_given(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _refusal("alice") == ("--lora 'alice' is not a Hub LoRA: use USER/REPO or "
                                 "USER/REPO:FILE.safetensors")
    assert _refusal("carol/x--y").startswith("--lora 'carol/x--y' is not a valid Hub ")
    assert _refusal("carol/nothing-here") == (
        f"carol/nothing-here was not found at {hub.url}: check the name, and for a private "
        "repository set HF_TOKEN (or `hf auth login`)")
    commit = _publish(hub, "erin/bare", tmp_path, ["x.safetensors"])
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    pulled = pull_lora("erin/bare", endpoint=hub.url)
    assert pulled.origin == HubOrigin("erin/bare", commit, "x.safetensors")
    assert pulled.record is None and pulled.notes[1] == (
        "erin/bare has no training/run.json: prompts use prepare's default template and "
        "trigger unless --prompt or --like says otherwise")


def test_the_dry_run_advice_trains_that_run_for_real_with_its_preset(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The command sample and push give for a `train --dry-run` run, pasted as it is, trains
    that run with the preset and --set it was dry-run with."""
    monkeypatch.setenv(ENV_DIR, str(fake_sd.sd_scripts))
    monkeypatch.setenv(ENV_PYTHON, sys.executable)
    run = tmp_path / "my run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "max_train_steps=3", "--run-dir", run, "--dry-run")
    assert code == 0, stdout + stderr
    line = one_line_error(*invoke(runner, "sample", "--lora", run, "--n", 2, "--out",
                                  tmp_path / "syn"))
    command = line.rsplit("`", 2)[1]
    assert line.endswith(f"it was a dry run: train it with `{command}`"), line
    assert shlex.split(command)[:2] == ["medsynth-kohya", "train"], command
    code, stdout, stderr = invoke(runner, *shlex.split(command)[1:])
    assert code == 0, stdout + stderr
    record = RunRecord.from_dict(json.loads((run / "run.json").read_text(encoding="utf-8")))
    assert (record.status, record.preset, record.overrides) == (
        "succeeded", "cpu-smoke", ["max_train_steps=3"]), record
