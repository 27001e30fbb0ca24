"""The adapter slash commands on a real tiny engine: load, list, scale, switch, merge, compare."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from chatcli.chat.core import ChatCore
from chatcli.chat.builtin_commands import COMMANDS as BUILTIN
from chatcli.chat.commands import Registry, execute
from chatcli.chat.frontend import FrontEnd
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.engine.params import SamplingParams
from chatcli.chat.lora_commands import COMMANDS, install, status_text

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, seed=1)


class Ctx:
    def __init__(self, core: ChatCore, registry: Registry) -> None:
        self.core = core
        self.registry = registry
        self.frontend = FrontEnd("test")  # a line-based front end: no screens, no inline /compare
        self.busy = False
        self.said: list[tuple[str, str]] = []
        self.status_updates = 0

    def say(self, message, kind="info"):
        if isinstance(message, str):  # keep lines as said (no console wrapping)
            self.said.append((message, kind))
            return
        buf = io.StringIO()
        Console(file=buf, width=200, color_system=None).print(message)
        self.said.append((buf.getvalue().strip(), kind))

    def run_job(self, job):
        list(self.core.run(job))

    def conversation_changed(self):
        pass

    def set_tint(self, mode):
        pass

    def quit(self):
        pass

    def adapters_changed(self):
        self.status_updates += 1

    @property
    def last(self):
        return self.said[-1]


def _engine(model_dir):
    from chatcli.engine.loader import load_engine

    return load_engine(str(model_dir), device="cpu")


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    gen = torch.Generator().manual_seed(0)
    mods = {}
    for i in (0, 1):
        for proj, out_f in (("q_proj", 64), ("v_proj", 32)):
            mods[f"model.layers.{i}.self_attn.{proj}"] = ModuleLoRA(torch.randn(4, 64, generator=gen), torch.randn(out_f, 4, generator=gen), 8.0)
    return write_adapter(LoRAAdapter(modules=mods), tmp_path / "sft")


@pytest.fixture
def ctx(tiny_model_dir):
    registry = Registry()
    for c in BUILTIN:
        registry.add(c)
    assert install(registry) == [c.name for c in COMMANDS]
    assert install(registry) == []  # idempotent
    return Ctx(ChatCore(_engine(tiny_model_dir), params=GREEDY), registry)


def _logits(ctx):
    with torch.no_grad():
        return ctx.core.engine.model(torch.tensor([[1, 5, 77, 300, 12]]))


def test_load_list_scale_switch_unload(ctx, adapter_dir):
    base = _logits(ctx)
    assert execute(ctx, "/lora") and "no adapters loaded" in ctx.last[0]
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft --scale 0.5"), ctx.last
    assert "loaded adapter sft: rank 4, 4 layers (q_proj, v_proj)" in ctx.last[0]
    assert status_text(ctx.core.engine) == "lora: sft×0.5" and ctx.status_updates == 1
    on = _logits(ctx)
    assert not torch.equal(on, base)
    assert execute(ctx, "/lora")
    table = ctx.said[-2][0]  # the rows, then the adapter's heat table
    assert ctx.last[0].startswith("sft: ‖ΔW‖/‖W0‖")
    assert "sft" in table and "q,v (2L)" in table and "0.5" in table and "on" in table
    assert "scaling" in table and "2 α/r" in table  # alpha 8, rank 4

    assert execute(ctx, "/lora-scale sft 0") and torch.equal(_logits(ctx), base)
    assert execute(ctx, "/lora-scale sft 0.5") and torch.equal(_logits(ctx), on)
    assert execute(ctx, "/lora-off sft") and torch.equal(_logits(ctx), base) and status_text(ctx.core.engine) == ""
    assert execute(ctx, "/lora-on sft") and torch.equal(_logits(ctx), on)
    assert execute(ctx, "/merge sft") and (_logits(ctx) - on).abs().max() < 1e-3
    assert status_text(ctx.core.engine) == "lora: sft×0.5 (merged)"
    assert execute(ctx, "/unmerge sft") and (_logits(ctx) - on).abs().max() < 1e-3
    assert not execute(ctx, "/unmerge sft") and "not merged" in ctx.last[0]
    assert execute(ctx, "/unload-lora sft") and "unloaded adapter sft" in ctx.last[0]
    assert (_logits(ctx) - base).abs().max() < 1e-3


def test_errors_are_one_line_and_change_nothing(ctx, adapter_dir, tmp_path):
    assert execute(ctx, f"/load-lora {adapter_dir}:0.25")
    before = _logits(ctx)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_model.pt").write_bytes(b"x")
    for line, phrase in (
        (f"/load-lora {bad}", "never unpickled"),
        (f"/load-lora {adapter_dir}", "already loaded"),
        ("/load-lora", "needs PATH"),
        (f"/load-lora {adapter_dir} --scale x", "finite number"),
        (f"/load-lora {adapter_dir} --bogus", "unknown option"),
        ("/load-lora ghost", "no adapter named 'ghost'"),
        ("/lora-scale sft nan", "finite number"),
        ("/lora-on nope", "no adapter named 'nope'"),
        ("/unload-lora nope", "no adapter named 'nope'"),
        ("/compare", "no answer to compare yet"),
    ):
        assert not execute(ctx, line), line
        msg, kind = ctx.last
        assert kind == "error" and phrase in msg and "\n" not in msg, (line, msg)
    assert torch.equal(_logits(ctx), before)
    ctx.busy = True
    assert not execute(ctx, f"/load-lora {adapter_dir} --name other") and "has to wait" in ctx.last[0]
    assert [i.name for i in ctx.core.engine.adapters.list()] == ["sft"]


def test_answers_after_a_load_use_the_adapter(ctx, adapter_dir, tiny_model_dir):
    """The KV cache of the previous turn is not reused across an adapter change."""
    ctx.run_job(ctx.core.send("hello there"))
    base_answer = ctx.core.conv.leaf.ids
    assert execute(ctx, f"/load-lora {adapter_dir}")
    ctx.run_job(ctx.core.retry())
    with_adapter = ctx.core.conv.leaf.ids

    fresh = ChatCore(_engine(tiny_model_dir), params=GREEDY)
    fresh.engine.adapters.load(adapter_dir)
    fresh.engine.generator.reset()
    list(fresh.run(fresh.send("hello there")))
    assert with_adapter == fresh.conv.leaf.ids
    assert with_adapter != base_answer


def test_compare_last_answer(ctx, adapter_dir):
    assert execute(ctx, f"/load-lora {adapter_dir}")
    ctx.run_job(ctx.core.send("hello there"))
    node = ctx.core.conv.leaf
    assert execute(ctx, "/compare"), ctx.last
    text, kind = ctx.last
    assert kind == "result" and "mean KL" in text and "steps that moved most" in text
    summary = node.meta["compare"]
    assert summary["tokens"] == len(node.steps) and summary["adapters"] == ["sft"]
    assert execute(ctx, "/compare sft")
    assert not execute(ctx, "/compare zzz") and "no adapter named 'zzz'" in ctx.last[0]

    shown = []
    ctx.frontend = FrontEnd("test", inline_compare=True)  # declared: /compare tints in place
    ctx.show_comparison = lambda n, result: shown.append((n, result))
    assert execute(ctx, "/compare")
    assert shown[0][0] is node and len(shown[0][1].steps) == len(node.steps)


def test_load_lora_announces_the_adapter_and_opens_a_declared_picker(ctx, adapter_dir):
    heard = []
    ctx.core.listeners = (lambda event, **fields: heard.append((event, fields["name"])),)
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft")
    assert heard == [("adapter_loaded", "sft")]
    picked = []
    ctx.frontend = FrontEnd("test", screens=True)  # a front end with screens picks from a list
    ctx.pick_adapter = lambda: picked.append(True)
    assert execute(ctx, "/load-lora") and picked == [True]


def _other_adapter(tmp_path, name: str, seed: int, heads: bool = False):
    gen = torch.Generator().manual_seed(seed)
    mods = {f"model.layers.{i}.self_attn.q_proj": ModuleLoRA(torch.randn(4, 64, generator=gen), torch.randn(64, 4, generator=gen), 8.0)
            for i in (0, 1)}
    extra = {"heads": {"score": torch.randn(1, 64, generator=gen)}} if heads else {}
    return write_adapter(LoRAAdapter(modules=mods, **extra), tmp_path / name)


def test_compare_uses_the_adapters_and_scales_that_made_the_answer(ctx, adapter_dir, tmp_path, tiny_model_dir):
    """Regression (issue 14): /compare compared every loaded adapter, switched-off ones and a reward
    model included, at today's scales; it compares what made the answer."""
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft --scale 0.5")
    assert execute(ctx, f"/load-lora {_other_adapter(tmp_path, 'b', 3)} --name b")
    assert execute(ctx, "/lora-off b")
    assert execute(ctx, f"/load-lora {_other_adapter(tmp_path, 'rm', 4, heads=True)} --name rm") and "reward model" in ctx.last[0]
    ctx.run_job(ctx.core.send("hello there"))
    node = ctx.core.conv.leaf
    assert node.meta["adapters"] == [{"name": "sft", "scale": 0.5}] and node.meta["system"] is None
    assert execute(ctx, "/lora-scale sft 1") and execute(ctx, "/lora-on b")  # changed after the answer
    shown = []
    ctx.frontend = FrontEnd("test", inline_compare=True)
    ctx.show_comparison = lambda n, result: shown.append(result)
    before = _logits(ctx)
    assert execute(ctx, "/compare"), ctx.last
    got = shown[-1]
    assert got.adapters == ("sft×0.5",) and node.meta["compare"]["adapters"] == ["sft×0.5"]
    assert torch.equal(_logits(ctx), before) and ctx.core.engine.adapters.info("sft").scale == 1.0

    # the reference: a model with sft alone at 0.5, against the bare model
    from chatcli.engine.fit import fit_messages
    from chatcli.lora.compare import compare_answer

    ref = _engine(tiny_model_dir)
    ref.adapters.load(adapter_dir, name="sft", scale=0.5)
    kept, _ = fit_messages(ctx.core.conv.messages(before=node), ref.tokenizer, ref.context_length, len(node.ids))
    want = compare_answer(ref.model, ref.adapters, ref.tokenizer.encode_chat(kept), node.ids, tokenizer=ref.tokenizer)
    assert [s.kl_bits for s in got.steps] == pytest.approx([s.kl_bits for s in want.steps], abs=1e-5)
    assert [s.p_base for s in got.steps] == pytest.approx([s.p_base for s in want.steps], abs=1e-6)
    assert [s.p_adapter for s in got.steps] == pytest.approx([s.p_adapter for s in want.steps], abs=1e-6)

    assert execute(ctx, "/compare b") and shown[-1].adapters == ("b",)  # a name: that adapter at its scale now
    assert not execute(ctx, "/compare rm") and "rm is a reward model" in ctx.last[0] and ctx.last[1] == "error"


