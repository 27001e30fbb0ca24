"""Typed text goes to the prompt: after /compare, after the inspector, and from an answer focused by accident.

The inspector's printable keys (l . , digits [ ]) act only when the person entered it
(Ctrl+↑, a click on a token); Esc leaves it for the prompt in one press.
"""

from __future__ import annotations

import torch
from textual import events

from chatcli.engine.params import SamplingParams
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.tui.app import make_app
from chatcli.tui.widgets.answer import AnswerView
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, screen_text, send, until_idle, wait_for

TYPED = "/lora-scale pirate 0.5"  # l, . and digits are inspector keys; 5 would branch


def _adapter(tmp_path):
    gen = torch.Generator().manual_seed(0)
    mods = {}
    for i in (0, 1):
        for proj, out_f in (("q_proj", 64), ("v_proj", 32)):
            mods[f"model.layers.{i}.self_attn.{proj}"] = ModuleLoRA(torch.randn(4, 64, generator=gen), torch.randn(out_f, 4, generator=gen) * 0.05, 8.0)
    return write_adapter(LoRAAdapter(modules=mods), tmp_path / "sft")


def _answers(app) -> int:
    return sum(1 for n in app.core.conv.nodes.values() if n.role == "assistant")


def test_after_compare_and_after_the_inspector_typing_reaches_the_prompt(tiny_model_dir, tmp_path):
    from chatcli.engine.loader import load_engine

    adapter = _adapter(tmp_path)

    async def go():
        app = make_app(lambda progress: load_engine(str(tiny_model_dir), device="cpu"), store=None,
                       params=SamplingParams(temperature=0.0, max_tokens=12, seed=1), flush_interval=0.02)  # fmt: skip
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter} --name sft")
            await send(pilot, "hello there")
            await until_idle(pilot)
            view = app.transcript.answers()[-1]
            answers = _answers(app)

            await send(pilot, "/compare")
            assert view.comparison is not None and app.focused is app.prompt
            await pilot.press(*TYPED)
            assert app.prompt.text == TYPED and _answers(app) == answers and view.comparison is not None
            app.prompt.clear()

            # into the inspector and out with one Esc: the KL tint stays, the keys go to the prompt
            await pilot.press("ctrl+up")
            assert app.focused is view and view.inspector_keys
            await pilot.press("left", "escape")
            assert app.focused is app.prompt and view.comparison is not None
            await pilot.press(*TYPED)
            assert app.prompt.text == TYPED and _answers(app) == answers
            await pilot.press("escape")  # the next Esc ends the comparison
            assert view.comparison is None and app.prompt.text == TYPED

    run(go())


def test_typing_from_the_inspector_sends_every_queued_key_to_the_prompt():
    async def go():
        app = build_app(FakeEngine(length=30))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            answers = _answers(app)
            await pilot.press("ctrl+up")
            view = app.focused
            assert isinstance(view, AnswerView) and view.inspector_keys
            for ch in TYPED:  # as a terminal delivers fast typing: all queued before the focus moves
                key = {" ": "space", "/": "slash", "-": "minus", ".": "full_stop"}.get(ch, ch)
                app.post_message(events.Key(key, ch))
            await wait_for(pilot, lambda: app.prompt.text == TYPED, what="the typed text")
            assert app.focused is app.prompt and _answers(app) == answers and app.core.conv.leaf is view.node

    run(go())


def test_an_answer_focused_without_entering_the_inspector_passes_its_keys_on():
    async def go():
        app = build_app(FakeEngine(length=30))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            answers = _answers(app)
            view.focus()  # a click beside the tokens, Tab, a version switch from the header
            await pilot.pause()
            assert app.focused is view and not view.inspector_keys
            await pilot.press("l", "5", "full_stop")
            assert app.prompt.text == "l5." and app.focused is app.prompt and _answers(app) == answers

    run(go())


def test_past_the_last_uncertain_token_the_status_bar_says_so():
    async def go():
        app = build_app(FakeEngine(length=40))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "explain")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "end", "right_square_bracket")
            view = app.focused
            assert view.cursor == 39  # nothing to jump to: the cursor stays
            bar = screen_text(app).splitlines()[-2]
            assert "no more uncertain tokens after this one" in bar
            await pilot.press("home", "left_square_bracket")
            assert "no more uncertain tokens before this one" in screen_text(app).splitlines()[-2]

    run(go())
