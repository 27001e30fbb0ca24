"""The sweep as a PNG: each rate figure against parameters, one line per system and variant.

One panel per figure the sweep measured in tokens/s (prefill, decode, training where
measured), both axes logarithmic so a rate falling as 1/size is a straight line. The
decode panel also draws each chatcli variant's bandwidth floor, dashed in the same
colour: the gap between a line and its floor is the per-token overhead. Drawn with
matplotlib's object API on an Agg canvas (no pyplot, no global state, no display).
"""

from __future__ import annotations

import os
from pathlib import Path

from chatcli.bench.shapes.scaling_table import figure_ids, params_text
from chatcli.paths import fsync_dir, fsync_file

_COLOURS = {"float32": "tab:blue", "bfloat16": "tab:orange", "int8": "tab:green", "int4": "tab:red"}
_STYLES = {"chatcli": "-", "transformers": ":", "transformers-loop": "-."}
_MARKERS = {"chatcli": "o", "transformers": "s", "transformers-loop": "^"}


def write_plot(result: dict, path: Path) -> Path:
    """Draw ``result`` (a sweep report) into the PNG ``path``; return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    rows = result["rows"]
    ids = [f for f in figure_ids(result) if _unit(rows, f) == "tok/s"]
    fig = Figure(figsize=(5.5 * max(1, len(ids)), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(ids)), squeeze=False)[0]
    for ax, fid in zip(axes, ids):
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        floors: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            got = r["figures"].get(fid, {})
            if "median" in got:
                series.setdefault((r["system"], r["variant"]), []).append((r["params"] / 1e9, got["median"]))
            if fid == "decode_tps" and r.get("floor_tps"):
                floors.setdefault(r["variant"], []).append((r["params"] / 1e9, r["floor_tps"]))
        for (system, variant), pts in series.items():
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, _STYLES.get(system, "--"), marker=_MARKERS.get(system, "x"),
                    color=_COLOURS.get(variant, "tab:gray"), label=f"{system} {variant}")  # fmt: skip
        for variant, pts in floors.items():
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, "--", marker="_", markersize=14, linewidth=0.8, color=_COLOURS.get(variant, "tab:gray"),
                    alpha=0.6, label=f"floor {variant}")  # fmt: skip
        label = next(r["figures"][fid]["label"] for r in rows if fid in r["figures"])
        ax.set_title(label, fontsize=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({(r["params"], r["shape"]) for r in rows})
        ax.set_xticks([n / 1e9 for n, _ in sizes], [f"{name}\n{params_text(n)}" for n, name in sizes], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("model and parameters (log scale)")
        ax.set_ylabel("tokens/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if not ids:
        axes[0].text(0.5, 0.5, "no rate was measured", ha="center", va="center")
    s = result["settings"]
    fig.suptitle(f"chatcli bench --shape: cost vs model size ({result['machine']['cpu']}, "
                 f"threads {s['threads'] or 'default'})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:  # whole or not at all, as every file chatcli writes
        fig.savefig(tmp, format="png")
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _unit(rows: list[dict], fid: str) -> str:
    return next(r["figures"][fid]["unit"] for r in rows if fid in r["figures"])
