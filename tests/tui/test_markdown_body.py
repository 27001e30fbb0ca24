"""Answers rendered as Markdown show every line, lists at the start or the end included."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult

from chatcli.tui.widgets.markdown_body import MarkdownBody
from tests.tui_support import screen_text


class _OneAnswer(App):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield MarkdownBody(self.text)


def _screen_text(text: str, size=(60, 20)) -> str:
    async def run() -> str:
        app = _OneAnswer(text)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return screen_text(app)

    return asyncio.run(run())


@pytest.mark.parametrize(
    "text, last_line",
    [
        ("1. Red\n2. Blue\n3. Green", "Green"),
        ("- cats\n- dogs\n\nThat is all.", "That is all."),
        ("Colours:\n\n- red\n- blue", "blue"),
        ("Plain text only.", "Plain text only."),
    ],
)
def test_every_line_of_a_list_answer_is_on_screen(text, last_line):
    screen = _screen_text(text)
    assert last_line in screen, screen
    first_word = text.split()[1] if text[0] in "-1" else text.split()[0]
    assert first_word.strip(":") in screen
