"""`report.json` (every figure), `report.html` (one self-contained page) and
`report-public.html` (the same page without the training photos) of an evaluation.

The pages need no network and no tool to read: plots are inline SVG, images are embedded as
base64 JPEG, and each section says how its numbers were computed. The training photos (perhaps
private, clinical ones) appear only in the local page; `push --eval` publishes the public one.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import files
from medsynth_kohya.data.measure import ARTEFACTS
from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    from cv2.typing import MatLike

JSON_NAME = "report.json"
HTML_NAME = "report.html"
PUBLIC_HTML_NAME = "report-public.html"
"""The page without the training photos: what `push --eval` publishes as report.html."""
THUMB_SIDE = 160
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:left}th{background:#f3f3f3}.pass{color:#176117}.fail{color:#a11}.warn{color:#a60}
.skipped{color:#666}.pair{display:inline-block;margin:.4em;text-align:center;font-size:.8em}
.pair img{margin:1px}.method{color:#444;font-size:.92em}svg{background:#fafafa}
""" + (f".withheld{{display:inline-flex;align-items:center;justify-content:center;"
       f"width:{THUMB_SIDE}px;height:{THUMB_SIDE}px;margin:1px;background:#eee;color:#666}}")
_LOCAL_NOTE = (f"Only this local page shows the training photos: {PUBLIC_HTML_NAME}, the page "
               "`push --eval` publishes, withholds them and the synthetic images flagged as "
               "near-copies of one. Keep this page private.")
_PUBLIC_NOTE = ("The training photos are withheld from this published page (they may be "
                "private), and so are synthetic images flagged as near-copies of one; their ids "
                "and distances stay.")


@dataclass(frozen=True)
class Pair:
    """A synthetic image and its nearest training photo as shown: thumbnails (data URIs), the
    caption with their distance, and whether the synthetic image is flagged as a near-copy."""

    synthetic_src: str
    training_src: str
    caption: str
    flagged: bool


def thumbnail(image: MatLike) -> str:
    """A small JPEG of a BGR image as a data URI."""
    import cv2

    height, width = image.shape[:2]
    scale = THUMB_SIDE / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _e(value: object) -> str:
    return html.escape(str(value))


def _histogram(values: Sequence[float], marker: float | None, label: str) -> str:
    """An SVG histogram of `values` in [0, max] with an optional vertical marker line."""
    width, height, bins = 520, 180, 30
    if not values:
        return "<p>(no values)</p>"
    top = max(max(values), marker or 0.0, 1e-9)
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / top * bins))] += 1
    peak = max(counts)
    step, scale = (width - 60) / bins, (height - 50) / peak
    bars = "".join(
        f'<rect x="{40 + i * step:.1f}" y="{height - 30 - c * scale:.1f}" '
        f'width="{step - 1:.1f}" height="{c * scale:.1f}" fill="#1f77b4"/>'
        for i, c in enumerate(counts))
    line = ""
    if marker is not None:
        x = 40 + marker / top * (width - 60)
        line = (f'<line x1="{x:.1f}" y1="15" x2="{x:.1f}" y2="{height - 30}" stroke="#d62728" '
                f'stroke-dasharray="4"/><text x="{x + 3:.1f}" y="25" font-size="11" '
                f'fill="#d62728">threshold {marker:g}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(label)}">{bars}'
            f'{line}<text x="40" y="{height - 10}" font-size="11">0</text>'
            f'<text x="{width - 40}" y="{height - 10}" font-size="11">{top:.3g}</text>'
            f'<text x="{width / 2 - 60:.0f}" y="{height - 10}" font-size="11">{_e(label)}'
            f'</text></svg>')


def _roc(curves: Sequence[Mapping[str, Any]]) -> str:
    """ROC curves, one polyline per mix, with their AUC and interval in the legend."""
    side = 300
    lines = [f'<line x1="40" y1="{side - 30}" x2="{side - 10}" y2="10" stroke="#bbb" '
             'stroke-dasharray="3"/>']
    for i, curve in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        points = " ".join(f"{40 + f * (side - 50):.1f},{side - 30 - t * (side - 40):.1f}"
                          for f, t in zip(curve["fpr"], curve["tpr"], strict=True))
        auc = curve["auc"]
        lines.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="1.5"/>')
        lines.append(f'<text x="{side + 10}" y="{30 + 16 * i}" font-size="12" fill="{colour}">'
                     f'mix {curve["mix"]:g}: AUC {auc["value"]:.3f} '
                     f'[{auc["low"]:.3f}, {auc["high"]:.3f}]</text>')
    return (f'<svg width="{side + 260}" height="{side}" role="img" aria-label="ROC curves">'
            + "".join(lines) + f'<text x="{side / 2 - 40:.0f}" y="{side - 8}" font-size="11">'
            'false positive rate</text><text x="2" y="12" font-size="11">TPR</text></svg>')


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(src: str, alt: str, withheld: str | None) -> str:
    """An embedded thumbnail, or a placeholder saying why it is withheld."""
    if withheld is not None:
        return f"<span class='withheld'>{_e(withheld)}</span>"
    return f"<img src='{src}' alt='{alt}'>"


