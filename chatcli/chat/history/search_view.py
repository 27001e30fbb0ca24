"""``history search``'s hits as Rich text: grouped by conversation, the matched words highlighted.

Pure formatting (no I/O): each conversation the hits come from gets a header line (id, date,
title) in the order its best hit ranks, then one line per matching message with its role and
the snippet. Message text is never read as markup; the highlights are the hit's spans.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group
from rich.text import Text

from chatcli.chat.history.fulltext import SearchHit

HIGHLIGHT = "bold black on yellow"
ROLE_LABEL = {"user": "user", "assistant": "model"}


def search_view(hits: Sequence[SearchHit]) -> Group:
    """The hits under their conversations' headers."""
    groups: dict[int, list[SearchHit]] = {}
    for hit in hits:
        groups.setdefault(hit.conversation, []).append(hit)
    lines: list[Text] = []
    for conv_id, conv_hits in groups.items():
        first = conv_hits[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(first.updated))
        header = Text.assemble((f"#{conv_id}", "bold cyan"), "  ", (when, "dim"), "  ", (first.title, "bold"))
        lines.append(header)
        for hit in conv_hits:
            lines.append(Text.assemble("  ", (f"{ROLE_LABEL.get(hit.role, hit.role):<5}", "dim"), "  ", snippet_text(hit)))
    return Group(*lines)


def snippet_text(hit: SearchHit) -> Text:
    """The snippet with its matched words highlighted."""
    text = Text(hit.snippet)
    for start, end in hit.spans:
        text.stylize(HIGHLIGHT, start, end)
    return text
