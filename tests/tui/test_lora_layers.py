"""/lora's heat table and /lora-layers in the chat TUI, on a real tiny model with a small random adapter.

The snapshots (tests/tui/snapshots/lora_*.txt) hold the transcript's notes only: the
answer header and the status bar carry a measured speed, which changes from run to run.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from chatcli.engine.params import SamplingParams
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.tui.app import make_app
from tests.tui_support import check_snapshot, ready, run, screen_text, send, until_idle, wait_for

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, seed=1)


@pytest.fixture
def adapter_dir(tmp_path):
    gen = torch.Generator().manual_seed(0)
    mods = {}
    for i in (0, 1):
        for proj, out_f in (("q_proj", 64), ("v_proj", 32), ("down_proj", 64)):
            fan_in = 128 if proj == "down_proj" else 64
            mods[f"model.layers.{i}.{'mlp' if proj == 'down_proj' else 'self_attn'}.{proj}"] = ModuleLoRA(
                0.1 * torch.randn(4, fan_in, generator=gen), 0.05 * (i + 1) * torch.randn(out_f, 4, generator=gen), 8.0)
    return write_adapter(LoRAAdapter(modules=mods), tmp_path / "sft")


def _app(model_dir):
    from chatcli.engine.loader import load_engine

    def factory(progress):
        engine = load_engine(str(model_dir), device="cpu")
        engine.identity = dataclasses.replace(engine.identity, name="tiny")  # not the temporary path
        return engine

    return make_app(factory, store=None, params=GREEDY, flush_interval=0.02)


def _notes(app) -> str:
    """The transcript's lines after the answer, up to the prompt box."""
    lines = screen_text(app).splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))  # the prompt box spans the width
    start = max((i + 1 for i, line in enumerate(lines[:end]) if "✂" in line or "tok/s" in line), default=0)
    return "\n".join(lines[start:end]).strip("\n")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_lora_heat_table_and_layer_ablation(tiny_model_dir, adapter_dir, size):
    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=size) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter_dir} --name sft")
            await send(pilot, "hello there")
            await until_idle(pilot)
            if size[0] > 100:
                await pilot.press("f3")  # the panel off: the notes get the whole width
            await send(pilot, "/lora")
            await pilot.pause(0.2)
            text = _notes(app)
            assert "sft: ‖ΔW‖/‖W0‖ in %" in text and "◆" in text
            check_snapshot(f"lora_heat_{size[0]}x{size[1]}", text)
            await send(pilot, "/lora-layers")
            await wait_for(pilot, lambda: "every layer off" in screen_text(app), what="the ablation")
            await until_idle(pilot)
            await pilot.pause(0.2)
            text = _notes(app)
            assert "KL(all on ‖ one layer off)" in text and "█" in text
            check_snapshot(f"lora_layers_{size[0]}x{size[1]}", text)

    run(go())


def test_lora_layers_counts_its_passes_in_the_status_bar(tiny_model_dir, adapter_dir, monkeypatch):
    """The work runs on a thread: the chat is busy meanwhile and the status bar says how far it is."""
    import threading

    import chatcli.lora.ablation as ablation

    gate = threading.Event()
    real = ablation.answer_log_probs

    def slow(*args):
        gate.wait(10)  # held until the test has seen the status
        return real(*args)

    monkeypatch.setattr(ablation, "answer_log_probs", slow)

    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {adapter_dir} --name sft")
            gate.set()
            await send(pilot, "hello there")
            await until_idle(pilot)
            gate.clear()
            await send(pilot, "/lora-layers")
            assert app.busy and "/lora-layers" in screen_text(app)
            await send(pilot, "/unload-lora sft")  # an idle-only command waits
            assert "has to wait" in screen_text(app)
            gate.set()
            await wait_for(pilot, lambda: not app.busy, what="the ablation")
            await pilot.pause(0.1)
            assert "every layer off" in screen_text(app) and "ready" in screen_text(app)

    run(go())
