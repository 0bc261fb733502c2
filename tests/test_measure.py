"""Image measurements on labelled synthetic photos and on the seed photos.

The scenes come from `synth.scene` (known skin L*a*b*, hairs and artefacts by construction);
a fixed, small set here, the full per-bucket table in benchmarks/bench_measure.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth_kohya.data.measure import (
    Measurement,
    ita_degrees,
    lightness_yellow,
    measure,
    tone_category,
)
from medsynth_kohya.data.synth import SceneTruth, encode_jpeg, lab_to_bgr, scene

from . import photo_cache
from .conftest import invoke

BUCKETS = ((640, 480), (1024, 768), (2400, 1600))
SCENES = 40


def _f1(pairs: list[tuple[bool, bool]]) -> float:
    hits = sum(t and p for t, p in pairs)
    said, real = sum(p for _, p in pairs), sum(t for t, _ in pairs)
    return 2 * hits / (said + real) if said + real else 1.0


@pytest.fixture(scope="module", params=BUCKETS, ids=lambda size: f"{size[0]}x{size[1]}")
def measured(request: pytest.FixtureRequest, photos: Path
             ) -> list[tuple[SceneTruth, Measurement]]:
    """Scenes of one resolution bucket, written as JPEG and measured from the file."""
    width, height = request.param
    results = []
    for index in range(SCENES):
        path, truth = photo_cache.scene_jpeg(photos, width, height, 7000 + index)
        results.append((truth, measure(path)))
    return results


def test_hair_f1_in_every_bucket(measured: list[tuple[SceneTruth, Measurement]]) -> None:
    pairs = [(truth.hairy, found.hairy) for truth, found in measured]
    assert 0 < sum(t for t, _ in pairs) < len(pairs)
    assert _f1(pairs) >= 0.95, pairs


def test_ita_within_three_degrees_and_tone_right(measured: list[tuple[SceneTruth, Measurement]]
                                                 ) -> None:
    right = 0
    for truth, found in measured:
        assert found.ita is not None
        assert abs(found.ita - truth.ita) <= 3, (truth, found)
        right += found.skin_tone == tone_category(truth.ita)
    assert right >= 0.95 * len(measured)


def test_vignette_found(measured: list[tuple[SceneTruth, Measurement]]) -> None:
    pairs = [(truth.vignette, found.vignette) for truth, found in measured]
    assert _f1(pairs) >= 0.9, pairs


def test_a_round_field_in_wide_dark_surroundings_is_vignette_not_skin(photos: Path) -> None:
    """A contact dermoscope's round field on a wide frame: the scenes seen through a disc whose
    dark surroundings (soft-edged, 3-25 levels) cover 45-70% of the photo keep their ITA."""
    rng = np.random.default_rng(7)
    right = 0
    for seed in range(7000, 7020):
        path, truth = photo_cache.scene_jpeg(photos, 1024, 768, seed)
        radius = round(np.sqrt((1 - rng.uniform(0.45, 0.7)) * 1024 * 768 / np.pi))
        surround = np.ones((768, 1024), np.float32)
        cv2.circle(surround, (512, 384), radius, 0, -1)
        dark = cv2.GaussianBlur(surround, (0, 0), 3)[..., None]
        photo = np.asarray(cv2.imread(str(path))) * (1 - dark) + rng.uniform(3, 25) * dark
        found = measure(photo.round().astype(np.uint8))
        assert found.vignette and found.ita is not None, (seed, truth, found)
        assert abs(found.ita - truth.ita) <= 3, (seed, truth, found)
        right += found.skin_tone == tone_category(truth.ita)
    assert right >= 19


def test_a_lesion_filling_half_the_view_or_more_is_not_skin() -> None:
    """Scenes whose lesion's mean radius is 45-55% of the short side (about half to three
    quarters of the photo): the median of the skin in view is the lesion's, so the lesion is
    judged against the outer skin. About one such scene in twenty is still off by more than 3
    degrees (seeds 7000-7119: 6); before, three in four were."""
    near = right = 0
    for seed in range(7000, 7020):
        image, truth = scene(1024, 768, seed, lesion_size=(0.45, 0.55))
        found = measure(image)
        near += found.ita is not None and abs(found.ita - truth.ita) <= 3
        right += found.skin_tone == tone_category(truth.ita)
    assert near >= 18 and right >= 18, (near, right)


def test_ruler_f1_in_every_bucket(measured: list[tuple[SceneTruth, Measurement]]) -> None:
    pairs = [(truth.ruler, found.ruler) for truth, found in measured]
    assert 0 < sum(t for t, _ in pairs) < len(pairs)
    assert _f1(pairs) >= 0.9, pairs


def test_bubbles_found(measured: list[tuple[SceneTruth, Measurement]]) -> None:
    """Issue 12's target, F1 0.9, which the benchmark (benchmarks/measure.md) meets in every
    bucket since VERSION 9."""
    pairs = [(truth.bubbles, found.bubbles) for truth, found in measured]
    assert sum(t for t, _ in pairs) >= 5
    assert _f1(pairs) >= 0.9, pairs


def test_tone_categories_and_ita() -> None:
    assert [tone_category(a) for a in (60, 55.5, 41.5, 30, 11, -29, -31)] == [
        "very light", "very light", "light", "intermediate", "tan", "brown", "dark"]
    assert tone_category(55) == "light" and tone_category(-30) == "dark"
    assert ita_degrees(50, 20) == 0
    assert ita_degrees(70, 20) == pytest.approx(45)
    assert ita_degrees(70, -3) == pytest.approx(90, abs=1e-3)


def test_path_and_array_give_the_same_measurement(tmp_path: Path) -> None:
    image, _ = scene(1600, 1200, 11)
    path = tmp_path / "a.jpg"
    path.write_bytes(encode_jpeg(image))
    decoded = cv2.imread(str(path))
    assert decoded is not None
    from_path, from_array = measure(path), measure(decoded)
    assert from_path.hairy == from_array.hairy and from_path.skin_tone == from_array.skin_tone
    assert from_path.ita == pytest.approx(from_array.ita, abs=1)
    gray = measure(cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY))
    assert gray.hairy == from_array.hairy


def test_a_measurement_is_plain_python_values() -> None:
    """A hairy photo's Measurement holds Python floats, bools and strings (a NumPy bool once
    slipped through as `hairy`), so a caller can write it as JSON."""
    import json
    from dataclasses import asdict

    from medsynth_kohya.data.synth import lesion_image

    found = asdict(measure(lesion_image(1024, 768, hairy=True, seed=1)))
    assert found["hairy"] is True
    assert all(type(value) in (float, bool, str) for value in found.values())
    assert json.loads(json.dumps(found)) == found


def test_a_file_that_is_no_image_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot be decoded"):
        measure(path)


def test_all_dark_photo_has_no_ita() -> None:
    found = measure(np.zeros((480, 640, 3), np.uint8))
    assert found.ita is None and found.skin_tone is None and not found.hairy


@pytest.mark.parametrize("bgr", [(150, 150, 150), (200, 160, 170), (168, 170, 172)])
def test_a_grey_or_blue_cast_photo_has_no_ita(bgr: tuple[int, int, int]) -> None:
    """Grey (b* 0), bluish-magenta (b* -19) and barely yellow (b* 1.3) skin: no ITA, where the
    formula would say ~90 degrees, "very light", whatever the skin."""
    photo = np.full((480, 640, 3), bgr, np.uint8)
    cv2.circle(photo, (320, 240), 60, (40, 40, 60), -1)
    found = measure(photo)
    assert found.ita is None and found.skin_tone is None


def test_skin_just_yellow_enough_keeps_its_ita() -> None:
    photo = np.full((480, 640, 3), (164, 170, 174), np.uint8)  # L* 69.7, b* 3.6: ITA 79.6
    cv2.circle(photo, (320, 240), 60, (40, 40, 60), -1)
    found = measure(photo)
    assert found.ita == pytest.approx(79.6, abs=0.5) and found.skin_tone == "very light"


@pytest.mark.parametrize(("bgr", "lightness", "yellow"), [
    ((255, 255, 255), 100.0, 0.0), ((0, 0, 255), 53.24, 67.20), ((0, 255, 0), 87.73, 83.18),
    ((255, 0, 0), 32.30, -107.86), ((119, 119, 119), 50.03, 0.0)])
def test_lightness_and_yellow_of_reference_colours(bgr: tuple[int, int, int], lightness: float,
                                                   yellow: float) -> None:
    """sRGB white, red, green, blue and a mid grey against their published CIE L*, b* (D65)."""
    found = lightness_yellow(np.array([bgr], np.uint8))
    assert (found[0][0], found[1][0]) == (pytest.approx(lightness, abs=0.02),
                                          pytest.approx(yellow, abs=0.02))


@pytest.mark.parametrize("lab", [(75, 8, 12), (58, 12, 20), (52, 11, 18), (47, 14, 24),
                                 (38, 16, 26), (30, 15, 22)])
def test_ita_of_evenly_lit_skin_is_within_a_fifth_of_a_degree(lab: tuple[int, int, int]) -> None:
    """Skin of a known L*a*b* with 8-bit noise: ITA without the half-degree error OpenCV's
    tabulated Lab conversion gave on some skins (52, 11, 18 read 0.5 degrees low)."""
    rng = np.random.default_rng(3)
    skin = lab_to_bgr(lab)
    photo = np.clip(np.rint(skin + rng.normal(0, 3, (480, 640, 3))), 0, 255).astype(np.uint8)
    cv2.circle(photo, (320, 240), 60, (40, 40, 60), -1)
    found = measure(photo).ita
    assert found == pytest.approx(ita_degrees(lab[0], lab[2]), abs=0.2)


def test_seed_photos(seed_images: Path) -> None:
    """The two hairy seed photos are hairy, ISIC_4810142's ruler marks are a ruler, not hair,
    two photos without gel bubbles have none, and each photo's tone is printed: none for
    ISIC_4810142, whose skin is bluish-magenta (median b* about -8), so its ITA would be a
    meaningless 90."""
    found = {photo.stem: measure(photo) for photo in sorted(seed_images.glob("*.jpg"))}
    for name, result in found.items():
        print(f"{name}: ITA {result.ita} -> {result.skin_tone}; hair {result.hair_score}; "
              f"vignette {result.vignette}, ruler {result.ruler}, bubbles {result.bubbles}")
        assert (result.skin_tone is None) == (name == "ISIC_4810142"), name
    assert found["ISIC_4525317"].hairy and found["ISIC_4649440"].hairy
    assert not found["ISIC_4810142"].hairy and found["ISIC_4810142"].hair_score == 0
    assert found["ISIC_4810142"].ruler  # millimetre marks 7 % of the width apart, no baseline
    # whitish patches of skin are as bright as a bubble, but neither round nor rimmed
    assert not found["ISIC_4525317"].bubbles and not found["ISIC_4676270"].bubbles


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory, photos: Path
           ) -> tuple[Path, dict[str, SceneTruth]]:
    """An ISIC 2020-style folder of six labelled scenes at two sizes."""
    import pandas as pd

    root = tmp_path_factory.mktemp("scenes") / "isic"
    (root / "train").mkdir(parents=True)
    truths = {}
    for index in range(6):
        identifier = f"SYN_9{index:05d}"
        made, truth = photo_cache.scene_jpeg(
            photos, *((800, 600) if index % 2 else (1500, 1000)), 7100 + index)
        shutil.copyfile(made, root / "train" / f"{identifier}.jpg")
        truths[identifier] = truth
    pd.DataFrame({"image_name": list(truths), "patient_id": [f"P{i}" for i in range(6)],
                  "sex": "female", "age_approx": 50, "anatom_site_general_challenge": "torso",
                  "target": 1}).to_csv(root / "train.csv", index=False)
    return root, truths


def test_prepare_records_tone_and_artefacts(scenes: tuple[Path, dict[str, SceneTruth]],
                                            tmp_path: Path) -> None:
    from medsynth_kohya.data import manifest
    from medsynth_kohya.data.prepare import PrepareOptions, prepare, summary

    root, truths = scenes
    template = "photo of {tone} {sex} skin, {trigger} on {site}, {artefacts}"
    result = prepare(root, tmp_path / "out",
                     options=PrepareOptions(caption_template=template), workers=1)
    table = manifest.read(tmp_path / "out" / "manifest.csv").set_index("id")
    for identifier, truth in truths.items():
        row = table.loc[identifier]
        assert abs(float(row["ita"]) - truth.ita) <= 3
        assert bool(row["vignette"]) == truth.vignette
        caption = str(row["caption"])
        assert caption.startswith(f"photo of {row['skin_tone']} female skin, me1anoma on torso")
        assert ("dark corners" in caption) == truth.vignette
        assert ("ruler marks" in caption) == bool(row["ruler"])
        assert ("gel bubbles" in caption) == bool(row["bubbles"])
        assert ", ," not in caption and not caption.endswith(",")
    rows = dict(summary(result))
    tone_row = rows["skin tone (ITA)"]
    for name in ("very light", "light", "intermediate", "tan", "brown", "dark"):
        assert f"{name} " in tone_row
    assert "median ITA" in tone_row
    assert rows["artefacts"].startswith("vignette ")


def test_default_captions_leave_tone_and_artefacts_out(
        scenes: tuple[Path, dict[str, SceneTruth]], tmp_path: Path) -> None:
    from medsynth_kohya.data import manifest
    from medsynth_kohya.data.prepare import prepare

    root, _ = scenes
    prepare(root, tmp_path / "out", workers=1)
    table = manifest.read(tmp_path / "out" / "manifest.csv")
    assert table["skin_tone"].notna().all()
    for caption in table["caption"]:
        assert not any(word in caption for word in ("light", "tan", "brown", "corners",
                                                    "ruler", "bubbles"))


def test_card_data_table_shows_the_skin_tones() -> None:
    import pandas as pd

    from medsynth_kohya.data import manifest
    from medsynth_kohya.hub.card import spread_markdown

    tones = ["very light", "very light", "light", "light", "light", "tan", None]
    frame = pd.DataFrame({
        "id": [f"ISIC_{i}" for i in range(7)], "source": "x", "patient_id": "p",
        "sex": "male", "age": 50, "site": "torso", "hairy": False, "hair_score": 0.0,
        "ita": [60, 58, 45, 44, 42, 15, None], "skin_tone": tones,
        "vignette": [True] * 3 + [False] * 4, "ruler": [False] * 6 + [True],
        "bubbles": False, "caption": "c", "width": 1, "height": 1, "split": "train"})
    text = spread_markdown(manifest.conform(frame))
    assert "| skin tone (ITA) | images | share |" in text
    lines = text.splitlines()
    for name, count in (("very light", 2), ("light", 3), ("intermediate", 0), ("tan", 1),
                        ("brown", 0), ("dark", 0), ("unmeasured", 1)):
        assert f"| {name} | {count} | {100 * count / 7:.1f} % |" in lines
    assert ("5 of the 6 measured images (83.3 %) show very light or light skin (ITA above 41 "
            "degrees, measured on the healthy skin of each photo); the other 1 of 7 images "
            "could not be measured.") in " ".join(text.split())
    assert ("Artefacts: 3 with dark vignette corners, 1 with ruler or scale marks, "
            "0 with gel bubbles.") in text
    older = manifest.conform(frame.drop(columns=["ita", "skin_tone", "vignette", "ruler",
                                                 "bubbles"]))
    assert "skin tone" not in spread_markdown(older)


def _with_target(root: Path, tmp_path: Path, negative: str) -> Path:
    """A copy of the scenes folder in which `negative` is no melanoma (target 0)."""
    import shutil

    import pandas as pd

    copy = tmp_path / "isic"
    shutil.copytree(root, copy)
    frame = pd.read_csv(copy / "train.csv")
    frame.loc[frame["image_name"] == negative, "target"] = 0
    frame.to_csv(copy / "train.csv", index=False)
    return copy


def test_query_drops_images_by_their_measurements_through_the_cli(
        scenes: tuple[Path, dict[str, SceneTruth]], tmp_path: Path, runner: CliRunner) -> None:
    """`--query` names measured columns: metadata terms choose what is scanned, the measured
    terms drop images after; a query on measurements alone narrows the melanomas."""
    from medsynth_kohya.data import manifest

    root, truths = scenes
    every = manifest.read(_prepared(runner, root, tmp_path / "all")).set_index("id")
    negative = sorted(truths)[0]
    source = _with_target(root, tmp_path, negative)
    median = float(every["ita"].median())
    ruler = every["ruler"].astype(bool)
    cases = {"not vignette": ~every["vignette"].astype(bool),
             f"ita > {median} and not ruler": (every["ita"] > median) & ~ruler,
             f"target == 0 or ita > {median}": (every["ita"] > median) | (every.index == negative)}
    for index, (expression, expected) in enumerate(cases.items()):
        out = tmp_path / f"q{index}"
        code, stdout, stderr = invoke(runner, "prepare", source, "--out", out, "--workers", 1,
                                      "--query", expression)
        assert code == 0, stderr
        kept = set(manifest.read(out / "manifest.csv")["id"])
        wanted = set(expected[expected].index)
        if not expression.startswith("target"):  # measurements alone narrow the melanomas
            wanted.discard(negative)
            assert f"left out by --query on measurements │ {len(truths) - 1 - len(kept)}" in stdout
        assert kept == wanted, expression
    assert {truth.vignette for truth in truths.values()} == {True, False}


def test_query_that_keeps_no_measured_image_says_why(
        scenes: tuple[Path, dict[str, SceneTruth]], tmp_path: Path, runner: CliRunner) -> None:
    root, _ = scenes
    code, _, stderr = invoke(runner, "prepare", root, "--out", tmp_path / "out", "--workers", 1,
                             "--query", "ita > 1000")
    assert code != 0 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert "--query 'ita > 1000' left out all 6 measured images" in errors[0]


def _prepared(runner: CliRunner, root: Path, out: Path) -> Path:
    code, _, stderr = invoke(runner, "prepare", root, "--out", out, "--workers", 1)
    assert code == 0, stderr
    return out / "manifest.csv"


def _skin(lightness: float, size: tuple[int, int] = (1024, 768), seed: int = 3) -> np.ndarray:
    """Flat, slightly grainy skin of CIE L* `lightness` (a* 12, b* 16) with a dark lesion."""
    from medsynth_kohya.data.synth import lab_to_bgr

    rng = np.random.default_rng(seed)
    width, height = size
    canvas = lab_to_bgr([lightness, 12, 16]) + rng.normal(0, 2.5, (height, width, 3))
    cv2.circle(canvas, (width // 2, height // 2), 130,
               lab_to_bgr([max(22.0, lightness - 25), 18, 24]).tolist(), -1, cv2.LINE_AA)
    return canvas.astype(np.float32)


def _photo(tmp_path: Path, canvas: np.ndarray, size: tuple[int, int]) -> Path:
    """`canvas` as a JPEG of `size`, the way a camera of that resolution would save it."""
    image = cv2.resize(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), size,
                       interpolation=cv2.INTER_LINEAR)
    path = tmp_path / f"{size[0]}.jpg"
    path.write_bytes(encode_jpeg(image))
    return path


@pytest.mark.parametrize("size", [(640, 480), (3000, 2250)])
def test_ruler_graduations_without_a_baseline_are_a_ruler_not_hair(tmp_path: Path,
                                                                  size: tuple[int, int]) -> None:
    """Twelve 2 px ticks 13 px long, 16 px apart (at 1024 px): thick for their length, yet
    a ruler; the same strokes at random angles and places are neither ruler nor hair."""
    rng = np.random.default_rng(5)
    ruler, scattered = _skin(60), _skin(60)
    for index in range(12):
        cv2.line(ruler, (150 + 16 * index, 120), (150 + 16 * index, 133), (40, 40, 40), 2,
                 cv2.LINE_AA)
        angle = rng.uniform(0, np.pi)
        start = rng.uniform((80, 80), (944, 200))
        end = start + 13 * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(scattered, tuple(start.astype(int)), tuple(end.astype(int)), (40, 40, 40), 2,
                 cv2.LINE_AA)
    found = measure(_photo(tmp_path, ruler, size))
    assert found.ruler and not found.hairy
    other = measure(_photo(tmp_path, scattered, size))
    assert not other.ruler and not other.hairy



def _hairs(canvas: np.ndarray, strands: list[tuple[tuple[int, int], tuple[int, int]]]) -> None:
    """Dark 2 px hairs, gently bent, from each start to each end (at 1024 px)."""
    for start, end in strands:
        a, b = np.array(start, float), np.array(end, float)
        bend = (a + b) / 2 + np.array([-(b - a)[1], (b - a)[0]]) * 0.08
        t = np.linspace(0, 1, 60)[:, None]
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * bend + t**2 * b
        cv2.polylines(canvas, [np.round(curve * 16).astype(np.int32)], False, (30, 28, 32), 2,
                      cv2.LINE_AA, 4)


@pytest.mark.parametrize("size", [(640, 480), (4000, 3000)])
def test_a_scale_bar_crossed_by_hairs_is_a_ruler(tmp_path: Path, size: tuple[int, int]) -> None:
    """A 160 px scale bar with end caps and its "1 mm" label, crossed by two hairs (one near
    an end cap) is a ruler; the same bar without caps, or the hairs alone, are not."""
    strands = [((150, 330), (300, 640)), ((420, 560), (90, 720))]
    found = {}
    for name, caps in (("bar", True), ("uncapped", False), ("hairs", None)):
        canvas = _skin(50)
        if caps is not None:
            cv2.line(canvas, (120, 600), (280, 600), (35, 35, 35), 3, cv2.LINE_AA)
            cv2.putText(canvas, "1 mm", (170, 590), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (35, 35, 35), 1, cv2.LINE_AA)
        if caps:
            for x in (120, 280):
                cv2.line(canvas, (x, 592), (x, 608), (35, 35, 35), 2, cv2.LINE_AA)
        _hairs(canvas, strands)
        found[name] = measure(_photo(tmp_path, canvas, size)).ruler
    assert found == {"bar": True, "uncapped": False, "hairs": False}


@pytest.mark.parametrize(("size", "seed"), [((1872, 1248), 120139), ((1872, 1248), 120149),
                                          ((640, 480), 90006), ((1872, 1248), 120167),
                                          ((4000, 3000), 90207)])
def test_a_scale_bar_by_a_thin_line_or_the_lesion_is_a_ruler(photos: Path, size: tuple[int, int],
                                                             seed: int) -> None:
    """Scale bars VERSION 8 missed: with something thinner just past an end cap (a fine hair
    running on nearly in line, a bubble's rim), taken for the bar running on as a hair stretch
    does past a crossing hair; and with an end, or the bar's last stretch, in the lesion's
    margin, which is not searched. What lies ahead must be half as dark as the bar
    (`hair.RUN_ON`); in the margin the bar runs on as far as it is that dark, and a cap is
    whatever is a quarter as dark (`hair.CAP_FAINT`)."""
    path, truth = photo_cache.scene_jpeg(photos, *size, seed)
    assert truth.ruler and measure(path).ruler


@pytest.mark.parametrize("size", [(640, 480), (4000, 3000)])
def test_graduations_on_a_baseline_crossed_by_hairs_are_a_ruler(tmp_path: Path,
                                                                size: tuple[int, int]) -> None:
    """Fourteen ticks 18 px apart on a baseline, long every fifth and numbered, with three
    hairs crossing baseline and ticks: the strokes and hairs make one component, yet a ruler;
    the hairs alone are not."""
    strands = [((170, 40), (260, 330)), ((330, 30), (300, 300)), ((60, 200), (560, 150))]
    found = {}
    for name, ruler in (("ruler", True), ("hairs", False)):
        canvas = _skin(60)
        if ruler:
            origin = np.array([120.0, 150.0])
            along = np.array([np.cos(0.15), np.sin(0.15)])
            across = np.array([-along[1], along[0]])
            for index in range(14):
                base = origin + along * index * 18
                tip = base - across * (26 if index % 5 == 0 else 13)
                cv2.line(canvas, tuple(base.astype(int)), tuple(tip.astype(int)), (40, 40, 40), 1,
                         cv2.LINE_AA)
                if index % 5 == 0:
                    cv2.putText(canvas, str(index // 5), tuple((tip - across * 14).astype(int)),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
            end = origin + along * 13 * 18
            cv2.line(canvas, tuple(origin.astype(int)), tuple(end.astype(int)), (40, 40, 40), 1,
                     cv2.LINE_AA)
        _hairs(canvas, strands)
        found[name] = measure(_photo(tmp_path, canvas, size)).ruler
    assert found == {"ruler": True, "hairs": False}


def _bubble(canvas: np.ndarray, centre: tuple[int, int], radius: int, *, rim: bool,
            gap: int = 0) -> None:
    """A gel bubble: a disc 18 levels brighter, a specular highlight, and a dark rim (open over
    `gap` degrees) or none."""
    disc = np.zeros(canvas.shape[:2], np.uint8)
    cv2.circle(disc, centre, radius, 255, -1, cv2.LINE_AA)
    canvas += (disc.astype(np.float32) / 255 * 18)[..., None]
    if rim:
        cv2.ellipse(canvas, centre, (radius, radius), 0, 0, 360 - gap, (60, 60, 70), 2,
                    cv2.LINE_AA)
    cv2.ellipse(canvas, centre, (radius * 2 // 3,) * 2, 0, 200, 250, (250, 250, 250), 2,
                cv2.LINE_AA)


def test_bubbles_over_the_lesion_and_touching_bubbles_are_found(tmp_path: Path) -> None:
    """A bubble over the (darker than skin) lesion is found by its rim and highlight; two
    touching bubbles (one patch, less round than one bubble) are found too."""
    over = _skin(55)
    _bubble(over, (512, 384), 30, rim=True)
    assert measure(_photo(tmp_path, over, (1600, 1200))).bubbles
    touching = _skin(55)
    _bubble(touching, (220, 200), 34, rim=True)
    _bubble(touching, (272, 216), 26, rim=True)
    assert measure(_photo(tmp_path, touching, (1600, 1200))).bubbles
    plain = _skin(55)
    assert not measure(_photo(tmp_path, plain, (1600, 1200))).bubbles


@pytest.mark.parametrize("size", [(640, 480), (1600, 1200), (4000, 3000)])
def test_a_bubble_too_large_to_count_without_a_rim_is_found_by_a_rim_with_a_gap(
        tmp_path: Path, size: tuple[int, int]) -> None:
    """A bubble 92 px across (at 1024 px) is larger than bright round skin may be, so only a
    dark rim all round makes it one; a rim open over a sixth of the circle (a hair across it,
    glare) still counts, half a rim does not."""
    found = {}
    for gap in (0, 60, 180):
        canvas = _skin(55)
        _bubble(canvas, (300, 300), 46, rim=True, gap=gap)
        found[gap] = measure(_photo(tmp_path, canvas, size)).bubbles
    assert found == {0: True, 60: True, 180: False}


def test_light_hairs_on_very_light_skin_are_no_bubbles(tmp_path: Path) -> None:
    """Light hairs glare on very light skin, and where they cross make roundish bright
    patches, but have no dark rim: no bubbles (the lesion is left out: it has a dark rim)."""
    from medsynth_kohya.data.synth import _draw_hairs, lab_to_bgr

    rng = np.random.default_rng(8)
    canvas = (lab_to_bgr([80, 12, 16]) + rng.normal(0, 2.5, (768, 1024, 3))).astype(np.float32)
    _draw_hairs(canvas, rng, 25, 2, lab_to_bgr([97, 6, 20]), (np.array([512.0, 384.0]), 100.0),
                crossing=False)
    found = measure(_photo(tmp_path, canvas, (1024, 768)))
    assert found.hairy and not found.bubbles


def test_hairs_drawn_over_a_photo_seldom_make_bubbles(photos: Path) -> None:
    """The demo's photos have no bubbles, but bright skin (or a glare pixel) between hairs and
    the vignetting made VERSION 8 call 10 of these 24 hairy photos and 3 bare ones bubbly; a
    highlight must now outshine its patch (or ringed circle): at most 2 hairy ones, no bare one."""
    def bubbly(hairy: bool) -> list[int]:
        return [seed for seed in range(24) if measure(photo_cache.lesion_image(
            photos, 1024, 768, hairy=hairy, seed=seed)).bubbles]

    assert len(bubbly(True)) <= 2 and bubbly(False) == []


@pytest.mark.parametrize(("size", "seed", "bubbles"), [
    ((640, 480), 5003, True), ((640, 480), 90059, True), ((640, 480), 90040, True),
    ((1024, 768), 5066, True), ((1024, 768), 120070, True), ((1024, 768), 90084, True),
    ((640, 480), 5005, False), ((1024, 768), 90114, False)])
def test_bubbles_found_by_their_highlight_and_rim(photos: Path, size: tuple[int, int], seed: int,
                                                  bubbles: bool) -> None:
    """Scenes whose bubbles VERSION 8 missed (crossed by a pen stroke or hairs, in clusters that
    make one large patch, on very light skin) are found from the highlight's ringed circle
    (`hair._ringed`); light hairs glaring across the lesion's network cells (each a dark ring
    round a bright spot) are not bubbles."""
    path, truth = photo_cache.scene_jpeg(photos, *size, seed)
    assert truth.bubbles == bubbles
    assert measure(path).bubbles == bubbles


@pytest.mark.parametrize(("size", "seed"), [((1872, 1248), 120127), ((1872, 1248), 120149),
                                          ((1872, 1248), 120154), ((1024, 768), 5080)])
def test_rims_and_scale_marks_joined_into_a_long_line_are_no_hair(photos: Path,
                                                                  size: tuple[int, int],
                                                                  seed: int) -> None:
    """Hairless scenes VERSION 10 called hairy: two touching bubbles whose faint rims are
    broken (so no hole is filled), a scale bar and a ruler's baseline touching a bubble's rim.
    Each joined line was long, thin and not straight: a hair. The bar and baseline
    (`hair._scale_marks`) and the circles round highlights (`hair._ringed`) are now erased
    before hairs are measured."""
    path, truth = photo_cache.scene_jpeg(photos, *size, seed)
    assert not truth.hairy and not measure(path).hairy


@pytest.mark.parametrize("size", [(640, 480), (4000, 3000)])
def test_a_scale_bar_touching_a_bubble_is_no_hair_but_a_hair_across_it_is(
        tmp_path: Path, size: tuple[int, int]) -> None:
    """A capped scale bar whose end touches a bubble's rim is a ruler and no hair; erasing the
    bar does not erase the hairs that cross it."""
    found = {}
    for name, strands in (("alone", []), ("crossed", [((200, 460), (260, 740))])):
        canvas = _skin(75)
        cv2.line(canvas, (120, 600), (240, 600), (35, 35, 35), 2, cv2.LINE_AA)
        for x in (120, 240):
            cv2.line(canvas, (x, 592), (x, 608), (35, 35, 35), 2, cv2.LINE_AA)
        _bubble(canvas, (268, 600), 28, rim=True, gap=40)
        _hairs(canvas, strands)
        found[name] = measure(_photo(tmp_path, canvas, size))
    assert found["alone"].ruler and not found["alone"].hairy
    assert found["crossed"].ruler and found["crossed"].hairy