def _pair(pair: Pair, public: bool) -> str:
    """One pair; the public page withholds the training photo, and a flagged synthetic image."""
    synthetic = _image(pair.synthetic_src, "synthetic",
                       "near-copy withheld" if public and pair.flagged else None)
    training = _image(pair.training_src, "training", "training photo withheld" if public else None)
    return f"<div class='pair'>{synthetic}{training}<br>{_e(pair.caption)}</div>"


def _copies(section: Mapping[str, Any], pairs: Sequence[Pair], public: bool) -> str:
    flagged = section["flagged"]
    parts = [f"<h2>1. Near-copies of training photos</h2><p class='method'>{_e(section['method'])}"
             "</p>", _histogram(section["distances"], section["threshold"],
                                "nearest hash distance (fraction of bits)")]
    parts.append(f"<p><b>{len(flagged)}</b> of "
                 f"{files.counted(section['n_synthetic'], 'synthetic image')} are "
                 f"within {section['threshold']:g} of a training photo.</p>")
    deep = section.get("deep")
    if deep:
        parts.append("<p class='method'>" + _e(deep["method"]) + "</p>"
                     + _histogram(deep["similarities"], deep.get("threshold"),
                                  "nearest cosine similarity"))
    if pairs:
        parts.append("<h3>Flagged and nearest pairs (synthetic | training)</h3><p class='method'>"
                     + _e(_PUBLIC_NOTE if public else _LOCAL_NOTE) + "</p>")
        parts += [_pair(pair, public) for pair in pairs]
    return "".join(parts)


def _bars(groups: Sequence[tuple[str, float, float]]) -> str:
    """Side-by-side bars of a real (blue) and a synthetic (red) share per attribute."""
    row, width = 22, 560
    parts = []
    for i, (label, real, synthetic) in enumerate(groups):
        y = 20 + i * row
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{_e(label)}</text>')
        for j, (value, colour) in enumerate(((real, _COLOURS[0]), (synthetic, _COLOURS[1]))):
            parts.append(f'<rect x="160" y="{y + j * 9}" width="{value * (width - 230):.1f}" '
                         f'height="8" fill="{colour}"/><text x="{165 + value * (width - 230):.1f}"'
                         f' y="{y + 8 + j * 9}" font-size="9">{value:.0%}</text>')
    legend = (f'<text x="160" y="12" font-size="11" fill="{_COLOURS[0]}">real</text>'
              f'<text x="200" y="12" font-size="11" fill="{_COLOURS[1]}">synthetic</text>')
    return (f'<svg width="{width}" height="{30 + len(groups) * row}" role="img" '
            f'aria-label="attribute spread">{legend}{"".join(parts)}</svg>')


