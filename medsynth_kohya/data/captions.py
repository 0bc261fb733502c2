"""Caption templates: `photo of {sex} skin, {trigger} on {site}, at age {age}` plus `, hairy`.

A missing value drops its clause cleanly: the placeholder goes, and when it ends its clause
(split at commas and semicolons outside brackets) or is followed by another linking phrase, the
linking words or the label before it go too ("on {site}", "at age {age}", "tone: {tone}"), as
does text glued to it ("{age}-year-old"), so a caption never holds "nan", "None", a dangling
"at age", a doubled comma or an empty bracket.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

from medsynth_kohya.data.archive import SITE_WORDS
from medsynth_kohya.errors import UserError

DEFAULT_TEMPLATE = "photo of {sex} skin, {trigger} on {site}, at age {age}"
DEFAULT_TRIGGER = "me1anoma"
HAIR_TAG = "hairy"
FIELDS = ("sex", "site", "age", "trigger", "hair", "tone", "artefacts")
"""Placeholders a template may use; `{hair}` is appended as a last clause when not used."""
ARTEFACT_WORDS = {"vignette": "dark corners", "ruler": "ruler marks", "bubbles": "gel bubbles"}
"""What `{artefacts}` says for each artefact column that is true, in this order."""
_LINKING_WORDS = frozenset(
    ["on", "at", "age", "aged", "of", "in", "from", "with", "by", "the", "a", "an", "for", "to"]
)
_LINKS = "|".join(sorted(_LINKING_WORDS))
_WORD_START = r"(?:^|\s+|(?<=[(\[]))"
"""Where a linking word or label starts: the text's start, whitespace or an opening bracket."""
_TRAILING_LINKS = re.compile(
    r"(?:" + _WORD_START + r"[^\s:()\[\]]+:)?(?:" + _WORD_START + r"(?:" + _LINKS + r"))*\s*$",
    re.IGNORECASE)
"""A label (`tone:`), linking words and whitespace (spaces, tabs, newlines) that end a piece of
literal text, an opening bracket before them kept ("(at age {age}"): they go with a missing
value after them."""
_LEADING_LINK = re.compile(r"^(?:\s+(?:" + _LINKS + r")\b|\s*[,;)\]])", re.IGNORECASE)
"""Literal text after a value that starts another linking phrase or closes it: the value's own
linking words before it are then no one else's."""
_GLUED = re.compile(r"^[^\s,;()\[\]]+")
"""Text glued to a value, with no space between (`-year-old` in `{age}-year-old`)."""
_SEPARATORS, _OPENING, _CLOSING = ",;", "([", ")]"
_Token = tuple[bool, str]  # (is_field, text or field name)


def _tokens(template: str) -> list[_Token]:
    """Split a template into literal text and field tokens, rejecting what it cannot render."""
    tokens: list[_Token] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"caption template {template!r} is malformed ({exc}); "
                        "use {field} placeholders and {{ }} for literal braces") from None
    for literal, field, spec, conversion in parsed:
        if literal:
            tokens.append((False, literal))
        if field is None:
            continue
        if field in FIELDS and (spec or conversion):
            raise UserError(f"caption template placeholder {{{field}}} has a conversion or "
                            f"format ({f'!{conversion}' if conversion else f':{spec}'}), which "
                            f"captions do not take; write {{{field}}}")
        if field not in FIELDS:
            raise UserError(f"caption template placeholder {{{field}}} is unknown; "
                            f"use {', '.join('{' + f + '}' for f in FIELDS)}")
        tokens.append((True, field))
    return tokens


def fields(template: str) -> set[str]:
    """The placeholders `template` uses."""
    return {text for is_field, text in _tokens(template) if is_field}


def validate_template(template: str) -> None:
    """Raise UserError unless `template` renders and mentions the trigger."""
    if "trigger" not in fields(template):
        raise UserError(f"caption template {template!r} has no {{trigger}}: "
                        "every caption must carry the trigger token")


