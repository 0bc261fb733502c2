"""How `evaluate` reads its two image sets and its feature network, as a user meets them:
files that are no image or are cut short, sets with nothing usable, networks that are none."""

from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import features
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate, plan

from .conftest import invoke, one_line_error
from .eval_data import isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
needs_torch = pytest.mark.skipif(bool(features.missing(TINY, False)),
                                 reason="the eval extra (torch, torchmetrics) is not installed")


@pytest.fixture
def data(tmp_path: Path) -> tuple[dict[str, Path], list[str]]:
    """An ISIC-style source at tmp_path/isic (4 melanomas, 3 others) and a synthetic set of 3
    unrelated photos at tmp_path/syn: (real id -> photo, synthetic ids)."""
    real = isic_source(tmp_path / "isic", 4, 3, seed=3)
    return real, synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(3)])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate without the feature network (copies and adherence only), as without torch."""
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])


def _cut(kind: str) -> bytes:
    """The first 20 bytes of a photo saved as `kind`: a header that ends before the size it
    announces (a download cut short)."""
    ok, data = cv2.imencode(f".{kind}", photo(1))
    assert ok
    return data.tobytes()[:20]


@pytest.mark.parametrize("kind", ["bmp", "tiff", "webp"])
def test_a_photo_cut_inside_its_header_is_undecodable_on_either_side(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]], kind: str,
        no_network: None) -> None:
    real, synthetic = data
    cut_real = sorted(real)[0]  # a melanoma: a training photo
    real[cut_real].write_bytes(_cut(kind))
    (tmp_path / "syn" / "images" / f"{synthetic[1]}.png").write_bytes(_cut(kind))
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    assert sorted((s["set"], s["id"], s["reason"]) for s in result.skipped) == [
        ("real", cut_real, "undecodable"), ("synthetic", synthetic[1], "undecodable")]
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_synthetic"] == len(synthetic) - 1


class _Lookalike:
    """Not a torch module, though it has `eval` as a module has."""

    def eval(self) -> _Lookalike:
        return self


def gives_a_lookalike() -> _Lookalike:
    return _Lookalike()


def gives_a_lookalike_of_nothing() -> Any:
    class Quiet:
        def eval(self) -> None:
            return None

    return Quiet()


@needs_torch
@pytest.mark.parametrize(("factory", "gave"), [("gives_a_lookalike", "_Lookalike"),
                                               ("gives_a_lookalike_of_nothing", "Quiet")])
def test_a_factory_of_something_with_eval_that_is_no_torch_module_is_one_line(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        factory: str, gave: str) -> None:
    spec = f"{__name__}:{factory}"
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report", "--features",
                                  spec, "--no-classifier")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert line.endswith(f"--features '{spec}' is not a factory of a torch network (it gave "
                         f"{gave}): name a function that returns a torch.nn.Module")
    assert not (tmp_path / "report" / "report.json").exists()


@needs_torch
@pytest.mark.parametrize("failure", [
    urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
    RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central "
                 "directory")])
def test_inception_weights_that_cannot_be_had_are_one_line_saying_what_to_do(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """Offline on first use (the weights download) or a broken download in torch's cache."""
    import torch

    def unavailable(name: str, features_list: list[str]) -> Any:  # torchmetrics' signature
        raise failure

    monkeypatch.setattr(features, "missing", lambda *_: [])  # as with torch-fidelity installed
    monkeypatch.setattr("torchmetrics.image.fid.NoTrainInceptionV3", unavailable)
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report",
                                  "--no-classifier")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert (f"the Inception network's weights could not be loaded ({type(failure).__name__}: "
            f"{str(failure).splitlines()[0]})") in line
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in line and "--features" in line
    assert not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("rows", ["without their files", "none"])
