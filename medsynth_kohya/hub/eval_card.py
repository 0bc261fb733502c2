"""An `evaluate` report on the model card: `model-index` results, a summary, the report files.

`push --eval REPORT` publishes REPORT/report-public.html (the page without the training photos)
as report.html and report.json under `evaluation/` in the repo (through the same upload plan and
last scan as every other file) and turns the report's figures into huggingface_hub
`EvalResult`s, which ModelCardData writes as the card's
`model-index`: the synthetic set's checks (near-copies, prompt adherence, FID, KID, precision,
recall) as a text-to-image task, the classifier's ROC-AUC and balanced accuracy at each mix as
an image-classification task on the held-out real patients, or images where the real data
records no patient id (95 % intervals in the metric's args). Data only: `card` renders it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import files
from medsynth_kohya.evaluation import report as report_files
from medsynth_kohya.hub import privacy

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

FOLDER = "evaluation"
"""Where the report goes in the repo."""
DATASET_TYPE = "isic"
_GENERATION = ("text-to-image", "Synthetic dermoscopy images")
_CLASSIFICATION = "image-classification", "Melanoma vs other lesions on held-out {unit}s"


@dataclass(frozen=True)
class CardEvaluation:
    """What a report adds to a push: files, card metadata and text, and flagged images."""

    files: tuple[tuple[str, Path], ...]
    """(path in the repo, local file)."""
    results: tuple[EvalResult, ...]
    verdict: tuple[tuple[str, str, str], ...]
    """(check, status, detail) rows of the report's summary."""
    n_synthetic: int
    version: str
    """The medsynth-kohya version that wrote the report."""
    flagged: Mapping[str, str]
    """Synthetic image id -> the training photo the report found it nearly copies."""
    checked: Mapping[str, str]
    """Synthetic image id -> the sha256 of the image the report checked (a report lies outside
    the set: an id alone would vouch for whatever image bears it in any set)."""
    lora_sha256: str | None = None
    """The LoRA that made the evaluated set (None: the report does not say)."""
    real: str = "?"
    """The name of the real data the set was compared with."""
    manifest_sha256: str | None = None
    """That real data's prepared manifest (None: an ISIC source, or the report does not say)."""
    source_sha256: str | None = None
    """That ISIC source's metadata file (None: a prepared folder, or the report does not say)."""
    own: tuple[str, ...] = ()
    """The report's own names (its JSON keys): with the tool's wording, what the last scan does
    not take the user's name in (a login such as `may` is a word of the report's prose)."""


def _generation(document: Mapping[str, Any]) -> list[EvalResult]:
    """The synthetic set's figures: near-copies, adherence, fidelity."""
    from huggingface_hub import EvalResult

    inputs, sections = document["inputs"], document["sections"]
    n_real, n_synthetic = inputs["n_training"], inputs["n_synthetic"]
    dataset = (f"{inputs['real']}: {files.counted(n_real, 'training photo')} vs "
               f"{files.counted(n_synthetic, 'synthetic image')}")

    def result(kind: str, value: float, name: str, **args: Any) -> EvalResult:
        return EvalResult(task_type=_GENERATION[0], task_name=_GENERATION[1],
                          dataset_type=DATASET_TYPE, dataset_name=dataset, metric_type=kind,
                          metric_value=value, metric_name=name, metric_args=args or None)

    copies = sections["copies"]
    deep = copies.get("deep", {}).get("threshold")
    rules = f"hash distance <= {copies['threshold']:g}" + (
        "" if deep is None else f", or feature similarity >= {deep:g}")
    found = [result("near_copies", len(copies["flagged"]),
                    f"Near-copies of training photos ({rules})",
                    n_synthetic=copies["n_synthetic"], threshold=copies["threshold"],
                    **({} if deep is None else {"deep_threshold": deep}))]
    for key, words in (("hair", "hair"), ("skin_tone", "skin tone")):
        figures = sections["adherence"][key]
        if figures["agreement"] is not None:
            found.append(result(f"prompt_adherence_{key}", figures["agreement"],
                                f"Prompt adherence: {words} found as prompted",
                                n_prompted=figures["n_prompted"]))
    fidelity = sections["fidelity"]
    if "figures" in fidelity:
        f = fidelity["figures"]
        sizes = {"n_real": f["n_real"], "n_synthetic": f["n_synthetic"],
                 "features": inputs.get("features")}
        found += [result("fid", f["fid"], f"FID ({sizes['features']} features)", **sizes),
                  result("kid", f["kid_mean"], "KID (mean over subsets)",
                         **({} if f["kid_std"] is None else {"std": f["kid_std"]}),
                         subset_size=f["kid_subset_size"], **sizes),
                  result("precision", f["precision"], "Precision (Kynkaanniemi et al. 2019, "
                         f"k={f['neighbours']})", **sizes),
                  result("recall", f["recall"], "Recall (Kynkaanniemi et al. 2019, "
                         f"k={f['neighbours']})", **sizes)]
    return found


