"""vLLM's extras on chatcli serve: --served-model-name, /tokenize, /detokenize, /tokenizer_info, and
/v1/completions with echo + prompt logprobs as lm-evaluation-harness's local-completions reads them."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from chatcli.engine.scoring import score_ids
from chatcli.serve.errors import APIError
from tests.serve_support import HELLO, MODEL_ID, client, greedy, post, reference, served, tiny_engine

TEXT = "Paris is the capital of France"


def completion(server, **body) -> dict:
    status, reply = post(server, "/completions", {"model": MODEL_ID, "temperature": 0, **body})
    assert status == 200, reply
    return reply


# ---- /tokenize, /detokenize, /tokenizer_info ---------------------------------------------------


def test_tokenize_a_prompt_as_the_model_reads_it(server, ref):
    status, reply = post(server, "/tokenize", {"model": MODEL_ID, "prompt": TEXT}, root=True)
    assert status == 200 and reply["tokens"] == ref.completion_ids(TEXT)
    assert reply["count"] == len(reply["tokens"]) and reply["max_model_len"] == ref.context_length
    assert reply["token_strs"] is None
    status, reply = post(server, "/tokenize", {"prompt": TEXT, "add_special_tokens": False, "return_token_strs": True},
                         root=True)  # fmt: skip
    assert status == 200 and reply["tokens"] == ref.tokenizer.encode(TEXT)
    assert "".join(reply["token_strs"]) == TEXT


def test_tokenize_messages_with_the_chat_template(server, ref):
    status, reply = post(server, "/tokenize", {"messages": HELLO}, root=True)
    assert status == 200 and reply["tokens"] == ref.tokenizer.encode_chat(HELLO)
    _, closed = post(server, "/tokenize", {"messages": HELLO, "add_generation_prompt": False}, root=True)
    assert closed["tokens"] == ref.tokenizer.encode_chat(HELLO, add_generation_prompt=False)
    answer = [*HELLO, {"role": "assistant", "content": " France, of course"}]
    _, open_ = post(server, "/tokenize", {"messages": answer, "add_generation_prompt": False,
                                          "continue_final_message": True}, root=True)  # fmt: skip
    text = ref.tokenizer.render_chat(HELLO) + " France, of course"  # the answer left open: no end-of-turn
    assert open_["tokens"] == ref.tokenizer.encode(text)
    status, err = post(server, "/tokenize", {"messages": answer, "add_generation_prompt": True,
                                             "continue_final_message": True}, root=True)  # fmt: skip
    assert status == 400 and err["error"]["param"] == "continue_final_message"


def test_detokenize_gives_the_text_back(server, ref):
    ids = ref.tokenizer.encode(TEXT)
    status, reply = post(server, "/detokenize", {"model": MODEL_ID, "tokens": ids}, root=True)
    assert status == 200 and reply == {"prompt": TEXT}
    assert post(server, "/detokenize", {"tokens": []}, root=True) == (200, {"prompt": ""})


@pytest.mark.parametrize("path,body,status,param", [
    ("/detokenize", {"tokens": [1, 10**9]}, 400, "tokens"),
    ("/detokenize", {"tokens": [1, -1]}, 400, "tokens"),
    ("/detokenize", {"tokens": "1 2"}, 400, "tokens"),
    ("/detokenize", {"tokens": [1], "model": "other"}, 404, "model"),
    ("/tokenize", {"prompt": "x", "model": "other"}, 404, "model"),
    ("/tokenize", {"prompt": 3}, 400, "prompt"),
    ("/tokenize", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]"),
    ("/tokenize", {"prompt": "word " * 400}, 400, "prompt"),  # longer than the tiny model's 256
])
def test_tokenizer_routes_refuse_bad_bodies_with_the_parameter_named(server, path, body, status, param):
    got, reply = post(server, path, body, root=True)
    assert got == status and reply["error"]["param"] == param


def test_tokenizer_info_has_what_a_remote_tokenizer_needs(server, ref):
    status, info = post(server, "/tokenizer_info", None, root=True, method="GET")
    assert status == 200 and info["eos_token"] == ref.tokenizer.token_text(ref.tokenizer.eos_ids[0])
    assert info["chat_template"] == ref.tokenizer.chat_template and info["model_max_length"] == ref.context_length
    assert ref.tokenizer.encode(info["eos_token"]) == [ref.tokenizer.eos_ids[0]]  # lm-eval finds the id this way


def test_the_tokenizer_routes_want_the_key_when_there_is_one(tiny_model_dir):
    with served(tiny_engine(tiny_model_dir), api_key="k") as s:
        assert post(s, "/tokenize", {"prompt": "x"}, root=True)[0] == 401
        assert post(s, "/tokenize", {"prompt": "x"}, key="k", root=True)[0] == 200
        assert post(s, "/tokenizer_info", None, root=True, method="GET")[0] == 401


# ---- echo with prompt logprobs -----------------------------------------------------------------


def test_echo_returns_the_prompt_with_its_tokens_logprobs_then_the_answer(server, ref):
    ids = ref.completion_ids(TEXT)
    scored = score_ids(ref.model, ref.tokenizer, ids, top_n=3)
    plain = completion(server, prompt=TEXT, max_tokens=4, logprobs=3)["choices"][0]
    reply = completion(server, prompt=TEXT, max_tokens=4, logprobs=3, echo=True)
    (choice,) = reply["choices"]
    assert choice["text"] == TEXT + plain["text"] and choice["finish_reason"] == plain["finish_reason"]
    lp, n = choice["logprobs"], len(ids)
    assert lp["tokens"][:n] == [ref.tokenizer.token_text(i) for i in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing before the first token
    for got, want in zip(lp["token_logprobs"][1:n], scored.tokens[1:]):
        assert got == pytest.approx(math.log(want.prob), abs=1e-5)
    for top, want in zip(lp["top_logprobs"][1:n], scored.tokens[1:]):
        best: dict[str, float] = {}
        for _, t, p in want.top:  # two ids with one text (byte pieces): the more probable one is shown
            best.setdefault(t, math.log(p))
        assert set(best) <= set(top) and len(top) <= 4  # the 3 asked for and the token itself
        assert [top[t] for t in best] == pytest.approx(list(best.values()), abs=1e-5)
        assert top[want.token] == pytest.approx(math.log(want.prob), abs=1e-5)
    assert lp["tokens"][n:] == plain["logprobs"]["tokens"]  # the answer's own, unchanged
    assert lp["token_logprobs"][n:] == pytest.approx(plain["logprobs"]["token_logprobs"], abs=1e-6)
    offsets = lp["text_offset"]
    assert offsets[:n] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(n)]
    assert offsets[n] == len(TEXT)  # the answer's offsets count from the end of the echoed prompt
    assert reply["usage"]["prompt_tokens"] == n and reply["usage"]["completion_tokens"] == len(lp["tokens"]) - n


def test_max_tokens_0_with_echo_scores_the_prompt_only(server, ref):
    reply = completion(server, prompt=TEXT, max_tokens=0, logprobs=0, echo=True)
    (choice,) = reply["choices"]
    ids = ref.completion_ids(TEXT)
    assert choice["text"] == TEXT and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["tokens"]) == len(ids) and reply["usage"]["completion_tokens"] == 0
    assert all(len(top) == 1 for top in choice["logprobs"]["top_logprobs"][1:])  # logprobs 0: the token alone
    status, err = post(server, "/completions", {"model": MODEL_ID, "prompt": TEXT, "max_tokens": 0})
    assert status == 400 and err["error"]["param"] == "max_tokens" and "echo" in err["error"]["message"]


def test_echo_without_logprobs_is_text_only(server):
    choice = completion(server, prompt=TEXT, max_tokens=3, echo=True)["choices"][0]
    plain = completion(server, prompt=TEXT, max_tokens=3)["choices"][0]
    assert choice["text"] == TEXT + plain["text"] and choice["logprobs"] is None


def test_a_batch_of_token_id_prompts_answers_each_in_vllms_order(server, ref):
    a, b = ref.completion_ids("The sea is"), ref.completion_ids(TEXT)
    reply = completion(server, prompt=[a, b], max_tokens=2, logprobs=1, echo=True, n=2, seed=3, temperature=0.8)
    choices = reply["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for c, ids in zip(choices, [a, a, b, b]):  # choice i * n + j: prompt i's j-th answer
        assert c["text"].startswith(ref.tokenizer.decode(ids))
        assert c["logprobs"]["tokens"][: len(ids)] == [ref.tokenizer.token_text(i) for i in ids]
    assert reply["usage"]["prompt_tokens"] == len(a) + len(b)
    single = completion(server, prompt=b, max_tokens=2, logprobs=1, echo=True, n=2, seed=3, temperature=0.8)
    assert [c["text"] for c in single["choices"]] == [c["text"] for c in choices[2:]]


@pytest.mark.parametrize("prompt,words", [
    ([[1, 2], [10**7]], "outside this model's vocabulary"),
    ([], "non-empty"),
    ([[1, 2], "text"], None),  # a batch may mix them
    ([[1, True]], "non-empty"),
    ([["a"]], "non-empty"),
])
def test_bad_prompt_forms_are_400(server, prompt, words):
    status, reply = post(server, "/completions", {"model": MODEL_ID, "prompt": prompt, "max_tokens": 1})
    if words is None:
        assert status == 200 and len(reply["choices"]) == 2
        return
    assert status == 400 and reply["error"]["param"] == "prompt" and words in reply["error"]["message"]


def test_stream_with_echo_opens_each_choice_with_its_prompt(server):
    whole = completion(server, prompt=TEXT, max_tokens=4, logprobs=2, echo=True)["choices"][0]
    req = urllib.request.Request(server.base_url + "/completions", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": MODEL_ID, "prompt": TEXT, "max_tokens": 4, "logprobs": 2,
                                                  "echo": True, "temperature": 0, "stream": True}).encode())  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert chunks[0]["text"] == TEXT and chunks[0]["logprobs"]["token_logprobs"][0] is None
    assert "".join(c["text"] for c in chunks) == whole["text"]
    streamed = [v for c in chunks if c["logprobs"] for v in c["logprobs"]["token_logprobs"]]
    assert streamed[0] is None and whole["logprobs"]["token_logprobs"][0] is None
    assert streamed[1:] == pytest.approx(whole["logprobs"]["token_logprobs"][1:], abs=1e-5)  # (a cached prefix)


def test_lm_eval_loglikelihood_reads_the_continuations_logprob(server, ref):
    """lm-evaluation-harness's local-completions: context + continuation as ids, echo, max_tokens 1,
    logprobs 1; it sums token_logprobs[ctxlen:-1] and checks each is the top one (is_greedy)."""
    context, continuation = ref.tokenizer.encode("The capital of France is"), ref.tokenizer.encode(" Paris")
    reply = completion(server, prompt=[context + continuation], max_tokens=1, logprobs=1, echo=True, seed=1234)
    lp = reply["choices"][0]["logprobs"]
    ctxlen = len(context)
    total = sum(lp["token_logprobs"][ctxlen:-1])
    greedy_ = all(t == max(top.values()) for t, top in zip(lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1]))
    scored = score_ids(ref.model, ref.tokenizer, context + continuation, context_tokens=ctxlen, top_n=1)
    assert total == pytest.approx(sum(math.log(t.prob) for t in scored.tokens), abs=1e-5)
    assert greedy_ == all(t.rank == 1 for t in scored.tokens)


# ---- --served-model-name --------------------------------------------------------------------------


def test_served_model_names_are_listed_and_accepted_and_nothing_else(tiny_model_dir, ref):
    from chatcli.serve.server import BackgroundServer, build

    app = build(tiny_engine(tiny_model_dir), model_id=["org/model-a", "alias"], adapter_dirs=[])
    with BackgroundServer(app) as s:
        assert [m.id for m in client(s).models.list().data] == ["org/model-a", "alias"]
        _, done = reference(ref.chat(HELLO, greedy(5)))
        r = client(s).chat.completions.create(model="alias", messages=HELLO, temperature=0, max_tokens=5)
        assert r.model == "alias" and r.choices[0].message.content == done.text
        status, err = post(s, "/chat/completions", {"model": MODEL_ID, "messages": HELLO})
        assert status == 404 and "org/model-a, alias" in err["error"]["message"]
        assert post(s, "/tokenize", {"model": "alias", "prompt": "x"}, root=True)[0] == 200
        with pytest.raises(APIError, match="already been loaded"):  # an adapter cannot take a served name
            app.state.chatcli.adapters.load("alias", tiny_model_dir)