def test_a_synthetic_set_with_no_image_for_its_rows_is_one_line(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        no_network: None, rows: str) -> None:
    """Rows whose images are gone are said so; a metadata.csv of its header alone is an
    empty set, which sample fills."""
    syn = tmp_path / "syn"
    if rows == "none":
        header = (syn / "metadata.csv").read_text(encoding="utf-8").splitlines()[0]
        (syn / "metadata.csv").write_text(header + "\n", encoding="utf-8")
        said = (f"{syn} is an empty set: its metadata.csv has no rows, only its header; fill "
                f"it with `medsynth-kohya sample --out {syn}` (and the options that made it)")
    else:
        for image in (syn / "images").iterdir():
            image.unlink()
        said = (f"{syn} has no images for the rows of its metadata.csv: looked for "
                f"images/<id>.png in {syn / 'images'}; give the --out folder of "
                "`medsynth-kohya sample`, or re-run the command that made the set")
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  syn, "--out", tmp_path / "report")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    assert lines[0] == f"Error: {said}"
    assert not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG"])
def test_a_set_of_jpegs_is_told_its_images_must_be_png(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        no_network: None, suffix: str) -> None:
    """images/<id>.jpg for every row: evaluate names the file it looks for and why these
    are not it."""
    syn = tmp_path / "syn"
    for index, image in enumerate(sorted((syn / "images").iterdir())):
        ok, jpeg = cv2.imencode(".jpg", photo(9300 + index))
        assert ok
        image.with_suffix(suffix).write_bytes(jpeg.tobytes())
        image.unlink()
    said = (f"{syn} has no images for the rows of its metadata.csv: looked for "
            f"images/<id>.png in {syn / 'images'}, but 3 rows have a JPEG there (first: "
            f"{data[1][0]}{suffix}); a set's images must be PNG, as `medsynth-kohya sample` "
            "writes them: convert them to PNG, or re-run the command that made the set")
    line = one_line_error(*invoke(runner, "evaluate", "--real", tmp_path / "isic",
                                  "--synthetic", syn, "--out", tmp_path / "report"))
    assert line == f"Error: {said}"


def _unlisted_set(tmp_path: Path, real: dict[str, Path]) -> Path:
    """A set of 8 PNGs in images/ whose metadata.csv lists only its first: the last image a
    near-copy of a training photo."""
    syn = tmp_path / "eight"
    ids = synthetic_set(syn, [photo(9400 + i) for i in range(7)])
    training = cv2.imread(str(real[sorted(real)[0]]))
    assert training is not None
    cv2.imwrite(str(syn / "images" / "SYN_0000007.png"), training)
    lines = (syn / "metadata.csv").read_text(encoding="utf-8").splitlines()[:2]
    (syn / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert lines[1].startswith(ids[0])
    return syn


def test_images_the_sets_metadata_does_not_list_are_refused_not_left_unchecked(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        no_network: None) -> None:
    """An image metadata.csv does not list would be in no check (a near-copy among them
    passes unseen): evaluate and its dry run refuse the set, as push does."""
    syn = _unlisted_set(tmp_path, data[0])
    said = (f"{syn}: 7 images in images/ are not listed in its metadata.csv (first: "
            "SYN_0000001.png), so no check would see them; re-run the `medsynth-kohya sample` "
            f"command that made the set to list them, or move them out of {syn / 'images'}")
    for dry in ([], ["--dry-run"]):
        line = one_line_error(*invoke(runner, "evaluate", "--real", tmp_path / "isic",
                                      "--synthetic", syn, "--out", tmp_path / "report", *dry))
        assert line == f"Error: {said}"
    with pytest.raises(UserError) as refused:
        evaluate(tmp_path / "isic", syn, tmp_path / "report")
    assert str(refused.value) == said
    assert not (tmp_path / "report").exists()


def test_hairy_written_as_any_boolean_word_counts_as_prompted_and_other_words_are_said(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]], no_network: None) -> None:
    """A hand-written `hairy` column (1/0, yes/no, any case) is read as sample's true/false;
    a value that is none of these is not graded, and said (not dropped silently)."""
    syn = tmp_path / "words"
    synthetic_set(syn, [photo(9450 + i) for i in range(5)], hairy=[True, False, True, False, True])
    text = (syn / "metadata.csv").read_text(encoding="utf-8")
    for written, word in zip(("true", "false", "true", "false", "true"),
                             ("1", "no", "YES", "0", "maybe"), strict=True):
        text = text.replace(f",melanoma,{written},", f",melanoma,{word},", 1)
    (syn / "metadata.csv").write_text(text, encoding="utf-8")
    said = ("1 row of metadata.csv has a hairy value that is not true or false (first: "
            "SYN_0000004: 'maybe'), so the hair its prompt asked for is not graded; write true "
            "or false there (1/0 and yes/no are read too)")
    result = evaluate(tmp_path / "isic", syn, tmp_path / "report")
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["sections"]["adherence"]["hair"]["n_prompted"] == 4
    assert said in result.warnings and said in document["notes"]
    assert said in plan(tmp_path / "isic", syn, tmp_path / "dry").warnings


