"""The model card of a pushed run: README.md's metadata (huggingface_hub's ModelCardData)
and its body, rendered from `templates/model_card.md` and the published run record.

Apart from the upload, as huggingface_hub keeps ModelCard apart from HfApi: a card is rendered
with no network, and `push --show README.md` shows it exactly as it would be sent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from medsynth_kohya import __version__, files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.captions import ARTEFACT_WORDS, fields
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import (
    ARCHIVE,
    ARCHIVE_METADATA,
    DERMOSCOPIC,
    HAM10000,
    HAM10000_PAGE,
    IMAGE_TYPE,
    ISIC2018,
    ISIC2019,
    ISIC2020,
    OWN,
)
from medsynth_kohya.errors import UserError
from medsynth_kohya.resources import data_dir
from medsynth_kohya.sdscripts.presets import BASE_MODEL
from medsynth_kohya.training.record import DatasetRecord, RunRecord, VersionsRecord

if TYPE_CHECKING:
    import pandas as pd

    from medsynth_kohya.hub.eval_card import CardEvaluation

TAGS = ("text-to-image", "stable-diffusion-xl", "lora", "medical", "dermatology")
"""The card's own tags; the run's class (its LoRA's name) is tagged after them."""
DEFAULT_LICENSE = "cc-by-nc-4.0"
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
    "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl",
    "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by",
    "odbl", "openmdw-1.0", "openmdw-1.1", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license",
    "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other")
"""The licence ids the Hub accepts in a card's `license:` (its list at
https://huggingface.co/docs/hub/repositories-licenses, as of August 2026); `other` also needs
a `license_name` and a LICENSE file, which push does not write."""
WIDGETS = 4
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_SETTINGS = ("pretrained_model_name_or_path", "vae", "network_module", "network_dim",
             "network_alpha", "network_args", "network_train_unet_only", "optimizer_type",
             "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler",
             "lr_warmup_steps", "max_train_steps", "max_train_epochs", "train_batch_size",
             "gradient_accumulation_steps", "resolution", "mixed_precision", "save_precision",
             "noise_offset", "min_snr_gamma", "seed", "gradient_checkpointing", "cache_latents",
             "sdpa", "xformers")
"""sd-scripts options shown in the card's training table, when the run set them."""


DEMO = "demo"
"""TrainingData.origin of medsynth-kohya's generated demo data."""
_CHALLENGE_TERMS = "CC-BY-NC 4.0 (attribution, no commercial use)"
_BIBTEX = """```bibtex
@article{rotemberg2021patient,
  title   = {A patient-centric dataset of images and metadata for identifying melanomas using \
clinical context},
  author  = {Rotemberg, Veronica and Kurtansky, Nicholas and Betz-Stablein, Brigid and others},
  journal = {Scientific Data},
  volume  = {8},
  pages   = {34},
  year    = {2021},
  doi     = {10.1038/s41597-021-00815-z}
}
```"""
_HAM_ENTRY = """@article{tschandl2018ham10000,
  title   = {The HAM10000 dataset, a large collection of multi-source dermatoscopic images of \
common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data}, volume = {5}, pages = {180161}, year = {2018},
  doi     = {10.1038/sdata.2018.161}
}"""
_BIBTEX_2018 = "```bibtex\n" + _HAM_ENTRY + """
@article{codella2019skin,
  title   = {Skin lesion analysis toward melanoma detection 2018: a challenge hosted by the \
International Skin Imaging Collaboration (ISIC)},
  author  = {Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and others},
  journal = {arXiv:1902.03368}, year = {2019}
}
```"""
_BIBTEX_2019 = "```bibtex\n" + _HAM_ENTRY + """
@inproceedings{codella2018skin,
  title     = {Skin lesion analysis toward melanoma detection: a challenge at the 2017 \
International Symposium on Biomedical Imaging (ISBI)},
  author    = {Codella, Noel and Gutman, David and Celebi, M. Emre and others},
  booktitle = {ISBI}, year = {2018}, doi = {10.1109/ISBI.2018.8363547}
}
@article{combalia2019bcn20000,
  title   = {BCN20000: Dermoscopic lesions in the wild},
  author  = {Combalia, Marc and Codella, Noel and Rotemberg, Veronica and others},
  journal = {arXiv:1908.02288}, year = {2019}
}
```"""


@dataclass(frozen=True)
class _Challenge:
    """An ISIC challenge data set: one licence (CC-BY-NC 4.0) and its papers."""

    name: str
    url: str
    attribution: str
    bibtex: str


