"""``/score`` in the chat: the reward of each answer of the current conversation.

Forms::

    /score              every answer on the active branch, and the siblings of the last one
    /score NAME         the same with the reward model NAME (when several are loaded)
    /score load DIR [NAME]   load a reward model ('chatcli finetune reward' output), off for answers

Each answer is scored in its own context (the messages before it), so rewards of
sibling answers to one question compare directly: higher is what the reward model
prefers. The scoring itself is :class:`chatcli_finetune.reward.RewardScorer`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from chatcli.errors import UsageError
from chatcli_finetune.reward import RewardScorer, load_reward

USAGE = "/score [NAME] | /score load DIR [NAME]"


@dataclass(frozen=True)
class Scored:
    turn: int  # 1-based assistant turn on the active branch
    sibling: int  # 1-based position among the answers to the same message
    siblings: int
    active: bool  # on the active branch
    text: str
    reward: float


def conversation_rewards(scorer: RewardScorer, conv) -> list[Scored]:
    """Rewards of the answers on the active branch; for the last one, of all its siblings too."""
    path = conv.path()
    answers = [n for n in path if n.role == "assistant" and n.content.strip()]
    if not answers:
        raise UsageError("no answer to score yet: chat first, then /score")
    rows: list[Scored] = []
    for turn, node in enumerate(answers, 1):
        sibs, pos = conv.siblings(node.id)
        group = [s for s in sibs if s.role == "assistant" and s.content.strip()] if node is answers[-1] else [node]
        # Siblings share the context before them: one prompt, one batch.
        rewards = scorer.score(conv.messages(before=node), [s.content for s in group])
        for s, r in zip(group, rewards):
            k = next(i for i, x in enumerate(sibs) if x.id == s.id)
            rows.append(Scored(turn, k + 1, len(sibs), s.id == node.id, s.content, r))
    return rows


def rewards_table(rows: list[Scored], name: str) -> Table:
    table = Table(title=f"rewards by {name} (higher = preferred)", title_justify="left", box=None, pad_edge=False)
    table.add_column("turn", justify="right", style="dim")
    table.add_column("answer")
    table.add_column("reward", justify="right")
    last = rows[-1].turn
    best = max((r.reward for r in rows if r.turn == last), default=None)
    for r in rows:
        label = str(r.turn) + (f" ({r.sibling}/{r.siblings})" if r.siblings > 1 else "")
        snippet = " ".join(r.text.split())
        snippet = snippet[:70] + ("…" if len(snippet) > 70 else "")
        mark = "● " if r.active else "  "
        style = "bold" if r.turn == last and r.reward == best and r.siblings > 1 else ""
        table.add_row(label, Text(mark + snippet), Text(f"{r.reward:+.3f}", style=style))
    return table


def score_command(ctx, args: str) -> None:
    try:
        words = shlex.split(args or "")
    except ValueError as e:
        raise UsageError(f"/score: {e}; usage: {USAGE}") from None
    engine = ctx.core.engine
    if words and words[0] == "load":
        if len(words) not in (2, 3):
            raise UsageError(f"usage: {USAGE}")
        info = load_reward(engine, words[1], name=words[2] if len(words) == 3 else None)
        ctx.adapters_changed()
        ctx.say(f"loaded reward model {info.name} ({info.params:,} parameters), off for answers: "
                "/score scores this conversation, /rank shows its candidates best first", "result")  # fmt: skip
        return
    if len(words) > 1:
        raise UsageError(f"usage: {USAGE}")
    scorer = RewardScorer(engine, words[0] if words else None)
    ctx.say(rewards_table(conversation_rewards(scorer, ctx.core.conv), scorer.name), "result")
