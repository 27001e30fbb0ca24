"""The probability panel: the distribution one step of an answer was drawn from.

For the current step while streaming, or the selected token afterwards, it shows
the most probable tokens of the raw model distribution with bars, the chosen
token's probability (raw and as sampled) and rank, and the entropy in bits.
With ``compare`` on, each row also shows the probability in the distribution
actually sampled from (after temperature, top-k, top-p, min-p), so the effect of
those settings is visible. For a token of a ``/compare``d answer,
:meth:`ProbabilityPanel.show_shift` shows the base and adapter distributions side
by side instead (see :mod:`chatcli.tui.widgets.compare_view`). Choosing a row (Enter, click, or 1-9 on the answer)
asks the app to branch the answer there with that token.

Whether it shows: :attr:`ProbabilityPanel.wanted` is the person's choice (F3, kept
across restarts); a screen narrower than :data:`MIN_SCREEN_WIDTH` hides it anyway
unless it was shown on purpose in this session (F3, F4, ``/compare``: :meth:`pin`).
The app tells it the screen's width (:meth:`ProbabilityPanel.fit`).

Views: a one-line tab row at the top names the panel's views (``Distribution · What-if ·
Lens · Attention``, the active one highlighted, each with its key); the distribution is the
panel's own, the others are :class:`~chatcli.tui.widgets.panel_view.PanelView` widgets from
:data:`chatcli.tui.widgets.panel_views.VIEWS`, mounted once and told the selected step
(:meth:`ProbabilityPanel.set_view`; the app opens them with F5 and the inspector's keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.events import Click
from textual.style import Style
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from chatcli.chat.certainty import ENTROPY_FULL_BITS, uncertainty
from chatcli.engine.events import Step
from chatcli.tui.widgets.compare_view import kl_legend, shift_rows, shift_summary
from chatcli.tui.widgets.panel_view import DISTRIBUTION, DISTRIBUTION_KEY, PanelView, ViewRequested
from chatcli.tui.widgets.panel_views import VIEWS
from chatcli.tui.messages import BranchRequested, LeaveAlternatives
from chatcli.tui.token_text import bar, percent, tint_color, visible

if TYPE_CHECKING:
    from chatcli.chat.session import Node
    from chatcli.lora.compare import Comparison, TokenShift

EMPTY_HELP = (
    "The next-token distribution appears here while the model writes.\n\n"
    "Afterwards select any token of an answer (click it, or Ctrl+↑ then ←/→) to see how it was chosen. "
    "Pick an alternative to regenerate the answer from that point: the old version stays (‹ ›)."
)


MIN_SCREEN_WIDTH = 96  # below this many columns the transcript needs the room: the panel starts hidden

NO_LOGPROBS = ("no probabilities for this token: the server sent no logprobs "
               "(it does not support them, or they are switched off), so there is no distribution to show")


class AltList(OptionList):
    BINDINGS = [Binding("escape", "back", "Back", show=False)]

    def action_back(self) -> None:
        self.post_message(LeaveAlternatives())


class ViewTabs(Static):
    """The panel's one-line tab row: every view with its key, the active one highlighted; click to switch."""

    def show_tabs(self, tabs: list[tuple[str, str, str]], active: str) -> None:
        """``tabs``: (name, label, key) in order."""
        width = self.size.width or 44
        full = sum(len(label) for _, label, _ in tabs) + 3 * (len(tabs) - 1) + 3 <= width
        parts: list[Content] = []
        for i, (name, label, key) in enumerate(tabs):
            text = label if full else label[:4]
            base = "bold reverse $accent" if name == active else "$text-muted"
            if i:
                parts.append(Content.styled(" · ", "$text-muted"))
            if text[:1].lower() == key:  # the key is the label's first letter: underline it
                tab = Content.assemble((text[0], f"{base} underline"), (text[1:], base))
            else:
                tab = Content.styled(f"{text} ({key})", base)
            parts.append(tab.stylize(Style.from_meta({"view": name})))  # a click switches to it
        parts.append(Content.styled(" F5" if full else "", "$text-muted"))
        self.update(Content.assemble(*parts))

    def on_click(self, event: Click) -> None:
        view = event.style.meta.get("view")
        if view is not None:
            event.stop()
            self.post_message(ViewRequested(view))