_CHALLENGES = {
    ISIC2020: _Challenge("ISIC 2020", "https://challenge2020.isic-archive.com/",
                         "Rotemberg, V. et al. A patient-centric dataset of images and metadata "
                         "for identifying melanomas using clinical context. *Sci Data* 8, 34 "
                         "(2021). https://doi.org/10.1038/s41597-021-00815-z", _BIBTEX),
    ISIC2019: _Challenge("ISIC 2019", "https://challenge.isic-archive.com/data/#2019",
                         "Tschandl, P. et al. The HAM10000 dataset. *Sci Data* 5, 180161 (2018); "
                         "Codella, N. et al. Skin lesion analysis toward melanoma detection "
                         "(ISBI 2017 challenge), ISBI 2018; Combalia, M. et al. BCN20000: "
                         "Dermoscopic lesions in the wild, arXiv:1908.02288 (2019)",
                         _BIBTEX_2019),
    ISIC2018: _Challenge("ISIC 2018", "https://challenge.isic-archive.com/data/#2018",
                         "Tschandl, P. et al. The HAM10000 dataset. *Sci Data* 5, 180161 (2018); "
                         "Codella, N. et al. Skin lesion analysis toward melanoma detection "
                         "2018, arXiv:1902.03368 (2019)", _BIBTEX_2018)}
"""The challenge data sets a card cites, by sources' layout kind."""
_HAM_TERMS = ("published by the ViDIR Group (Medical University of Vienna) for academic, "
              "non-commercial use")
"""What the card says of HAM10000's terms: it does not name a licence it cannot check."""
_UNSTATED = ("Uploader: state here where the training data comes from, its licence and how to "
             "cite it, and check that its terms allow publishing a model trained on it.")


@dataclass(frozen=True)
class TrainingData:
    """Where the training images come from, as `prepare` recorded it: its origin (sources.
    ISIC2020, ISIC2019, ISIC2018, ARCHIVE, HAM10000 or OWN, DEMO, None when unknown) and an export's
    licence columns."""

    origin: str | None
    metadata: str | None = None
    """The metadata file's name (said only of an ISIC Archive export)."""
    licence_columns: tuple[str, ...] | None = None
    """The export's sources.LICENCE_COLUMNS (None: not recorded)."""
    hair: str | None = None
    """prepare's --hair mode (None: not recorded)."""
    caption_template: str | None = None
    """prepare's caption template (the run's record names the one it trained with)."""


@dataclass(frozen=True)
class Sample:
    """A sample image and the prompt that made it (None when unknown)."""

    path: Path
    prompt: str | None
    negative_prompt: str | None = None


def _md(text: object) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _quoted(text: str) -> str:
    """A prompt safe inside the card's double-quoted Python and shell strings."""
    return re.sub(r'["\\`$]', "", text)


def _times(count: int | None) -> str:
    """How often an image is repeated, in words: "once", "10 times", "? times" (unrecorded)."""
    return "? times" if count is None else "once" if count == 1 else f"{count} times"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _share_table(label: str, counts: Counter[str], order: Sequence[str], total: int) -> str:
    lines = [f"| {label} | images | share |", "|---|---:|---:|"]
    for key in order:
        lines.append(f"| {_md(key)} | {counts[key]} | {files.percent(counts[key], total)} |")
    return "\n".join(lines)


def _age_bin(age: Any) -> str:
    import pandas as pd

    if age is None or pd.isna(age):
        return "unknown"
    years = int(age)
    if years < 30:
        return "under 30"
    if years >= 80:
        return "80 and over"
    return f"{years // 10 * 10}-{years // 10 * 10 + 9}"


def _label(value: Any) -> str:
    """A manifest cell as the card's tables name it ("unknown" when blank)."""
    import pandas as pd

    return "unknown" if value is None or pd.isna(value) or not str(value).strip() else str(value)


def image_types(rows: pd.DataFrame) -> Counter[str]:
    """How many of `rows` each image type holds ("unknown": blank); empty when none is recorded
    (a source without `image_type`, or a manifest written before the column)."""
    if IMAGE_TYPE not in rows or rows[IMAGE_TYPE].isna().all():
        return Counter()
    return Counter(_label(v) for v in rows[IMAGE_TYPE])


def _known_types(types: Counter[str]) -> list[str]:
    """The recorded image types, commonest first."""
    return sorted((k for k in types if k != "unknown"), key=lambda k: (-types[k], k))


def _image_kind(types: Counter[str]) -> tuple[str, str]:
    """What the LoRA generates, for the card's title ("synthetic ... images") and its first
    sentence ("generates ... of CLASS"): dermoscopy unless other image types were trained on."""
    known = [_md(k).replace("`", "'") for k in _known_types(types)]
    if not known or known == [DERMOSCOPIC]:
        return "dermoscopy", "dermoscopy photos"
    if len(known) == 1:
        return known[0], f"`{known[0]}` photos"
    named = ", ".join(f"`{k}`" for k in known[:-1]) + f" and `{known[-1]}`"
    return "skin-lesion", f"a mix of {named} photos"


