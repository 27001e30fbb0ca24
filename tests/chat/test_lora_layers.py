"""/lora's heat table and /lora-layers on a real tiny engine (line front end, a threaded one, a server)."""

from __future__ import annotations

import io
import math
import threading

import pytest
import torch

from chatcli.chat.commands import execute
from chatcli.chat.frontend import FrontEnd
from chatcli.chat.lora_views import percent
from chatcli.chat.step_context import answer_prompt_ids
from chatcli.engine.protocol import Capabilities
from chatcli.lora.ablation import layer_ablation
from chatcli.lora.layer_norms import layer_norms
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from tests.chat.test_lora_commands import Ctx, adapter_dir, ctx  # noqa: F401  (fixtures)


def _rs_adapter(tmp_path):
    gen = torch.Generator().manual_seed(5)
    mods = {f"model.layers.1.mlp.{p}": ModuleLoRA(torch.randn(4, 64 if p != "down_proj" else 128, generator=gen),
                                                   torch.randn(128 if p != "down_proj" else 64, 4, generator=gen), 8.0)
            for p in ("gate_proj", "down_proj")}  # fmt: skip
    return write_adapter(LoRAAdapter(modules=mods, use_rslora=True), tmp_path / "rs")


def test_lora_shows_scaling_and_a_heat_table_per_adapter(ctx, adapter_dir, tmp_path):  # noqa: F811
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft --scale 0.5")
    assert execute(ctx, f"/load-lora {_rs_adapter(tmp_path)} --name rs")
    ctx.said.clear()
    assert execute(ctx, "/lora")
    texts = [t for t, kind in ctx.said if kind == "result"]
    assert len(texts) == 3  # the rows, then one heat table per adapter
    assert "2 α/r" in texts[0] and "4 α/√r" in texts[0]  # 8/4 and 8/sqrt(4)
    sft = layer_norms(ctx.core.engine.adapters, "sft")
    top = sft.largest()
    assert texts[1].startswith("sft: ‖ΔW‖/‖W0‖ in %, ΔW = 0.5 × 2·B·A (α/r)")
    assert f"{percent(top.ratio)}◆" in texts[1] and f"◆ max: layer {top.layer} {top.target} · tint" in texts[1]
    header = texts[1].splitlines()[1].split()
    assert header == ["layer", "q", "v", "all"]
    row0 = texts[1].splitlines()[2].split()
    assert row0[0] == "0" and row0[1].rstrip("◆") == percent(sft.cell(0, "q_proj").ratio)
    assert texts[2].startswith("rs: ") and "(α/√r)" in texts[2]
    rs_rows = texts[2].splitlines()
    assert rs_rows[1].split() == ["layer", "gate", "down", "all"] and rs_rows[2].split()[0] == "1"

    ctx.said.clear()
    assert execute(ctx, "/lora rs")  # one adapter: its row and its table
    texts = [t for t, _ in ctx.said]
    assert len(texts) == 2 and "sft" not in texts[0] and texts[1].startswith("rs: ")
    assert not execute(ctx, "/lora nope") and "no adapter named 'nope'" in ctx.last[0]
    assert execute(ctx, "/lora-off sft") and execute(ctx, "/lora sft")
    assert "off: what it adds when on" in ctx.last[0]


def test_lora_layers_in_a_line_front_end(ctx, adapter_dir):  # noqa: F811
    assert not execute(ctx, "/lora-layers") and "no adapter is loaded" in ctx.last[0]
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft --scale 0.5")
    assert not execute(ctx, "/lora-layers") and ctx.last[0] == "no answer to look at yet: send a message first"
    ctx.run_job(ctx.core.send("hello there"))
    node = ctx.core.conv.leaf
    assert execute(ctx, "/lora-layers"), ctx.last
    text, kind = ctx.last
    expected = layer_ablation(ctx.core.engine.model, ctx.core.engine.adapters, answer_prompt_ids(ctx.core, node), node.ids,
                              names=["sft"], scales={"sft": 0.5})  # fmt: skip
    lines = text.splitlines()
    assert kind == "result" and lines[0].startswith(f"sft×0.5: KL(all on ‖ one layer off) in bits, mean over {len(node.ids)}")
    assert lines[1].split()[:2] == ["layer", "KL"]
    ranked = [line.split()[:2] for line in lines[2:4]]
    assert ranked == [[e.label, f"{e.kl_bits:.4f}"] for e in expected.ranked()]
    assert lines[-1].startswith(f"every layer off (no adapter): {expected.total_kl_bits:.4f} bits")
    assert execute(ctx, "/lora-layers sft") and "sft×0.5: KL" in ctx.last[0]
    assert not execute(ctx, "/lora-layers nope") and "no adapter named 'nope'" in ctx.last[0]
    assert execute(ctx, "/lora-off sft")
    ctx.run_job(ctx.core.retry())  # an answer made without the adapter
    assert execute(ctx, "/lora-layers") and ctx.last == (
        "this answer was generated without adapters: /lora-layers NAME looks at one", "info")


