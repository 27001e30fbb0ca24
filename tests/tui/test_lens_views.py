"""The panel's lens and attention views on a real tiny model: what they show is what the probes
compute for the selected step, their keys, /lens and /attention opening them, and the attention
tint of the transcript (answer tokens, user message, the /raw prompt) while the attention view shows."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from chatcli.chat.step_context import answer_prompt_ids, step_prefix
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.attention import attention_weights
from chatcli.engine.probes.lens import logit_lens
from chatcli.tui.app import make_app
from chatcli.tui.token_text import attention_color
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.token_chunk import TokenChunk
from chatcli.tui.widgets.attention_view import AttentionView, attention_rows
from chatcli.tui.widgets.lens_view import LensView, lens_rows
from chatcli.tui.widgets.transcript import Note, UserMessage
from tests.tui_support import check_snapshot, ready, run, screen_text, send, until_idle, wait_for

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, seed=1)


class SteadyEngine:
    """The tiny model's engine with a fixed reported speed, so screens are reproducible."""

    def __init__(self, engine) -> None:
        from dataclasses import replace

        self._engine = engine
        self.identity = replace(engine.identity, name="tiny-llama")  # not the temporary directory

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def chat(self, *args, **kwargs):
        from dataclasses import replace

        from chatcli.engine.events import Done

        for event in self._engine.chat(*args, **kwargs):
            yield replace(event, tokens_per_s=42.0, ttft_s=0.1) if isinstance(event, Done) else event


def _app(model_dir):
    from chatcli.engine.loader import load_engine

    return make_app(lambda progress: SteadyEngine(load_engine(str(model_dir), device="cpu")), store=None, params=GREEDY,
                    flush_interval=0.02)  # fmt: skip


async def _answer(pilot, text: str = "hello there"):
    await ready(pilot)
    await send(pilot, text)
    await until_idle(pilot)
    app = pilot.app
    node = app.core.conv.leaf
    return node, app.transcript.view_for(node.id)


async def _open(pilot, key: str, view_cls, index: int):
    """Enter the inspector, go to step ``index``, press the view's key; wait for its result."""
    app = pilot.app
    await pilot.press("ctrl+up", "home", *["right"] * index, key)
    view = app.panel.query_one(view_cls)
    node = app.core.conv.leaf
    got = (lambda: view.result_for(node, index)) if view_cls is LensView else (lambda: view.probe_for(node, index))
    await wait_for(pilot, lambda: got() is not None, what=f"the {view_cls.VIEW} view's result")
    await pilot.pause(0.1)
    return view, got()


def _shades(content, start: int = 0, end: int | None = None) -> dict[int, object]:
    """Character -> the background drawn there (attention tints only)."""
    out = {}
    for span in content.spans:
        bg = getattr(span.style, "background", None)
        if bg is not None:
            for i in range(max(span.start, start), min(span.end, end if end is not None else span.end)):
                out[i] = bg
    return out


def _token_backgrounds(view: AnswerView) -> dict[int, object]:
    out: dict[int, object] = {}
    for chunk in view.query(TokenChunk):
        for span in chunk.render().spans:
            meta = span.style.meta if hasattr(span.style, "meta") else {}
            if "token" in meta:
                out[int(meta["token"])] = span.style.background
    return out


def _tint_levels(text: str, backgrounds: dict[int, object]) -> str:
    """Each character's attention tint as a digit 0-9 under the text (' ': none): a tint snapshot."""
    levels = []
    for i, _ in enumerate(text):
        bg = backgrounds.get(i)
        levels.append(" " if bg is None else str(min(9, round(9 * (bg.a - 0.15) / 0.65))))
    return "".join(levels)


# --- the lens view ---------------------------------------------------------------------------


