"""Fitting a conversation into the model's context by dropping its oldest turns.

``fit_messages(messages, tokenizer, context_length, reserve)`` keeps the rendered
conversation (chat template and generation prompt included) within
``context_length - reserve`` tokens, ``reserve`` being the room kept for the answer.
It drops whole turns, oldest first: a turn is a user message with the replies that
follow it, so the model never sees an answer without its question. The system
message (if first) and the last turn (from the last user message on) are always
kept; if even they do not fit, :class:`GenerationError` says how many tokens they
have and what the limit is.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from chatcli.errors import GenerationError

Message = Mapping[str, Any]


def split_turns(messages: Sequence[Message]) -> tuple[list[Message], list[list[Message]]]:
    """(leading system messages, turns); each turn starts at a user message (the first
    turn also takes any non-user messages before the first user message)."""
    msgs = list(messages)
    head: list[Message] = []
    while msgs and msgs[0].get("role") == "system":
        head.append(msgs.pop(0))
    turns: list[list[Message]] = []
    for m in msgs:
        if m.get("role") == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    if len(turns) > 1 and turns[0][0].get("role") != "user":
        # Replies with no question before them go with the first real turn.
        turns[1] = turns[0] + turns[1]
        turns.pop(0)
    return head, turns


def count_chat_tokens(messages: Sequence[Message], tokenizer, add_generation_prompt: bool = True) -> int:
    return len(tokenizer.encode_chat(list(messages), add_generation_prompt=add_generation_prompt))


def fit_messages(
    messages: Sequence[Message],
    tokenizer,
    context_length: int,
    reserve: int,
    add_generation_prompt: bool = True,
) -> tuple[list[Message], int]:
    """Return (messages that fit, number of messages dropped)."""
    limit = context_length - reserve
    if limit < 1:
        raise GenerationError(
            f"no room for the conversation: {reserve} tokens reserved for the answer of a {context_length}-token "
            "context; lower max_tokens"
        )
    msgs = list(messages)
    if not msgs:
        return [], 0

    def fits(kept: list[Message]) -> tuple[bool, int]:
        n = count_chat_tokens(kept, tokenizer, add_generation_prompt)
        return n <= limit, n

    ok, _ = fits(msgs)
    if ok:
        return msgs, 0
    head, turns = split_turns(msgs)

    def keep_from(k: int) -> list[Message]:
        return head + [m for t in turns[k:] for m in t]

    # Smallest k (oldest turns dropped) that fits; the token count only falls as k grows.
    last = len(turns) - 1
    ok, n = fits(keep_from(last))
    if not ok:
        raise GenerationError(
            f"the last message (with the system prompt and template) has {n} tokens but only {limit} fit "
            f"({context_length} context - {reserve} reserved for the answer); shorten it or lower max_tokens"
        )
    lo, hi = 1, last  # keep_from(hi) fits, keep_from(0) does not
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(keep_from(mid))[0]:
            hi = mid
        else:
            lo = mid + 1
    kept = keep_from(hi)
    return kept, len(msgs) - len(kept)
