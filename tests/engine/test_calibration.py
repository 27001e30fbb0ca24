"""Per-CPU kernel choices (chatcli.model.kernel_choice) and their calibration (chatcli.engine.calibration).

tests/conftest.py turns the automatic calibration off for the whole suite (CHATCLI_CALIBRATE=0);
the tests here turn it on where they need it, on the tiny model (a calibration of it takes well
under a second). What they hold: the choices are the decision input of every path (each path
then computes exactly what it computed before), threads follow the phases, a calibration
measures the candidates that exist for the model and keeps the baseline unless another is
measurably faster, the cache is keyed, atomic and never trusted when wrong, and a load says at
most one line, only after the arguments were checked.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from chatcli.engine.calibration import auto, cache, measure
from chatcli.engine.calibration.key import METHOD, calibration_key, cpu_identity
from chatcli.engine.calibration.record import SCHEMA, Calibration, Measurement
from chatcli.engine.calibration.table import kernel_note, render
from chatcli.engine.calibration.threads import phase_threads, thread_candidates
from chatcli.engine.events import Step
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.kernel_choice import DEFAULT, KernelChoices
from chatcli.model.packed import FusedGroup, use_kernel_choices


@pytest.fixture
def threads_back():
    """torch's thread count as it was, whatever a test set."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.fixture
def calibrating(monkeypatch, threads_back):
    monkeypatch.setenv("CHATCLI_CALIBRATE", "1")
    for module in (measure, auto):  # a quiet machine, whatever this one is doing
        monkeypatch.setattr(module, "load_per_core", lambda: 0.1)
    monkeypatch.setattr(measure, "DEADLINE_S", 600.0)  # every candidate measured, however loaded the machine is


# ---------------------------------------------------------------- the choices


def test_choices_check_their_values_and_round_trip_through_json():
    c = KernelChoices(bf16_small_rows="plain", int8_max_rows=32, int4_max_rows=0, prefill_threads=2, decode_threads=1,
                      idle_threads=2)
    assert KernelChoices.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert DEFAULT == KernelChoices() and DEFAULT.bf16_small_rows == "onednn" and DEFAULT.int4_max_rows == 16
    for bad in ({"bf16_small_rows": "fast"}, {"int8_max_rows": -1}, {"int4_max_rows": 1.5}, {"bf16_onednn_max_rows": -2},
                {"prefill_threads": 0, "decode_threads": 1, "idle_threads": 1},
                {"prefill_threads": 2, "decode_threads": 1}):  # not all three thread counts
        with pytest.raises(ValueError):
            KernelChoices(**bad)
    for bad in (None, [], {**c.to_json(), "extra": 1}, {k: v for k, v in c.to_json().items() if k != "int8_max_rows"}):
        with pytest.raises(ValueError):
            KernelChoices.from_json(bad)


