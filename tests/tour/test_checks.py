"""Each chapter's check against synthetic chat events: the experiment passes it, near misses do not."""

from __future__ import annotations

import pytest

from chatcli.tour.chapters import CHAPTERS, chapter
from chatcli.tour.checks import ADAPTER, ANSWER, COMMAND, MESSAGE, STEP, VIEW, TourEvent
from chatcli.tour.guide import Tour


def cmd(name: str, args: str = "") -> TourEvent:
    return TourEvent(COMMAND, name=name, args=args)


def answer(turns: int = 1, finish: str = "stop") -> TourEvent:
    return TourEvent(ANSWER, user_turns=turns, finish=finish)


def step(bits: float) -> TourEvent:
    return TourEvent(STEP, entropy=bits)


def run_chapter(number: int, events: list[TourEvent]) -> frozenset[str]:
    """The goals met after ``events`` in chapter ``number`` (a tour in memory)."""
    tour = Tour(None)
    tour.start(number)
    for event in events:
        tour.observe(event)
    return tour.view().met


def done(number: int, events: list[TourEvent]) -> bool:
    return run_chapter(number, events) == {g.key for g in chapter(number).goals}


# The experiment each chapter asks for, as the chat would report it.
EXPERIMENTS = {
    1: [TourEvent(MESSAGE, text="What is the capital of France?"), answer(), step(0.11), step(7.6)],
    2: [cmd("whatif", "temperature 1.5 top_p 0.9"), cmd("set", "temperature 1.5"), cmd("retry"), answer()],
    3: [cmd("tokenize", "今天天气很好 2024 🙂 Hello world")],
    4: [answer(1), answer(2), cmd("raw")],
    5: [cmd("complete", "The capital of France is"), TourEvent(MESSAGE, text="The capital of France is"), answer()],
    6: [cmd("lens", "The capital of France is")],
    7: [cmd("rank", "3"), cmd("finetune", "dpo --max-steps 4 --load"), TourEvent(ADAPTER, name="dpo-20250101")],
    8: [TourEvent(ADAPTER, name="pirate"), cmd("lora"), answer(), cmd("compare"), cmd("lora-layers")],
    9: [cmd("finetune", "sft --max-steps 2 --load"), TourEvent(ADAPTER, name="sft-1")],
}


@pytest.mark.parametrize("number", range(1, len(CHAPTERS) + 1))
def test_each_chapters_experiment_passes_its_check(number):
    assert done(number, EXPERIMENTS[number])


@pytest.mark.parametrize("number", range(1, len(CHAPTERS) + 1))
def test_no_chapter_passes_on_unrelated_chatting(number):
    chatting = [TourEvent(MESSAGE, text="hi"), answer(1), cmd("help"), cmd("model"), cmd("set")]
    assert not done(number, chatting)


def test_chapter1_needs_both_a_near_certain_and_a_wide_open_step():
    assert run_chapter(1, [step(0.2), step(0.4)]) == {"near"}
    assert run_chapter(1, [step(2.9), step(5.0)]) == {"wide"}
    assert run_chapter(1, [step(float("nan"))]) == frozenset()


def test_chapter2_the_what_if_view_counts_and_the_answer_must_follow_the_setting():
    assert "whatif" in run_chapter(2, [TourEvent(VIEW, name="what-if")])
    assert run_chapter(2, [answer(), cmd("set", "temperature 1.5")]) == {"set"}  # the answer came first
    assert run_chapter(2, [cmd("set", "max_tokens 40"), answer()]) == frozenset()  # not a sampling setting
    assert run_chapter(2, [cmd("set", "temp 0.2"), answer(finish="error")]) == {"set"}  # a failed answer
    assert run_chapter(2, [cmd("set", "top_p"), answer()]) == frozenset()  # shown, not changed


def test_chapter3_wants_wide_characters_and_a_number():
    assert run_chapter(3, [cmd("tokenize", "hello world")]) == frozenset()
    assert run_chapter(3, [cmd("tokenize", "🙂")]) == {"wide_chars"}
    assert run_chapter(3, [cmd("tokenize", "in 1999")]) == {"number"}
    assert run_chapter(3, [cmd("set", "今天 2024")]) == frozenset()


def test_chapter4_one_turn_is_not_enough():
    assert run_chapter(4, [answer(1), cmd("raw")]) == {"raw"}


def test_chapter7_a_loaded_adapter_counts_only_after_training_and_sft_is_not_rlhf():
    assert run_chapter(7, [TourEvent(ADAPTER, name="pirate"), cmd("finetune", "dpo")]) == {"train"}
    assert run_chapter(7, [cmd("finetune", "sft"), cmd("finetune", "status")]) == frozenset()


def test_chapter9_any_run_kind_then_its_adapter():
    assert done(9, [cmd("finetune", "reward --max-steps 2 --load"), TourEvent(ADAPTER, name="rm")])
    assert run_chapter(9, [cmd("finetune", "status"), TourEvent(ADAPTER, name="x")]) == frozenset()


def test_every_chapter_has_a_short_explanation_steps_and_goals():
    assert [ch.number for ch in CHAPTERS] == list(range(1, 10))
    for ch in CHAPTERS:
        assert 2 <= len(ch.explain) <= 4 and ch.steps and ch.goals
        assert all(line.count("`") % 2 == 0 for line in ch.steps), ch.number  # typed parts are closed
        keys = [g.key for g in ch.goals]
        assert len(set(keys)) == len(keys)
        assert all(g.after in keys for g in ch.goals if g.after)