def _types_markdown(types: Counter[str], total: int) -> list[str]:
    """The image-type table (the source's `image_type`) and, for a mix, what that means."""
    if not types:
        return []
    table = _share_table("image type (ISIC Archive)", types,
                         [*_known_types(types), *(["unknown"] if types["unknown"] else [])],
                         total)
    if len(_known_types(types)) < 2:
        return [table]
    return [table, "The training images mix image types: the LoRA learned their looks as one, "
                   "so its images may be any of them, or a blend."]


def spread_markdown(rows: pd.DataFrame) -> str:
    """Tables of the training images by sex, age, site and skin tone (and hair, artefacts),
    first by diagnosis when they are of more than one and by image type where the source
    records it: the card must not pass them off as one."""
    total = len(rows)
    if not total:
        return "The manifest holds no training rows."
    sexes = Counter(_label(v) for v in rows["sex"])
    ages = Counter(_age_bin(v) for v in rows["age"])
    sites = Counter(_label(v) for v in rows["site"])
    age_order = sorted((k for k in ages if k != "unknown"),
                       key=lambda k: -1 if k == "under 30" else int(k[:2]))
    hairy = int(rows["hairy"].sum())
    diagnoses = Counter(_label(v).rsplit(":", 1)[-1] for v in rows["diagnosis"])
    parts = [
        *([_share_table("diagnosis (ISIC Archive)", diagnoses, sorted(
            diagnoses, key=lambda k: (k == "unknown", -diagnoses[k], k)), total)]
          if len(set(diagnoses) - {"unknown"}) > 1 else []),
        *_types_markdown(image_types(rows), total),
        _share_table("sex", sexes, sorted(sexes, key=lambda k: (k == "unknown", -sexes[k], k)),
                     total),
        _share_table("age", ages, [*age_order, *(["unknown"] if "unknown" in ages else [])],
                     total),
        _share_table("site", sites, sorted(sites, key=lambda k: (k == "unknown", -sites[k], k)),
                     total),
        f"{hairy} of {files.counted(total, 'image')} ({files.percent(hairy, total)}) are tagged "
        "`hairy`.",
        _fitzpatrick_markdown(rows),
        *_tone_markdown(rows),
    ]
    return "\n\n".join(parts)


def vocabulary_rows() -> tuple[str, ...]:
    """The spread tables' rows whose label is the tool's own word (the skin-tone categories,
    `unknown`, `unmeasured`), as each row starts: a login such as `brown` or `tan` is no leak
    there, and the tone table lists every category, at 0 images too."""
    from medsynth_kohya.data.measure import TONES

    return tuple(f"| {name} |" for name in (*(name for name, _ in TONES), "unknown",
                                            "unmeasured"))


def _fitzpatrick_markdown(rows: pd.DataFrame) -> str:
    """The Fitzpatrick skin types the metadata records (I to VI, then unknown), or a sentence
    saying it records none: the card must not deny a spread the data has."""
    column = "fitzpatrick_skin_type"
    types = Counter(_label(v) for v in rows[column]) if column in rows else Counter()
    if set(types) <= {"unknown"}:
        return "The metadata records no Fitzpatrick skin type for these images."
    scale = ("I", "II", "III", "IV", "V", "VI")
    order = sorted(types, key=lambda k: (k == "unknown", scale.index(k) if k in scale else 6, k))
    return _share_table("Fitzpatrick skin type (recorded)", types, order, len(rows))


ARCHIVES = "dermoscopy archives such as ISIC, which are dominated by lighter skin"
FOLLOW = "follow the spread above rather than that of any patient population"
"""Pieces of the card's note under the skin-tone table."""
ARCHIVE_SKIN = ("Dermoscopy archives such as ISIC are dominated by lighter skin, so expect this "
                "model to render darker skin poorly and to follow its training data rather than "
                "any patient population.")
"""The card's word on skin tone where the training images' tones are not known."""


