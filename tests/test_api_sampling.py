"""The Python API's sampling keywords: a keyword given wins ("flag"), else the model's value, else the built-in."""

from __future__ import annotations

import pytest

import chatcli
from chatcli.hub.generation_config import GenerationDefaults


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m = chatcli.load_model(str(tiny_model_dir), device="cpu")
    m.generation_defaults = GenerationDefaults(sampling={"temperature": 0.0, "top_k": 4})
    return m


def test_keywords_over_the_models_values(model):
    r = chatcli.sampling_for(model, top_k=2, max_tokens=8)
    assert (r.params.temperature, r.params.top_k, r.params.max_tokens, r.params.top_p) == (0.0, 2, 8, 1.0)
    assert [r.sources[k] for k in ("temperature", "top_k", "max_tokens", "top_p")] == ["model", "flag", "flag", "built-in"]


def test_answers_use_the_models_values_when_no_keyword_says_otherwise(model):
    """The model recommends greedy decoding: two answers without a temperature are the same."""
    first = chatcli.generate(model, "Paris is", max_tokens=8, seed=1)
    assert chatcli.generate(model, "Paris is", max_tokens=8, seed=2) == first
    assert chatcli.generate(model, "Paris is", max_tokens=8, temperature=0) == first


def test_a_misspelt_keyword_is_refused(model):
    with pytest.raises(TypeError, match="unknown sampling keyword.*temprature"):
        chatcli.generate(model, "hi", temprature=0)
