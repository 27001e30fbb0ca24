"""The sweep as a markdown table: one row per shape × system × variant, cost beside model size.

Columns: the shape and its parameters, the system and variant, model load, one column
per measured figure (prefill, decode, training where measured), the bytes a chatcli
decode step reads and the bandwidth floor they allow, and peak RSS. A chatcli cell
carries its ratio to each baseline at the same ``--dtype`` (> 1: chatcli better), so
the table reads without a second one.
"""

from __future__ import annotations

from chatcli.bench.report import num

ABBREV = {"transformers": "tf", "transformers-loop": "loop", "llama.cpp": "llama.cpp"}


def figure_ids(result: dict) -> list[str]:
    """Every figure any row measured, in the bench's order (first seen first)."""
    return list(dict.fromkeys(fid for r in result["rows"] for fid in r["figures"]))


def params_text(n: int) -> str:
    """0.49B, 1.54B; 205K for the test shapes."""
    return f"{n / 1e9:.2f}B" if n >= 10**7 else f"{n / 1e3:.0f}K"


def render_markdown(result: dict) -> str:
    rows, s = result["rows"], result["settings"]
    ids = figure_ids(result)
    labels = {fid: next(r["figures"][fid]["label"] for r in rows if fid in r["figures"]) for fid in ids}
    baselines = s["baselines"]
    head = ["shape", "params", "system", "variant", "load (s)", *(labels[f] for f in ids),
            "MB read / decoded token", "decode floor tok/s (share)", "peak RSS (MB)"]  # fmt: skip
    lines = [_header(result), "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
    for r in rows:
        cells = [r["shape"], params_text(r["params"]), r["system"], r["variant"],
                 num(r["load_s"]) if r["load_s"] else "-"]  # fmt: skip
        cells += [_cell(r, fid, baselines) for fid in ids]
        cells.append(num(r["bytes_per_token"] / 1e6) if r.get("bytes_per_token") else "-")
        if r.get("floor_tps"):
            decode = r["figures"].get("decode_tps", {})
            share = f" ({decode['median'] / r['floor_tps']:.0%})" if "median" in decode else ""
            cells.append(num(r["floor_tps"]) + share)
        else:
            cells.append("-")
        cells.append(f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _legend(baselines)]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def _cell(row: dict, fid: str, baselines: list[str]) -> str:
    got = row["figures"].get(fid)
    if not got:
        return "-"
    if "error" in got:
        return "failed"
    text = num(got["median"])
    ratios = [f"{row['ratio'][b][fid]:.2f}x {ABBREV.get(b, b)}" for b in baselines if fid in row["ratio"].get(b, {})]
    return f"{text} ({', '.join(ratios)})" if ratios else text


def _header(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    sizes = s["sizes"]
    bw = f"{result['read_gb_s']:.1f} GB/s" if result.get("read_gb_s") else "not measured"
    return (
        f"chatcli bench --shape {','.join(s['shapes'])}: random weights, real shapes; {m['cpu']}, {m['cores']} cores, "
        f"threads {s['threads'] or 'default'}, torch {m['versions'].get('torch')}; {sizes['prompt_tokens']}-token "
        f"prompt, {sizes['decode_tokens']} decoded tokens, median of {s['repeats']} run(s) after a warm-up; "
        f"single-stream read {bw}; measured in {result.get('wall_s', 0) / 60:.1f} min"
        + (" (quick mode: sizes too small to mean anything)" if s.get("quick") else "")
    )


def _legend(baselines: list[str]) -> str:
    if not baselines:
        return "chatcli only (no baseline asked). Decode floor: read bandwidth / bytes read per token."
    names = ", ".join(f"{ABBREV.get(b, b)} = {b}" for b in baselines)
    return (f"chatcli cells: median (chatcli / baseline at the same --dtype, > 1 chatcli better; int8 and int4 run "
            f"at --dtype float32); {names}. Decode floor: read bandwidth / bytes read per token.")  # fmt: skip
