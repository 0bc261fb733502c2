"""`reproduce` never writes into a folder it did not make, and a refused reproduce leaves the
disk as it was: every check a later stage would refuse on runs before the first stage writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.synth import SyntheticSet, make_dataset

from .conftest import invoke
from .disk import checksums, entries
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .test_ham10000 import _isic2018

QUICK = ("--set", "max_train_steps=12", "--set", "save_every_n_steps=3")
"""The original config, shortened so the stand-in trains in a moment."""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGen:
    return make_original_gen(tmp_path, monkeypatch)


@pytest.fixture
def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hub token from the environment or a stored login."""
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH",
                        str(tmp_path / "hf-home" / "token"))


def _reproduce(runner: CliRunner, source: Path, workdir: Path, fake: FakeGen,
               *extra: object) -> tuple[int, str, str]:
    return invoke(runner, "reproduce", source, "--workdir", workdir, "--n", "2", *QUICK,
                  "--sd-scripts", fake.sd_scripts, "--python", PYTHON, *extra)


def _mine(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_workdir_reproduce_did_not_make_is_refused_untouched(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    workdir = tmp_path / "experiments"
    _mine(workdir / "notes.txt", "my notes")
    _mine(workdir / "run" / "config.toml", "# my own config\n")
    _mine(workdir / "prepared" / "img" / "10_melanoma" / "mine.txt", "my caption")
    before, listing = checksums(workdir), entries(workdir)
    for extra in ((), ("--dry-run",)):
        code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, *extra)
        assert code == 1, stdout + stderr
        assert "not made by medsynth-kohya reproduce" in stderr
        assert len(stderr.strip().splitlines()) == 1
        assert checksums(workdir) == before and entries(workdir) == listing


def test_a_refused_reproduce_leaves_every_file_as_it_was(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        no_token: None) -> None:
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    _mine(workdir / "my-notes.txt", "mine")
    _mine(workdir / "prepared" / "notes" / "mine.txt", "mine too")
    _mine(workdir / "run" / "my-notes.txt", "and this")
    manifest = (workdir / "prepared" / "manifest.csv").read_bytes()
    next(isic2020.images.glob("*.jpg")).unlink()  # prepare would run again
    before, listing = checksums(workdir), entries(workdir)
    refusals: list[tuple[tuple[str, ...], str]] = [
        (("--set", "no_such_option=1"), "no_such_option"),
        (("--set", "output_dir=elsewhere"), "decided by the run"),
        (("--python", "/nonexistent/python3"), "cannot run the original training"),
        (("--set", "cache_latents=true", "--set", "color_aug=true"), "cannot be used with"),
        (("--push", "not a repo id"), "--push 'not a repo id' must be namespace/name"),
        (("--push", "someone/melanoma-lora"), "Hub token"),
        (("--n", "0"), "--n must be 1 to 10,000,000 (got 0)"),
    ]
    for extra, said in refusals:
        code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, *extra)
        assert code == 1 and said in stderr, (extra, stdout + stderr)
        assert "Traceback" not in stderr
        assert checksums(workdir) == before, extra
        assert entries(workdir) == listing, extra

    generator = fake.sd_scripts / "sdxl_gen_img.py"
    script = generator.read_bytes()
    generator.unlink()
    code, _, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 1 and "no sdxl_gen_img.py" in stderr
    assert checksums(workdir) == before and entries(workdir) == listing
    generator.write_bytes(script)

    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    after = checksums(workdir)
    assert (workdir / "prepared" / "manifest.csv").read_bytes() != manifest
    for mine in ("my-notes.txt", "prepared/notes/mine.txt", "run/my-notes.txt"):
        assert after[mine] == before[mine]


def test_a_hub_token_that_cannot_be_read_stops_reproduce_before_any_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--push reads the token before the first stage; one huggingface_hub cannot read was a
    traceback, and a dry run's warning is the same line."""
    import huggingface_hub

    def unreadable() -> str:
        raise PermissionError(13, "Permission denied", "/home/someone/.cache/huggingface/token")

    monkeypatch.setattr(huggingface_hub, "get_token", unreadable)
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--push",
                                      "someone/melanoma-lora")
    assert code == 1 and "Traceback" not in stderr, stdout + stderr
    assert "the Hub token cannot be read: [Errno 13] Permission denied" in " ".join(
        stderr.split())
    assert not (workdir / "prepared").exists()
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--push",
                                      "someone/melanoma-lora", "--dry-run")
    assert code == 0 and "the Hub token cannot be read" in " ".join(
        (stdout + stderr).split()), stdout + stderr


