"""`evaluate` on generated data: planted near-copies, adherence, FID/KID, the classifier, report."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copies, features, sets
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate

from .conftest import SEED, invoke, one_line_error, png_chunk, png_header_only
from .eval_data import isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
torch_missing = bool(features.missing(TINY))
needs_eval = pytest.mark.skipif(torch_missing, reason="the eval extra (torch, torchmetrics, "
                                "scikit-learn) is not installed")


def _decoded(image: Any) -> Any:
    assert image is not None
    return image


def _read(path: Path) -> Any:
    return _decoded(cv2.imread(str(path)))


def _planted(image: Any, kind: str, rng: np.random.Generator) -> Any:
    """A training photo as a careless generator or a copier would return it."""
    height, width = image.shape[:2]
    if kind == "resize":
        return cv2.resize(image, (width // 3, height // 3), interpolation=cv2.INTER_AREA)
    if kind == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
        assert ok
        return _decoded(cv2.imdecode(data, cv2.IMREAD_COLOR))
    if kind == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if kind == "square":
        short = min(height, width)
        top, left = (int((side - short) * rng.uniform(0, 1)) for side in (height, width))
        return cv2.resize(image[top:top + short, left:left + short], (1024, 1024),
                          interpolation=cv2.INTER_AREA)
    top, left = rng.uniform(0, 0.1, 2)
    return image[int(height * top):int(height * (top + 0.9)),
                 int(width * left):int(width * (left + 0.9))]


KINDS = ("resize", "jpeg", "flip", "crop")
REFRAMED = (*KINDS, "square")
"""Also the largest square of a photo, as a square generation frames it."""


@pytest.fixture(scope="module")
def indexed() -> tuple[list[Any], copies.HashIndex]:
    """24 varied training photos and their index, under the ids T0 to T23."""
    training = [photo(i, melanoma=i % 3 > 0, hairy=i % 4 == 0) for i in range(24)]
    index = copies.HashIndex()
    for i, image in enumerate(training):
        index.add(f"T{i}", image)
    return training, index


def test_planted_copies_are_found_and_unrelated_photos_are_not(
        indexed: tuple[list[Any], copies.HashIndex]) -> None:
    training, index = indexed
    rng = np.random.default_rng(7)
    for i, image in enumerate(training):
        for kind in REFRAMED:
            matches = index.nearest(copies.query_hash(_planted(image, kind, rng)))
            assert matches[0].training_id == f"T{i}", kind
            assert copies.is_copy(matches), (kind, matches[0].distance)
        both = _planted(_planted(_planted(image, "crop", rng), "flip", rng), "jpeg", rng)
        assert copies.is_copy(index.nearest(copies.query_hash(both)))
    for seed in range(1000, 1060):
        unrelated = photo(seed, melanoma=seed % 2 == 0, hairy=seed % 3 == 0)
        assert not copies.is_copy(index.nearest(copies.query_hash(unrelated)))


def _oriented(image: Any, orientation: int) -> Any:
    """`image` turned `orientation // 2` quarter turns, mirrored when `orientation` is odd:
    the 8 ways a dermoscopy photo may lie."""
    turned = np.rot90(image, orientation // 2)
    return np.ascontiguousarray(turned[:, ::-1] if orientation % 2 else turned)


def test_a_copy_turned_or_flipped_any_way_is_found(
        indexed: tuple[list[Any], copies.HashIndex]) -> None:
    """Vertical flips and quarter or half turns as well as the mirror: dermoscopy has no up."""
    training, index = indexed
    rng = np.random.default_rng(11)
    for i, image in enumerate(training):
        for orientation in range(1, 8):
            cropped = _planted(_oriented(_planted(image, "crop", rng), orientation), "jpeg", rng)
            for copy in (_oriented(image, orientation), cropped):
                matches = index.nearest(copies.query_hash(copy))
                assert matches[0].training_id == f"T{i}", orientation
                assert copies.is_copy(matches), (orientation, matches[0].distance)


@pytest.mark.skipif(not (SEED / "malignant_images").is_dir(), reason="../shared/seed is absent")
def test_real_isic_photos_copies_flagged_different_patients_not() -> None:
    paths = sorted((SEED / "malignant_images").glob("*.jpg"))
    images = [_read(p) for p in paths]
    rng = np.random.default_rng(3)
    for held_out, image in enumerate(images):
        index = copies.HashIndex()
        for i, other in enumerate(images):
            if i != held_out:
                index.add(paths[i].stem, other)
        assert not copies.is_copy(index.nearest(copies.query_hash(image))), paths[held_out]
        index.add(paths[held_out].stem, image)
        for kind in REFRAMED:
            for orientation in range(8):
                copy = _oriented(_planted(image, kind, rng), orientation)
                matches = index.nearest(copies.query_hash(copy))
                assert matches[0].training_id == paths[held_out].stem
                assert matches[0].distance <= copies.THRESHOLD


@pytest.fixture(scope="module")
def _source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "isic"
    isic_source(root, 16, 24, seed=1, patients=20)
    return root


@pytest.fixture
def source(_source: Path, tmp_path: Path) -> dict[str, Path]:
    """An ISIC 2020-style source at tmp_path/isic: 16 melanomas, 24 other lesions, 20 patients."""
    shutil.copytree(_source, tmp_path / "isic")
    return {p.stem: p for p in sorted((tmp_path / "isic" / "train").glob("*.jpg"))}


class _Page(HTMLParser):
    """Collects image sources and links of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("href", "src"):
            value = values.get(key) or ""
            if value.startswith(("http:", "https:", "//")):
                self.urls.append(value)


