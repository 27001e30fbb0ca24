"""The printed form of a bench report: a header, one row per figure, the floor and the targets.

Each cell is ``median [min-max]``; the ratio columns (> 1: chatcli better) carry the
✓/✗ of the targets that belong to the row.
"""

from __future__ import annotations


def num(x: float) -> str:
    """Three significant figures or so, without exponent noise."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(result: dict | None) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "failed"
    if "skipped" in result:
        return result["skipped"]
    return f"{num(result['median'])} [{num(result['min'])}-{num(result['max'])}]"


def header(report: dict) -> list[str]:
    s, mach = report["settings"], report["machine"]
    threads = s["threads"] or "default"
    quant = f", quantize {s['quantize']}" if s.get("quantize") else ""
    isa = ", ".join(mach["isa"]) or "no AVX2"
    return [
        f"chatcli bench: {s['model']} ({s['path']}), {s['dtype']}{quant}, threads {threads}",
        f"machine: {mach['cpu']}, {mach['cores']} cores ({isa}), torch {mach['versions'].get('torch')}, "
        f"python {mach['python']}",
        f"each cell: median [min-max] of {s['repeats']} runs after a warm-up, each figure group in its own "
        "process; ratio > 1: chatcli better" + (" (quick mode)" if s.get("quick") else ""),
    ]


def render(report: dict) -> str:
    systems = report["systems"]
    baselines = systems[1:]
    marks: dict[str, list[str]] = {}
    for t in report["targets"]:
        marks.setdefault(t["figure"], []).append(f"{'✓' if t['met'] else '✗'} {t['value']} ({t['rule']})")
    rows = report["figures"]
    table = [[r["label"]] + [cell(r["results"].get(s)) for s in systems]
             + [num(r["ratio"][b]) + "x" if b in r["ratio"] else "-" for b in baselines] for r in rows]  # fmt: skip
    head = ["figure"] + systems + [f"vs {b}" for b in baselines]
    widths = [max(len(x) for x in col) for col in zip(head, *table)]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    lines = header(report) + ["", line(head) + "  target"]
    for row, cells in zip(rows, table):
        mark = marks.get(row["id"])
        lines.append(line(cells) + ("  " + "; ".join(mark) if mark else ""))
    lines += _reference(report)
    failed = [(row["label"], s, r["error"]) for row in report["figures"] for s, r in row["results"].items() if "error" in r]
    lines += [f"failed: {label} ({system}): {why}" for label, system, why in failed]
    lines += [f"note: {n}" for n in dict.fromkeys(report["notes"])]
    met = sum(t["met"] for t in report["targets"])
    if report["targets"]:
        lines.append(f"targets met: {met} of {len(report['targets'])}")
    return "\n".join(lines)


def _reference(report: dict) -> list[str]:
    out = [""]
    ref = report["reference"]
    if "import_torch_s" in ref:
        out.append(f"reference: python -c 'import torch' {cell(ref['import_torch_s'])} s")
    if "read_gb_s" in ref:
        out.append(f"reference: single-stream read bandwidth (1 thread, tensor sum) {cell(ref['read_gb_s'])} GB/s")
    f = report.get("floor")
    if f:
        share = f" -> chatcli decodes at {f['decode_share']:.0%} of it" if "decode_share" in f else ""
        out.append(
            f"bandwidth floor: {f['weight_bytes'] / 1e6:.1f} MB weights + {f['kv_bytes_per_position'] * f['mean_context'] / 1e6:.2f} MB "
            f"KV cache (mean context {f['mean_context']:.0f}) = {f['bytes_per_token'] / 1e6:.1f} MB read per token; "
            f"at {f['read_gb_s']:.1f} GB/s: {f['tokens_per_s']:.1f} tok/s{share}"
        )
    return out if len(out) > 1 else []