def test_int8_and_int4_layers_take_their_row_limit_from_the_choices(tiny_model_dir):
    for method, cls, field in (("int8", Int8Linear, "int8_max_rows"), ("int4", Int4Linear, "int4_max_rows")):
        model = load_engine(str(tiny_model_dir), quantize=method, warm_up=False).model
        layers = [m for m in model.modules() if type(m) is cls]
        fused = [g.fused for layer in model.model.layers for g in (layer.self_attn.qkv_group, layer.mlp.gate_up_group)]
        assert layers and all(m.kernel_max_rows == getattr(DEFAULT, field) for m in layers + fused)
        use_kernel_choices(model, DEFAULT.with_(**{field: 40}))
        assert model.kernel_choices == DEFAULT.with_(**{field: 40})
        assert all(m.kernel_max_rows == 40 for m in layers + fused)
        layer = fused[0]
        x = torch.randn(24, layer.in_features)
        dense = F.linear(x, layer.dequantize(torch.float32))
        with torch.inference_mode():
            assert not torch.equal(layer(x), dense)  # 24 rows <= 40: the kernel (bfloat16 activations)
            use_kernel_choices(model, DEFAULT.with_(**{field: 8}))
            assert torch.equal(layer(x), dense)  # 24 rows > 8: exactly the dequantised product
        model.to(torch.float32)  # moving re-packs: the new fused layers take the model's choices again
        assert all(g.fused.kernel_max_rows == 8 for g in (model.model.layers[0].self_attn.qkv_group,))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_the_bf16_small_rows_path_is_the_models_choice(tiny_model_dir):
    model = load_engine(str(tiny_model_dir), dtype="bfloat16", warm_up=False).model
    group = model.model.layers[0].mlp.gate_up_group
    assert isinstance(group, FusedGroup) and group.use_onednn
    ids = torch.tensor([[5, 9, 14]])
    with torch.inference_mode():
        model(ids)
        assert group._onednn is not None  # the default: oneDNN's prepacked copy serves 3 rows
        use_kernel_choices(model, DEFAULT.with_(bf16_small_rows="plain"))
        assert group._onednn is None  # the copy (and its memory) is dropped
        x = torch.randn(2, group.weight.shape[1], dtype=torch.bfloat16)
        mlp = model.model.layers[0].mlp
        from chatcli.model.packed import fused_linear

        gate, up = fused_linear(mlp, group, x)
        assert group._onednn is None  # plain: aten's mm, exactly F.linear
        assert torch.equal(torch.cat([gate, up], -1), F.linear(x, group.weight))
        model.to(torch.bfloat16)  # re-packed groups keep the choice
        assert not model.model.layers[0].mlp.gate_up_group.use_onednn


def test_prepack_builds_the_onednn_copies_and_a_kept_copy_survives_a_switch_to_plain(tiny_model_dir):
    from chatcli.model.packed import _HAS_ONEDNN, fused_linear, prepack

    if not _HAS_ONEDNN:
        pytest.skip("torch built without oneDNN")
    model = load_engine(str(tiny_model_dir), dtype="bfloat16", warm_up=False).model
    mlp = model.model.layers[0].mlp
    group = mlp.gate_up_group
    assert group._onednn is None and prepack(model) == 4 * len(model.model.layers) + 1  # 4 groups a layer + head
    built = group._onednn
    x = torch.randn(1, group.weight.shape[1], dtype=torch.bfloat16)
    with torch.inference_mode():
        first = torch.cat(fused_linear(mlp, group, x), -1)
        assert group._onednn is built  # the product used the copy prepack built: no second reorder
        use_kernel_choices(model, DEFAULT.with_(bf16_small_rows="plain"), keep_prepacked=True)
        assert group._onednn is built and not group.use_onednn and prepack(model) == 0
        assert torch.equal(torch.cat(fused_linear(mlp, group, x), -1), F.linear(x, group.weight))  # plain while kept
        use_kernel_choices(model, DEFAULT, keep_prepacked=True)
        assert prepack(model) > 0 and group._onednn is built  # back to oneDNN: the same copy, not rebuilt
        assert torch.equal(torch.cat(fused_linear(mlp, group, x), -1), first)
        use_kernel_choices(model, DEFAULT.with_(bf16_small_rows="plain"))
        assert group._onednn is None  # not kept: dropped


