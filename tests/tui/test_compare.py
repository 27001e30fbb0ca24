"""/compare in the chat TUI on a real tiny model with a random adapter: KL tint, base vs adapter panel, back to normal."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.events import Step
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.engine.params import SamplingParams
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.token_chunk import TokenChunk
from chatcli.tui.app import make_app
from chatcli.tui.widgets.probs import AltList
from chatcli.tui.token_text import KL_FULL_BITS, kl_color, kl_fraction, token_content
from tests.tui_support import ready, run, send, until_idle, wait_for

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, seed=1)


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    gen = torch.Generator().manual_seed(0)
    mods = {}
    for i in (0, 1):
        for proj, out_f in (("q_proj", 64), ("v_proj", 32)):
            mods[f"model.layers.{i}.self_attn.{proj}"] = ModuleLoRA(torch.randn(4, 64, generator=gen), torch.randn(out_f, 4, generator=gen) * 0.05, 8.0)
    return write_adapter(LoRAAdapter(modules=mods), tmp_path / "sft")


def _app(model_dir):
    from chatcli.engine.loader import load_engine

    return make_app(lambda progress: load_engine(str(model_dir), device="cpu"), store=None, params=GREEDY,
                    flush_interval=0.02)  # fmt: skip  (the app's own registry has the adapter commands)


def _panel(app) -> str:
    return str(app.panel.query_one("#probs-summary").render())


def _rows(app) -> list[str]:
    alts = app.query_one(AltList)
    return [str(alts.get_option_at_index(i).prompt) for i in range(alts.option_count)]


def _backgrounds(view: AnswerView) -> dict[int, object]:
    """Answer position -> the background its token is drawn with (None: untinted)."""
    out: dict[int, object] = {}
    for chunk in view.query(TokenChunk):
        for span in chunk.render().spans:
            meta = span.style.meta if hasattr(span.style, "meta") else {}
            if "token" in meta:
                out[int(meta["token"])] = span.style.background
    return out


def test_kl_tint_scale():
    assert kl_color(0.0) is None and kl_color(0.005) is None and kl_color(float("nan")) is None
    assert kl_fraction(KL_FULL_BITS) == 1.0 and kl_fraction(50.0) == 1.0
    a, b, c = kl_color(0.02), kl_color(0.3), kl_color(KL_FULL_BITS)
    assert a.a < b.a < c.a  # stronger as KL grows
    steps = [Step(index=i, token=t, id=i, text=t, prob=1.0, model_prob=0.2, entropy=3.0, top=()) for i, t in enumerate(["a", "b", "c"])]
    content = token_content(steps, 0, tint="kl", values=[0.0, 1.0, 0.001])
    backgrounds = [s.style.background for s in content.spans]
    assert backgrounds == [None, kl_color(1.0), None]  # the uncertainty of the steps plays no part


def test_compare_tints_the_answer_and_shows_both_distributions(tiny_model_dir, adapter_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter_dir} --name sft")
            await send(pilot, "hello there")
            await until_idle(pilot)
            node = app.core.conv.leaf
            view = app.transcript.view_for(node.id)
            assert not view.has_class("-tokens")  # Markdown before the comparison
            await pilot.press("f3")
            assert not app.panel.display

            await send(pilot, "/compare")
            assert app.panel.display  # the side-by-side view is shown even if the panel was hidden
            c = view.comparison
            assert c is not None and c.adapters == ("sft",) and len(c.steps) == len(node.steps)
            assert node.meta["compare"]["tokens"] == len(node.steps)
            assert view.has_class("-tokens") and view.token_tint == "kl"
            assert "KL tint: with vs without sft" in str(view.query_one(".answer-header").render())
            # every token tinted by its own KL, with the KL colour scale
            bg = _backgrounds(view)  # (a token whose bytes end in a later one has no text of its own)
            assert len(bg) >= len(c.steps) // 2
            assert bg == {s.index: kl_color(s.kl_bits) for s in c.steps if s.index in bg}
            assert any(v is not None for v in bg.values())
            # the cursor goes to the step that moved most; the panel shows base vs adapter there;
            # the focus stays in the prompt (typing goes on where it was)
            top = c.max_step
            assert app.focused is app.prompt and view.cursor == top.index
            assert app.panel.shift == top and app.panel.border_title == "base vs adapter"
            text = _panel(app)
            assert f"step {top.index + 1} of {len(node.steps)}" in text and "with vs without sft" in text
            assert f"KL {top.kl_bits:.3f} bits" in text and " → adapter " in text
            rows = _rows(app)
            assert len(rows) >= len(top.top)
            from chatcli.tui.token_text import percent

            for row, pair in zip(rows, top.top):
                assert percent(pair.p_base) in row and percent(pair.p_adapter) in row
            assert "KL(adapter‖base)" in str(app.panel.query_one("#probs-legend").render())
            assert any("mean KL" in n.plain for n in app.transcript.query(".note"))

            # Ctrl+↑ enters the inspector on the compared answer; moving the cursor follows the compared steps
            await pilot.press("ctrl+up")
            assert app.focused is view and view.cursor == top.index
            await pilot.press("home")
            assert view.cursor == 0 and app.panel.shift == c.steps[0]
            await pilot.press("right")
            assert app.panel.shift == c.steps[1] and app.panel.step == node.steps[1]

            # Esc leaves the inspector for the prompt at once (the KL tint stays); Esc again:
            # normal tinting, the same token shows the plain distribution
            await pilot.press("escape")
            assert app.focused is app.prompt and view.comparison is c
            await pilot.press("escape")
            assert view.comparison is None and view.token_tint == "model_prob" and app.panel.shift is None
            assert "KL" not in str(view.query_one(".answer-header").render())
            assert app.panel.step == node.steps[1] and app.panel.border_title == "next-token distribution"
            assert "sampled" in _panel(app) and app.focused is app.prompt
            assert _backgrounds(view)[0] != kl_color(c.steps[0].kl_bits) or kl_color(c.steps[0].kl_bits) is None

            # /compare again shows it; the same /compare once more switches it off
            await send(pilot, "/compare")
            assert view.comparison == c
            await send(pilot, "/compare sft")
            assert view.comparison is None and app.panel.shift is None

            # F2 returns to normal tinting without cycling the tint
            await send(pilot, "/compare")
            assert view.comparison == c
            await pilot.press("f2")
            assert view.comparison is None and app.tint == "off"
            await pilot.press("f2")
            assert app.tint == "model_prob"  # the next F2 cycles as usual

    run(go())


def test_a_changed_adapter_replaces_the_comparison_and_a_row_branches(tiny_model_dir, adapter_dir):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter_dir} --name sft")
            await send(pilot, "hello there")
            await until_idle(pilot)
            node = app.core.conv.leaf
            view = app.transcript.view_for(node.id)
            await send(pilot, "/compare")
            first = view.comparison
            await send(pilot, "/lora-scale sft 0.25")
            await send(pilot, "/compare sft")  # a name: that adapter at its scale now
            second = view.comparison
            assert second is not None and second != first  # a new comparison, not a toggle
            assert second.mean_kl_bits < first.mean_kl_bits  # a quarter of the adapter moves less

            # no name: the adapters that made the answer, at the scale they had then (regression, issue 14)
            await send(pilot, "/compare")
            assert view.comparison == first and first.adapters == ("sft",)
            await send(pilot, "/lora-scale sft 1")

            # choosing a row of the side-by-side list branches the answer with that token
            view.focus()
            view.move_to(0)
            await pilot.pause()
            shift, step = app.panel.shift, node.steps[0]
            recorded = {t.id for t in step.top}
            alt = next(i for i, t in enumerate(shift.top) if t.id != shift.id and t.id in recorded)
            alts = app.query_one(AltList)
            alts.focus()
            alts.highlighted = alt
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.core.conv.leaf is not node and app.core.conv.leaf.steps, what="the branch")
            await until_idle(pilot)
            branch = app.core.conv.leaf
            assert branch.ids[0] == shift.top[alt].id and branch.meta.get("forced_at") == 0
            assert view.comparison is None and app.panel.shift is None  # the new answer ends the comparison

            # a compared answer switched to its sibling (from the inspector) loses the tint; Esc then acts as usual
            await send(pilot, "/compare")
            assert view.comparison is not None and view.node is branch and app.focused is app.prompt
            await pilot.press("ctrl+up", "comma")
            await wait_for(pilot, lambda: view.node is node, what="the sibling switch")
            assert view.comparison is None and view.token_tint != "kl"
            await pilot.press("escape")
            assert app.focused is app.prompt

    run(go())



def test_compare_leaves_out_adapters_that_did_not_make_the_answer(tiny_model_dir, adapter_dir, tmp_path):
    """Regression (issue 14): /compare switched on every loaded adapter, off ones included."""
    gen = torch.Generator().manual_seed(9)
    other = write_adapter(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": ModuleLoRA(
        torch.randn(4, 64, generator=gen), torch.randn(64, 4, generator=gen), 8.0)}), tmp_path / "other")

    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter_dir} --name sft --scale 0.5")
            await send(pilot, f"/load-lora {other} --name other")
            await send(pilot, "/lora-off other")
            await send(pilot, "hello there")
            await until_idle(pilot)
            node = app.core.conv.leaf
            assert node.meta["adapters"] == [{"name": "sft", "scale": 0.5}]
            await send(pilot, "/lora-on other")
            await send(pilot, "/compare")
            c = app.transcript.view_for(node.id).comparison
            assert c is not None and c.adapters == ("sft×0.5",) and node.meta["compare"]["adapters"] == ["sft×0.5"]
            assert app.core.engine.adapters.info("other").enabled  # every switch as it was

    run(go())


def test_remote_compare_shows_what_the_server_did_not_return_as_below_its_floor():
    """Regression (issue 14): a token one side did not return showed a made-up probability in the panel."""
    from chatcli.cli.common import remote_factory
    from tests.remote_fakes import ADAPTER_ALT, FakeServer, alternatives

    async def go(url):
        factory = remote_factory(url, "fake-model", api_key_env=None, timeout=5, logprobs_mode="raw")
        app = make_app(factory, params=SamplingParams(temperature=0, seed=1), flush_interval=0.02)
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, "/load-lora /srv/adapters/pirate")
            await send(pilot, "Capital of France?")
            await until_idle(pilot)
            node = app.core.conv.leaf
            await send(pilot, "/compare")
            view = app.transcript.view_for(node.id)
            c = view.comparison  # teacher-forced on the answer shown: it tints in place
            assert c is not None and c.method == "teacher-forced" and c.partial and len(c.steps) == len(node.steps)
            view.move_to(0)
            await pilot.pause()
            assert app.panel.shift == c.steps[0]
            assert "KL ≥" in _panel(app)
            missing = alternatives(0, None)[0]  # the base's first alternative: not in the adapter's list
            row = next(r for r in _rows(app) if missing.strip() in r)
            assert "20.0%" in row and f"<{ADAPTER_ALT[-1] * 100:.2f}%" in row
            assert any("teacher-forced on the server" in n.plain for n in app.transcript.query(".note"))

    with FakeServer("vllm", echo=True) as srv:
        run(go(srv.url))
