"""``--compile``'s decode step: one exported program for every token and cache size, the eager step's
numbers, and the eager step wherever it does not apply or building fails.

Only one test runs AOTInductor (the tiny llama, float32 and int4, in fresh interpreters: builds, then a load);
the others export the same program and run it in Python (:class:`Exported`, the ``backend`` seam of
:class:`CompiledDecoder`): ``torch.export`` takes the whole step or raises, and each export counts.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.generate import Generator
from chatcli.engine.params import SamplingParams
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.compiled.step import CompiledDecoder, CompiledStep, plan, NotCovered
from chatcli.model.decode_step import DecodeStep
from chatcli.model.kv_cache import KVCache
from chatcli.model.packed import use_kernel_choices
from chatcli.model.quantize import quantize_model
from tests.tiny import FAMILIES


class Exported:
    """A backend for :class:`CompiledDecoder` that counts exports and runs the exported program in Python."""

    def __init__(self):
        self.count = 0

    def __call__(self, program):
        self.count += 1
        return program.module()


def _run_both(model, decoder: CompiledDecoder, steps: int, prompt_len: int = 7, chunk: int = 256):
    """Prefill one cache, decode ``steps`` greedy tokens with the eager step and the compiled one
    (each from its own copy of the cache, each fed its own argmax); returns (eager, compiled) logits."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=gen)
    eager_step = DecodeStep.build(model)
    want, got = [], []
    with torch.inference_mode():
        a = KVCache(model.config, 1, model.dtype, "cpu", chunk=chunk)
        a.ensure(prompt_len + steps)
        last = model(prompt, a, last_only=True)[:, -1]
        b = a.clone()
        step = decoder.step(model, b, prompt_len + steps)
        ids_a = ids_b = last.float().argmax(-1, keepdim=True)
        for _ in range(steps):
            want.append(eager_step(ids_a, a).float())
            got.append(step(ids_b, b).float())
            assert a.length == b.length
            ids_a, ids_b = want[-1].argmax(-1, keepdim=True), got[-1].argmax(-1, keepdim=True)
    return torch.cat(want), torch.cat(got), step


_AOT_CHILD = r"""
import json, sys
import torch
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.compiled.step import CompiledDecoder, CompiledStep, package_path
from chatcli.model.quantize import quantize_model
from tests.model.test_compiled_step import _run_both

model = load_checkpoint(sys.argv[1])
if sys.argv[3] == "bf16-onednn":  # bf16 through oneDNN's prepacked weights (the compiled step's chatcli::onednn_linear)
    from chatcli.model.packed import use_kernel_choices

    model = model.to(torch.bfloat16)
    use_kernel_choices(model, model.kernel_choices.with_(bf16_small_rows="onednn"))
elif sys.argv[3] != "none":
    quantize_model(model, sys.argv[3])
decoder = CompiledDecoder(mode=sys.argv[2], background=lambda path: None)
want, got, step = _run_both(model, decoder, steps=12)
first = {"compiled_step": isinstance(step, CompiledStep), "failed": decoder.failed, "compiles": decoder.compiles,
         "loads": decoder.loads, "same": torch.equal(got, want), "package": str(package_path(model))}
want2, got2, _ = _run_both(model, decoder, steps=4, prompt_len=5, chunk=64)  # a second answer, a smaller cache
print(json.dumps({**first, "compiles_after_second": decoder.compiles, "same2": torch.equal(got2, want2)}))
"""


