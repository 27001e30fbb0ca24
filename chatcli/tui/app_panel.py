"""The chat app's inspection side: the probability panel, its views, the tint and ``/compare``.

:class:`PanelControl` is mixed into :class:`chatcli.tui.app.ChatApp`. It shows in the panel
the step a selected token of an answer was drawn from, opens the panel's views (F5, the
inspector's d/w/l/a, a view's own keys, ``/whatif`` ``/lens`` ``/attention``), keeps the
transcript's tint and ends a ``/compare`` tint, hides the panel on a narrow screen (one line
says so, once) and remembers the tint and the panel in the ``ui_state`` file.

The messages the widgets post about it are handled here by name (``on_token_selected``,
...): Textual finds such handlers on every class of the app's MRO, while ``@on`` handlers
register only on classes Textual builds (the app itself).
"""

from __future__ import annotations

from textual.events import Resize

from chatcli.tui.messages import LeaveAlternatives, PickAlternative, StatusHint, TokenSelected
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.attention_view import AttentionTint
from chatcli.tui.widgets.panel_view import PanelView, StepMove, ViewRequested
from chatcli.tui.widgets.transcript import TINT_HELP


class PanelControl:
    """What the panel shows and how answers are tinted; the state stays in the widgets."""

    # --- inspection: the panel shows the step a token of an answer was drawn from ----------

    def _show_step(self, node_id: int, index: int, *, following: bool) -> None:
        node = self.core.conv.nodes.get(node_id)
        if node is None:
            return
        view = self.transcript.view_for(node_id)
        comparison = view.comparison if view is not None and view.node is node else None
        self.panel.show_step(node, index, following=following, comparison=comparison)

    def on_token_selected(self, message: TokenSelected) -> None:
        following = self.stream.token_selected(message.node_id, message.index)
        self._show_step(message.node_id, message.index, following=following)
        node = self.core.conv.nodes.get(message.node_id)
        if self.tour is not None and self.panel.display and node is not None and 0 <= message.index < len(node.steps):
            self.tour.saw_step(node.steps[message.index])  # the learner saw this step's distribution

    # --- the panel's views (F5, the inspector's d/w/l/a, a view's keys, /whatif /lens /attention) --

    def open_panel_view(self, name: str, **options) -> PanelView | None:
        """Show the panel's view ``name`` for the selected step (the panel shows, whatever the width).
        From the inspector or another view, a view with keys of its own gets the focus."""
        inspecting = isinstance(self.focused, (AnswerView, PanelView))
        view = self.panel.set_view(name, **options)
        if self.tour is not None and view is not None:
            self.tour.opened_view(name)  # chapters 2 and 6 ask for the what-if and lens views
        if not self.panel.display:
            self.panel.wanted = True
            self.panel.pin()
        if inspecting:
            if view is not None and view.can_focus:
                self.call_after_refresh(view.focus)
            else:
                self.transcript.focus_inspected()
        return view

    def on_view_requested(self, message: ViewRequested) -> None:
        self.open_panel_view(message.view)

    def on_attention_tint(self, message: AttentionTint) -> None:
        self.transcript.set_attention(message.amap)  # the attention view shows (a map) or left (None)

    def on_step_move(self, message: StepMove) -> None:
        view = self.transcript.inspected
        if view is None or not view.is_attached or view.cursor is None:
            self.bell()
            return
        view.move_to(view.cursor + message.delta)

    def on_status_hint(self, message: StatusHint) -> None:
        self.status.flash(message.text)

    def on_pick_alternative(self, message: PickAlternative) -> None:
        self.panel.focus_alternatives()

    def on_leave_alternatives(self, message: LeaveAlternatives) -> None:
        if not self.transcript.focus_inspected():
            self.prompt.focus()

    # --- the tint (F2, /tint) -----------------------------------------------------------------

    @property
    def tint(self) -> str:
        """How answers are shown ("off" | "model_prob" | "entropy"); the transcript keeps it."""
        return self.transcript.tint

    def set_tint(self, mode: str) -> None:
        """The person chose a tint (F2, /tint): every answer shows it, and it is remembered."""
        self.end_comparison()
        self.transcript.set_tint(mode)
        self.refresh_status()
        self.notify(f"tint: {mode} — {TINT_HELP[mode]}", timeout=2)
        self._remember(tint=mode)

    # --- the panel: hidden on a narrow screen (one line says so), remembered when toggled -----

    def on_resize(self, event: Resize) -> None:
        if self._laid_out:  # before that, on_mount fits the panel to the first size
            self._fit_panel(event.size.width)

    def _fit_panel(self, width: int) -> None:
        panel = self.panel
        panel.fit(width)
        if panel.hidden_by_width and not self._told_panel_hidden:
            self._told_panel_hidden = True
            self.say("the probability panel is hidden at this width — F3 shows it", "info")

    def _remember(self, **changes) -> None:
        """Keep the view settings for the next start (when the app was given a file for them)."""
        warning = self.view_settings.remember(**changes)
        if warning:
            self.say(warning, "warning")

    # --- /compare: per-token KL tinting ----------------------------------------------------

    def end_comparison(self) -> bool:
        """Back to normal tinting (Esc, F2, /tint, a new answer); False when no comparison was shown."""
        view = self.transcript.compared
        if view is None:  # none, or its view moved to a sibling or was redrawn since
            return False
        view.set_comparison(None)
        if self.panel.node_id == view.node.id and view.cursor is not None:
            self._show_step(view.node.id, view.cursor, following=False)
        return True
