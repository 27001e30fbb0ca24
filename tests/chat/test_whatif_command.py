"""/whatif in the plain REPL on a real tiny model: the printed table is what_if of the step's own
logits (the answer's settings give back the recorded probabilities), settings and steps parse as
/set does, an adapter's scale re-scores the step, and bad input is one line that changes nothing."""

from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console

from chatcli.chat.core import ChatCore
from chatcli.chat.repl import Repl
from chatcli.chat.step_context import step_prefix
from chatcli.chat.whatif_command import (
    answer_params, parse_request, pct, settings_items, step_logits_for, token_label, tuned_adapter,
)  # fmt: skip
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.whatif import step_logits, what_if
from chatcli.engine.protocol import Capabilities
from chatcli.errors import UsageError
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

SAMPLED = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=8, seed=4)


@pytest.fixture
def engine(tiny_model_dir):
    from chatcli.engine.loader import load_engine

    return load_engine(str(tiny_model_dir), device="cpu")


def _run(engine, lines: list[str], params: SamplingParams = SAMPLED):
    """Lines through the plain REPL (scripted); returns (failures, stdout, stderr, core)."""
    out, err = io.StringIO(), io.StringIO()
    core = ChatCore(engine, params=params)
    repl = Repl(core, console=Console(file=out, width=100, color_system=None, highlight=False),
                err=Console(file=err, width=200, color_system=None), interactive=False)  # fmt: skip
    for line in lines:
        repl.handle(line)
    return repl.failures, out.getvalue(), err.getvalue(), core


def _rows(table: str) -> list[str]:
    """The token rows of one printed what-if table (those with a logit column)."""
    return [line for line in table.splitlines() if re.match(r"^[▶ ] '.*'\s+-?\d+\.\d\d ", line)]


def test_whatif_prints_the_last_step_at_the_answers_settings(engine):
    rc, out, err, core = _run(engine, ["hello there", "/whatif"])
    assert rc == 0, err
    node = core.conv.leaf
    i = len(node.steps) - 1
    step = node.steps[i]
    prefix = step_prefix(core, node, i)
    w = what_if(step_logits(engine.model, prefix), SAMPLED, prefix, engine.tokenizer, top_n=10, include=[step.id])
    assert f"what-if: step {i + 1} of {len(node.steps)}, chose {token_label(step.token, 20)}" in out
    rows = _rows(out)
    assert len(rows) == len(w.rows)
    for line, r in zip(rows, w.rows):
        assert line.startswith(("▶ " if r.id == step.id else "  ") + token_label(r.token, 14))
        assert f"{r.logit:.2f}" in line and pct(r.model_prob) in line
        assert (pct(r.prob) if r.cut is None else f"✂ {r.cut}") in line.split(f"{r.logit:.2f}")[1]
    chosen = next(line for line in rows if line.startswith("▶"))
    assert pct(step.prob) in chosen.split(pct(step.model_prob), 1)[1]  # the recorded sampled probability
    assert f"outside the {len(w.rows)} shown" in out and "prob = exp(logit/T) / Σ over the kept tokens" in out
    assert "T 0.9  top-k off  top-p 0.9  min-p off  rep off" in out  # nothing changed: no answer values
    # the adapters are as the answer had them (none): no switch, so the KV cache stays valid
    version = engine.adapters.weights_version()
    got = step_logits_for(core, node, i)
    assert engine.adapters.weights_version() == version and torch.equal(got.logits, step_logits(engine.model, prefix))


def test_settings_and_step_change_the_table(engine):
    rc, out, err, core = _run(engine, ["hello there", "/whatif temperature 0", "/whatif step 2 p 0.3 rep 1.5 k 3"])
    assert rc == 0, err
    node = core.conv.leaf
    greedy, second = out.split("what-if:")[1:3]
    assert "T 0 greedy (0.9)" in greedy and "kept 1 ·" in greedy
    assert "── T 0: only the top token ──" in greedy
    probs = [line.rsplit(None, 1)[-1] for line in _rows(greedy)]
    assert probs[0] == "100%" and set(probs[1:]) == {"greedy"}
    assert f"step 2 of {len(node.steps)}" in second
    assert "top-k 3 (off)" in second and "top-p 0.3 (0.9)" in second and "rep 1.5 (off)" in second
    assert "÷ rep first" in second
    prefix = step_prefix(core, node, 1)
    params = SAMPLED.with_(top_k=3, top_p=0.3, repetition_penalty=1.5)
    w = what_if(step_logits(engine.model, prefix), params, prefix, engine.tokenizer, top_n=10, include=[node.steps[1].id])
    for cut in dict.fromkeys(r.cut for r in w.rows if r.cut):
        assert f"── {cut} " in second.replace("top-k 3 cuts", "top-k cuts").replace("top-p 0.3 cuts", "top-p cuts") \
            or f"{cut} " in second  # fmt: skip
    assert len(_rows(second)) == len(w.rows)