def _spread_groups(section: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    real, synthetic = section["real"], section["synthetic"]
    groups = [("hairy", real["hairy"], synthetic["hairy"])]
    for tone in sorted(set(real["skin_tone"]) | set(synthetic["skin_tone"])):
        groups.append((f"tone: {tone}", real["skin_tone"].get(tone, 0) / max(real["n"], 1),
                       synthetic["skin_tone"].get(tone, 0) / max(synthetic["n"], 1)))
    groups += [(a, real[a], synthetic[a]) for a in ARTEFACTS]
    return groups


def _adherence(section: Mapping[str, Any]) -> str:
    rows = [[name, *values] for name, values in section["table"]]
    return (f"<h2>2. Prompt adherence and attribute spread</h2><p class='method'>"
            f"{_e(section['method'])}</p>"
            + _table(rows, ["attribute", "real", "synthetic", "prompted and found"])
            + _bars(_spread_groups(section)))


def _fidelity(section: Mapping[str, Any]) -> str:
    figures = section["figures"]
    kid = (f"{figures['kid_mean']:.5f} (one estimate on {figures['kid_subset_size']} images a "
           "side: too few for subsets, no spread measured)" if figures["kid_std"] is None else
           f"{figures['kid_mean']:.5f} ± {figures['kid_std']:.5f} "
           f"(subsets of {figures['kid_subset_size']})")
    rows = [["FID", f"{figures['fid']:.3f}"],
            ["KID", kid],
            ["precision (k={})".format(figures["neighbours"]), f"{figures['precision']:.3f}"],
            ["recall (k={})".format(figures["neighbours"]), f"{figures['recall']:.3f}"],
            ["images", f"{figures['n_real']} real, {figures['n_synthetic']} synthetic"]]
    return (f"<h2>3. Fidelity and diversity</h2><p class='method'>{_e(section['method'])}</p>"
            + _table(rows, ["measure", "value"]))


def _utility(section: Mapping[str, Any]) -> str:
    figures = section["figures"]
    rows = [[f"{m['mix']:g}", m["synthetic_used"],
             f"{m['auc']['value']:.3f} [{m['auc']['low']:.3f}, {m['auc']['high']:.3f}]",
             f"{m['balanced_accuracy']['value']:.3f} [{m['balanced_accuracy']['low']:.3f}, "
             f"{m['balanced_accuracy']['high']:.3f}]"] for m in figures["mixes"]]
    return (f"<h2>4. Downstream utility</h2><p class='method'>{_e(section['method'])}</p>"
            + _table(rows, ["synthetic : real melanomas", "synthetic used", "ROC-AUC [95% CI]",
                            "balanced accuracy [95% CI]"])
            + _roc(figures["mixes"])
            + "".join(f"<p class='warn'>{_e(n)}</p>" for n in figures["notes"]))


def _skipped(title: str, section: Mapping[str, Any]) -> str:
    return f"<h2>{_e(title)}</h2><p class='skipped'>Skipped: {_e(section['skipped'])}</p>"


def render_html(report: Mapping[str, Any], pairs: Sequence[Pair], *, public: bool) -> str:
    """The whole page from the report's figures and the embedded image pairs; a `public` page
    holds no training photo."""
    sections = report["sections"]
    verdict = "".join(
        f"<tr><td>{_e(v['check'])}</td><td class='{_e(v['status'])}'>{_e(v['status'])}</td>"
        f"<td>{_e(v['detail'])}</td></tr>" for v in report["verdict"])
    inputs = report["inputs"]
    body = [f"<h1>Synthetic set evaluation</h1><p>Real: <b>{_e(inputs['real'])}</b> "
            f"({files.counted(inputs['n_training'], 'training photo')}) · synthetic: "
            f"<b>{_e(inputs['synthetic'])}</b> ({files.counted(inputs['n_synthetic'], 'image')}) · "
            f"medsynth-kohya {_e(report['version'])} · {_e(report['created'])}</p>"
            + "".join(f"<p class='warn'>{_e(note)}</p>" for note in report.get("notes", ())),
            "<table><tr><th>check</th><th>verdict</th><th>detail</th></tr>" + verdict
            + "</table>", _copies(sections["copies"], pairs, public),
            _adherence(sections["adherence"])]
    for title, key, render in (("3. Fidelity and diversity", "fidelity", _fidelity),
                               ("4. Downstream utility", "utility", _utility)):
        section = sections[key]
        body.append(_skipped(title, section) if "skipped" in section else render(section))
    skipped = report["skipped"]
    if skipped:
        body.append("<h2>Files left out</h2>" + _table(
            [[s["set"], s["id"], s["reason"]] for s in skipped], ["set", "id", "reason"]))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medsynth-kohya "
            f"evaluation</title><style>{_STYLE}</style></head><body>" + "".join(body)
            + "</body></html>\n")


def write(out: Path, report: Mapping[str, Any], pairs: Sequence[Pair]) -> None:
    """Write both pages, then the figures, each atomically; an earlier report's figures go
    first, so a write stopped half-way leaves no report.json beside another report's pages
    (`read` refuses the folder, and push never publishes a torn report)."""
    (out / JSON_NAME).unlink(missing_ok=True)
    files.write_text(out / HTML_NAME, render_html(report, pairs, public=False))
    files.write_text(out / PUBLIC_HTML_NAME, render_html(report, pairs, public=True))
    files.write_json(out / JSON_NAME, dict(report))


def written(out: Path) -> bool:
    """Whether `out` holds a whole report: its figures are written last."""
    return (out / JSON_NAME).is_file()


def published(out: Path) -> tuple[tuple[str, Path], ...]:
    """The files of the report in `out` that may be published, by the name each takes there:
    the public page (no training photo) as report.html, and the figures."""
    return (HTML_NAME, out / PUBLIC_HTML_NAME), (JSON_NAME, out / JSON_NAME)


def read(out: Path) -> dict[str, Any]:
    """The figures of the report in `out`, whose public page must be there too (for
    publishing; the local page may be gone)."""
    files.ensure_folder(out, "give the --out folder of `medsynth-kohya evaluate`", "--eval")
    pages = (out / HTML_NAME, out / PUBLIC_HTML_NAME)
    if not (out / JSON_NAME).is_file() or not any(page.is_file() for page in pages):
        raise UserError(f"{out} holds no {JSON_NAME} and {HTML_NAME}: give the --out folder of "
                        "`medsynth-kohya evaluate`")
    try:
        document = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
        ok = (document.get("tool") == "medsynth-kohya"
              and {"copies", "adherence", "fidelity", "utility"} <= set(document["sections"])
              and isinstance(document["verdict"], list) and "inputs" in document)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"{out / JSON_NAME} is not a report of `medsynth-kohya evaluate`; "
                        "re-run evaluate to write it again")
    if not (out / PUBLIC_HTML_NAME).is_file():
        raise UserError(f"{out} has no {PUBLIC_HTML_NAME}, the page without training photos "
                        "that push publishes (an older evaluate wrote none); re-run "
                        "`medsynth-kohya evaluate` with --force")
    result: dict[str, Any] = document
    return result
