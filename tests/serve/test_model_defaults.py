"""chatcli serve answers with the model's own sampling values where a request leaves them out (as vLLM does)."""

from __future__ import annotations

from chatcli.hub.generation_config import GenerationDefaults
from chatcli.serve.validate import parse_chat, parse_completion
from tests.serve_support import HELLO, MODEL_ID, client, greedy, reference, served, tiny_engine

MODEL = {"temperature": 0.2, "top_p": 0.9, "top_k": 20}


def test_a_value_left_out_is_the_models_then_openais():
    req = parse_chat({"model": "m", "messages": HELLO, "top_k": 5})
    p = req.params(16, MODEL)
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (0.2, 0.9, 5, 0.0)  # the request's top_k wins
    p = req.params(16)
    assert (p.temperature, p.top_p, p.top_k) == (1.0, 1.0, 5)  # no model values: OpenAI's defaults, as before


def test_the_requests_values_win_and_other_keys_are_not_taken():
    req = parse_completion({"model": "m", "prompt": "x", "temperature": 0.7, "top_p": 1})
    p = req.params(4, {**MODEL, "max_tokens": 2, "seed": 3})
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.seed) == (0.7, 1.0, 20, 4, None)


def test_served_model_that_recommends_greedy_answers_greedily(tiny_model_dir):
    engine, ref = tiny_engine(tiny_model_dir), tiny_engine(tiny_model_dir)
    engine.generation_defaults = GenerationDefaults(sampling={"temperature": 0.0})
    _, done = reference(ref.chat(HELLO, greedy(10)))
    with served(engine) as server:
        answers = {client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=10,
                                                          seed=s).choices[0].message.content for s in (1, 2, 3)}
    assert answers == {done.text}
