"""What one chat-template render may spend, and the checks that keep it inside.

A chat template is a program from the model's author (or ``--chat-template FILE``):
Jinja's sandbox keeps it away from Python's internals but not from the machine's
time and memory. A render gets a :class:`Budget` (per render, in a ``ContextVar``, so
concurrent renders on other threads keep their own):

* ``MAX_SECONDS`` of wall time, checked at every call, filter, operator and loop
  iteration (a deadline compared in the hooks, no watchdog thread);
* ``MAX_TEXT`` characters for any one string (or ``MAX_ITEMS`` items for any one list)
  the template builds, checked *before* building where an operation can amplify
  (``'a' * n``, ``s.replace('', big)``, ``'%9999999d' % 1``, ``x|indent(n)``, ...);
* ``MAX_VOLUME`` characters built or printed over the whole render, which bounds
  memory a loop could fill with references to one big string;
* ``MAX_DEPTH`` nested macro / recursive-loop calls, ``MAX_RANGE`` items per
  ``range()``, ``MAX_ITEMS`` items for a filter that walks its value (``groupby``,
  ``map``, ...), ``MAX_INT_BITS`` bits per integer, ``MAX_OUTPUT_BYTES`` of prompt.

Crossing one raises :class:`TemplateLimitError`, a one-line message saying which.
The checks are upper bounds (``printed_size`` may overestimate), never guesses that
let something larger through.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from itertools import islice
from time import monotonic
from typing import Any

import jinja2.runtime
import jinja2.utils

from chatcli.errors import ChatcliError

MAX_SECONDS = 2.0
MAX_OUTPUT_BYTES = 1_000_000
MAX_TEXT = 1_000_000  # characters in one string (and the largest number any size argument may be)
MAX_ITEMS = 100_000  # items in one list or tuple (as many as range() gives)
MAX_VOLUME = 16_000_000  # characters (or items) built or printed in one render
MAX_DEPTH = 50  # nested macro, caller() and recursive loop() calls
MAX_RANGE = 100_000  # items in one range(), Jinja's own sandbox limit
MAX_INT_BITS = 100_000
MAX_NESTING = 100  # containers inside containers, when sizing a value
NUMBER_TEXT = 320  # the most characters one number can print as ('%f' % 1e308)
SMALL_TEXT = 4096  # a '+' result this short is not worth accounting for (see BoundedEnvironment.call_binop)


class TemplateLimitError(ChatcliError):
    """A render that crossed one of the limits above."""


@dataclass
class Budget:
    """One render's allowance; the hooks update it as the template runs."""

    deadline: float
    depth: int = 0
    volume: int = 0


_budget: ContextVar[Budget | None] = ContextVar("chatcli_template_budget", default=None)


def start_budget() -> Token:
    """Give this thread's render a fresh budget; pass the token to :func:`end_budget` in a
    ``finally``. (``MAX_SECONDS`` is read now, so a test can shorten it.)"""
    return _budget.set(Budget(monotonic() + MAX_SECONDS))


def end_budget(token: Token) -> None:
    _budget.reset(token)


# The budget of the render running on this thread (None outside a render, e.g. while
# Jinja folds constants at compile time). Bound once: the hooks call it on every operation.
current = _budget.get


def tick(budget: Budget | None) -> None:
    if budget is not None and monotonic() > budget.deadline:
        raise TemplateLimitError(f"rendering took longer than {MAX_SECONDS:g} s (an endless or huge loop?)")


_TEXT_TYPES = (str, bytes, bytearray)
_LIST_TYPES = (list, tuple)