def test_lens_view_shows_the_probe_of_the_selected_step(tiny_model_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            node, _ = await _answer(pilot)
            view, result = await _open(pilot, "l", LensView, 3)
            assert app.panel.view == "lens" and app.focused is view
            engine = app.core.engine
            expected = logit_lens(engine.model, step_prefix(app.core, node, 3), target_id=node.steps[3].id,
                                  tokenizer=engine.tokenizer)  # fmt: skip
            assert result == expected  # the view reads exactly the probe of step 4's prefix
            assert abs(result.layers[-1].target_prob - node.steps[3].model_prob) < 1e-4
            text = screen_text(app)
            assert "step 4 of" in text and "logit lens" in text
            rows = lens_rows(result, view.size.width - 1)
            for layer, row in zip(result.layers, rows):  # every layer's row, as drawn
                assert str(layer.layer) in str(row)[:3]
            # ← moves to the previous token: the view follows, and coming back is instant (cached)
            await pilot.press("left")
            await wait_for(pilot, lambda: view.result_for(node, 2) is not None, what="step 3's lens")
            assert view.index == 2
            await pilot.press("right")
            assert view.index == 3 and view.result_for(node, 3) is result
            check_snapshot("lens_view", screen_text(app))

    run(go())


def test_lens_view_at_80_columns_stays_legible(tiny_model_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            await _answer(pilot)
            view, result = await _open(pilot, "l", LensView, 5)
            assert app.panel.display and app.panel.view == "lens"  # shown though the screen is narrow
            lines = screen_text(app).splitlines()
            assert all(cell_len(line) <= 80 for line in lines)
            assert any("top-1" in line or "never top-1" in line for line in lines)
            check_snapshot("lens_view_80x24", screen_text(app))

    run(go())


# --- the attention view and the tint ---------------------------------------------------------


def test_attention_view_keys_and_parity(tiny_model_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            node, _ = await _answer(pilot)
            view, probe = await _open(pilot, "a", AttentionView, 4)
            engine = app.core.engine
            expected = attention_weights(engine.model, step_prefix(app.core, node, 4), tokenizer=engine.tokenizer)
            assert probe.result.position == expected.position and probe.result.tokens == expected.tokens
            assert (probe.result.weights - expected.weights).abs().max() < 1e-6
            assert probe.prompt_len == len(answer_prompt_ids(app.core, node))
            assert "average over 2 layers × 4 heads" in screen_text(app)
            shown = [str(r) for r in attention_rows(probe.result, None, None, width=44, rows=8)[1:]]
            for (pos, w), row in zip(expected.top(8), shown):
                assert row.split()[0] == str(pos)
            await pilot.press("right_square_bracket")
            assert (view.layer_index, view.head_index) == (0, None) and "layer 0, average over 4 heads" in screen_text(app)
            await pilot.press("right_curly_bracket", "right_curly_bracket")
            assert view.head_index == 1 and "layer 0, head 1" in screen_text(app)
            await pilot.press("left_square_bracket")
            assert view.layer_index is None and "head 1, average over 2 layers" in screen_text(app)
            await pilot.press("0")
            assert (view.layer_index, view.head_index) == (None, None)
            check_snapshot("attention_view", screen_text(app))

    run(go())


def test_attention_tints_answer_user_message_and_raw_prompt_until_the_view_is_left(tiny_model_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(130, 44)) as pilot:
            node, answer = await _answer(pilot, "hello there")
            await send(pilot, "/raw")
            view, probe = await _open(pilot, "a", AttentionView, 6)
            weights = probe.result.row()
            P = probe.prompt_len
            amap = app.transcript.attention
            assert amap is not None and amap.node_id == node.id and amap.index == 6 and amap.weights == tuple(weights)
            # the answer's tokens before the step, by the weight of their position; later ones untinted
            assert answer.token_tint == "attention" and answer.attention == weights[P : P + 6]
            bg = _token_backgrounds(answer)
            assert {i: bg[i] for i in bg if i < 6} == {i: attention_color(weights[P + i]) for i in bg if i < 6}
            assert all(bg[i] is None for i in bg if i >= 6)
            # the /raw prompt: each prompt token's characters by its weight
            raw = next(n for n in app.transcript.query(Note) if n.prompt_of is not None)
            _, start, end, prompt = raw.prompt_of
            assert prompt == app.core.answer_prompt(node)
            drawn = _shades(raw.render(), start, end)
            for tok, (s, e) in enumerate(probe.spans):
                color = attention_color(weights[tok])
                assert all(drawn.get(start + c) == color for c in range(s, e)), (tok, s, e)
            # the user message, found in the prompt
            user = app.transcript.query_one(UserMessage)
            user_bg = _shades(user.render())
            assert user_bg, "the user message is tinted"
            levels = "\n".join([
                "user:   " + user.node.content, "        " + _tint_levels(user.node.content, user_bg),
                "answer: " + "".join(s.text for s in node.steps[:6]).replace("\n", "↵"),
                "        " + "".join(_tint_levels(s.text, {j: bg.get(i) for j in range(len(s.text))}) for i, s in enumerate(node.steps[:6])),
                "raw:    " + prompt.replace("\n", "↵"),
                "        " + _tint_levels(prompt, {c - start: b for c, b in drawn.items()}),
            ])  # fmt: skip
            check_snapshot("attention_tint", levels)
            # another layer: the tint follows what the view shows
            await pilot.press("right_square_bracket")
            assert answer.attention == probe.result.row(0)[P : P + 6]
            # hiding the panel (F3) takes the tint away, showing it again brings it back
            await pilot.press("f3")
            await wait_for(pilot, lambda: app.transcript.attention is None, timeout=3, what="the tint gone")
            assert answer.attention is None
            await pilot.press("f3")
            await wait_for(pilot, lambda: answer.attention is not None, what="the tint back")
            # leaving the view (the distribution, from the inspector) restores every tint
            await pilot.press("ctrl+up", "d")
            await pilot.pause(0.1)
            assert app.transcript.attention is None and answer.attention is None and answer.token_tint == "model_prob"
            assert not _shades(raw.render(), start, end) and not _shades(user.render())

    run(go())


def test_slash_commands_open_the_views_and_refuse_bad_input(tiny_model_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "/lens")
            assert "no answer yet" in screen_text(app)
            node, _ = await _answer(pilot)
            await send(pilot, "/attention 1 2")
            view = app.panel.query_one(AttentionView)
            assert app.panel.view == "attention" and (view.layer_index, view.head_index) == (1, 2)
            assert app.panel.selected == (node, len(node.steps) - 1)
            await wait_for(pilot, lambda: "layer 1, head 2" in screen_text(app), what="layer 1, head 2")
            await send(pilot, "/lens step 2")
            assert app.panel.view == "lens" and app.panel.selected == (node, 1)
            lens = app.panel.query_one(LensView)
            await wait_for(pilot, lambda: lens.result_for(node, 1) is not None, what="step 2's lens")
            await send(pilot, "/attention 9")  # this model has 2 layers: one line, the average shown
            await wait_for(pilot, lambda: "average over 2 layers" in screen_text(app), what="the average")
            await send(pilot, "/lens hello wor")  # a plain text: a table in the transcript
            await wait_for(pilot, lambda: "after 'hello wor' (plain text)" in screen_text(app), what="the text's lens")

    run(go())


@pytest.mark.parametrize("key", ["l", "a"])
def test_views_refuse_a_backend_without_local_weights_and_pass_typing_on(key):
    from tests.fake_engine import FakeEngine
    from tests.tui_support import build_app

    async def go():
        app = build_app(FakeEngine(length=6))
        async with app.run_test(size=(130, 36)) as pilot:
            await ready(pilot)
            await send(pilot, "hi")
            await until_idle(pilot)
            await pilot.press("ctrl+up", key)
            await pilot.pause(0.1)
            assert "needs chatcli's own PyTorch" in screen_text(app)
            assert app.transcript.attention is None
            # typed fast from the view: every key reaches the prompt (w is no view switch on the way)
            view = app.panel.active_view()
            assert app.focused is view
            await pilot.press("slash", "r", "a", "w")
            await pilot.pause()
            assert app.prompt.text == "/raw" and app.panel.view == view.VIEW and app.focused is app.prompt

    run(go())
