"""AnswerBuilder: which tokens become steps, when, and with what text (stop strings, EOS, UTF-8)."""

from __future__ import annotations

import pytest

from chatcli.engine.answer_builder import AnswerBuilder
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.tiny_tokenizer import write_tokenizer_files

EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> ChatTokenizer:
    d = tmp_path_factory.mktemp("tok")
    write_tokenizer_files(d)
    return ChatTokenizer.from_dir(d)


def feed(builder: AnswerBuilder, ids):
    """Push ids; return per push the (ids, texts) of the steps it released, and whether it ended."""
    out = []
    for i in ids:
        steps, ended = builder.add(i, 0.5, 0.5, 1.0, ())
        out.append(([s.id for s in steps], [s.text for s in steps]))
        if ended:
            break
    return out


def test_plain_text_steps_come_out_one_per_token(tok):
    ids = tok.encode("The capital of France is Paris.")
    b = AnswerBuilder(tok)
    pushes = feed(b, ids)
    assert [p[0] for p in pushes] == [[i] for i in ids]
    assert b.text == "The capital of France is Paris." and b.count == len(ids)
    assert b.finish() == []


def test_stop_string_tokens_are_not_steps(tok):
    ids = tok.encode("Hello world. User: hi")  # ... ' ', 'U', 's', 'er', ':', ...
    b = AnswerBuilder(tok, stops=["User:"])
    pushes = feed(b, ids)
    assert b.stopped and b.done and b.text == "Hello world. "
    emitted = [i for p in pushes for i in p[0]]
    assert emitted == ids[:13]  # up to and including the space; 'U','s','er',':' never appear
    assert pushes[13][0] == pushes[14][0] == pushes[15][0] == []  # 'U', 's', 'er' held
    assert len(pushes) == 17  # the ':' ended it
    assert b.add(ids[0], 1, 1, 0, ()) == ([], True)


def test_held_newline_is_released_with_its_own_text(tok):
    ids = tok.encode("a\nb\n\nc")  # a, \n, b, \n, \n, c
    b = AnswerBuilder(tok, stops=["\n\n\n"])
    pushes = feed(b, ids)
    assert pushes[1] == ([], [])  # '\n' might start the stop string
    assert pushes[2] == ([ids[1], ids[2]], ["\n", "b"])  # decided: released, each with its text
    assert pushes[4] == ([], [])
    assert pushes[5] == ([ids[3], ids[4], ids[5]], ["\n", "\n", "c"])


def test_eos_releases_held_text_and_is_not_a_step(tok):
    ids = tok.encode("a\n")
    b = AnswerBuilder(tok, stops=["\nUser:"], eos_ids=[EOS])
    pushes = feed(b, ids + [EOS])
    assert pushes[1] == ([], [])
    assert pushes[2] == ([ids[1]], ["\n"])  # EOS: the held newline comes out, EOS does not
    assert b.stopped and b.text == "a\n" and b.ids == ids


def test_bytes_of_a_character_wait_for_it(tok):
    ids = tok.encode("小")  # three byte tokens
    b = AnswerBuilder(tok)
    pushes = feed(b, ids)
    assert pushes[0] == pushes[1] == ([], [])
    assert pushes[2] == (ids, ["", "", "小"])


def test_finish_gives_an_unfinished_character_to_its_last_token(tok):
    ids = tok.encode("ok 🙂")[:-1]
    b = AnswerBuilder(tok)
    feed(b, ids)
    tail = b.finish()
    assert [s.text for s in tail][-1] == "\ufffd"
    assert b.text == tok.decode(ids) and b.count == len(ids)


def test_stop_string_starting_with_a_multibyte_character(tok):
    ids = tok.encode("ok 🙂! done")  # o, k, ' ', 3 bytes of 🙂, !, ...
    b = AnswerBuilder(tok, stops=["🙂!"])
    pushes = feed(b, ids)
    assert b.text == "ok " and b.ids == ids[:3]  # the emoji's byte tokens are part of the stop
    assert len(pushes) == 7


def test_straddling_token_keeps_only_its_head(tok):
    ids = tok.encode("The capital of France is Paris.")  # ..., ' is', ' ', 'Pa', 'ris', '.'
    b = AnswerBuilder(tok, stops=["s Par"])
    feed(b, ids)
    assert b.text == "The capital of France i"
    assert b.ids == ids[:7] and b.finish() == []


def test_prime_ids_continue_the_decode(tok):
    ids = tok.encode("ok 🙂!")
    b = AnswerBuilder(tok, prime_ids=ids[:4])  # the prefix ends inside the emoji
    feed(b, ids[4:])
    b.finish()
    assert b.text.endswith("!") and b.count == len(ids) - 4