def produced(budget: Budget | None, value: Any) -> Any:
    """Account for a value an operation returned; refuse one too large. Returns ``value``."""
    # type() + issubclass, not isinstance: isinstance on a Jinja namespace runs its Python
    # __getattribute__, and this runs after every call, filter and operator.
    cls = type(value)
    if cls is str or issubclass(cls, _TEXT_TYPES):
        size = len(value)
        if size > MAX_TEXT:
            raise TemplateLimitError(f"the template built a string of {size:,} characters (at most {MAX_TEXT:,})")
    elif issubclass(cls, _LIST_TYPES):
        size = len(value)
        if size > MAX_ITEMS:
            raise TemplateLimitError(f"the template built a list of {size:,} items (at most {MAX_ITEMS:,})")
    elif issubclass(cls, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"the template built an integer of more than {MAX_INT_BITS:,} bits")
    else:
        return value
    spend(budget, size)
    return value


def spend(budget: Budget | None, size: int) -> None:
    """Count ``size`` characters (or items) built or printed against the render's volume."""
    if budget is not None:
        budget.volume += size
        if budget.volume > MAX_VOLUME:
            raise TemplateLimitError(f"the template built or printed more than {MAX_VOLUME:,} characters")


def enter_call(budget: Budget | None) -> None:
    """One level deeper into a macro or recursive loop (pair with ``leave_call``)."""
    if budget is not None:
        budget.depth += 1
        if budget.depth > MAX_DEPTH:
            raise TemplateLimitError(f"macro or loop recursion deeper than {MAX_DEPTH} calls")


def leave_call(budget: Budget | None) -> None:
    if budget is not None:
        budget.depth -= 1


# --- sizes -------------------------------------------------------------------------------------


def printed_size(value: Any, limit: int = MAX_TEXT, indent: int = 0, _depth: int = 0) -> int:
    """An upper bound on ``len(str(value))`` (repr of items included), or any number above
    ``limit`` once it is clear the value is larger. ``indent`` adds what ``json.dumps(indent=)``
    or ``pprint`` put in front of each nested item."""
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, (bool, float)):
        return 24
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # decimal digits (and sign), rounded up
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3  # repr writes \xNN
    if isinstance(value, jinja2.runtime.Undefined) or isinstance(value, range):
        return 32
    if isinstance(value, jinja2.utils.Namespace):
        value = object.__getattribute__(value, "_Namespace__attrs")
    if isinstance(value, Mapping):
        items: Iterable[Any] = (x for kv in value.items() for x in kv)
    elif isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__.startswith("dict_"):
        items = value
    else:
        return 64  # a macro, loop, cycler, ...: a short repr
    if _depth >= MAX_NESTING:
        raise TemplateLimitError(f"a value nested more than {MAX_NESTING} levels deep")
    per_item = 2 + indent * (_depth + 1)  # ', ' or a newline and its indentation
    total = 2
    for item in items:
        total += per_item + printed_size(item, limit - total, indent, _depth + 1)
        if total > limit:
            break
    return total


def check_printable(value: Any, what: str, indent: int = 0) -> None:
    """Refuse to turn ``value`` into text when the text would pass ``MAX_TEXT``."""
    if not isinstance(value, str) and printed_size(value, MAX_TEXT, indent) > MAX_TEXT:
        raise TemplateLimitError(f"{what} would print more than {MAX_TEXT:,} characters")


def _size_argument(n: Any, what: str) -> int:
    if isinstance(n, int) and abs(n) > MAX_TEXT:
        raise TemplateLimitError(f"{what} got the number {n:,}: size arguments go up to {MAX_TEXT:,}")
    return abs(n) if isinstance(n, int) else 0


