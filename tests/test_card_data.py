"""The model card states the data the run trained on, as `prepare` recorded it: the ISIC 2020
challenge (its licence and citation), an ISIC Archive export (per-image licences, and where they
are), the user's own data (whose licence the card asks for), or nothing recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medsynth_kohya import files
from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import ARCHIVE, HAM10000, ISIC2020, OWN, origin
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.hub import contents

from .conftest import prepare_set
from .test_ham10000 import _ham, _isic2018
from .test_hub import REPO, make_run
from .test_sources import _isic2019

ISIC_2020_WORDS = ("ISIC 2020 Challenge dataset", "Rotemberg", "rotemberg2021patient")
ARCHIVE_WORDS = ("ISIC Archive", "CC-0, CC-BY", "image by image")


@pytest.mark.parametrize(("kind", "columns", "expected"), [
    (ISIC2020, {}, ISIC2020), (ISIC2020, {"id": "image_name", "site": "location"}, ISIC2020),
    (ARCHIVE, {"sex": "gender"}, ARCHIVE), (ARCHIVE, {"id": "isic_id"}, ARCHIVE),
    (ARCHIVE, {"id": "image_id"}, OWN), (ISIC2020, {"id": "isic_id"}, OWN),
    (HAM10000, {}, HAM10000), (HAM10000, {"id": "image_id"}, HAM10000),
    (HAM10000, {"id": "lesion_id"}, OWN),
    ("another layout", {}, OWN)])
def test_origin_follows_the_id_column(kind: str, columns: dict[str, str], expected: str) -> None:
    """Ids in the layout's own id column are that ISIC data set's; ids read from any other
    column (--column id=…) are the user's own data."""
    assert origin(kind, columns) == expected


def _real(made: SyntheticSet) -> SyntheticSet:
    """`made` with ISIC ids instead of the demo's SYN_ ones, which the card takes for the
    generated demo data."""
    table = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    column = table.columns[0]
    for name in table[column]:
        (made.images / f"{name}.jpg").rename(made.images / f"{name.replace('SYN_', 'ISIC_')}.jpg")
    table[column] = table[column].str.replace("SYN_", "ISIC_")
    table.to_csv(made.metadata, index=False)
    return made


def _isic_ids(root: Path, images: Path) -> None:
    """The challenge download in `root` with ISIC ids (in its CSVs and `images`' names): SYN_
    ones are taken for the demo data."""
    for table in root.glob("*.csv"):
        table.write_text(table.read_text(encoding="utf-8").replace("SYN_", "ISIC_"),
                         encoding="utf-8")
    for image in images.iterdir():
        image.rename(image.with_name(image.name.replace("SYN_", "ISIC_")))


def _card(tmp_path: Path, prepared: Path, license: str = "cc-by-nc-4.0",
          ) -> contents.PushPlan:
    """The push plan of a run whose record says it trained on `prepared`."""
    run = make_run(tmp_path / "run")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["dataset"]["prepared"] = str(prepared.resolve())
    record["dataset"]["manifest_sha256"] = files.sha256(PreparedFolder(prepared).manifest)
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return contents.plan(run, REPO, license=license)


def _section(card: str, title: str) -> str:
    """The text of the card's `## title` section."""
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_an_isic_2020_run_cites_the_challenge(isic2020: SyntheticSet, tmp_path: Path) -> None:
    prepared = prepare_set(_real(isic2020), tmp_path / "prepared")
    planned = _card(tmp_path, prepared, license="mit")
    data = _section(planned.card, "Training data")
    assert all(words in data for words in ISIC_2020_WORDS[:2]) and "CC-BY-NC 4.0" in data
    assert ISIC_2020_WORDS[2] in _section(planned.card, "Citation")
    licence = _section(planned.card, "Licence")
    assert "released under `mit`" in licence and "ISIC 2020 training images are CC-BY-NC" in (
        licence)
    assert not any(words in planned.card for words in ARCHIVE_WORDS)
    assert not any("own data" in w or "state" in w for w in planned.warnings), planned.warnings


