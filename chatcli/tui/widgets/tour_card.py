"""The guided tour's card, docked above the prompt: the open chapter and its goals, ✓ as they are met.

Two lines (the chapter and ``/tour``; then each goal with ✓ or ○), so the transcript
keeps its room at 80×24; the chapter's full text goes into the transcript when it
opens (``/tour``). The card is hidden while the tour is off.

The tour (:class:`chatcli.tour.guide.Tour`) changes on any thread (answers finish in a
worker); the card subscribes with :meth:`post_message`, which is thread-safe, and
redraws on the UI thread. There it also says the tour's notes in the transcript: a
finished chapter and warnings (a goal met shows as its ✓ on the card).
"""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Static

from chatcli.tour.guide import Tour
from chatcli.tour.render import card_text, chapter_text


class TourCard(Static):
    DEFAULT_CSS = """
    TourCard {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $boost;
        border-top: hkey $accent;
    }
    """

    class Changed(Message):
        """The tour changed (posted from any thread)."""

    def __init__(self, tour: Tour) -> None:
        super().__init__(id="tour-card")
        self.tour = tour

    def on_mount(self) -> None:
        self.tour.subscribe(lambda: self.post_message(self.Changed()))
        self._draw()

    def on_tour_card_changed(self, message: Changed) -> None:
        self._draw()
        self.say_notes()

    def greet(self) -> None:
        """At start (after the transcript is drawn): the open chapter in full, and any pending note."""
        if self.tour.active:  # notes wait for /tour (a broken progress file is said when the tour starts)
            self.app.say(chapter_text(self.tour.view()), "result")
            self.say_notes()

    def say_notes(self) -> None:
        for note in self.tour.take_notes():
            if note.kind != "goal":  # a goal met is its ✓ here
                self.app.say(note.text, "warning" if note.kind == "warning" else "info")

    def _draw(self) -> None:
        view = self.tour.view()
        self.display = view.active
        if view.active:
            self.update(card_text(view))
