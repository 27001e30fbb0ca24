"""``/rank [N] [--temperature T[,T...]] [--lora-mix] [--no-existing]`` in the chat.

Flow: check the arguments and that there is a user message to answer (one-line
errors, nothing changes), open the ranking store, push a :class:`RankScreen`
that generates the candidates in one batch (stored as soon as they exist, so a
crash during ranking loses no generated text), and on submit store the ranking
and make the best answer the assistant's reply: a new child of the last user
message (a sibling of any answer already there), with its steps, so the
probability view works on it and the chat goes on from it. The conversation's own
reply to that message, when it has one, is one of the N candidates (the last,
marked "existing reply"; ``--no-existing`` samples all N): ranking it best keeps it
as the reply, no copy is added. An "all bad"
ranking is stored and leaves the conversation as it was. With a reward model
loaded (``/score load``), the candidates are shown best first by its reward,
and each candidate's score and the reward model's name are stored with the set.

Front ends that declare ``screens`` (``ctx.frontend``, a :class:`chatcli.chat.frontend.FrontEnd`)
get the screen; others get a one-line error pointing at ``chatcli rank``. The adopted
answer is announced to the chat core's listeners (the ``message_added`` plugin hook).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, replace
from typing import Any

from chatcli.chat.frontend import after_redraw, on_ui_thread
from chatcli.errors import ChatcliError, UsageError
from chatcli_rank.candidates import DEFAULT_N, DEFAULT_TEMPERATURE, Candidate, adapter_manager, check_n, generate_candidates, plan

USAGE = "/rank [N] [--temperature T[,T...]] [--lora-mix] [--no-existing]"


@dataclass(frozen=True)
class RankArgs:
    n: int = DEFAULT_N
    temperatures: tuple[float, ...] = (DEFAULT_TEMPERATURE,)
    lora_mix: bool = False
    existing: bool = True  # offer the conversation's own reply as one of the N


def parse_rank_args(text: str) -> RankArgs:
    """Parse the words after ``/rank``; raises UsageError with the usage line."""
    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise UsageError(f"/rank: {e}; usage: {USAGE}") from None
    n: int | None = None
    temps: tuple[float, ...] | None = None
    lora_mix = False
    existing = True
    k = 0
    while k < len(words):
        w = words[k]
        if w in ("--lora-mix", "--lora_mix"):
            lora_mix = True
        elif w in ("--no-existing", "--existing"):
            existing = w == "--existing"
        elif w in ("--temperature", "-t", "--temp") or w.startswith(("--temperature=", "--temp=")):
            if "=" in w:
                value = w.split("=", 1)[1]
            else:
                k += 1
                if k >= len(words):
                    raise UsageError(f"/rank: {w} needs a value; usage: {USAGE}")
                value = words[k]
            temps = parse_temperatures(value)
        elif w.startswith("-") and not w.lstrip("-").isdigit():
            raise UsageError(f"/rank: unknown option {w}; usage: {USAGE}")
        elif n is None:
            try:
                n = int(w)
            except ValueError:
                raise UsageError(f"/rank: N must be a whole number from 2 to 10, not {w!r}; usage: {USAGE}") from None
        else:
            raise UsageError(f"/rank: too many arguments ({w!r}); usage: {USAGE}")
        k += 1
    return RankArgs(check_n(DEFAULT_N if n is None else n), temps or (DEFAULT_TEMPERATURE,), lora_mix, existing)


def parse_temperatures(value: str) -> tuple[float, ...]:
    out = []
    for part in value.split(","):
        try:
            t = float(part)
        except ValueError:
            raise UsageError(f"/rank: temperature must be a number, not {part!r}") from None
        if not (0 < t <= 5):
            raise UsageError(f"/rank: temperature {t:g} is out of range: use a number above 0 (0 would give identical answers) up to 5")
        out.append(t)
    return tuple(out)


def rank_prompt(conv) -> tuple[list[dict], int]:
    """The conversation up to the last user message, and that message's id."""
    path = conv.path()
    last = max((k for k, node in enumerate(path) if node.role == "user"), default=None)
    if last is None:
        raise UsageError("/rank needs a question to answer: send a message first, then /rank")
    messages = [{"role": "system", "content": conv.system}] if conv.system else []
    messages += [{"role": node.role, "content": node.content} for node in path[: last + 1]]
    return messages, path[last].id


