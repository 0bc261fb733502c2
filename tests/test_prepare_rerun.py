"""A re-run of `prepare` into its own folder: a refused one keeps the earlier layout whole, and
captions or images changed by hand since are not replaced without --force."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet, make_dataset
from medsynth_kohya.errors import UserError

from .conftest import invoke
from .disk import checksums
from .fake_gen import PYTHON, FakeGen


def _layout(out: Path) -> dict[str, str]:
    """Checksums of what a training reads and a user looks at: layout, manifest, config."""
    return {name: digest for name, digest in checksums(out).items()
            if not name.startswith(".medsynth/")}


@pytest.mark.parametrize("how", ["query", "images gone"])
def test_a_refused_re_run_keeps_the_earlier_layout(runner: CliRunner, tmp_path: Path,
                                                   isic2020: SyntheticSet, how: str) -> None:
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    before = _layout(out)
    assert any(name.endswith(".jpg") for name in before) and "manifest.csv" in before
    extra: list[str] = []
    if how == "query":
        extra = ["--query", "age_approx > 500"]
    else:  # the images folder is away for a while (an unmounted drive)
        isic2020.images.rename(tmp_path / "away")
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, *extra)
    message = " ".join(stderr.split())
    assert code == 1 and "no images were prepared" in message and "Traceback" not in stderr
    assert f"{out} keeps its earlier layout" in message
    assert _layout(out) == before
    if how == "images gone":
        refused = pd.read_csv(out / ".medsynth" / "skipped-refused.csv")
        assert set(refused["reason"]) == {"no image file"}
        assert "skipped-refused.csv" in message
        (tmp_path / "away").rename(isic2020.images)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    assert _layout(out) == before
    assert not (out / ".medsynth" / "skipped-refused.csv").exists()


def test_a_refused_first_run_lists_its_skips_in_skipped_csv(tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=5, melanoma_fraction=1.0)
    shutil.rmtree(made.images)
    made.images.mkdir()
    with pytest.raises(UserError) as refused:
        prepare(made.root, tmp_path / "out", workers=1)
    assert "keeps its earlier layout" not in str(refused.value)
    assert str(tmp_path / "out" / "skipped.csv") in str(refused.value)
    assert len(pd.read_csv(tmp_path / "out" / "skipped.csv")) == 4


def test_a_caption_edited_by_hand_is_kept_unless_force(runner: CliRunner, tmp_path: Path,
                                                       isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    first = prepare(isic2020.root, out, workers=1)
    caption = sorted(first.train_dir.glob("*.txt"))[1]
    caption.write_text("photo of skin, me1anoma, my careful caption", encoding="utf-8")
    before = checksums(out)
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--repeats", "2")
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr
    assert f"1 file that prepare wrote under {out} was changed since" in message
    assert caption.name in message and "--force" in message
    assert checksums(out) == before
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 0, stderr
    row = first.manifest.set_index("id").loc[caption.stem]
    assert caption.read_text(encoding="utf-8") == row["caption"]


def test_an_image_edited_by_hand_is_kept_unless_force(tmp_path: Path,
                                                      isic2020: SyntheticSet) -> None:
    out = tmp_path / "out"
    first = prepare(isic2020.root, out, workers=1)
    image = sorted(first.train_dir.glob("*.jpg"))[0]
    source = isic2020.images / image.name
    original = source.read_bytes()
    decoded = cv2.imread(str(image))
    assert decoded is not None
    cropped = decoded[10:-10, 10:-10]
    image.unlink()  # an editor saves a new file over the old name
    cv2.imwrite(str(image), cropped)
    with pytest.raises(UserError, match="changed since"):
        prepare(isic2020.root, out, workers=1)
    kept = cv2.imread(str(image))
    assert kept is not None and kept.shape == cropped.shape
    assert source.read_bytes() == original
    prepare(isic2020.root, out, workers=1, force=True)
    assert image.read_bytes() == original and not image.samefile(source)


def test_unchanged_layouts_and_replaced_sources_re_run_without_force(
        tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 4, seed=8, melanoma_fraction=1.0)
    out = tmp_path / "out"
    prepare(made.root, out, workers=1)
    source = sorted(made.images.glob("*.jpg"))[0]
    fresh = tmp_path / "fresh.jpg"
    cv2.imwrite(str(fresh), np.full((200, 300, 3), 180, np.uint8))
    fresh.replace(source)
    again = prepare(made.root, out, workers=1, options=PrepareOptions(repeats=3))
    assert (again.train_dir / source.name).read_bytes() == source.read_bytes()


def test_a_split_that_gives_no_validation_images_says_so(tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 6, seed=3, melanoma_fraction=1.0)
    frame = pd.read_csv(made.metadata)
    frame["patient_id"] = "IP_0000001"
    frame.to_csv(made.metadata, index=False)
    result = prepare(made.root, tmp_path / "out", workers=1,
                     options=PrepareOptions(val_frac=0.3))
    assert (result.manifest["split"] == "train").all()
    (warning,) = [w for w in result.warnings if "--val-frac" in w]
    assert "0.3 gave no validation images" in warning and "6 images" in warning
    several = prepare(made.root, tmp_path / "none", workers=1)
    assert not [w for w in several.warnings if "--val-frac" in w]


def test_images_that_are_not_melanomas_under_the_melanoma_name_are_warned_about(
        tmp_path: Path) -> None:
    made = make_dataset(tmp_path / "src", 16, seed=4, melanoma_fraction=0.25)
    nevi = prepare(made.root, tmp_path / "nevi", workers=1,
                   options=PrepareOptions(query="target == 0"))
    (warning,) = [w for w in nevi.warnings if "class folder says" in w]
    assert "'melanoma'" in warning and "'me1anoma'" in warning and "--class-name" in warning
    named = prepare(made.root, tmp_path / "named", workers=1,
                    options=PrepareOptions(query="target == 0", class_name="nevus",
                                           trigger="nev0s"))
    melanomas = prepare(made.root, tmp_path / "melanomas", workers=1)
    assert not [w for r in (named, melanomas) for w in r.warnings if "class folder says" in w]


def test_a_mixed_selection_under_a_diagnosis_name_is_warned_about_with_its_counts(
        tmp_path: Path) -> None:
    """Some nevi among melanomas (not only a selection that is all nevi) under the default
    class and trigger are named, counted by diagnosis; a class named for the nevi makes the
    melanomas the odd ones, while the default trigger still says melanoma."""
    made = make_dataset(tmp_path / "src", 12, seed=5, layout="archive", melanoma_fraction=0.5)
    both = 'benign_malignant in ["benign", "malignant"]'
    mixed = prepare(made.root, tmp_path / "mixed", workers=1, options=PrepareOptions(query=both))
    table = mixed.manifest
    nevi = int(table["diagnosis"].str.endswith(":Nevus").sum())
    assert 0 < nevi < len(table) and mixed.diagnosis is None
    (warning,) = [w for w in mixed.warnings if "class folder says" in w]
    assert warning.startswith(f"{nevi} of {len(table)} prepared images are not Malignant "
                              f"melanocytic proliferations (Melanoma) but Nevus {nevi},")
    assert "'melanoma'" in warning and "'me1anoma'" in warning
    named = prepare(made.root, tmp_path / "named", workers=1,
                    options=PrepareOptions(query=both, class_name="nevus"))
    (folder,) = [w for w in named.warnings if "class folder says 'nevus'" in w]
    assert folder.startswith(f"{len(table) - nevi} of {len(table)} prepared images are not "
                             f"Nevus but Melanoma Invasive {len(table) - nevi},")
    assert "me1anoma" not in folder
    (trigger,) = [w for w in named.warnings if "trigger 'me1anoma'" in w]
    assert f"but Nevus {nevi}, while captions use the trigger 'me1anoma'" in trigger


def _interrupt_writing(root: Path, out: Path, options: PrepareOptions,
                       monkeypatch: pytest.MonkeyPatch, stop: Callable[[Path], bool]) -> None:
    """Run prepare into `out` and stop it with Ctrl-C as it is about to write the first
    caption `stop` picks."""
    from medsynth_kohya.data import layout

    real = layout.write_text

    def interrupted(path: Path, text: str) -> None:
        if stop(path):
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(layout, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, out, workers=1, options=options)
    monkeypatch.setattr(layout, "write_text", real)


@pytest.mark.parametrize("after", [1, 5], ids=["early", "late"])
def test_a_re_run_interrupted_while_writing_is_finished_by_the_same_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Ctrl-C while a re-run with new options writes its captions: the same command finishes
    the write without --force, and the layout is one class folder, as an uninterrupted run's."""
    made = make_dataset(tmp_path / "src", 6, seed=3, melanoma_fraction=1.0)
    out, reference = tmp_path / "out", tmp_path / "reference"
    prepare(made.root, out, workers=1)
    changed = PrepareOptions(repeats=3, caption_template="{trigger}, {sex}")
    calls = itertools.count(1)  # the captions written so far, this one included
    _interrupt_writing(made.root, out, changed, monkeypatch, lambda _: next(calls) > after)
    assert {p.name for p in (out / "img").iterdir()} == {"1_melanoma", "3_melanoma"}
    again = prepare(made.root, out, workers=1, options=changed)
    assert [p.name for p in (out / "img").iterdir()] == ["3_melanoma"]
    prepare(made.root, reference, workers=1, options=changed)
    assert ({name: digest for name, digest in _layout(out).items() if name != "dataset.toml"}
            == {name: digest for name, digest in _layout(reference).items()
                if name != "dataset.toml"})
    assert all(caption.read_text(encoding="utf-8") == row.caption
               for row in again.manifest.itertuples()
               for caption in [again.train_dir / f"{row.id}.txt"])