def test_an_archive_export_says_its_licences_are_per_image(archive: SyntheticSet,
                                                           tmp_path: Path) -> None:
    prepared = prepare_set(_real(archive), tmp_path / "prepared")
    planned = _card(tmp_path, prepared)
    data = _section(planned.card, "Training data")
    assert "from an [ISIC Archive](https://www.isic-archive.com/) export" in data
    assert "CC-0, CC-BY 4.0 or CC-BY-NC 4.0" in data
    assert "`copyright_license` and `attribution` columns of the export's metadata file " \
           "(`metadata.csv`)" in data
    assert "licensed image by image" in _section(planned.card, "Licence")
    assert "credit each training image" in _section(planned.card, "Citation")
    assert not any(words in planned.card for words in ISIC_2020_WORDS)
    assert "ISIC 2020" not in planned.card


def test_an_archive_export_without_licence_columns_points_to_the_archive(
        archive: SyntheticSet, tmp_path: Path) -> None:
    _real(archive)
    table = pd.read_csv(archive.metadata, dtype=str, keep_default_na=False)
    table.drop(columns=["attribution", "copyright_license"]).to_csv(archive.metadata,
                                                                    index=False)
    prepared = prepare_set(archive, tmp_path / "prepared")
    data = _section(_card(tmp_path, prepared).card, "Training data")
    assert "has no licence column: look each image up by its `isic_id`" in data
    assert "`copyright_license`" not in data


def test_own_data_is_named_and_its_licence_asked_for(isic2020: SyntheticSet,
                                                     tmp_path: Path) -> None:
    """Data in neither ISIC layout (HAM10000's columns, mapped with --column), whatever layout
    prepare read it as."""
    _real(isic2020)
    own = pd.read_csv(isic2020.metadata, dtype=str, keep_default_na=False).rename(columns={
        "image_name": "image_id", "patient_id": "lesion_id", "age_approx": "age",
        "anatom_site_general_challenge": "localization"})
    own.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    columns = {"id": "image_id", "patient_id": "lesion_id", "age": "age",
               "site": "localization"}
    prepared = prepare(None, tmp_path / "prepared", metadata=tmp_path / "HAM10000_metadata.csv",
                       images=isic2020.images, workers=1,
                       options=PrepareOptions(columns=columns)).out
    planned = _card(tmp_path, prepared)
    data = _section(planned.card, "Training data")
    assert "images from the uploader's own data, not an ISIC dataset" in data
    assert "**Licence of the training data: not stated.**" in data
    assert "state here where the training data comes from, its licence" in data
    assert "licence is not stated here" in _section(planned.card, "Licence")
    assert "citation is not recorded" in _section(planned.card, "Citation")
    for words in (*ISIC_2020_WORDS, *ARCHIVE_WORDS, "ISIC 2020", "CC-BY-NC 4.0", "HAM10000"):
        assert words not in planned.card, words
    assert any("your own data" in w for w in planned.warnings), planned.warnings


def test_an_unrecorded_source_is_not_claimed(isic2020: SyntheticSet, tmp_path: Path) -> None:
    prepared = prepare_set(_real(isic2020), tmp_path / "prepared")
    PreparedFolder(prepared).state_file.unlink()
    planned = _card(tmp_path, prepared)
    data = _section(planned.card, "Training data")
    assert "from a source this card does not record" in data
    assert "The source of these images was not recorded" in data
    assert not any(words in planned.card for words in (*ISIC_2020_WORDS, *ARCHIVE_WORDS))
    assert any("cannot say where the training images come from" in w
               for w in planned.warnings), planned.warnings



@pytest.mark.parametrize(("year", "layout", "images", "cited"), [
    (2019, _isic2019, "ISIC_2019_Training_Input", "tschandl2018ham10000"),
    (2018, _isic2018, "ISIC2018_Task3_Training_Input", "codella2019skin")])