def _clauses(tokens: list[_Token]) -> list[tuple[str, list[_Token]]]:
    """Group tokens into the template's clauses, split at commas and semicolons outside
    brackets, each with the separator before it ("" for the first)."""
    clauses: list[tuple[str, list[_Token]]] = [("", [])]
    depth = 0
    for is_field, text in tokens:
        if is_field:
            clauses[-1][1].append((True, text))
            continue
        piece = ""
        for char in text:
            depth += (char in _OPENING) - (char in _CLOSING and depth > 0)
            if char in _SEPARATORS and not depth:
                if piece:
                    clauses[-1][1].append((False, piece))
                clauses.append((char, []))
                piece = ""
            else:
                piece += char
        if piece:
            clauses[-1][1].append((False, piece))
    return clauses


def _render_clause(clause: list[_Token], values: Mapping[str, str | None]) -> str:
    """Fill one clause; a missing value takes with it the linking words or label before it
    when it ends the clause or another linking phrase follows, and text glued to it.

    A clause whose placeholders are all missing and that starts with one goes whole
    ("{age} years old"); one that only wraps it keeps its words ("photo of {sex} skin").
    """
    fields = [text for is_field, text in clause if is_field]
    content = [(is_field, text) for is_field, text in clause if is_field or text.strip()]
    if fields and not any(values.get(f) for f in fields) and content and content[0][0]:
        return ""
    out: list[str] = []
    glued_to_missing = False
    for index, (is_field, text) in enumerate(clause):
        if not is_field:
            out.append(_GLUED.sub("", text, count=1) if glued_to_missing else text)
            glued_to_missing = False
            continue
        value = values.get(text)
        if value:
            out.append(value)
            continue
        after = clause[index + 1][1] if index + 1 < len(clause) and not clause[index + 1][0] \
            else ""
        at_end = all(not f and not t.strip() for f, t in clause[index + 1 :])
        if (at_end or _LEADING_LINK.match(after)) and out:
            out[-1] = _TRAILING_LINKS.sub("", out[-1])
        glued_to_missing = bool(_GLUED.match(after))
    text = _tidy("".join(out))
    if all(word.lower() in _LINKING_WORDS for word in text.split()):
        return ""
    return text


def _tidy(text: str) -> str:
    """What dropped values leave: a separator beside a bracket, an empty bracket pair, a space
    before a separator or a closing bracket, runs of whitespace."""
    text = re.sub(r"([(\[])\s*[,;]\s*", r"\1", text)
    text = re.sub(r"\s*[,;]\s*([)\]])", r"\1", text)
    text = re.sub(r"\s*(?:\(\s*\)|\[\s*\])", "", text)
    text = re.sub(r"\s+([,;)\]])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def caption_values(sex: str | None, age: int | None, site: str | None, trigger: str,
                   hairy: bool, tone: str | None = None,
                   artefacts: Sequence[str] = ()) -> dict[str, str | None]:
    """A manifest row's placeholder values: the site as its caption word (`archive.SITE_WORDS`),
    the skin tone category, and the artefact columns that are true (ARTEFACT_WORDS)."""
    return {"sex": sex, "age": None if age is None else str(age),
            "site": None if site is None else SITE_WORDS.get(site, site),
            "trigger": trigger, "hair": HAIR_TAG if hairy else None, "tone": tone,
            "artefacts": ", ".join(ARTEFACT_WORDS[name] for name in ARTEFACT_WORDS
                                   if name in artefacts) or None}


def render_caption(template: str, values: Mapping[str, str | None]) -> str:
    """Render one caption from `values` (a missing or empty value is None or "")."""
    tokens = _tokens(template)
    if not any(is_field and text == "hair" for is_field, text in tokens):
        tokens += [(False, ", "), (True, "hair")]
    kept = [(separator, text) for separator, clause in _clauses(tokens)
            if (text := _render_clause(clause, values))]
    return "".join(text if index == 0 else f"{separator} {text}"
                   for index, (separator, text) in enumerate(kept))