def _classification(document: Mapping[str, Any]) -> list[EvalResult]:
    """The classifier's figures at each mix, with their 95 % intervals."""
    from huggingface_hub import EvalResult

    section = document["sections"]["utility"]
    if "figures" not in section:
        return []
    figures = section["figures"]
    unit = figures.get("unit") or _unit(str(section.get("method", "")))
    real, held_out = document["inputs"]["real"], figures["n_test"]
    melanomas = f"({figures['n_test_melanoma']} melanomas)"
    dataset = (f"{real}: {held_out} images {melanomas} of held-out patients, "
               f"{figures['n_patients']} patients in all" if unit == "patient" else
               f"{real}: {held_out} held-out images {melanomas}; no patient ids recorded, so "
               "split image by image")
    found = []
    for mix in figures["mixes"]:
        for kind, key, words in (("roc_auc", "auc", "ROC-AUC"),
                                 ("balanced_accuracy", "balanced_accuracy",
                                  "Balanced accuracy")):
            interval = mix[key]
            found.append(EvalResult(
                task_type=_CLASSIFICATION[0], task_name=_CLASSIFICATION[1].format(unit=unit),
                dataset_type=DATASET_TYPE, dataset_name=dataset, dataset_split="test",
                metric_type=kind, metric_value=interval["value"],
                metric_config=f"mix-{mix['mix']:g}",
                metric_name=f"{words}, {mix['mix']:g} synthetic per real melanoma",
                metric_args={"ci95": [interval["low"], interval["high"]],
                             # reports written before it was recorded resampled images
                             "bootstrap": figures.get("bootstrap", "image"),
                             "repeats": figures["repeats"],
                             "synthetic_used": mix["synthetic_used"],
                             "classifier": section.get("classifier", "logistic")}))
    return found


def _unit(method: str) -> str:
    """What an older report's classifier splits kept whole, from its method's first words (a
    report records `unit` since the card read it)."""
    return "image" if method.startswith("Image-level") else "patient"


def card_evaluation(folder: Path) -> CardEvaluation:
    """What the report in `folder` adds to the card and the repo."""
    document = report_files.read(folder)
    copies = document["sections"]["copies"]
    flagged = {str(f["synthetic_id"]): str(f["training_id"]) for f in copies["flagged"]}
    checked = {str(n["synthetic_id"]): str(n["sha256"]) for n in copies["nearest"]
               if n.get("sha256")}  # an older report's ids alone vouch for nothing
    return CardEvaluation(
        tuple((f"{FOLDER}/{name}", local) for name, local in report_files.published(folder)),
        tuple(_generation(document) + _classification(document)),
        tuple((str(v["check"]), str(v["status"]), str(v["detail"])) for v in document["verdict"]),
        int(document["inputs"]["n_synthetic"]), str(document.get("version", "?")), flagged,
        checked, document["inputs"].get("lora_sha256") or None,
        str(document["inputs"].get("real", "?")), document["inputs"].get("manifest_sha256") or None,
        document["inputs"].get("source_sha256") or None, privacy.key_pieces(document))
