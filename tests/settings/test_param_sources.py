"""flag > /set > preset > env > config > model > built-in: one pure resolver, every field named by its layer."""

from __future__ import annotations

import pytest

from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.settings.param_sources import FIELDS, RANDOM_SEED, SOURCES, explicit, resolve_sampling


def test_no_layers_is_the_built_in_defaults():
    r = resolve_sampling({})
    assert r.params == SamplingParams()
    assert r.sources == dict.fromkeys(FIELDS, "built-in")


def test_each_layer_beats_every_layer_below_it():
    # Layer i sets temperature to i/10: the highest layer that sets it wins, whatever is below.
    for top in range(len(SOURCES) - 1):
        layers = {s: {"temperature": i / 10} for i, s in enumerate(SOURCES[top:-1], start=top)}
        r = resolve_sampling(layers)
        assert r.params.temperature == top / 10
        assert r.sources["temperature"] == SOURCES[top]


def test_fields_come_from_different_layers():
    r = resolve_sampling({
        "flag": {"temperature": 0.0, "top_p": None},  # None: the option was left out
        "/set": {"max_tokens": 64},
        "preset": {"top_k": 40, "system": "Be brief.", "model": "x"},  # non-sampling keys are ignored
        "env": {"top_k": 10, "min_p": 0.05},
        "config": {"seed": 7},
        "model": {"temperature": 0.2, "top_p": 0.9},
    })
    assert (r.params.temperature, r.params.top_p, r.params.top_k, r.params.min_p) == (0.0, 0.9, 40, 0.05)
    assert (r.params.max_tokens, r.params.seed, r.params.repetition_penalty) == (64, 7, 1.0)
    assert {k: r.sources[k] for k in ("temperature", "top_p", "top_k", "min_p", "max_tokens", "seed",
                                      "repetition_penalty")} == {
        "temperature": "flag", "top_p": "model", "top_k": "preset", "min_p": "env", "max_tokens": "/set",
        "seed": "config", "repetition_penalty": "built-in"}


def test_a_random_seed_set_in_the_chat_beats_a_configured_one():
    r = resolve_sampling({"/set": {"seed": RANDOM_SEED}, "config": {"seed": 7}})
    assert r.params.seed is None and r.sources["seed"] == "/set"


def test_stop_strings_become_a_tuple():
    r = resolve_sampling({"flag": {"stop": ["\n\n", "END"]}})
    assert r.params.stop == ("\n\n", "END") and r.sources["stop"] == "flag"


def test_a_built_in_layer_replaces_the_dataclass_defaults():
    r = resolve_sampling({"built-in": {"temperature": 1.0}, "model": {"top_p": 0.9}})
    assert r.params.temperature == 1.0 and r.sources["temperature"] == "built-in"


def test_bad_value_is_the_one_line_usage_error():
    with pytest.raises(UsageError, match="invalid temperature -1"):
        resolve_sampling({"env": {"temperature": -1}})


def test_unknown_layer_name_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown sampling layer"):
        resolve_sampling({"flags": {"temperature": 0}})


def test_explicit_lists_only_what_differs_from_the_defaults():
    assert explicit(SamplingParams(temperature=0, seed=3)) == {"temperature": 0, "seed": 3}
    assert explicit(SamplingParams()) == {}