def test_aot_package_is_built_once_then_loaded_and_equals_eager(tiny_model_dir, tmp_path):
    """The real AOTInductor build and load, each in a fresh interpreter (a person's processes start
    clean; inductor keeps process-wide state that ~2,000 earlier tests may have touched): the first
    builds the package, the second (the default "auto" mode) finds it and loads it without building.
    The compiled logits are the eager step's bit for bit (float32; int4, whose bfloat16 activations
    turn any last-bit difference into a different answer; and bfloat16 through oneDNN's prepacked
    weights, where inductor must round after every operation as eager does), so "auto" may switch
    between them freely."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "PYTHONPATH": str(root)}
    runs = []
    for mode, method in (("on", "none"), ("auto", "none"), ("on", "int4"), ("on", "bf16-onednn")):
        proc = subprocess.run([sys.executable, "-c", _AOT_CHILD, str(tiny_model_dir), mode, method],
                              capture_output=True, text=True, env=env, cwd=root, timeout=540)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    built, loaded, int4, bf16 = runs
    for got in runs:
        assert got["compiled_step"] and got["failed"] is None, got
        assert got["same"] and got["same2"], got
    assert built["compiles"] == built["compiles_after_second"] == 1 and built["loads"] == 0, built  # one program
    assert loaded["compiles"] == loaded["compiles_after_second"] == 0 and loaded["loads"] == 1, loaded
    assert Path(built["package"]).is_file() and built["package"] == loaded["package"]
    assert int4["compiles"] == 1 and int4["package"] != built["package"], int4
    assert bf16["compiles"] == 1 and bf16["package"] not in (built["package"], int4["package"]), bf16


@pytest.mark.parametrize("family", FAMILIES)  # tied head, llama3 rope, untied; q/k/v bias; per-head q/k norms
def test_whole_graph_once_for_every_token(family, tiny_family_dirs):
    model = load_checkpoint(tiny_family_dirs(family))
    counter = Exported()
    want, got, step = _run_both(model, CompiledDecoder(backend=counter), steps=10)
    assert isinstance(step, CompiledStep)
    assert counter.count == 1  # export takes the whole step or raises
    assert torch.equal(got, want)  # the same operations on the same shapes


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_models_compile_through_their_layers(method, tiny_model_dir):
    """Their weights are inputs too (swapped into the layers while exporting), so nothing is folded."""
    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, method)
    counter = Exported()
    decoder = CompiledDecoder(backend=counter)
    want, got, step = _run_both(model, decoder, steps=6)
    assert isinstance(step, CompiledStep) and counter.count == 1
    # The same kernels on the same inputs; the int8 head runs after the graph, as it does eagerly.
    assert torch.equal(got, want)
    _run_both(model, decoder, steps=3, prompt_len=4)  # a second answer: a new plan, the same program
    _run_both(model, decoder, steps=3, chunk=32)  # another cache size: the same program (its length is symbolic)
    assert counter.count == 1


def test_not_covered_gives_the_eager_step_and_says_why_once(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    said: list[str] = []
    decoder = CompiledDecoder(say=said.append, backend=Exported())
    cache = KVCache(model.config, 3, model.dtype, "cpu")
    assert isinstance(decoder.step(model, cache, 10), DecodeStep)  # batched candidates
    assert isinstance(decoder.step(model, cache, 10), DecodeStep)
    assert said == ["--compile: decoding eagerly (batched candidates)"]
    model.train()
    with pytest.raises(NotCovered, match="training"):
        plan(model, 1)
    model.eval()
    model.model.layers[0].mlp.down_proj = torch.nn.Linear(128, 64)  # swapped after packing
    with pytest.raises(NotCovered, match="down_proj"):
        plan(model, 1)


def test_an_active_adapter_decodes_eagerly(tiny_model_dir):
    from chatcli.lora.manager import AdapterManager
    from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

    model = load_checkpoint(tiny_model_dir)
    q = model.model.layers[1].self_attn.q_proj
    lora = ModuleLoRA(torch.randn(2, q.in_features), torch.randn(q.out_features, 2), 4.0)
    AdapterManager(model).add(LoRAAdapter(modules={"model.layers.1.self_attn.q_proj": lora}), "a")
    with pytest.raises(NotCovered, match="LoRA"):
        plan(model, 1)


@pytest.mark.parametrize("path", ["onednn", "plain"])
def test_bf16_compiles_through_the_chosen_kernel(path, tiny_model_dir):
    """bf16 products of one row take the model's chosen path in the compiled step too: oneDNN's prepacked
    weight through ``chatcli::onednn_linear`` (the same kernel, the same arguments), or aten's mm."""
    model = load_checkpoint(tiny_model_dir).to(torch.bfloat16)
    use_kernel_choices(model, model.kernel_choices.with_(bf16_small_rows=path))
    group = model.model.layers[0].self_attn.qkv_group
    if not group.onednn_ok():
        pytest.fail("this torch build has no oneDNN: the choice cannot be tested here")
    p = plan(model, 1)
    assert (p.layers[0].qkv.onednn is not None) == (path == "onednn")
    assert (p.head.onednn is not None) == (path == "onednn")
    counter = Exported()
    want, got, step = _run_both(model, CompiledDecoder(backend=counter), steps=6)
    assert isinstance(step, CompiledStep) and counter.count == 1
    assert torch.equal(got, want)


