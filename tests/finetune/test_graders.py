"""The built-in rule graders, the spec parser's refusals, and the Grader's checks of what a grader returns."""

from __future__ import annotations

import time

import pytest

from chatcli.errors import ChatcliError, UsageError
from chatcli_finetune.rl.graders import Grader, PluginGrader, parse_grader

Q = [{"role": "user", "content": "hi"}]


def _score(spec: str, answers: list[str], plugins=None) -> list[float]:
    s = parse_grader(spec, plugins)
    return Grader(spec, fn=s.fn).score(Q, answers)


def test_max_words_is_zero_up_to_n_and_falls_by_one_per_n_words_above():
    five, ten, fifteen = "a " * 5, "a " * 10, "a " * 15
    assert _score("rule:max-words=5", ["", "one", five, ten, fifteen]) == [0.0, 0.0, 0.0, -1.0, -2.0]


def test_contains_ignores_case_and_regex_searches():
    assert _score("rule:contains=Please", ["please help", "PLEASE", "plea se"]) == [1.0, 1.0, 0.0]
    assert _score(r"rule:regex=^\d+$", ["12345", "12 345", "x1"]) == [1.0, 0.0, 0.0]


def test_a_catastrophic_regex_times_out_as_no_match():
    start = time.perf_counter()
    assert _score("rule:regex=(a+)+$", ["a" * 40 + "b"]) == [0.0]
    assert time.perf_counter() - start < 5  # Python's re would run for hours here


@pytest.mark.parametrize("spec, message", [
    ("rule:max-words=0", "N must be a whole number >= 1"), ("rule:max-words=", "N must be a whole number"),
    ("rule:contains=", "give the word"), ("rule:regex=(", "not a valid regular expression"),
    ("rule:shortest", "unknown rule"), ("", "give a grader"), ("nope", "unknown grader 'nope'"),
])  # fmt: skip
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_grader(spec)


def test_paths_and_names(tmp_path):
    with pytest.raises(ChatcliError, match="no reward model at") as e:
        parse_grader(str(tmp_path / "missing-rm"))
    assert not isinstance(e.value, UsageError)  # a file problem: exit 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChatcliError, match="adapter_model.safetensors"):
        parse_grader(str(tmp_path / "empty"))
    plugins = lambda: {"polite": PluginGrader("polite", lambda m, a: float("please" in a))}  # noqa: E731
    assert _score("polite", ["please", "no"], plugins) == [1.0, 0.0]
    with pytest.raises(UsageError, match=r"unknown grader 'polit' \(did you mean polite\?\).*\(polite\)"):
        parse_grader("polit", plugins)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, True])
def test_a_grader_must_return_a_finite_number(value):
    with pytest.raises(ChatcliError, match="must return a finite number"):
        Grader("odd", fn=lambda m, a: value).score(Q, ["x"])


def test_a_grader_that_raises_is_one_line():
    def broken(messages, answer):
        raise KeyError("content")

    with pytest.raises(ChatcliError, match=r"grader 'broken' failed on an answer \(KeyError: 'content'\)"):
        Grader("broken", fn=broken).score(Q, ["x"])