def _tone_markdown(rows: pd.DataFrame) -> list[str]:
    """The skin-tone table (ITA categories measured on each photo), the share of lighter skin
    among the measured photos (the note's one denominator) and the artefact counts."""
    import pandas as pd

    from medsynth_kohya.data.measure import ARTEFACTS, TONES

    if "skin_tone" not in rows or rows["skin_tone"].isna().all():
        return [f"Skin tone was not measured on these images. {ARCHIVE_SKIN}"]
    total = len(rows)
    tones = Counter("unmeasured" if pd.isna(v) else str(v) for v in rows["skin_tone"])
    order = [name for name, _ in TONES] + (["unmeasured"] if tones["unmeasured"] else [])
    light = tones["very light"] + tones["light"]
    words = {"vignette": "dark vignette corners", "ruler": "ruler or scale marks",
             "bubbles": "gel bubbles"}
    found = ", ".join(f"{int(rows[name].fillna(False).sum())} with {words[name]}"
                      for name in ARTEFACTS if name in rows)
    unmeasured = tones["unmeasured"]
    measured = total - unmeasured
    note = (f"Most of them show lighter skin, as in {ARCHIVES}: expect this model to render "
            f"darker skin poorly, and to {FOLLOW}." if 2 * light > measured else
            f"Unlike {ARCHIVES}, fewer than half of them show lighter skin; expect this model "
            f"to {FOLLOW}.")
    counted = (files.counted(total, "image") if not unmeasured else
               f"the {files.counted(measured, 'measured image')}")
    left_out = (f"; the other {unmeasured} of {files.counted(total, 'image')} could not be "
                "measured" if unmeasured else "")
    return [_share_table("skin tone (ITA)", tones, order, total),
            f"{light} of {counted} ({files.percent(light, measured)}) show very light or light "
            f"skin (ITA above 41 degrees, measured on the healthy skin of each photo){left_out}. "
            f"{note}",
            *([f"Artefacts: {found}."] if found else [])]



class Spread(NamedTuple):
    """What a push takes from the run's prepared manifest, read once (`spread_section`)."""

    markdown: str
    warnings: list[str]
    synthetic: bool
    """Whether the data is the synthetic demo set."""
    types: Counter[str]
    """The training images' image types (empty when not recorded)."""
    patients: tuple[str, ...] = ()
    """Every patient id of the manifest as it stands (validation rows and a manifest prepared
    again since the run included): the last scan refuses them."""


def spread_section(record: RunRecord) -> Spread:
    """The spread section of the card, warnings, and what else the manifest tells (`Spread`);
    no patient ids when it is gone."""
    path = PreparedFolder(record.prepared or Path()).manifest
    if record.prepared is None or not path.is_file():
        return Spread("The prepared manifest was not available when this card was written, so "
                      f"the spread of the training images is not shown. {ARCHIVE_SKIN}",
                      [f"{path} not found: the card cannot show the data's sex/age/site spread"],
                      False, Counter())
    table, digest = manifest.read_hashed(path)
    patients = tuple(sorted(set(table["patient_id"].dropna())))
    if record.prepared_again(digest):
        return Spread("The prepared manifest changed after training, so the spread of the "
                      f"training images is not shown. {ARCHIVE_SKIN}",
                      [f"{path} changed since the run (sha256 differs): the card omits the "
                       "spread"], False, Counter(), patients)
    rows = table[table["split"] == "train"]
    synthetic = bool(len(rows)) and all(str(i).startswith("SYN_") for i in rows["id"])
    return Spread(spread_markdown(rows), [], synthetic, image_types(rows), patients)


def training_data(record: RunRecord, synthetic: bool) -> tuple[TrainingData, list[str]]:
    """Where the run's training images come from, read from its prepared folder's state, and
    warnings when the card cannot state their licence itself."""
    if synthetic:
        return TrainingData(DEMO), []
    try:
        state = PreparedFolder(record.prepared).state_if_any() if record.prepared else None
    except (OSError, ValueError):
        state = None
    if state is None or state.origin is None:
        return TrainingData(None), ["the prepared folder's state was not found, so the card "
                                    "cannot say where the training images come from: state "
                                    "their source and licence in README.md on the Hub"]
    warnings = ["the run trained on your own data (not an ISIC dataset): state its source, "
                "licence and citation in README.md on the Hub, where the card asks for them"
                ] if state.origin == OWN else []
    name = state.source_metadata.name if state.source_metadata else None
    return TrainingData(state.origin, name, state.licence_columns, state.hair,
                        state.caption_template), warnings


_CAPTION_FIELDS = (("sex", "the patient's sex"), ("age", "age"), ("site", "lesion site"),
                   ("tone", "the skin-tone category measured on each photo"),
                   ("artefacts", "the artefacts found on it ("
                                 f"{', '.join(ARTEFACT_WORDS.values())})"))
"""What each caption placeholder says of an image, as the card words it."""


def _captions(template: str | None, hair: str | None) -> str:
    """How the training captions were made, as the card's data section words it after the
    images: the template, what it names, and the hair tag (or its absence)."""
    if not template:
        return "with captions whose template was not recorded"
    used = fields(template)
    words = [word for name, word in _CAPTION_FIELDS if name in used]
    shown = template.replace("`", "'")
    built = f"with captions from the template `{shown}`" + (
        f" (built from {', '.join(words[:-1])} and {words[-1]})" if len(words) > 1 else
        f" (built from {words[0]})" if words else "")
    if hair == "off":
        return f"{built}, with no hair tag (`--hair off`)"
    mode = f" by `--hair {hair}`" if hair else ""
    return f"{built}, and a `hairy` tag where hair was detected{mode}"