def test_a_hand_edit_after_an_interrupted_re_run_is_still_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files of the last complete run stay guarded while an interrupted run's are not."""
    made = make_dataset(tmp_path / "src", 6, seed=3, melanoma_fraction=1.0)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1)
    changed = PrepareOptions(repeats=3, caption_template="{trigger}, {sex}")
    _interrupt_writing(made.root, out, changed, monkeypatch, lambda path: (
        path.parent.name == "3_melanoma" and len(list(path.parent.glob("*.txt"))) >= 2))
    caption = sorted(first.train_dir.glob("*.txt"))[0]
    caption.write_text("my careful caption", encoding="utf-8")
    with pytest.raises(UserError, match="changed since") as refused:
        prepare(made.root, out, workers=1, options=changed)
    assert caption.name in str(refused.value)
    assert caption.read_text(encoding="utf-8") == "my careful caption"


def _interrupt_before_the_manifest(root: Path, out: Path, options: PrepareOptions,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Run prepare into `out` and stop it with Ctrl-C once its layout is written, before its
    manifest is: OUT keeps the last complete run's manifest and state beside new captions."""
    from medsynth_kohya.data import manifest

    real = manifest.write

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(manifest, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, out, workers=1, options=options)
    monkeypatch.setattr(manifest, "write", real)


@pytest.mark.parametrize("edit", ["none", "caption", "image"])
def test_a_hand_edit_of_a_file_an_interrupted_re_run_rewrote_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str) -> None:
    """An interrupted re-run with another trigger rewrote the captions the last complete run
    placed, in the same folder: what it wrote is prepare's own, a hand edit of it is not,
    whichever options the next run has."""
    made = make_dataset(tmp_path / "src", 6, seed=3, melanoma_fraction=1.0)
    out = tmp_path / "out"
    first = prepare(made.root, out, workers=1)
    changed = PrepareOptions(trigger="zzz")
    _interrupt_before_the_manifest(made.root, out, changed, monkeypatch)
    caption = sorted(first.train_dir.glob("*.txt"))[0]
    assert "zzz" in caption.read_text(encoding="utf-8")  # rewritten where the first run's was
    if edit == "none":
        again = prepare(made.root, out, workers=1)
        assert caption.read_text(encoding="utf-8") == again.manifest.set_index("id").loc[
            caption.stem, "caption"]
        return
    path = caption if edit == "caption" else sorted(first.train_dir.glob("*.jpg"))[0]
    if edit == "caption":
        caption.write_text("my careful caption", encoding="utf-8")
    else:
        decoded = cv2.imread(str(path))
        assert decoded is not None
        path.unlink()  # an editor saves a new file over the old name
        cv2.imwrite(str(path), decoded[10:-10, 10:-10])
    edited = path.read_bytes()
    for options in (PrepareOptions(), changed):
        with pytest.raises(UserError, match="changed since") as refused:
            prepare(made.root, out, workers=1, options=options)
        assert path.name in str(refused.value)
        assert path.read_bytes() == edited


