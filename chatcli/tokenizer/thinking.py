"""Qwen3-style thinking: the template's switch, and where an answer's reasoning ends.

Qwen3's chat template reads a variable ``enable_thinking``: left undefined (or true) the
model opens a ``<think>`` block and reasons before it answers; false, the template writes an
empty ``<think>\\n\\n</think>\\n\\n`` after the assistant header, so the model answers at once.
The same template drops the reasoning of earlier turns from the prompt (it keeps only what
follows ``</think>``), so a front end passes answers back whole and the template decides.

:func:`has_thinking_switch` tells whether a template reads the variable at all (compiled in
the sandbox, not searched as text, so a comment that mentions it does not count).
:func:`thinking_end` and :func:`thinking_steps` find the reasoning at the start of an answer,
for front ends that show it dimmed: a ``<think>`` block (open while the model still reasons),
or text closed by ``</think>`` whose opening tag the prompt wrote (DeepSeek-R1 style).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

THINKING_VARIABLE = "enable_thinking"
OPEN, CLOSE = "<think>", "</think>"


@lru_cache(maxsize=16)
def has_thinking_switch(template: str | None) -> bool:
    """Whether the chat template ``template`` reads ``enable_thinking``."""
    if not template or THINKING_VARIABLE not in template:
        return False
    import jinja2
    import jinja2.meta

    from chatcli.tokenizer.chat_template import ChatTemplateError, compile_template

    try:
        env = compile_template(template).environment
        return THINKING_VARIABLE in jinja2.meta.find_undeclared_variables(env.parse(template))
    except (ChatTemplateError, jinja2.TemplateError, RecursionError):  # one that does not compile offers no switch
        return False


def thinking_end(text: str) -> int:
    """Characters of ``text`` that are reasoning: through ``</think>`` and the blank lines after it;
    all of it while a ``<think>`` block is still open; 0 when the answer has none."""
    start = len(text) - len(text.lstrip())
    if text.startswith(OPEN, start):
        close = text.find(CLOSE, start + len(OPEN))
        if close < 0:
            return len(text)
    else:
        close = text.find(CLOSE)
        if close < 0 or OPEN in text[:close]:
            return 0
    end = close + len(CLOSE)
    return end + (len(text) - end - len(text[end:].lstrip("\n")))


def thinking_steps(texts: Iterable[str]) -> int:
    """How many of an answer's leading steps (their texts) belong to its reasoning."""
    texts = list(texts)
    end = thinking_end("".join(texts))
    count = pos = 0
    for text in texts:
        if pos >= end:
            break
        pos += len(text)
        count += 1
    return count


class ThinkingTracker:
    """Told an answer's text piece by piece as it streams, says whether each piece is reasoning.

    Only an answer that opens with ``<think>`` is recognised while it streams (text before a
    bare ``</think>`` cannot be told from an answer until the tag comes): every piece up to
    ``</think>`` and the blank lines after it is reasoning, then none. O(1) per piece once decided.
    """

    def __init__(self) -> None:
        self.text = ""
        self.decided = False  # the reasoning (if any) is over: no later piece is reasoning

    def feed(self, piece: str) -> bool:
        start = len(self.text)
        self.text += piece
        if self.decided:
            return False
        head = self.text.lstrip()
        if len(head) < len(OPEN) and OPEN.startswith(head):
            return bool(head)  # perhaps the opening tag, arriving in pieces
        if not head.startswith(OPEN) or start >= thinking_end(self.text):
            self.decided = True
            return False
        return True


def no_switch_message(model: str) -> str:
    """The one line a front end says when thinking is asked of a template without the switch."""
    return (f"the chat template of {model} has no thinking switch ({THINKING_VARIABLE}): "
            "--think/--no-think and /think change nothing for it")