def _page(out: Path) -> _Page:
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    return page


@needs_eval
def test_cli_flags_planted_copies_and_writes_a_self_contained_report(
        runner: CliRunner, tmp_path: Path, source: dict[str, Path]) -> None:
    rng = np.random.default_rng(1)
    melanomas = [p for i, p in enumerate(source.values()) if i < 16]
    planted = [_planted(_read(melanomas[i]), kind, rng)
               for i, kind in enumerate(KINDS)]
    fresh = [photo(5000 + i, melanoma=True, hairy=i % 2 == 0) for i in range(12)]
    synthetic_set(tmp_path / "syn", fresh + planted, [i % 2 == 0 for i in range(12)] + [None] * 4)
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic",
                                  "--synthetic", tmp_path / "syn", "--out", tmp_path / "report",
                                  "--features", TINY, "--mix", "0,1", "--repeats", "2")
    assert code == 1, stderr
    assert "4 synthetic images are near-copies" in stderr and "Traceback" not in stderr
    assert "near-copies of training photos" in stdout and "fail" in stdout
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    flagged = {f["synthetic_id"]: f["training_id"] for f in document["sections"]["copies"]
               ["flagged"]}
    assert flagged == {f"SYN_{12 + i:07d}": melanomas[i].stem for i in range(4)}
    page = _page(tmp_path / "report")
    assert page.images and all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    assert not page.urls
    assert str(tmp_path) not in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    mixes = document["sections"]["utility"]["figures"]["mixes"]
    assert [m["mix"] for m in mixes] == [0.0, 1.0]
    for mix in mixes:
        assert mix["auc"]["low"] <= mix["auc"]["value"] <= mix["auc"]["high"]
        assert 0.0 <= mix["balanced_accuracy"]["value"] <= 1.0