def _data_source(data: TrainingData) -> str:
    """Where the images come from, as the card's data section words it after their number."""
    challenge = _CHALLENGES.get(data.origin or "")
    if challenge is not None:
        return f"from the [{challenge.name} Challenge dataset]({challenge.url})"
    return {ARCHIVE: "from an [ISIC Archive](https://www.isic-archive.com/) export",
            HAM10000: f"from the [HAM10000 dataset]({HAM10000_PAGE}) (the ISIC 2018 training set)",
            OWN: "from the uploader's own data, not an ISIC dataset",
            DEMO: "generated by medsynth-kohya's demo (no real patients)",
            }.get(data.origin or "", "from a source this card does not record")


def _archive_licences(data: TrainingData) -> str:
    """Where an Archive export's per-image licences are."""
    where = f"the export's metadata file (`{data.metadata or ARCHIVE_METADATA}`)"
    columns = data.licence_columns
    if columns is None:
        return (f"Each image's licence and credit are in the `copyright_license` and "
                f"`attribution` columns of {where}, where the export has them, else in the ISIC "
                "Archive under the image's `isic_id`.")
    if not columns:
        return (f"{where[0].upper()}{where[1:]} has no licence column: look each image up by "
                "its `isic_id` in the ISIC Archive before reusing it.")
    named = " and ".join(f"`{c}`" for c in columns)
    return (f"Each training image's licence and credit are in the {named} "
            f"column{'s' if len(columns) > 1 else ''} of {where}, by its `isic_id`.")


def _data_licence(data: TrainingData) -> str:
    """The data section's paragraph on the images' licence and attribution."""
    challenge = _CHALLENGES.get(data.origin or "")
    if challenge is not None:
        return (f"The {challenge.name} images are licensed under CC-BY-NC 4.0 by the "
                f"International Skin Imaging Collaboration. Attribution: {challenge.attribution}")
    if data.origin == ARCHIVE:
        return ("Images in the ISIC Archive are licensed image by image, each under CC-0, CC-BY "
                "4.0 or CC-BY-NC 4.0 with its own attribution. " + _archive_licences(data)
                + " CC-BY and CC-BY-NC images must be credited as their attribution says, and "
                "CC-BY-NC ones may not be used commercially.")
    if data.origin == HAM10000:
        return (f"The HAM10000 images are {_HAM_TERMS}: check the terms on [its page]"
                f"({HAM10000_PAGE}) before publishing weights trained on them. Attribution: "
                "Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset. *Sci Data* 5, "
                "180161 (2018). https://doi.org/10.1038/sdata.2018.161")
    if data.origin == DEMO:
        return ("The demo images are generated by medsynth-kohya (`SYN_` ids): they show no "
                "patient and carry no licence of another party.")
    known = ("These images are the uploader's own data; medsynth-kohya does not know their "
             "terms." if data.origin == OWN else
             "The source of these images was not recorded when this card was written.")
    return f"**Licence of the training data: not stated.** {known} {_UNSTATED}"


def _data_terms(data: TrainingData, license: str) -> str:
    """The licence section's sentence on how the training images' terms bear on the weights."""
    challenge = _CHALLENGES.get(data.origin or "")
    if challenge is not None:
        return (f" This is the licence of the {challenge.name} training images "
                f"({_CHALLENGE_TERMS})." if license == DEFAULT_LICENSE else
                f" The {challenge.name} training images are {_CHALLENGE_TERMS}; their terms may "
                "limit what you can do with weights derived from them.")
    if data.origin == ARCHIVE:
        return (" The ISIC Archive training images are licensed image by image (CC-0, CC-BY or "
                "CC-BY-NC 4.0; see Training data); their terms may limit what you can do with "
                "weights derived from them.")
    if data.origin == HAM10000:
        return (f" The HAM10000 training images are {_HAM_TERMS}; their terms may limit what "
                "you can do with weights derived from them.")
    if data.origin == DEMO:
        return ""
    return (" The training images' own licence is not stated here (see Training data); it may "
            "limit what you can do with weights derived from them.")


def licence_warnings(data: TrainingData, license: str) -> list[str]:
    """A warning when `license` allows commercial use of weights trained on images whose terms
    forbid it (an ISIC challenge set's CC-BY-NC 4.0, HAM10000's): the card says so, the
    command line should too."""
    if "-nc" in license or "noncommercial" in license:
        return []
    challenge = _CHALLENGES.get(data.origin or "")
    terms = (f"the {challenge.name} training images are CC-BY-NC 4.0" if challenge else
             "the HAM10000 training images are for non-commercial use" if
             data.origin == HAM10000 else None)
    if terms is None:
        return []
    return [f"--license {license} allows commercial use, but {terms}: their terms may not let "
            f"you release derived weights so; use --license {DEFAULT_LICENSE} unless you hold "
            "other rights"]