def test_a_failing_compiler_falls_back_with_one_line(tiny_model_dir):
    def broken(program):
        raise RuntimeError("Invalid C++ compiler: g++ not found")

    model = load_checkpoint(tiny_model_dir)
    said: list[str] = []
    want, got, _ = _run_both(model, decoder := CompiledDecoder(say=said.append, backend=broken), steps=3)
    assert torch.equal(got, want)  # the eager step, bit for bit
    assert decoder.failed is not None and len(said) == 2  # "compiling ..." then the failure, once
    assert "no working C++ compiler" in said[1] and "\n" not in said[1]
    assert isinstance(decoder.step(model, KVCache(model.config, 1, model.dtype, "cpu"), 4), DecodeStep)


def test_generator_answers_the_same_greedy_text(tiny_model_dir):
    from chatcli.tokenizer.tokenizer import ChatTokenizer

    model = load_checkpoint(tiny_model_dir)
    tok = ChatTokenizer.from_dir(tiny_model_dir)
    params = SamplingParams(temperature=0, max_tokens=12)
    eager = Generator(model, tok).generate([1, 5, 6, 7], params)
    gen = Generator(model, tok)
    gen.compiled = counted = CompiledDecoder(backend=Exported())
    assert gen.generate([1, 5, 6, 7], params) == eager
    assert gen.generate([1, 5, 6, 7, 9], params)  # a second answer: no new graph
    assert counted.compiles == 1 and counted.reason is None



def test_compile_lines_reach_the_stream_as_notices(tiny_model_dir):
    """What --compile tells (compiling, a failure mid-answer) comes out of the generator as Notices, at
    the moment it happens: "compiling" before the first token, the failure right after the step that
    failed; so the chat shows a note and generate a stderr line, and each line comes once."""
    from chatcli.engine.events import Notice, Step
    from chatcli.tokenizer.tokenizer import ChatTokenizer

    def broken(program):
        raise RuntimeError("Invalid C++ compiler: g++ not found")

    model = load_checkpoint(tiny_model_dir)
    tok = ChatTokenizer.from_dir(tiny_model_dir)
    params = SamplingParams(temperature=0, max_tokens=4)
    gen = Generator(model, tok)
    gen.compiled = CompiledDecoder(backend=broken)
    events = list(gen.stream([1, 5, 6, 7], params, eos_ids=()))
    kinds = [(type(e).__name__, getattr(e, "kind", None)) for e in events]
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == ["info", "warning"]
    assert notices[0].message.startswith("--compile: compiling") and "no working C++ compiler" in notices[1].message
    first_step = next(i for i, e in enumerate(events) if isinstance(e, Step))
    assert events.index(notices[0]) < first_step < events.index(notices[1])  # compiling before the first token
    again = list(gen.stream([1, 5, 6, 7], params, eos_ids=()))
    assert not [e for e in again if isinstance(e, Notice)], kinds  # each line once per decoder


def test_auto_mode_decodes_eagerly_and_starts_one_background_build(tiny_model_dir, tmp_path, monkeypatch):
    """The default ("auto"): no package yet, so the eager step, bit for bit, and one call
    to start a build elsewhere (with the package's path), told once; nothing is built here."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from chatcli.model.compiled.step import package_path

    model = load_checkpoint(tiny_model_dir)
    asked: list = []
    said: list[str] = []

    def background(path):
        asked.append(path)
        return "building in the background"

    decoder = CompiledDecoder(say=said.append, mode="auto", background=background)
    want, got, step = _run_both(model, decoder, steps=3)
    assert isinstance(step, DecodeStep) and torch.equal(got, want)
    _run_both(model, decoder, steps=2)
    assert asked == [package_path(model)] and said == ["building in the background"]
    assert decoder.compiles == 0 and decoder.reason == "the compiled step is not built yet"
    assert not asked[0].exists()
