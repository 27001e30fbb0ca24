"""The panel's what-if view: the selected step re-formed under other settings, with keys.

For the step selected in the inspector it shows the top tokens of the model's own
distribution with their logits, a bar for the model probability (T=1) and one for the
probability sampling would draw with under the current settings; a line where top-k,
top-p and min-p start cutting; the mass outside the shown tokens in both; and a header
with the current settings beside the answer's own (the ones it was made with).

Keys (while the view has the focus): t/T temperature −/+ 0.1, k/K top-k down/up a
ladder (… 5, 10, 20, 50, 100, off), p/P top-p −/+ 0.05, m/M min-p −/+ 0.05, r/R
repetition penalty −/+ 0.1, s/S the scale of the first generation adapter −/+ 0.25 (the
step is re-scored at that scale: the model's distribution itself moves), 0 back to the
answer's own settings; ←/→ the previous/next token, Esc back to the inspector.

The step's logits are computed once per step (and adapter scale) by a thread worker
(:func:`chatcli.chat.whatif_command.step_logits_for`) and cached; re-forming them for
new sampling settings (:func:`chatcli.engine.probes.whatif.what_if`) takes milliseconds
and happens on the spot. A backend without local weights gets one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from textual.binding import Binding
from textual.content import Content
from textual.widgets import Static
from textual.worker import get_current_worker

from chatcli.chat.whatif_command import (
    PENALTY_LINE, SOFTMAX_LINE, StepLogits, local_engine, answer_params, cut_line, escape_controls, fit_cells, pct, settings_items, step_logits_for, tuned_adapter,
)  # fmt: skip
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError
from chatcli.tui.token_text import bar, visible
from chatcli.tui.widgets.panel_view import PanelView

if TYPE_CHECKING:
    from chatcli.chat.session import Node
    from chatcli.engine.probes.whatif import WhatIf

TOP_K_LADDER = (1, 2, 3, 5, 10, 20, 40, 50, 100, 0)  # 0 = off: every token, the top of the ladder
SCALE_STEP = 0.25
KEYS_HELP = "t/T temp  k/K top-k  p/P top-p  m/M min-p\nr/R rep  s/S adapter  0 answer's  ←/→ step"
FOCUS_HELP = "keys t T k K p P m M r R s S 0: click here\n(or Ctrl+↑ on a token, then w)"
MAX_ROWS = 10
CUT_MARKS = {"greedy": "T=0"}  # the cut column is six cells wide
TOKEN_W = 10


@dataclass
class _Computed:
    key: tuple[int, int, float | None]
    result: StepLogits | None
    error: str | None = None


class WhatIfView(PanelView):
    VIEW = "what-if"
    LABEL = "What-if"
    KEY = "w"
    TITLE = "what-if on this step"

    BINDINGS = [
        Binding("t", "temperature(-0.1)", "Temp −", show=False),
        Binding("T", "temperature(0.1)", "Temp +", show=False),
        Binding("k", "top_k(-1)", "Top-k −", show=False),
        Binding("K", "top_k(1)", "Top-k +", show=False),
        Binding("p", "top_p(-0.05)", "Top-p −", show=False),
        Binding("P", "top_p(0.05)", "Top-p +", show=False),
        Binding("m", "min_p(-0.05)", "Min-p −", show=False),
        Binding("M", "min_p(0.05)", "Min-p +", show=False),
        Binding("r", "penalty(-0.1)", "Rep −", show=False),
        Binding("R", "penalty(0.1)", "Rep +", show=False),
        Binding("s", "scale(-1)", "Scale −", show=False),
        Binding("S", "scale(1)", "Scale +", show=False),
        Binding("0", "reset", "Answer's settings", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.answer: SamplingParams | None = None  # the settings the selected answer was made with
        self.params: SamplingParams | None = None  # the settings tried now
        self.adapter: tuple[str, float] | None = None  # the adapter s/S scales, and its scale in the answer
        self.scale: float | None = None  # its scale now (None: the answer's)
        self._answer_id: int | None = None
        self._options: dict[str, Any] = {}  # from /whatif, applied at the next show
        self._cache: dict[tuple[int, int, float | None], StepLogits] = {}
        self._pending: tuple[int, int, float | None] | None = None  # the logits a worker is computing
        self._problem: str | None = None  # why nothing can be shown (a server, a streaming answer, an error)

    def compose(self):
        yield Static("", id="whatif-body")
        yield Static(Content.styled(KEYS_HELP, "$text-muted"), id="whatif-keys")

    # --- the protocol --------------------------------------------------------------------------

    def configure(self, **options) -> None:
        """``params`` (SamplingParams) and ``scale`` (float | None) from /whatif."""
        self._options = options

    def show(self, node: Node, index: int) -> None:
        super().show(node, index)
        if node.id != self._answer_id:  # another answer: its own settings to start from
            self._answer_id = node.id
            self._reset(node)
        if self._options:
            options, self._options = self._options, {}
            if options.get("params") is not None:
                self.params = options["params"]
            if options.get("scale") is not None:
                self.scale = options["scale"]
        self._problem = None
        if node.status == "streaming":
            self._problem = "the answer is still being written: what-if opens on its steps when it is done"
        else:
            try:
                local_engine(self.app.core)  # type: ignore[attr-defined]
            except ChatcliError as e:
                self._problem = e.message
        if self._problem is None:
            self._want(node, index)
        self._redraw()

    def clear(self) -> None:
        super().clear()
        self._problem = None
        self._redraw()

    def _reset(self, node: Node) -> None:
        self.answer = self.params = answer_params(node)
        self.scale = None
        try:
            self.adapter = tuned_adapter(self.app.core, node)  # type: ignore[attr-defined]
        except (ChatcliError, AttributeError):  # no local engine: the view says so
            self.adapter = None

    # --- computing -----------------------------------------------------------------------------

    def _key(self, node: Node, index: int, scale: float | None) -> tuple[int, int, float | None]:
        return (node.id, index, scale)

    def _want(self, node: Node, index: int) -> None:
        """Make sure the logits for the step (at the answer's scale, and at the current one) are cached."""
        keys = [self._key(node, index, None)]
        if self.scale is not None:
            keys.append(self._key(node, index, self.scale))
        missing = [k for k in keys if k not in self._cache]
        if not missing or self._pending is not None:  # one at a time: when it is done, _computed asks again
            return
        self._pending = missing[0]
        core = self.app.core  # type: ignore[attr-defined]
        key = missing[0]

        def work() -> None:
            try:
                result = _Computed(key, step_logits_for(core, node, index, scale=key[2]))
            except ChatcliError as e:
                result = _Computed(key, None, e.message)
            except Exception as e:  # a bug: one line in the view, the chat goes on
                result = _Computed(key, None, f"what-if failed ({type(e).__name__}: {e})")
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._computed, result)

        self.run_worker(work, name="whatif", group="whatif", thread=True, exit_on_error=False)

    def _computed(self, got: _Computed) -> None:
        self._pending = None
        if got.result is not None:
            self._cache[got.key] = got.result
        if self.node is None or self.index is None:
            return
        if got.error is not None and got.key[:2] == (self.node.id, self.index):
            self._problem = got.error
        elif self._problem is None:
            self._want(self.node, self.index)  # the second of two (answer's scale, then the new one)
        self._redraw()

    # --- keys ----------------------------------------------------------------------------------

    def _change(self, **changes) -> None:
        if self.params is None:
            self.app.bell()
            return
        try:
            self.params = self.params.with_(**changes)
        except ChatcliError:
            self.app.bell()  # past the end of the range: stays where it was
            return
        self._redraw()

    def action_temperature(self, delta: float) -> None:
        if self.params is not None:
            self._change(temperature=round(max(0.0, self.params.temperature + delta), 2))

    def action_top_k(self, direction: int) -> None:
        if self.params is None:
            return
        k = self.params.top_k
        ladder = list(TOP_K_LADDER)
        if k not in ladder:  # a value set by hand: the next rung above or below it
            ladder = sorted({*ladder[:-1], k}) + [0]
        i = ladder.index(k) + direction
        if not 0 <= i < len(ladder):
            self.app.bell()
            return
        self._change(top_k=ladder[i])

    def action_top_p(self, delta: float) -> None:
        if self.params is not None:
            self._change(top_p=round(min(1.0, self.params.top_p + delta), 2))

    def action_min_p(self, delta: float) -> None:
        if self.params is not None:
            self._change(min_p=round(min(1.0, max(0.0, self.params.min_p + delta)), 2))

    def action_penalty(self, delta: float) -> None:
        if self.params is not None:
            self._change(repetition_penalty=round(self.params.repetition_penalty + delta, 2))

    def action_scale(self, direction: int) -> None:
        if self.adapter is None or self.node is None or self.index is None:
            self.notify("no adapter is loaded: s/S change an adapter's scale (/load-lora one)", timeout=3)
            return
        now = self.scale if self.scale is not None else self.adapter[1]
        new = round(now + direction * SCALE_STEP, 4)
        if new < 0:
            self.app.bell()
            return
        self.scale = None if new == self.adapter[1] else new
        self.show(self.node, self.index)  # computes what is missing (a failed try is tried again)

    def action_reset(self) -> None:
        if self.node is not None and self.index is not None:
            self._reset(self.node)
            self.show(self.node, self.index)

    def on_resize(self) -> None:
        self._redraw()

    def on_focus(self) -> None:
        self._legend()

    def on_blur(self) -> None:
        self._legend()

    def _legend(self) -> None:
        keys = self.query_one("#whatif-keys", Static)
        keys.update(Content.styled(KEYS_HELP if self.has_focus else FOCUS_HELP, "$text-muted"))
        keys.display = self.node is not None and self._problem is None

    # --- rendering -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        body = self.query_one("#whatif-body", Static)
        node, index = self.node, self.index
        self._legend()
        if node is None or index is None:
            body.update(Content.styled("Select a token of an answer (Ctrl+↑, or click it): what-if re-forms its "
                                       "distribution under other settings, without regenerating.", "$text-muted"))
            return
        step = node.steps[index]
        where = Content.assemble(("step ", "$text-muted"), (f"{index + 1}", "bold"), (f" of {len(node.steps)}", "$text-muted"),
                                 ("  chose ", "$text-muted"), (escape_controls(visible(step.token)), "bold reverse"))  # fmt: skip
        if self._problem is not None:
            body.update(Content("\n").join([where, Content.styled(self._problem, "$warning")]))
            return
        base = self._cache.get(self._key(node, index, None))
        got = self._cache.get(self._key(node, index, self.scale)) if self.scale is not None else base
        if got is None or self.params is None:
            body.update(Content("\n").join([where, Content.styled("re-scoring the step…", "$text-muted")]))
            return
        from chatcli.engine.probes.whatif import what_if

        width = max(30, (self.size.width or 44))
        p = self.params
        softmax = SOFTMAX_LINE if p.repetition_penalty == 1.0 else f"{SOFTMAX_LINE}\n{PENALTY_LINE}"
        head = [where, self._settings(width)]
        tail = [Content.styled(got.note, "$warning")] if got.note else []
        tail.append(Content.styled(softmax, "$text-muted"))
        # As many rows as fit: the lines above, the adapter and summary lines, the table's head,
        # the outside row, a line per filter that may cut, and the keys take the rest.
        cuts = 1 if p.greedy else (p.top_k > 0) + (p.top_p < 1.0) + (p.min_p > 0.0)
        fixed = sum(_height(c, width) for c in head + tail) + 2 * (self.adapter is not None) + 1 + 2 + 1 + cuts + 2
        rows = max(3, min(MAX_ROWS, (self.size.height or 30) - fixed))
        tokenizer = self.app.core.engine.tokenizer  # type: ignore[attr-defined]
        w = what_if(got.logits, p, got.prefix, tokenizer, top_n=rows, include=[step.id])
        lines = [*head, self._summary(w)]
        if self.adapter is not None:
            lines.append(self._adapter_line(w, base, step.id))
        lines += tail + self._table(w, width, step.id)
        body.update(Content("\n").join(lines))

    def _settings(self, width: int) -> Content:
        """The five settings, changed ones highlighted with the answer's value after; wrapped between items."""
        assert self.params is not None and self.answer is not None
        lines: list[list[tuple[str, str]]] = [[]]
        used = 0
        for text, changed in settings_items(self.params, self.answer):
            if used and used + 2 + len(text) > width:
                lines.append([])
                used = 0
            if used:
                lines[-1].append(("  ", ""))
                used += 2
            lines[-1].append((text, "bold $accent" if changed else "$text-muted"))
            used += len(text)
        return Content("\n").join([Content.assemble(*parts) for parts in lines])

    def _summary(self, w: WhatIf) -> Content:
        return Content.assemble(("kept ", "$text-muted"), (str(w.kept), "bold"), (" · entropy ", "$text-muted"),
                                (f"{w.entropy_model:.2f}", "bold"), (" → ", "$text-muted"), (f"{w.entropy_sampled:.2f}", "bold"),
                                (" bits", "$text-muted"))  # fmt: skip

    def _adapter_line(self, w: WhatIf, base: StepLogits | None, chosen: int) -> Content:
        assert self.adapter is not None
        name, answer_scale = self.adapter
        if self.scale is None:
            return Content.assemble(("adapter ", "$text-muted"), (name, "bold $secondary"),
                                    (f" ×{answer_scale:g} (as answered) · s/S rescale", "$text-muted"))  # fmt: skip
        from chatcli.engine.sampling import raw_distribution

        row = w.row(chosen)
        before = float(raw_distribution(base.logits)[chosen]) if base is not None else float("nan")
        now = row.model_prob if row is not None else float("nan")
        return Content.assemble(("adapter ", "$text-muted"), (name, "bold $secondary"), (f" ×{self.scale:g}", "bold $accent"),
                                (f" ({answer_scale:g}): model p ", "$text-muted"), (pct(before), "bold"), (" → ", "$text-muted"),
                                (pct(now), "bold"))  # fmt: skip

    def _table(self, w: WhatIf, width: int, chosen: int) -> list[Content]:
        bar_w = max(3, (width - 1 - TOKEN_W - 6 - 1 - 6 - 1 - 6) // 2)
        top = max([r.model_prob for r in w.rows] + [r.prob for r in w.rows] + [1e-9])
        head = Content.styled(f"{'':1}{'token':<{TOKEN_W}}{'logit':>6} {'model':<{bar_w + 6}} {'sampled':<{bar_w + 6}}", "bold $text-muted")
        out = [Content(""), head]
        previous: str | None = None
        for r in w.rows:
            if r.cut is not None and r.cut != previous:
                text = f" {cut_line(r.cut, w.params)} "
                out.append(Content.styled(("──" + text).ljust(width, "─")[:width], "$warning"))
            previous = r.cut
            is_chosen = r.id == chosen
            label = fit_cells(escape_controls(visible(r.token)), TOKEN_W)
            sampled = ((" " * bar_w, ""), (f"✂{CUT_MARKS.get(r.cut, r.cut)}".rjust(6), "$warning")) if r.cut is not None else \
                ((bar(r.prob / top, bar_w), "$warning"), (_pct6(r.prob), "bold" if is_chosen else ""))  # fmt: skip
            out.append(Content.assemble(
                ("▶" if is_chosen else " ", "bold $accent"), (label, "bold" if is_chosen else ""),
                (f"{r.logit:6.2f}", "$text-muted"), " ", (bar(r.model_prob / top, bar_w), "$accent" if is_chosen else "$primary"),
                (_pct6(r.model_prob), ""), " ", *sampled,
            ))  # fmt: skip
        out.append(Content.assemble((f" outside the {len(w.rows)} shown".ljust(1 + TOKEN_W + 6 + 1 + bar_w), "$text-muted"),
                                    (_pct6(w.outside_model_mass), "$text-muted"), (" " * (bar_w + 1), ""),
                                    (_pct6(w.outside_prob_mass), "$text-muted")))  # fmt: skip
        return out


def _height(content: Content, width: int) -> int:
    """Screen lines ``content`` takes at ``width`` columns (each of its lines wraps on its own)."""
    return sum(max(1, -(-cell_len(line) // width)) for line in content.plain.split("\n"))


def _pct6(p: float) -> str:
    return pct(p).rjust(6)
