"""Pure helpers for showing tokens: certainty tints, visible token text, and answer-text Content.

Tinting uses the raw model probability (``model_prob``) or the entropy of the raw
distribution, so it stays informative under greedy decoding, where the sampled
probability is always 1; how certain a token looks is the rule the plain REPL
shares (:mod:`chatcli.chat.certainty`), drawn here as a background. Nothing here
touches widgets; the answer view and the probability panel call these and tests
check them directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.color import Color
from textual.content import Content, Span
from textual.style import Style

from chatcli.chat.certainty import background_rgba, uncertainty
from chatcli.engine.events import Step

TINTS = ("off", "model_prob", "entropy")  # what F2 cycles through; "kl" (/compare) and "attention" are set per answer
KL_MIN_BITS = 0.01  # KL(adapter || base) below which a token gets no tint
KL_FULL_BITS = 2.0  # KL at which the KL tint is at its strongest
ATTENTION_MIN = 0.005  # attention weight below which a token gets no tint
ATTENTION_FULL = 0.25  # weight at which the attention tint is at its strongest
UNCERTAIN = 0.5  # model_prob under which `]` / `[` stop on a step

NEWLINE_MARK = "↵"


def tint_color(u: float) -> Color | None:
    """Background for an uncertainty ``u`` (:func:`chatcli.chat.certainty.background_rgba`); None: no tint."""
    rgba = background_rgba(u)
    if rgba is None:
        return None
    r, g, b, alpha = rgba
    return Color(r, g, b, a=alpha)


def kl_fraction(kl_bits: float) -> float:
    """0 .. 1 on a log scale from KL_MIN_BITS to KL_FULL_BITS (KL spans orders of magnitude)."""
    if not kl_bits > KL_MIN_BITS:  # also NaN
        return 0.0
    return min(1.0, math.log(kl_bits / KL_MIN_BITS) / math.log(KL_FULL_BITS / KL_MIN_BITS))


_BLUE = (90, 150, 255)
_VIOLET = (215, 80, 255)


def kl_color(kl_bits: float) -> Color | None:
    """Background for a token by how much an adapter moved its distribution: none, then blue to violet.

    A different hue from the certainty tints, so a compared answer is not read as uncertain.
    """
    if not kl_bits >= KL_MIN_BITS:
        return None
    t = kl_fraction(kl_bits)
    r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(_BLUE, _VIOLET))
    return Color(r, g, b, a=0.2 + 0.5 * t)


_TEAL = (40, 200, 170)


def attention_fraction(weight: float) -> float:
    """0 .. 1 on a log scale from ATTENTION_MIN to ATTENTION_FULL (most weights are small, a few large)."""
    if not weight > ATTENTION_MIN:  # also NaN
        return 0.0
    return min(1.0, math.log(weight / ATTENTION_MIN) / math.log(ATTENTION_FULL / ATTENTION_MIN))


def attention_color(weight: float) -> Color | None:
    """Background for a token by the attention the selected step gave it: none, then a deeper teal.

    One hue, apart from the certainty and KL tints, on an absolute scale so layers and heads compare.
    """
    if not weight > ATTENTION_MIN:
        return None
    return Color(*_TEAL, a=0.15 + 0.65 * attention_fraction(weight))


SHADES = {"kl": kl_color, "attention": attention_color}  # tints read from per-token values, not from the steps


def tint_style(step: Step, mode: str) -> Style | None:
    if mode == "off":
        return None
    color = tint_color(uncertainty(step, mode))
    return Style(background=color) if color is not None else None


def visible(token: str) -> str:
    """A token as the panel shows it: spaces as ␣ at the edges, newlines and tabs as symbols."""
    if token == "":
        return "∅"
    s = token.replace("\n", NEWLINE_MARK).replace("\t", "⇥").replace("\r", "␍")
    core = s.strip(" ")
    lead = len(s) - len(s.lstrip(" "))
    trail = len(s) - len(s.rstrip(" ")) if core else 0
    if not core:
        return "␣" * len(s)
    return "␣" * lead + core + "␣" * trail


def step_display_text(step: Step) -> str:
    """The answer text of a step in the token view: newlines get a visible mark before them."""
    if "\n" in step.text:
        head, _, tail = step.text.partition("\n")
        return head + NEWLINE_MARK + "\n" + tail
    return step.text


CURSOR_STYLE = Style(reverse=True, bold=True)
THINKING_STYLE = Style(dim=True, italic=True)  # a Qwen3-style answer's reasoning, before its answer
FORCED_STYLE = Style(underline=True, bold=True)


def token_content(
    steps: Sequence[Step],
    start: int,
    *,
    tint: str,
    cursor: int | None = None,
    forced_at: int | None = None,
    strip_final_newline: bool = False,
    click: bool = True,
    values: Sequence[float] | None = None,
    faint_before: int = 0,
) -> Content:
    """Content for ``steps`` (answer positions ``start..``): one span per token.

    Steps before ``faint_before`` (an answer's ``<think>`` reasoning,
    :func:`chatcli.tokenizer.thinking.thinking_steps`) are drawn faint and italic.

    With ``tint="kl"`` or ``"attention"``, ``values[i]`` (KL bits or an attention weight,
    indexed by answer position) picks the background of step ``i`` (:data:`SHADES`:
    :func:`kl_color`, :func:`attention_color`); steps past the values get none. Each span carries its tint,
    ``{"token": index}`` meta for mouse clicks, the
    cursor's reverse video and the forced token's underline.
    """
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    for offset, step in enumerate(steps):
        i = start + offset
        text = step_display_text(step)
        if i == cursor and not text.strip("\n"):
            text = (text.rstrip("\n") or "▏") + text[len(text.rstrip("\n")):]
        parts.append(text)
        end = pos + len(text)
        if tint in SHADES:
            color = SHADES[tint](values[i]) if values is not None and i < len(values) else None
            style = Style(background=color) if color is not None else Style()
        else:
            style = tint_style(step, tint) or Style()
        if i < faint_before:
            style = style + THINKING_STYLE
        if click:
            style = style + Style.from_meta({"token": i})  # read by the view's click handler
        if i == forced_at:
            style = style + FORCED_STYLE
        if i == cursor:
            style = style + CURSOR_STYLE
        if end > pos:
            spans.append(Span(pos, end, style))
        pos = end
    text = "".join(parts)
    if strip_final_newline and text.endswith("\n"):
        text = text[:-1]
        spans = [Span(s.start, min(s.end, len(text)), s.style) for s in spans if s.start < len(text)]
    return Content(text, spans)


def chunk_bounds(steps: Sequence[Step], min_size: int = 128) -> list[int]:
    """Indices where a new token chunk starts: after a step ending in a newline, once a chunk holds ``min_size`` steps.

    Chunks are rendered as separate widgets so a long streaming answer only
    re-renders its last chunk; splitting only after a newline keeps line wrapping intact.
    """
    bounds = [0]
    for i, step in enumerate(steps):
        if i + 1 - bounds[-1] >= min_size and step.text.endswith("\n") and i + 1 < len(steps):
            bounds.append(i + 1)
    return bounds


def entropy_bits(probs: Sequence[float]) -> float:
    return -sum(p * math.log2(p) for p in probs if p > 0)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar with eighth-block resolution (empty for an unknown, NaN, fraction)."""
    fraction = 0.0 if fraction != fraction else max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width)


def percent(p: float) -> str:
    if p != p:  # NaN: a remote server did not report it
        return "–"
    if p >= 0.9995:
        return "100%"
    if p >= 0.0995:
        return f"{p * 100:.1f}%"
    if p >= 0.0001:
        return f"{p * 100:.2f}%"
    return "<0.01%" if p > 0 else "0%"