def test_a_calibration_never_times_the_building_of_the_onednn_copies(tiny_model_dir, calibrating, monkeypatch):
    """Built inside a timed decode, the reorder of every weight landed in the oneDNN candidate's first
    token (a quiet Xeon read oneDNN at 2 threads as 288 ms/token against 35 for plain)."""
    from chatcli.model.packed import _HAS_ONEDNN

    if not _HAS_ONEDNN:
        pytest.skip("torch built without oneDNN")
    engine = load_engine(str(tiny_model_dir), dtype="bfloat16", warm_up=False, calibrate=False)
    torch.set_num_threads(2)
    reorders, timed = [], []
    real_reorder, real_decode = FusedGroup.onednn_weight, measure._Run.decode_ms

    def counting_reorder(self, version):
        before = self._onednn
        out = real_reorder(self, version)
        reorders.append(out is not before)
        return out

    def decode_ms(self, n, cutoff_ms):
        start = len(reorders)
        ms = real_decode(self, n, cutoff_ms)
        timed.append(sum(reorders[start:]))
        return ms

    monkeypatch.setattr(FusedGroup, "onednn_weight", counting_reorder)
    monkeypatch.setattr(measure._Run, "decode_ms", decode_ms)
    cal = measure.calibrate(engine)
    assert len([m for m in cal.measurements if m.what == "decode"]) == 4
    assert timed[0] > 0 and timed[1:] and not any(timed[1:])  # the warm-up built them; no timed run did
    onednn = [g for g in (engine.model.model.layers[0].mlp.gate_up_group,) if g._onednn is not None]
    assert bool(onednn) == (cal.choices.bf16_small_rows == "onednn")  # the final choice keeps or frees them


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_the_bf16_onednn_row_limit_is_the_models_choice(tiny_model_dir):
    from chatcli.model.packed import fused_linear

    model = load_engine(str(tiny_model_dir), dtype="bfloat16", warm_up=False).model
    mlp = model.model.layers[0].mlp
    group = mlp.gate_up_group
    assert group.onednn_max_rows == DEFAULT.bf16_onednn_max_rows == 16
    x = torch.randn(24, group.weight.shape[1], dtype=torch.bfloat16)
    calls = []
    real = group.onednn_weight
    group.onednn_weight = lambda version: calls.append(version) or real(version)  # counts the oneDNN path
    with torch.inference_mode():
        fused_linear(mlp, group, x)
        assert group._onednn is None and not calls  # 24 rows > 16: aten's mm
        use_kernel_choices(model, DEFAULT.with_(bf16_onednn_max_rows=32))
        assert group.onednn_max_rows == 32 and "(<= 32 rows)" in model.kernel_choices.describe()
        fused_linear(mlp, group, x)
        assert group._onednn is None and not calls  # no copy yet: a prompt never pays for building it
        fused_linear(mlp, group, x[:1])  # a decode step builds it
        assert group._onednn is not None and len(calls) == 1
        gate, up = fused_linear(mlp, group, x)
        assert len(calls) == 2  # 24 rows <= 32 with the copy built: oneDNN
        plain = F.linear(x, group.weight).float()
        assert (torch.cat([gate, up], -1).float() - plain).abs().max() <= 0.02 * plain.abs().max()
        model.to(torch.bfloat16)  # re-packed groups keep the limit
        assert model.model.layers[0].mlp.gate_up_group.onednn_max_rows == 32


def test_threads_follow_the_phases_and_come_back_after_the_answer(tiny_model_dir, threads_back):
    engine = load_engine(str(tiny_model_dir), warm_up=False)
    model, gen = engine.model, engine.generator
    seen: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[1], torch.get_num_threads())))
    try:
        torch.set_num_threads(2)
        ids = engine.tokenizer.encode("one two three four five six")
        list(gen.stream(ids, SamplingParams(temperature=0, max_tokens=4), eos_ids=()))
        assert {n for _, n in seen} == {2}  # no choice: the count as set, untouched
        seen.clear()
        use_kernel_choices(model, DEFAULT.with_(prefill_threads=2, decode_threads=1, idle_threads=3))
        gen.reset()
        list(gen.stream(ids, SamplingParams(temperature=0, max_tokens=4), eos_ids=()))
        assert seen[0] == (len(ids), 2) and all(n == 1 for _, n in seen[1:]) and len(seen) == 4
        assert torch.get_num_threads() == 3  # the answer ended: the count as set when measured
    finally:
        hook.remove()


def test_phase_threads_leaves_the_count_alone_without_a_choice(tiny_model_dir, threads_back):
    model = load_engine(str(tiny_model_dir), warm_up=False).model
    torch.set_num_threads(1)
    for phase in ("prefill", "decode", "idle"):
        phase_threads(model, phase)
        assert torch.get_num_threads() == 1
    assert thread_candidates(2) == (2, 1) and thread_candidates(1) == (1,) and thread_candidates(16) == (16, 8, 4)


