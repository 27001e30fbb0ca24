"""The probability panel's views of one step: the protocol a view implements.

The panel (:mod:`chatcli.tui.widgets.probs`) shows one view at a time under a one-line
tab row: its own distribution view (built in, name ``"distribution"``, key ``d``) or one
of the views registered in :mod:`chatcli.tui.widgets.panel_views`. A view is a widget
class deriving from :class:`PanelView`; the panel mounts one of each, shows the active
one and tells it about the selected step:

* ``VIEW`` its name (``"what-if"``; ``show_view`` and slash commands use it), ``LABEL``
  its tab, ``KEY`` the key that opens it (from the token inspector or another view),
  ``TITLE`` the panel's border title while it shows;
* :meth:`PanelView.show` ``(node, index)``: step ``index`` of the answer ``node`` (a
  :class:`chatcli.chat.session.Node`) is selected: called when the view becomes active
  and whenever the selection changes while it is (also for each new step while an
  answer streams and the panel follows it: ``node.status == "streaming"``). It must
  return at once; model work runs in a thread worker and is cached by the view;
* :meth:`PanelView.clear`: nothing is selected (a new answer starts);
* :meth:`PanelView.configure` ``(**options)``: settings a slash command passes along
  (``/whatif temperature 1.5``), before the next :meth:`show`.

Keys: a view with keys of its own is focusable (``can_focus``, the default); the panel
gives it the focus when it is opened from the inspector. Every view then has ←/→ (the
previous/next token of the answer: :class:`StepMove`, which the app turns into a move of
the inspector's cursor), the other views' keys (:class:`ViewRequested`) and Esc (back
to the inspector, the app's Esc). A printable key the view does not bind goes to the
prompt, as in the inspector, so typed text is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message

if TYPE_CHECKING:
    from chatcli.chat.session import Node

DISTRIBUTION = "distribution"  # the panel's built-in view
DISTRIBUTION_KEY = "d"


@dataclass
class ViewRequested(Message):
    """Show the view named ``view`` (a view's key was pressed in another view)."""

    view: str


@dataclass
class StepMove(Message):
    """Select the token ``delta`` steps away in the inspected answer (←/→ in a view)."""

    delta: int


class PanelView(Vertical, can_focus=True):
    """Base class of the panel's views (see the module docstring for the protocol)."""

    VIEW: ClassVar[str] = ""
    LABEL: ClassVar[str] = ""
    KEY: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""

    BINDINGS = [
        Binding("left", "step(-1)", "Prev token", show=False),
        Binding("right", "step(1)", "Next token", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(classes="panel-view")
        self.node: Node | None = None
        self.index: int | None = None
        self._view_keys: dict[str, str] = {}  # the other views' keys (set by the panel)
        self._passing_on = False  # typed keys go to the prompt and its focus is on its way

    def show(self, node: Node, index: int) -> None:
        """Step ``index`` of ``node`` is selected; subclasses render it (and call this first)."""
        self.node, self.index = node, index

    def clear(self) -> None:
        self.node = self.index = None

    def configure(self, **options) -> None:
        """Settings from a slash command; a view without any ignores them."""

    # --- keys ----------------------------------------------------------------------------------

    def action_step(self, delta: int) -> None:
        self.post_message(StepMove(delta))

    def set_view_keys(self, keys: dict[str, str]) -> None:
        self._view_keys = {k: v for k, v in keys.items() if v != self.VIEW}

    def on_key(self, event: events.Key) -> None:
        if not (event.is_printable and event.character):
            return
        if not self._passing_on:
            if event.key in self._bindings.key_to_bindings:
                return
            view = self._view_keys.get(event.character)
            if view is not None:
                event.stop()
                event.prevent_default()
                self.post_message(ViewRequested(view))
                return
        event.stop()
        event.prevent_default()
        # The focus moves after this key; keys already queued behind it (a fast typist, a paste)
        # reach this view first and must follow it into the prompt, not switch views or act here.
        prompt = self.app.prompt  # type: ignore[attr-defined]  (typed text is never lost)
        if not self._passing_on:
            self._passing_on = True
            prompt.focus()
        prompt.insert(event.character)

    def on_blur(self) -> None:
        self._passing_on = False
