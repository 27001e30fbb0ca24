"""The chat TUI on the tiny model: a zero-B adapter is said to change nothing, after /load-lora (checked in the
background) and in /compare's note."""

from __future__ import annotations

import threading

import torch

from chatcli.engine.params import SamplingParams
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.tui.app import make_app
from chatcli.tui.widgets.transcript import Note
from tests.tui_support import ready, run, send, until_idle, wait_for

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, seed=1)
NOTHING = "changes nothing measurable on this answer"


def zero_b_adapter(path):
    gen = torch.Generator().manual_seed(0)
    mods = {f"model.layers.{i}.self_attn.{proj}": ModuleLoRA(torch.randn(4, 64, generator=gen), torch.zeros(out_f, 4), 8.0)
            for i in (0, 1) for proj, out_f in (("q_proj", 64), ("v_proj", 32))}  # fmt: skip
    return write_adapter(LoRAAdapter(modules=mods), path)


def notes(app, text: str) -> list[Note]:
    return [n for n in app.query(Note) if text in n.plain]


def test_load_lora_checks_the_last_answer_off_the_ui_thread_and_compare_says_it(tiny_model_dir, tmp_path, monkeypatch):
    from chatcli.engine.loader import load_engine
    from chatcli.lora import compare

    threads = []
    real = compare.answer_effect

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "answer_effect", recorded)
    adapter = zero_b_adapter(tmp_path / "fresh")

    async def go():
        app = make_app(lambda progress: load_engine(str(tiny_model_dir), device="cpu"), store=None, params=GREEDY,
                       flush_interval=0.02)  # fmt: skip
        async with app.run_test(size=(120, 36)) as pilot:
            await ready(pilot)
            await send(pilot, "hello there")
            await until_idle(pilot)
            await send(pilot, f"/load-lora {adapter}")
            await wait_for(pilot, lambda: notes(app, NOTHING), what="the no-effect warning")
            [note] = notes(app, NOTHING)
            assert note.has_class("-warning") and "its B matrices are all zeros" in note.plain
            assert threads == [False]  # the check ran on a worker thread, not the UI's
            await until_idle(pilot)
            await send(pilot, "/compare fresh")  # the answer was made before the load: name the adapter
            await wait_for(pilot, lambda: notes(app, "vs without"), what="the comparison note")
            [summary] = notes(app, "vs without")
            assert f"fresh {NOTHING}" in summary.plain

    run(go())
