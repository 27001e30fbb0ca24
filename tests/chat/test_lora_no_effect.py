"""An adapter that changes nothing measurable, in the chat commands: after /load-lora, /lora-scale, and in /compare."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from chatcli.chat.builtin_commands import COMMANDS as BUILTIN
from chatcli.chat.commands import Registry, execute
from chatcli.chat.core import ChatCore
from chatcli.chat.frontend import FrontEnd
from chatcli.chat.lora_commands import install
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, seed=1)
NOTHING = "changes nothing measurable on this answer"


class Ctx:
    """A line-based front end (no UI thread: the check runs at once)."""

    def __init__(self, core: ChatCore, registry: Registry) -> None:
        self.core, self.registry = core, registry
        self.frontend = FrontEnd("test")
        self.busy = False
        self.said: list[tuple[str, str]] = []

    def say(self, message, kind="info"):
        if not isinstance(message, str):
            buf = io.StringIO()
            Console(file=buf, width=400, color_system=None).print(message)
            message = buf.getvalue().strip()
        self.said.append((message, kind))

    def adapters_changed(self):
        pass

    def warnings(self) -> list[str]:
        return [m for m, k in self.said if k == "warning"]


def write(tmp_path, name: str, b_size: float) -> str:
    gen = torch.Generator().manual_seed(0)
    mods = {f"model.layers.{i}.self_attn.{proj}": ModuleLoRA(torch.randn(4, 64, generator=gen),
                                                            b_size * torch.randn(out_f, 4, generator=gen), 8.0)
            for i in (0, 1) for proj, out_f in (("q_proj", 64), ("v_proj", 32))}  # fmt: skip
    return str(write_adapter(LoRAAdapter(modules=mods), tmp_path / name))


@pytest.fixture
def ctx(tiny_model_dir):
    registry = Registry()
    for c in BUILTIN:
        registry.add(c)
    install(registry)
    return Ctx(ChatCore(load_engine(str(tiny_model_dir), device="cpu"), params=GREEDY), registry)


def answer(ctx) -> None:
    list(ctx.core.run(ctx.core.send("hello there")))


def test_loading_a_zero_b_adapter_after_an_answer_warns_once_with_the_reason(ctx, tmp_path):
    answer(ctx)
    assert execute(ctx, f"/load-lora {write(tmp_path, 'fresh', 0.0)}")
    [line] = ctx.warnings()
    assert line.startswith(f"fresh {NOTHING} (mean KL 0.0000 bits < 0.001): its B matrices are all zeros")


def test_an_adapter_that_changes_the_answer_and_no_answer_yet_say_nothing(ctx, tmp_path):
    assert execute(ctx, f"/load-lora {write(tmp_path, 'fresh', 0.0)}")  # no answer to check yet
    answer(ctx)
    assert execute(ctx, f"/load-lora {write(tmp_path, 'real', 1.0)}")
    assert ctx.warnings() == []


def test_lora_scale_zero_warns_and_back_to_one_does_not(ctx, tmp_path):
    answer(ctx)
    assert execute(ctx, f"/load-lora {write(tmp_path, 'real', 1.0)}")
    assert execute(ctx, "/lora-scale real 0")
    [line] = ctx.warnings()
    assert "its scale is 0 (/lora-scale real 1 gives it its full effect)" in line
    assert execute(ctx, "/lora-scale real 1")
    assert len(ctx.warnings()) == 1
    assert execute(ctx, "/lora-off real") and execute(ctx, "/lora-scale real 0.5")
    assert ctx.warnings()[-1] == "real changes nothing now: it is switched off (/lora-on real)"


def test_compare_says_it_under_the_summary(ctx, tmp_path):
    assert execute(ctx, f"/load-lora {write(tmp_path, 'fresh', 0.0)}")
    answer(ctx)
    assert execute(ctx, "/compare")
    text, kind = ctx.said[-1]
    assert kind == "result"
    lines = text.splitlines()
    assert lines[0].startswith("fresh vs without: mean KL 0.000 bits")
    assert lines[1].startswith(f"fresh {NOTHING}") and "B matrices are all zeros" in lines[1]


def test_compare_of_a_real_adapter_has_no_such_line(ctx, tmp_path):
    assert execute(ctx, f"/load-lora {write(tmp_path, 'real', 1.0)}")
    answer(ctx)
    assert execute(ctx, "/compare")
    assert NOTHING not in ctx.said[-1][0]
