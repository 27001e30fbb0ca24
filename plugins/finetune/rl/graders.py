"""Graders: what scores an answer for ``finetune rl`` and ``/best``.

A grader spec (``--reward``) is one of

* a folder written by ``chatcli finetune reward`` — a reward model (PEFT ``SEQ_CLS``
  adapter with a ``score`` head), loaded into the policy's own model and switched on
  only while it scores (:class:`chatcli_finetune.reward.RewardScorer`);
* a built-in rule: ``rule:max-words=N`` (``-max(0, words - N) / N``: 0 for an answer of
  at most N words, -1 for one of 2N), ``rule:contains=WORD`` (1 if the answer contains
  WORD, ignoring case, else 0), ``rule:regex=PATTERN`` (1 if PATTERN matches somewhere,
  else 0; matched with the ``regex`` module under a :data:`REGEX_TIMEOUT_S` timeout — a
  match that runs out of time counts as no match);
* the NAME of a grader a plugin registered through the ``register_graders`` hook:
  ``register(name, fn, help)`` with ``fn(prompt_messages, answer_text) -> float``.

:func:`parse_grader` checks a spec without a model (a bad one is refused before any
output is written): a name that is none of these is a usage error (exit 2); a folder
that is not a reward model is a file error (exit 1). :func:`build_grader` turns a
checked spec into a :class:`Grader` for a loaded engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import ChatcliError, UsageError

GraderFn = Callable[[list[dict], str], float]
REGEX_TIMEOUT_S = 0.1  # per answer: a catastrophic pattern costs a tenth of a second, never the run
MAX_PATTERN_CHARS = 1000  # compiling cannot be interrupted: refuse absurdly long patterns
RULES = {
    "max-words": "rule:max-words=N  reward -max(0, words - N) / N (0 when the answer has at most N words)",
    "contains": "rule:contains=WORD  reward 1 if the answer contains WORD (ignoring case), else 0",
    "regex": "rule:regex=PATTERN  reward 1 if PATTERN matches the answer, else 0 (time-bounded)",
}
USAGE = "a reward model folder ('chatcli finetune reward --out DIR'), rule:max-words=N, rule:contains=WORD, rule:regex=PATTERN"


@dataclass(frozen=True)
class PluginGrader:
    """A grader a plugin registered: ``register(name, fn, help)``."""

    name: str
    fn: GraderFn
    help: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class GraderSpec:
    """A checked ``--reward`` value: a rule or a plugin's function (``fn``), or a reward model (``path``)."""

    text: str
    kind: str  # "rule" | "plugin" | "reward"
    fn: GraderFn | None = None
    path: Path | None = None


# --- the rules ----------------------------------------------------------------------------------


def max_words(n: int) -> GraderFn:
    def grade(messages: list[dict], answer: str) -> float:
        return -max(0, len(answer.split()) - n) / n

    return grade


def contains(word: str) -> GraderFn:
    needle = word.casefold()

    def grade(messages: list[dict], answer: str) -> float:
        return 1.0 if needle in answer.casefold() else 0.0

    return grade


def matches(pattern: str) -> GraderFn:
    import regex

    if len(pattern) > MAX_PATTERN_CHARS:
        raise UsageError(f"rule:regex pattern is {len(pattern)} characters long (limit {MAX_PATTERN_CHARS})")
    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError) as e:
        raise UsageError(f"rule:regex={pattern} is not a valid regular expression ({e})") from None

    def grade(messages: list[dict], answer: str) -> float:
        try:
            return 1.0 if compiled.search(answer, timeout=REGEX_TIMEOUT_S) else 0.0
        except TimeoutError:  # a pattern that backtracks without end on this answer: no match
            return 0.0

    return grade


def parse_rule(text: str) -> GraderFn:
    body = text[len("rule:"):]
    name, eq, value = body.partition("=")
    if name not in RULES or not eq:
        raise UsageError(f"unknown rule {text!r}: use " + "; ".join(r.split("  ")[0] for r in RULES.values()))
    if name == "max-words":
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"invalid {text!r}: N must be a whole number >= 1 (rule:max-words=15)")
        return max_words(n)
    if name == "contains":
        if not value.strip():
            raise UsageError(f"invalid {text!r}: give the word (rule:contains=please)")
        return contains(value)
    if not value:
        raise UsageError(f"invalid {text!r}: give the pattern (rule:regex=^Yes)")
    return matches(value)


