"""The loop detector: fires once, on the third non-overlapping copy of a 4-gram, and says what repeats."""

from __future__ import annotations

import random
import time

import pytest

from chatcli.engine.probes.repeats import RepeatDetector


def feed(words: list[str], **kw) -> list[tuple[int, object]]:
    """Push ``words`` (ids by first appearance, text = the word and a space); (index, Repeat) of each firing."""
    ids: dict[str, int] = {}
    detector = RepeatDetector(**kw)
    fired = []
    for i, w in enumerate(words):
        r = detector.push(ids.setdefault(w, len(ids)), w + " ")
        if r is not None:
            fired.append((i, r))
    return fired


def test_a_sentence_repeated_back_to_back_fires_on_its_third_copy_with_the_whole_sentence():
    words = "Once upon a time".split() + "the sea was calm and blue .".split() * 3
    fired = feed(words)
    assert len(fired) == 1
    at, r = fired[0]
    assert at == 4 + 7 * 2 + 3  # the fourth token of the third copy completes the 4-gram
    assert r.text == "the sea was calm and blue . "
    assert r.start == 4 and r.copies == 3 and r.at == at
    assert len(r.ids) == 7


def test_it_fires_once_per_answer_however_long_the_loop():
    fired = feed("the sea was calm .".split() * 40)
    assert len(fired) == 1


def test_two_copies_are_not_a_loop():
    assert feed("the sea was calm and blue . and then the sea was calm and blue . The end".split()) == []


def test_near_miss_three_copies_of_a_three_token_phrase_do_not_fire():
    # Three copies of "in the sea" (3 tokens) with different words around them: below n = 4.
    assert feed("fish live in the sea ; crabs walk in the sea ; birds dive in the sea too".split()) == []


def test_near_miss_one_token_differs_in_each_copy():
    # The 4-grams never match: every copy has a different word in the middle.
    assert feed("the big red cat sat . the big blue cat sat . the big green cat sat .".split()) == []


def test_copies_with_other_tokens_between_them_report_the_shared_stretch():
    fired = feed("1 . the big cat 2 . the big cat 3 . the big cat".split())
    assert len(fired) == 1
    _, r = fired[0]
    assert r.text == ". the big cat "
    assert r.start == 1 and r.copies == 3


def test_after_the_last_copys_n_gram_the_stretch_goes_on_as_far_as_the_earlier_copies_agree():
    fired = feed("1 . the big cat sat 2 . the big cat sat 3 . the big cat".split())
    _, r = fired[0]
    assert r.text == ". the big cat sat " and r.start == 1


def test_a_single_token_repeated_fires_at_twelve_in_a_row_with_the_token_as_the_unit():
    assert feed(["Hi", "!"] + ["the"] * 11) == []
    fired = feed(["Hi", "!"] + ["the"] * 12)
    assert len(fired) == 1
    _, r = fired[0]
    assert r.text == "the " and len(r.ids) == 1
    assert r.start == 2 and r.copies == 12


def test_a_two_token_loop_reduces_to_its_period():
    fired = feed(["x"] + ["ha", "!"] * 6)
    _, r = fired[0]
    assert r.text == "ha ! " and r.start == 1 and r.copies == 6


def test_an_early_copy_and_a_late_loop_report_where_the_text_first_came():
    fired = feed("A B C D said the man , then A B C D A B C D".split())
    _, r = fired[0]
    assert r.text == "A B C D " and r.start == 0 and r.copies == 3


def test_a_longer_n_and_more_times():
    words = "a b c d e".split() * 3
    assert feed(words, n=6, times=3) == []  # 6-gram copies overlap: only 2 non-overlapping
    assert len(feed("a b c d e f".split() * 3, n=6, times=3)) == 1
    assert feed("a b c d".split() * 3, n=4, times=4) == []


def test_prime_counts_an_earlier_part_and_a_loop_within_it_is_not_reported_again():
    d = RepeatDetector()
    d.prime([1, 2, 3, 4] * 3)  # the prefix already loops: marked, not announced
    assert d.fired is not None
    assert all(d.push(i) is None for i in [1, 2, 3, 4] * 5)
    d = RepeatDetector()
    d.prime([1, 2, 3, 4] * 2)
    fired = [r for r in (d.push(i) for i in [1, 2, 3, 4]) if r is not None]
    assert len(fired) == 1 and fired[0].start == 0  # indices count the primed tokens too


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        RepeatDetector(n=0)
    with pytest.raises(ValueError):
        RepeatDetector(times=1)


def test_per_token_cost_is_microseconds():
    # 20k tokens of varied text (no loop): the decode loop spends tens of milliseconds per
    # token on the default model; the detector must stay far below that.
    rng = random.Random(0)
    ids = [rng.randrange(49_152) for _ in range(20_000)]
    d = RepeatDetector()
    t = time.perf_counter()
    for i in ids:
        d.push(i, "x")
    per_token = (time.perf_counter() - t) / len(ids)
    assert d.fired is None
    assert per_token < 50e-6, f"{per_token * 1e6:.1f} µs per token"