@needs_eval
def test_the_same_generator_scores_closer_than_a_shifted_one(tmp_path: Path,
                                                             source: dict[str, Path]) -> None:
    same = [photo(7000 + i, melanoma=True) for i in range(16)]
    shifted = [photo(8000 + i, melanoma=True, shift=1.0) for i in range(16)]
    figures = {}
    for name, images in (("same", same), ("shifted", shifted)):
        synthetic_set(tmp_path / name, images)
        evaluate(tmp_path / "isic", tmp_path / name, tmp_path / f"report-{name}",
                 EvaluateOptions(features=TINY, classifier="none"))
        document = json.loads((tmp_path / f"report-{name}" / "report.json").read_text())
        figures[name] = document["sections"]["fidelity"]["figures"]
        assert figures[name]["n_real"] == 16 and figures[name]["n_synthetic"] == 16
    assert figures["same"]["fid"] < figures["shifted"]["fid"]
    assert figures["same"]["kid_mean"] < figures["shifted"]["kid_mean"]
    assert figures["same"]["precision"] > figures["shifted"]["precision"]


def _scene_set(root: Path, count: int, *, lie: bool) -> None:
    """Benchmark scenes as a synthetic set whose prompts say (or, with `lie`, contradict)
    each scene's true hair and skin tone."""
    from medsynth_kohya.data.measure import TONES, tone_category
    from medsynth_kohya.data.synth import scene

    images, truths = zip(*(scene(640, 480, 300 + i) for i in range(count)), strict=True)
    tones = [name for name, _ in TONES]
    hairy = [truth.hairy != lie for truth in truths]
    tone = [tones[(tones.index(tone_category(truth.ita)) + (3 if lie else 0)) % len(tones)]
            for truth in truths]
    synthetic_set(root, list(images), hairy, tone)


