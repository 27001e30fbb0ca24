"""The project's targets, checked against one report: which ones this run meets.

Issue 18's speed targets compare with the fair baselines: decode and prefill with the
plain transformers KV-cache loop (``--baseline transformers-loop``), int4 with llama.cpp
on the same Q4_1 weights (``--baseline llama.cpp``), start-up with a bare ``import
torch``. Issue 8's targets for turns, batched candidates and adapters stay.

Each target reads medians of the same run (so a noisy machine moves both sides of a
comparison alike) and yields ``{"id", "figure", "rule", "value", "met"}``; the table
prints ``✓``/``✗`` with the value beside the figure's ratio. A target whose inputs
were not measured in this run (no baseline, a group left out) is not listed, and
neither is one that does not apply to this run's dtype and quantization.
"""

from __future__ import annotations

from collections.abc import Iterator

MERGED_NOISE = 0.03  # "merged no slower": medians within 3% count as equal on a shared machine
LOOP_DECODE = {"float32": 1.3, "bfloat16": 1.5}  # decode >= this x the transformers loop, same dtype
START_ABOVE_TORCH_S = 1.0  # process start to first token <= import torch + this (float32, bfloat16, int4)
INT4_RSS = 1.5  # int4 peak RSS <= this x llama.cpp's on the same model


def _median(report: dict, figure: str, system: str = "chatcli") -> float | None:
    for row in report["figures"]:
        if row["id"] == figure:
            return row["results"].get(system, {}).get("median")
    return None


def _t(tid: str, figure: str, rule: str, value: str, met: bool) -> dict:
    return {"id": tid, "figure": figure, "rule": rule, "value": value, "met": bool(met)}


def evaluate(report: dict) -> list[dict]:
    return list(_targets(report))


def _targets(report: dict) -> Iterator[dict]:
    s = report["settings"]
    dtype, quantize = s["dtype"], s.get("quantize")
    m = lambda fig, system="chatcli": _median(report, fig, system)  # noqa: E731

    unquantized = quantize in (None, "none")
    dec, loop_dec, llama_dec = m("decode_tps"), m("decode_tps", "transformers-loop"), m("decode_tps", "llama.cpp")
    if dec and loop_dec and unquantized and dtype in LOOP_DECODE:
        x = LOOP_DECODE[dtype]
        yield _t(f"decode_{dtype}", "decode_tps", f">= {x}x transformers-loop", f"{dec / loop_dec:.2f}x",
                 dec >= x * loop_dec)  # fmt: skip
    if dec and llama_dec and quantize == "int4":
        yield _t("int4_decode", "decode_tps", ">= llama.cpp Q4_1, same threads", f"{dec / llama_dec:.2f}x",
                 dec >= llama_dec)  # fmt: skip

    pre, loop_pre = m("prefill_tps"), m("prefill_tps", "transformers-loop")
    if pre and loop_pre and unquantized and dtype in LOOP_DECODE:
        yield _t("prefill_1x", "prefill_tps", ">= transformers-loop", f"{pre / loop_pre:.2f}x", pre >= loop_pre)
    pre32 = m("prefill_f32_tps")
    if pre and pre32 and dtype == "bfloat16":
        yield _t("bf16_prefill", "prefill_tps", ">= float32 prefill", f"{pre / pre32:.2f}x", pre >= pre32)

    first, last = m("ttft_first_s"), m("ttft_last_s")
    if first and last:
        yield _t("turn_reuse", "ttft_last_s", "<= 1.2x turn 1", f"{last / first:.2f}x", last <= 1.2 * first)

    batch, seq = m("batch_tps"), m("sequential_tps")
    if batch and seq:
        yield _t("batch_3x", "batch_tps", ">= 3x sequential", f"{batch / seq:.2f}x", batch >= 3 * seq)

    load = m("adapter_load_ms")
    if load:
        yield _t("adapter_load", "adapter_load_ms", "< 100 ms", f"{load:.0f} ms", load < 100)
    none, unmerged, merged = m("adapter_none_tps"), m("adapter_unmerged_tps"), m("adapter_merged_tps")
    if none and unmerged:
        slower = 1 - unmerged / none
        yield _t("adapter_unmerged", "adapter_unmerged_tps", "<= 15% slower than none", f"{slower:+.0%}", slower <= 0.15)
    if none and merged:
        slower = 1 - merged / none
        yield _t("adapter_merged", "adapter_merged_tps", "no slower than none (3% noise)", f"{slower:+.0%}",
                 slower <= MERGED_NOISE)  # fmt: skip

    start, torch_s = m("start_s"), (report.get("reference", {}).get("import_torch_s") or {}).get("median")
    if start and torch_s and dtype in ("float32", "bfloat16") and quantize in (None, "none", "int4"):
        yield _t("start", "start_s", f"<= import torch + {START_ABOVE_TORCH_S} s", f"+{start - torch_s:.2f} s",
                 start <= torch_s + START_ABOVE_TORCH_S)  # fmt: skip
    rss, llama_rss = m("peak_rss_mb"), m("peak_rss_mb", "llama.cpp")
    if rss and llama_rss and quantize == "int4":
        yield _t("int4_rss", "peak_rss_mb", f"<= {INT4_RSS}x llama.cpp", f"{rss / llama_rss:.2f}x",
                 rss <= INT4_RSS * llama_rss)  # fmt: skip

    for kind in ("sft", "dpo"):  # LoRA training (--only train), chatcli's trainer against transformers + PEFT
        tr, tf_tr = m(f"train_{kind}_tps"), m(f"train_{kind}_tps", "transformers")
        if tr and tf_tr:
            yield _t(f"train_{kind}", f"train_{kind}_tps", ">= 1.5x transformers + PEFT", f"{tr / tf_tr:.2f}x",
                     tr >= 1.5 * tf_tr)  # fmt: skip
