"""`--query`: a comparison of the metadata columns and the image measurements, checked
against an allow-list and evaluated here on pandas columns (pandas' own `eval` would run any
code, and lets a blank value match `!=`).

Metadata is known before any image is read, measurements only after: a query is split at its
top-level `and`s, the terms that name only metadata choose the images to scan, and the whole
query is judged again once each image is measured.
"""

from __future__ import annotations

import difflib
import functools
import io
import keyword
import operator
import re
import tokenize
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import ast

    import pandas as pd

_PROBE: dict[str, tuple[Literal["Int64", "Float64", "boolean", "string"], float | str]] = {
    "width": ("Int64", 1024), "height": ("Int64", 768), "hair_score": ("Float64", 0.5),
    "hairy": ("boolean", False), "ita": ("Float64", 30.0), "skin_tone": ("string", "intermediate"),
    "vignette": ("boolean", False), "ruler": ("boolean", False), "bubbles": ("boolean", False)}
"""Each measurement's dtype, as prepare gives it to a query, and a typical value: what a query
is tried on before any image is scanned."""
MEASURED = tuple(_PROBE)
"""The measurements a query may name, where the metadata has no column of that name."""
SIZE = ("width", "height")
"""The photo's pixel size, which a metadata column of that name never stands in for: Kaggle's
resized ISIC 2020 JPEGs come with the original photos' width and height in train.csv."""
DTYPES = {name: dtype for name, (dtype, _) in _PROBE.items()}
"""Each measurement's pandas dtype: prepare builds its columns with these, so a query is
checked on the types it will run on."""


def evaluate(frame: pd.DataFrame, query: str, *, example: str) -> pd.Series:
    """One True/False per row of `frame` (blank counts as False); a bad query is a UserError,
    a broken one shown `example` (a query on the columns the command's user can name)."""
    import pandas as pd

    tree, shown = _refuse_unsafe(query, frame.columns, example)
    _refuse_quoted_numbers(query)
    try:
        with warnings.catch_warnings():  # pandas' ("has match groups"), numpy's (x / 0)
            warnings.simplefilter("ignore")
            evaluated = _Evaluation(frame, shown).value(tree)
    except _Unknown as exc:
        raise UserError(_unknown_name(query, exc.name, frame.columns)) from None
    except _NotText as exc:
        raise UserError(_not_text(query, exc.part, exc.values)) from None
    except Exception as exc:  # pandas raises many types for a bad user expression
        said = _text_ordered(frame, query) if isinstance(exc, TypeError) else None
        raise UserError(said or f"--query {query!r} failed: {type(exc).__name__}: {exc}"
                        ) from None
    if not isinstance(evaluated, pd.Series) or evaluated.dtype.kind != "b":
        raise UserError(f"--query {query!r} must give one True/False per row")
    picked: pd.Series = evaluated.fillna(False).astype(bool)
    return picked