def test_adherence_compares_what_is_measured_with_the_prompt(
        tmp_path: Path, source: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    figures = {}
    for name, lie in (("right", False), ("wrong", True)):
        _scene_set(tmp_path / name, 12, lie=lie)
        result = evaluate(tmp_path / "isic", tmp_path / name, tmp_path / f"r-{name}")
        document = json.loads((result.out / "report.json").read_text(encoding="utf-8"))
        figures[name] = document["sections"]["adherence"]
    for attribute in ("hair", "skin_tone"):
        assert figures["right"][attribute]["n_prompted"] == 12
        assert figures["right"][attribute]["agreement"] >= 0.8, attribute
        assert figures["wrong"][attribute]["agreement"] <= 0.2, attribute
    spread = figures["right"]["synthetic"]
    assert spread["n"] == 12 and sum(spread["skin_tone"].values()) == 12


def test_without_the_eval_extra_copies_and_adherence_still_run(
        runner: CliRunner, tmp_path: Path, source: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch", "torchmetrics"])
    synthetic_set(tmp_path / "syn", [photo(9000 + i) for i in range(4)])
    code, stdout, _ = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 0
    assert "skipped: needs torch, torchmetrics: pip install 'medsynth-kohya[eval]'" in stdout
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["sections"]["copies"]["flagged"] == []
    assert "skipped" in document["sections"]["utility"]
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    for title in ("3. Fidelity and diversity", "4. Downstream utility"):
        assert f"<h2>{title}</h2><p class='skipped'>Skipped: needs torch" in page


def test_undecodable_images_are_listed_not_fatal(tmp_path: Path, source: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    ids = synthetic_set(tmp_path / "syn", [photo(9100 + i) for i in range(3)])
    (tmp_path / "syn" / "images" / f"{ids[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "syn" / "images" / f"{ids[1]}.png").unlink()
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    reasons = {(s["id"], s["reason"]) for s in result.skipped}
    assert reasons == {(ids[0], "undecodable"), (ids[1], "in metadata.csv, no image file")}
    assert "Files left out" in (tmp_path / "report" / "report.html").read_text()
    gone = sorted(source)[0]
    source[gone].unlink()  # a real row without its photo is said, not dropped silently
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "again")
    notes = json.loads((tmp_path / "again" / "report.json").read_text(encoding="utf-8"))["notes"]
    (note,) = [n for n in notes if "no image file" in n]
    assert note == f"1 row of train.csv has no image file and is left out (first: {gone})"
    assert note in (tmp_path / "again" / "report.html").read_text()


def test_a_real_photo_in_a_format_prepare_does_not_take_is_named_with_the_fix(
        tmp_path: Path, source: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A real row whose only file is a .tif or .webp has a file: the note says what it is and
    how to make it usable, as prepare's skipped.csv does, not that there is none."""
    import cv2

    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    synthetic_set(tmp_path / "syn", [photo(9200 + i) for i in range(2)])
    converted = sorted(source)[:2]
    for identifier in converted:
        path = source[identifier]
        image = cv2.imread(str(path))
        assert image is not None
        cv2.imwrite(str(path.with_suffix(".tif")), image)
        path.unlink()
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    notes = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))["notes"]
    assert f"2 rows of train.csv have only a file evaluate does not take and are left out " \
           f"(first: {converted[0]}: only a .tif file: convert it to .jpg or .png)" in notes
    assert not [note for note in notes if "no image file" in note]


def test_a_header_claiming_huge_dimensions_is_undecodable_not_a_crash(
        runner: CliRunner, tmp_path: Path, source: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG whose header claims 60000 x 60000 pixels (OpenCV raises on its image data), as a
    synthetic image and as a training photo: prepare refuses that size from the header, and
    evaluate leaves it out as undecodable."""
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    header = png_header_only(60000, 60000)
    huge = header[:-12] + png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + header[-12:]
    ids = synthetic_set(tmp_path / "syn", [photo(9120 + i) for i in range(3)])
    (tmp_path / "syn" / "images" / f"{ids[0]}.png").write_bytes(huge)
    melanoma = sorted(source)[1]  # a training photo
    source[melanoma].write_bytes(huge)
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic",
                                  "--synthetic", tmp_path / "syn", "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in stdout + stderr, stderr
    skipped = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))[
        "skipped"]
    assert {"set": "synthetic", "id": ids[0], "reason": "undecodable"} in skipped
    assert {"set": "real", "id": melanoma, "reason": "undecodable"} in skipped


@needs_eval
def test_an_undecodable_real_photo_is_listed_once_with_its_reason(
        tmp_path: Path, source: dict[str, Path]) -> None:
    """A training photo that does not decode is left out of every section, and the report
    lists it once however many sections (near-copies, the classifier's photos) pass over it."""
    broken = sorted(source)[0]  # a melanoma: a training photo and a labelled one
    source[broken].write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    synthetic_set(tmp_path / "syn", [photo(9150 + i, melanoma=True) for i in range(6)])
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
                      EvaluateOptions(features=TINY, repeats=1))
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert "skipped" not in document["sections"]["utility"]
    for listed in (result.skipped, document["skipped"]):
        assert [s for s in listed if s["id"] == broken] == [
            {"set": "real", "id": broken, "reason": "undecodable"}]
    assert (tmp_path / "report" / "report.html").read_text(encoding="utf-8").count(broken) == 1


def test_bad_input_is_one_clear_line(runner: CliRunner, tmp_path: Path,
                                     source: dict[str, Path]) -> None:
    synthetic_set(tmp_path / "syn", [photo(9200)])
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "images").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "broken" / "images").mkdir(parents=True)
    (tmp_path / "broken" / "metadata.csv").write_bytes(b'isic_id,prompt\nSYN_1,"a"b\n')
    cases = [
        (["--synthetic", tmp_path / "bare"], "has no metadata.csv"),
        (["--synthetic", tmp_path / "broken"], "cannot read"),
        (["--synthetic", tmp_path / "missing"], "does not exist"),
        (["--synthetic", tmp_path / "syn", "--real", tmp_path / "nowhere"], "does not exist"),
        (["--synthetic", tmp_path / "syn"], "give --real"),
        (["--synthetic", tmp_path / "syn", "--mix", "a,b"], "--mix"),
    ]
    for args, message in cases:
        real = [] if "--real" in args or message == "give --real" else ["--real",
                                                                          tmp_path / "isic"]
        code, _, stderr = invoke(runner, "evaluate", *args, *real, "--out", tmp_path / "r")
        assert code == 1 and message in stderr, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    code, _, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "foreign")
    assert code == 1 and "evaluate did not write" in stderr
    assert (tmp_path / "foreign" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_real_folder_without_isic_metadata_says_what_evaluate_takes(
        runner: CliRunner, tmp_path: Path) -> None:
    """evaluate has no --metadata/--images (prepare's way round it): its hint names what
    --real takes instead."""
    synthetic_set(tmp_path / "syn", [photo(9300)])
    (tmp_path / "photos").mkdir()
    assert cv2.imwrite(str(tmp_path / "photos" / "ISIC_0000001.jpg"), photo(9301))
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "photos",
                                  "--synthetic", tmp_path / "syn", "--out", tmp_path / "r")
    line = one_line_error(code, stdout, stderr)
    assert line.startswith(f"Error: no ISIC metadata found in {tmp_path / 'photos'}: expected ")
    assert line.endswith("metadata.csv; give a folder holding one of those CSVs, or a folder "
                         "made by `medsynth-kohya prepare`")
    assert "--metadata" not in line and not (tmp_path / "r").exists()


