"""fit_messages drops whole oldest turns, keeps the system prompt and the last user message."""

from __future__ import annotations

import pytest

from chatcli.engine.fit import count_chat_tokens, fit_messages, split_turns
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import GenerationError
from tests.tiny_tokenizer import write_tokenizer_files

SYSTEM = {"role": "system", "content": "You are brief."}


def _conversation(turns: int) -> list[dict]:
    msgs = [SYSTEM]
    for i in range(turns):
        msgs.append({"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"})
        msgs.append({"role": "assistant", "content": f"The answer is {2 * i}. " * 3})
    msgs.append({"role": "user", "content": "And the last question?"})
    return msgs


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> ChatTokenizer:
    d = tmp_path_factory.mktemp("tok")
    write_tokenizer_files(d)
    return ChatTokenizer.from_dir(d)


def test_everything_fits_nothing_dropped(tok):
    msgs = _conversation(3)
    n = count_chat_tokens(msgs, tok)
    assert fit_messages(msgs, tok, context_length=n + 10, reserve=10) == (msgs, 0)


def test_drops_whole_oldest_turns_and_keeps_system(tok):
    msgs = _conversation(6)
    total = count_chat_tokens(msgs, tok)
    limit_ctx = total - 40 + 100  # 40 tokens too many once 100 are reserved
    kept, dropped = fit_messages(msgs, tok, context_length=limit_ctx, reserve=100)
    assert count_chat_tokens(kept, tok) <= limit_ctx - 100
    assert dropped % 2 == 0 and dropped >= 2  # pairs: a question with its answer
    assert kept[0] == SYSTEM and kept[-1] == msgs[-1]
    assert kept[1:] == msgs[1 + dropped :]  # a suffix of whole turns
    assert kept[1]["role"] == "user"
    # Minimal: keeping one more turn would not fit.
    one_more = [SYSTEM] + msgs[1 + dropped - 2 :]
    assert count_chat_tokens(one_more, tok) > limit_ctx - 100


def test_keeps_only_system_and_last_user_when_tight(tok):
    msgs = _conversation(4)
    minimal = [SYSTEM, msgs[-1]]
    n = count_chat_tokens(minimal, tok)
    kept, dropped = fit_messages(msgs, tok, context_length=n + 5, reserve=5)
    assert kept == minimal and dropped == len(msgs) - 2


def test_a_message_that_cannot_fit_says_its_size_and_the_limit(tok):
    msgs = [SYSTEM, {"role": "user", "content": "word " * 200}]
    n = count_chat_tokens(msgs, tok)
    with pytest.raises(GenerationError) as e:
        fit_messages(msgs, tok, context_length=100, reserve=20)
    assert f"{n} tokens" in e.value.message and "only 80 fit" in e.value.message
    with pytest.raises(GenerationError, match="lower max_tokens"):
        fit_messages(msgs, tok, context_length=100, reserve=100)


def test_split_turns_groups_replies_with_their_question():
    msgs = [
        SYSTEM,
        {"role": "assistant", "content": "Hi, ask me anything."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    head, turns = split_turns(msgs)
    assert head == [SYSTEM]
    assert [[m["content"] for m in t] for t in turns] == [["Hi, ask me anything.", "q1", "a1"], ["q2"]]
    assert split_turns([]) == ([], [])
