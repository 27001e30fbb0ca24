"""Qwen3-style thinking: the template switch as transformers passes it, earlier reasoning left out, where reasoning ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.engine.loader import load_engine
from chatcli.tokenizer.chat_template import render_chat_template
from chatcli.tokenizer.thinking import has_thinking_switch, thinking_end, thinking_steps
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.tiny_tokenizer import CHATML_TEMPLATE

QWEN3 = (Path(__file__).parent / "qwen3_template.jinja").read_text()
REASONED = "<think>\nThe user wants the capital. It is Paris.\n</think>\n\nParis."
TWO_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": REASONED},
    {"role": "user", "content": "And of Italy?"},
]


@pytest.fixture(scope="module")
def hf_tokenizer(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(tok_dir)


def test_the_switch_is_found_by_compiling_not_by_searching():
    assert has_thinking_switch(QWEN3)
    assert not has_thinking_switch(CHATML_TEMPLATE)
    assert not has_thinking_switch(CHATML_TEMPLATE + "{# enable_thinking is not read here #}")
    assert not has_thinking_switch("{% if enable_thinking %}")  # does not compile
    assert not has_thinking_switch(None)


@pytest.mark.parametrize("variables", [{}, {"enable_thinking": False}, {"enable_thinking": True}])
@pytest.mark.parametrize("gen_prompt", [True, False])
def test_render_matches_transformers(hf_tokenizer, tok_dir, variables, gen_prompt):
    expected = hf_tokenizer.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=gen_prompt,
                                                chat_template=QWEN3, **variables)
    tok = ChatTokenizer.from_dir(tok_dir)
    tok.chat_template = QWEN3
    tok.template_variables.update(variables)
    assert tok.render_chat(TWO_TURNS, add_generation_prompt=gen_prompt) == expected


def test_thinking_off_closes_an_empty_block_and_earlier_reasoning_is_left_out():
    prompt = render_chat_template(QWEN3, TWO_TURNS, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "It is Paris" not in prompt and "<|im_start|>assistant\nParis.<|im_end|>" in prompt
    assert render_chat_template(QWEN3, TWO_TURNS).endswith("<|im_start|>assistant\n")  # the default: the model thinks


def test_the_last_turns_reasoning_stays_when_it_follows_the_last_question():
    """An answer after the last user message (a tool loop, or the prompt of a continued answer) keeps it."""
    prompt = render_chat_template(QWEN3, TWO_TURNS[:3], add_generation_prompt=False)
    assert "<think>\nThe user wants the capital. It is Paris.\n</think>\n\nParis.<|im_end|>" in prompt


def test_a_call_variable_beats_the_tokenizers(tok_dir):
    tok = ChatTokenizer.from_dir(tok_dir)
    tok.chat_template = QWEN3
    tok.template_variables["enable_thinking"] = False
    assert tok.render_chat(TWO_TURNS, enable_thinking=True).endswith("assistant\n")


def test_set_thinking_on_a_loaded_model(tiny_family_dirs, tmp_path):
    template = tmp_path / "qwen3.jinja"
    template.write_text(QWEN3)
    engine = load_engine(str(tiny_family_dirs("qwen3")), chat_template=str(template), warm_up=False)
    question = TWO_TURNS[1:2]
    assert engine.set_thinking(False)
    assert engine.render_prompt(question).endswith("<think>\n\n</think>\n\n")
    assert engine.set_thinking(None)
    assert engine.render_prompt(question).endswith("assistant\n")
    plain = load_engine(str(tiny_family_dirs("qwen3")), warm_up=False)  # the tiny ChatML template
    before = plain.render_prompt(question)
    assert not plain.set_thinking(False) and plain.render_prompt(question) == before


@pytest.mark.parametrize("text, end", [
    ("Paris.", 0),
    ("<think>\nstill going", 19),
    ("<think>\nplan\n</think>\n\nParis.", 23),
    ("  <think>plan</think>Paris", 21),
    ("plan from a prompt that opened the block\n</think>\n\nParis.", 51),
    ("Use <think> and </think> tags.", 0),  # an answer that talks about the tags
    ("", 0),
])
def test_thinking_end(text, end):
    assert thinking_end(text) == end
    assert text[end:] in ("Paris.", "Paris", "", "Use <think> and </think> tags.")


def test_thinking_steps_counts_the_steps_up_to_the_answer():
    texts = ["<think>", "\n", "plan", "\n", "</think>", "\n\n", "Par", "is."]
    assert thinking_steps(texts) == 6
    assert thinking_steps(texts[:3]) == 3  # still thinking: every step so far
    assert thinking_steps(["Par", "is."]) == 0


def test_tracker_marks_the_pieces_of_the_reasoning_as_they_stream():
    from chatcli.tokenizer.thinking import ThinkingTracker

    pieces = ["<", "think>", "\nplan", "\n</think>", "\n\n", "Paris", " </think> again"]
    tracker = ThinkingTracker()
    assert [tracker.feed(p) for p in pieces] == [True, True, True, True, True, False, False]
    plain = ThinkingTracker()
    assert [plain.feed(p) for p in ["\n", "Paris", "<think>"]] == [False, False, False]