def test_real_data_without_a_melanoma_photo_is_one_line(
        runner: CliRunner, tmp_path: Path, no_network: None) -> None:
    isic_source(tmp_path / "benign", 0, 3, seed=4)
    synthetic_set(tmp_path / "syn", [photo(9350)])
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "benign",
                                  "--synthetic", tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 1 and one_line_error(code, stdout, stderr) == (
        f"Error: {tmp_path / 'benign'} has no training images to compare with (no melanoma with "
        "an image file); give --real a download holding melanoma photos")


@pytest.mark.parametrize("run", ["folder", "record"])
def test_a_lora_that_is_no_training_run_is_one_line(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        run: str) -> None:
    """A folder without a run record, or one whose record names no prepared data."""
    (tmp_path / "run").mkdir()
    if run == "record":
        (tmp_path / "run" / "run.json").write_text('{"tool": "medsynth-kohya"}',
                                                  encoding="utf-8")
    code, stdout, stderr = invoke(runner, "evaluate", "--lora", tmp_path / "run", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 1 and "Traceback" not in stdout + stderr
    assert (f"{tmp_path / 'run'} is not a training run (no readable run.json naming its "
            "prepared data); give --real instead") in " ".join(stderr.split())


def test_paths_under_the_home_folder_given_with_a_tilde(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, stderr = invoke(runner, "evaluate", "--real", "~/isic", "--synthetic", "~/syn",
                             "--out", "~/report")
    assert code == 0, stderr
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_synthetic"] == len(data[1])
    result = evaluate("~/isic", "~/syn", "~/again")
    assert result.out == tmp_path / "again" and result.page.is_file()


def test_progress_counts_every_row_of_each_set_decoded_or_not(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]], no_network: None) -> None:
    synthetic = data[1]
    (tmp_path / "syn" / "images" / f"{synthetic[0]}.png").write_bytes(b"no image")
    said: list[tuple[str, int, int]] = []
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
             on_progress=lambda stage, done, total: said.append((stage, done, total)))
    melanomas = 4
    assert [s for s in said if s[0] == "training photos"] == [
        ("training photos", done, melanomas) for done in range(1, melanomas + 1)]
    assert [s for s in said if s[0] == "synthetic images"] == [
        ("synthetic images", done, len(synthetic)) for done in range(1, len(synthetic) + 1)]


def test_the_network_gets_rgb_at_its_input_side_channels_first_averaged_down() -> None:
    bgr = np.zeros((40, 70, 3), np.uint8)
    bgr[:, :, 2] = 200  # red, as OpenCV holds it
    bgr[:, :35, 0] = 90  # and blue on the left half
    given = features.to_input(bgr)
    assert given.shape == (3, features.INPUT_SIDE, features.INPUT_SIDE)
    assert given.flags["C_CONTIGUOUS"] and given.dtype == np.uint8
    assert (given[0] == 200).all() and (given[1] == 0).all()
    assert given[2, :, :140].min() == 90 and given[2, :, 160:].max() == 0
    lines = np.zeros((8, 4 * features.INPUT_SIDE, 3), np.uint8)
    lines[:, ::4] = 200  # a pattern finer than the input: reduced to its mean, not aliased
    assert (features.to_input(lines) == 50).all()