# ---------------------------------------------------------------- choosing


def test_a_candidate_replaces_the_baseline_only_when_measurably_faster():
    assert measure.pick({"plain": 10.0, "onednn": 9.6}, "plain") == "plain"  # 4 %: noise
    assert measure.pick({"plain": 10.0, "onednn": 9.0}, "plain") == "onednn"
    assert measure.pick({"plain": 10.0, "onednn": 12.0}, "plain") == "plain"
    default = 16
    # the kernel keeps winning up to 64 rows, loses at 128: 64
    assert measure.row_limit({32: (8, 12), 64: (16, 20), 128: (30, 24)}, default) == 64
    # a tie is not enough: the default stays
    assert measure.row_limit({32: (9.4, 9.5), 64: (1, 20)}, default) == 16
    # whatever is measured at or below the default (none is, by the calibration) never lowers it
    assert measure.row_limit({1: (50, 1), 8: (50, 1), 32: (1, 9)}, default) == 32
    assert measure.row_limit({}, default) == 16


@pytest.mark.parametrize("dtype,quantize,rows", [("float32", "none", None), ("float32", "int8", "int8 rows"),
                                                 ("float32", "int4", "int4 rows"), ("bfloat16", "none", None)])
def test_a_calibration_measures_what_exists_for_the_model_and_applies_it(tiny_model_dir, calibrating, dtype, quantize,
                                                                         rows):  # fmt: skip
    engine = load_engine(str(tiny_model_dir), dtype=dtype, quantize=quantize, warm_up=False, calibrate=False)
    torch.set_num_threads(2)
    cal = measure.calibrate(engine)
    whats = {m.what for m in cal.measurements}
    assert {"decode", "prefill"} <= whats  # two thread counts to choose from
    if dtype == "bfloat16":  # the oneDNN row limit is measured when decode chose oneDNN
        rows = "bf16 rows" if cal.choices.bf16_small_rows == "onednn" else None
    assert (rows in whats) if rows else not any(w.endswith("rows") for w in whats)
    decode = [m for m in cal.measurements if m.what == "decode"]
    has_onednn = dtype == "bfloat16" and torch.backends.mkldnn.is_available()
    assert len(decode) == (4 if has_onednn else 2) and sum(m.baseline for m in decode) == 1
    assert sum(m.chosen for m in decode) == 1 and all(m.ms > 0 and math.isfinite(m.ms) for m in cal.measurements)
    assert next(m for m in decode if m.baseline).candidate.startswith("plain" if has_onednn else "2 threads")
    assert engine.model.kernel_choices == cal.choices and cal.key == calibration_key(engine.model, 2)
    assert torch.get_num_threads() == 2 and engine.generator.cached_ids == []  # left as found
    assert cal.seconds < 30
    text = render(cal, "cached in X")
    assert "chosen: " + cal.choices.describe() in text and "decode" in text and text.endswith("cached in X")


