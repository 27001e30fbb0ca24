"""`chatcli bench --compile`: the compiled decode step beside the eager one, cold and warm compile times.

Not timed: the figures must exist and agree. No AOTInductor build here (two would cost minutes on the
CI's two cores): the worker's measurement runs in-process on the exported program run in Python, the
runner's cold-then-warm pair with a fake worker.
"""

from __future__ import annotations

from tests.bench.test_bench import run


def test_compile_group_reports_both_steps_and_both_compiles(tiny_model_dir, monkeypatch):
    """The worker's side in-process (the exported program run in Python instead of an AOTInductor build:
    the compiler itself is tests/model/test_compiled_step.py's), then the runner's cold/warm merge."""
    import chatcli.model.compiled.step as compiled_step
    from tests.model.test_compiled_step import Exported
    from chatcli.api import load_model
    from chatcli.bench.compile_group import measure, merge, run_group
    from chatcli.bench.spec import QUICK, BenchSpec

    class Counting(compiled_step.CompiledDecoder):
        def __init__(self, say=None, backend=None, **kwargs):
            super().__init__(say, backend=Exported(), **kwargs)

    monkeypatch.setattr(compiled_step, "CompiledDecoder", Counting)
    spec = BenchSpec(model="tiny", path=str(tiny_model_dir), repeats=2, quick=True, sizes=QUICK)
    figures, info = measure(load_model(str(tiny_model_dir)), spec)
    assert set(figures) == {"compile_s", "decode_eager_tps", "decode_compiled_tps"}
    assert len(figures["decode_eager_tps"]) == len(figures["decode_compiled_tps"]) == 2
    assert all(v > 0 for runs in figures.values() for v in runs)
    assert info["packages_built"] == 1  # one program for the whole answer and every repeat
    assert info["greedy_identical"] is True and 0 <= info["max_logit_diff"] < 1e-3

    calls = []

    def fake_worker(system, group, spec, env):
        calls.append((spec.repeats, env["TORCHINDUCTOR_CACHE_DIR"]))
        if not spec.repeats:
            return {"figures": {"compile_s": [9.0]}}
        return {"figures": {"compile_s": [1.5], "decode_compiled_tps": [30.0]},
                "info": {"greedy_identical": True, "greedy_tokens": 12, "max_logit_diff": 2e-5}}

    merged = merge(*run_group(spec, fake_worker))
    assert calls[0][0] == 0 and calls[1][0] == 2 and calls[0][1] == calls[1][1]  # cold, then warm, one cache
    assert merged["figures"] == {"decode_compiled_tps": [30.0], "compile_cold_s": [9.0], "compile_warm_s": [1.5]}
    assert merged["notes"] == ["--compile: greedy answer identical to the eager step's over 12 tokens; largest "
                               "|logit| difference 2e-05 (both steps fed the eager answer)"]
    assert merge({"error": "boom"}, {})["error"] == "boom"


def test_compile_is_opt_in_and_adds_to_the_groups(tiny_model_dir):
    from chatcli.bench.cli import build_spec

    spec, _, _ = build_spec(str(tiny_model_dir), "float32", None, None, [], None, None, None, True)
    assert "compile" not in spec.groups
    spec, _, _ = build_spec(str(tiny_model_dir), "float32", None, None, [], None, "decode", None, True, compile_=True)
    assert spec.groups == ("decode", "compile")


def test_compile_with_shape_is_one_line(capsys, tiny_model_dir):
    code, out, err = run(capsys, "bench", "--model", str(tiny_model_dir), "--compile", "--shape", "qwen2.5-0.5b")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--compile" in err


def test_a_model_compile_does_not_cover_is_measured_eagerly_and_said(tiny_model_dir, monkeypatch):
    """A model --compile does not cover (here: an active adapter stands in for the calibrated bf16
    oneDNN path) is what the product decodes eagerly: the bench says so, skips the compiled cells with
    the reason and still times the eager step, instead of failing the whole run."""
    import chatcli.model.compiled.step as compiled_step
    from chatcli.api import load_model
    from chatcli.bench.compile_group import measure, merge
    from chatcli.bench.spec import QUICK, BenchSpec

    def not_covered(model, batch):
        raise compiled_step.NotCovered("the bf16 oneDNN path")

    monkeypatch.setattr(compiled_step, "plan", not_covered)
    spec = BenchSpec(model="tiny", path=str(tiny_model_dir), repeats=2, quick=True, sizes=QUICK)
    figures, info = measure(load_model(str(tiny_model_dir)), spec)
    assert set(figures) == {"decode_eager_tps"} and len(figures["decode_eager_tps"]) == 2
    assert info["not_compiled"] == "the bf16 oneDNN path"
    assert set(info["skipped"]) == {"decode_compiled_tps", "compile_cold_s", "compile_warm_s"}
    cold = {"figures": {}, "info": {"not_compiled": "the bf16 oneDNN path"}}
    merged = merge(cold, {"figures": figures, "info": info})
    assert "compile_cold_s" not in merged["figures"] and merged["figures"]["decode_eager_tps"]
    assert any("decodes this model eagerly" in n for n in merged["notes"])


def test_the_bench_decodes_as_the_commands_do(tiny_model_dir, monkeypatch):
    """float32 models (unquantised, int8, int4) and bfloat16 ones through the compiled step unless --eager
    or the `compile` setting says no, as `chatcli generate` decodes them; float16 eagerly."""
    from chatcli.bench.cli import build_spec

    def spec(dtype="float32", quantize=None, eager=False):
        return build_spec(str(tiny_model_dir), dtype, None, quantize, [], None, "decode", None, True, eager=eager)[0]

    assert spec().compiled is False  # CHATCLI_COMPILE=0 (tests/conftest.py), as a person's setting
    monkeypatch.delenv("CHATCLI_COMPILE")
    assert spec().compiled is True
    assert spec(quantize="int8").compiled and spec(quantize="int4").compiled
    assert spec("bfloat16").compiled and not spec(eager=True).compiled and not spec("float16").compiled


def test_decode_through_the_compiled_step_skips_the_outside_split(tiny_model_dir):
    """The compiled step is one program: the profiler cannot split its products from the rest, so the
    figure is skipped with the reason (it read as the whole step before)."""
    from chatcli.api import load_model
    from chatcli.bench.chatcli_worker import _decode
    from chatcli.bench.spec import QUICK, BenchSpec
    from chatcli.model.compiled.step import CompiledDecoder
    from tests.model.test_compiled_step import Exported

    lm = load_model(str(tiny_model_dir))
    lm.generator.compiled = CompiledDecoder(backend=Exported())
    spec = BenchSpec(model="tiny", path=str(tiny_model_dir), repeats=2, quick=True, sizes=QUICK)
    figures, info = _decode(lm, spec)
    assert set(figures) == {"decode_tps"} and "one program" in info["skipped"]["decode_outside_ms"]
    lm.generator.compiled = None
    figures, info = _decode(lm, spec)
    assert set(figures) == {"decode_tps", "decode_outside_ms"} and "skipped" not in info