def check_size_arguments(what: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """Numbers given to a filter or built-in method are widths and counts: at most ``MAX_TEXT``."""
    for a in (*args, *kwargs.values()):
        if issubclass(type(a), int) and abs(a) > MAX_TEXT:
            _size_argument(a, what)  # raises


def bounded_list(items: Iterable[Any], what: str, extra_per_item: int = 0) -> list:
    """``list(items)`` while the items' printed sizes (plus ``extra_per_item``) stay in ``MAX_TEXT``."""
    out, total = [], 0
    for item in islice(items, MAX_ITEMS + 1):
        total += printed_size(item, MAX_TEXT) + extra_per_item
        if total > MAX_TEXT or len(out) >= MAX_ITEMS:
            raise TemplateLimitError(f"{what} would build more than {MAX_TEXT:,} characters")
        out.append(item)
    return out


# --- operators -----------------------------------------------------------------------------------


def check_repeat(left: Any, right: Any) -> None:
    """``seq * n`` and ``int * int``: refuse results past the limits before building them."""
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"a product of more than {MAX_INT_BITS:,} bits")
        return
    seq, n = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(n, int) and n > 0 and isinstance(seq, (str, bytes, list, tuple)):
        text = isinstance(seq, (str, bytes))
        limit, unit = (MAX_TEXT, "characters") if text else (MAX_ITEMS, "items")
        if len(seq) * n > limit:
            raise TemplateLimitError(f"repetition would build {len(seq) * n:,} {unit} (at most {limit:,})")


def check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise TemplateLimitError(f"a power of more than {MAX_INT_BITS:,} bits")


# A %-conversion: optional (key), flags, width, .precision, length modifier, type.
_PERCENT = re.compile(r"%(?:\(([^)]*)\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)?", re.S)


def check_percent(fmt: str, args: Any) -> None:
    """``fmt % args`` (operator and ``format`` filter): an upper bound on the result's size."""
    values = list(args) if isinstance(args, tuple) else [args]
    total, i = len(fmt), 0
    for m in _PERCENT.finditer(fmt):
        key, width, precision, conversion = m.groups()
        if conversion == "%":
            continue
        for part in (width, precision):
            if part == "*":
                total += _size_argument(values[i] if i < len(values) else 0, "a '*' width in a % format")
                i += 1
            elif part:
                total += _size_argument(int(part), "a % format width")
        if key is not None and isinstance(args, Mapping):
            value = args.get(key)
        else:
            value, i = (values[i] if i < len(values) else None), i + 1
        total += printed_size(value, MAX_TEXT) + NUMBER_TEXT
        if total > MAX_TEXT:
            raise TemplateLimitError(f"a % format would build more than {MAX_TEXT:,} characters")


_FIELD_NAME = re.compile(r"[^.\[]*")