def test_past_the_deadline_only_the_baselines_are_measured_and_kept(tiny_model_dir, calibrating, monkeypatch):
    engine = load_engine(str(tiny_model_dir), quantize="int8", warm_up=False, calibrate=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(measure, "DEADLINE_S", 0.0)
    cal = measure.calibrate(engine)
    assert [(m.what, m.candidate, m.chosen) for m in cal.measurements] == [("decode", "2 threads", True)]
    assert cal.choices == DEFAULT  # nothing else measured: nothing else chosen


def test_past_the_deadline_both_bf16_paths_still_get_every_round(tiny_model_dir, calibrating, monkeypatch):
    """A big model fits one round in the deadline; the path decision (which halves or doubles its decode)
    is never left to one round, while the thread counts are what the deadline cuts."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("needs oneDNN")
    engine = load_engine(str(tiny_model_dir), dtype="bfloat16", warm_up=False, calibrate=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(measure, "DEADLINE_S", 0.0)
    timed, real = [], measure._Run.decode_ms

    def decode_ms(self, n, cutoff_ms):
        timed.append(self.model.kernel_choices.bf16_small_rows)
        return real(self, n, cutoff_ms)

    monkeypatch.setattr(measure._Run, "decode_ms", decode_ms)
    cal = measure.calibrate(engine)
    decode = [m.candidate for m in cal.measurements if m.what == "decode"]
    assert decode == ["plain, 2 threads", "onednn, 2 threads"]
    assert timed[1:] == ["plain", "onednn"] * measure.ROUNDS  # after the warm-up: each path in every round


def test_one_thread_and_float32_leave_nothing_to_measure(tiny_model_dir, calibrating):
    engine = load_engine(str(tiny_model_dir), warm_up=False, calibrate=False)
    torch.set_num_threads(1)
    cal = measure.calibrate(engine)
    assert cal.measurements == () and cal.choices == DEFAULT
    assert "nothing to choose" in render(cal, "")


# ---------------------------------------------------------------- the cache and the load


def _cal(key: dict, **choices) -> Calibration:
    return Calibration(key, DEFAULT.with_(**choices), (Measurement("decode", "2 threads", 1.5, True, True),), 0.2,
                       "2026-12-06T11:00:00+00:00", 0.3)  # fmt: skip


def test_the_cache_round_trips_and_distrusts_anything_else(tiny_model_dir):
    model = load_engine(str(tiny_model_dir), warm_up=False).model
    key = calibration_key(model)
    assert cache.read_cached(key) is None
    cal = _cal(key, int8_max_rows=24)
    path = cache.write_cached(cal)
    assert cache.read_cached(key) == cal and json.loads(path.read_text())["schema"] == SCHEMA
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written whole: no temporary left
    other = {**key, "torch": "0.0.1"}
    assert cache.cache_path(other) != path and cache.read_cached(other) is None
    good = path.read_text()
    for text in ("{not json", good[: len(good) // 2], json.dumps({**cal.to_json(), "schema": "x/9"}),
                 json.dumps({**cal.to_json(), "key": other}),  # another key's calibration at this key's path
                 json.dumps({**cal.to_json(), "choices": {"bf16_small_rows": "fast"}}), "\xff\xfe", "[]"):
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        assert cache.read_cached(key) is None, text[:30]
    path.unlink()
    path.mkdir()  # not even a file
    assert cache.read_cached(key) is None


def test_a_failed_write_leaves_the_old_file_whole(tiny_model_dir, monkeypatch):
    model = load_engine(str(tiny_model_dir), warm_up=False).model
    key = calibration_key(model)
    first = _cal(key)
    cache.write_cached(first)

    def fail(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "write_text_atomic", fail)
    with pytest.raises(OSError):
        cache.write_cached(_cal(key, int8_max_rows=99))
    assert cache.read_cached(key) == first


def test_first_load_calibrates_with_one_line_the_next_reads_the_cache(tiny_model_dir, calibrating, capsys):
    first = load_engine(str(tiny_model_dir), warm_up=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chatcli: calibrated this CPU's kernels in ")
    assert "(cached; redo with chatcli bench --calibrate)" in err
    assert first.calibration is not None and first.model.kernel_choices == first.calibration.choices
    second = load_engine(str(tiny_model_dir), warm_up=False)
    assert capsys.readouterr().err == ""
    assert second.calibration == first.calibration and second.model.kernel_choices == first.calibration.choices
    other = load_engine(str(tiny_model_dir), quantize="int8", warm_up=False)  # another key: its own calibration
    assert capsys.readouterr().err.count("calibrated this CPU's kernels") == 1 and other.calibration.key != first.calibration.key


def test_a_corrupt_cache_file_is_measured_again_and_replaced(tiny_model_dir, calibrating, capsys):
    engine = load_engine(str(tiny_model_dir), warm_up=False, calibrate=False)
    path = cache.cache_path(calibration_key(engine.model))
    path.write_text('{"schema": "chatcli-calibration/1", "key": ', encoding="utf-8")
    again = load_engine(str(tiny_model_dir), warm_up=False)
    assert capsys.readouterr().err.count("\n") == 1
    assert cache.read_cached(again.calibration.key) == again.calibration


def test_a_busy_machine_is_not_calibrated_on_load_and_a_busy_calibration_is_redone_when_quiet(
        tiny_model_dir, calibrating, monkeypatch, capsys):  # fmt: skip
    monkeypatch.setattr(auto, "load_per_core", lambda: 3.0)  # other work on every core
    engine = load_engine(str(tiny_model_dir), warm_up=False)
    assert engine.calibration is None and engine.model.kernel_choices == DEFAULT and capsys.readouterr().err == ""
    key = calibration_key(engine.model)
    assert cache.read_cached(key) is None  # nothing measured, nothing cached: a quiet load will measure
    busy = Calibration(key, DEFAULT.with_(prefill_threads=1, decode_threads=1, idle_threads=2), (), 0.5, "2026-12-06T11:00:00+00:00",
                       3.0)  # what `bench --calibrate` wrote on a busy machine  # fmt: skip
    assert busy.busy and "the machine was busy" in render(busy, "")
    cache.write_cached(busy)
    assert load_engine(str(tiny_model_dir), warm_up=False).calibration == busy  # still busy: it serves
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(auto, "load_per_core", lambda: 0.2)
    quiet = load_engine(str(tiny_model_dir), warm_up=False).calibration
    assert quiet != busy and not quiet.busy and capsys.readouterr().err.count("\n") == 1
    assert cache.read_cached(key) == quiet


def test_an_unwritable_cache_or_a_failing_measurement_never_fails_the_load(tiny_model_dir, calibrating, monkeypatch,
                                                                           capsys):  # fmt: skip
    monkeypatch.setattr(auto, "write_cached", lambda cal: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    engine = load_engine(str(tiny_model_dir), warm_up=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not cached: Permission denied" in err and engine.calibration is not None

    def broken(engine):
        use_kernel_choices(engine.model, DEFAULT.with_(int8_max_rows=3))  # half done when it broke
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(auto, "calibrate", broken)
    engine = load_engine(str(tiny_model_dir), quantize="int8", warm_up=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not calibrate" in err and "kernel exploded" in err
    assert engine.calibration is None and engine.model.kernel_choices == DEFAULT


def test_the_switch_turns_calibration_and_the_cache_off(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("CHATCLI_CALIBRATE", "1")
    model = load_engine(str(tiny_model_dir), warm_up=False, calibrate=False).model
    cache.write_cached(_cal(calibration_key(model), int8_max_rows=48))
    for off in ("0", "off", "False", "no"):
        monkeypatch.setenv("CHATCLI_CALIBRATE", off)
        engine = load_engine(str(tiny_model_dir), warm_up=False)
        assert engine.calibration is None and engine.model.kernel_choices == DEFAULT
    monkeypatch.setenv("CHATCLI_CALIBRATE", "1")
    assert load_engine(str(tiny_model_dir), warm_up=False).model.kernel_choices.int8_max_rows == 48  # the cache
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CHATCLI_CALIBRATE", "sometimes")
    with pytest.raises(UsageError, match="CHATCLI_CALIBRATE"):
        load_engine(str(tiny_model_dir), warm_up=False)
    assert auto.auto_enabled({}) and not auto.auto_enabled({"CHATCLI_CALIBRATE": "off"})


def test_the_cli_checks_arguments_before_any_calibration(tiny_model_dir, calibrating, capsys):
    from chatcli.paths import cache_dir
    from tests.cli.test_generate import run

    cached = lambda: list((cache_dir() / "calibration").glob("*.json"))  # noqa: E731
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--temperature", "-1")
    assert code == 2 and err.count("\n") == 1 and "calibrat" not in err and cached() == []
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "-n", "2", "--no-save", "--raw")
    assert code == 0 and err.count("calibrated this CPU's kernels") == 1 and len(cached()) == 1
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "-n", "2", "--no-save", "--raw")
    assert code == 0 and "calibrat" not in err


def test_key_names_the_cpu_torch_threads_dtype_quantization_and_shape(tiny_model_dir, tmp_path):
    model = load_engine(str(tiny_model_dir), quantize="int4", warm_up=False).model
    key = calibration_key(model, 3)
    assert key["threads"] == 3 and key["torch"] == torch.__version__ and key["dtype"] == "float32"
    assert key["quantize"] == "int4-g32+int8" and key["shape"]["layers"] == model.config.num_hidden_layers
    assert key["method"] == METHOD  # a calibration measured the old way is measured again
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: sse avx512f amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: sse avx512f amx_tile\n")
    name, flags = cpu_identity(info)
    assert name == "Test CPU 9000" and len(flags) == 12
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: sse avx2\n")
    assert cpu_identity(info)[1] != flags  # same name, other features: another key
    assert cpu_identity(tmp_path / "missing")[0]  # no /proc/cpuinfo: the platform's name


def test_the_bench_note_says_where_the_choices_came_from():
    cal = _cal({"cpu": "x"}, prefill_threads=2, decode_threads=1, idle_threads=2)
    assert "calibrated on this CPU 2026-12-06" in kernel_note(cal.choices, cal, True)
    assert "threads 2 for prompts / 1 for decoding (else 2)" in kernel_note(cal.choices, cal, True)
    assert "threads as set" in DEFAULT.describe()
    assert "automatic calibration off" in kernel_note(DEFAULT, None, False)


def test_bench_calibrate_measures_again_and_prints_the_table(tiny_model_dir, calibrating, capsys):
    from chatcli.paths import cache_dir
    from tests.cli.test_generate import run

    code, out, err = run(capsys, "bench", "--calibrate", "--model", str(tiny_model_dir), "--threads", "2")
    assert code in (0, None), err
    assert out.startswith("chatcli calibration: ") and "decode" in out and "prefill" in out and "chosen: " in out
    files = list((cache_dir() / "calibration").glob("*.json"))
    assert len(files) == 1 and str(files[0]) in out
    first = json.loads(files[0].read_text())
    code, out, err = run(capsys, "bench", "--calibrate", "--model", str(tiny_model_dir), "--threads", "2", "--json")
    again = json.loads(out)
    assert again["schema"] == SCHEMA and again["key"] == first["key"] and again["created"] >= first["created"]
    assert list((cache_dir() / "calibration").glob("*.json")) == files  # the same key: replaced, not added
    for extra in (["--only", "decode"], ["--baseline", "transformers"], ["--quick"]):
        code, out, err = run(capsys, "bench", "--calibrate", "--model", str(tiny_model_dir), *extra)
        assert code == 2 and err.count("\n") == 1 and f"drop {extra[0]}" in err


def test_a_bench_worker_reports_the_paths_it_ran(tiny_model_dir, calibrating):
    from chatcli.bench.chatcli_worker import run as worker_run
    from chatcli.bench.spec import QUICK, BenchSpec

    spec = BenchSpec(model=str(tiny_model_dir), path=str(tiny_model_dir), quick=True, sizes=QUICK, repeats=1)
    result = worker_run(spec, "decode")
    key = calibration_key(load_engine(str(tiny_model_dir), device="cpu", warm_up=False, calibrate=False).model)
    cal = cache.read_cached(key)  # the worker's load calibrated (CHATCLI_CALIBRATE=1 here) and cached it
    assert cal is not None and result["info"]["kernels"] == cal.choices.to_json()
    assert result["notes"] == [kernel_note(cal.choices, cal, True)] and "calibrated on this CPU" in result["notes"][0]
