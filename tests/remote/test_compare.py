"""/compare on a remote server: nothing invented for tokens a side did not return ("< floor"), KL as a
lower bound from known values only, teacher-forced scoring of the answer shown where the server can
(vLLM's /tokenize + echo, the fake), two greedy answers elsewhere (chatcli serve), probed once."""

from __future__ import annotations

import io
import math
import random

import pytest
from rich.console import Console

from chatcli.chat.repl import run_repl
from chatcli.cli.common import remote_factory
from chatcli.engine.events import Step, TopToken, text_token_id
from chatcli.engine.params import SamplingParams
from chatcli.remote.compare import _shift, kl_lower_bound, known
from tests.remote_fakes import ADAPTER_ALT, ANSWER, VOCAB, FakeServer, alternatives


def repl(url: str, lines: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    factory = remote_factory(url, "fake-model", api_key_env=None, timeout=5, logprobs_mode="raw")
    rc = run_repl(factory, params=SamplingParams(temperature=0, seed=1), stdin=io.StringIO(lines),
                  console=Console(file=out, width=250, highlight=False), err=Console(file=err, width=250),
                  interactive=False, progress_enabled=False)  # fmt: skip
    return rc, out.getvalue(), err.getvalue()


def _step(token: str, probs: dict[str, float]) -> Step:
    """A remote step as vLLM's arrive: ids made from the token texts."""
    top = tuple(TopToken(text_token_id(t), t, math.nan, p) for t, p in sorted(probs.items(), key=lambda kv: -kv[1]))
    return Step(index=0, id=text_token_id(token), token=token, text=token, prob=math.nan, model_prob=probs[token],
                entropy=math.nan, top=top, partial=True)  # fmt: skip


def test_kl_lower_bound_never_exceeds_the_full_kl_and_is_exact_when_everything_is_returned():
    rng = random.Random(0)
    for _ in range(300):
        v = rng.randint(2, 30)
        a = [rng.random() ** 4 for _ in range(v)]
        b = [rng.random() ** 4 for _ in range(v)]
        a, b = [x / sum(a) for x in a], [x / sum(b) for x in b]
        full = sum(p * math.log2(p / q) for p, q in zip(a, b))
        k = rng.randint(1, v)
        top_a = {str(i): a[i] for i in sorted(range(v), key=lambda i: -a[i])[:k]}
        top_b = {str(i): b[i] for i in sorted(range(v), key=lambda i: -b[i])[:k]}
        assert 0.0 <= kl_lower_bound(top_a, top_b) <= full + 1e-9
        everything = {str(i): a[i] for i in range(v)}, {str(i): b[i] for i in range(v)}
        assert kl_lower_bound(*everything) == pytest.approx(full, abs=1e-9)


def test_a_token_one_side_did_not_return_is_unknown_and_below_that_sides_floor():
    """Regression: a token the server did not return got an equal share of the leftover mass (0.12 for a
    token that must be below the 5th alternative's 0.055)."""
    base = _step("a", {"a": 0.5, "x": 0.3, "b": 0.1, "c": 0.05, "d": 0.03})
    adapter = _step("a", {"a": 0.35, "b": 0.2, "c": 0.15, "d": 0.1, "e": 0.055})
    s = _shift(0, base, adapter, 5, 5)
    pairs = {t.token: t for t in s.top}
    assert pairs["x"].p_base == 0.3 and pairs["x"].p_adapter is None and s.adapter_floor == 0.055
    assert pairs["e"].p_base is None and s.base_floor == 0.03
    assert s.p_base == 0.5 and s.p_adapter == 0.35 and s.shift == pytest.approx(-0.15)
    assert s.kl_bits == pytest.approx(kl_lower_bound({"a": 0.35, "b": 0.2, "c": 0.15, "d": 0.1},
                                                     {"a": 0.5, "b": 0.1, "c": 0.05, "d": 0.03}))
    # vLLM's echo adds the scored token beyond the k asked for: the floor comes from the k alternatives
    side = known(_step("z", {"z": 0.01, "a": 0.4, "b": 0.2}), 2)
    assert side.probs[text_token_id("z")] == 0.01 and side.floor == 0.2


def test_a_text_returned_twice_is_left_out_of_the_kl():
    """Two byte tokens that both show as '�' cannot be told apart without ids: not matched across sides."""
    q = "\ufffd"
    top = (TopToken(text_token_id(q), q, math.nan, 0.6), TopToken(text_token_id("a"), "a", math.nan, 0.3),
           TopToken(text_token_id(q), q, math.nan, 0.05))  # fmt: skip
    base = Step(index=0, id=text_token_id("a"), token="a", text="a", prob=math.nan, model_prob=0.3, entropy=math.nan,
                top=top, partial=True)  # fmt: skip
    adapter = _step("a", {"a": 0.5, q: 0.01, "b": 0.2})
    s = _shift(0, base, adapter, 3, 5)
    assert s.kl_bits == pytest.approx(kl_lower_bound({"a": 0.5}, {"a": 0.3}))


def test_repl_compare_is_teacher_forced_on_a_server_that_scores_text_and_probes_once():
    with FakeServer("vllm", echo=True) as srv:
        rc, out, err = repl(srv.url, "/load-lora /srv/adapters/pirate\nhello\n/compare\n/compare pirate\n")
    assert rc == 0, err
    probes = [b for p, b in srv.requests if p == "/tokenize" and b["messages"] == [{"role": "user", "content": "Hi"}]]
    assert len(probes) == 1  # asked once, kept on the engine
    scored = [b for p, b in srv.requests if p == "/v1/completions" and b.get("echo")]
    assert [b["model"] for b in scored] == ["fake-model", "pirate", "fake-model", "pirate", "fake-model"]
    assert all([VOCAB[i] for i in b["prompt"][-len(ANSWER):]] == ANSWER for b in scored[1:])  # the answer shown
    chats = [b["model"] for p, b in srv.requests if p == "/v1/chat/completions"]
    assert chats == ["pirate"]  # no new answers: the one shown was scored
    assert "teacher-forced on the server" in out and "2 greedy requests" not in out
    assert "pirate vs without: mean KL" in out and f"over {len(ANSWER)} tokens" in out
    missing = alternatives(0, None)[0]  # the base's first alternative, which the adapter did not return
    assert f"{missing!r} 0.200 (<{math.ceil(ADAPTER_ALT[-1] * 1000) / 1000:.3f})" in out
    assert "0.12" not in out.split("steps that moved most")[1]


def test_repl_compare_falls_back_to_greedy_answers_where_the_server_cannot_score_text():
    with FakeServer("vllm") as srv:
        rc, out, err = repl(srv.url, "/load-lora /srv/adapters/pirate\nhello\n/compare\n/compare\n")
    assert rc == 0, err
    assert len([p for p, _ in srv.requests if p == "/tokenize"]) == 1  # the probe (404), once
    assert "partial: 2 greedy requests (the server cannot score a given text), not the answer shown" in out
    assert "(<0.0" in out  # the alternatives each side lacks are bounded, not estimated


def test_compare_of_a_remote_answer_made_without_an_adapter():
    with FakeServer("vllm", echo=True) as srv:
        rc, out, err = repl(srv.url, "hello\n/load-lora /srv/adapters/pirate\n/compare\n")
    assert rc == 0, err
    assert "this answer was generated without adapters: /compare NAME compares one" in err
    assert not [b for p, b in srv.requests if p == "/v1/completions"]


def test_llamacpp_compare_uses_the_scales_the_answer_was_made_with():
    with FakeServer("llama.cpp", lora_files=["/models/pirate.gguf", "/models/concise.gguf"]) as srv:
        rc, out, err = repl(srv.url, "/load-lora pirate.gguf --scale 0.5\nhi\n/lora-scale pirate 2\n"
                                     "/lora-scale concise 1\n/compare\n")
    assert rc == 0, err
    chats = [b for p, b in srv.requests if p == "/v1/chat/completions"]
    assert [b["lora"] for b in chats[1:]] == [[{"id": 0, "scale": 0.5}, {"id": 1, "scale": 0.0}],  # as it was made
                                              [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]]  # the base
    assert "pirate×0.5 vs without" in out and "2 greedy requests" in out
