"""The panel's lens view: how the selected step's prediction formed, layer by layer.

For the step selected in the inspector it shows the logit lens
(:func:`chatcli.engine.probes.lens.logit_lens` over the ids the step was predicted from):
a row per layer (0 = the embeddings, L = the model's output), with the probability of the
token the answer chose as a bar and the layer's three most probable tokens; a mark
where the chosen token first becomes top-1 (◆) and where its probability passes 50% and
stays there (✓). The header says both in words. The rows fit the panel's width: tokens
are cut first, then the third token goes.

The table scrolls (↑/↓, PgUp/PgDn, the mouse) and starts at its bottom, where the answer
forms. ←/→ move to the previous/next token, Esc goes back to the inspector.

Results are cached per (answer, step, adapter weights), so moving back and forth is
instant; a new step is computed by a thread worker, never on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from chatcli.chat.lens_commands import SETTLED, StepRef, step_lens
from chatcli.tui.token_text import bar, visible
from chatcli.tui.widgets.probe_view import ProbeView, probe_key

if TYPE_CHECKING:
    from chatcli.chat.session import Node
    from chatcli.engine.probes.lens import LensResult

FIRST_MARK = "◆"  # the chosen token is top-1 here for the first time
SETTLED_MARK = "✓"  # its probability passes SETTLED here and stays above it to the output
BOTH_MARK = "★"  # both at once
KEYS_HELP = f"{FIRST_MARK} 1st top-1  {SETTLED_MARK} >{SETTLED:.0%} on  {BOTH_MARK} both  ↑/↓ scroll"


def _pct(p: float | None) -> str:
    """Four characters: ``100%``, `` 95%``, ``9.5%``, ``0.1%``, ``<.1%``."""
    if p is None or p != p:
        return "   –"
    if p >= 0.995:
        return "100%"
    if p >= 0.095:
        return f"{p * 100:3.0f}%"
    return f"{p * 100:3.1f}%" if p >= 0.00095 else "<.1%"


def _pct2(p: float) -> str:
    """Two characters for a token that is not top-1 (below 50%): ``49``, `` 9``, ``<1``."""
    return f"{p * 100:2.0f}" if p >= 0.005 else "<1"


def _cut(token: str, width: int) -> str:
    label = visible(token)
    return (label if len(label) <= width else label[: width - 1] + "…").ljust(width)


@dataclass(frozen=True)
class _Columns:
    """The widths of a lens row: layer number, bar, tokens (how many, how wide)."""

    layer: int
    bar: int
    tokens: int
    token: int

    @classmethod
    def fit(cls, result: LensResult, width: int) -> _Columns:
        layer = len(str(result.layers[-1].layer)) if result.layers else 2
        bar_w = 4 if width < 50 else 6 if width < 64 else 10
        rest = width - (layer + 1 + bar_w + 5)  # layer, mark, bar, space and percent
        # each token: a space, its text, then "100%" for the first and " 49" for the others (below 50%)
        tokens = 3 if rest >= 3 * (1 + 5) + 4 + 3 + 3 else 2
        token = max(4, (rest - tokens - 4 - 3 * (tokens - 1)) // tokens)
        return cls(layer, bar_w, tokens, token)


def lens_head(result: LensResult, width: int) -> Content:
    """The column titles of :func:`lens_rows`."""
    c = _Columns.fit(result, max(28, width))
    chosen = "p " + visible(result.target_token or "chosen")
    return Content.styled(f"{'L':>{c.layer}} {chosen[: c.bar + 5]:<{c.bar + 5}} top {c.tokens} (%)"[:width], "bold $text-muted")


def lens_rows(result: LensResult, width: int) -> list[Content]:
    """One row per layer, each at most ``width`` cells (titles: :func:`lens_head`).

    Columns: layer, mark, the chosen token's probability (bar + percent), then the top
    tokens: the first with its percent, the second and third with two digits (below 50%)."""
    c = _Columns.fit(result, max(28, width))
    first = result.first_top_layer()
    settled = result.settled_layer(SETTLED)
    rows = []
    for layer in result.layers:
        p = layer.target_prob
        mark = FIRST_MARK if layer.layer == first else SETTLED_MARK if layer.layer == settled else " "
        if layer.layer == first and layer.layer == settled:
            mark = BOTH_MARK
        parts: list = [
            (f"{layer.layer:>{c.layer}}", "$text-muted"),
            (mark, "bold $warning"),
            (bar(p or 0.0, c.bar), "$accent"),
            (" " + _pct(p), "bold" if p is not None and p >= SETTLED else ""),
        ]
        for k, t in enumerate(layer.top[: c.tokens]):
            style = "bold $accent" if t.id == result.target_id else ""
            parts += [" ", (_cut(t.token, c.token), style), (_pct(t.prob) if k == 0 else " " + _pct2(t.prob), "$text-muted")]
        rows.append(Content.assemble(*parts))
    return rows


def lens_header(node: Node, index: int, result: LensResult | None) -> list[Content]:
    """Which step, which token it chose, and (when computed) where that token leads and settles."""
    step = node.steps[index]
    where = Content.assemble(("step ", "$text-muted"), (f"{index + 1}", "bold"), (f" of {len(node.steps)}", "$text-muted"),
                             ("  chose ", "$text-muted"), (visible(step.token), "bold reverse"))  # fmt: skip
    if result is None:
        return [where]
    first = result.first_top_layer()
    settled = result.settled_layer(SETTLED)
    last = result.layers[-1].layer if result.layers else 0
    lead = Content.assemble((f"{FIRST_MARK} top-1 at layer ", "$text-muted"), (str(first), "bold")) if first is not None \
        else Content.styled("never top-1", "$warning")  # fmt: skip
    sure = Content.assemble((f" · {SETTLED_MARK} >{SETTLED:.0%} from ", "$text-muted"), (str(settled), "bold")) if settled is not None \
        else Content.styled(f" · never >{SETTLED:.0%}", "$text-muted")  # fmt: skip
    return [where, Content.assemble(lead, sure, (f" (of {last})", "$text-muted"))]


class LensView(ProbeView):
    VIEW = "lens"
    WHAT = "the logit lens"
    FAILED = "the lens failed"
    LABEL = "Lens"
    KEY = "l"
    TITLE = "logit lens: layer by layer"

    BINDINGS = [
        Binding("up", "scroll(-1)", "Scroll up", show=False),
        Binding("down", "scroll(1)", "Scroll down", show=False),
        Binding("pageup", "scroll(-8)", show=False),
        Binding("pagedown", "scroll(8)", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple | None = None  # the key the table shows (it scrolls to its end when it changes)

    def compose(self):
        yield Static("", id="lens-head")
        yield Static("", id="lens-columns")
        with VerticalScroll(id="lens-table"):
            yield Static("", id="lens-rows")
        yield Static(Content.styled(KEYS_HELP, "$text-muted"), id="lens-keys")

    # --- the protocol --------------------------------------------------------------------------

    def compute(self, core: Any, node: Node, index: int) -> LensResult:
        return step_lens(core, StepRef(node, index))

    def result_for(self, node: Node, index: int) -> LensResult | None:
        """The cached lens of step ``index`` of ``node`` (None until computed)."""
        return self.cached(node, index)

    # --- keys ----------------------------------------------------------------------------------

    def action_scroll(self, lines: int) -> None:
        table = self.query_one("#lens-table", VerticalScroll)
        table.scroll_relative(y=lines, animate=False)

    def on_resize(self) -> None:
        self._redraw()

    # --- rendering -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        head = self.query_one("#lens-head", Static)
        columns = self.query_one("#lens-columns", Static)
        rows = self.query_one("#lens-rows", Static)
        keys = self.query_one("#lens-keys", Static)
        node, index = self.node, self.index
        if node is None or index is None or not 0 <= index < len(node.steps):
            head.update(Content.styled("Select a token of an answer (Ctrl+↑, or click it): the lens shows what each "
                                       "layer would predict at that step.", "$text-muted"))  # fmt: skip
            rows.update("")
            columns.display = keys.display = False
            return
        key = probe_key(self.app.core, node, index)  # type: ignore[attr-defined]
        result = self._cache.get(key)
        problem = self._problem or self._errors.get(key)
        lines = lens_header(node, index, result)
        if problem is not None:
            lines.append(Content.styled(problem, "$warning"))
        elif result is None:
            lines.append(Content.styled("reading the layers…", "$text-muted"))
        head.update(Content("\n").join(lines))
        keys.display = columns.display = result is not None and problem is None
        if result is None or problem is not None:
            rows.update("")
            return
        width = (self.size.width or 45) - 1  # the table's scrollbar
        columns.update(lens_head(result, width))
        rows.update(Content("\n").join(lens_rows(result, width)))
        if self._shown != key:  # a new step: start at the output, where the answer forms
            self._shown = key
            self.call_after_refresh(lambda: self.query_one("#lens-table", VerticalScroll).scroll_end(animate=False))

