"""The probability panel's views: the tab row, F5, the inspector's d/w/l/a, a view's own keys,
and the what-if view on a real tiny model (its rows are what_if of the step's logits; keys
re-form them; the adapter scale re-scores the step; /whatif opens it). Snapshot: the panel
with the what-if view, compared as text (tests/tui/snapshots/whatif_view.txt)."""

from __future__ import annotations

import pytest
import torch

from chatcli.chat.step_context import step_prefix
from chatcli.chat.whatif_command import pct
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.whatif import step_logits, what_if
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from chatcli.tui.app import make_app
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.whatif_view import WhatIfView
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle, wait_for

SAMPLED = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=8, seed=3)


def _text(widget, selector: str) -> str:
    return str(widget.query_one(selector).render())


def _tiny_app(model_dir, *, adapter: bool = False):
    from chatcli.engine.loader import load_engine

    def factory(progress):
        engine = load_engine(str(model_dir), device="cpu")
        if adapter:
            lin = engine.model.get_submodule("model.layers.0.self_attn.q_proj")
            gen = torch.Generator().manual_seed(2)
            lora = ModuleLoRA(torch.randn(2, lin.in_features, generator=gen), torch.randn(lin.out_features, 2, generator=gen), 6.0)
            engine.adapters.add(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": lora}), "sft")
        return engine

    return make_app(factory, store=None, params=SAMPLED, flush_interval=0.02)


def test_tabs_f5_and_the_inspector_keys_switch_views():
    async def go():
        app = build_app(FakeEngine(length=12))
        async with app.run_test(size=(130, 36)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            panel = app.panel
            assert _text(panel, "#probs-tabs") == "Distribution · What-if · Lens · Attention F5"
            assert panel.view == "distribution" and panel.border_title == "next-token distribution"
            # F5 from the prompt cycles the views; the focus stays in the prompt
            await pilot.press("f5")
            assert panel.view == "what-if" and app.focused is app.prompt
            assert panel.border_title == "what-if on this step"
            whatif = panel.query_one(WhatIfView)
            assert whatif.display and not panel.query_one("#probs-distribution").display
            # the fake engine has no weights: one line says so
            assert "needs chatcli's own PyTorch engine" in _text(whatif, "#whatif-body")
            await pilot.press("f5")
            assert panel.view == "lens" and panel.active_view().display
            await pilot.press("f5", "f5")
            assert panel.view == "distribution" and panel.query_one("#probs-distribution").display

            # in the inspector: l, a, d, w switch directly; a view with keys takes the focus
            await pilot.press("ctrl+up", "home")
            answer = app.focused
            assert isinstance(answer, AnswerView) and answer.cursor == 0
            await pilot.press("l")
            await pilot.pause()
            assert panel.view == "lens" and answer.cursor == 0  # l no longer moves the cursor
            await pilot.press("a")
            await pilot.pause()
            assert panel.view == "attention" and answer.cursor == 0
            await pilot.press("d")
            assert panel.view == "distribution" and app.focused is answer
            await pilot.press("w")
            await pilot.pause()
            assert panel.view == "what-if" and app.focused is whatif
            assert (whatif.node, whatif.index) == (answer.node, 0)
            # ←/→ in the view move the inspector's cursor, and the view follows
            await pilot.press("right", "right")
            assert answer.cursor == 2 and whatif.index == 2 and panel.selected == (answer.node, 2)
            # another view's key switches from the view; Esc goes back to the token
            await pilot.press("d")
            assert panel.view == "distribution"
            await pilot.press("w")
            await pilot.pause()
            assert app.focused is whatif
            await pilot.press("escape")
            assert app.focused is answer and answer.cursor == 2
            # a key the view does not use goes to the prompt, as typed text does from the inspector
            await pilot.press("w")
            await pilot.pause()
            await pilot.press("x", "y")
            assert app.focused is app.prompt and app.prompt.text == "xy"
            # a click on a tab switches to it
            await pilot.click("#probs-tabs", offset=(len("Distribution · ") + 1, 0))
            assert panel.view == "what-if"
            await pilot.click("#probs-tabs", offset=(1, 0))
            assert panel.view == "distribution"

    run(go())


def test_a_narrow_screen_shows_the_panel_when_a_view_is_chosen():
    async def go():
        app = build_app(FakeEngine(length=6))
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            assert not app.panel.display
            await pilot.press("ctrl+up", "w")
            await pilot.pause()
            assert app.panel.display and app.panel.view == "what-if"

    run(go())


def _expected(app, node, index, params):
    core = app.core
    prefix = step_prefix(core, node, index)
    logits = step_logits(core.engine.model, prefix)
    return what_if(logits, params, prefix, core.engine.tokenizer, top_n=10, include=[node.steps[index].id])


def _five(p: SamplingParams) -> tuple:
    """The settings what-if changes (an answer records max_tokens and seed too; what-if keeps none)."""
    return p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty


def _chosen_line(view) -> str:
    return next(line for line in _text(view, "#whatif-body").splitlines() if line.startswith("▶"))


def test_whatif_view_reforms_the_step_with_keys(tiny_model_dir):
    async def go():
        app = _tiny_app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello there")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "home", "right", "w")
            view = app.panel.query_one(WhatIfView)
            await wait_for(pilot, lambda: view._cache, what="the step's logits")
            await pilot.pause()
            node = app.core.conv.leaf
            step = node.steps[1]
            body = _text(view, "#whatif-body")
            assert "step 2 of" in body and "T 0.8 top-k off top-p 0.9 min-p off rep off" in " ".join(body.split())
            assert "prob = exp(logit/T) / Σ over the kept tokens" in body and "outside the " in body
            # the answer's own settings: the chosen token's sampled probability is the one recorded
            chosen = _chosen_line(view)
            assert pct(step.prob) in chosen.split(pct(step.model_prob), 1)[1]
            expected = _expected(app, node, 1, SAMPLED)
            rows = [line for line in body.splitlines() if line[:1] in ("▶", " ") and "." in line[11:18]]
            assert len(rows) == len(expected.rows)
            assert f"kept {expected.kept} · entropy {expected.entropy_model:.2f} → {expected.entropy_sampled:.2f} bits" in body

            # keys re-form the distribution on the spot, from the cached logits
            await pilot.press("T", "T", "T", "p", "K")
            params = SAMPLED.with_(temperature=1.1, top_p=0.85, top_k=0)
            assert _five(view.params) == _five(params)  # K at "off" stays off (the top of the ladder)
            await pilot.press("k", "k")
            params = params.with_(top_k=50)
            assert _five(view.params) == _five(params) and len(view._cache) == 1
            body = _text(view, "#whatif-body")
            assert "T 1.1 (0.8)" in body and "top-k 50 (off)" in body and "top-p 0.85 (0.9)" in body
            expected = _expected(app, node, 1, params)
            row = expected.row(step.id)
            assert pct(row.prob) in _chosen_line(view).split(pct(row.model_prob), 1)[1]
            for r in expected.rows:
                if r.cut is not None:
                    assert f"✂{r.cut}" in body and f"{r.cut} " in body
            await pilot.press("t", "t", "t", "t", "t", "t", "t", "t", "t", "t", "t", "t")
            assert view.params.temperature == 0.0 and "T 0 greedy (0.8)" in _text(view, "#whatif-body")
            assert "100%" in _chosen_line(view) or "✂greedy" in _chosen_line(view)
            await pilot.press("m", "M", "M", "r", "R", "R")
            assert view.params.min_p == 0.1 and view.params.repetition_penalty == 1.1
            assert "seen tokens' logits ÷ rep first" in _text(view, "#whatif-body")
            await pilot.press("0")
            assert _five(view.params) == _five(SAMPLED) and view.params == view.answer
            # the next step keeps the settings tried (same answer) and gets its own logits
            await pilot.press("T", "right")
            await wait_for(pilot, lambda: len(view._cache) == 2, what="the next step's logits")
            assert view.index == 2 and view.params.temperature == 0.9
            # s/S without an adapter: a hint, nothing changes
            await pilot.press("S")
            assert view.scale is None

    run(go())


def test_scale_keys_rescore_the_step_and_restore_the_adapter(tiny_model_dir):
    async def go():
        app = _tiny_app(tiny_model_dir, adapter=True)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello there")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "w")
            view = app.panel.query_one(WhatIfView)
            await wait_for(pilot, lambda: view._cache, what="the step's logits")
            await pilot.pause()
            assert view.adapter == ("sft", 1.0)
            assert "adapter sft ×1 (as answered) · s/S rescale" in _text(view, "#whatif-body")
            await pilot.press("s", "s", "s", "s")
            node = app.core.conv.leaf
            i = view.index
            await wait_for(pilot, lambda: (node.id, i, 0.0) in view._cache, what="the logits at scale 0")
            await pilot.pause()
            manager = app.core.engine.adapters
            with manager.override(off=["sft"]):
                base = step_logits(app.core.engine.model, step_prefix(app.core, node, i))
            p0 = float(torch.softmax(base, -1)[node.steps[i].id])
            body = _text(view, "#whatif-body")
            assert view.scale == 0.0
            assert f"adapter sft ×0 (1): model p {pct(node.steps[i].model_prob)} → {pct(p0)}" in body
            info = manager.info("sft")
            assert info.scale == 1.0 and manager.active_names() == ["sft"]  # restored
            await pilot.press("0")
            assert view.scale is None and "as answered" in _text(view, "#whatif-body")

    run(go())


def test_whatif_command_opens_the_view_with_its_settings(tiny_model_dir):
    async def go():
        app = _tiny_app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello there")
            await until_idle(pilot)
            await send(pilot, "/whatif step 3 temperature 1.5 top_k 5")
            view = app.panel.query_one(WhatIfView)
            assert app.panel.view == "what-if" and app.focused is app.prompt
            assert view.index == 2 and _five(view.params) == _five(SAMPLED.with_(temperature=1.5, top_k=5))
            answer = app.transcript.view_for(app.core.conv.leaf.id)
            assert answer.cursor == 2
            await wait_for(pilot, lambda: view._cache, what="the step's logits")
            await pilot.pause()
            assert "T 1.5 (0.8)" in _text(view, "#whatif-body") and "top-k 5 (off)" in _text(view, "#whatif-body")

    run(go())


def test_snapshot_whatif_view(tiny_model_dir):
    async def go():
        app = _tiny_app(tiny_model_dir)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "hello there")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "home", "right", "right", "w")
            view = app.panel.query_one(WhatIfView)
            await wait_for(pilot, lambda: view._cache, what="the step's logits")
            await pilot.press("T", "T", "p", "p", "k", "k")
            await pilot.pause(0.1)
            region = app.panel.region  # the panel only: the answer's header shows a measured speed
            lines = screen_text(app).splitlines()[region.y: region.bottom]
            check_snapshot("whatif_view", "\n".join(line[region.x: region.right].rstrip() for line in lines))

    run(go())