def _citation(data: TrainingData) -> str:
    """The card's citation section."""
    challenge = _CHALLENGES.get(data.origin or "")
    if challenge is not None:
        return challenge.bibtex
    if data.origin == ARCHIVE:
        return ("Cite the [ISIC Archive](https://www.isic-archive.com/) and credit each "
                "training image as its `attribution` says.")
    if data.origin == HAM10000:
        return "```bibtex\n" + _HAM_ENTRY + "\n```"
    if data.origin == DEMO:
        return "No data set to cite: the demo images are generated."
    return f"The training data's citation is not recorded. {_UNSTATED}"


def _setting(value: Any) -> str:
    local = isinstance(value, str) and ("/" in value or "\\" in value) and (
        Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).is_absolute())
    if local:
        return f"`{Path(value).name}` (local file)"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _settings(record: RunRecord) -> str:
    config = record.options
    lines = ["| sd-scripts option | value |", "|---|---|"]
    lines += [f"| `{key}` | {_md(_setting(config[key]))} |" for key in _SETTINGS if key in config]
    if record.expected_steps is not None:
        lines.append(f"| optimizer steps (expected) | `{record.expected_steps}` |")
    return "\n".join(lines)


def _hardware(record: RunRecord) -> str:
    if not record.gpus:
        return "CPU"
    names = Counter(f"{gpu.name or 'GPU'} ("
                    f"{'memory unknown' if gpu.memory_gib is None else f'{gpu.memory_gib} GiB'})"
                    for gpu in record.gpus)
    found = ", ".join(f"{count} x {name}" for name, count in names.items())
    processes = record.processes
    if not processes:
        return found
    return f"{found}; trained with {processes} process{'' if processes == 1 else 'es'}"


def _duration(record: RunRecord) -> str:
    """How long the run took, from the record's start and end ("not recorded" when either is
    missing, unreadable, or one has a time zone and the other not, as a hand edit may leave)."""
    try:
        start, end = _instant(str(record.start)), _instant(str(record.end))
        seconds = int((end - start).total_seconds())
    except (TypeError, ValueError):
        return "not recorded"
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _instant(text: str) -> datetime:
    """An ISO 8601 time read as Python 3.11's fromisoformat reads it, on 3.10 too (whose
    fromisoformat refuses a trailing Z and a fraction of other than 3 or 6 digits)."""
    text = re.sub(r"[Zz]$", "+00:00", text.strip())
    return datetime.fromisoformat(
        re.sub(r"\.(\d+)", lambda digits: "." + digits[1][:6].ljust(6, "0"), text, count=1))


def _versions(record: RunRecord) -> str:
    versions = record.versions or VersionsRecord()
    named = [("medsynth_kohya", versions.medsynth_kohya),
             ("sd-scripts", versions.sd_scripts_commit and str(versions.sd_scripts_commit)[:12]),
             *versions.extra.items()]
    return ", ".join(f"{name} {value}" for name, value in named if value) or "not recorded"


@dataclass(frozen=True)
class BaseModel:
    """The model a LoRA was trained on, as its card can name it: its Hub id (None when not
    known) and, for a local checkpoint or folder, its name."""

    hub_id: str | None
    local: str | None = None

    @property
    def sdxl(self) -> bool:
        """Whether it is SDXL base 1.0 itself (the card may then say so, and its licence)."""
        return self.hub_id == BASE_MODEL


_SDXL_FILE = re.compile(r"sd_xl_base_1\.0.*\.safetensors")
"""SDXL base 1.0's own checkpoint files (sd_xl_base_1.0.safetensors, ..._0.9vae...)."""


def base_model(record: RunRecord, given: str | None = None) -> BaseModel:
    """What the run trained on: a Hub id as recorded; a local file by its name, with `given`
    (push --base-model) as its Hub id, else SDXL base only when it bears SDXL base's file name
    (a fine-tune's file has no known Hub id)."""
    value = record.base_model
    local = Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).exists()
    if value and re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not local:
        if given and given != value:
            raise UserError(f"--base-model {given} is not {value}, the Hub model the run trained "
                            "on: leave --base-model out")
        return BaseModel(value)
    if not value:
        return BaseModel(given)
    name = _quoted(Path(value).name)
    return BaseModel(given or (BASE_MODEL if _SDXL_FILE.fullmatch(name) else None), name)


