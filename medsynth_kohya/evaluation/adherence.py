"""Prompt adherence: each synthetic image measured as prepare measures real photos
(`data.measure`: hair, skin tone, artefacts) and compared with what its prompt asked for, and
the spread of every attribute over the real and the synthetic set."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medsynth_kohya import files
from medsynth_kohya.data.captions import ARTEFACT_WORDS, HAIR_TAG
from medsynth_kohya.data.measure import ARTEFACTS, TONES, Measurement

_TONE_WORDS = re.compile(r"\b(" + "|".join(sorted((re.escape(name) for name, _ in TONES),
                                                  key=len, reverse=True)) + r")\b")
"""A skin tone category in a prompt, the longest first ("very light" before "light")."""
_ARTEFACT_WORDS = re.compile("|".join(re.escape(words) for words in ARTEFACT_WORDS.values()))
"""What a caption says for an artefact ("dark corners" names no skin tone)."""


@dataclass(frozen=True)
class Prompted:
    """What a synthetic image's prompt asked for (None: the prompt did not say)."""

    hairy: bool | None = None
    skin_tone: str | None = None


def asked_for(prompt: str, hairy: bool | None, skin_tone: str | None) -> Prompted:
    """What `prompt` asked for of the recorded hair and skin tone: a recorded value the prompt
    does not name (a caption template without {tone}) was not asked for. A bare row's prompt
    names its hair by leaving out the tag that captions always append for hair."""
    text = prompt.lower()
    tones = set(_TONE_WORDS.findall(_ARTEFACT_WORDS.sub(" ", text)))
    hair_named = re.search(rf"\b{re.escape(HAIR_TAG)}\b", text) is not None
    return Prompted(hairy if hairy is False or hair_named else None,
                    skin_tone if skin_tone and skin_tone.lower() in tones else None)


def _rate(values: Sequence[bool]) -> str:
    return (f"{sum(values)}/{len(values)} ({files.percent(sum(values), len(values))})" if values
            else "-")


def _share(values: Sequence[str | None], name: str) -> str:
    known = [v for v in values if v is not None]
    return _rate([v == name for v in known])


def _agreement(pairs: Sequence[tuple[object, object]]) -> float | None:
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def adherence(real: Sequence[Measurement], synthetic: Sequence[Measurement],
              prompted: Sequence[Prompted]) -> dict[str, Any]:
    """Figures and table rows (attribute, real, synthetic, prompted and found)."""
    hair_pairs = [(p.hairy, m.hairy) for p, m in zip(prompted, synthetic, strict=True)
                  if p.hairy is not None]
    tone_pairs = [(p.skin_tone, m.skin_tone) for p, m in zip(prompted, synthetic, strict=True)
                  if p.skin_tone is not None]
    confusion = Counter(f"prompted {'hairy' if p else 'bare'}, {'found' if f else 'not found'}"
                        for p, f in hair_pairs)
    hair_agree, tone_agree = _agreement(hair_pairs), _agreement(tone_pairs)
    table: list[tuple[str, list[str]]] = [
        ("hairy", [_rate([m.hairy for m in real]), _rate([m.hairy for m in synthetic]),
                   f"{sum(a == b for a, b in hair_pairs)}/{len(hair_pairs)}" if hair_pairs
                   else "-"])]
    for name, _ in TONES:
        table.append((f"skin tone: {name}", [_share([m.skin_tone for m in real], name),
                                             _share([m.skin_tone for m in synthetic], name),
                                             ""]))
    if tone_pairs:
        table.append(("skin tone as prompted", ["", "",
                                                f"{sum(a == b for a, b in tone_pairs)}/"
                                                f"{len(tone_pairs)}"]))
    for artefact in ARTEFACTS:
        table.append((artefact, [_rate([getattr(m, artefact) for m in real]),
                                 _rate([getattr(m, artefact) for m in synthetic]), ""]))
    return {
        "method": "Every real training photo and every synthetic image measured by prepare's "
                  "own measurements (data.measure: hair, ITA skin tone and its six categories, "
                  "vignette, ruler marks, gel bubbles). An image adheres when what is found "
                  "matches what its prompt asked for (the `hairy` and `skin_tone` columns of "
                  "the synthetic metadata).",
        "hair": {"agreement": hair_agree, "n_prompted": len(hair_pairs),
                 "confusion": dict(confusion)},
        "skin_tone": {"agreement": tone_agree, "n_prompted": len(tone_pairs)},
        "real": _spread(real), "synthetic": _spread(synthetic),
        "table": table,
    }


def _spread(measurements: Sequence[Measurement]) -> dict[str, Any]:
    """Rates of each attribute and the ITA values, for report.json."""
    count = len(measurements) or 1
    return {"n": len(measurements),
            "hairy": sum(m.hairy for m in measurements) / count,
            "skin_tone": dict(Counter(m.skin_tone or "unknown" for m in measurements)),
            "ita": [m.ita for m in measurements],
            **{a: sum(getattr(m, a) for m in measurements) / count for a in ARTEFACTS}}
