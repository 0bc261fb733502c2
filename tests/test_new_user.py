"""What a new user trips over first (issue 11, section 6): resolution as typed, one message per
problem, plain usage lines, distinct training sample prompts, --resume without --run-dir."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.training.train import newest_run, train

from .conftest import invoke, prepare_set, squeezed


@pytest.fixture
def prepared(isic2020: SyntheticSet, tmp_path: Path) -> Path:
    """The 12 generated melanomas, repeats 1."""
    return prepare_set(isic2020, tmp_path / "prepared", repeats=1)


def _config(run: Path) -> dict[str, object]:
    """The run's config.toml as sd-scripts reads it (tables flattened)."""
    return {k: v for t in toml.load(run / "config.toml").values() for k, v in t.items()}


@pytest.mark.parametrize(("typed", "written"), [("768", "768,768"), ("[768, 1024]", "768,1024"),
                                                ('"832,1216"', "832,1216")])
def test_resolution_as_a_user_types_it(prepared: Path, tmp_path: Path, typed: str,
                                       written: str) -> None:
    run = tmp_path / "run"
    train(prepared, "t4-16gb", overrides=[f"resolution={typed}"], run_dir=run, dry_run=True,
          detect=lambda: [])
    assert _config(run)["resolution"] == written
    width, height = (int(v) for v in written.split(","))
    dataset = toml.load(run / "dataset.toml")["datasets"][0]
    assert dataset["resolution"] == [width, height]


@pytest.mark.parametrize("typed", ["1.5", "abc", "true"])
def test_a_bad_resolution_is_one_message(runner: CliRunner, prepared: Path, tmp_path: Path,
                                         typed: str) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--run-dir", tmp_path / "run",
                             "--dry-run", "--set", f"resolution={typed}")
    assert code == 1
    lines = [line for line in stderr.splitlines() if "resolution" in line]
    assert len(lines) == 1, stderr


def test_usage_lines_name_arguments_plainly(runner: CliRunner) -> None:
    for command in ("prepare", "train", "sample", "push", "reproduce", "doctor", "fetch-isic",
                    "install-sd-scripts", "demo"):
        code, stdout, _ = invoke(runner, command, "--help")
        assert code == 0
        usage = stdout.splitlines()[0]
        assert not re.search(r"[{}]|\[?[a-z_]+\]?$", usage) and "<list[" not in stdout, usage
    _, stdout, _ = invoke(runner, "train", "--help")
    assert "train [OPTIONS] PREPARED" in stdout and "--set KEY=VALUE" in stdout


def test_training_sample_prompts_are_distinct(prepared: Path, tmp_path: Path) -> None:
    for preset in ("t4-16gb", "medsynthx-2023"):
        run = tmp_path / preset
        train(prepared, preset, run_dir=run, dry_run=True, detect=lambda: [])
        subsets = toml.load(run / "sample_prompts.toml")["prompt"]["subset"]
        texts = [s["prompt"] for s in subsets]
        assert len(texts) == 4 and len(set(texts)) == 4
        assert len({s["seed"] for s in subsets}) == 4


def _run(root: Path, name: str, prepared: Path, start: str, status: str = "interrupted") -> Path:
    run = root / name
    state = run / "output" / "melanoma-step00000002-state"
    state.mkdir(parents=True)
    (state / "train_state.json").write_text(json.dumps({"current_step": 2}), encoding="utf-8")
    (state / "random_states_0.pkl").write_bytes(b"rng")
    (run / "run.json").write_text(json.dumps({
        "status": status, "start": start, "dataset": {"prepared": str(prepared.resolve())}}),
        encoding="utf-8")
    return run


