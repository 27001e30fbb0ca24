"""``/best [N] [--reward DIR|rule:...|NAME]``: rejection sampling in the chat — N answers, graded, the best kept.

The article's grader at inference time, without any training: the last user message
is answered N times in one batch (the batched candidates ``/rank`` draws, at its
temperature), every answer is scored by the grader, the scores are shown, and the
best-scored answer becomes the reply (a new sibling of any answer already there, with
its steps, so its probabilities can be inspected). The grader is ``--reward`` (a reward
model folder, loaded and kept for later, a rule, or a plugin grader) or, by default,
the reward model loaded last (``/score load DIR``); with neither, one line says how to
get one. Where the front end owns its widgets on one thread (the TUI), the answers are
made on a background thread while the status bar shows it; elsewhere at once.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import replace

from rich.table import Table
from rich.text import Text

from chatcli.chat.frontend import after_redraw, on_ui_thread
from chatcli.errors import ChatcliError, UsageError
from chatcli_finetune.rl.graders import Grader

USAGE = "/best [N] [--reward DIR|rule:max-words=N|rule:contains=WORD|rule:regex=PATTERN|NAME]"
DEFAULT_N = 4


def parse_best_args(text: str) -> tuple[int, str | None]:
    from chatcli_rank.candidates import MAX_N, MIN_N

    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise UsageError(f"/best: {e}; usage: {USAGE}") from None
    n, reward = None, None
    k = 0
    while k < len(words):
        w = words[k]
        if w in ("--reward", "-r") or w.startswith("--reward="):
            if "=" in w:
                reward = w.split("=", 1)[1]
            elif k + 1 < len(words):
                k += 1
                reward = words[k]
            else:
                raise UsageError(f"/best: --reward needs a grader; usage: {USAGE}")
        elif n is None and w.lstrip("-").isdigit():
            n = int(w)
        else:
            raise UsageError(f"/best: unexpected {w!r}; usage: {USAGE}")
        k += 1
    n = DEFAULT_N if n is None else n
    if not MIN_N <= n <= MAX_N:
        raise UsageError(f"/best: N must be between {MIN_N} and {MAX_N}, not {n}; usage: {USAGE}")
    return n, reward


def choose_grader(engine, text: str | None) -> Grader:
    """``--reward`` as given, or the reward model loaded last; one line when there is none."""
    from chatcli_finetune.reward import RewardScorer, reward_names
    from chatcli_rank.candidates import adapter_manager

    manager = adapter_manager(engine)
    loaded = reward_names(manager) if manager is not None else []
    if text is None:
        if not loaded:
            raise UsageError("/best needs a grader: load a reward model (/score load DIR, from 'chatcli finetune reward') "
                             "or give one: /best 4 --reward rule:max-words=30")  # fmt: skip
        return Grader(f"reward model {loaded[-1]}", scorer=RewardScorer(engine, loaded[-1]))
    if text in loaded:
        return Grader(f"reward model {text}", scorer=RewardScorer(engine, text))
    from chatcli_finetune.rl.graders import build_grader, installed_plugin_graders, parse_grader

    return build_grader(parse_grader(text, installed_plugin_graders), engine)


def scores_table(cands, scores: list[float], best: int, grader: str) -> Table:
    table = Table(title=f"{len(cands)} answers graded by {grader}: the best is kept", title_justify="left",
                  box=None, pad_edge=False)  # fmt: skip
    table.add_column("#", justify="right", style="dim")
    table.add_column("answer")
    table.add_column("score", justify="right")
    for i, (c, s) in enumerate(zip(cands, scores)):
        flat = " ".join(c.text.split())
        snippet = flat[:80] + ("…" if len(flat) > 80 else "")
        style = "bold green" if i == best else ""
        table.add_row(str(i + 1), Text(("★ " if i == best else "  ") + snippet, style=style), Text(f"{s:+.3f}", style=style))
    return table


def best_command(ctx, text: str) -> None:
    from chatcli_rank.command import rank_prompt

    n, reward = parse_best_args(text)
    engine = ctx.core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try /best again in a moment")
    if not any(node.role == "user" for node in ctx.core.conv.path()):
        raise UsageError("/best needs a question to answer: send a message first, then /best")
    messages, parent_id = rank_prompt(ctx.core.conv)
    grader = choose_grader(engine, reward)
    threaded = ctx.frontend.ui_thread
    if threaded and ctx.frontend.live_status:
        ctx.set_activity(f"best of {n}")

    def work() -> None:
        from chatcli_rank.candidates import generate_candidates

        try:
            cands = generate_candidates(engine, messages, ctx.core.conv.params, n)
            scores = grader.score(messages, [c.text for c in cands])
        except Exception as e:
            if not threaded:
                raise
            message = e.message if isinstance(e, ChatcliError) else f"/best failed ({type(e).__name__}: {e})"
            _to_ui(ctx, _failed, ctx, message)
            return
        if threaded:
            _to_ui(ctx, _keep_best, ctx, messages, parent_id, cands, scores, grader.name)
        else:
            _keep_best(ctx, messages, parent_id, cands, scores, grader.name)

    if not threaded:
        work()
        return
    threading.Thread(target=work, name="chatcli-best", daemon=True).start()


def _to_ui(ctx, fn, *args) -> None:
    try:
        on_ui_thread(ctx, fn, *args)
    except RuntimeError:  # the app closed meanwhile
        pass


def _failed(ctx, message: str) -> None:
    if ctx.frontend.live_status:
        ctx.set_activity(None)
    ctx.say(message, "error")


def _keep_best(ctx, messages, parent_id: int, cands, scores: list[float], grader: str) -> None:
    """Make the best-scored answer the reply to ``parent_id`` and show every score (UI thread)."""
    if ctx.frontend.ui_thread and ctx.frontend.live_status:
        ctx.set_activity(None)
    core = ctx.core
    best = max(range(len(cands)), key=lambda i: scores[i])
    table = scores_table(cands, scores, best, grader)
    if parent_id not in core.conv.nodes:
        ctx.say(table, "result")
        ctx.say("the conversation changed meanwhile, so no reply was added", "warning")
        return
    cand = cands[best]
    status = cand.finish_reason if cand.finish_reason in ("stop", "length", "cancelled") else "stop"
    node = core.conv.add("assistant", cand.text, parent=parent_id, status=status)
    node.steps = [replace(s, index=k, seq=0) for k, s in enumerate(cand.steps)]
    if not node.content.startswith(node.step_text):  # keep the session invariant
        node.content = node.step_text
    node.meta.update(params=cand.params, model=core.engine.identity.name, completion_tokens=len(node.steps),
                     best_of={"n": len(cands), "candidate": best, "grader": grader, "scores": scores})  # fmt: skip
    core.save_added(node)
    core.announce("message_added", message=node, conversation=core.conv)
    ctx.conversation_changed()
    after_redraw(ctx, ctx.say, table, "result")  # the redraw clears notes
