"""Issue 8's targets, checked against one report: which ones this run meets.

Each target reads medians of the same run (so a noisy machine moves both sides of a
comparison alike) and yields ``{"id", "figure", "rule", "value", "met"}``; the table
prints ``✓``/``✗`` with the value beside the figure's ratio. A target whose inputs
were not measured in this run (no baseline, a group left out) is not listed.
"""

from __future__ import annotations

from collections.abc import Iterator

MERGED_NOISE = 0.03  # "merged no slower": medians within 3% count as equal on a shared machine


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

    dec, tf_dec = m("decode_tps"), m("decode_tps", "transformers")
    if dec and tf_dec:
        if quantize == "int8" and dtype == "float32":
            yield _t("int8_decode", "decode_tps", "int8 decode >= 3x transformers float32", f"{dec / tf_dec:.2f}x", dec >= 3 * tf_dec)
        elif dtype == "bfloat16":
            yield _t("bf16_decode", "decode_tps", ">= 1.5x transformers bfloat16", f"{dec / tf_dec:.2f}x", dec >= 1.5 * tf_dec)
        elif dtype == "float32":
            yield _t("decode_2x", "decode_tps", ">= 2x transformers", f"{dec / tf_dec:.2f}x", dec >= 2 * tf_dec)
    floor = report.get("floor") or {}
    if floor.get("decode_share") is not None:
        share = floor["decode_share"]
        yield _t("decode_floor", "decode_tps", ">= 70% of the bandwidth floor", f"{share:.0%}", share >= 0.70)

    pre, tf_pre = m("prefill_tps"), m("prefill_tps", "transformers")
    if pre and tf_pre:
        yield _t("prefill_1x", "prefill_tps", ">= transformers", f"{pre / tf_pre:.2f}x", pre >= tf_pre)
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
    if start and torch_s:
        yield _t("start", "start_s", "<= import torch + 1.5 s", f"+{start - torch_s:.2f} s", start <= torch_s + 1.5)
