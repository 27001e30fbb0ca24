"""``chatcli rank stats``: what the ranking store holds, counted the way exports see it.

Rankings count the latest judgement of each candidate set (as exports do);
``submissions`` counts every submit, re-rankings included. Pairs are the
``--pairs all`` preference pairs; ties count tiers holding more than one answer.
``scored_sets`` counts the judged sets whose candidates a reward model scored
(best-of-N ``/rank``), ``reward_models`` how many of them each reward model scored.

The person's consistency (:mod:`chatcli_rank.consistency`, every submission):
``contradictions`` lists pairs of texts ranked both ways (with both sides'
ranking ids and dates), ``repeated_prompts`` the Kendall's τ between every two
rankings of one prompt, ``mean_tau`` their mean. ``chatcli rank stats --reward DIR``
adds ``reward_agreement`` (:mod:`chatcli_rank.reward_agreement`).
"""

from __future__ import annotations

from collections import Counter

from chatcli_rank.consistency import contradictions, judgements, mean_tau, repeated_prompts
from chatcli_rank.export import pairs
from chatcli_rank.store import RankStore


def compute_stats(store: RankStore) -> dict:
    raw = store.counts()
    items = store.items(include_skipped=True)
    status = Counter(i.ranking.status for i in items)
    judged = [i for i in items if i.ranking.status != "skipped"]
    per_model: dict[str, dict] = {}
    reward_models = Counter(i.reward_model for i in judged if i.reward_model)
    for i in items:
        name = (i.model or {}).get("name") or "unknown"
        row = per_model.setdefault(name, {"rankings": 0, "pairs": 0, "skipped": 0})
        if i.ranking.status == "skipped":
            row["skipped"] += 1
        else:
            row["rankings"] += 1
            row["pairs"] += len(pairs(i.ranking, "all"))
    js = judgements(store.submissions())
    repeated = repeated_prompts(js)
    return {
        "store": str(store.path),
        "prompts": raw["prompts"],
        "candidate_sets": raw["candidate_sets"],
        "candidates": raw["candidates"],
        "rankings": len(judged),
        "ranked": status.get("ranked", 0),
        "all_bad": status.get("all_bad", 0),
        "skipped": status.get("skipped", 0),
        "unranked_sets": raw["candidate_sets"] - len(items),
        "submissions": raw["submissions"],
        "pairs": sum(len(pairs(i.ranking, "all")) for i in judged),
        "ties": sum(i.ranking.ties for i in judged if i.ranking.status == "ranked"),
        "with_note": sum(1 for i in judged if i.ranking.note),
        "scored_sets": sum(reward_models.values()),
        "reward_models": dict(sorted(reward_models.items())),
        "per_model": per_model,
        "contradictions": contradictions(js),
        "repeated_prompts": repeated,
        "mean_tau": mean_tau(repeated),
    }


def render_stats(data: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    summary.add_column(style="bold cyan")
    summary.add_column(justify="right")
    for key in ("prompts", "candidate_sets", "candidates", "rankings", "ranked", "all_bad", "skipped",
                "unranked_sets", "pairs", "ties", "with_note", "scored_sets", "submissions"):  # fmt: skip
        summary.add_row(key.replace("_", " "), str(data[key]))
    console.print(f"[dim]{data['store']}[/dim]")
    console.print(summary)
    if data["reward_models"]:
        console.print("scored by " + ", ".join(f"{name} ({n})" for name, n in data["reward_models"].items()))
    if data["per_model"]:
        per = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        for col in ("model", "rankings", "pairs", "skipped"):
            per.add_column(col, justify="left" if col == "model" else "right")
        for name, row in sorted(data["per_model"].items()):
            per.add_row(name, str(row["rankings"]), str(row["pairs"]), str(row["skipped"]))
        console.print(per)
    _render_consistency(console, data)
    if data.get("reward_agreement"):
        from chatcli_rank.reward_agreement import render_agreement

        render_agreement(console, data["reward_agreement"])


def _short(text: str, width: int = 36):
    """A person's text as a Rich Text (never read as markup), cut to ``width``."""
    from rich.text import Text

    return Text(text if len(text) <= width else text[: width - 1] + "…")


def _when(ref: dict) -> str:
    return f"#{ref['ranking_id']} ({ref['date'][:16].replace('T', ' ')})"


def _render_consistency(console, data: dict) -> None:
    from rich.table import Table

    found = data["contradictions"]
    live = sum(1 for c in found if c["in_export"])
    console.print(f"contradictions: {len(found)}" + (f" ({live} in the export: its pairs pull both ways)" if live else ""),
                  highlight=False)  # fmt: skip
    if found:
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        for col in ("question", "A", "B", "A above B in", "B above A in"):
            table.add_column(col)
        for c in found:
            b = _short("(the same text)" if c["same_text"] else c["b"])
            table.add_row(_short(c["question"], 28), _short(c["a"]), b, ", ".join(_when(r) for r in c["a_over_b"]),
                          ", ".join(_when(r) for r in c["b_over_a"]))  # fmt: skip
        console.print(table)
    rows = data["repeated_prompts"]
    tau = data["mean_tau"]
    console.print(f"repeated prompts: {len(rows)} pair(s) of rankings" + (f", mean Kendall's τ {tau:+.2f}" if tau is not None else ""),
                  highlight=False)  # fmt: skip
    if rows:
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        for col in ("question", "first", "second", "shared texts", "τ"):
            table.add_column(col, justify="right" if col in ("shared texts", "τ") else "left")
        for r in rows:
            table.add_row(_short(r["question"], 28), _when(r["first"]), _when(r["second"]), str(r["shared_texts"]),
                          "-" if r["tau"] is None else f"{r['tau']:+.2f}")  # fmt: skip
        console.print(table)
