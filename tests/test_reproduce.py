"""`reproduce` end to end on generated data with stand-ins for sd-scripts' two programs,
including an interruption in the middle of training and the re-run that resumes it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.pipeline.reproduce import reproduce

from .conftest import InstallGpus, invoke, one_line_error
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .fakes import interrupt_after
from .test_sources import _isic2019

QUICK = ("max_train_steps=12", "save_every_n_steps=3")
"""The original config, shortened so the stand-in trains in a moment."""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_original_gen(tmp_path, monkeypatch)


def _state(workdir: Path) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(
        (workdir / "reproduce.json").read_text(encoding="utf-8"))["stages"]
    return data


def test_dry_run_writes_nothing_and_shows_the_plan(runner: CliRunner, isic2020: SyntheticSet,
                                                   tmp_path: Path,
                                                   nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    workdir = tmp_path / "work"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                  "--dry-run")
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert "7200" in stdout and "about 6.0 h on Tesla T4" in stdout
    assert "run: 7200 steps" in stdout  # the train stage's own row
    assert "sdxl_train_network.py --config_file" in stdout
    assert str(workdir / "run" / "config.toml") in stdout
    for stage, writes in (("prepare", "prepared/manifest.csv"), ("prepare", "prepared/img"),
                          ("train", "run/output/melanoma.safetensors"),
                          ("sample", "synthetic/images"), ("sample", "synthetic/metadata.csv")):
        assert f"{stage} writes {workdir / writes}" in stdout
    for stage in ("prepare", "train", "sample", "push"):
        assert stage in stdout


def test_the_estimate_is_for_the_gpu_cuda_visible_devices_shows(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, nvidia_smi: InstallGpus,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a box of mixed GPUs, the training runs on the one the shell shows, not the first."""
    nvidia_smi("NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0", "Tesla T4, 15360 MiB, 7.5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--dry-run")
    assert code == 0, stderr
    assert "about 6.0 h on Tesla T4" in stdout