def check_format(fmt: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """``fmt.format(*args, **kwargs)``: an upper bound on the result's size."""
    total, auto = len(fmt), 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        first = _FIELD_NAME.match(field).group()
        if first == "":
            first, auto = str(auto), auto + 1
        value = (args[int(first)] if int(first) < len(args) else None) if first.isdigit() else kwargs.get(first)
        numbers = [int(n) for n in re.findall(r"\d+", spec or "")]
        if spec and "{" in spec:  # a nested {width}: any number given may be it
            numbers += [abs(a) for a in (*args, *kwargs.values()) if isinstance(a, int)]
        total += sum(_size_argument(n, "a format width") for n in numbers)
        total += printed_size(value, MAX_TEXT) + NUMBER_TEXT
        if total > MAX_TEXT:
            raise TemplateLimitError(f"str.format would build more than {MAX_TEXT:,} characters")


# --- string methods ------------------------------------------------------------------------------


def _replaced_size(s: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, (str, bytes)) or not isinstance(new, (str, bytes)):
        return len(s)  # the call itself will refuse the types
    n = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def str_method_args(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Check a call of a ``str``/``bytes`` method that can grow its text; returns the args to
    call it with (``join``'s iterable comes back as a list, already measured)."""
    s, name = method.__self__, method.__name__
    if name == "replace":
        old, new = (args + (None, None))[:2]
        size = _replaced_size(s, old, new, args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "expandtabs":
        tab = (args[0] if args else kwargs.get("tabsize", 8))
        size = len(s) + s.count("\t" if isinstance(s, str) else b"\t") * _size_argument(tab, "expandtabs")
    elif name == "join" and args:
        items = bounded_list(args[0], "join", extra_per_item=len(s))
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(s, str):
        table = args[0]
        values = table.values() if isinstance(table, Mapping) else ()
        longest = max((len(v) for v in values if isinstance(v, str)), default=1)
        size = len(s) * longest
    else:
        return args
    if size > MAX_TEXT:
        raise TemplateLimitError(f"str.{name} would build {size:,} characters (at most {MAX_TEXT:,})")
    return args


# --- filters -------------------------------------------------------------------------------------

# Filters that go through their value item by item, with Python work per item (a string's items
# are its characters): at most MAX_ITEMS items, so one call cannot outlast the deadline by much.
ITERATING_FILTERS = frozenset({
    "batch", "groupby", "join", "list", "map", "max", "min", "reject", "rejectattr", "select", "selectattr",
    "slice", "sort", "sum", "unique",
})  # fmt: skip

# Filters that do not turn their value into text (so a large value is fine as it is).
STRUCTURAL_FILTERS = frozenset({
    "abs", "attr", "batch", "count", "d", "default", "dictsort", "filesizeformat", "first", "float", "groupby",
    "int", "items", "last", "length", "list", "map", "max", "min", "random", "reject", "rejectattr", "reverse",
    "round", "select", "selectattr", "slice", "sort", "unique",
})  # fmt: skip


def filter_args(name: str, value: Any, params: tuple, kwargs: dict) -> tuple[Any, tuple]:
    """Check one filter call before it runs; returns the (value, params) to run it with."""
    check_size_arguments(f"the {name} filter", params, kwargs)
    if name in ITERATING_FILTERS and isinstance(value, (str, list, tuple, range)) and len(value) > MAX_ITEMS:
        raise TemplateLimitError(f"the {name} filter would go through {len(value):,} items (at most {MAX_ITEMS:,})")
    if name == "tojson":  # tojson(ensure_ascii, indent, separators, sort_keys): indent and separators repeat per item
        indent = kwargs.get("indent", params[1] if len(params) > 1 else None)
        separators = kwargs.get("separators", params[2] if len(params) > 2 else None)
        per_item = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        per_item += sum(len(s) for s in separators if isinstance(s, str)) if isinstance(separators, (list, tuple)) else 0
        check_printable(value, "the tojson filter", indent=per_item)
    elif name == "pprint":
        check_printable(value, "the pprint filter", indent=1)
    elif name not in STRUCTURAL_FILTERS:
        check_printable(value, f"the {name} filter")
    text = value if isinstance(value, str) else ""
    if name == "join":
        sep = params[0] if params else kwargs.get("d", "")
        return bounded_list(value, "the join filter", extra_per_item=len(sep) if isinstance(sep, str) else 0), params
    if name == "replace" and len(params) >= 2:
        size = _replaced_size(text, params[0], params[1], params[2] if len(params) > 2 else kwargs.get("count", -1))
    elif name == "indent":
        width = params[0] if params else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else _size_argument(width, "the indent filter")
        size = len(text) + (text.count("\n") + 1) * per_line
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring", params[2] if len(params) > 2 else None)
        size = len(text) * (1 + (len(wrap) if isinstance(wrap, str) else 1))
    elif name == "urlize":
        extra = sum(len(p) for p in (*params, *kwargs.values()) if isinstance(p, str))
        size = len(text) * (12 + extra)  # each short URL becomes a tag around two copies of it
    elif name == "format":
        check_percent(str(value), kwargs or params)
        return value, params
    else:
        return value, params
    if size > MAX_TEXT:
        raise TemplateLimitError(f"the {name} filter would build {size:,} characters (at most {MAX_TEXT:,})")
    return value, params


def bounded_range(*args: Any) -> range:
    """``range()`` for templates: at most ``MAX_RANGE`` items."""
    rng = range(*args)
    try:
        n = len(rng)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise TemplateLimitError(f"range() of more than {MAX_RANGE:,} items")
    return rng


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's ``lipsum()`` global, with its counts bounded."""
    if not all(isinstance(x, int) for x in (n, min, max)) or n > 100 or max > 1000:
        raise TemplateLimitError("lipsum() takes at most 100 paragraphs of at most 1000 words")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)