def test_bad_requests_are_one_line_and_change_nothing(engine):
    rc, out, err, core = _run(engine, ["/whatif", "hello there", "/whatif temperature", "/whatif max_tokens 5",
                                       "/whatif step 99", "/whatif temperature -1", "/whatif scale 0.5",
                                       "/whatif tempreature 1"])  # fmt: skip
    assert rc == 7
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "no answer yet" in lines[0]
    assert "'temperature' needs a value" in lines[1]
    assert "not max_tokens" in lines[2]
    assert "no step 99 in this answer" in lines[3]
    assert "invalid temperature -1" in lines[4]
    assert "no adapter is loaded" in lines[5]
    assert "unknown parameter 'tempreature'" in lines[6]
    assert core.conv.params == SAMPLED and "what-if:" not in out


def test_a_server_is_refused_in_one_line(engine):
    from chatcli.chat.builtin_commands import build_registry
    from chatcli.chat.commands import execute

    class Server:
        capabilities = Capabilities(backend="remote", weights_in_process=False)

    class Ctx:
        from chatcli.chat.frontend import FrontEnd

        frontend = FrontEnd("repl")

        def __init__(self):
            self.core = ChatCore(engine, params=SAMPLED)
            self.core.engine = Server()  # a chat that talks to a server
            self.registry = build_registry()
            self.said = []

        def say(self, message, kind="info"):
            self.said.append((message, kind))

    ctx = Ctx()
    assert not execute(ctx, "/whatif")
    (message, kind), = ctx.said
    assert kind == "error" and "\n" not in message and "a server returns no hidden states" in message


def _adapter(engine, name="sft"):
    lin = engine.model.get_submodule("model.layers.0.self_attn.q_proj")
    gen = torch.Generator().manual_seed(2)
    lora = ModuleLoRA(torch.randn(2, lin.in_features, generator=gen), torch.randn(lin.out_features, 2, generator=gen), 6.0)
    engine.adapters.add(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": lora}), name)


def test_scale_rescores_the_step_with_the_adapter_the_answer_had(engine):
    _adapter(engine)
    rc, out, err, core = _run(engine, ["hello there", "/lora-off sft", "/whatif scale 0"])
    assert rc == 0, err
    node = core.conv.leaf
    i = len(node.steps) - 1
    assert node.meta["adapters"] == [{"name": "sft", "scale": 1.0}]
    assert tuned_adapter(core, node) == ("sft", 1.0)
    # The adapter is off now, yet the answer's own logits come back with it on, as answered ...
    got = step_logits_for(core, node, i)
    w = what_if(got.logits, SAMPLED, got.prefix, engine.tokenizer, include=[node.steps[i].id])
    assert w.row(node.steps[i].id).prob == pytest.approx(node.steps[i].prob, rel=1e-4)
    # ... and at scale 0 the step is the base model's.
    base = step_logits(engine.model, step_prefix(core, node, i))
    p_base = float(torch.softmax(base, -1)[node.steps[i].id])
    assert f"adapter sft at scale 0 (answer 1): model p({token_label(node.steps[i].token, 14)}) " \
           f"{pct(node.steps[i].model_prob)} → {pct(p_base)}" in out  # fmt: skip
    info = engine.adapters.info("sft")
    assert engine.adapters.list() and not engine.adapters.active_names() and info.scale == 1.0  # as it was


def test_parse_request_and_the_recorded_settings():
    r = parse_request("step 3 t 1.5 top_p 0.8 k off rep 1.2 scale 0.5")
    assert r.step == 3 and r.scale == 0.5
    assert r.changes == {"temperature": 1.5, "top_p": 0.8, "top_k": 0, "repetition_penalty": 1.2}
    assert parse_request(None).changes == {} and parse_request("").step is None
    with pytest.raises(UsageError, match="step N needs a step number"):
        parse_request("step x")

    class Node:
        meta = {"params": {"temperature": 1.3, "top_k": 7, "top_p": 5.0, "max_tokens": 9, "seed": 1}}

    assert answer_params(Node()) == SamplingParams(temperature=1.3, top_k=7)  # a bad top_p keeps its default
    Node.meta = {}
    assert answer_params(Node()) == SamplingParams()
    items = settings_items(SamplingParams(temperature=0.0, top_p=0.5), SamplingParams(temperature=0.7))
    assert items == [("T 0 greedy (0.7)", True), ("top-k off", False), ("top-p 0.5 (off)", True),
                     ("min-p off", False), ("rep off", False)]  # fmt: skip
