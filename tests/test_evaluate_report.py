"""What one `evaluate` run tells its user: report.json's inputs and sections, the pages' pairs and
captions, the progress of each stage, --deep-threshold flags and what the public page withholds."""

from __future__ import annotations

import html
import json
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import pytest

from medsynth_kohya import files
from medsynth_kohya.evaluation import features, utility
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate

from .eval_data import isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
pytestmark = pytest.mark.skipif(bool(features.missing(TINY)), reason="the eval extra (torch, "
                                "torchmetrics, scikit-learn) is not installed")


@pytest.fixture
def sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[str]]:
    """A download of 8 melanomas and 8 others, and a synthetic set of another image size: five
    new photos (hair named in some prompts) and a copy of the first training photo."""
    monkeypatch.setattr(utility, "BOOTSTRAP", 20)
    paths = isic_source(tmp_path / "isic", 8, 8, seed=3)
    copy = cv2.imread(str(next(iter(paths.values()))))
    images = [photo(4100 + i, hairy=i % 2 == 0, size=(384, 384)) for i in range(5)] + [copy]
    ids = synthetic_set(tmp_path / "syn", images, [i % 2 == 0 for i in range(5)] + [None])
    return tmp_path / "isic", tmp_path / "syn", ids


def _run(real: Path, synthetic: Path, out: Path, **options: Any
         ) -> tuple[Any, dict[str, Any], list[tuple[str, int, int]]]:
    seen: list[tuple[str, int, int]] = []
    result = evaluate(real, synthetic, out,
                      EvaluateOptions(features=TINY, mixes=(1.0,), repeats=1, max_labelled=12,
                                      **options),
                      on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    return result, json.loads((out / "report.json").read_text(encoding="utf-8")), seen


def _alts(page: str) -> list[str]:
    return re.findall(r"<img src='data:image/jpeg;base64,[^']+' alt='(\w+)'>", page)


def test_the_report_names_its_inputs_pairs_and_figures(
        tmp_path: Path, sets: tuple[Path, Path, list[str]]) -> None:
    real, synthetic, ids = sets
    result, document, seen = _run(real, synthetic, tmp_path / "report")
    assert result.out == tmp_path / "report" and result.page.is_file()
    assert document["tool"] == "medsynth-kohya"
    assert document["inputs"]["features"] == TINY and "numpy" in document["inputs"]["packages"]
    copies = document["sections"]["copies"]
    assert [entry["synthetic_id"] for entry in copies["nearest"]] == ids
    for entry in copies["nearest"]:
        image = synthetic / "images" / f"{entry['synthetic_id']}.png"
        assert entry["sha256"] == files.sha256(image)
    assert [f["synthetic_id"] for f in result.flagged] == [ids[5]]
    page = result.page.read_text(encoding="utf-8")
    for entry in copies["nearest"]:  # each synthetic image beside its nearest training photo
        best = entry["matches"][0]
        assert f"{entry['synthetic_id']} ~ {best['training_id']}: {best['distance']:.3f}" in page
    assert _alts(page).count("training") == len(ids)
    hair = next(row for row in result.verdict if row["check"] == "prompt adherence (hair)")
    assert hair["detail"].endswith("of 5 images match their prompt's hair")
    section = document["sections"]["utility"]
    assert section["classifier"] == "logistic" and "of 12 real photos" in section["method"]
    assert "logistic regression on frozen" in section["method"]
    assert section["figures"]["bootstrap"] == "patient"
    assert ("95% intervals by a patient-level (cluster) bootstrap: resamples of the held-out "
            "patients, each with all its photos (20 resamples pooled over splits; one holding a "
            "single class is drawn again).") in section["method"]
    assert html.escape(section["method"]) in result.page.read_text(encoding="utf-8")
    last = {stage: (done, total) for stage, done, total in seen}
    assert last["training photos"] == (8, 8) and last["synthetic images"] == (6, 6)
    assert last["labelled photos"][0] == last["labelled photos"][1] > 0
    # --max-labelled keeps the same photos every run: the figures repeat
    _, again, _ = _run(real, synthetic, tmp_path / "report", force=True)
    assert again["sections"]["utility"]["figures"] == section["figures"]


def test_a_deep_threshold_flags_and_the_public_page_withholds_what_it_flags(
        tmp_path: Path, sets: tuple[Path, Path, list[str]]) -> None:
    real, synthetic, ids = sets
    _, shown, _ = _run(real, synthetic, tmp_path / "first", classifier="none")
    deep = shown["sections"]["copies"]["deep"]
    assert deep["threshold"] is None and shown["sections"]["copies"]["flagged"] == [
        {"synthetic_id": ids[5], "training_id": deep["nearest"][5]["training_id"],
         "distance": shown["sections"]["copies"]["distances"][5]}]
    others = [entry for entry in deep["nearest"] if entry["synthetic_id"] != ids[5]]
    threshold = statistics.median(entry["similarity"] for entry in others)
    result, document, _ = _run(real, synthetic, tmp_path / "report", classifier="none",
                               deep_threshold=threshold)
    by_deep = [{"synthetic_id": e["synthetic_id"], "training_id": e["training_id"],
                "similarity": e["similarity"]} for e in others if e["similarity"] >= threshold]
    assert 0 < len(by_deep) < len(others)
    flagged = document["sections"]["copies"]["flagged"]
    assert flagged[1:] == by_deep and flagged[0]["synthetic_id"] == ids[5]
    assert result.flagged == flagged
    assert f"flagged at or above {threshold:g}" in document["sections"]["copies"]["deep"]["method"]
    row = next(r for r in result.verdict if r["check"] == "near-copies of training photos")
    assert row["status"] == "fail" and row["detail"] == (
        f"{len(flagged)} of 6 synthetic images within "
        f"{document['sections']['copies']['threshold']:g} of a training photo, or at a "
        f"feature similarity of {threshold:g} or more")
    first = next(r for r in shown["verdict"] if r["check"] == "near-copies of training photos")
    assert first["detail"] == (f"1 of 6 synthetic images within "
                               f"{shown['sections']['copies']['threshold']:g} of a training "
                               "photo")
    public = result.public_page.read_text(encoding="utf-8")
    assert _alts(public) == ["synthetic"] * (len(ids) - len(flagged))
    assert public.count("near-copy withheld</span>") == len(flagged)
    assert public.count("training photo withheld</span>") == len(ids)
    assert _alts(result.page.read_text(encoding="utf-8")).count("synthetic") == len(ids)


class _Page(HTMLParser):
    """The tables (rows of cell texts), headings and SVG plots (by their label) of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.plots: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(text)
        for svg in re.findall(r"<svg .*?</svg>", text):
            label = re.search(r'aria-label="([^"]*)"', svg)
            assert label is not None
            self.plots[html.unescape(label.group(1))] = svg

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def _table(page: _Page, header: list[str]) -> list[list[str]]:
    """The rows of the page's table with this header."""
    return next(table[1:] for table in page.tables if table[0] == header)


def _number(svg: str, attribute: str) -> list[float]:
    return [float(v) for v in re.findall(rf'<rect [^>]*\b{attribute}="([-\d.]+)"', svg)]


def _histogram_holds(svg: str, values: list[float], top: float) -> None:
    """Bars side by side inside the plot, as high as the count of `values` in their bin of
    [0, top], the right end labelled `top`, and no stray text."""
    xs, widths, heights = (_number(svg, a) for a in ("x", "width", "height"))
    bins = len(heights)
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / top * bins))] += 1
    assert [round(h / max(heights) * max(counts), 2) for h in heights] == counts
    assert all(x + w <= following for x, w, following in zip(xs, widths, xs[1:], strict=False))
    width = float(re.search(r'<svg width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    texts = re.findall(r'<text x="([-\d.]+)"[^>]*>([^<]*)</text>', svg)
    assert all(0 <= float(x) < width for x, _ in texts)
    labels = [text for _, text in texts]
    assert labels[labels.index("0") + 1] == f"{top:.3g}"
    assert re.sub(r"<[^>]+>", "", re.sub(r"<text[^>]*>.*?</text>", "", svg)) == ""


def test_the_page_shows_every_figure_of_the_report(
        tmp_path: Path, sets: tuple[Path, Path, list[str]]) -> None:
    real, synthetic, ids = sets
    (synthetic / "images" / f"{ids[5]}.png").unlink()  # no copy: nothing flagged, one left out
    result, document, _ = _run(real, synthetic, tmp_path / "report")
    page = _Page(result.page.read_text(encoding="utf-8"))
    sections = document["sections"]
    assert "1. Near-copies of training photos" in page.headings
    assert "Flagged and nearest pairs (synthetic | training)" in page.headings
    assert "3. Fidelity and diversity" in page.headings
    assert "4. Downstream utility" in page.headings
    adherence = sections["adherence"]
    assert _table(page, ["attribute", "real", "synthetic", "prompted and found"]) == [
        [str(cell) for cell in [name, *values]] for name, values in adherence["table"]]
    f = sections["fidelity"]["figures"]
    assert _table(page, ["measure", "value"]) == [
        ["FID", f"{f['fid']:.3f}"],
        ["KID", f"{f['kid_mean']:.5f} ± {f['kid_std']:.5f} (subsets of {f['kid_subset_size']})"],
        [f"precision (k={f['neighbours']})", f"{f['precision']:.3f}"],
        [f"recall (k={f['neighbours']})", f"{f['recall']:.3f}"],
        ["images", f"{f['n_real']} real, {f['n_synthetic']} synthetic"]]
    assert _table(page, ["synthetic : real melanomas", "synthetic used", "ROC-AUC [95% CI]",
                         "balanced accuracy [95% CI]"]) == [
        [f"{m['mix']:g}", str(m["synthetic_used"]),
         f"{m['auc']['value']:.3f} [{m['auc']['low']:.3f}, {m['auc']['high']:.3f}]",
         f"{m['balanced_accuracy']['value']:.3f} [{m['balanced_accuracy']['low']:.3f}, "
         f"{m['balanced_accuracy']['high']:.3f}]"] for m in sections["utility"]["figures"]["mixes"]]
    assert _table(page, ["set", "id", "reason"]) == [
        ["synthetic", ids[5], "in metadata.csv, no image file"]]
    assert f"({document['inputs']['n_training']} training photos)" in result.page.read_text(
        encoding="utf-8")
    copies = sections["copies"]
    _histogram_holds(page.plots["nearest hash distance (fraction of bits)"], copies["distances"],
                     max(*copies["distances"], copies["threshold"]))
    similarities = copies["deep"]["similarities"]
    _histogram_holds(page.plots["nearest cosine similarity"], similarities, max(similarities))
    spread = page.plots["attribute spread"]
    for tone, count in adherence["synthetic"]["skin_tone"].items():
        shares = re.search(rf">tone: {tone}</text>.*?>(\d+)%</text>.*?>(\d+)%</text>", spread)
        assert shares is not None
        real_share = adherence["real"]["skin_tone"].get(tone, 0) / adherence["real"]["n"]
        assert shares.groups() == (f"{real_share:.0%}"[:-1],
                                   f"{count / adherence['synthetic']['n']:.0%}"[:-1])


def test_a_kid_too_few_images_have_no_spread_for_is_said_so_not_shown_as_certain(
        tmp_path: Path, sets: tuple[Path, Path, list[str]]) -> None:
    """Three synthetic images leave no KID subsets below the set sizes: one estimate, whose
    std is recorded as unmeasured (null) and shown as such, never as ± 0."""
    real, synthetic, ids = sets
    for identifier in ids[3:]:
        (synthetic / "images" / f"{identifier}.png").unlink()
    result, document, _ = _run(real, synthetic, tmp_path / "report", classifier="none")
    section = document["sections"]["fidelity"]
    f = section["figures"]
    assert (f["n_synthetic"], f["kid_std"], f["kid_subset_size"]) == (3, None, 3)
    assert ("KID: mean and std over 100 random subsets of each set, of 1000 images or half the "
            "smaller set if less, so that subsets differ; with fewer than 4 images on a side, "
            "one estimate and no std)") in section["method"]
    page = _Page(result.page.read_text(encoding="utf-8"))
    assert _table(page, ["measure", "value"])[1] == [
        "KID", f"{f['kid_mean']:.5f} (one estimate on 3 images a side: too few for subsets, no "
               "spread measured)"]
    row = next(r for r in result.verdict if r["check"] == "fidelity (FID/KID)")
    assert f"KID {f['kid_mean']:.4f}, precision" in row["detail"] and "±" not in row["detail"]