def base_warnings(base: BaseModel) -> list[str]:
    """A warning when the card cannot name the run's base model on the Hub (no base_model)."""
    if base.hub_id:
        return []
    what = (f"the local model {base.local}" if base.local else
            "a base model its record does not name")
    return [f"the run trained on {what}, whose Hub id the card cannot know: the card names no "
            "base_model; if the model is on the Hub, pass --base-model OWNER/NAME"]


def _base_values(base: BaseModel) -> dict[str, str]:
    """The card's words for its base model: the intro's link, the diffusers and sd-scripts
    snippets' model, and the licence sentence (SDXL base's licence only for SDXL base)."""
    hub_id, local = base.hub_id, base.local
    link = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else ""
    if hub_id:
        named = f"{link} (as the local file `{local}`)" if local else link
    elif local:
        named = f"the local model `{local}` (its Hub id was not recorded)"
    else:
        named = "an SDXL model that the run record does not name"
    if base.sdxl:
        licence = (f" Using the LoRA also means using [SDXL base 1.0](https://huggingface.co/"
                   f"{BASE_MODEL}), whose own licence (CreativeML Open RAIL++-M) applies as well,"
                   " including its use restrictions.")
    else:
        licence = (" Using the LoRA also means using its base model, "
                   + (f"{link}, whose own licence applies as well: read it on its page." if hub_id
                      else f"{named}, whose own licence applies as well: this card cannot "
                      "say which it is."))
    unnamed = "BASE-MODEL"
    return {"base_model": named, "licence": licence,
            "load": "from_pretrained" if hub_id or not local else "from_single_file",
            "base_source": hub_id or local or unnamed,
            "ckpt": local or ("sd_xl_base_1.0.safetensors" if base.sdxl else hub_id or unnamed)}


def _tags(name: str) -> list[str]:
    """The card's tags: TAGS and the run's class as a Hub tag ("basal-cell-carcinoma"), none
    when the class is not recorded."""
    tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return [*TAGS, *([tag] if tag and tag not in TAGS else [])]


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each `{{ name }}` once; an unknown name is a programming error."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"model card value {name!r} was not provided")
        return values[name]

    return _PLACEHOLDER.sub(one, template)


def _evaluation(evaluation: CardEvaluation | None) -> str:
    """The card's evaluation section: the report's verdict and where the report is."""
    if evaluation is None:
        return ("Not evaluated in this version. `medsynth-kohya evaluate` measures near-copies "
                "of training photos, prompt adherence, FID/KID and what synthetic images add "
                "to a classifier; `push --eval REPORT` publishes its figures here.")
    html, data = (path for path, _ in evaluation.files)
    rows = [f"| {_md(check)} | {_md(status)} | {_md(detail)} |"
            for check, status, detail in evaluation.verdict]
    return "\n".join([
        f"Measured by medsynth-kohya {evaluation.version} `evaluate` on "
        f"{files.counted(evaluation.n_synthetic, 'synthetic image')}. The full report, with "
        "how each figure "
        f"was computed (training photos withheld), is [`{html}`]({html}); every figure is in "
        f"`{data}` and in this card's `model-index` metadata.", "",
        "| check | verdict | detail |", "|---|---|---|", *rows])


def _training_files(uploaded: Sequence[str]) -> str:
    """The card's sentence on the run's files in training/: those this push uploads, so a run
    folder that lost its rendered TOML files is not said to have them here."""
    rendered = [path for path in uploaded if path.startswith("training/")
                and path.endswith(".toml")]
    if not rendered:
        return ("The run record (`training/run.json`) is in this repository; the run folder "
                "held none of the rendered sd-scripts files (`training/*.toml`) to publish.")
    names = ", ".join(f"`{path}`" for path in rendered)
    return (f"The rendered sd-scripts files ({names}) and the run record (`training/run.json`) "
            "are in this repository.")