def test_a_workdir_of_marked_stage_folders_is_taken_as_reproduces_own(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--n", "1")
    assert code == 0, stdout + stderr
    (workdir / "reproduce.json").unlink()  # as a run killed before it was first written
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    assert (workdir / "reproduce.json").is_file()


def test_a_new_lora_sets_the_earlier_synthetic_set_aside(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    _mine(workdir / "synthetic" / "my-notes.txt", "mine")
    before = checksums(workdir / "synthetic")
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake,
                                      "--set", "max_train_steps=9")
    assert code == 0, stdout + stderr
    [aside] = workdir.glob("synthetic.replaced-*")
    assert checksums(aside) == before
    assert "synthetic set of the earlier LoRA is kept" in stderr
    assert len(list((workdir / "synthetic" / "images").glob("*.png"))) == 2


def test_a_caption_edited_by_hand_is_not_replaced_when_the_source_changes(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """reproduce prepared again with prepare's --force: a hand-edited caption was replaced
    without a word, where `prepare` itself refuses."""
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    caption = next((workdir / "prepared" / "img").rglob("*.txt"))
    caption.write_text("my own words", encoding="utf-8")
    frame = isic2020.frame.copy()
    frame.loc[0, "age_approx"] = 85
    frame.to_csv(isic2020.metadata, index=False)
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    assert (f"1 file that reproduce prepared under {workdir / 'prepared'} was changed by hand "
            f"since (first: {caption}); preparing again would replace them: copy them "
            f"elsewhere, or delete {workdir / 'prepared'} to prepare it again") in line, line
    assert caption.read_text(encoding="utf-8") == "my own words"


def test_another_source_in_the_same_workdir_is_refused_with_reproduce_s_fix(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """prepare refuses to replace a layout prepared from another source unless --force, which
    reproduce does not have: its refusal offers what reproduce takes."""
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    before = checksums(workdir / "prepared")
    other = make_dataset(tmp_path / "other", 4, seed=9, melanoma_fraction=1.0)
    line = " ".join(_reproduce(runner, other.root, workdir, fake)[2].split())
    assert (f"{workdir / 'prepared'} holds the data reproduce prepared from "
            f"{isic2020.metadata.resolve()}, not from {other.metadata.resolve()}: give another "
            f"--workdir, or delete {workdir / 'prepared'} to prepare it again") in line, line
    assert checksums(workdir / "prepared") == before


def test_a_source_without_the_original_captions_fields_names_no_caption_template(
        runner: CliRunner, archive: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """reproduce's captions are the original ones, so a source lacking a field they use is
    refused with the fixes reproduce takes (the file that holds it, --column), never an option
    it does not have."""
    isic2018 = tmp_path / "isic2018"
    _isic2018(archive, isic2018)  # the diagnoses alone: HAM10000_metadata.csv is not beside it
    frame = pd.read_csv(archive.metadata, dtype=str, keep_default_na=False)
    own = tmp_path / "own.csv"
    frame.drop(columns=["sex"]).to_csv(own, index=False)
    for source, extra, fix in ((isic2018, (), "HAM10000_metadata.csv"),
                               (archive.images, ("--metadata", own), "--column sex=")):
        workdir = tmp_path / f"work-{source.name}"
        code, _, stderr = _reproduce(runner, source, workdir, fake, *extra)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert fix in lines[0] and "original captions" in lines[0]
        assert "--caption-template" not in lines[0]
        assert not workdir.exists()


def test_a_checkout_that_cannot_generate_is_refused_before_the_first_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """An sd-scripts checkout with the training script but no sdxl_gen_img.py would train for
    hours, then fail at the sample stage: refused before anything is written; the dry run says
    a real run would stop there."""
    from medsynth_kohya.sdscripts.launch import GEN_SCRIPT

    (fake.sd_scripts / GEN_SCRIPT).unlink()
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--dry-run")
    said = " ".join((stdout + stderr).split())
    assert code == 0 and f"would stop at: sample: {fake.sd_scripts} has no {GEN_SCRIPT}" in said
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 1 and f"has no {GEN_SCRIPT}" in " ".join(stderr.split()), stdout + stderr
    assert not [path for path in workdir.rglob("*") if not path.name.startswith(".")]


def test_a_smaller_n_than_the_set_of_the_same_lora_is_refused_before_any_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A set of the LoRA sample will use holding more images than --n would be refused by the
    sample stage: the dry run says a real run would stop there, and the real run refuses it
    before any stage writes."""
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--n", "3")
    assert code == 0, stdout + stderr
    before, listing = checksums(workdir), entries(workdir)
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--n", "1",
                                      "--dry-run")
    said = " ".join((stdout + stderr).split())
    assert code == 0 and "would stop at: sample:" in said and "use --n 3 or more" in said, said
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--n", "1")
    assert code == 1 and "use --n 3 or more" in " ".join(stderr.split()), stdout + stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert checksums(workdir) == before and entries(workdir) == listing


def test_a_set_whose_record_is_gone_is_set_aside_when_a_new_lora_replaces_it(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """reproduce.json deleted (as a damaged one's message advises): the set's own record says
    which LoRA made it, so a new LoRA's sample stage sets it aside instead of refusing it after
    the training."""
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    before = checksums(workdir / "synthetic")
    (workdir / "reproduce.json").unlink()
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake,
                                      "--set", "max_train_steps=9")
    assert code == 0, stdout + stderr
    [aside] = workdir.glob("synthetic.replaced-*")
    assert checksums(aside) == before
    assert len(list((workdir / "synthetic" / "images").glob("*.png"))) == 2



def test_a_failed_training_with_a_saved_state_is_said_to_resume_on_a_rerun(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the training saved a state before it failed, the same command goes on from it
    (and says so); where it saved none, the line says the re-run trains over (above)."""
    workdir = tmp_path / "work"
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake,
                                      "--set", "save_every_n_steps=2")
    said = " ".join(stderr.split())
    assert code == 1 and "training failed" in said, stdout + stderr
    assert "run the same reproduce command again to resume (log:" in said, said
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake,
                                      "--set", "save_every_n_steps=2")
    assert code == 0 and "resumed from its last saved state" in " ".join(stdout.split()), (
        stdout + stderr)

def test_files_put_in_the_synthetic_folder_before_sampling_are_refused_before_training(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample stage refuses a synthetic folder it did not make: after a run whose training
    failed, files put there are said before the training runs again, not hours after."""
    workdir = tmp_path / "work"
    monkeypatch.setenv("FAKE_SD_MODE", "crash")
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    said = " ".join(stderr.split())
    assert code == 1 and "training failed" in said, stdout + stderr
    assert "reproduce command again to train over (no state was saved to resume from)" in said
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    _mine(workdir / "synthetic" / "my-notes.txt", "mine")
    before, listing = checksums(workdir), entries(workdir)
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, "--dry-run")
    said = " ".join((stdout + stderr).split())
    assert code == 0 and "would stop at: sample:" in said and "my-notes.txt" in said, said
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 1 and "my-notes.txt" in stderr and "Traceback" not in stderr, stdout + stderr
    assert checksums(workdir) == before and entries(workdir) == listing


def test_a_damaged_set_record_stops_the_dry_run_unless_a_new_lora_sets_it_aside(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen) -> None:
    """A set whose sample.json is damaged is refused by the sample stage when it would write
    into it (the same LoRA, another --n), not when a new LoRA's set is set aside."""
    workdir = tmp_path / "work"
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake)
    assert code == 0, stdout + stderr
    record = workdir / "synthetic" / ".medsynth" / "sample.json"
    record.write_text("{not json", encoding="utf-8")
    for extra, stops in ((("--n", "3"), True), (("--set", "max_train_steps=9"), False)):
        code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake, *extra,
                                          "--dry-run")
        said = " ".join((stdout + stderr).split())
        assert code == 0, said
        assert (f"would stop at: sample: {record} is damaged" in said) is stops, (extra, said)


def _blocked_workdir(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A --workdir that cannot be made or used, and the part of it that stands in the way."""
    tmp_path.mkdir()
    if kind == "under a file":
        _mine(tmp_path / "notes.txt", "a file")
        return tmp_path / "notes.txt" / "work", f"{tmp_path / 'notes.txt'} is a file"
    if kind == "symlink loop":
        (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
        (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
        return tmp_path / "loop-a", f"{tmp_path / 'loop-a'} is a symlink to"
    if kind == "dangling symlink":
        (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
        return tmp_path / "gone", "which does not exist"
    _mine(tmp_path / "work" / "reproduce.json", '{"stages": {}}')
    _mine(tmp_path / "work" / kind, "a file")
    return tmp_path / "work", f"{tmp_path / 'work' / kind} is a file"


@pytest.mark.parametrize("kind", ["under a file", "symlink loop", "dangling symlink",
                                  "synthetic", "run"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_workdir_that_cannot_be_made_is_refused_in_one_line_by_the_dry_run_too(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path, fake: FakeGen, kind: str,
        dry_run: bool) -> None:
    workdir, why = _blocked_workdir(tmp_path / "place", kind)
    listing = entries(tmp_path / "place")
    code, stdout, stderr = _reproduce(runner, isic2020.root, workdir, fake,
                                      *(["--dry-run"] if dry_run else []))
    assert code == 1, stdout + stderr
    assert stderr.startswith("Error: cannot create ") and why in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert entries(tmp_path / "place") == listing
