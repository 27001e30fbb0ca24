"""Issue 18's targets read from a report: which baseline each compares with, and when each applies.

The reports here are built by hand (the medians are what matter), so each rule is checked
on both sides of its threshold without running a bench.
"""

from __future__ import annotations

import pytest

from chatcli.bench.targets import evaluate


def report(dtype="float32", quantize=None, torch_s=None, **medians) -> dict:
    """medians: ``figure__system=value`` (system with ``_`` for ``-`` and ``.``), e.g. decode_tps__llama_cpp."""
    names = {"chatcli": "chatcli", "transformers": "transformers", "transformers_loop": "transformers-loop",
             "llama_cpp": "llama.cpp"}  # fmt: skip
    rows: dict[str, dict] = {}
    for key, value in medians.items():
        figure, system = key.split("__")
        rows.setdefault(figure, {})[names[system]] = {"median": value}
    return {
        "settings": {"dtype": dtype, "quantize": quantize},
        "figures": [{"id": fid, "results": results} for fid, results in rows.items()],
        "reference": {"import_torch_s": {"median": torch_s}} if torch_s else {},
    }


def targets(r: dict) -> dict[str, dict]:
    return {t["id"]: t for t in evaluate(r)}


@pytest.mark.parametrize("dtype, ratio", [("float32", 1.3), ("bfloat16", 1.5)])
def test_decode_compares_with_the_transformers_loop(dtype, ratio):
    met = targets(report(dtype, decode_tps__chatcli=ratio * 20 + 0.1, decode_tps__transformers_loop=20,
                         decode_tps__transformers=5))  # fmt: skip
    assert met[f"decode_{dtype}"]["met"] and met[f"decode_{dtype}"]["rule"] == f">= {ratio}x transformers-loop"
    missed = targets(report(dtype, decode_tps__chatcli=ratio * 20 - 0.1, decode_tps__transformers_loop=20,
                            decode_tps__transformers=5))  # fmt: skip
    assert not missed[f"decode_{dtype}"]["met"]
    # generate alone sets no decode target (the loop is the fair baseline)
    generate_only = targets(report(dtype, decode_tps__chatcli=99, decode_tps__transformers=5))
    assert not any(t.startswith("decode") for t in generate_only)


def test_prefill_compares_with_the_loop_in_both_dtypes():
    for dtype in ("float32", "bfloat16"):
        assert targets(report(dtype, prefill_tps__chatcli=100, prefill_tps__transformers_loop=100))["prefill_1x"]["met"]
        slower = report(dtype, prefill_tps__chatcli=99, prefill_tps__transformers_loop=100)
        assert not targets(slower)["prefill_1x"]["met"]
    assert "prefill_1x" not in targets(report("float16", prefill_tps__chatcli=1, prefill_tps__transformers_loop=2))


def test_int4_decode_and_memory_compare_with_llama_cpp():
    r = report("float32", "int4", decode_tps__chatcli=100, decode_tps__llama_cpp=100, decode_tps__transformers_loop=1,
               peak_rss_mb__chatcli=300, peak_rss_mb__llama_cpp=200)  # fmt: skip
    t = targets(r)
    assert t["int4_decode"]["met"] and t["int4_rss"]["met"] and t["int4_rss"]["value"] == "1.50x"
    assert "decode_float32" not in t  # the loop targets are for the float weights
    t = targets(report("float32", "int4", decode_tps__chatcli=55, decode_tps__llama_cpp=102,
                       peak_rss_mb__chatcli=560, peak_rss_mb__llama_cpp=250))  # fmt: skip
    assert not t["int4_decode"]["met"] and t["int4_decode"]["value"] == "0.54x"
    assert not t["int4_rss"]["met"]
    # int8 has neither (no llama.cpp target for it)
    assert not {"int4_decode", "int4_rss"} & set(targets(report("float32", "int8", decode_tps__chatcli=1,
                                                                decode_tps__llama_cpp=2)))  # fmt: skip


@pytest.mark.parametrize(
    "dtype, quantize, applies",
    [("float32", None, True), ("bfloat16", None, True), ("float32", "int4", True), ("float32", "int8", False),
     ("float16", None, False)],
)  # fmt: skip
def test_start_is_import_torch_plus_one_second(dtype, quantize, applies):
    t = targets(report(dtype, quantize, torch_s=1.3, start_s__chatcli=2.3))
    assert ("start" in t) == applies
    if applies:
        assert t["start"]["met"] and t["start"]["value"] == "+1.00 s"
        assert t["start"]["rule"] == "<= import torch + 1.0 s"
        assert not targets(report(dtype, quantize, torch_s=1.3, start_s__chatcli=2.4))["start"]["met"]


def test_the_old_targets_are_gone():
    r = report(decode_tps__chatcli=100, decode_tps__transformers=10, prefill_tps__chatcli=100,
               prefill_tps__transformers=10)  # fmt: skip
    r["floor"] = {"decode_share": 0.1}
    assert not {"decode_2x", "decode_floor", "int8_decode", "prefill_1x"} & set(targets(r))