def test_a_folder_whose_re_run_was_interrupted_is_refused_until_it_is_finished(
        runner: CliRunner, isic2020: SyntheticSet, prepared: Path, trained: Path,
        fake_gen: FakeGen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its state, manifest and dataset.toml are still the last complete run's while its
    captions are the new one's: train, sample and evaluate refuse it in one line."""
    from medsynth_kohya.evaluation.sets import load_real

    changed = PrepareOptions(repeats=2, trigger="zzz")
    _interrupt_before_the_manifest(isic2020.root, prepared, changed, monkeypatch)
    tools = ("--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON, "--dry-run")
    train = ("train", prepared, "--preset", "cpu-smoke", "--run-dir", tmp_path / "run", *tools)
    sample = ("sample", "--lora", trained, "--n", 2, "--out", tmp_path / "synth", *tools)
    said = (f"{prepared}: prepare was interrupted; re-run the same prepare command to finish "
            "it")
    for command in (train, sample):
        code, stdout, stderr = invoke(runner, *command)
        assert code == 1 and "Traceback" not in stdout + stderr, stderr
        assert said in " ".join(stderr.split())
    with pytest.raises(UserError, match="prepare was interrupted"):
        load_real(prepared)
    assert not (tmp_path / "run").exists()
    prepare(isic2020.root, prepared, workers=1, options=changed)
    for command in (train, sample):
        code, stdout, stderr = invoke(runner, *command)
        assert code == 0, stdout + stderr
    assert 'class_tokens = "zzz"' in (prepared / "dataset.toml").read_text(encoding="utf-8")
    assert len(load_real(prepared).training)


@pytest.mark.parametrize("name", ["dataset.toml", "manifest.csv"])
def test_a_dataset_toml_or_manifest_edited_by_hand_is_kept_unless_force(
        runner: CliRunner, tmp_path: Path, isic2020: SyntheticSet, name: str) -> None:
    out = tmp_path / "out"
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr
    edited = out / name
    written = edited.read_text(encoding="utf-8")
    edit = ("shuffle_caption = false", "shuffle_caption = true") if name == "dataset.toml" \
        else ("\n", ",my note\n")
    assert edit[0] in written
    edited.write_text(written.replace(edit[0], edit[1], 1), encoding="utf-8")
    before = checksums(out)
    code, stdout, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    message = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1
    assert f"{edited} was changed since prepare wrote it" in message
    assert "pass --force to replace it" in message
    assert ("renders its own RUN/dataset.toml" in message) == (name == "dataset.toml")
    assert checksums(out) == before
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out, "--force")
    assert code == 0, stderr
    assert edited.read_text(encoding="utf-8") == written
    code, _, stderr = invoke(runner, "prepare", isic2020.root, "--out", out)
    assert code == 0, stderr


def test_files_the_user_made_private_stay_private_on_a_re_run(isic2020: SyntheticSet,
                                                             tmp_path: Path) -> None:
    """manifest.csv names patients: one the user made readable by them alone (chmod 600) is
    still so after a re-run rewrites it, as are skipped.csv and dataset.toml."""
    import stat

    out = tmp_path / "out"
    prepare(isic2020.root, out, workers=1)
    kept = [out / "manifest.csv", out / "skipped.csv", out / "dataset.toml"]
    for path in kept:
        path.chmod(0o600)
    before = [path.read_bytes() for path in kept]
    prepare(isic2020.root, out, workers=1, options=PrepareOptions(repeats=3))
    assert [path.read_bytes() for path in kept] != before  # rewritten: the repeats changed
    assert [stat.S_IMODE(path.stat().st_mode) for path in kept] == [0o600] * 3