def existing_reply(conv) -> Candidate | None:
    """The conversation's own reply to its last user message as a candidate (``existing``), or
    None: no reply yet, an empty one, or one that failed. Its steps come along, so its mean
    probabilities show and adopting it needs no copy; a reply that stopped early or was cut
    at max_tokens keeps that finish reason (shown and exported as truncated)."""
    path = conv.path()
    last = max((k for k, node in enumerate(path) if node.role == "user"), default=None)
    if last is None or last + 1 >= len(path):
        return None
    node = path[last + 1]
    if node.role != "assistant" or not node.content.strip() or node.status not in ("stop", "length", "cancelled"):
        return None
    params = node.meta.get("params") if isinstance(node.meta.get("params"), dict) else {}
    seed = params.get("seed")
    steps = list(node.steps)
    return Candidate(
        index=0, text=node.content, seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
        params=dict(params), finish_reason=node.status, tokens=len(steps) or int(node.meta.get("completion_tokens") or 0),
        mean_prob=sum(s.prob for s in steps) / len(steps) if steps else None,
        mean_model_prob=sum(s.model_prob for s in steps) / len(steps) if steps else None,
        existing=True, steps=steps,
    )  # fmt: skip


def identity_json(engine: Any) -> dict:
    ident = getattr(engine, "identity", None)
    try:
        return asdict(ident) if ident is not None else {}
    except TypeError:
        return {"name": getattr(ident, "name", str(ident))}


class ChatRanking:
    """One ``/rank`` run: generates and stores candidates, then stores the ranking and adopts the best."""

    def __init__(self, ctx: Any, args: RankArgs, store) -> None:
        self.ctx = ctx
        self.core = ctx.core
        self.engine = self.core.engine
        self.args = args
        self.store = store
        self.messages, self.parent_id = rank_prompt(self.core.conv)
        self.existing = existing_reply(self.core.conv) if args.existing else None
        self.set_id: int | None = None

    def generate(self, progress, cancel) -> list[Candidate]:
        """Runs in the screen's worker thread; the chat shows it is busy ranking meanwhile."""
        self._activity("ranking")
        try:
            sampled = self.args.n - (self.existing is not None)  # the existing reply takes the last place
            cands = generate_candidates(
                self.engine, self.messages, self.core.conv.params, sampled,
                temperatures=self.args.temperatures, lora_mix=self.args.lora_mix, progress=progress, cancel=cancel,
            )
            if self.existing is not None:
                cands.append(replace(self.existing, index=len(cands)))
            if not cancel.is_set():
                cands, reward_model = presort_by_reward(self.engine, self.messages, cands)  # the model is busy here too
                conv_id = self.core.conv.id
                self.set_id = self.store.add_set(
                    self.messages, cands, model=identity_json(self.engine), source="chat",
                    source_ref=f"conversation {conv_id}" if conv_id is not None else None, reward_model=reward_model,
                )
        finally:
            self._activity(None)
        return cands

    def _activity(self, state: str | None) -> None:
        """The chat's status state (``ctx.set_activity``, on the UI thread), where the front end has one."""
        if not self.ctx.frontend.live_status:
            return
        try:
            on_ui_thread(self.ctx, self.ctx.set_activity, state)
        except RuntimeError:  # the app is gone (quit while generating)
            pass

    def done(self, outcome) -> None:
        """Runs on the UI thread when the screen closes."""
        ranking = outcome.ranking
        if ranking is None or self.set_id is None:
            self.ctx.say("ranking left without a judgement; the conversation is unchanged", "info")
            return
        rid = self.store.add_ranking(self.set_id, ranking)
        if ranking.status == "skipped":
            self.ctx.say(f"ranking {rid} stored as skipped; the conversation is unchanged", "info")
            return
        if ranking.status == "all_bad":
            self.ctx.say(f"ranking {rid} stored: all answers bad; the conversation is unchanged (/retry or rephrase)", "info")
            return
        best = outcome.candidates[ranking.best[0]]
        if best.existing:
            self.ctx.say(f"ranking {rid} stored; the existing reply (answer {best.index + 1}) ranked best and stays the reply", "info")
            return
        try:
            node = self.adopt(best, rid)
        except ChatcliError as e:
            self.ctx.say(f"ranking {rid} stored, but {e.message}", "warning")
            return
        self.core.announce("message_added", message=node, conversation=self.core.conv)
        self.ctx.conversation_changed()
        message = f"ranking {rid} stored; answer {best.index + 1} is now the reply"
        after_redraw(self.ctx, self.ctx.say, message, "info")  # the redraw clears notes

    def adopt(self, cand: Candidate, ranking_id: int):
        """Add the candidate as the assistant's reply to the ranked message (and save it)."""
        conv = self.core.conv
        if self.parent_id not in conv.nodes:
            raise ChatcliError("the conversation changed while ranking, so the reply is not added")
        status = cand.finish_reason if cand.finish_reason in ("stop", "length", "cancelled") else "stop"
        node = conv.add("assistant", cand.text, parent=self.parent_id, status=status)
        node.steps = [replace(s, index=k, seq=0) for k, s in enumerate(cand.steps)]
        if not node.content.startswith(node.step_text):  # keep the session invariant
            node.content = node.step_text
        node.meta.update(
            params=cand.params, model=self.engine.identity.name, completion_tokens=len(node.steps),
            ranked={"ranking_id": ranking_id, "set_id": self.set_id, "candidate": cand.index, "of": self.args.n},
        )
        self.core.save_added(node)
        return node


