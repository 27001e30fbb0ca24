"""The chat's thinking switch (--think/--no-think, /think) and a reasoning answer in the REPL and the TUI."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from chatcli.chat.commands import execute
from chatcli.chat.core import ChatCore
from chatcli.chat.repl import run_repl
from chatcli.engine.events import Done, Step
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.tui.token_text import THINKING_STYLE, token_content
from tests.chat.test_commands import Ctx
from tests.fake_engine import FakeEngine, fake_factory
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle

QWEN3 = Path(__file__).parent.parent / "tokenizer" / "qwen3_template.jinja"
PIECES = ["<think>", "\n", "The", " user", " asks", " for", " a", " capital", ".", "\n", "</think>", "\n\n",
          "Paris", " is", " the", " capital", "."]


class ThinkingEngine(FakeEngine):
    """The fake engine, its answers written as a Qwen3-style model thinks: a <think> block, then the answer."""

    def __init__(self, **kw) -> None:
        super().__init__(length=len(PIECES), **kw)

    def chat(self, messages, params, cancel=None, answer_prefix_ids=()):
        n = 0
        for event in super().chat(messages, params, cancel, answer_prefix_ids):
            if isinstance(event, Step):
                event = replace(event, text=PIECES[n], token=PIECES[n])
                n += 1
            elif isinstance(event, Done):
                event = replace(event, text="".join(PIECES[:n]))
            yield event


@pytest.fixture(scope="module")
def qwen3_engine(tiny_family_dirs):
    return load_engine(str(tiny_family_dirs("qwen3")), chat_template=str(QWEN3), warm_up=False)


def test_no_think_reaches_the_prompt_and_think_changes_it(qwen3_engine):
    core = ChatCore(qwen3_engine, thinking=False, params=SamplingParams(temperature=0, max_tokens=4))
    core.conv.add("user", "Capital of France?")  # Qwen3's template reads messages[0]: not an empty chat
    assert core.raw_prompt().endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ctx = Ctx(core)
    execute(ctx, "/think on")
    assert ctx.last[0].startswith("thinking on:") and core.raw_prompt().endswith("<|im_start|>assistant\n")
    execute(ctx, "/think")
    assert ctx.last == ("thinking: on (/think on, off or default; Qwen3-style templates only)", "result")
    execute(ctx, "/think default")
    assert core.thinking.enabled is None and core.raw_prompt().endswith("<|im_start|>assistant\n")
    with pytest.raises(UsageError, match="on, off or default"):
        core.thinking.set(core.engine, "maybe")
    qwen3_engine.set_thinking(None)


def test_earlier_reasoning_is_kept_out_of_the_next_prompt_by_the_template(qwen3_engine):
    core = ChatCore(qwen3_engine)
    user = core.conv.add("user", "Capital of France?")
    core.conv.add("assistant", "<think>\nThe user asks for a capital.\n</think>\n\nParis.", parent=user.id, status="stop")
    core.conv.add("user", "And of Italy?", parent=core.conv.leaf.id)
    prompt = core.raw_prompt()
    assert "<|im_start|>assistant\nParis.<|im_end|>" in prompt and "asks for a capital" not in prompt


def test_a_template_without_the_switch_warns_once_and_think_changes_nothing():
    said = []
    core = ChatCore(FakeEngine(length=2), thinking=True, on_notice=lambda message, kind: said.append((kind, message)))
    assert said == [("warning", "the chat template of fake-tiny has no thinking switch (enable_thinking): "
                                "--think/--no-think and /think change nothing for it")]
    with pytest.raises(UsageError, match="no thinking switch"):
        core.thinking.set(core.engine, "off")
    assert core.thinking.enabled is True  # unchanged


def test_repl_prints_the_reasoning_faint_and_the_answer_plainly(monkeypatch):
    lines = iter(["hi"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    out = io.StringIO()
    rc = run_repl(fake_factory(ThinkingEngine()), params=SamplingParams(temperature=0), stdin=io.StringIO(),
                  console=Console(file=out, width=200, force_terminal=True, color_system="standard"),
                  err=Console(file=io.StringIO()), interactive=True, progress_enabled=False, tint="off")
    assert rc == 0
    text = out.getvalue()
    faint = "\x1b[2;3m"  # dim + italic
    assert f"{faint}The" in text or f"{faint}<think>" in text
    answer = text[text.index("Paris"):]
    assert text[text.index("Paris") - len(faint): text.index("Paris")] != faint and "\x1b[2;3m" not in answer.split(".")[0]


def test_token_view_draws_the_reasoning_faint():
    steps = [Step(index=i, id=1, token=p, text=p, prob=0.5, model_prob=0.5, entropy=1.0, top=())
             for i, p in enumerate(PIECES)]
    content = token_content(steps, 0, tint="off", faint_before=12, click=False)
    faint = [s for s in content.spans if s.style == THINKING_STYLE]
    assert len(faint) == 12 and content.plain[faint[-1].end:].startswith("Paris")


def test_tui_shows_the_reasoning_above_the_answer():
    async def go():
        app = build_app(ThinkingEngine(report_speed=42.0), params=SamplingParams(temperature=0, max_tokens=64))
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await send(pilot, "Capital of France?")
            await until_idle(pilot)
            await pilot.pause(0.1)
            text = screen_text(app)
            assert "thinking  The user asks for a capital." in text and "Paris is the capital." in text
            assert "<think>" not in text and "</think>" not in text
            check_snapshot("thinking_80x24", text)

    run(go())