def test_compare_of_an_answer_made_without_adapters_or_with_one_since_unloaded(ctx, adapter_dir):
    ctx.run_job(ctx.core.send("hello there"))
    assert ctx.core.conv.leaf.meta["adapters"] == []
    assert execute(ctx, f"/load-lora {adapter_dir} --name sft")
    assert execute(ctx, "/compare")
    assert ctx.last == ("this answer was generated without adapters: /compare NAME compares one", "info")
    assert "compare" not in ctx.core.conv.leaf.meta
    ctx.run_job(ctx.core.send("and again"))
    assert execute(ctx, "/unload-lora sft") and execute(ctx, f"/load-lora {adapter_dir} --name other")
    assert not execute(ctx, "/compare") and "adapter sft made this answer and is no longer loaded" in ctx.last[0]
    del ctx.core.conv.leaf.meta["adapters"]  # an answer saved before adapters were recorded
    assert not execute(ctx, "/compare") and "does not record which adapters" in ctx.last[0]
    assert execute(ctx, "/compare other")  # a name still works


def test_repl_compare_names_the_recorded_adapter_at_its_scale(tiny_model_dir, adapter_dir):
    """The plain REPL: /compare after a scale change still compares the answer's own scale."""
    from chatcli.chat.repl import run_repl

    out, err = io.StringIO(), io.StringIO()
    lines = f"/load-lora {adapter_dir} --name sft --scale 0.5\nhello there\n/lora-scale sft 2\n/compare\n/compare sft\n"
    rc = run_repl(lambda progress: _engine(tiny_model_dir), params=GREEDY, stdin=io.StringIO(lines),
                  console=Console(file=out, width=200, highlight=False), err=Console(file=err, width=200),
                  interactive=False, progress_enabled=False)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "sft×0.5 vs without: mean KL" in text and "sft vs without: mean KL" in text
