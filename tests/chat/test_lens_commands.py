"""/lens and /attention in the plain REPL on a real tiny model: the printed tables show exactly
what the probes compute for the step (its prefix rebuilt by step_context), and bad input is one line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from chatcli.chat.lens_commands import attention_scope, lens_marks, lens_summary, lens_table, short_pct, token_label
from chatcli.chat.core import ChatCore
from chatcli.chat.repl import Repl
from chatcli.chat.step_context import step_prefix
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.attention import attention_weights
from chatcli.engine.probes.lens import LensLayer, LensResult, LensToken, logit_lens

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, seed=1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from chatcli.engine.loader import load_engine

    return load_engine(str(tiny_model_dir), device="cpu")


def _run(engine, lines: list[str]):
    """Lines through the plain REPL (scripted) on the tiny model; returns (failures, stdout, stderr, core)."""
    out, err = io.StringIO(), io.StringIO()
    core = ChatCore(engine, params=GREEDY)
    repl = Repl(core, console=Console(file=out, width=100, color_system=None, highlight=False),
                err=Console(file=err, width=200, color_system=None), interactive=False)  # fmt: skip
    for line in lines:
        repl.handle(line)
    return repl.failures, out.getvalue(), err.getvalue(), core


def _lens_rows(text: str) -> dict[int, str]:
    """layer -> its printed row (the rows of the first lens table in ``text``)."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+) ", line)
        if m and ("%" in line):
            rows.setdefault(int(m.group(1)), line)
    return rows


def test_lens_prints_every_layer_of_the_last_step_as_computed(engine):
    rc, out, err, core = _run(engine, ["hello there", "/lens"])
    assert rc == 0, err
    node = core.conv.leaf
    index = len(node.steps) - 1
    expected = logit_lens(engine.model, step_prefix(core, node, index), target_id=node.steps[index].id,
                          tokenizer=engine.tokenizer)  # fmt: skip
    assert f"logit lens: step {index + 1} of {len(node.steps)}, chose {node.steps[index].token!r}" in out
    assert lens_summary(expected) in out
    rows = _lens_rows(out.split("logit lens:")[1])
    assert sorted(rows) == [layer.layer for layer in expected.layers]  # 0 = embeddings .. L = the output
    for layer in expected.layers:  # each row: the chosen token's probability, then the layer's top 3
        cells = [short_pct(layer.target_prob)] + [f"{token_label(t.token)} {short_pct(t.prob)}" for t in layer.top[:3]]
        row = rows[layer.layer]
        positions = [row.find(c) for c in cells]
        assert -1 not in positions and positions == sorted(positions), (row, cells)
    last = expected.layers[-1]
    # the last layer is the model's own distribution: the chosen token's probability there is the step's
    assert abs(last.target_prob - node.steps[index].model_prob) < 1e-4


def test_lens_step_n_and_text(engine):
    rc, out, err, core = _run(engine, ["hello there", "/lens step 2", "/lens hello wor"])
    assert rc == 0, err
    node = core.conv.leaf
    assert f"step 2 of {len(node.steps)}, chose {node.steps[1].token!r}" in out
    text_part = out.split("after 'hello wor' (plain text)")[1]
    expected = logit_lens(engine.model, engine.completion_ids("hello wor"), tokenizer=engine.tokenizer)
    rows = _lens_rows(text_part)
    assert len(rows) == len(expected.layers)
    assert repr(expected.layers[-1].top[0].token)[:9] in rows[expected.layers[-1].layer]


def test_attention_table_matches_the_probe(engine):
    rc, out, err, core = _run(engine, ["hello there", "/attention", "/attention 1 0"])
    assert rc == 0, err
    node = core.conv.leaf
    index = len(node.steps) - 1
    result = attention_weights(engine.model, step_prefix(core, node, index), tokenizer=engine.tokenizer)
    averaged, one_head = out.split("attention:")[1:3]
    assert attention_scope(result, None, None) in averaged.replace("\n", " ")
    assert "layer 1, head 0" in one_head
    for part, (layer, head) in ((averaged, (None, None)), (one_head, (1, 0))):
        printed = [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+'", part, re.M)]
        assert printed == [pos for pos, _ in result.top(10, layer=layer, head=head)]


def test_bad_arguments_are_one_line_and_change_nothing(engine):
    rc, out, err, core = _run(engine, ["/lens", "hello there", "/lens step 99", "/lens step x", "/attention 99",
                                               "/attention 0 99"])  # fmt: skip
    assert rc == 5  # each refused line counts as a failure of the script
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines[0].startswith("error: no answer yet: send a message first")
    assert "no step 99 in this answer" in lines[1]
    assert "needs a step number, not 'x'" in lines[2]
    assert "no layer 99" in lines[3] and "no head 99" in lines[4]
    assert len([n for n in core.conv.path() if n.role == "assistant"]) == 1


def test_marks_first_top_and_settled_layers():
    def layer(n, p_target, top_id):
        return LensLayer(n, (LensToken(top_id, "x" if top_id == 7 else "y", 0.9),), 1.0, p_target)

    result = LensResult(position=3, layers=(layer(0, 0.01, 1), layer(1, 0.3, 7), layer(2, 0.4, 1), layer(3, 0.6, 7), layer(4, 0.9, 7)),
                        target_id=7, target_token="x")  # fmt: skip
    assert lens_marks(result) == {1: "top-1", 3: ">50%"}
    assert lens_summary(result) == "'x' is top-1 from layer 1, over 50% from layer 3 (of 4; 0 = the embeddings)"
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(lens_table(result, title="t"))
    rows = _lens_rows(buf.getvalue())
    assert "◀ top-1" in rows[1] and "◀ >50%" in rows[3] and "◀" not in rows[2]
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 80