def render_card(*, repo_id: str, record: RunRecord, trigger: str, weight_name: str,
                license: str, prompts: Mapping[str, Any], samples: Sequence[Sample],
                sample_paths: Mapping[Path, str], grid: str | None, spread: str,
                data: TrainingData, files: Sequence[tuple[str, int]],
                evaluation: CardEvaluation | None = None,
                types: Counter[str] | None = None, base: BaseModel | None = None) -> str:
    """The README.md model card: ModelCardData metadata (with an evaluation report's
    figures as `model-index`) and the template's body; `types` are the training images'
    image types (spread_section), which its title and first sentence name; `base` what it was
    trained on (default base_model(record))."""
    from huggingface_hub import ModelCard, ModelCardData

    trained_on = base or base_model(record)
    words = _base_values(trained_on)
    example = _quoted(next((p for p in prompts["prompts"] if p), "")
                      or f"photo of skin, {trigger} on torso")
    widgets = []
    for sample in samples[:WIDGETS]:
        widget: dict[str, Any] = {"text": sample.prompt or trigger}
        if sample.negative_prompt:
            widget["parameters"] = {"negative_prompt": sample.negative_prompt}
        widget["output"] = {"url": sample_paths[sample.path]}
        widgets.append(widget)
    card_data = ModelCardData(base_model=trained_on.hub_id, license=license,
                              tags=_tags(record.output_name),
                              library_name="diffusers", pipeline_tag="text-to-image",
                              instance_prompt=trigger, widget=widgets or None,
                              model_name=repo_id.split("/")[-1] if evaluation else None,
                              eval_results=list(evaluation.results) if evaluation else None)

    if grid:
        shown = f"![Sample grid]({grid})"
    elif samples:
        shown = "\n".join(["| image | prompt |", "|---|---|"] + [
            f"| ![sample]({sample_paths[s.path]}) | {_md(s.prompt or '')} |" for s in samples])
    else:
        shown = "No sample images were uploaded with this version."
    if samples or grid:
        shown += ("\n\nGenerated by this LoRA; synthetic images, not patients.")

    name = record.output_name or "lora"
    kind, photos = _image_kind(types or Counter())
    dataset = record.dataset or DatasetRecord()
    overrides = record.overrides or []
    license_text = (
        f"The LoRA weights are released under `{license}`." + _data_terms(data, license)
        + words["licence"])
    data_warning = ("\n> **Note:** this LoRA was trained on medsynth-kohya's *generated demo "
                    "data* (no real images). It tests the pipeline and is not a model of "
                    f"{name}.\n" if data.origin == DEMO else "")
    file_lines = ["| file | size |", "|---|---:|"] + [
        f"| `{path}` | {_human(size)} |" for path, size in files]
    values = {
        "card_data": card_data.to_yaml(),
        "class_name": name,
        "file_stem": _quoted(name),
        "title": f"{name}: SDXL LoRA for synthetic {kind} images ({trigger})",
        "photos": photos,
        "base_model": words["base_model"],
        "load": words["load"],
        "base_source": words["base_source"],
        "ckpt": words["ckpt"],
        "trigger": trigger,
        "example_prompt": example,
        "tool_version": str(record.version or __version__),
        "data_warning": data_warning,
        "files": "\n".join(file_lines),
        "training_files": _training_files([path for path, _ in files]),
        "train_images": "?" if dataset.train_images is None else str(dataset.train_images),
        "repeats": _times(dataset.repeats),
        "manifest_sha256": str(dataset.manifest_sha256 or "not recorded"),
        "data_source": _data_source(data),
        "captions": _captions(dataset.caption_template or data.caption_template, data.hair),
        "data_licence": _data_licence(data),
        "citation": _citation(data),
        "spread": spread,
        "settings": _settings(record),
        "preset": str(record.preset or "?"),
        "overrides": ", ".join(f"`--set {_md(o)}`" for o in overrides) if overrides else "none",
        "hardware": _hardware(record),
        "duration": _duration(record),
        "status": str(record.status or "unknown"),
        "versions": _versions(record),
        "samples": shown,
        "evaluation": _evaluation(evaluation),
        "width": str(prompts["width"]),
        "height": str(prompts["height"]),
        "steps": str(prompts["steps"]),
        "scale": str(prompts["scale"]),
        "repo_id": repo_id,
        "weight_name": weight_name,
        "license_text": license_text,
    }
    template = (data_dir("templates") / "model_card.md").read_text(encoding="utf-8")
    card = ModelCard(_fill(template, values))
    return str(card).rstrip("\n") + "\n"


def metadata(card: str) -> Any:
    """The YAML metadata at the head of a rendered card (None when it has none)."""
    import yaml

    head = card.split("---", 2)[1] if card.startswith("---") else ""
    try:
        return yaml.safe_load(head)
    except yaml.YAMLError:
        return None


def filled(card: str) -> str:
    """What of a rendered card is not the template's own text: its metadata (each value on one
    line, as the tool's wording spells it) and the values its placeholders were filled with,
    one a line (the whole card when it does not follow the template)."""
    import yaml

    template = (data_dir("templates") / "model_card.md").read_text(encoding="utf-8")
    parts = _PLACEHOLDER.split(template)  # text, name, text, name, ..., text
    pattern = "".join(re.escape(part) if i % 2 == 0 else "(.*?)" for i, part in enumerate(parts))
    match = re.fullmatch(pattern, card, re.DOTALL)
    if not match:
        return card
    head = metadata(card)
    unwrapped = None if head is None else yaml.safe_dump(head, width=2**31, allow_unicode=True)
    return "\n".join(unwrapped if name == "card_data" and unwrapped else value
                     for name, value in zip(parts[1::2], match.groups(), strict=True))
