"""The model card push uploads, rendered piece by piece (hub/card.py) from records and manifests
the tests make: the data's tables in order, what the card says of each data source's licence
and citation, the bias wording, the training facts, samples, metadata and the filled values."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medsynth_kohya import __version__, files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import ARCHIVE, HAM10000, ISIC2019, ISIC2020, OWN
from medsynth_kohya.hub.card import (
    ARCHIVE_SKIN,
    DEMO,
    Sample,
    TrainingData,
    filled,
    image_types,
    metadata,
    render_card,
    spread_markdown,
    spread_section,
    training_data,
)
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import DatasetRecord, GpuRecord, RunRecord, VersionsRecord

REPO = "alice/melanoma-lora"
PROMPTS: dict[str, Any] = {"prompts": ["", 'mlnm on "torso", `x` $HOME\\ok'], "width": 832,
                           "height": 1216, "steps": 28, "scale": 6.5}
TERMS_LIMIT = "their terms may limit what you can do with weights derived from them."
SDXL = (" Using the LoRA also means using [SDXL base 1.0](https://huggingface.co/"
        f"{BASE_MODEL}), whose own licence (CreativeML Open RAIL++-M) applies as well, "
        "including its use restrictions.")


def _rows(count: int, **columns: Sequence[Any]) -> pd.DataFrame:
    """`count` conformed manifest rows of the training split; `columns` replace the defaults."""
    frame = pd.DataFrame({
        "id": [f"ISIC_{i:07d}" for i in range(count)], "source": "x.jpg", "patient_id": "p",
        "sex": "male", "age": 50, "site": "torso", "hairy": False, "hair_score": 0.0,
        "caption": "c", "width": 1, "height": 1, "split": "train", **columns})
    return manifest.conform(frame)


def _card(record: RunRecord | None = None, *, data: TrainingData | None = None,
          license: str = "cc-by-nc-4.0", samples: Sequence[Sample] = (),
          grid: str | None = None, types: Counter[str] | None = None,
          prompts: Mapping[str, Any] = PROMPTS,
          uploads: Sequence[tuple[str, int]] = (("melanoma.safetensors", 1024),)) -> str:
    record = record or RunRecord(config={"output_name": "melanoma",
                                         "pretrained_model_name_or_path": BASE_MODEL})
    return render_card(repo_id=REPO, record=record, trigger="mlnm",
                       weight_name="melanoma.safetensors", license=license, prompts=prompts,
                       samples=samples, sample_paths={s.path: f"samples/{s.path.name}"
                                                      for s in samples},
                       grid=grid, spread="SPREAD", data=data or TrainingData(ISIC2020),
                       files=uploads, types=types)


def _section(card: str, title: str) -> str:
    """The text of the card's `## title` section, stripped."""
    return card.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