def presort_by_reward(engine: Any, messages: list[dict], cands: list[Candidate]) -> tuple[list[Candidate], str | None]:
    """Best-of-N: with a reward model loaded (the finetune plugin's ``/score load``), the
    candidates come best first (renumbered in that order, as they are stored and shown),
    each carrying its ``reward``; returns them and the reward model's name (None: unscored)."""
    try:
        from chatcli_finetune.reward import best_first
    except ImportError:  # the finetune plugin is not installed
        return cands, None
    try:
        ranked = best_first(engine, messages, [c.text for c in cands])
    except Exception:  # scoring is a convenience: never lose generated candidates over it
        return cands, None
    if ranked is None:
        return cands, None
    order, scores, name = ranked
    return [replace(cands[i], index=k, reward=float(r)) for k, (i, r) in enumerate(zip(order, scores))], name


def reward_model_name(engine: Any) -> str | None:
    manager = adapter_manager(engine)
    if manager is None:  # an engine without adapters
        return None
    try:
        from chatcli_finetune.reward import reward_names
    except ImportError:  # no finetune plugin
        return None
    names = reward_names(manager)
    return names[-1] if names else None


def rank_command(ctx: Any, text: str) -> None:
    args = parse_rank_args(text)
    screen = build_screen(ctx, args)
    if not ctx.frontend.screens:
        raise UsageError("/rank needs the full-screen chat; in a script use `chatcli rank generate` and `chatcli rank annotate`")
    ctx.push_screen(screen)


def build_screen(ctx: Any, args: RankArgs | None = None):
    """The ranking screen for the chat's current conversation (also the register_tui factory)."""
    from chatcli_rank.consistency import judgements
    from chatcli_rank.screen import RankScreen
    from chatcli_rank.store import shared_store

    args = args or RankArgs()
    if ctx.core.engine is None:
        raise ChatcliError("the model is still loading; try /rank again in a moment")
    rank_prompt(ctx.core.conv)  # fail before opening anything
    plan(args.n, args.temperatures, args.lora_mix, ctx.core.engine)  # e.g. --lora-mix without adapters
    store = shared_store()
    run = ChatRanking(ctx, args, store)
    earlier = judgements(store.submissions())  # for the screen's contradiction notice
    mix = " with adapters mixed" if args.lora_mix else ""
    temps = ", ".join(f"{t:g}" for t in args.temperatures)
    reward = reward_model_name(ctx.core.engine)
    sort = f", best first by reward model {reward}" if reward else ""
    own = ", the last is the existing reply" if run.existing is not None else ""
    title = f"Rank {args.n} answers (temperature {temps}{mix}{sort}{own}) — 1-9 pick best first · Enter submits · Esc leaves"
    return RankScreen(run.messages, generate=run.generate, title=title, n=args.n, on_done=run.done, earlier=earlier)
