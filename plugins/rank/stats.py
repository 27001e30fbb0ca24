"""``chatcli rank stats``: what the ranking store holds, counted the way exports see it.

Rankings count the latest judgement of each candidate set (as exports do);
``submissions`` counts every submit, re-rankings included. Pairs are the
``--pairs all`` preference pairs; ties count tiers holding more than one answer.
``scored_sets`` counts the judged sets whose candidates a reward model scored
(best-of-N ``/rank``), ``reward_models`` how many of them each reward model scored.
"""

from __future__ import annotations

from collections import Counter

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
