"""Where the selected step's attention falls in the transcript: pure mapping, no widgets.

The attention view computes the weights the position that predicted a step gave every
earlier position: the answer's prompt (the rendered chat, special tokens included),
then the answer's own tokens before the step. :class:`AttentionMap` carries that row
and says which part of the transcript each weight belongs to:

* the answer's tokens before the step: :meth:`AttentionMap.answer_values`;
* the prompt text as ``/raw`` shows it: :meth:`AttentionMap.prompt_shades` (character
  ranges of that text, one per prompt token);
* a message of the conversation (a user message, an earlier answer) found inside that
  prompt text: :meth:`AttentionMap.text_shades` and :meth:`AttentionMap.step_values`.

The prompt text and its token spans come with the map only when tokenizing the text
gives exactly the ids the step was predicted from (a prompt whose oldest turns were
dropped to fit the context does not), so a tint never lands on the wrong characters.
The transcript applies it (:meth:`chatcli.tui.widgets.transcript.Transcript.set_attention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual.content import Content
from textual.style import Style

from chatcli.tui.token_text import attention_color


@dataclass(frozen=True)
class AttentionMap:
    node_id: int  # the answer whose step is selected
    index: int  # the step
    weights: tuple[float, ...]  # by position: the prompt's tokens, then the answer's tokens before the step
    prompt_len: int
    prompt: str | None = None  # the prompt as rendered (what /raw shows), when its tokens are the step's prompt ids
    spans: tuple[tuple[int, int], ...] | None = None  # each prompt token's characters in ``prompt``

    def answer_values(self) -> list[float]:
        """The weight of each answer token before the step (answer position j is position prompt_len + j)."""
        return list(self.weights[self.prompt_len : self.prompt_len + self.index])

    def prompt_shades(self) -> list[tuple[int, int, float]]:
        """(start, end, weight) over ``prompt`` for each prompt token; [] without the prompt's spans."""
        if self.spans is None:
            return []
        return [(s, e, self.weights[i]) for i, (s, e) in enumerate(self.spans) if e > s]

    def text_shades(self, offset: int, length: int) -> list[tuple[int, int, float]]:
        """(start, end, weight) over a message found at ``offset`` in ``prompt`` (``length`` characters),
        in the message's own coordinates."""
        out = []
        for s, e, w in self.prompt_shades():
            lo, hi = max(s, offset), min(e, offset + length)
            if hi > lo:
                out.append((lo - offset, hi - offset, w))
        return out

    def step_values(self, offset: int, step_texts: Sequence[str]) -> list[float]:
        """The weight of each step of an earlier answer found at ``offset`` in ``prompt``: the sum over
        the prompt tokens that cover its characters (one token when the tokenization is the same)."""
        shades = self.text_shades(offset, sum(len(t) for t in step_texts))
        values, pos = [], 0
        for text in step_texts:
            end = pos + len(text)
            values.append(sum(w for s, e, w in shades if s < end and e > pos) if end > pos else 0.0)
            pos = end
        return values


def locate(prompt: str, contents: Sequence[str]) -> list[int | None]:
    """Where each message text sits in ``prompt``, searched in order (None: not found as written,
    e.g. a template that strips it); empty texts are None."""
    out: list[int | None] = []
    pos = 0
    for text in contents:
        at = prompt.find(text, pos) if text else -1
        if at < 0:
            out.append(None)
            continue
        out.append(at)
        pos = at + len(text)
    return out


def token_spans(offsets: Sequence[tuple[int, int, int]], ids: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """The character spans of ``offsets`` ((id, start, end) from the tokenizer) when their ids are ``ids``, else None."""
    if [i for i, _, _ in offsets] != list(ids):
        return None
    return tuple((s, e) for _, s, e in offsets)


def shaded(content: Content, shades: Sequence[tuple[int, int, float]] | None, offset: int = 0) -> Content:
    """``content`` with each (start, end, weight) of ``shades`` (shifted by ``offset``) drawn as an
    attention background (:func:`chatcli.tui.token_text.attention_color`); None or []: as it is."""
    for start, end, weight in shades or ():
        color = attention_color(weight)
        if color is not None:
            content = content.stylize(Style(background=color), offset + start, offset + end)
    return content

