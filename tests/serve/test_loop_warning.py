"""chatcli serve on a model that loops: the engine's loop Notice stays out of the API (whole and streamed)."""

from __future__ import annotations

import pytest

from chatcli.engine.events import Notice
from tests.looping import make_looping_checkpoint
from tests.serve_support import HELLO, MODEL_ID, client, greedy, served, tiny_engine

UNIT = "Romeadddaygreick"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(make_looping_checkpoint(tmp_path_factory.mktemp("looping")))


def test_the_answer_is_only_the_text_while_the_engine_warns(engine):
    assert any(isinstance(e, Notice) and e.kind == "loop" for e in engine.chat(HELLO, greedy(20)))  # it does warn
    with served(engine) as server:
        api = client(server)
        whole = api.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=20, temperature=0)
        assert whole.choices[0].message.content == UNIT * 4
        assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 20
        chunks = list(api.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=20, temperature=0, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == UNIT * 4