def test_a_report_is_replaced_only_with_force(tmp_path: Path, source: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(2)])
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    with pytest.raises(UserError, match="--force"):
        evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
             EvaluateOptions(force=True))


@needs_eval
def test_one_class_only_skips_the_classifier_with_a_reason(tmp_path: Path) -> None:
    isic_source(tmp_path / "isic", 6, 0, seed=2)
    synthetic_set(tmp_path / "syn", [photo(9400 + i) for i in range(4)])
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
                      EvaluateOptions(features=TINY))
    row = next(r for r in result.verdict if r["check"] == "classifier utility")
    assert row["status"] == "skipped" and "one class only" in row["detail"]


def test_a_prepared_folder_gives_its_training_images(runner: CliRunner, tmp_path: Path,
                                                     source: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    code, _, stderr = invoke(runner, "prepare", tmp_path / "isic", "--out", tmp_path / "data")
    assert code == 0, stderr
    melanoma = next(p for i, p in enumerate(source.values()) if i == 3)
    other = next(p for i, p in enumerate(source.values()) if i == 30)
    synthetic_set(tmp_path / "syn", [_read(melanoma), _read(other)])
    result = evaluate(tmp_path / "data", tmp_path / "syn", tmp_path / "report")
    assert [(f["synthetic_id"], f["training_id"]) for f in result.flagged] == [
        ("SYN_0000000", melanoma.stem)]
    inputs = json.loads((tmp_path / "report" / "report.json").read_text())["inputs"]
    assert inputs["manifest_sha256"] == files.sha256(tmp_path / "data" / "manifest.csv")


@pytest.mark.browser
@needs_eval
def test_the_report_renders_in_headless_chromium(tmp_path: Path,
                                                 source: dict[str, Path]) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    synthetic_set(tmp_path / "syn", [photo(9500 + i, hairy=i % 2 == 0) for i in range(8)],
                  [i % 2 == 0 for i in range(8)])
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
             EvaluateOptions(features=TINY, mixes=(0.0, 1.0), repeats=1))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1200,2000",
                    (tmp_path / "report" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image: Any = cv2.imread(str(shot))
    assert image is not None and float(image.std()) > 10.0



def test_without_torch_fidelity_inception_is_skipped_not_fatal(
        tmp_path: Path, source: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch and torchmetrics without torch-fidelity: the default Inception network cannot
    load, so fidelity and utility are skipped and the near-copy check still runs; a network
    of the user's own does not need it."""
    import importlib

    real = importlib.import_module

    def without_fidelity(name: str, *args: Any) -> Any:
        if name == "torch_fidelity":
            raise ModuleNotFoundError("No module named 'torch_fidelity'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_fidelity)
    assert "torch-fidelity" in features.missing()
    assert "torch-fidelity" not in features.missing(TINY)
    synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(3)])
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    document = json.loads((result.out / "report.json").read_text(encoding="utf-8"))
    assert document["sections"]["copies"]["flagged"] == []
    assert "torch-fidelity" in document["sections"]["utility"]["skipped"]


def _reprompt(root: Path, prompt: str) -> None:
    """Give every row of ROOT/metadata.csv the same prompt, keeping its recorded hair and tone."""
    import csv

    with (root / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**row, "prompt": prompt} for row in rows])