@needs_torch
def test_figures_do_not_depend_on_the_batch_size(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]]) -> None:
    """The network runs on batches as they fill and on the rest at the end: every image gives
    one row, whatever the batch size divides."""
    figures = []
    for size in (1, 2, 32):
        evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / f"b{size}",
                 EvaluateOptions(features=TINY, batch_size=size, classifier="none"))
        document = json.loads((tmp_path / f"b{size}" / "report.json").read_text("utf-8"))
        fidelity = document["sections"]["fidelity"]
        assert "skipped" not in fidelity, fidelity
        figures.append(fidelity)
    for other in figures[1:]:
        assert other.keys() == figures[0].keys()
        for key, value in figures[0].items():
            if isinstance(value, float):
                assert other[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
            else:
                assert other[key] == value, key


def test_a_prepared_folders_source_is_read_back_from_every_image_folder_prepare_searched(
        runner: CliRunner, tmp_path: Path, no_network: None) -> None:
    """The classifier's labelled photos come from the download the folder was prepared from,
    searched where prepare searched it: a layout with two image folders (HAM10000's part_1
    and part_2) loses no row."""
    real = isic_source(tmp_path / "isic", 4, 4, seed=6)
    (tmp_path / "isic" / "images").mkdir()
    for identifier in sorted(real)[1::2]:  # every other photo, melanomas and others
        real[identifier].rename(tmp_path / "isic" / "images" / real[identifier].name)
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data")
    assert code == 0, stderr
    synthetic_set(tmp_path / "syn", [photo(9360 + i) for i in range(2)])
    result = evaluate(tmp_path / "data", tmp_path / "syn", tmp_path / "report")
    assert not [note for note in result.warnings if "train.csv" in note], result.warnings
    from_source = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "again")
    assert from_source.warnings == result.warnings


@needs_torch
def test_a_prepared_folders_source_is_read_back_with_the_columns_prepare_was_given(
        runner: CliRunner, tmp_path: Path) -> None:
    """`prepare --column patient_id=subject`: evaluate reads the download the same way, so the
    classifier's photos keep their patients."""
    isic_source(tmp_path / "isic", 4, 4, seed=7)
    metadata = tmp_path / "isic" / "train.csv"
    text = metadata.read_text(encoding="utf-8")
    metadata.write_text(text.replace("patient_id", "subject", 1), encoding="utf-8")
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data",
                             "--column", "patient_id=subject")
    assert code == 0, stderr
    synthetic_set(tmp_path / "syn", [photo(9370 + i) for i in range(2)])
    evaluate(tmp_path / "data", tmp_path / "syn", tmp_path / "report",
             EvaluateOptions(features=TINY, mixes=(0.0,), repeats=1))
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    section = document["sections"]["utility"]
    assert "skipped" not in section and "patient id" not in json.dumps(section), section


def test_each_missing_package_is_named_as_pip_installs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "torchmetrics", "sklearn", "torch_fidelity"):
        monkeypatch.setitem(sys.modules, name, None)  # its import fails
    assert features.missing() == ["torch", "torchmetrics", "scikit-learn", "torch-fidelity"]
    assert features.missing("pkg:factory", False) == ["torch", "torchmetrics"]


@pytest.mark.parametrize("side", ["real", "synthetic"])
def test_a_set_none_of_whose_photos_decode_is_one_line_saying_what_to_do(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        no_network: None, side: str) -> None:
    real, synthetic = data
    broken = ([real[i] for i in sorted(real)] if side == "real" else
              [tmp_path / "syn" / "images" / f"{i}.png" for i in synthetic])
    for path in broken:
        path.write_bytes(_cut("bmp"))
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report")
    said = " ".join(stderr[stderr.find("Error:"):].split())  # after the progress bars
    assert code == 1 and "Traceback" not in stdout + stderr and said.count("Error:") == 1
    assert said == ("Error: none of the training photos of " f"{tmp_path / 'isic'} could be "
                    "decoded: give a download or prepared folder whose photos open as images"
                    if side == "real" else
                    f"Error: none of the images of {tmp_path / 'syn'} could be decoded: re-run "
                    "the `medsynth-kohya sample` command that made it, which makes them again")
    assert not (tmp_path / "report" / "report.json").exists()
