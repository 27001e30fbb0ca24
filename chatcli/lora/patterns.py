"""Which modules an adapter config selects (PEFT's rules), with every regular expression time-bounded.

The rules mirror ``peft.tuners.tuners_utils.check_target_module_exists`` and
``peft.utils.other.get_pattern_key``: ``exclude_modules`` (a regex matched against the
whole name, or a list of name suffixes), ``modules_to_save`` (never targeted),
``target_modules`` (a regex matched against the whole name, or a list of name
suffixes; an exact name skips the layer filter), ``layers_to_transform`` with
``layers_pattern``, and ``rank_pattern``/``alpha_pattern`` keys matched against the
end of a name.

Those regexes come from a file. Python's ``re`` backtracks without limit: ``(.*.*)*X``
against a 30-character module name runs for hours, holding the GIL, so even SIGTERM
waits. Matching therefore uses the ``regex`` module, whose matches take a ``timeout``
(and release the GIL), and one :class:`Matcher` shares a single budget
(:data:`REGEX_BUDGET_S`) across every pattern of one adapter, compiling included: an
adapter's patterns cost at most about a second in all, then it is refused with one
line naming the field and the pattern. Patterns are also capped in length
(:data:`MAX_PATTERN_CHARS`): compiling cannot be interrupted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence

import regex

from chatcli.lora.validate import AdapterError

# The regex module checks its clock coarsely: a 0.5 s timeout was measured to fire after 0.73 s
# on a loaded 2-core machine. 0.6 s of budget keeps one adapter's regex work within about 1 s.
REGEX_BUDGET_S = 0.6
MAX_PATTERN_CHARS = 4096  # compiling a pattern is not interruptible: a 1 MB one takes seconds


def check_pattern(pattern: str, field: str, source: str) -> None:
    """Refuse a pattern PEFT could not compile (Python's ``re``) or that is absurdly long."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise AdapterError(f"{source}: the {field} pattern is {len(pattern)} characters long (limit {MAX_PATTERN_CHARS})")
    try:
        re.compile(pattern)
    except re.error as e:
        raise AdapterError(f"{source}: {field} {_show(pattern)} is not a valid regular expression ({e})") from None
    except (RecursionError, OverflowError, ValueError) as e:  # deep nesting, huge repeat counts
        raise AdapterError(f"{source}: {field} {_show(pattern)} is not a usable regular expression ({e})") from None


class Matcher:
    """One adapter config's module selection; all its regex work shares one time budget."""

    def __init__(
        self,
        *,
        source: str,
        r: int,
        alpha: float,
        target_modules: str | Sequence[str] | None,
        exclude_modules: str | Sequence[str] | None = None,
        modules_to_save: Sequence[str] = (),
        layers_to_transform: int | Sequence[int] | None = None,
        layers_pattern: Sequence[str] | None = None,
        rank_pattern: Mapping[str, int] | None = None,
        alpha_pattern: Mapping[str, float] | None = None,
        budget_s: float = REGEX_BUDGET_S,
        deadline: float | None = None,
    ):
        self.source = source
        self.r, self.alpha = r, alpha
        # Name lists become sets, matched through the key's dotted suffixes: a config listing a
        # million names costs a few set lookups per module, not a million endswith() calls.
        self._targets = None if target_modules is None or isinstance(target_modules, str) else frozenset(target_modules)
        self._exclude = None if not exclude_modules or isinstance(exclude_modules, str) else frozenset(exclude_modules)
        self._layers = frozenset(layers_to_transform) if isinstance(layers_to_transform, (list, tuple)) else layers_to_transform
        # The regex budget starts now; ``deadline`` (time.monotonic) continues another Matcher's:
        # one adapter, one budget.
        self.deadline = time.monotonic() + budget_s if deadline is None else deadline
        self._budget = budget_s
        self._target_re = self._compile("target_modules", target_modules) if isinstance(target_modules, str) else None
        self._exclude_re = self._compile("exclude_modules", exclude_modules) if isinstance(exclude_modules, str) else None
        self._saved = [self._compile("modules_to_save", rf"(^|.*\.){m}($|\..*)", m) for m in modules_to_save]
        self._layer_res = [
            self._compile("layers_pattern", rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", p) for p in (layers_pattern or [])
        ] or [self._compile("layers_pattern", r".*?\.[^.]*\.(?P<idx>\d+)\.")]
        self._ranks = [(self._compile("rank_pattern", rf"(.*\.)?({k})$", k), v) for k, v in (rank_pattern or {}).items()]
        self._alphas = [(self._compile("alpha_pattern", rf"(.*\.)?({k})$", k), v) for k, v in (alpha_pattern or {}).items()]

    # --- PEFT's rules --------------------------------------------------------------------------

    def targets(self, key: str) -> bool:
        """Does the config select module ``key``? (PEFT's check_target_module_exists.)"""
        if self._exclude_re is not None and self._match(self._exclude_re, "fullmatch", key):
            return False
        if self._exclude is not None and (key in self._exclude or not self._exclude.isdisjoint(_suffixes(key))):
            return False
        if any(self._match(p, "match", key) for p in self._saved):
            return False
        if self._target_re is not None:
            return self._match(self._target_re, "fullmatch", key) is not None
        t = self._targets
        if t is None:
            return False
        if key in t:
            return True  # an exact name is taken as is (layers_to_transform does not apply, as in PEFT)
        if t.isdisjoint(_suffixes(key)):  # PEFT: any(key.endswith(f".{name}") for name in target_modules)
            return False
        layers = self._layers
        if layers is None or not layers and not isinstance(layers, int):
            return True
        match = next((m for p in self._layer_res if (m := self._match(p, "match", key)) is not None), None)
        if match is None:
            return False
        idx = int(match.group("idx"))
        return idx == layers if isinstance(layers, int) else idx in layers

    def rank_alpha(self, key: str) -> tuple[int, float]:
        """(r, alpha) of module ``key``: the first matching rank/alpha pattern, else the defaults."""
        r = next((v for p, v in self._ranks if self._match(p, "match", key)), self.r)
        alpha = next((v for p, v in self._alphas if self._match(p, "match", key)), self.alpha)
        return r, alpha

    # --- the budget ----------------------------------------------------------------------------

    def _left(self, field: str, pattern: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow(field, pattern)
        return left

    def _too_slow(self, field: str, pattern: str) -> AdapterError:
        return AdapterError(
            f"{self.source}: matching module names against {field} {_show(pattern)} ran out of its "
            f"{self._budget:g} s budget (a pattern that backtracks catastrophically); simplify the pattern"
        )

    def _compile(self, field: str, pattern: str, shown: str | None = None) -> "_Pattern":
        self._left(field, shown or pattern)
        try:
            compiled = regex.compile(pattern)
        except (regex.error, RecursionError, OverflowError, ValueError) as e:
            raise AdapterError(f"{self.source}: {field} {_show(shown or pattern)} is not a usable regular expression ({e})") from None
        return _Pattern(field, shown or pattern, compiled)

    def _match(self, p: "_Pattern", how: str, key: str):
        try:
            return getattr(p.compiled, how)(key, timeout=self._left(p.field, p.shown))
        except TimeoutError:
            raise self._too_slow(p.field, p.shown) from None


class _Pattern:
    __slots__ = ("field", "shown", "compiled")

    def __init__(self, field: str, shown: str, compiled):
        self.field, self.shown, self.compiled = field, shown, compiled


def _suffixes(key: str) -> set[str]:
    """Every ``name`` with ``key.endswith("." + name)``: the parts after each dot."""
    parts = key.split(".")
    return {".".join(parts[i:]) for i in range(1, len(parts))}


def _show(pattern: str) -> str:
    text = repr(pattern)
    return text if len(text) <= 60 else text[:57] + "..."