def test_a_challenge_run_cites_that_challenge(
        archive: SyntheticSet, tmp_path: Path, year: int,
        layout: Callable[[SyntheticSet, Path], pd.DataFrame], images: str, cited: str) -> None:
    root = tmp_path / f"isic{year}"
    layout(archive, root)
    _isic_ids(root, root / images)
    prepared = prepare(root, tmp_path / "prepared", workers=1, options=PrepareOptions(
        caption_template="photo of skin, {trigger}")).out  # ISIC 2018's CSV has no sex or age
    planned = _card(tmp_path, prepared)
    data = _section(planned.card, "Training data")
    assert f"ISIC {year} Challenge dataset" in data and "CC-BY-NC 4.0" in data
    assert "Tschandl" in data and "Rotemberg" not in data
    assert cited in _section(planned.card, "Citation")
    assert f"licence of the ISIC {year} training images" in _section(planned.card, "Licence")
    assert not any(words in planned.card for words in ARCHIVE_WORDS)


def test_the_card_words_the_captions_as_they_were_made(isic2020: SyntheticSet,
                                                       tmp_path: Path) -> None:
    """The data section names the run's caption template and hair mode, not a fixed text."""
    from medsynth_kohya.data.hair import HairMode

    real = _real(isic2020)
    plain = prepare_set(real, tmp_path / "plain")
    data = _section(_card(tmp_path / "a", plain).card, "Training data")
    assert ("with captions from the template `photo of {sex} skin, {trigger} on {site}, at age "
            "{age}` (built from the patient's sex, age and lesion site), and a `hairy` tag where "
            "hair was detected by `--hair auto`") in " ".join(data.split())
    bare = prepare(real.root, tmp_path / "bare", workers=1, options=PrepareOptions(
        caption_template="{trigger}, {tone}", hair=HairMode.off))
    data = " ".join(_section(_card(tmp_path / "b", bare.out).card, "Training data").split())
    assert ("with captions from the template `{trigger}, {tone}` (built from the skin-tone "
            "category measured on each photo), with no hair tag (`--hair off`)") in data
    assert "sex, age" not in data


def test_the_skin_tone_note_follows_the_measured_spread(isic2020: SyntheticSet,
                                                        tmp_path: Path) -> None:
    """Lighter skin in most images: the card warns that darker skin renders poorly; darker
    skin in most: it does not claim the data is dominated by lighter skin."""
    from medsynth_kohya.data import manifest
    from medsynth_kohya.hub.card import spread_markdown

    prepared = prepare_set(_real(isic2020), tmp_path / "prepared")
    table = manifest.read(PreparedFolder(prepared).manifest)
    for tones, lighter in ((["light"] * len(table), True),
                           (["brown", "dark", "light"] * len(table), False)):
        table["skin_tone"] = tones[:len(table)]
        text = " ".join(spread_markdown(table).split())
        assert ("Most of them show lighter skin" in text) is lighter
        assert ("render darker skin poorly" in text) is lighter
        assert ("Unlike dermoscopy archives such as ISIC" in text) is not lighter
    older = table.drop(columns=["skin_tone"])
    assert "Skin tone was not measured on these images" in spread_markdown(older)


def test_mixed_diagnoses_are_tabled_on_the_card(isic2020: SyntheticSet, tmp_path: Path) -> None:
    """Training images of several diagnoses (a --query that let nevi in) are counted by
    diagnosis in the card's spread; images of one diagnosis get no such table."""
    from medsynth_kohya.data import manifest
    from medsynth_kohya.data.archive import MELANOMA, diagnosis_path
    from medsynth_kohya.hub.card import spread_markdown

    prepared = prepare_set(_real(isic2020), tmp_path / "prepared")
    table = manifest.read(PreparedFolder(prepared).manifest)
    assert "diagnosis (ISIC Archive)" not in spread_markdown(table)
    nevus = diagnosis_path("Nevus")
    assert nevus is not None
    table["diagnosis"] = [nevus if i % 3 == 0 else MELANOMA for i in range(len(table))]
    lines = spread_markdown(table).splitlines()
    assert lines[0] == "| diagnosis (ISIC Archive) | images | share |"
    nevi = (len(table) + 2) // 3
    assert f"| Nevus | {nevi} | {100 * nevi / len(table):.1f} % |" in lines
    melanomas = len(table) - nevi
    assert f"| {MELANOMA.rsplit(':', 1)[-1]} | {melanomas} | {100 * melanomas / len(table):.1f} %"\
        " |" in lines