def test_resume_without_run_dir_takes_the_newest_run_of_that_folder(
        runner: CliRunner, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    with pytest.raises(UserError, match="no earlier run"):
        newest_run(prepared, runs)
    _run(runs, "t4-16gb-20260101-100000", prepared, "2026-01-01T10:00:00+00:00")
    newest = _run(runs, "t4-16gb-20260102-100000", prepared, "2026-01-02T10:00:00+00:00")
    _run(runs, "t4-16gb-20260103-100000", tmp_path / "elsewhere", "2026-01-03T10:00:00+00:00")
    _run(runs, "t4-16gb-20260104-100000", prepared, "", status="dry-run")
    assert newest_run(prepared, runs) == newest
    code, stdout, stderr = invoke(runner, "train", prepared, "--resume", "--dry-run")
    assert code == 0, stderr
    assert f"resuming {newest}, the newest run of {prepared}" in " ".join(stderr.split())
    assert "melanoma-run-step00000002-state" in stdout


def test_a_long_path_in_a_summary_is_shown_whole_on_an_80_column_terminal(
        isic2020: SyntheticSet, tmp_path: Path) -> None:
    """The summary's paths are what a user copies next: folded onto the next line, not cut."""
    source = tmp_path / ("a-folder-with-a-long-name-" * 3) / "isic"
    shutil.copytree(isic2020.root, source)
    code, stdout, _ = invoke(CliRunner(env={"COLUMNS": "80"}), "prepare", source, "--out",
                             tmp_path / "prepared")
    assert code == 0
    rows = [line for line in stdout.splitlines() if line.startswith("│")]
    assert rows and max(len(line) for line in rows) == 80
    assert "…" not in stdout
    assert squeezed(f"metadata {source / isic2020.metadata.name}") in squeezed(stdout)


def _refusal(runner: CliRunner, *args: object) -> str:
    """The one-line error of a refused command, its whitespace as one space each."""
    code, stdout, stderr = invoke(runner, *args)
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    return " ".join(stderr.split())


def test_a_folder_inside_the_prepared_one_names_the_folder_to_give(
        runner: CliRunner, prepared: Path, trained: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kohya users pass train_data_dir (img/) or its class folder: they were told to prepare
    it as a fresh ISIC download."""
    from medsynth_kohya.data.prepared import PreparedFolder

    class_folder = next((prepared / "img").iterdir())
    for given in (prepared / "img", class_folder):
        said = f"{given} is inside the prepared folder {prepared}: give {prepared}"
        for args in (("train", given, "--run-dir", tmp_path / "run", "--dry-run"),
                     ("train", given, "--run-dir", tmp_path / "run"),
                     ("sample", "--lora", trained, "--like", given, "--n", 2, "--out",
                      tmp_path / "synth", "--dry-run")):
            assert _refusal(runner, *args) == f"Error: {said}", args
        with pytest.raises(UserError) as caught:
            PreparedFolder(given).state()
        assert str(caught.value) == said
    assert not (tmp_path / "run").exists() and not (tmp_path / "synth").exists()
    monkeypatch.chdir(tmp_path)  # named as given, or from the working folder up
    assert _refusal(runner, "train", Path("prepared/img"), "--dry-run") == (
        "Error: prepared/img is inside the prepared folder prepared: give prepared")
    monkeypatch.chdir(prepared)
    assert _refusal(runner, "train", "img", "--dry-run") == (
        f"Error: img is inside the prepared folder {prepared}: give {prepared}")
    monkeypatch.chdir(class_folder)
    assert _refusal(runner, "train", "../../img", "--dry-run") == (
        f"Error: ../../img is inside the prepared folder {prepared}: give {prepared}")


def test_a_file_of_the_prepared_folder_or_the_folder_as_a_lora_names_what_to_give(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    """`train PREPARED/manifest.csv` or a training photo is told the folder it lies in;
    `sample --lora PREPARED`, the command that trains it first."""
    photo = next(next((prepared / "img").iterdir()).glob("*.jpg"))
    for given in (prepared / "manifest.csv", photo):
        assert _refusal(runner, "train", given, "--dry-run") == (
            f"Error: {given} is a file, not a folder: give the prepared folder it lies in, "
            f"{prepared}")
    lone = tmp_path / "notes.txt"
    lone.write_text("x")
    assert _refusal(runner, "train", lone, "--dry-run") == (
        f"Error: {lone} is a file, not a folder: give the --out folder of `medsynth-kohya "
        "prepare`")
    assert _refusal(runner, "sample", "--lora", prepared, "--out", tmp_path / "synth",
                    "--dry-run") == (
        f"Error: --lora {prepared} is a folder without run.json (it is a prepared folder: "
        f"train it first, `medsynth-kohya train {prepared}`); give a train run folder or a "
        ".safetensors file")
    assert not (tmp_path / "synth").exists()


def test_a_run_folder_given_for_the_prepared_one_names_what_it_trained_on(
        runner: CliRunner, prepared: Path, trained: Path, tmp_path: Path) -> None:
    """`train RUN` (to go on with it) and `sample --like RUN` were told to prepare the run
    folder as an ISIC download."""
    head = (f"{trained} is a training run folder, not a prepared folder: give the prepared "
            f"folder it trained on, {prepared.resolve()}")
    assert _refusal(runner, "train", trained, "--dry-run") == (
        f"Error: {head} (with --run-dir {trained} --resume to continue this run)")
    with pytest.raises(UserError) as caught:
        train(trained, dry_run=True, detect=lambda: [])
    assert str(caught.value).startswith(head)
    assert _refusal(runner, "sample", "--lora", trained, "--like", trained, "--n", 2, "--out",
                    tmp_path / "synth", "--dry-run") == f"Error: {head}"
    (trained / "run.json").write_text(json.dumps({"tool": "medsynth-kohya"}), encoding="utf-8")
    assert _refusal(runner, "train", trained, "--dry-run") == (
        f"Error: {trained} is a training run folder, not a prepared folder: give the prepared "
        f"folder it trained on (with --run-dir {trained} --resume to continue this run)")


def test_a_mistyped_folder_is_offered_the_one_meant(runner: CliRunner, prepared: Path,
                                                    tmp_path: Path) -> None:
    """A typo in the prepared folder, the real data or a LoRA's name: the refusal offers the
    path that exists."""
    typo = prepared.with_name("prepaerd")
    assert _refusal(runner, "train", typo, "--dry-run") == (
        f"Error: {typo} does not exist (did you mean {prepared}?): give the --out folder of "
        "`medsynth-kohya prepare`")
    code, _, stderr = invoke(runner, "evaluate", "--real", typo / "img", "--synthetic",
                             tmp_path, "--out", tmp_path / "eval", "--dry-run")
    assert code == 1 and f"(did you mean {prepared / 'img'}?)" in " ".join(stderr.split()), stderr
    lora = tmp_path / "melanoma.safetensors"
    lora.write_bytes(b"x")
    code, _, stderr = invoke(runner, "sample", "--lora", tmp_path / "Melanoma.safetensors",
                             "--out", tmp_path / "synth", "--dry-run")
    assert code == 1 and f"(did you mean {lora}?)" in " ".join(stderr.split()), stderr