class _Unknown(Exception):
    """A name in a query that is no column of the frame."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _NotText(Exception):
    """`.str` on a part of a query whose values are no text (a column of numbers)."""

    def __init__(self, part: str, values: pd.Series) -> None:
        super().__init__(part)
        self.part, self.values = part, values


def _not_text(query: str, part: str, values: pd.Series) -> str:
    """The message for `.str` on `part` of `query`, whose `values` are no text: what they are,
    and the query that makes them text first."""
    import pandas as pd

    kind = ("true/false values" if pd.api.types.is_bool_dtype(values) else "numbers"
            if pd.api.types.is_numeric_dtype(values) else f"{values.dtype} values")
    fixed = query.replace(f"{part}.str.", f'{part}.astype("str").str.')
    example = f": make its values text first (--query {fixed!r})" if fixed != query else ""
    return f"--query {query!r}: {part} holds {kind}, not text, so it has no .str{example}"


class _Evaluation:
    """A checked query's syntax tree evaluated on a frame's columns, as pandas' `eval` would,
    but with a blank value matching no comparison (neither == nor !=, in nor not in): pandas
    reads `column != "x"` as `not column.isin(["x"])`, which a blank matches."""

    def __init__(self, frame: pd.DataFrame, shown: dict[str, str]) -> None:
        self.frame, self.shown = frame, shown

    def value(self, node: ast.AST) -> Any:
        """What `node` gives: a column, a constant, a list, or a computed Series."""
        import ast

        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.JoinedStr):  # only constants in it (_refused)
            return "".join(str(self.value(part)) for part in node.values)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return [self.value(element) for element in node.elts]
        if isinstance(node, ast.Name):
            name = self.shown.get(node.id, node.id)
            if name not in self.frame.columns:
                raise _Unknown(name)
            return self.frame[name]
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.BoolOp):
            join = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            values = [self.value(operand) for operand in node.values]
            return functools.reduce(join, values)
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.Not) and not _is_series(operand):
                return not operand
            unary: dict[type[ast.unaryop], Callable[[Any], Any]] = {
                ast.Not: operator.invert, ast.Invert: operator.invert, ast.USub: operator.neg,
                ast.UAdd: operator.pos}
            return unary[type(node.op)](operand)
        if isinstance(node, ast.BinOp):
            binary = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                      ast.Div: operator.truediv, ast.BitAnd: operator.and_,
                      ast.BitOr: operator.or_}
            return binary[type(node.op)](self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Call):
            arguments = [self._argument(node, argument) for argument in node.args]
            keywords = {str(k.arg): self._argument(node, k.value) for k in node.keywords}
            return self.value(node.func)(*arguments, **keywords)
        if isinstance(node, ast.Attribute):  # a method of a column or of its .str (_method)
            owner = self.value(node.value)
            try:
                return getattr(owner, node.attr)
            except AttributeError:
                if node.attr != "str" or not _is_series(owner):
                    raise
                raise _NotText(self._shown(ast.unparse(node.value)), owner) from None
        raise TypeError(f"{type(node).__name__} is not allowed")

    def _argument(self, call: ast.Call, node: ast.expr) -> Any:
        """An argument of a method `call`: a constant, where astype takes a type named by
        _TYPES (bare or quoted) as the type it stands for."""
        import ast

        value = node.id if isinstance(node, ast.Name) and _named_type(call, node) \
            else self.value(node)
        astype = isinstance(call.func, ast.Attribute) and call.func.attr == "astype"
        return _TYPES.get(value, value) if astype and isinstance(value, str) else value

    def _shown(self, text: str) -> str:
        """`text` (part of the checked query) with its placeholders as the names in backticks
        they stand for."""
        return _restored(text, self.shown)

    def _compare(self, node: ast.Compare) -> Any:
        """A (chained) comparison, blank (pandas' NA) in each row where an operand is blank."""
        import ast

        order = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
                 ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
        left, found = self.value(node.left), None
        for operation, operand in zip(node.ops, node.comparators, strict=True):
            right = self.value(operand)
            membership = isinstance(operation, ast.In | ast.NotIn) or (
                isinstance(operation, ast.Eq | ast.NotEq)
                and any(isinstance(side, str | list) for side in (left, right)))
            if membership:
                result = _member(left, right)
                result = ~result if isinstance(operation, ast.NotEq | ast.NotIn) else result
            else:
                result = order[type(operation)](left, right)
            result = _unless_blank(result, left, right)
            found = result if found is None else found & result
            left = right
        return found


def _is_series(value: object) -> bool:
    """Whether `value` is a pandas Series (a column, or what was computed from one)."""
    import pandas as pd

    return isinstance(value, pd.Series)


def _member(left: Any, right: Any) -> Any:
    """`left in right`, as pandas reads it: a column's values in a list (a string is a list of
    one), or a constant among a column's values."""
    def listed(value: Any) -> Any:
        return value if isinstance(value, list) or _is_series(value) else [value]

    if _is_series(left):
        return left.isin(listed(right))
    if _is_series(right):
        return right.isin(listed(left))
    return left in listed(right)


def _unless_blank(result: Any, *operands: Any) -> Any:
    """`result` of comparing `operands`, blank (pandas' NA) where any of them is blank."""
    if not _is_series(result):
        return result
    blank = functools.reduce(operator.or_, [operand.isna() for operand in operands
                                            if _is_series(operand)], result.isna())
    return result.astype("boolean").mask(blank)


def _booleans(plain: str) -> str:
    """`plain` with `&` and `|` read as `and` and `or`, as pandas reads them: `a > 1 & b < 2`
    is two comparisons, where Python would compare `1 & b`."""
    starts = _line_starts(plain)
    pieces, last = [], 0
    for token in _operators_and_operands(plain):
        if token.string in ("&", "|"):
            at = starts[token.start[0] - 1] + token.start[1]
            pieces += [plain[last:at], " and " if token.string == "&" else " or "]
            last = at + 1
    return "".join([*pieces, plain[last:]])


def _line_starts(text: str) -> list[int]:
    """Where each line of `text` starts, as an offset: a token's (row, column) is at
    `starts[row - 1] + column`."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


_ALLOWED = ("a query compares columns: column names (`in backticks` if they hold spaces or "
            "are Python words such as class), numbers, quoted text, lists of them, "
            "== != < <= > >= in, not in, and, or, not, & | ~, + - * /, column.isna(), .notna(), "
            ".astype(str/int/float or a quoted type) and column.str.contains/startswith/"
            "endswith/match/fullmatch/lower/upper/strip/len(...)")
"""What a query may be made of, for the refusal of anything else."""
_METHODS = {"isna", "notna", "astype"}
"""The methods a query may call on a column itself."""
_STR_METHODS = {"contains", "startswith", "endswith", "match", "fullmatch", "lower", "upper",
                "strip", "len"}
"""The methods a query may call on a column's `.str`."""
_BACKTICKED = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(`[^`]*`)""")
"""A quoted string (left as it is) or a backtick-quoted column name."""


def _refuse_unsafe(query: str, columns: Collection[object], example: str
                   ) -> tuple[ast.expr, dict[str, str]]:
    """Refuse all but comparisons of columns, before `query` is evaluated: pandas' Python
    engine would run calls, attributes and `@` variables (any Python code); `example` is shown
    where the query is empty or broken. Its syntax tree (`&` and `|` read as `and` and `or`)
    and what each placeholder name in it stands for."""
    import ast

    if not query.strip():
        raise UserError(f"--query is empty: give a condition on the metadata columns, e.g. "
                        f"--query {example!r}")
    placeheld, shown = _placeheld(query)
    _refuse_variables(query, placeheld, columns)
    plain = _booleans(placeheld).strip()
    try:
        tree = ast.parse(plain, mode="exec")
    except SyntaxError as exc:
        fix = (_python_word(placeheld, shown, columns)
               or f"compare columns, e.g. --query {example!r}")
        raise UserError(f"--query {query!r} is not a valid expression ({exc.msg}): {fix}"
                        ) from None
    except (RecursionError, MemoryError):  # Python's parser gives up on deep nesting
        raise UserError(_TOO_DEEP) from None
    if _depth(tree) > _DEEPEST:
        raise UserError(_TOO_DEEP)
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign | ast.AugAssign):
        raise UserError(f"--query {query!r} assigns instead of comparing: write == for equals")
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        raise UserError(f"--query {query!r} is not one expression: compare columns, e.g. "
                        f"--query {example!r}")
    refused = _refused(tree.body[0].value)
    if refused is not None:
        part = _restored(ast.get_source_segment(plain, refused) or type(refused).__name__,
                         shown)
        raise UserError(f"--query {query!r}: {part} is not allowed; {_ALLOWED}")
    return tree.body[0].value, shown


_DEEPEST = 200
"""How deeply a query's parts may nest (`not not ...`, `a + b + ...`): deeper ones would pass
Python's recursion limit while they are checked and evaluated."""
_TOO_DEEP = (f"--query is nested too deeply (more than {_DEEPEST} levels of not, ~, - or "
             "arithmetic): simplify it")
"""The refusal of a query nested deeper than _DEEPEST."""


def _depth(tree: ast.AST) -> int:
    """How many levels deep `tree`'s nodes nest, counted without recursion."""
    import ast

    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending += [(child, depth + 1) for child in ast.iter_child_nodes(node)]
    return deepest


def _placeheld(query: str) -> tuple[str, dict[str, str]]:
    """`query` with each backtick-quoted column name replaced by a Python name, and what each
    of those stands for (the name within the backticks)."""
    shown: dict[str, str] = {}

    def placeholder(found: re.Match[str]) -> str:
        if found.group(2) is None:
            return found.group(1)
        shown[f"_column{len(shown)}_"] = found.group(2)[1:-1]
        return f"_column{len(shown) - 1}_"

    return _BACKTICKED.sub(placeholder, query), shown


def _restored(text: str, shown: dict[str, str]) -> str:
    """`text` with each placeholder name (`_placeheld`) as the name in backticks it stands for."""
    for name, original in shown.items():
        text = text.replace(name, f"`{original}`")
    return text


_OPERATOR_WORDS = {"and", "or", "not", "in", "is", "True", "False", "None"}
"""The Python words a query uses as such: every other one is a column's name, in backticks."""


def _python_word(placeheld: str, shown: dict[str, str], columns: Collection[object]
                 ) -> str | None:
    """How to name a column that Python reads as one of its words (`class`, `if`): in
    backticks, with the query so written; None where `placeheld` (`_placeheld`) names none."""
    words = [token for token in (_tokens(placeheld) if "\n" not in placeheld else [])
             if token.type == tokenize.NAME and keyword.iskeyword(token.string)
             and token.string not in _OPERATOR_WORDS and token.string in columns]
    if not words:
        return None
    fixed = placeheld
    for token in reversed(words):
        fixed = fixed[:token.start[1]] + f"`{token.string}`" + fixed[token.end[1]:]
    return (f"{words[0].string} is a Python word; name the column in backticks "
            f"(--query {_restored(fixed, shown)!r})")


def _refuse_variables(query: str, plain: str, columns: Collection[object]) -> None:
    """Refuse an `@name` (pandas' Python variables), naming the column meant where it is
    one; `plain` is `query` with its backtick-quoted names replaced."""
    tokens = _operators_and_operands(plain)
    for at, token in enumerate(tokens):
        if token.string != "@":
            continue
        name = tokens[at + 1] if at + 1 < len(tokens) else None
        after = tokens[at + 2].string if at + 2 < len(tokens) else ""
        if name is None or name.type != tokenize.NAME or after in (".", "(", "["):
            raise UserError(f"--query {query!r}: @ (a Python variable) is not allowed; "
                            f"{_ALLOWED}")
        raise UserError(_unknown_name(query, name.string, columns, variable=True))


def _refused(node: ast.AST) -> ast.AST | None:
    """The first part of a query's syntax tree that is no comparison of columns (a call only
    where it is an allowed method on a column with constant arguments), else None."""
    import ast

    plain = (ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Compare, ast.BoolOp,
             ast.UnaryOp, ast.BinOp, ast.Load, ast.And, ast.Or, ast.Not, ast.Invert, ast.USub,
             ast.UAdd, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
             ast.BitAnd, ast.BitOr, ast.Add, ast.Sub, ast.Mult, ast.Div)
    if isinstance(node, ast.Call):
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        allowed = (_method(node.func) and all(keyword.arg for keyword in node.keywords)
                   and all(isinstance(argument, ast.Constant) or _named_type(node, argument)
                           for argument in arguments))
        return None if allowed else node
    if isinstance(node, ast.JoinedStr):  # an f-string is text if nothing in it is run
        return None if all(isinstance(part, ast.Constant) for part in node.values) else node
    if not isinstance(node, plain):
        return node
    operators = (ast.operator, ast.cmpop, ast.unaryop, ast.boolop)  # shown with their operands
    found = next((found for child in ast.iter_child_nodes(node)
                  if (found := _refused(child)) is not None), None)
    return node if isinstance(found, operators) else found


_TYPES = {"str": "string", "int": "Int64", "float": "Float64"}
"""The types astype may be given by name, bare (`age_approx.astype(str)`) or quoted, and the
pandas types they stand for: ones where a blank stays blank (int refuses a blank)."""


def _named_type(call: ast.Call, argument: ast.AST) -> bool:
    """Whether `argument` of `call` is a bare type name that astype may take (`_TYPES`)."""
    import ast

    return (isinstance(call.func, ast.Attribute) and call.func.attr == "astype"
            and isinstance(argument, ast.Name) and argument.id in _TYPES)


def _method(node: ast.AST) -> bool:
    """Whether `node` is an allowed method of a column: `column.isna`, `column.str.len`, also
    on what an allowed method gave (`column.str.strip().str.lower`)."""
    import ast

    if not isinstance(node, ast.Attribute):
        return False
    if _column(node.value):
        return node.attr in _METHODS
    inner = node.value
    return (isinstance(inner, ast.Attribute) and _column(inner.value) and inner.attr == "str"
            and node.attr in _STR_METHODS)


def _column(node: ast.AST) -> bool:
    """Whether `node` stands for a column's values: its name, or an allowed method of one."""
    import ast

    return isinstance(node, ast.Name) or (isinstance(node, ast.Call) and _refused(node) is None)


def _ordered(query: str) -> list[tuple[str, tokenize.TokenInfo]]:
    """Each (name, literal) that `query` orders by <, >, <= or >=: `age_approx > 50`,
    `"50" <= age_approx`."""
    tokens = _operators_and_operands(query)
    literal = (tokenize.STRING, tokenize.NUMBER)
    found = []
    for left, sign, right in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if sign.string not in ("<", ">", "<=", ">="):
            continue
        if left.type == tokenize.NAME and right.type in literal:
            found.append((left.string, right))
        elif right.type == tokenize.NAME and left.type in literal:
            found.append((right.string, left))
    return found


def _refuse_quoted_numbers(query: str) -> None:
    """Refuse a number in quotes ordered against a column (`age_approx > "50"`): text is
    ordered letter by letter, so "100" < "50" and "unknown" > "50", silently."""
    import ast

    for name, literal in _ordered(query):
        if literal.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(literal.string)
            float(value)
        except (ValueError, SyntaxError, TypeError):  # not a number in quotes, or an f-string
            continue
        fixed = query.replace(literal.string, str(value).strip(), 1)
        raise UserError(f"--query {query!r} orders {name} against the text {literal.string}, "
                        "which compares letter by letter (\"100\" < \"50\"): write the number "
                        f"without quotes (--query {fixed!r})")


def _text_ordered(frame: pd.DataFrame, query: str) -> str | None:
    """Why ordering a column against a number failed: the column holds text (one value shown
    that is no number) where it should hold numbers; None when `query` orders none."""
    import pandas as pd

    for name, literal in _ordered(query):
        if literal.type != tokenize.NUMBER or name not in frame.columns \
                or pd.api.types.is_numeric_dtype(frame[name]):
            continue
        values = frame[name].dropna().astype(str)
        text = values[pd.to_numeric(values, errors="coerce").isna()]
        example = (text if len(text) else values).iloc[0] if len(values) else ""
        return (f"--query {query!r}: column {name} holds text, not numbers (e.g. {example!r}), "
                f"so it cannot be ordered against {literal.string}: order a column of "
                f"numbers, or make {name}'s values numbers (blank where unknown) in the "
                "metadata CSV")
    return None


def measured(columns: Collection[object]) -> tuple[str, ...]:
    """The measurements a query's names mean beside metadata `columns`: those no column is
    named, and always the photo's SIZE (the manifest's width and height)."""
    return tuple(name for name in MEASURED if name in SIZE or name not in columns)


def _operators_and_operands(query: str) -> list[tokenize.TokenInfo]:
    """`query`'s names, operators, strings and numbers (no layout tokens)."""
    return [t for t in _tokens(query) if t.type in (tokenize.NAME, tokenize.OP, tokenize.STRING,
                                                    tokenize.NUMBER)]


def _tokens(query: str) -> list[tokenize.TokenInfo]:
    """`query`'s Python tokens, or none when it is not Python-like (pandas says why)."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(query).readline))
    except (tokenize.TokenError, SyntaxError):
        return []


def names(query: str) -> set[str]:
    """The names `query` uses: columns, measurements, and words such as `and`."""
    return {token.string for token in _tokens(query) if token.type == tokenize.NAME}


def _unknown_name(query: str, name: str, columns: Collection[object], *,
                  variable: bool = False) -> str:
    """The message for a word in `query` that is neither a column nor a measurement (written
    `@name` where `variable`): most often an unquoted text value, else a misspelt column."""
    known = [str(column) for column in columns] + [m for m in measured(columns)
                                                    if m not in columns]
    replacement = name if variable and name in known else f'"{name}"'
    quoted = query
    for token in reversed(_tokens(query) if "\n" not in query else []):
        if token.type == tokenize.NAME and token.string == name:
            start = token.start[1] - (variable and quoted[:token.start[1]].endswith("@"))
            quoted = quoted[:start] + replacement + quoted[token.end[1]:]
    example = f" ({quoted})" if quoted != query else ""
    if variable and name in known:
        return (f"--query {query!r}: @ marks a Python variable, which a query has none of; "
                f"name the column without it{example}")
    closest = _alike(name, known)
    without = "; drop the @ and" if variable else ";"
    said = f"--query {query!r}: {name} is neither a column nor a measurement{without}"
    if _beside_number(query, name):  # a column meant: quoting it would compare two constants
        shown = closest or known[:_LISTED]
        more = ", …" if not closest and len(known) > _LISTED else ""
        return (f"{said} name a column ({'closest' if closest else 'one of'}: "
                f"{', '.join(shown)}{more})")
    column = f", or name a column (closest: {', '.join(closest)})" if closest else ""
    return f"{said} quote text values{example}{column}"


def _alike(name: str, known: list[str]) -> list[str]:
    """Up to three of `known` like `name`: those that begin with its first three letters first
    (`agee`: age_approx, which difflib ranks below target), then those spelled alike."""
    start = name.lower()[:3]
    begun = [k for k in known if len(start) == 3 and k.lower().startswith(start)]
    return list(dict.fromkeys(begun + difflib.get_close_matches(name, known, n=3,
                                                                cutoff=0.6)))[:3]


_LISTED = 25
"""How many column names a refusal lists at most."""


def _beside_number(query: str, name: str) -> bool:
    """Whether `query` compares or computes `name` with a number (`target == 1`, `50 < age`):
    then it stands for a column, never for a text value."""
    tokens = _operators_and_operands(query)
    for at, token in enumerate(tokens):
        if token.type != tokenize.NAME or token.string != name:
            continue
        after = [t.type for t in tokens[at + 1:at + 3]]
        before = [t.type for t in tokens[max(at - 2, 0):at]]
        if after == [tokenize.OP, tokenize.NUMBER] or before == [tokenize.NUMBER, tokenize.OP]:
            return True
    return False


def _category_values(query: str, names: Collection[str]) -> list[tuple[str, str]]:
    """Each (measurement of `names`, literal) that `query` compares it with by ==, != or in:
    `skin_tone == "dark"`, `"tan" != skin_tone`, `skin_tone in ["a", "b"]`."""
    tokens = _operators_and_operands(query)
    found = []
    for at, token in enumerate(tokens):
        if token.type != tokenize.NAME or token.string not in names:
            continue
        after = [t.string for t in tokens[at + 1:at + 3]]
        if at >= 2 and tokens[at - 1].string in ("==", "!=") \
                and tokens[at - 2].type == tokenize.STRING:
            found.append((token.string, tokens[at - 2].string))
        if after[:1] in (["=="], ["!="], ["in"]):
            operands = _operand(tokens, at + 2)
        elif after == ["not", "in"]:
            operands = _operand(tokens, at + 3)
        else:
            continue
        found += [(token.string, t.string) for t in operands if t.type == tokenize.STRING]
    return found


def _operand(tokens: list[tokenize.TokenInfo], start: int) -> list[tokenize.TokenInfo]:
    """The tokens of the operand at `start`: one token, or a bracketed list to its end."""
    depth = 0
    for end, token in enumerate(tokens[start:], start):
        depth += (token.string in ("(", "[", "{")) - (token.string in (")", "]", "}"))
        if depth <= 0:
            return tokens[start:end + 1]
    return tokens[start:]


def _categories() -> dict[str, tuple[str, ...]]:
    """The values of each categorical measurement a query may compare with text."""
    from medsynth_kohya.data.measure import TONES

    return {"skin_tone": tuple(name for name, _ in TONES)}


def check(metadata: pd.DataFrame, query: str, *, example: str) -> None:
    """Judge `query` on the most complete row of `metadata` with a typical value of each
    measurement it lacks, so that a mistake on a measurement (an unquoted string, a number
    compared with text, a category no image can have) is a UserError before any image is
    scanned; `example` as for `evaluate`."""
    import ast

    import pandas as pd

    _refuse_unsafe(query, metadata.columns, example)
    if metadata.empty:
        return
    categories = {name: values for name, values in _categories().items()
                  if name in measured(metadata.columns)}
    for name, literal in _category_values(query, categories):
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):  # an f-string: pandas judges it
            continue
        if value not in categories[name]:
            raise UserError(f"--query {query!r}: {name} is never {value!r}; it is one of "
                            f"{', '.join(categories[name])}")
    row = metadata.loc[[metadata.notna().sum(axis=1).idxmax()]]
    evaluate(row.assign(**{name: pd.Series([value], index=row.index, dtype=dtype)
                           for name, (dtype, value) in _PROBE.items()
                           if name in measured(metadata.columns)}), query, example=example)


@dataclass(frozen=True)
class Split:
    """A query cut at its top-level `and`s into what can be judged before and after the scan
    (left whole when an `or` stands beside them)."""

    metadata: str | None
    """The terms that name no measurement, joined; None if there are none."""
    measured: bool
    """Whether any term names a measurement (the whole query is judged again after the scan)."""
    everything: bool
    """A term names both, so no metadata term can narrow the rows to scan: scan them all.
    Without it, terms on measurements alone narrow the default selection (melanomas)."""


def split(query: str, columns: Collection[str]) -> Split:
    """Cut `query` (see Split); `columns` are the metadata's, which win over a measurement's
    name but the photo's SIZE (`measured`)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(query).readline))
    except (tokenize.TokenError, SyntaxError):
        return Split(query, False, False)  # not Python-like: pandas says what is wrong
    starts = _line_starts(query)
    terms: list[tuple[int, int, set[str]]] = []
    depth, begin, names, either = 0, 0, set[str](), False
    for token in tokens:
        at = starts[token.start[0] - 1] + token.start[1]
        if token.string in ("(", "[", "{"):
            depth += 1
        elif token.string in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and token.string in ("&", "and"):  # a string token keeps its quotes
            terms.append((begin, at, names))
            begin, names = at + len(token.string), set()
        elif depth == 0 and token.string in ("|", "or"):
            either = True
        elif token.type == tokenize.NAME:
            names.add(token.string)
    terms.append((begin, len(query), names))
    if either:  # `and` binds tighter than `or` (`&` than `|`): no `and` term stands alone
        terms = [(0, len(query), set().union(*(found for _, _, found in terms)))]
    measuring = set(measured(columns))
    named = [bool(found & measuring) for _, _, found in terms]
    if not any(named):
        return Split(query, False, False)
    metadata = [query[start:end].strip()
                for (start, end, _), on in zip(terms, named, strict=True) if not on]
    mixed = any(on and found & set(columns) - measuring
                for (_, _, found), on in zip(terms, named, strict=True))
    return Split(" and ".join(f"({term})" for term in metadata) or None, True,
                 mixed and not metadata)
