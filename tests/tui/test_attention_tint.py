"""The attention tint: where a step's attention weights land in the transcript (pure mapping), and
the transcript drawing them on the answer's tokens, the user message and the /raw prompt, then
restoring the normal tint (fake engine: the weights are given, not computed)."""

from __future__ import annotations

import re

from chatcli.engine.params import SamplingParams
from chatcli.tui.attention_tint import AttentionMap, locate, token_spans
from chatcli.tui.token_text import attention_color, attention_fraction, token_content
from chatcli.tui.widgets.token_chunk import TokenChunk
from chatcli.tui.widgets.transcript import Note, UserMessage
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, send, until_idle


def test_attention_map_places_weights_on_prompt_messages_and_answer():
    prompt = "<s>user\nhi there</s>\n<s>bot\nyo</s>\n"
    spans = ((0, 3), (3, 8), (8, 10), (10, 16), (16, 20), (20, 21), (21, 24), (24, 28), (28, 30), (30, 34), (34, 35))
    weights = tuple(0.01 * (i + 1) for i in range(len(spans))) + (0.2, 0.3)  # 11 prompt tokens, 2 answer tokens
    amap = AttentionMap(7, 2, weights, len(spans), prompt, spans)
    assert amap.answer_values() == [0.2, 0.3]
    assert locate(prompt, ["hi there", "yo", "missing", ""]) == [8, 28, None, None]
    # "hi there" = tokens "hi" (8..10) and " there" (10..16), in the message's own coordinates
    assert amap.text_shades(8, 8) == [(0, 2, weights[2]), (2, 8, weights[3])]
    # an earlier answer's steps: "y" and "o" inside one prompt token (28..30) both get its weight
    assert amap.step_values(28, ["y", "o"]) == [weights[8], weights[8]]
    assert token_spans([(5, 0, 1), (6, 1, 2)], [5, 6]) == ((0, 1), (1, 2))
    assert token_spans([(5, 0, 1), (6, 1, 2)], [5, 7]) is None  # another tokenization: no character tint
    assert AttentionMap(7, 2, weights, len(spans)).prompt_shades() == []  # no prompt text: nothing there


def test_attention_colour_scale():
    assert attention_color(0.001) is None and attention_color(float("nan")) is None
    assert attention_fraction(0.25) == 1.0 and attention_fraction(0.9) == 1.0
    assert attention_color(0.01).a < attention_color(0.1).a < attention_color(0.5).a
    from chatcli.engine.events import Step

    steps = [Step(index=i, token=t, id=i, text=t, prob=1.0, model_prob=0.2, entropy=3.0, top=()) for i, t in enumerate("abc")]
    backgrounds = [s.style.background for s in token_content(steps, 0, tint="attention", values=[0.3, 0.001]).spans]
    assert backgrounds == [attention_color(0.3), None, None]  # past the values (the step itself and later): none


def _words(text: str) -> tuple[tuple[int, int], ...]:
    """A stand-in tokenization: each word with the spaces before it."""
    return tuple((m.start(), m.end()) for m in re.finditer(r"\s*\S+", text))


def test_transcript_tints_answer_user_message_and_raw_prompt_and_restores_them():
    async def go():
        app = build_app(FakeEngine(length=8, report_speed=42.0), params=SamplingParams(temperature=0, max_tokens=16))
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "what is the capital")
            await until_idle(pilot)
            await send(pilot, "/raw")
            node = app.core.conv.leaf
            answer = app.transcript.view_for(node.id)
            prompt = app.core.answer_prompt(node)
            spans = _words(prompt)
            weights = tuple(0.02 * (1 + i % 5) for i in range(len(spans))) + (0.3, 0.004, 0.2)
            amap = AttentionMap(node.id, 3, weights, len(spans), prompt, spans)
            app.transcript.set_attention(amap)
            await pilot.pause()

            assert answer.token_tint == "attention" and answer.attention == [0.3, 0.004, 0.2]
            assert "tint: attention of the selected token" in str(answer.query_one(".answer-header").render())
            drawn = {}
            for chunk in answer.query(TokenChunk):
                for span in chunk.render().spans:
                    if "token" in span.style.meta:
                        drawn[span.style.meta["token"]] = span.style.background
            assert drawn[0] == attention_color(0.3) and drawn[1] is None and drawn[2] == attention_color(0.2)
            assert all(drawn[i] is None for i in drawn if i >= 3)

            user = app.transcript.query_one(UserMessage)
            at = prompt.index("what is the capital")
            expected = {c: attention_color(w) for s, e, w in amap.text_shades(at, len(user.node.content)) for c in range(s, e)}
            got = {c: span.style.background for span in user.render().spans for c in range(span.start, span.end)}
            assert got == expected and got

            raw = next(n for n in app.transcript.query(Note) if n.prompt_of is not None)
            answer_id, start, end, text = raw.prompt_of
            assert answer_id == node.id and text == prompt
            shown = {c: span.style.background for span in raw.render().spans if getattr(span.style, "background", None)
                     for c in range(span.start, span.end)}  # fmt: skip
            for i, (s, e) in enumerate(spans):
                assert all(shown.get(start + c) == attention_color(weights[i]) for c in range(s, e))

            # a /raw said while the tint is on is tinted at once
            await send(pilot, "/raw")
            newest = [n for n in app.transcript.query(Note) if n.prompt_of is not None][-1]
            assert newest is not raw and any(getattr(s.style, "background", None) for s in newest.render().spans)

            app.transcript.set_attention(None)
            await pilot.pause()
            assert answer.attention is None and answer.token_tint != "attention"
            assert not any(getattr(s.style, "background", None) for s in user.render().spans)
            assert not any(getattr(s.style, "background", None) for s in raw.render().spans)

    run(go())