class ProbabilityPanel(Vertical):
    def __init__(self, *, wanted: bool = True, compare: bool = False) -> None:
        super().__init__(id="probs")
        self.border_title = "next-token distribution"
        self.compare = compare
        self.wanted = wanted  # the person wants the panel (F3); saved across restarts
        self.pinned = False  # shown on purpose in this session: it stays even on a narrow screen
        self.wide = True  # the screen has room for it (set by fit)
        self.node_id: int | None = None
        self.index: int | None = None
        self.step: Step | None = None
        self.shift: TokenShift | None = None  # set while showing a /compare'd token
        self.view = DISTRIBUTION  # the view shown (F5, the inspector's d/w/l/a)
        self.selected: tuple[Node, int] | None = None  # the step the views show
        self._views: dict[str, PanelView] = {cls.VIEW: cls() for cls in VIEWS}

    def compose(self):
        yield ViewTabs(id="probs-tabs")
        with Vertical(id="probs-distribution"):
            yield Static(Content(EMPTY_HELP), id="probs-summary")
            yield AltList(id="probs-alts")
            yield Static("", id="probs-legend")
        keys = self.view_keys()
        for view in self._views.values():
            view.display = False
            view.set_view_keys(keys)
            yield view

    def on_mount(self) -> None:
        self.query_one(AltList).display = False
        self._legend()
        self._tabs()

    def on_resize(self) -> None:
        self._tabs()

    # --- views ----------------------------------------------------------------------------

    def view_names(self) -> list[str]:
        """Every view, in tab order (the distribution first)."""
        return [DISTRIBUTION, *self._views]

    def view_keys(self) -> dict[str, str]:
        """key -> view name (d, w, l, a)."""
        return {DISTRIBUTION_KEY: DISTRIBUTION, **{v.KEY: name for name, v in self._views.items()}}

    def active_view(self) -> PanelView | None:
        """The view widget shown; None for the distribution."""
        return self._views.get(self.view)

    def set_view(self, name: str, **options) -> PanelView | None:
        """Show view ``name`` for the selected step (``options`` go to its :meth:`~PanelView.configure`)."""
        if name not in self.view_names():
            raise ValueError(f"no panel view {name!r}")
        self.view = name
        self.query_one("#probs-distribution").display = name == DISTRIBUTION
        for view_name, view in self._views.items():
            view.display = view_name == name
        self.border_title = self._title()
        self._tabs()
        view = self.active_view()
        if view is not None:
            if options:
                view.configure(**options)
            if self.selected is not None:
                view.show(*self.selected)
            else:
                view.clear()
        return view

    def next_view(self, delta: int = 1) -> str:
        names = self.view_names()
        return names[(names.index(self.view) + delta) % len(names)]

    def _title(self) -> str:
        view = self.active_view()
        if view is not None:
            return view.TITLE
        return "next-token distribution" if self.shift is None else "base vs adapter"

    def _tabs(self) -> None:
        tabs = [(DISTRIBUTION, "Distribution", DISTRIBUTION_KEY)] + [(n, v.LABEL, v.KEY) for n, v in self._views.items()]
        self.query_one(ViewTabs).show_tabs(tabs, self.view)

    # --- showing and hiding ----------------------------------------------------------------

    @property
    def hidden_by_width(self) -> bool:
        """Wanted, but hidden because the screen is too narrow (and not shown on purpose)."""
        return self.wanted and not self.wide and not self.pinned

    def fit(self, screen_width: int) -> None:
        """The screen is ``screen_width`` columns wide: show the panel if it is wanted and fits."""
        self.wide = screen_width >= MIN_SCREEN_WIDTH
        self._apply()

    def pin(self) -> None:
        """Show the panel for the rest of this session, whatever the width (F4, /compare)."""
        self.pinned = True
        self._apply()

    def toggle(self) -> bool:
        """F3: hide the panel if it shows, else show it (even on a narrow screen); returns whether it shows."""
        on = not self.display
        self.wanted = self.pinned = on
        self._apply()
        return on

    def _apply(self) -> None:
        self.display = self.pinned or (self.wanted and self.wide)

    def toggle_compare(self) -> None:
        """F4: also show (or hide) the distribution actually sampled from; shows the panel."""
        self.set_compare(not self.compare)
        if not self.display:
            self.wanted = True
            self.pin()

    def focus_alternatives(self) -> None:
        """Enter on an answer: the alternatives get the focus (when the panel shows some)."""
        alts = self.query_one(AltList)
        if self.display and alts.display and alts.option_count:
            alts.focus()
            if alts.highlighted is None:
                alts.highlighted = 0

    def set_compare(self, on: bool) -> None:
        self.compare = on
        self._legend()
        if self.step is not None and self.shift is None:
            self.show(self.step, node_id=self.node_id, index=self.index or 0, total=self._total, following=self._following)

    def clear(self) -> None:
        self.step = self.node_id = self.index = None
        self.selected = None
        for view in self._views.values():
            view.clear()
        self._set_shift(None)
        self.query_one("#probs-summary", Static).update(Content(EMPTY_HELP))
        self.query_one(AltList).display = False

    def _set_shift(self, shift: TokenShift | None) -> None:
        if (shift is None) != (self.shift is None):
            self.set_class(shift is not None, "-compared")
            self.shift = shift
            self.border_title = self._title()
            self._legend()
        self.shift = shift

    _total = 0
    _following = False

    def show_step(self, node: Node, index: int, *, following: bool, comparison: Comparison | None = None) -> None:
        """Step ``index`` of ``node``: its distribution, or with the ``comparison`` of a /compare'd
        answer base and adapter side by side."""
        if not 0 <= index < len(node.steps):
            return
        self.selected = (node, index)
        view = self.active_view()
        if view is not None:
            view.show(node, index)
        if comparison is not None:
            shift = comparison.steps[index]
            self.show_shift(node.steps[index], shift, adapters=comparison.adapters, node_id=node.id, index=index, total=len(node.steps))
        else:
            self.show(node.steps[index], node_id=node.id, index=index, total=len(node.steps), following=following)

    def show(self, step: Step, *, node_id: int | None, index: int, total: int, following: bool) -> None:
        self.step, self.node_id, self.index = step, node_id, index
        self._total, self._following = total, following
        self._set_shift(None)
        self.query_one("#probs-summary", Static).update(self._summary(step, index, total, following))
        self._set_rows(self._rows(step))

    def show_shift(
        self, step: Step, shift: TokenShift, *, adapters: tuple[str, ...], node_id: int, index: int, total: int
    ) -> None:
        """Step ``index`` of a compared answer: both distributions, the chosen token's shift, KL."""
        self.step, self.node_id, self.index = step, node_id, index
        self._total, self._following = total, False
        self._set_shift(shift)
        self.query_one("#probs-summary", Static).update(shift_summary(shift, index=index, total=total, adapters=adapters))
        self._set_rows(shift_rows(shift, (self.size.width or 40) - 4))

    def _set_rows(self, rows: list[Option]) -> None:
        alts = self.query_one(AltList)
        alts.display = True
        highlighted = alts.highlighted
        alts.clear_options()
        alts.add_options(rows)
        if highlighted is not None and alts.option_count:
            alts.highlighted = min(highlighted, alts.option_count - 1)

    # --- rendering -------------------------------------------------------------------------

    def _summary(self, step: Step, index: int, total: int, following: bool) -> Content:
        rank = step.rank
        u = uncertainty(step, "entropy")
        color = tint_color(u)
        gauge_style = Style(background=color, bold=True) if color is not None else "$text-muted"
        where = Content.assemble(
            ("step ", "$text-muted"), (f"{index + 1}", "bold"), (f" of {total}", "$text-muted"),
            ("   ● live" if following else "", "$success"),
        )
        chosen = Content.assemble(("chosen ", "$text-muted"), (visible(step.token), "bold reverse"), (f"  id {step.id}" if step.id >= 0 else "", "$text-muted"))
        probs = Content.assemble(
            ("model ", "$text-muted"), (percent(step.model_prob), "bold"),
            ("  sampled ", "$text-muted"), (percent(step.prob), "bold"),
            ("  rank ", "$text-muted"), (str(rank) if rank else f">{len(step.top)}", "bold"),
        )
        ent = Content.assemble(
            ("entropy ", "$text-muted"), (f"{step.entropy:.2f} bits ", "bold"),
            (bar(step.entropy / ENTROPY_FULL_BITS, 10), gauge_style),
        )
        lines = [where, chosen, probs, ent]
        if not step.top and step.model_prob != step.model_prob and step.prob != step.prob:
            lines = [where, chosen, Content.styled(NO_LOGPROBS, "$warning")]
        elif step.partial:
            lines.append(Content.styled(f"entropy over the {len(step.top)} alternatives the server returned", "$text-muted"))
        return Content("\n").join(lines)

    def _rows(self, step: Step) -> list[Option]:
        rows: list[Option] = []
        width = max(24, (self.size.width or 40) - 4)
        tok_w = 12
        if self.compare:
            bar_w = max(4, (width - tok_w - 4 - 14) // 2)
        else:
            bar_w = max(6, width - tok_w - 4 - 7)
        top_model = max((t.model_prob for t in step.top), default=1.0) or 1.0
        for i, t in enumerate(step.top):
            chosen = t.id == step.id
            mark = ("▶", "bold $accent") if chosen else (" ", "")
            label = visible(t.token)
            if len(label) > tok_w:
                label = label[: tok_w - 1] + "…"
            parts: list = [mark, (f"{i + 1}", "$text-muted"), " ", (label.ljust(tok_w), "bold" if chosen else "")]
            parts += [" ", (bar(t.model_prob / top_model, bar_w), "$accent" if chosen else "$primary"), (percent(t.model_prob).rjust(6), "")]
            if self.compare:
                cut = t.prob == 0
                parts += [
                    " ", (bar(t.prob, bar_w), "$warning" if not cut else "$text-muted"),
                    ("   cut" if cut else percent(t.prob).rjust(6), "$text-muted" if cut else ""),
                ]
            rows.append(Option(Content.assemble(*parts), id=f"alt-{i}"))
        if step.rank is None:
            rows.append(Option(Content.assemble(("▶", "bold $accent"), ("… ", "$text-muted"), (visible(step.token)[:tok_w].ljust(tok_w), "bold"),
                                                (f" {percent(step.model_prob)} (below the top {len(step.top)})", "$text-muted")), id="alt-chosen", disabled=True))
        return rows

    def _legend(self) -> None:
        if self.shift is not None:
            self.query_one("#probs-legend", Static).update(kl_legend())
            return
        if self.compare:
            text = "left: model (T=1) · right: sampled from\nEnter/click an alternative: branch · F4 hide"
        else:
            text = "Enter/click an alternative: branch\nF4: also show the sampled distribution"
        self.query_one("#probs-legend", Static).update(Content.styled(text, "$text-muted"))

    # --- choosing --------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.step is None or self.node_id is None or self.index is None or event.option_id is None:
            return
        if self.shift is not None and event.option_id.startswith("pair-") and event.option_id != "pair-chosen":
            alt = self.shift.top[int(event.option_id[5:])]
            if alt.id != self.step.id and all(t.id != alt.id for t in self.step.top):
                # a branch starts from the distribution recorded while the answer was written
                self.notify(f"{visible(alt.token)!r} is not among this step's recorded alternatives; pick another",
                            severity="warning", timeout=3)  # fmt: skip
                return
        elif event.option_id.startswith("alt-") and event.option_id != "alt-chosen" and self.shift is None:
            alt = self.step.top[int(event.option_id[4:])]
        else:
            return
        if alt.id == self.step.id:
            self.notify("that is the token already chosen here; pick another one", severity="warning", timeout=2)
            return
        self.post_message(BranchRequested(self.node_id, self.index, alt.id))