def test_a_ham10000_run_cites_it_without_claiming_a_licence(archive: SyntheticSet,
                                                            tmp_path: Path) -> None:
    root = tmp_path / "ham"
    _ham(archive, root)
    table = root / "HAM10000_metadata.csv"  # ISIC ids: SYN_ ones are taken for the demo data
    table.write_text(table.read_text(encoding="utf-8").replace("SYN_", "ISIC_"), encoding="utf-8")
    for image in root.glob("HAM10000_images_part_*/*.jpg"):
        image.rename(image.with_name(image.name.replace("SYN_", "ISIC_")))
    planned = _card(tmp_path, prepare(root, tmp_path / "prepared", workers=1).out)
    data = _section(planned.card, "Training data")
    assert "[HAM10000 dataset](https://doi.org/10.7910/DVN/DBW86T)" in data and "Tschandl" in data
    assert "non-commercial" in data and "CC-BY-NC 4.0" not in planned.card
    assert "tschandl2018ham10000" in _section(planned.card, "Citation")
    assert "codella2018skin" not in planned.card
    assert "HAM10000 training images" in _section(planned.card, "Licence")
    for words in (*ISIC_2020_WORDS, *ARCHIVE_WORDS, "own data", "not recorded"):
        assert words not in planned.card, words


def test_the_card_names_the_image_types_it_trained_on(archive: SyntheticSet,
                                                      tmp_path: Path) -> None:
    """The manifest keeps the Archive's image_type; a card of dermoscopic photos says
    dermoscopy, one of another type or of a mix says which, with a table of their counts."""
    from medsynth_kohya.data import manifest

    made = _real(archive)
    frame = pd.read_csv(made.metadata, dtype=str, keep_default_na=False)
    kinds = ["dermoscopic", " clinical: close-up", "TBP tile: close-up", ""]
    cases = {"mixed": [kinds[i % 4] for i in range(len(frame))],
             "clinical": ["clinical: close-up"] * len(frame),
             "dermoscopic": ["dermoscopic"] * len(frame), "none": None}
    for name, types in cases.items():
        table = frame if types is None else frame.assign(image_type=types)
        table.to_csv(made.metadata, index=False)
        prepared = prepare_set(made, tmp_path / name)
        kept = manifest.read(PreparedFolder(prepared).manifest).set_index("id")["image_type"]
        given = table.set_index("isic_id").get("image_type", pd.Series(dtype=str))
        assert kept.fillna("").to_dict() == {i: given.get(i, "").strip() for i in kept.index}
        card = _card(tmp_path / f"run-{name}", prepared).card
        title = card.split("\n# ", 1)[1].split("\n", 1)[0]
        intro = " ".join(card.split(title, 1)[1].split("## ", 1)[0].split())
        spread = _section(card, "Training data")
        counts = kept.fillna("unknown").value_counts()
        if name == "mixed":
            known = [f"`{kind}`" for kind, _ in sorted(
                counts.drop("unknown", errors="ignore").items(), key=lambda k: (-k[1], k[0]))]
            assert len(known) > 1
            assert "synthetic skin-lesion images" in title and "dermoscopy" not in intro
            assert (f"generates a mix of {', '.join(known[:-1])} and {known[-1]} photos of "
                    "melanoma") in intro
            assert "mix image types" in spread
        elif name == "clinical":
            assert "synthetic clinical: close-up images" in title
            assert "generates `clinical: close-up` photos of" in intro
        else:
            assert "synthetic dermoscopy images" in title
            assert "generates dermoscopy photos of" in intro
        assert ("| image type (ISIC Archive) | images | share |" in spread) is (name != "none")
        for kind, count in counts.items() if name != "none" else ():
            assert f"| {kind} | {count} | {100 * count / len(kept):.1f} % |" in spread