def test_lora_layers_runs_off_the_ui_thread_where_the_front_end_has_one(ctx, adapter_dir):  # noqa: F811
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft")
    ctx.run_job(ctx.core.send("hello there"))
    ctx.frontend = FrontEnd("test", live_status=True, ui_thread=True)
    ui = threading.current_thread()
    calls, activity, done = [], [], threading.Event()
    ctx.set_activity = activity.append
    ctx.call_from_thread = lambda fn, *args: calls.append((fn, args))  # queued, run below "on the UI thread"
    shown = []
    ctx.say = lambda message, kind="info": (shown.append((message, kind, threading.current_thread())), done.set())
    assert execute(ctx, "/lora-layers")
    assert activity == ["/lora-layers"]  # said at once, on the calling thread
    deadline = 60
    while not any(fn.__name__ == "finish" for fn, _ in calls) and deadline > 0:
        threading.Event().wait(0.1)
        deadline -= 0.1
    for fn, args in calls:
        fn(*args)
    assert [a for a in activity if a and a.startswith("/lora-layers ")] == [f"/lora-layers {i}/4" for i in range(1, 5)]
    assert activity[-1] is None and len(shown) == 1 and shown[0][2] is ui and shown[0][1] == "result"


def test_lora_layers_error_in_the_background_is_one_line(ctx, adapter_dir, monkeypatch):  # noqa: F811
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft")
    ctx.run_job(ctx.core.send("hello there"))
    ctx.frontend = FrontEnd("test", live_status=True, ui_thread=True)
    finished = threading.Event()
    ctx.set_activity = lambda state: None
    ctx.call_from_thread = lambda fn, *args: (fn(*args), finished.set())
    monkeypatch.setattr("chatcli.lora.ablation.answer_log_probs", lambda *a: (_ for _ in ()).throw(ValueError("bad\nthing")))
    assert execute(ctx, "/lora-layers")
    assert finished.wait(60)
    assert ctx.last == ("/lora-layers failed: ValueError: bad thing", "error")


def test_a_server_is_refused_in_one_line(ctx, adapter_dir):  # noqa: F811
    class Control:  # a server's adapter control: names, a table, no weights
        names = ["sft"]

        def __len__(self):
            return 1

        def info(self, name):
            return None

        def table(self):
            return "server table"

    class Server:
        capabilities = Capabilities(backend="remote", weights_in_process=False)
        adapters = Control()

    ctx.core.engine = Server()
    for line in ("/lora-layers", "/lora sft"):
        assert not execute(ctx, line), line
        msg, kind = ctx.last
        assert kind == "error" and "\n" not in msg and "a local model" in msg, msg
    assert execute(ctx, "/lora") and ctx.last == ("server table", "result")


def test_percent_fits_five_characters():
    ratios = (0.0, 4e-7, 3.4e-4, 0.00337, 0.0123, 0.09999, 0.5, 8.4968, 123.0)
    assert [percent(r) for r in ratios] == ["0", "4e-5", "0.034", "0.337", "1.23", "10.0", "50.0", "850", "1e4"]


def test_heat_cells_deepen_toward_the_largest(ctx, adapter_dir):  # noqa: F811
    from rich.console import Console
    from rich.text import Text

    from chatcli.chat.lora_views import HEAT, MARK, heat_share, heat_style, heat_table

    assert heat_style(0.0) == f"on {HEAT[0]}" and heat_style(1.0) == f"on {HEAT[-1]}" and heat_style(0.5) == f"on {HEAT[3]}"
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft")
    norms = layer_norms(ctx.core.engine.adapters, "sft")
    table = heat_table(norms).renderables[1]
    cells = {}
    for col in table.columns[1:-1]:
        for row, cell in enumerate(col.cells):
            if isinstance(cell, Text):
                cells[(row, col.header)] = cell
    top = norms.largest()
    marked = [k for k, c in cells.items() if MARK in c.plain]
    assert marked == [(norms.layers.index(top.layer), top.target.removesuffix("_proj"))]
    assert "bold" in str(cells[marked[0]].style) and str(cells[marked[0]].style).startswith(f"on {HEAT[-1]}")
    ratios = [c.ratio for c in norms.cells]
    for (row, target), cell in cells.items():
        ratio = norms.cell(norms.layers[row], f"{target}_proj").ratio
        share = math.log(ratio / min(ratios)) / math.log(max(ratios) / min(ratios))
        assert str(cell.style).startswith(heat_style(share))
    assert heat_share(0.0, 0.1, 1.0) == 0.0 and heat_share(0.1, 0.1, 1.0) == 0.0 and heat_share(1.0, 0.1, 1.0) == 1.0
    assert heat_share(10 ** -0.5, 0.1, 1.0) == pytest.approx(0.5) and heat_share(0.3, 0.3, 0.3) == 1.0
    out = io.StringIO()
    Console(file=out, width=80, color_system="truecolor").print(heat_table(norms))
    assert "48;2;184;67;26m" in out.getvalue()  # the largest cell's background reaches the terminal
