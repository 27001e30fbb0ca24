"""How often a reward model agrees with the person's preference pairs.

A pair agrees when the model's reward of the chosen answer is strictly above
the rejected one's (what the training loss pushes for, and what training logs
as ``accuracy``). Pairs are the ``--pairs all`` pairs of each set's latest
ranking: what ``chatcli rank export`` and ``--from-rankings`` train on.

:func:`ranking_agreement` is the one-ranking view the ranking screen shows after
a submit (no torch). :func:`reward_agreement` is ``chatcli rank stats --reward
DIR``: it loads the base model and the reward adapter in DIR, scores every
candidate of every ranked set, and splits the pairs by what DIR's
``data_split.json`` recorded (:mod:`chatcli_finetune.outdir`): ``trained`` (in
the run's training share), ``held_out`` (its validation share) and ``unseen``
(not in the run's data: ranked after it, or skipped as too long). A run that
recorded no split gets the accuracy over all pairs only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from chatcli.errors import UsageError
from chatcli_rank.export import _prompt, pairs
from chatcli_rank.ranking import Ranking

BUCKETS = ("trained", "held_out", "unseen")


def ranking_agreement(ranking: Ranking, rewards: Sequence[float | None]) -> tuple[int, int, list[tuple[int, int]]]:
    """(agreeing pairs, scored pairs, the (chosen, rejected) pairs the rewards order the other way)."""
    agree, total, against = 0, 0, []
    for w, l in pairs(ranking, "all"):
        if rewards[w] is None or rewards[l] is None:
            continue
        total += 1
        if rewards[w] > rewards[l]:
            agree += 1
        else:
            against.append((w, l))
    return agree, total, against


def _tally(agree: int, total: int) -> dict:
    return {"pairs": total, "agree": agree, "accuracy": agree / total if total else None}


def base_model(reward_dir: Path) -> str:
    """The base model a reward run trained on: its training_args.json, else its adapter_config.json."""
    for name, key in (("training_args.json", "model"), ("adapter_config.json", "base_model_name_or_path")):
        path = reward_dir / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get(key)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, str) and value:
                return value
    raise UsageError(f"{reward_dir} does not say which base model it was trained on: add --model NAME")


def reward_agreement(store, reward_dir: Path | str, *, model: str | None = None, dtype: str = "float32",
                     device: str = "auto", progress: Callable | None = None) -> dict:  # fmt: skip
    """Load the reward model in ``reward_dir`` and check it against every ranked pair in ``store``."""
    from chatcli.engine.loader import load_engine
    from chatcli_finetune.outdir import pair_key, read_split
    from chatcli_finetune.reward import RewardScorer, load_reward

    reward_dir = Path(reward_dir).expanduser()
    if not reward_dir.is_dir():
        raise UsageError(f"no reward model at {reward_dir}: give the --out folder of 'chatcli finetune reward'")
    split = read_split(reward_dir)
    base = model or base_model(reward_dir)
    engine = load_engine(base, dtype=dtype, device=device, progress=progress)
    info = load_reward(engine, reward_dir)
    scorer = RewardScorer(engine, info.name)
    trained = set(split["train_pairs"]) if split else set()
    held_out = set(split["val_pairs"]) if split else set()

    counts = {b: [0, 0] for b in ("all", *BUCKETS)}
    disagreements: list[dict] = []
    unscorable = 0
    for item in store.items():
        if item.ranking.status != "ranked" or not pairs(item.ranking, "all"):
            continue
        prompt = _prompt(item.messages)
        texts = [c.text for c in item.candidates]
        try:
            rewards = scorer.score(prompt, texts)
        except UsageError:  # e.g. a conversation the template cannot render
            unscorable += 1
            continue
        for w, l in pairs(item.ranking, "all"):
            key = pair_key(prompt, texts[w], texts[l])
            bucket = "trained" if key in trained else "held_out" if key in held_out else "unseen"
            ok = rewards[w] > rewards[l]
            for b in ("all", bucket):
                counts[b][0] += ok
                counts[b][1] += 1
            if not ok:
                disagreements.append({
                    "set_id": item.set_id, "question": prompt[-1]["content"] if prompt else "", "chosen": texts[w],
                    "rejected": texts[l], "reward_chosen": rewards[w], "reward_rejected": rewards[l], "split": bucket,
                })  # fmt: skip
    out = {
        "reward_dir": str(reward_dir), "reward_model": info.name, "base_model": base, "split_recorded": split is not None,
        "all": _tally(*counts["all"]), "unscorable_rankings": unscorable, "disagreements": disagreements,
    }  # fmt: skip
    for b in BUCKETS:
        out[b] = _tally(*counts[b]) if split is not None else None
    return out


def render_agreement(console, data: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    def line(name: str, t: dict | None) -> None:
        if t is None:
            return
        acc = "-" if t["accuracy"] is None else f"{100 * t['accuracy']:.1f}%"
        console.print(f"  {name:<10} {acc:>7}  ({t['agree']} of {t['pairs']} pairs)", highlight=False)

    console.print(Text(f"reward model {data['reward_model']} ({data['reward_dir']}) agrees with your pairs:"))
    line("all", data["all"])
    for b in BUCKETS:
        line(b.replace("_", "-"), data[b])
    if not data["split_recorded"]:
        console.print("  (the run recorded no data split, so held-out pairs cannot be told apart)", highlight=False)
    if data["unscorable_rankings"]:
        console.print(f"  {data['unscorable_rankings']} ranking(s) could not be scored", highlight=False)
    worst = sorted(data["disagreements"], key=lambda d: d["reward_chosen"] - d["reward_rejected"])[:10]
    if worst:
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", title="where it disagrees most")
        for col in ("set", "question", "you chose", "over", "reward", "split"):
            table.add_column(col)
        for d in worst:
            table.add_row(str(d["set_id"]), Text(d["question"][:28]), Text(d["chosen"][:30]), Text(d["rejected"][:30]),
                          f"{d['reward_chosen']:+.2f} vs {d['reward_rejected']:+.2f}", d["split"])  # fmt: skip
        console.print(table)
