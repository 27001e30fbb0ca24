"""An answer's header line and footer note, as text: pure functions of the answer and how it is shown.

:func:`header_content` is the title line of :class:`~chatcli.tui.widgets.answer.AnswerView`:
the model's name, ‹ n/N › arrows between sibling answers (clicks run the header's
``sibling`` action), the token count, the speed once the answer ended, where a branch was
forced, which tint a ``/compare`` or the attention view laid over it, and "writing…" while
it streams. :func:`footer_text` is the one line under a stopped, cut or failed answer (what
to do next), empty otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.style import Style

from chatcli.chat.session import Node

if TYPE_CHECKING:  # the comparison module pulls in torch; the header only reads its adapters
    from chatcli.lora.compare import Comparison


def header_content(
    node: Node, *, model: str, sibling_pos: tuple[int, int], streaming: bool,
    comparison: Comparison | None, attention: list[float] | None,
) -> Content:  # fmt: skip
    n = node
    parts: list[Content | str] = [Content.styled("◆ ", "$accent"), Content.styled(model or "assistant", "bold")]
    pos, count = sibling_pos
    if count > 1:
        parts += [
            "  ",
            ("‹", Style.from_meta({"@mouse.down": "sibling(-1)"})),
            Content.styled(f" {pos + 1}/{count} ", "bold $secondary"),
            ("›", Style.from_meta({"@mouse.down": "sibling(1)"})),
        ]
    stats = []
    if n.steps:
        stats.append(f"{len(n.steps)} tokens")
    tps = n.meta.get("tokens_per_s")
    if tps and not streaming:
        stats.append(f"{tps:.1f} tok/s")
    if n.meta.get("forced_at") is not None:
        stats.append(f"branched at token {n.meta['forced_at'] + 1}")
    if stats:
        parts.append(Content.styled("  ·  " + "  ·  ".join(stats), "$text-muted"))
    if comparison is not None:
        parts.append(Content.styled(f"  ·  KL tint: with vs without {', '.join(comparison.adapters)}", "bold $secondary"))
    if attention is not None:
        parts.append(Content.styled("  ·  tint: attention of the selected token", "bold $secondary"))
    if streaming:
        parts.append(Content.styled("  ● writing…", "$success"))
    return Content.assemble(*parts)


def footer_text(node: Node) -> str:
    """The note under an answer that did not end normally (stopped, cut, failed), else ""."""
    status = node.status
    text = ""
    if status == "cancelled":
        text = "⏹ stopped — /continue resumes it, /retry starts over"
    elif status == "length":
        text = "✂ cut at max_tokens — /continue goes on"
    elif status == "error":
        text = f"✖ {node.meta.get('error', 'generation failed')}"
    return text