# --- parsing a spec -----------------------------------------------------------------------------


def check_reward_dir(path: Path) -> None:
    """Refuse a folder that is not a reward model (exit 1), reading only its config."""
    from chatcli.lora.peft_io import adapter_files, read_config
    from chatcli_finetune.reward import HEAD

    config = read_config(adapter_files(path)[0])  # AdapterError (exit 1) for a folder that is no adapter
    if HEAD not in config.heads:
        raise ChatcliError(f"{path} is not a reward model: its adapter is {config.task_type or 'CAUSAL_LM'}, not SEQ_CLS "
                           "with a 'score' head (train one with 'chatcli finetune reward')")  # fmt: skip


def _looks_like_path(text: str) -> bool:
    return any(c in text for c in "/\\") or text.startswith(("~", "."))


def parse_grader(text: str, plugin_graders: Callable[[], dict[str, PluginGrader]] | None = None) -> GraderSpec:
    """Check a ``--reward`` value; ``plugin_graders()`` is asked only for a bare name."""
    text = (text or "").strip()
    if not text:
        raise UsageError(f"give a grader with --reward: {USAGE}, or a plugin grader's name")
    if text.startswith("rule:"):
        return GraderSpec(text, "rule", fn=parse_rule(text))
    path = Path(text).expanduser()
    if path.exists():
        check_reward_dir(path)
        return GraderSpec(text, "reward", path=path)
    if _looks_like_path(text):
        raise ChatcliError(f"no reward model at {path}: give the --out folder of 'chatcli finetune reward'")
    known = plugin_graders() if plugin_graders is not None else {}
    if text in known:
        return GraderSpec(text, "plugin", fn=known[text].fn)
    from chatcli.errors import did_you_mean

    names = ", ".join(sorted(known)) or "none installed"
    raise UsageError(f"unknown grader {text!r}{did_you_mean(text, known)}: use {USAGE}, or a plugin grader ({names})")


def installed_plugin_graders() -> dict[str, PluginGrader]:
    """The graders the installed plugins register (loads the plugins; problems go to stderr)."""
    from chatcli.plugins.manager import PluginManager, stderr_report

    return {g.name: g for g in PluginManager(report=stderr_report).graders()}


# --- graders ------------------------------------------------------------------------------------


class Grader:
    """Scores answers to one prompt: ``score(messages, answers) -> rewards`` (finite floats)."""

    def __init__(self, name: str, fn: GraderFn | None = None, scorer=None):
        self.name = name
        self._fn = fn
        self._scorer = scorer  # a RewardScorer: one batched pass for all answers

    def score(self, messages: Sequence[dict], answers: Sequence[str]) -> list[float]:
        if self._scorer is not None:
            values = self._scorer.score(list(messages), list(answers))
        else:
            values = []
            for a in answers:
                try:
                    values.append(self._fn(list(messages), a))
                except Exception as e:  # a plugin's bug is one line, not a traceback
                    raise ChatcliError(f"grader {self.name!r} failed on an answer ({type(e).__name__}: {e})") from None
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ChatcliError(f"grader {self.name!r} returned {v!r}: a grader must return a finite number")
            out.append(float(v))
        return out


def build_grader(spec: GraderSpec, engine, name: str | None = None) -> Grader:
    """A :class:`Grader` for ``engine``; a reward model is loaded into its adapter manager (off for
    answers) under ``name`` (default: its folder's name), or reused when a reward model of that
    name is loaded already."""
    if spec.kind != "reward":
        return Grader(spec.text, fn=spec.fn)
    from chatcli.engine.protocol import capabilities
    from chatcli.lora.manager import adapter_name
    from chatcli_finetune.reward import RewardScorer, load_reward, reward_names

    if engine is None or not capabilities(engine).weights_in_process:
        raise UsageError("a reward model needs chatcli's own PyTorch engine (a server's model cannot score)")
    name = name or adapter_name(spec.path.name)
    if name not in reward_names(engine.adapters):
        name = load_reward(engine, spec.path, name=name).name
    return Grader(f"reward model {name} ({spec.path})", scorer=RewardScorer(engine, name))
