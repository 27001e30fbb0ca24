"""The documented Python API (chatcli.load_model/stream/generate/score/tokenize) on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

import chatcli
from chatcli.engine.events import Step
from chatcli.errors import UsageError
from tests.tiny import load_hf_oracle


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return chatcli.load_model(str(tiny_model_dir), device="cpu")


def test_stream_yields_steps_and_generate_joins_their_text(model):
    steps = list(chatcli.stream(model, "Paris is", temperature=0, max_tokens=10))
    assert steps and all(isinstance(s, Step) for s in steps)
    assert [s.index for s in steps] == list(range(len(steps)))
    assert chatcli.generate(model, "Paris is", temperature=0, max_tokens=10) == "".join(s.text for s in steps)


def test_messages_system_and_raw(model):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"}]
    a = chatcli.generate(model, msgs, temperature=0, max_tokens=6)
    b = chatcli.generate(model, msgs, system="Be brief.", temperature=0, max_tokens=6)
    assert isinstance(a, str) and isinstance(b, str)
    raw = chatcli.generate(model, "def add(a, b):", raw=True, temperature=0, max_tokens=6)
    assert isinstance(raw, str)
    with pytest.raises(UsageError, match="temperature"):
        list(chatcli.stream(model, "x", temperature=-1))


def test_score_matches_transformers(model, tiny_model_dir):
    text = "The quick brown fox jumps over the lazy dog."
    result = chatcli.score(model, text)
    ids = model.tokenizer.encode(text)
    oracle = load_hf_oracle(tiny_model_dir)
    with torch.no_grad():
        logp = torch.log_softmax(oracle(torch.tensor([ids])).logits[0].float(), -1)
    assert result.tokens[0].prob is None  # nothing predicts the first token
    assert [t.id for t in result.tokens] == ids
    for t in result.tokens[1:]:
        want = float(logp[t.index - 1, t.id])
        assert t.surprisal_bits == pytest.approx(-want / math.log(2), abs=1e-4)
        assert t.rank == int((logp[t.index - 1] > want).sum()) + 1
    mean_bits = sum(t.surprisal_bits for t in result.tokens[1:]) / (len(ids) - 1)
    assert result.perplexity == pytest.approx(2**mean_bits)


def test_score_as_an_answer_scores_only_the_answer(model):
    result = chatcli.score(model, "Paris.", prompt="What is the capital of France?")
    assert result.context_tokens > 0
    assert len(result.tokens) == len(model.tokenizer.encode("Paris.")) and all(t.prob for t in result.tokens)


def test_score_refuses_text_longer_than_the_context(model):
    long = "word " * (model.context_length + 10)
    with pytest.raises(chatcli.errors.GenerationError, match="context"):
        chatcli.score(model, long)


def test_tokenize_pieces_cover_the_text(tiny_model_dir, model):
    text = "Hi 42 今天 🙂"
    pieces = chatcli.tokenize(str(tiny_model_dir), text)  # by path: tokenizer only
    assert [p.id for p in pieces] == model.tokenizer.encode(text)
    assert b"".join(p.bytes for p in pieces) == text.encode("utf-8")
    assert pieces[0].start == 0 and pieces[-1].end == len(text)
    assert any("\ufffd" in p.token for p in pieces)  # a character split over byte tokens


def test_lens_reads_the_token_after_the_text(model):
    from chatcli.engine.probes.lens import logit_lens

    raw = chatcli.lens(model, "The quick brown fox", raw=True, top_n=3)
    want = logit_lens(model.model, model.completion_ids("The quick brown fox"), top_n=3, tokenizer=model.tokenizer)
    assert raw == want and len(raw.layers) == model.model.config.num_hidden_layers + 1
    chat = chatcli.lens(model, "The quick brown fox", system="Be brief.")
    ids = model.tokenizer.encode_chat([{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "The quick brown fox"}])
    assert chat.position == len(ids) - 1 and chat.to_json()["type"] == "lens"


def test_attention_of_a_chosen_position(model):
    result = chatcli.attention(model, "The quick brown fox", raw=True, position=2)
    ids = model.completion_ids("The quick brown fox")
    assert result.position == 2 and result.ids == tuple(ids[:3]) and sum(result.row()) == pytest.approx(1.0)
    with pytest.raises(UsageError, match="outside the text"):
        chatcli.attention(model, "The quick brown fox", raw=True, position=len(ids))


def test_probes_refuse_a_server_in_one_line():
    from chatcli.engine.protocol import Capabilities

    class Server:
        capabilities = Capabilities(backend="remote", weights_in_process=False)

    for probe in (chatcli.lens, chatcli.attention):
        with pytest.raises(UsageError, match="a server returns no hidden states"):
            probe(Server(), "hi")