def _table(text: str, header: str) -> list[str]:
    """The rows of the markdown table under `header` (its first line)."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_spread_tables_count_every_value_commonest_first_and_unknown_last() -> None:
    rows = _rows(7, sex=["female", "male", "male", None, " ", "female", "male"],
                 age=[29, 30, 39, 79, 80, None, 45],
                 site=["torso", "torso", "head/neck", "head/neck", "palms/soles",
                       "lower extremity", None],
                 hairy=[True, False, True, False, False, False, False])
    text = spread_markdown(rows)
    assert _table(text, "| sex | images | share |") == [
        "| male | 3 | 42.9 % |", "| female | 2 | 28.6 % |", "| unknown | 2 | 28.6 % |"]
    assert _table(text, "| age | images | share |") == [
        "| under 30 | 1 | 14.3 % |", "| 30-39 | 2 | 28.6 % |", "| 40-49 | 1 | 14.3 % |",
        "| 70-79 | 1 | 14.3 % |", "| 80 and over | 1 | 14.3 % |", "| unknown | 1 | 14.3 % |"]
    assert _table(text, "| site | images | share |") == [
        "| head/neck | 2 | 28.6 % |", "| torso | 2 | 28.6 % |",
        "| lower extremity | 1 | 14.3 % |", "| palms/soles | 1 | 14.3 % |",
        "| unknown | 1 | 14.3 % |"]
    assert "|---|---:|---:|" in text
    assert "\n\n2 of 7 images (28.6 %) are tagged `hairy`.\n\n" in text
    assert "diagnosis" not in text and "image type" not in text
    assert text.index("| sex |") < text.index("| age |") < text.index("| site |") < text.index(
        "tagged `hairy`") < text.index("Fitzpatrick") < text.index("Skin tone")
    assert "unknown" not in spread_markdown(_rows(2, age=[10, 95]))
    assert _table(spread_markdown(_rows(3, age=[81, 18, 55])), "| age | images | share |") == [
        "| under 30 | 1 | 33.3 % |", "| 50-59 | 1 | 33.3 % |", "| 80 and over | 1 | 33.3 % |"]
    unknowns = spread_markdown(_rows(4, sex=[None, None, None, "female"],
                                     site=[None, "", "torso", None]))
    assert _table(unknowns, "| sex | images | share |") == ["| female | 1 | 25.0 % |",
                                                           "| unknown | 3 | 75.0 % |"]
    assert _table(unknowns, "| site | images | share |") == ["| torso | 1 | 25.0 % |",
                                                            "| unknown | 3 | 75.0 % |"]
    assert "0 of 1 image (0.0 %) are tagged `hairy`." in spread_markdown(_rows(1))
    assert spread_markdown(_rows(0)) == "The manifest holds no training rows."


def test_diagnoses_are_tabled_only_when_there_are_several() -> None:
    rows = _rows(7, diagnosis=["benign:melanocytic:nevus", "malignant:melanoma", "melanoma",
                               "nevus", "nevus", None, "benign:seborrheic keratosis"])
    text = spread_markdown(rows)
    assert text.startswith("| diagnosis (ISIC Archive) | images | share |\n|---|---:|---:|\n")
    assert _table(text, "| diagnosis (ISIC Archive) | images | share |") == [
        "| nevus | 3 | 42.9 % |", "| melanoma | 2 | 28.6 % |",
        "| seborrheic keratosis | 1 | 14.3 % |", "| unknown | 1 | 14.3 % |"]
    alike = _rows(3, diagnosis=["malignant:melanoma", "melanoma", None])
    assert "diagnosis" not in spread_markdown(alike)
    unknown = spread_markdown(_rows(4, diagnosis=[None, None, "nevus", "melanoma"]))
    assert _table(unknown, "| diagnosis (ISIC Archive) | images | share |") == [
        "| melanoma | 1 | 25.0 % |", "| nevus | 1 | 25.0 % |", "| unknown | 2 | 50.0 % |"]


def test_image_types_are_tabled_and_a_mix_is_said_to_be_one() -> None:
    assert image_types(_rows(2)) == Counter()
    one = _rows(3, image_type=["dermoscopic", "dermoscopic", None])
    assert image_types(one) == Counter({"dermoscopic": 2, "unknown": 1})
    text = spread_markdown(one)
    assert _table(text, "| image type (ISIC Archive) | images | share |") == [
        "| dermoscopic | 2 | 66.7 % |", "| unknown | 1 | 33.3 % |"]
    assert "mix" not in text
    mixed = _rows(4, image_type=["clinical: overview", "dermoscopic", "dermoscopic",
                                 "clinical: close-up"],
                  diagnosis=["nevus", "melanoma", "melanoma", "melanoma"])
    text = spread_markdown(mixed)
    assert _table(text, "| image type (ISIC Archive) | images | share |") == [
        "| dermoscopic | 2 | 50.0 % |", "| clinical: close-up | 1 | 25.0 % |",
        "| clinical: overview | 1 | 25.0 % |"]
    assert ("\n\nThe training images mix image types: the LoRA learned their looks as one, so "
            "its images may be any of them, or a blend.\n\n") in text
    assert text.index("diagnosis") < text.index("image type") < text.index("| sex |")


def test_recorded_fitzpatrick_types_are_tabled_on_their_scale() -> None:
    rows = _rows(8, fitzpatrick_skin_type=["III", "I", "VI", None, "VII", "I", "V", "IV"])
    assert _table(spread_markdown(rows), "| Fitzpatrick skin type (recorded) | images | share |"
                  ) == ["| I | 2 | 25.0 % |", "| III | 1 | 12.5 % |", "| IV | 1 | 12.5 % |",
                        "| V | 1 | 12.5 % |", "| VI | 1 | 12.5 % |", "| VII | 1 | 12.5 % |",
                        "| unknown | 1 | 12.5 % |"]
    for unrecorded in (_rows(2), _rows(2, fitzpatrick_skin_type=[None, " "])):
        assert ("\n\nThe metadata records no Fitzpatrick skin type for these images."
                in spread_markdown(unrecorded))


def test_the_skin_tone_note_follows_the_measured_majority() -> None:
    unmeasured = spread_markdown(_rows(2))
    assert unmeasured.endswith(f"Skin tone was not measured on these images. {ARCHIVE_SKIN}")
    assert ARCHIVE_SKIN == (
        "Dermoscopy archives such as ISIC are dominated by lighter skin, so expect this model "
        "to render darker skin poorly and to follow its training data rather than any patient "
        "population.")

    rows = _rows(5, skin_tone=["very light", "light", "tan", None, None],
                 vignette=[True, False, None, True, False], ruler=[False] * 5,
                 bubbles=[True, True, True, False, False])
    text = spread_markdown(rows)
    assert _table(text, "| skin tone (ITA) | images | share |") == [
        "| very light | 1 | 20.0 % |", "| light | 1 | 20.0 % |", "| intermediate | 0 | 0.0 % |",
        "| tan | 1 | 20.0 % |", "| brown | 0 | 0.0 % |", "| dark | 0 | 0.0 % |",
        "| unmeasured | 2 | 40.0 % |"]
    assert ("\n\n2 of the 3 measured images (66.7 %) show very light or light skin (ITA above "
            "41 degrees, measured on the healthy skin of each photo); the other 2 of 5 images "
            "could not be measured. Most of them show lighter skin, as in "
            "dermoscopy archives such as ISIC, which are dominated by lighter skin: expect this "
            "model to render darker skin poorly, and to follow the spread above rather than "
            "that of any patient population.\n\n") in text  # 2 of the 3 measured
    assert text.endswith("\n\nArtefacts: 2 with dark vignette corners, 0 with ruler or scale "
                         "marks, 3 with gel bubbles.")

    half = spread_markdown(_rows(4, skin_tone=["light", "very light", "brown", "dark"]))
    assert "| unmeasured |" not in half
    assert ("2 of 4 images (50.0 %) show very light or light skin (ITA above 41 degrees, "
            "measured on the healthy skin of each photo). Unlike dermoscopy archives such as "
            "ISIC, which are dominated by lighter skin, fewer than half of them show lighter "
            "skin; expect this model to follow the spread above rather than that of any patient "
            "population.") in half
    assert "render darker skin poorly" not in half
    one = spread_markdown(_rows(1, skin_tone=["dark"]))
    assert "0 of 1 image (0.0 %) show very light or light skin" in one
    assert one.endswith("\n\nArtefacts: 0 with dark vignette corners, 0 with ruler or scale "
                        "marks, 0 with gel bubbles.")
    unrecorded = _rows(1, skin_tone=["dark"]).drop(columns=["vignette", "ruler", "bubbles"])
    assert spread_markdown(unrecorded).endswith("lighter skin; expect this model to follow the "
                                                "spread above rather than that of any patient "
                                                "population.")


def test_the_skin_tone_share_and_its_note_count_the_same_images() -> None:
    """Blank tones (photos with too little healthy skin) are left out of the share the note
    judges by, and said: 2 of 6 with 4 unmeasured is all of the measured, not a third."""
    text = " ".join(spread_markdown(_rows(6, skin_tone=["light", "very light", None, None,
                                                        None, None])).split())
    assert ("2 of the 2 measured images (100.0 %) show very light or light skin (ITA above 41 "
            "degrees, measured on the healthy skin of each photo); the other 4 of 6 images "
            "could not be measured. Most of them show lighter skin") in text
    assert "33.3 %) show" not in text
    one = " ".join(spread_markdown(_rows(3, skin_tone=["dark", None, None])).split())
    assert ("0 of the 1 measured image (0.0 %) show very light or light skin (ITA above 41 "
            "degrees, measured on the healthy skin of each photo); the other 2 of 3 images "
            "could not be measured. Unlike dermoscopy archives") in one

def _record(**fields: Any) -> RunRecord:
    return RunRecord(config={"output_name": "melanoma", "pretrained_model_name_or_path":
                             BASE_MODEL}, **fields)


def test_the_title_and_first_sentence_name_what_the_lora_generates() -> None:
    def intro(types: Counter[str] | None) -> tuple[str, str]:
        card = _card(types=types)
        title = card.split("\n# ", 1)[1].split("\n", 1)[0]
        return title, " ".join(card.split(title, 1)[1].split("## ", 1)[0].split())

    title, words = intro(None)
    assert title == "melanoma: SDXL LoRA for synthetic dermoscopy images (mlnm)"
    assert words.startswith(f"A LoRA for [{BASE_MODEL}](https://huggingface.co/{BASE_MODEL}) "
                            "that generates dermoscopy photos of melanoma. Trigger word: "
                            "**`mlnm`**, used in captions such as `mlnm on torso, x HOMEok`.")
    assert words.endswith(f"by medsynth-kohya {__version__}.")
    assert intro(Counter({"dermoscopic": 3, "unknown": 2}))[0] == title
    title, words = intro(Counter({"clinical: close-up": 2, "unknown": 1}))
    assert title == "melanoma: SDXL LoRA for synthetic clinical: close-up images (mlnm)"
    assert "generates `clinical: close-up` photos of melanoma." in words
    title, words = intro(Counter({"dermoscopic": 1, "clinical: over`view": 3, "tbp": 1}))
    assert title == "melanoma: SDXL LoRA for synthetic skin-lesion images (mlnm)"
    assert ("generates a mix of `clinical: over'view`, `dermoscopic` and `tbp` photos of "
            "melanoma.") in words
    assert "a mix of `dermoscopic` and `tbp` photos" in intro(Counter({"tbp": 1,
                                                                        "dermoscopic": 1}))[1]
    unnamed = _card(RunRecord(version="0.0.9"))
    assert unnamed.split("\n# ", 1)[1].startswith("lora: SDXL LoRA") and "of lora." in unnamed
    assert "by medsynth-kohya 0.0.9." in " ".join(unnamed.split())


def test_each_data_source_is_named_licensed_and_cited_as_it_is() -> None:
    challenge = _card(data=TrainingData(ISIC2020))
    data = " ".join(_section(challenge, "Training data").split())
    assert data.startswith("? melanoma images from the [ISIC 2020 Challenge dataset]"
                           "(https://challenge2020.isic-archive.com/), each repeated ? times "
                           "per epoch, with captions whose template was not recorded. "
                           "Manifest sha256: `not recorded`. The ISIC 2020 images are licensed "
                           "under CC-BY-NC 4.0 by the International Skin Imaging Collaboration. "
                           "Attribution: Rotemberg, V. et al. A patient-centric dataset of "
                           "images and metadata for identifying melanomas using clinical "
                           "context. *Sci Data* 8, 34 (2021). "
                           "https://doi.org/10.1038/s41597-021-00815-z")
    assert "### Who is in the data\n\nSPREAD" in challenge
    assert _section(challenge, "Citation").startswith("```bibtex\n@article{rotemberg2021patient,")
    assert _section(challenge, "Licence") == (
        "The LoRA weights are released under `cc-by-nc-4.0`. This is the licence of the ISIC "
        "2020 training images (CC-BY-NC 4.0 (attribution, no commercial use))." + SDXL)
    assert _section(_card(data=TrainingData(ISIC2020), license="mit"), "Licence") == (
        "The LoRA weights are released under `mit`. The ISIC 2020 training images are CC-BY-NC "
        "4.0 (attribution, no commercial use); " + TERMS_LIMIT + SDXL)
    assert "Generated demo" not in challenge and "> **Note:**" not in challenge

    older = _card(data=TrainingData(ISIC2019), license="apache-2.0")
    assert ("from the [ISIC 2019 Challenge dataset](https://challenge.isic-archive.com/data/"
            "#2019)") in older
    assert "The ISIC 2019 images are licensed under CC-BY-NC 4.0" in older
    assert "Attribution: Tschandl, P. et al. The HAM10000 dataset." in older
    assert _section(older, "Citation").startswith("```bibtex\n@article{tschandl2018ham10000,")
    assert "@article{combalia2019bcn20000," in _section(older, "Citation")
    assert "The ISIC 2019 training images are CC-BY-NC 4.0" in _section(older, "Licence")

    ham = _card(data=TrainingData(HAM10000))
    assert ("from the [HAM10000 dataset](https://doi.org/10.7910/DVN/DBW86T) (the ISIC 2018 "
            "training set)") in ham
    assert ("\n\nThe HAM10000 images are published by the ViDIR Group (Medical University of "
            "Vienna) for academic, non-commercial use: check the terms on [its page]"
            "(https://doi.org/10.7910/DVN/DBW86T) before publishing weights trained on them. "
            "Attribution: Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset. "
            "*Sci Data* 5, 180161 (2018). https://doi.org/10.1038/sdata.2018.161\n\n") in ham
    assert _section(ham, "Licence") == (
        "The LoRA weights are released under `cc-by-nc-4.0`. The HAM10000 training images are "
        "published by the ViDIR Group (Medical University of Vienna) for academic, "
        "non-commercial use; " + TERMS_LIMIT + SDXL)
    assert _section(ham, "Citation").startswith("```bibtex\n@article{tschandl2018ham10000,")
    assert _section(ham, "Citation").endswith("}\n```") and "codella" not in ham

    demo = _card(data=TrainingData(DEMO))
    assert ("\n> **Note:** this LoRA was trained on medsynth-kohya's *generated demo data* (no "
            "real images). It tests the pipeline and is not a model of melanoma.\n") in demo
    assert "images generated by medsynth-kohya's demo (no real patients)," in demo
    assert ("\n\nThe demo images are generated by medsynth-kohya (`SYN_` ids): they show no "
            "patient and carry no licence of another party.\n\n") in demo
    assert _section(demo, "Licence") == "The LoRA weights are released under `cc-by-nc-4.0`." \
        + SDXL
    assert _section(demo, "Citation") == "No data set to cite: the demo images are generated."

    unstated = ("Uploader: state here where the training data comes from, its licence and how "
                "to cite it, and check that its terms allow publishing a model trained on it.")
    own = _card(data=TrainingData(OWN))
    assert "images from the uploader's own data, not an ISIC dataset," in own
    assert ("\n\n**Licence of the training data: not stated.** These images are the uploader's "
            f"own data; medsynth-kohya does not know their terms. {unstated}\n\n") in own
    unknown = _card(data=TrainingData(None))
    assert "images from a source this card does not record," in unknown
    assert ("\n\n**Licence of the training data: not stated.** The source of these images was "
            f"not recorded when this card was written. {unstated}\n\n") in unknown
    for card in (own, unknown):
        assert _section(card, "Licence") == (
            "The LoRA weights are released under `cc-by-nc-4.0`. The training images' own "
            "licence is not stated here (see Training data); it may limit what you can do with "
            "weights derived from them." + SDXL)
        assert _section(card, "Citation") == f"The training data's citation is not recorded. " \
            f"{unstated}"


def test_an_archive_export_points_to_each_images_licence() -> None:
    def licence(data: TrainingData) -> str:
        text = _section(_card(data=data), "Training data").split("\n\n")[1]
        assert text.startswith("Images in the ISIC Archive are licensed image by image, each "
                               "under CC-0, CC-BY 4.0 or CC-BY-NC 4.0 with its own "
                               "attribution. ")
        assert text.endswith(" CC-BY and CC-BY-NC images must be credited as their attribution "
                             "says, and CC-BY-NC ones may not be used commercially.")
        return text

    assert ("Each image's licence and credit are in the `copyright_license` and `attribution` "
            "columns of the export's metadata file (`metadata.csv`), where the export has them, "
            "else in the ISIC Archive under the image's `isic_id`.") in licence(
        TrainingData(ARCHIVE))
    assert ("The export's metadata file (`export.csv`) has no licence column: look each image "
            "up by its `isic_id` in the ISIC Archive before reusing it.") in licence(
        TrainingData(ARCHIVE, "export.csv", ()))
    assert ("Each training image's licence and credit are in the `copyright_license` column of "
            "the export's metadata file (`metadata.csv`), by its `isic_id`.") in licence(
        TrainingData(ARCHIVE, None, ("copyright_license",)))
    assert ("Each training image's licence and credit are in the `copyright_license` and "
            "`attribution` columns of the export's metadata file (`e.csv`), by its "
            "`isic_id`.") in licence(TrainingData(ARCHIVE, "e.csv",
                                                  ("copyright_license", "attribution")))
    card = _card(data=TrainingData(ARCHIVE))
    assert "images from an [ISIC Archive](https://www.isic-archive.com/) export," in card
    assert _section(card, "Licence") == (
        "The LoRA weights are released under `cc-by-nc-4.0`. The ISIC Archive training images "
        "are licensed image by image (CC-0, CC-BY or CC-BY-NC 4.0; see Training data); "
        + TERMS_LIMIT + SDXL)
    assert _section(card, "Citation") == (
        "Cite the [ISIC Archive](https://www.isic-archive.com/) and credit each training image "
        "as its `attribution` says.")


def test_the_captions_are_worded_as_they_were_made() -> None:
    def captions(template: str | None, hair: str | None = None,
                 recorded: str | None = None) -> str:
        card = _card(_record(dataset=DatasetRecord(caption_template=recorded)),
                     data=TrainingData(ISIC2020, hair=hair, caption_template=template))
        data = " ".join(_section(card, "Training data").split())
        return data.split(" per epoch, ", 1)[1].split(". Manifest sha256", 1)[0]

    assert captions(None, "auto") == "with captions whose template was not recorded"
    assert captions("{trigger}, {sex}, {age} on {site}, {tone}, {artefacts}", "auto") == (
        "with captions from the template `{trigger}, {sex}, {age} on {site}, {tone}, "
        "{artefacts}` (built from the patient's sex, age, lesion site, the skin-tone category "
        "measured on each photo and the artefacts found on it (dark corners, ruler marks, gel "
        "bubbles)), and a `hairy` tag where hair was detected by `--hair auto`")
    assert captions("{trigger} on {site}", "off") == (
        "with captions from the template `{trigger} on {site}` (built from lesion site), with "
        "no hair tag (`--hair off`)")
    assert captions("photo of `{trigger}`") == (
        "with captions from the template `photo of '{trigger}'`, and a `hairy` tag where hair "
        "was detected")
    assert captions("{sex}", recorded="{age} and {sex}") == (
        "with captions from the template `{age} and {sex}` (built from the patient's sex and "
        "age), and a `hairy` tag where hair was detected")


def test_the_training_facts_come_from_the_run_record() -> None:
    record = RunRecord(
        version="0.2.1", preset="sdxl-24gb", overrides=["learning_rate=2e-4", "a|b"],
        config={"output_name": "melanoma", "seed": 7, "network_dim": 16,
                "pretrained_model_name_or_path": "/models/sdxl/base.safetensors",
                "vae": "vae/sdxl-vae", "network_args": ["conv_dim=4", "conv_alpha=1"],
                "optimizer_type": "AdamW8bit", "logging_dir": "/runs/logs",
                "resolution": "1024,1024", "learning_rate": 1e-4},
        expected_steps=1500, status="succeeded",
        gpus=[GpuRecord("NVIDIA A100", 81920), GpuRecord(None, 1000),
              GpuRecord("NVIDIA A100", 81920)],
        command=["accelerate", "launch", "--num_processes", "3", "t.py"],
        start="2026-01-01T10:00:00", end="2026-01-01T11:05:09",
        versions=VersionsRecord("0.2.1", "0123456789abcdef", {"torch": "2.5.1", "x": ""}),
        dataset=DatasetRecord(train_images=40, repeats=10, manifest_sha256="ab" * 32))
    card = _card(record)
    training = _section(card, "Training")
    assert _table(training, "| sd-scripts option | value |") == [
        "| `pretrained_model_name_or_path` | `base.safetensors` (local file) |",
        "| `vae` | `vae/sdxl-vae` |", "| `network_dim` | `16` |",
        "| `network_args` | `conv_dim=4`, `conv_alpha=1` |", "| `optimizer_type` | `AdamW8bit` |",
        "| `learning_rate` | `0.0001` |", "| `resolution` | `1024,1024` |", "| `seed` | `7` |",
        "| optimizer steps (expected) | `1500` |"]
    assert "|---|---|" in training
    assert "- Preset: `sdxl-24gb`; overrides: `--set learning_rate=2e-4`, `--set a\\|b`" in training
    assert ("- Hardware: 2 x NVIDIA A100 (80 GiB), 1 x GPU (0 GiB); trained with 3 processes"
            in training)
    assert "- Duration: 1 h 05 min (run status: succeeded)" in training
    assert "- Software: medsynth_kohya 0.2.1, sd-scripts 0123456789ab, torch 2.5.1" in training
    assert "by medsynth-kohya 0.2.1." in " ".join(card.split())
    data = " ".join(_section(card, "Training data").split())
    assert data.startswith("40 melanoma images from the [ISIC 2020")
    assert f"each repeated 10 times per epoch, with captions whose template was not recorded. " \
           f"Manifest sha256: `{'ab' * 32}`." in data
    assert ("A LoRA for the local model `base.safetensors` (its Hub id was not recorded) "
            "that generates") in " ".join(card.split())  # not SDXL base: another file name

    bare = _section(_card(RunRecord()), "Training")
    assert bare.startswith("| sd-scripts option | value |\n|---|---|\n\n- Preset: `?`; "
                           "overrides: none\n- Hardware: CPU\n- Duration: not recorded (run "
                           "status: unknown)\n- Software: not recorded\n")
    assert "each repeated once per epoch" in _card(_record(dataset=DatasetRecord(repeats=1)))


@pytest.mark.parametrize(("start", "end", "duration"), [
    ("2026-01-01T10:00:00", "2026-01-01T10:05:07", "5 min 07 s"),
    ("2026-01-01T10:00:00", "2026-01-01T10:00:59.9", "0 min 59 s"),
    ("2026-01-01T10:00:00", "2026-01-01T12:00:00", "2 h 00 min"),
    ("2026-01-01T10:00:00", "2026-01-02T10:59:59", "24 h 59 min"),
    ("2026-01-01T10:00:00", "2026-01-01T09:00:00", "0 min 00 s"),  # a clock set back
    ("2026-01-01T10:00:00", None, "not recorded"), (None, "2026-01-01T10:00:00", "not recorded"),
    ("yesterday", "2026-01-01T10:00:00", "not recorded"),
    ("2026-01-01T10:00:00+00:00", "2026-01-01T11:30:00+01:00", "30 min 00 s"),  # zones
    ("2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00", "not recorded"),  # a hand edit
    ("2026-01-01T10:00:00Z", "2026-01-01T10:01:00.123456789+00:00", "1 min 00 s"),
])
def test_the_duration_is_the_recorded_start_to_end(start: str | None, end: str | None,
                                                   duration: str) -> None:
    card = _card(RunRecord(start=start, end=end, status="failed"))
    assert f"- Duration: {duration} (run status: failed)" in card


@pytest.mark.parametrize(("gpus", "command", "hardware"), [
    ([GpuRecord("NVIDIA L4", 23034)], ["--num_processes", "1"],
     "1 x NVIDIA L4 (22 GiB); trained with 1 process"),
    ([GpuRecord("NVIDIA L4", 23034)], ["--num_processes", "0"], "1 x NVIDIA L4 (22 GiB)"),
    ([GpuRecord("T4", 15360), GpuRecord("T4", 15360)], None, "2 x T4 (15 GiB)"),
    ([GpuRecord("NVIDIA GH200 480GB")], None, "1 x NVIDIA GH200 480GB (memory unknown)"),
    ([], ["--num_processes", "2"], "CPU"),
])
def test_the_hardware_is_the_gpus_found_and_the_processes_started(
        gpus: list[GpuRecord], command: list[str] | None, hardware: str) -> None:
    assert f"- Hardware: {hardware}\n" in _card(RunRecord(gpus=gpus, command=command))


@pytest.mark.parametrize(("base", "shown"), [
    (BASE_MODEL, BASE_MODEL), ("/models/sd_xl_base_1.0.safetensors", BASE_MODEL),
    ("<local>/sd_xl_base_1.0_0.9vae.safetensors", BASE_MODEL),
    ("someone/sdxl-finetune", "someone/sdxl-finetune"),
    ("/models/sdxl.safetensors", None), ("someone/model.ckpt", None), ("someone/model.pt", None),
    ("someone/model.bin", None), ("someone/a/b", None), ("", None), ("models", None),
])
def test_the_base_model_is_named_only_when_its_hub_id_is_known(base: str,
                                                               shown: str | None) -> None:
    """A Hub id is the card's base_model; a local file is SDXL base only by SDXL base's own
    file name, else the card names no base_model rather than a false one."""
    card = _card(RunRecord(config={"pretrained_model_name_or_path": base}))
    assert metadata(card).get("base_model") == shown
    assert (f'    "{shown}", torch_dtype=torch.float16' in card) is (shown is not None)
    assert (SDXL in card) is (shown == BASE_MODEL)


def test_a_local_checkpoint_is_named_by_its_file_with_no_false_base_model() -> None:
    """A fine-tune trained from a local file: the card names the file, loads it in both
    snippets and does not claim SDXL base or its licence anywhere."""
    card = _card(RunRecord(config={"output_name": "melanoma", "pretrained_model_name_or_path":
                                   "/models/juggernautXL_v9Rundiffusionphoto2.safetensors"}))
    said = " ".join(card.split())
    assert "base_model" not in metadata(card)
    assert ("A LoRA for the local model `juggernautXL_v9Rundiffusionphoto2.safetensors` (its "
            "Hub id was not recorded) that generates") in said
    assert ('pipe = StableDiffusionXLPipeline.from_single_file(\n    '
            '"juggernautXL_v9Rundiffusionphoto2.safetensors", torch_dtype=torch.float16') in card
    assert "--ckpt juggernautXL_v9Rundiffusionphoto2.safetensors --fp16" in card
    assert _section(card, "Licence").endswith(
        "Using the LoRA also means using its base model, the local model "
        "`juggernautXL_v9Rundiffusionphoto2.safetensors` (its Hub id was not recorded), whose "
        "own licence applies as well: this card cannot say which it is.")
    assert "stabilityai" not in card and "SDXL base" not in card
    assert "sd_xl_base" not in card


def test_a_hub_fine_tune_is_named_in_the_snippets_and_licence_too() -> None:
    card = _card(RunRecord(config={"output_name": "melanoma", "pretrained_model_name_or_path":
                                   "RunDiffusion/Juggernaut-XL-v9"}))
    assert metadata(card)["base_model"] == "RunDiffusion/Juggernaut-XL-v9"
    assert "--ckpt RunDiffusion/Juggernaut-XL-v9 --fp16" in card
    assert _section(card, "Licence").endswith(
        "Using the LoRA also means using its base model, [RunDiffusion/Juggernaut-XL-v9]"
        "(https://huggingface.co/RunDiffusion/Juggernaut-XL-v9), whose own licence applies as "
        "well: read it on its page.")
    assert "stabilityai" not in card and "SDXL base" not in card and "sd_xl_base" not in card


def test_a_base_model_that_is_a_local_folder_is_not_named(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "someone" / "sdxl").mkdir(parents=True)
    card = _card(RunRecord(config={"pretrained_model_name_or_path": "someone/sdxl"}))
    assert "base_model" not in metadata(card)
    assert "A LoRA for the local model `sdxl` (its Hub id was not recorded)" in card


def test_option_values_that_are_local_files_are_named_by_their_file_only() -> None:
    def shown(value: Any) -> str:
        card = _card(RunRecord(config={"vae": value}))
        return _table(card, "| sd-scripts option | value |")[0]

    assert shown("/models/vae") == "| `vae` | `vae` (local file) |"
    assert shown("models/vae.safetensors") == "| `vae` | `vae.safetensors` (local file) |"
    assert shown("C:\\m\\vae.pt") == "| `vae` | `C:\\m\\vae.pt` (local file) |"
    for suffix in (".ckpt", ".pt", ".bin"):
        assert shown(f"m/vae{suffix}") == f"| `vae` | `vae{suffix}` (local file) |"
    assert shown("madebyollin/sdxl-vae-fp16-fix") == "| `vae` | `madebyollin/sdxl-vae-fp16-fix` |"
    assert shown("vae.safetensors") == "| `vae` | `vae.safetensors` |"
    assert shown(["a|b", 2]) == "| `vae` | `a\\|b`, `2` |"


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (1024**2 - 1, "1024.0 KiB"), (1024**2, "1.0 MiB"), (5 * 1024**3, "5.0 GiB"),
    (2 * 1024**4, "2048.0 GiB"),
])
def test_the_files_table_gives_each_size_in_binary_units(size: int, shown: str) -> None:
    card = _card(uploads=[("melanoma.safetensors", size), ("training/run.json", 10)])
    assert _section(card, "Files") == ("| file | size |\n|---|---:|\n"
                                       f"| `melanoma.safetensors` | {shown} |\n"
                                       "| `training/run.json` | 10 B |")


def test_samples_are_shown_as_a_grid_a_table_or_said_to_be_absent(tmp_path: Path) -> None:
    none = _card()
    assert _section(none, "Samples") == "No sample images were uploaded with this version."
    assert "widget" not in metadata(none)

    samples = [Sample(tmp_path / f"s{i}.png", prompt, negative)
               for i, (prompt, negative) in enumerate([
                   ("mlnm | torso\nsecond line", "blurry"), (None, None), ("mlnm, back", ""),
                   ("mlnm, arm", None), ("mlnm, leg", "text")])]
    table = _card(samples=samples)
    note = "\n\nGenerated by this LoRA; synthetic images, not patients."
    assert _section(table, "Samples") == (
        "| image | prompt |\n|---|---|\n"
        "| ![sample](samples/s0.png) | mlnm \\| torso second line |\n"
        "| ![sample](samples/s1.png) |  |\n| ![sample](samples/s2.png) | mlnm, back |\n"
        "| ![sample](samples/s3.png) | mlnm, arm |\n| ![sample](samples/s4.png) | mlnm, leg |"
        + note)
    assert metadata(table)["widget"] == [
        {"text": "mlnm | torso\nsecond line", "parameters": {"negative_prompt": "blurry"},
         "output": {"url": "samples/s0.png"}},
        {"text": "mlnm", "output": {"url": "samples/s1.png"}},
        {"text": "mlnm, back", "output": {"url": "samples/s2.png"}},
        {"text": "mlnm, arm", "output": {"url": "samples/s3.png"}}]  # the first four
    grid = _card(samples=samples, grid="samples/grid.png")
    assert _section(grid, "Samples") == "![Sample grid](samples/grid.png)" + note
    assert _section(_card(grid="samples/grid.png"), "Samples") == (
        "![Sample grid](samples/grid.png)" + note)


def test_a_lora_of_another_class_is_tagged_and_described_as_that_class() -> None:
    """A nevus run (prepare --class-name nevus) is not labelled melanoma: its tag, intended use
    and snippet name its class; a class of several words is one Hub tag."""
    card = _card(RunRecord(config={"output_name": "nevus"}))
    assert metadata(card)["tags"] == ["text-to-image", "stable-diffusion-xl", "lora", "medical",
                                      "dermatology", "nevus"]
    assert "melanoma" not in _section(card, "Intended use").lower()
    assert "synthetic nevus images for training" in " ".join(card.split())
    assert 'image.save("nevus.png")' in card
    spaced = _card(RunRecord(config={"output_name": "Basal cell_carcinoma"}))
    assert metadata(spaced)["tags"][-1] == "basal-cell-carcinoma"
    assert 'image.save("Basal cell_carcinoma.png")' in spaced
    assert metadata(_card(RunRecord()))["tags"] == ["text-to-image", "stable-diffusion-xl",
                                                    "lora", "medical", "dermatology"]

def test_the_metadata_and_the_how_to_follow_the_run() -> None:
    card = _card(license="apache-2.0")
    head = metadata(card)
    assert head == {"base_model": BASE_MODEL, "instance_prompt": "mlnm", "library_name":
                    "diffusers", "license": "apache-2.0", "pipeline_tag": "text-to-image",
                    "tags": ["text-to-image", "stable-diffusion-xl", "lora", "medical",
                             "dermatology", "melanoma"]}
    use = _section(card, "How to use")
    assert use.startswith("Sample settings of the training run: 832\N{MULTIPLICATION SIGN}1216 "
                          "px, 28 steps, guidance\nscale 6.5, with the negative prompt")
    assert f'pipe.load_lora_weights("{REPO}", weight_name="melanoma.safetensors")' in use
    assert ('    "mlnm on torso, x HOMEok",\n    num_inference_steps=28,\n    '
            "guidance_scale=6.5,\n    width=832,\n    height=1216,") in use
    assert f"hf download {REPO} melanoma.safetensors --local-dir lora" in use
    assert ('--prompt "mlnm on torso, x HOMEok" --W 832 --H 1216 --steps 28 \\\n  --scale 6.5'
            in use)
    assert _section(card, "Evaluation").startswith("Not evaluated in this version. "
                                                   "`medsynth-kohya evaluate` measures")
    assert "`push --eval REPORT` publishes its figures here." in _section(card, "Evaluation")
    fallback = _card(prompts={**PROMPTS, "prompts": ["", ""]})
    assert "`photo of skin, mlnm on torso`" in fallback
    assert card.endswith("\n") and not card.endswith("\n\n")


def test_filled_gives_the_values_the_template_was_filled_with() -> None:
    record = _record(preset="sdxl-24gb", dataset=DatasetRecord(train_images=12))
    card = _card(record, data=TrainingData(OWN))
    values = filled(card).splitlines()
    assert values[0].startswith("base_model: ") and "license: cc-by-nc-4.0" in values
    assert "melanoma: SDXL LoRA for synthetic dermoscopy images (mlnm)" in values
    assert "sdxl-24gb" in values and "12" in values and "SPREAD" in values
    assert "Intended use" not in filled(card)  # the template's own text
    long = "mlnm on the upper back of a patient, " * 4 + "dermoscopy, café-au-lait macule"
    wide = _card(samples=[Sample(Path("s.png"), long)])
    assert "café-au-lait" in metadata(wide)["widget"][0]["text"]
    assert f"text: {long}" not in wide  # the metadata wraps it over lines
    assert f"  text: {long}" in filled(wide).splitlines()  # one line, as written
    assert filled("# my own card\n") == "# my own card\n"
    assert metadata("# no metadata") is None and metadata("---\n[unclosed\n---\n") is None
    assert metadata("---\na: 1\n---\nbody") == {"a": 1}


def _prepared(tmp_path: Path, rows: pd.DataFrame, state: dict[str, Any] | None) -> RunRecord:
    """A prepared folder holding `rows` (and a prepare.json of `state`) and the record of a run
    that trained on it."""
    folder = PreparedFolder(tmp_path / "prepared")
    folder.path.mkdir()
    manifest.write(rows, folder.manifest)
    if state is not None:
        folder.state_dir.mkdir()
        folder.state_file.write_text(json.dumps(state), encoding="utf-8")
    return RunRecord(dataset=DatasetRecord(prepared=str(folder.path),
                                           manifest_sha256=files.sha256(folder.manifest)))


def test_the_spread_section_reads_the_training_rows_of_the_manifest(tmp_path: Path) -> None:
    rows = _rows(4, split=["train", "train", "val", "train"], sex=["female", "male", "male",
                                                                    "female"],
                 image_type=["dermoscopic", "tbp", "tbp", "dermoscopic"],
                 patient_id=["IP_2", None, "IP_1", "IP_2"])
    record = _prepared(tmp_path, rows, None)
    spread, warnings, synthetic, types, patients = spread_section(record)
    assert spread == spread_markdown(rows[rows["split"] == "train"])
    assert "| female | 2 | 66.7 % |" in spread and (warnings, synthetic) == ([], False)
    assert types == Counter({"dermoscopic": 2, "tbp": 1})
    assert patients == ("IP_1", "IP_2")  # the validation split's too, for the last scan

    manifest_file = PreparedFolder(tmp_path / "prepared").manifest
    manifest_file.write_text(manifest_file.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    spread, warnings, synthetic, types, patients = spread_section(record)
    assert spread == ("The prepared manifest changed after training, so the spread of the "
                      f"training images is not shown. {ARCHIVE_SKIN}")
    assert warnings == [f"{manifest_file} changed since the run (sha256 differs): the card "
                        "omits the spread"]
    assert (synthetic, types, patients) == (False, Counter(), ("IP_1", "IP_2"))

    manifest_file.unlink()
    missing = ("The prepared manifest was not available when this card was written, so the "
               f"spread of the training images is not shown. {ARCHIVE_SKIN}")
    assert spread_section(record) == (missing, [f"{manifest_file} not found: the card cannot "
                                                "show the data's sex/age/site spread"],
                                      False, Counter(), ())
    assert spread_section(RunRecord())[0] == missing


def test_generated_ids_alone_make_the_demo_data(tmp_path: Path) -> None:
    demo = _rows(3, id=["SYN_0000001", "SYN_0000002", "ISIC_0000003"],
                 split=["train", "train", "val"])
    assert spread_section(_prepared(tmp_path / "a", demo, None))[2] is True
    tmp_path.joinpath("b").mkdir()
    mixed = _rows(2, id=["SYN_0000001", "ISIC_0000002"])
    assert spread_section(_prepared(tmp_path / "b", mixed, None))[2] is False
    tmp_path.joinpath("c").mkdir()
    nothing = _rows(1, split=["val"], id=["SYN_0000001"])
    assert spread_section(_prepared(tmp_path / "c", nothing, None))[2] is False


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path) -> None:
    """Each `_prepared` call below gets a folder of its own."""
    for name in ("a", "s"):
        tmp_path.joinpath(name).mkdir()


def test_training_data_is_what_prepare_recorded(tmp_path: Path) -> None:
    state = {"options": {"hair": "seed", "caption_template": "{trigger} on {site}",
                         "columns": {}},
             "source": {"kind": ARCHIVE, "metadata": "/downloads/export.csv",
                        "licence_columns": ["copyright_license"]}}
    record = _prepared(tmp_path / "s", _rows(1), state)
    assert training_data(record, False) == (
        TrainingData(ARCHIVE, "export.csv", ("copyright_license",), "seed",
                     "{trigger} on {site}"), [])
    assert training_data(record, True) == (TrainingData(DEMO), [])

    own = {"options": {"columns": {"id": "image_id"}}, "source": {"kind": ARCHIVE}}
    data, warnings = training_data(_prepared(tmp_path / "a", _rows(1), own), False)
    assert data == TrainingData(OWN)
    assert warnings == ["the run trained on your own data (not an ISIC dataset): state its "
                        "source, licence and citation in README.md on the Hub, where the card "
                        "asks for them"]

    unknown = ["the prepared folder's state was not found, so the card cannot say where the "
               "training images come from: state their source and licence in README.md on the "
               "Hub"]
    assert training_data(RunRecord(), False) == (TrainingData(None), unknown)
    (tmp_path / "a" / "x").mkdir()
    no_kind = _prepared(tmp_path / "a" / "x", _rows(1), {"options": {}})
    assert training_data(no_kind, False) == (TrainingData(None), unknown)
    damaged = PreparedFolder(tmp_path / "s" / "prepared").state_file
    damaged.write_text("{not json", encoding="utf-8")
    assert training_data(record, False) == (TrainingData(None), unknown)


def test_an_evaluation_is_summed_up_on_the_card_and_in_its_metadata(tmp_path: Path) -> None:
    from huggingface_hub import EvalResult

    from medsynth_kohya.hub.eval_card import CardEvaluation

    result = EvalResult(task_type="text-to-image", dataset_type="isic", dataset_name="ISIC",
                        metric_type="near_copies", metric_value=0)
    evaluation = CardEvaluation(
        files=(("evaluation/report.html", tmp_path / "r.html"),
               ("evaluation/report.json", tmp_path / "r.json")),
        results=(result,), verdict=(("near-copies", "pass", "0 of 8 | none"),
                                    ("FID", "n/a", "too few\nimages")),
        n_synthetic=8, version="0.2.0", flagged={}, checked={})
    card = render_card(repo_id=REPO, record=RunRecord(), trigger="mlnm", weight_name="w",
                       license="mit", prompts=PROMPTS, samples=[], sample_paths={}, grid=None,
                       spread="", data=TrainingData(DEMO), files=[], evaluation=evaluation)
    assert _section(card, "Evaluation") == (
        "Measured by medsynth-kohya 0.2.0 `evaluate` on 8 synthetic images. The full report, "
        "with how each figure was computed (training photos withheld), is "
        "[`evaluation/report.html`](evaluation/report.html); every figure is in "
        "`evaluation/report.json` and in this card's `model-index` metadata.\n\n"
        "| check | verdict | detail |\n|---|---|---|\n"
        "| near-copies | pass | 0 of 8 \\| none |\n| FID | n/a | too few images |")
    head = metadata(card)
    assert head["model-index"][0]["name"] == "melanoma-lora"
    assert head["model-index"][0]["results"][0]["metrics"][0] == {"type": "near_copies",
                                                                  "value": 0}
    assert "model-index" not in metadata(_card())


def test_the_cards_sd_scripts_command_runs_on_every_cuda_gpu_with_its_own_options() -> None:
    """The card's sdxl_gen_img.py line names only options of the pinned script, in fp16 with
    the VAE in full precision: a reader on a free Colab T4 (no bf16) can run it as written."""
    from medsynth_kohya.sdscripts import sdopts

    card = _card()
    start = card.index("python sdxl_gen_img.py")
    command = card[start:card.index("```", start)].replace("\\\n", " ")
    flags = [word for word in command.split() if word.startswith("--")]
    known = {flag for option in sdopts.load("sdxl_gen_img").values() for flag in option.flags}
    assert flags and set(flags) <= known
    assert "--fp16" in flags and "--no_half_vae" in flags and "--bf16" not in flags