@pytest.mark.parametrize(("prompt", "named"), [
    ("photo of skin, me1anoma on torso", False),  # the default template: no {tone}
    ("photo of skin, me1anoma, dark corners", False),  # an artefact's words name no tone
    ("photo of very light skin, me1anoma", False),  # another tone than the recorded one
    ("photo of light skin, me1anoma", True),
])
def test_adherence_grades_only_the_skin_tone_a_prompt_names(
        tmp_path: Path, source: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        prompt: str, named: bool) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    synthetic_set(tmp_path / "syn", [photo(9600 + i) for i in range(3)], tones=["light"] * 3)
    _reprompt(tmp_path / "syn", prompt)
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    tone = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))[
        "sections"]["adherence"]["skin_tone"]
    row = next(r for r in result.verdict if r["check"] == "prompt adherence (skin tone)")
    assert tone["n_prompted"] == (3 if named else 0)
    assert (row["status"] == "skipped") != named
    assert (row["detail"] == "no prompt names the skin tone") != named


def test_a_hairy_row_whose_prompt_lacks_the_hair_tag_is_not_graded() -> None:
    from medsynth_kohya.evaluation.adherence import asked_for

    assert asked_for("photo of skin, me1anoma", True, None).hairy is None
    assert asked_for("photo of skin, me1anoma, hairy", True, None).hairy is True
    assert asked_for("photo of skin, me1anoma", False, None).hairy is False  # no tag: bare


def test_a_repeated_metadata_row_is_counted_once_and_listed(
        tmp_path: Path, source: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    ids = synthetic_set(tmp_path / "syn", [photo(9700 + i) for i in range(3)])
    metadata = tmp_path / "syn" / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines(keepends=True)
    metadata.write_text("".join([*lines, lines[2]]), encoding="utf-8")  # ids[1] again
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_synthetic"] == 3
    assert "of 3 synthetic images" in result.verdict[0]["detail"]
    assert [s["id"] for s in result.skipped] == [ids[1]]
    assert "repeated row" in result.skipped[0]["reason"]


def test_a_broken_png_is_one_warning_without_opencv_log_lines(
        runner: CliRunner, tmp_path: Path, source: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    ids = synthetic_set(tmp_path / "syn", [photo(9800 + i) for i in range(2)])
    image = tmp_path / "syn" / "images" / f"{ids[0]}.png"
    data = image.read_bytes()
    image.write_bytes(data[:33])  # the signature and the header (its size reads), no pixels
    capfd.readouterr()
    code, _, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                             tmp_path / "syn", "--out", tmp_path / "report")
    raw = capfd.readouterr().err  # what OpenCV writes straight to the process's stderr
    assert code == 0 and f"synthetic {ids[0]}: undecodable" in " ".join(stderr.split())
    assert "grfmt" not in raw + stderr and "WARN:" not in raw + stderr


def test_opencv_before_4_11_is_silenced_through_cv2_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts' pin, opencv-python 4.10, has setLogLevel on cv2, not cv2.utils.logging."""
    levels: list[int] = []
    monkeypatch.delattr(cv2.utils, "logging", raising=False)
    monkeypatch.setattr(cv2, "setLogLevel", levels.append, raising=False)
    sets._quiet_opencv.__wrapped__()
    assert levels == [0]
