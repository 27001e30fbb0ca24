"""End to end: the chat TUI and plain mode on the real default model (SmolLM2-135M-Instruct).

Marked ``e2e``: needs the pulled model (see tests/e2e_model.py; ``CHATCLI_TEST_MODEL_DIR``
or ``CHATCLI_TEST_CACHE`` avoid pulling again).
"""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from chatcli.engine.params import SamplingParams
from chatcli.chat.store import Store
from tests.e2e_model import default_model_dir
from tests.tui_support import ready, run, send, until_idle

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France? Answer in one short sentence."


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from chatcli.engine.loader import load_engine

    return load_engine(str(default_model_dir(tmp_path_factory)))


def test_tui_answers_inspects_branches_and_saves(engine, tmp_path):
    from chatcli.tui.app import make_app

    store = Store.open(tmp_path / "h.db")

    async def go():
        app = make_app(lambda progress: engine, store=store, params=SamplingParams(temperature=0, max_tokens=24))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, QUESTION)
            await until_idle(pilot, timeout=120)
            answer = app.core.conv.leaf
            assert answer.status in ("stop", "length") and "Paris" in answer.content
            assert answer.content == answer.step_text
            for step in answer.steps:  # a real distribution behind every token
                assert 0 < step.model_prob <= 1 and step.entropy >= 0 and step.rank == 1  # greedy
                assert sum(t.model_prob for t in step.top) <= 1 + 1e-5
                assert math.isclose(step.prob, 1.0)
            await pilot.press("ctrl+up", "home")
            assert app.panel.step == answer.steps[0]
            await pilot.press("2")  # branch with the runner-up at the first token
            await until_idle(pilot, timeout=120)
            branch = app.core.conv.leaf
            assert branch is not answer and branch.ids[0] == answer.steps[0].top[1].id
            assert engine.render_prompt(app.core.conv.messages(before=branch)).startswith("<|im_start|>")
            return app.core.conv.id

    conv_id = run(go())
    saved = Store.open(tmp_path / "h.db").load(conv_id)
    assert len(saved.nodes) == 3 and any("Paris" in n.content for n in saved.nodes.values())


def test_plain_mode_answers_from_a_pipe(engine, capsys):
    from chatcli.chat.repl import run_repl

    out, err = io.StringIO(), io.StringIO()
    rc = run_repl(
        lambda progress: engine, params=SamplingParams(temperature=0, max_tokens=24),
        stdin=io.StringIO(QUESTION + "\n/raw\n"), console=Console(file=out, width=120), err=Console(file=err),
        interactive=False, progress_enabled=False,
    )
    assert rc == 0
    assert "Paris" in capsys.readouterr().out
    assert "<|im_start|>user\n" + QUESTION in out.getvalue()