def test_full_run_interrupted_then_resumed_then_skipped(isic2020: SyntheticSet, tmp_path: Path,
                                                        fake: FakeGen,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "work"
    options = {"n": 3, "overrides": QUICK, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    monkeypatch.setenv("FAKE_SD_MODE", "slow")
    with pytest.raises(KeyboardInterrupt):
        reproduce(isic2020.root, workdir, on_progress=interrupt_after(4),
                  **options)  # type: ignore[arg-type]
    assert _state(workdir)["prepare"]["status"] == "done"
    assert _state(workdir)["train"]["status"] == "interrupted"
    captions = (workdir / "prepared" / "manifest.csv").read_text(encoding="utf-8")

    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    second = reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    actions = {stage.name: stage.action for stage in second.stages}
    assert actions == {"prepare": "skip (inputs unchanged)", "train": "resume",
                       "sample": "run", "push": "off"}
    record = json.loads((workdir / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded" and "-step" in record["resumed_from"]
    assert record["preset"] == "medsynthx-2023"
    assert second.lora == workdir / "run" / "output" / "melanoma.safetensors"
    outcomes = {stage.name: stage.outcome for stage in second.stages}
    assert outcomes["train"].startswith("done (resumed from its last saved state), 12 steps")
    assert len(list((workdir / "synthetic" / "images").glob("*.png"))) == 3
    assert (workdir / "prepared" / "manifest.csv").read_text(encoding="utf-8") == captions

    third = reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    assert {s.name: s.action for s in third.stages if s.name != "push"} == {
        "prepare": "skip (inputs unchanged)", "train": "skip (inputs unchanged)",
        "sample": "skip (inputs unchanged)"}


def test_an_archive_download_gets_the_original_captions(archive: SyntheticSet, tmp_path: Path,
                                                        fake: FakeGen) -> None:
    """fetch-isic writes an Archive export, whose torso is anterior/posterior/lateral: the
    original run's captions (and the prompts drawn from its manifest) say `torso`."""
    workdir = tmp_path / "work"
    reproduce(archive.root, workdir, n=3, overrides=QUICK, sd_scripts=fake.sd_scripts,
              python=PYTHON)
    table = manifest.read(workdir / "prepared" / "manifest.csv")
    assert "torso" in set(table["site"]) and not set(table["site"]) & {
        "anterior torso", "posterior torso", "lateral torso"}
    assert not any(" torso" in str(c) and " on torso" not in str(c) for c in table["caption"])
    prompts = (workdir / "synthetic" / "metadata.csv").read_text(encoding="utf-8")
    assert "anterior torso" not in prompts and "posterior torso" not in prompts


def test_changed_source_reruns_from_prepare(isic2020: SyntheticSet, tmp_path: Path,
                                            fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    options = {"n": 2, "overrides": QUICK, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    first = json.loads((workdir / "run" / "run.json").read_text(encoding="utf-8"))
    victim = next(isic2020.images.glob("*.jpg"))
    victim.unlink()
    again = reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    assert {s.name: s.action for s in again.stages}["prepare"] == "run"
    assert {s.name: s.action for s in again.stages}["train"] == "run"
    second = json.loads((workdir / "run" / "run.json").read_text(encoding="utf-8"))
    assert second["dataset"]["manifest_sha256"] != first["dataset"]["manifest_sha256"]


def test_an_edited_isic_2019_metadata_csv_reruns_from_prepare(archive: SyntheticSet,
                                                              tmp_path: Path,
                                                              fake: FakeGen) -> None:
    """ISIC 2019's sites are in its metadata CSV, read beside the ground truth: editing it
    changes the captions, so prepare and training run again (rewritten unchanged, it does
    not)."""
    root, workdir = tmp_path / "isic2019", tmp_path / "work"
    _isic2019(archive, root)
    options = {"n": 2, "overrides": QUICK, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    reproduce(root, workdir, **options)  # type: ignore[arg-type]
    before = manifest.read(workdir / "prepared" / "manifest.csv")
    csv = root / "ISIC_2019_Training_Metadata.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.to_csv(csv, index=False)
    unchanged = reproduce(root, workdir, dry_run=True, **options)  # type: ignore[arg-type]
    assert unchanged.stages[0].action == "skip (inputs unchanged)"
    frame["anatom_site_general"] = "head/neck"
    frame.to_csv(csv, index=False)
    again = reproduce(root, workdir, **options)  # type: ignore[arg-type]
    assert [s.action for s in again.stages[:2]] == ["run", "run"]
    after = manifest.read(workdir / "prepared" / "manifest.csv")
    assert set(after["site"]) == {"head/neck"} != set(before["site"])


def test_a_duplicates_list_put_beside_the_metadata_reruns_prepare(isic2020: SyntheticSet,
                                                                   tmp_path: Path,
                                                                   fake: FakeGen) -> None:
    """ISIC 2020's duplicates list changes which images prepare keeps: one added beside the
    metadata after a run is a changed source."""
    workdir = tmp_path / "work"
    options = {"n": 2, "overrides": QUICK, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    kept = sorted(manifest.read(workdir / "prepared" / "manifest.csv")["id"])
    (isic2020.metadata.parent / "ISIC_2020_Training_Duplicates.csv").write_text(
        f"image_name_1,image_name_2\n{kept[0]},{kept[1]}\n", encoding="utf-8")
    planned = reproduce(isic2020.root, workdir, dry_run=True, **options)  # type: ignore[arg-type]
    assert [s.action for s in planned.stages[:3]] == ["run", "run", "run"]


def test_an_image_edited_in_place_trains_again_and_an_unselected_row_does_not(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """Training reads the prepared images: one edited at the source, its size in pixels and
    its measurements unchanged, is a new training input; a metadata row prepare does not
    select re-runs prepare alone."""
    from PIL import Image, ImageDraw

    workdir = tmp_path / "work"
    options: dict[str, Any] = {"n": 2, "overrides": QUICK, "sd_scripts": fake.sd_scripts,
                               "python": PYTHON}
    reproduce(isic2020.root, workdir, **options)
    frame = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False)
    added = frame.iloc[[0]].assign(image_name="ISIC_9999999", target="0",
                                   benign_malignant="benign", diagnosis="nevus")
    pd.concat([frame, added]).to_csv(isic2020.metadata, index=False)
    unselected = reproduce(isic2020.root, workdir, **options)
    assert [s.action for s in unselected.stages[:2]] == ["run", "skip (inputs unchanged)"]

    table = manifest.read(workdir / "prepared" / "manifest.csv")
    photo = Path(str(table["source"].iloc[0]))
    with Image.open(photo) as opened:
        edited = opened.convert("RGB")
    middle = (edited.width // 2, edited.height // 2)
    ImageDraw.Draw(edited).rectangle((*middle, middle[0] + 30, middle[1] + 30), fill="black")
    edited.save(photo, quality=90)  # a mark painted out of the lesion
    again = reproduce(isic2020.root, workdir, **options)
    assert [s.action for s in again.stages[:2]] == ["run", "run"]
    assert manifest.read(workdir / "prepared" / "manifest.csv").equals(table)


def test_the_same_set_options_in_another_order_skip_training(isic2020: SyntheticSet,
                                                            tmp_path: Path,
                                                            fake: FakeGen) -> None:
    """--set options are the training's inputs as a whole: given in another order (or one
    given twice, the last winning) they are the same inputs; another value is not."""
    workdir = tmp_path / "work"
    options: dict[str, Any] = {"n": 2, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    reproduce(isic2020.root, workdir, overrides=QUICK, **options)
    for same in (QUICK[::-1], ("max_train_steps=7", *QUICK)):
        planned = reproduce(isic2020.root, workdir, overrides=same,
                            dry_run=True, **options)
        assert [s.action for s in planned.stages[1:3]] == ["skip (inputs unchanged)"] * 2
    other = reproduce(isic2020.root, workdir,
                      overrides=(*QUICK, "max_train_steps=9"), dry_run=True, **options)
    assert [s.action for s in other.stages[1:3]] == ["run", "run"]


def test_a_workdir_of_the_earlier_digests_is_not_run_again(isic2020: SyntheticSet,
                                                           tmp_path: Path,
                                                           fake: FakeGen) -> None:
    """reproduce.json written before prepare's digest took in the duplicates list and
    training's took the --set options as a whole: an upgrade alone runs no stage again."""
    from medsynth_kohya import files
    from medsynth_kohya.data.sources import IMAGE_SUFFIXES
    from medsynth_kohya.pipeline import reproduce as module
    from medsynth_kohya.sdscripts import presets

    workdir = tmp_path / "work"
    options: dict[str, Any] = {"n": 2, "overrides": QUICK, "sd_scripts": fake.sd_scripts,
                               "python": PYTHON}
    reproduce(isic2020.root, workdir, **options)
    record = json.loads((workdir / "reproduce.json").read_text(encoding="utf-8"))
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in isic2020.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    stages = record["stages"]
    stages["prepare"]["digest"] = module._digest(files.sha256(isic2020.metadata), listing,
                                                 str(module.ORIGINAL))
    preset = presets.load(module.PRESET)
    stages["train"]["digest"] = module._digest(
        files.sha256(workdir / "prepared" / "manifest.csv"), files.sha256(preset.path),
        list(QUICK))
    (workdir / "reproduce.json").write_text(json.dumps(record), encoding="utf-8")
    again = reproduce(isic2020.root, workdir, **options)
    assert {s.action for s in again.stages[:3]} == {"skip (inputs unchanged)"}


def test_the_machine_is_checked_before_anything_runs(runner: CliRunner, isic2020: SyntheticSet,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, _, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", tmp_path / "w",
                             "--sd-scripts", tmp_path / "missing")
    assert code == 1 and "cannot run the original training" in stderr
    assert "no NVIDIA GPU" in stderr and not (tmp_path / "w").exists()


@pytest.mark.parametrize(("preset", "training"), [
    ("t4-16gb", "the training of --preset t4-16gb"), ("medsynthx-2023", "the original training")])
def test_a_machine_that_cannot_train_names_the_preset_it_was_asked_for(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, preset: str, training: str) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    """Its problems were printed one a line after the error's; now they are one line, each
    with its fix, as every other refusal is."""
    from .conftest import one_line_error

    line = one_line_error(*invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "w", "--preset", preset, "--sd-scripts",
                                  tmp_path / "missing"))
    assert line.startswith(f"Error: this machine cannot run {training} ("), line
    problems = line.split(" problems): ", 1)[1].split(" | ")
    assert line.split(" problems): ")[0].endswith(f"({len(problems)}"), line
    assert len(problems) > 1 and any(problem.startswith("GPU: no NVIDIA GPU found (nvidia-smi)"
                                                        "; ") for problem in problems), line
    assert line.endswith("; fix each, or run reproduce on a machine that can "
                         "(--dry-run plans it here)"), line


def test_another_preset_goes_through_the_same_stages(isic2020: SyntheticSet, tmp_path: Path,
                                                     fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    options = {"n": 2, "overrides": ("max_train_steps=4",), "sd_scripts": fake.sd_scripts,
               "python": PYTHON}
    first = reproduce(isic2020.root, workdir, preset_name="t4-16gb",
                      **options)  # type: ignore[arg-type]
    assert "preset t4-16gb" in {s.name: s.inputs for s in first.stages}["train"]
    record = json.loads((workdir / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["preset"] == "t4-16gb" and record["config"]["network_dim"] == 32
    again = reproduce(isic2020.root, workdir, **options)  # type: ignore[arg-type]
    assert {s.name: s.action for s in again.stages}["train"] == "run"
    record = json.loads((workdir / "run" / "run.json").read_text(encoding="utf-8"))
    assert record["preset"] == "medsynthx-2023" and record["config"]["network_dim"] == 128


def test_dry_run_commands_are_shell_lines_for_a_workdir_with_spaces(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        nvidia_smi: InstallGpus) -> None:
    """Every "runs:" line can be pasted into a shell as it is: a path with a space or a quote
    stays one word."""
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    workdir = tmp_path / "my work" / "Alice's run"
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", workdir,
                                  "--n", 3, "--dry-run")
    assert code == 0, stderr
    lines = {line.split(" runs: ", 1)[0]: line.split(" runs: ", 1)[1]
             for line in stdout.splitlines() if " runs: " in line}
    assert set(lines) == {"train", "sample"}
    words = shlex.split(lines["sample"])
    cd, command = words[:3], words[3:]
    assert cd == ["cd", str(Path.cwd()), "&&"]
    assert command == ["medsynth-kohya", "sample", "--lora", str(workdir / "run"), "--n", "3",
                       "--out", str(workdir / "synthetic")]
    train = shlex.split(lines["train"])
    assert str((workdir / "run" / "config.toml").resolve()) in train


def test_the_plan_counts_the_images_prepare_keeps_of_listed_duplicates(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dry run plans the training on as many images as prepare then prepares: of each group
    ISIC 2020's duplicates list joins, one image (a pair naming an absent id changes nothing)."""
    from medsynth_kohya.data.prepare import prepare
    from medsynth_kohya.pipeline.reproduce import ORIGINAL
    from medsynth_kohya.training import train

    ids = sorted(isic2020.frame["image_name"])
    (isic2020.root / "ISIC_2020_Training_Duplicates.csv").write_text(
        f"image_name_1,image_name_2\n{ids[1]},{ids[0]}\n{ids[2]},{ids[1]}\n{ids[5]},{ids[6]}\n"
        f"{ids[7]},ISIC_9999999\n", encoding="utf-8")
    planned: list[int] = []
    check = train.check

    def spy(*args: object, images: int, **kwargs: object) -> tuple[list[str], list[str]]:
        planned.append(images)
        return check(*args, images=images, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train, "check", spy)
    code, _, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir", tmp_path / "w",
                             "--dry-run")
    assert code == 0, stderr
    prepared = prepare(isic2020.root, tmp_path / "prepared", options=ORIGINAL, workers=1)
    assert planned == [len(prepared.manifest)] == [len(ids) - 3]


def test_the_closing_table_says_what_each_stage_did(runner: CliRunner, isic2020: SyntheticSet,
                                                   tmp_path: Path, fake: FakeGen) -> None:
    """The last table reports each stage's outcome, not the plan again: images prepared and
    skipped (with skipped.csv), the steps and LoRA, the set's folder and size; a re-run says
    which stages were already done. The plan's sample command runs as pasted."""
    workdir = tmp_path / "work"
    victim = sorted(isic2020.images.glob("*.jpg"))[0]
    victim.unlink()
    kept = len(isic2020.frame) - 1
    args = ("reproduce", isic2020.root, "--workdir", workdir, "--n", 2, "--set", QUICK[0],
            "--sd-scripts", fake.sd_scripts, "--python", PYTHON)
    code, stdout, stderr = invoke(runner, *args, "--dry-run")
    assert code == 0, stderr
    line = next(line.split(" runs: ", 1)[1] for line in stdout.splitlines()
                if line.startswith("sample runs: "))
    assert shlex.split(line)[-4:] == ["--sd-scripts", str(fake.sd_scripts), "--python", PYTHON]
    assert f"{kept} images to prepare" in stdout

    code, stdout, stderr = invoke(runner, *args)
    assert code == 0, stderr
    closing = stdout.split(f"reproduce: {workdir}", 1)[1]
    skipped = workdir / "prepared" / "skipped.csv"
    assert (f"done, {kept} images prepared (1 skipped: no image file; see {skipped})"
            in closing)
    lora = workdir / "run" / "output" / "melanoma.safetensors"
    assert f"done, 12 steps, LoRA {lora}" in closing
    assert f"done, 2 images in {workdir / 'synthetic' / 'images'}" in closing
    assert "run: " not in closing and "training steps" not in closing

    code, stdout, stderr = invoke(runner, *args)
    assert code == 0, stderr
    closing = stdout.split(f"reproduce: {workdir}", 1)[1]
    assert f"already done (inputs unchanged): {kept} images in {workdir / 'prepared'}" in closing
    assert f"already done (inputs unchanged): LoRA {lora}" in closing
    assert "already done (inputs unchanged): 2 images in" in closing


def test_a_dry_run_lists_files_and_commands_only_of_the_stages_that_would_run(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """On a finished WORKDIR every stage is skipped: the dry run says nothing would run
    instead of listing what the skipped stages would write; with one image of the set gone,
    only the sample stage's files and command are listed."""
    workdir = tmp_path / "work"
    reproduce(isic2020.root, workdir, n=2, overrides=QUICK, sd_scripts=fake.sd_scripts,
              python=PYTHON)
    args = ("reproduce", isic2020.root, "--workdir", workdir, "--n", 2, "--set", QUICK[0],
            "--set", QUICK[1], "--sd-scripts", fake.sd_scripts, "--python", PYTHON, "--dry-run")
    code, stdout, stderr = invoke(runner, *args)
    assert code == 0, stderr
    assert stdout.count("skip (inputs unchanged)") == 3, stdout
    assert " writes " not in stdout and " runs: " not in stdout, stdout
    assert "nothing would run: every stage's inputs are unchanged since it last ran" in stdout

    next(iter(sorted((workdir / "synthetic" / "images").glob("*.png")))).unlink()
    code, stdout, stderr = invoke(runner, *args)
    assert code == 0, stderr
    listed = [line for line in stdout.splitlines() if " writes " in line or " runs: " in line]
    assert listed and all(line.startswith("sample ") for line in listed), listed
    assert "nothing would run" not in stdout


def test_reproduce_passes_on_prepare_warnings(isic2020: SyntheticSet, tmp_path: Path,
                                              fake: FakeGen,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning prepare gives reaches reproduce's result, which the CLI prints."""
    from medsynth_kohya.data import prepare

    real = prepare.prepare

    def warned(*args: object, **kwargs: object) -> prepare.PrepareResult:
        from dataclasses import replace

        made = real(*args, **kwargs)  # type: ignore[arg-type]
        return replace(made, warnings=("prepare's own warning",))

    monkeypatch.setattr(prepare, "prepare", warned)
    done = reproduce(isic2020.root, tmp_path / "work", n=1, overrides=QUICK,
                     sd_scripts=fake.sd_scripts, python=PYTHON)
    assert "prepare's own warning" in done.warnings


def test_reproduce_counts_the_images_prepare_checks_and_sample_makes(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """Only training showed progress: prepare's scan and the synthetic set's generation (hours
    for --n 10000) showed nothing."""
    from medsynth_kohya.pipeline.reproduce import PREPARE_COUNT, SAMPLE_COUNT

    counted: dict[str, list[tuple[int, int]]] = {}
    reproduce(isic2020.root, tmp_path / "work", n=2, overrides=QUICK,
              sd_scripts=fake.sd_scripts, python=PYTHON,
              on_count=lambda stage, done, total: counted.setdefault(stage, []).append(
                  (done, total)))
    assert set(counted) == {PREPARE_COUNT, SAMPLE_COUNT}
    assert counted[SAMPLE_COUNT][-1] == (2, 2)
    done, total = counted[PREPARE_COUNT][-1]
    assert done == total > 0


def test_the_cli_takes_metadata_and_images_apart_from_source_as_the_api_does(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        nvidia_smi: InstallGpus) -> None:
    """`reproduce(metadata=, images=)` had no --metadata / --images on the command line."""
    import shutil

    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    elsewhere = tmp_path / "csv"
    elsewhere.mkdir()
    moved = shutil.move(str(isic2020.metadata), str(elsewhere / "my-metadata.csv"))
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--dry-run")
    assert code == 1, stdout + stderr
    code, stdout, stderr = invoke(runner, "reproduce", isic2020.root, "--workdir",
                                  tmp_path / "work", "--metadata", moved, "--images",
                                  isic2020.images, "--dry-run")
    assert code == 0, stdout + stderr
    assert "prepare" in stdout and not (tmp_path / "work").exists()


def test_metadata_and_images_stand_in_for_source_as_prepare_takes_them(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        nvidia_smi: InstallGpus) -> None:
    """README says reproduce takes --metadata and --images as prepare does: prepare needs no
    SOURCE with them, and reproduce refused "Missing argument 'SOURCE'"."""
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    code, stdout, stderr = invoke(runner, "reproduce", "--metadata", isic2020.metadata,
                                  "--images", isic2020.images, "--workdir", tmp_path / "work",
                                  "--dry-run")
    assert code == 0, stdout + stderr
    assert f"{len(isic2020.frame)} images to prepare" in stdout, stdout
    planned = reproduce(None, tmp_path / "work", metadata=str(isic2020.metadata),
                        images=isic2020.images, dry_run=True)
    assert planned.stages[0].inputs.startswith(f"{isic2020.metadata} (digest")
    assert not (tmp_path / "work").exists()
    line = one_line_error(*invoke(runner, "reproduce", "--workdir", tmp_path / "work",
                                  "--dry-run"))
    assert "give a SOURCE folder, or --metadata CSV and --images DIR" in line


def test_a_retraining_says_what_happened_not_an_option_the_user_never_gave(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A re-run with other training inputs starts the run over; the earlier LoRAs are kept,
    and the warning saying where names no --force (reproduce takes none)."""
    workdir = tmp_path / "work"
    options: dict[str, Any] = {"n": 2, "sd_scripts": fake.sd_scripts, "python": PYTHON}
    reproduce(isic2020.root, workdir, overrides=QUICK, **options)
    again = reproduce(isic2020.root, workdir, overrides=(*QUICK, "max_train_steps=9"),
                      **options)
    [aside] = (workdir / "run").glob("output.replaced-*")
    kept = [line for line in again.warnings if str(aside) in line]
    assert len(kept) == 1 and "LoRA" in kept[0], again.warnings
    assert not [line for line in again.warnings if "--force" in line], again.warnings


def test_metadata_and_images_apart_from_source_are_prepared_and_trained_on(
        isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A real run with `metadata=` and `images=` in folders the source folder does not hold
    prepares those images (not only its plan counts them)."""
    import shutil

    source = tmp_path / "csv"
    source.mkdir()
    moved = Path(shutil.move(str(isic2020.metadata), str(source / "my-metadata.csv")))
    photos = Path(shutil.move(str(isic2020.images), str(tmp_path / "photos")))
    done = reproduce(source, tmp_path / "work", metadata=moved, images=photos, n=1,
                     overrides=QUICK, sd_scripts=fake.sd_scripts, python=PYTHON)
    table = manifest.read(tmp_path / "work" / "prepared" / "manifest.csv")
    assert len(table) > 0 and {Path(str(p)).parent for p in table["source"]} == {photos}
    assert done.lora is not None and done.lora.is_file()


def test_another_column_mapping_prepares_and_trains_again(isic2020: SyntheticSet,
                                                          tmp_path: Path,
                                                          fake: FakeGen) -> None:
    """`columns` decides what the captions say: the same source read through another mapping
    is another input, so prepare and training run again (the same mapping again does not)."""
    frame = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False)
    frame.assign(site_by_hand="palms/soles").to_csv(isic2020.metadata, index=False)
    workdir = tmp_path / "work"
    options: dict[str, Any] = {"n": 1, "overrides": QUICK, "sd_scripts": fake.sd_scripts,
                               "python": PYTHON}
    reproduce(isic2020.root, workdir, **options)
    same = reproduce(isic2020.root, workdir, columns={}, dry_run=True, **options)
    assert [s.action for s in same.stages[:2]] == ["skip (inputs unchanged)"] * 2
    mapped = reproduce(isic2020.root, workdir, columns={"site": "site_by_hand"}, **options)
    assert [s.action for s in mapped.stages[:2]] == ["run", "run"]
    assert set(manifest.read(workdir / "prepared" / "manifest.csv")["site"]) == {"palms/soles"}


def test_another_set_size_plans_the_sample_stage_again(isic2020: SyntheticSet, tmp_path: Path,
                                                       fake: FakeGen) -> None:
    """The set's size is one of the sample stage's inputs: after --n 2, a smaller --n is not
    planned as done (sample then refuses to leave images out), nor a larger one."""
    workdir = tmp_path / "work"
    options: dict[str, Any] = {"overrides": QUICK, "sd_scripts": fake.sd_scripts,
                               "python": PYTHON}
    reproduce(isic2020.root, workdir, n=2, **options)
    for n in (1, 3):
        planned = reproduce(isic2020.root, workdir, n=n, dry_run=True, **options)
        assert [s.action for s in planned.stages[1:3]] == ["skip (inputs unchanged)", "run"]
        assert f", {n} image{'s' if n > 1 else ''}, seed 0" in planned.stages[2].inputs
