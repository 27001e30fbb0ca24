"""The panel's attention view: which earlier tokens the selected step looked at.

For the step selected in the inspector it recomputes the attention weights of the
position that predicted it (the last of the ids the step was predicted from:
:func:`chatcli.chat.lens_commands.step_attention`) and lists the most attended earlier
tokens with bars, averaged over every layer and head, or for one layer and/or head.
While it shows, the transcript is tinted by the same weights (:class:`AttentionTint`,
:meth:`chatcli.tui.widgets.transcript.Transcript.set_attention`): the answer's tokens
before the step, the messages above it and the ``/raw`` prompt; leaving the view
restores the normal tint.

Keys (while the view has the focus): [ / ] the previous/next layer, { / } the
previous/next head (past the last: the average again), 0 the average over every layer
and head; ←/→ the previous/next token, Esc back to the inspector. ``/attention LAYER HEAD``
opens it on a layer and head.

Results are cached per (answer, step, adapter weights); a new step is computed by a
thread worker, never on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from chatcli.chat.lens_commands import StepRef, attention_scope, step_attention
from chatcli.chat.step_context import answer_prompt_ids
from chatcli.errors import ChatcliError
from chatcli.tui.attention_tint import AttentionMap, token_spans
from chatcli.tui.token_text import bar, percent, visible
from chatcli.tui.widgets.probe_view import ProbeView, probe_key

if TYPE_CHECKING:
    from chatcli.chat.session import Node
    from chatcli.engine.probes.attention import AttentionResult

KEYS_HELP = "[ ] layer  { } head  0 average  ←/→ step"
MAX_ROWS = 40
TOKEN_W = 12


@dataclass
class AttentionTint(Message):
    """Tint the transcript by ``amap`` (None: back to the normal tint)."""

    amap: AttentionMap | None


@dataclass
class _Probe:
    """One step's attention, and where its prompt's tokens sit in the prompt text (for the tint)."""

    result: AttentionResult
    prompt_len: int
    prompt: str | None
    spans: tuple[tuple[int, int], ...] | None


def probe_step(core: Any, node: Node, index: int) -> _Probe:
    """The attention of step ``index`` and its prompt text with each prompt token's characters
    (None when that text does not tokenize to exactly the step's prompt ids)."""
    result = step_attention(core, StepRef(node, index))
    prompt_ids = answer_prompt_ids(core, node)
    prompt: str | None = core.answer_prompt(node)
    spans = token_spans(core.engine.tokenizer.encode_offsets(prompt), prompt_ids)
    return _Probe(result, len(prompt_ids), prompt if spans is not None else None, spans)


def attention_rows(result: AttentionResult, layer: int | None, head: int | None, *, width: int, rows: int) -> list[Content]:
    """The ``rows`` most attended positions: position, token, bar (scaled to the largest), weight."""
    top = result.top(rows, layer=layer, head=head)
    pos_w = len(str(result.position))
    bar_w = max(4, width - pos_w - 1 - TOKEN_W - 1 - 6 - 1)
    biggest = max((w for _, w in top), default=1.0) or 1.0
    out = [Content.styled(f"{'pos':>{pos_w}} {'token':<{TOKEN_W}} weight", "bold $text-muted")]
    for pos, w in top:
        label = visible(result.tokens[pos])
        label = label if len(label) <= TOKEN_W else label[: TOKEN_W - 1] + "…"
        out.append(Content.assemble(
            (f"{pos:>{pos_w}}", "$text-muted"), " ", (label.ljust(TOKEN_W), "bold" if pos == result.position else ""), " ",
            (bar(w / biggest, bar_w), "$secondary"), (percent(w).rjust(6), ""),
        ))  # fmt: skip
    return out


class AttentionView(ProbeView):
    VIEW = "attention"
    WHAT = "attention"
    FAILED = "attention failed"
    LABEL = "Attention"
    KEY = "a"
    TITLE = "attention of this step"

    BINDINGS = [
        Binding("left_square_bracket", "layer(-1)", "Layer −", show=False),
        Binding("right_square_bracket", "layer(1)", "Layer +", show=False),
        Binding("left_curly_bracket", "head(-1)", "Head −", show=False),
        Binding("right_curly_bracket", "head(1)", "Head +", show=False),
        Binding("0", "average", "Average", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.layer_index: int | None = None  # None: averaged over the layers
        self.head_index: int | None = None  # None: averaged over the heads
        self._visible = False  # shown on screen: only then does it tint the transcript
        self._tinted: AttentionMap | None = None

    def compose(self):
        yield Static("", id="attention-body")
        yield Static(Content.styled(KEYS_HELP, "$text-muted"), id="attention-keys")

    # --- the protocol --------------------------------------------------------------------------

    def configure(self, **options) -> None:
        """``layer`` and ``head`` (None: averaged) from /attention."""
        self.layer_index, self.head_index = options.get("layer"), options.get("head")

    def compute(self, core: Any, node: Node, index: int) -> _Probe:
        return probe_step(core, node, index)

    def probe_for(self, node: Node, index: int) -> _Probe | None:
        """The cached attention of step ``index`` of ``node`` (None until computed)."""
        return self.cached(node, index)

    # --- the transcript's tint follows what the view shows, while it is on screen ---------------

    def on_show(self, event: events.Show) -> None:
        self._visible = True
        self._tint()

    def on_hide(self, event: events.Hide) -> None:
        self._visible = False
        self._tint()

    def on_unmount(self) -> None:
        self._visible = False
        self._tint()

    def _tint(self) -> None:
        amap = None
        if self._visible and self.node is not None and self.index is not None and self._problem is None:
            probe = self.probe_for(self.node, self.index)
            if probe is not None:
                amap = AttentionMap(
                    self.node.id, self.index, tuple(probe.result.row(self.layer_index, self.head_index)), probe.prompt_len,
                    probe.prompt, probe.spans,
                )  # fmt: skip
        if amap != self._tinted:
            self._tinted = amap
            self.post_message(AttentionTint(amap))

    # --- keys ----------------------------------------------------------------------------------

    def _shape(self) -> tuple[int, int] | None:
        probe = self.probe_for(self.node, self.index) if self.node is not None and self.index is not None else None
        return (probe.result.num_layers, probe.result.num_heads) if probe is not None else None

    @staticmethod
    def _next(value: int | None, delta: int, count: int) -> int | None:
        """Step through None (the average), 0, 1, ..., count - 1 and back to None."""
        ring = [None, *range(count)]
        return ring[(ring.index(value) + delta) % len(ring)]

    def action_layer(self, delta: int) -> None:
        shape = self._shape()
        if shape is None:
            self.app.bell()
            return
        self.layer_index = self._next(self.layer_index, delta, shape[0])
        self._redraw()

    def action_head(self, delta: int) -> None:
        shape = self._shape()
        if shape is None:
            self.app.bell()
            return
        self.head_index = self._next(self.head_index, delta, shape[1])
        self._redraw()

    def action_average(self) -> None:
        self.layer_index = self.head_index = None
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    # --- rendering -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        body = self.query_one("#attention-body", Static)
        keys = self.query_one("#attention-keys", Static)
        node, index = self.node, self.index
        if node is None or index is None or not 0 <= index < len(node.steps):
            body.update(Content.styled("Select a token of an answer (Ctrl+↑, or click it): this view shows which earlier "
                                       "tokens the model looked at when it chose it.", "$text-muted"))  # fmt: skip
            keys.display = False
            self._tint()
            return
        step = node.steps[index]
        lines = [Content.assemble(("step ", "$text-muted"), (f"{index + 1}", "bold"), (f" of {len(node.steps)}", "$text-muted"),
                                  ("  chose ", "$text-muted"), (visible(step.token), "bold reverse"))]  # fmt: skip
        key = probe_key(self.app.core, node, index)  # type: ignore[attr-defined]
        probe = self._cache.get(key)
        problem = self._problem or self._errors.get(key)
        keys.display = probe is not None and problem is None
        if problem is not None:
            lines.append(Content.styled(problem, "$warning"))
        elif probe is None:
            lines.append(Content.styled("recomputing the attention…", "$text-muted"))
        else:
            result = probe.result
            try:  # /attention LAYER HEAD past this model's: say so once, show the average
                result.check(self.layer_index, self.head_index)
            except ChatcliError as e:
                self.notify(e.message + " — showing the average", severity="warning", timeout=4)
                self.layer_index = self.head_index = None
            lines.append(Content.assemble(("read at ", "$text-muted"), (f"{result.position} ", "bold"),
                                          (visible(result.tokens[result.position]), "bold"),
                                          (", where the step was predicted", "$text-muted")))  # fmt: skip
            lines.append(Content.styled(attention_scope(result, self.layer_index, self.head_index), "bold $accent"))
            lines.append(Content(""))
            width = self.size.width or 44
            rows = max(3, min(MAX_ROWS, (self.size.height or 24) - 7))
            lines += attention_rows(result, self.layer_index, self.head_index, width=width, rows=rows)
        body.update(Content("\n").join(lines))
        self._tint()
