"""A chat's sampling layers: the model's values under the session's, /set on top, resume and /new."""

from __future__ import annotations

import pytest

from chatcli.chat.core import ChatCore
from chatcli.chat.store import Store
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.hub.generation_config import GenerationDefaults
from chatcli.settings.sampling_state import SamplingState
from tests.fake_engine import FakeEngine


def engine_recommending(**sampling) -> FakeEngine:
    engine = FakeEngine(length=4)
    engine.generation_defaults = GenerationDefaults(sampling=dict(sampling))
    return engine


def test_model_values_apply_once_the_model_is_attached():
    core = ChatCore(None, layers={"config": {"top_k": 20}})
    assert core.conv.params.temperature == 0.7 and core.param_source("temperature") == "built-in"
    core.attach_engine(engine_recommending(temperature=0.2, top_p=0.9, top_k=50))
    p = core.conv.params
    assert (p.temperature, p.top_p, p.top_k) == (0.2, 0.9, 20)
    assert [core.param_source(k) for k in ("temperature", "top_p", "top_k", "max_tokens")] == [
        "model", "model", "config", "built-in"]


def test_set_is_the_latest_word_even_over_a_flag():
    core = ChatCore(engine_recommending(temperature=0.2), layers={"flag": {"temperature": 0.0}})
    assert core.conv.params.temperature == 0.0 and core.param_source("temperature") == "flag"
    assert core.set_param("temperature", "0.8") == "temperature = 0.8"
    assert core.conv.params.temperature == 0.8 and core.param_source("temperature") == "/set"
    assert core.param_source("top_shown") == "built-in"
    core.set_param("top_shown", "3")
    assert core.conv.params.top_n == 3 and core.param_source("top_shown") == "/set"


def test_a_bad_set_changes_nothing():
    core = ChatCore(engine_recommending(temperature=0.2))
    before = (core.conv.params, dict(core.param_sources))
    with pytest.raises(UsageError):
        core.set_param("top_p", "2")
    assert (core.conv.params, core.param_sources) == before


def test_seed_none_over_a_configured_seed():
    core = ChatCore(FakeEngine(length=2), layers={"config": {"seed": 7}})
    assert core.conv.params.seed == 7
    core.set_param("seed", "none")
    assert core.conv.params.seed is None and core.param_source("seed") == "/set"


def test_a_new_model_brings_its_values_and_set_values_stay():
    core = ChatCore(engine_recommending(temperature=0.2, top_p=0.9))
    core.set_param("top_p", "0.5")
    core.attach_engine(engine_recommending(temperature=0.6, top_k=20))
    p = core.conv.params
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 0.5, 20)


def test_resumed_conversation_keeps_its_values_under_the_reopening_flags(tmp_path):
    store = Store.open(tmp_path / "h.db")
    first = ChatCore(engine_recommending(temperature=0.2), store=store)
    first.set_param("temperature", "1.1")
    first.set_param("max_tokens", "64")
    list(first.run(first.send("hello")))
    conv_id = first.conv.id

    again = ChatCore(engine_recommending(temperature=0.2), store=store, layers={"flag": {"max_tokens": 32}})
    again.resume(conv_id)
    p = again.conv.params
    assert (p.temperature, p.max_tokens) == (1.1, 32)  # its own temperature; the reopening flag wins
    assert again.param_source("temperature") == "/set" and again.param_source("max_tokens") == "flag"
    assert again.param_source("top_p") == "built-in"


def test_resume_before_the_model_loads_labels_values_once_it_has():
    """The full-screen chat reopens a conversation before its model has loaded."""
    state = SamplingState()
    state.resume(SamplingParams(temperature=0.2, top_p=0.9))
    assert state.resolve().sources["temperature"] == "/set"  # differs from the built-in 0.7 so far
    resolved = state.attach_model({"temperature": 0.2, "top_p": 0.9})
    assert resolved.params.temperature == 0.2 and resolved.sources["temperature"] == "model"


def test_new_conversation_keeps_what_was_set():
    core = ChatCore(engine_recommending(temperature=0.2), layers={"flag": {"top_k": 5}})
    core.set_param("temperature", "0.9")
    core.new_conversation(keep_system=False)
    assert core.conv.params.temperature == 0.9 and core.param_source("temperature") == "/set"
    assert core.conv.params.top_k == 5 and core.changed_params() == ["temperature=0.9"]


def test_params_argument_counts_its_chosen_values_as_flags():
    core = ChatCore(engine_recommending(temperature=0.2, top_p=0.9), params=SamplingParams(top_p=0.5, seed=3))
    p = core.conv.params
    assert (p.temperature, p.top_p, p.seed) == (0.2, 0.5, 3)
    assert core.param_source("top_p") == "flag" and core.param_source("temperature") == "model"


def test_a_session_layer_name_is_checked():
    with pytest.raises(ValueError, match="a chat session starts from"):
        SamplingState({"/set": {"temperature": 1.0}})


def test_model_file_problems_are_said_once_attached():
    said = []
    engine = FakeEngine(length=2)
    engine.generation_defaults = GenerationDefaults(problems=("temperature -1 (use a number >= 0)",))
    ChatCore(engine, on_notice=lambda message, kind: said.append((kind, message)))
    assert said == [("warning", "the model's generation_config.json has temperature -1 (use a number >= 0): "
                                "left out, the next layer's value is used")]


def test_set_lists_each_values_source():
    """/set shows where every value came from, and /set NAME says it too."""
    from tests.chat.test_commands import Ctx

    from chatcli.chat.commands import execute

    ctx = Ctx(ChatCore(engine_recommending(temperature=0.2, top_p=0.9), layers={"flag": {"max_tokens": 64}}))
    execute(ctx, "/set top_k 40")
    execute(ctx, "/set")
    rows = {line.split()[0]: line.split() for line in ctx.last[0].splitlines()}
    assert rows["temperature"][1:3] == ["0.2", "model"]
    assert rows["top_p"][1:3] == ["0.9", "model"]
    assert rows["top_k"][1:3] == ["40", "/set"]
    assert rows["max_tokens"][1:3] == ["64", "flag"]
    assert rows["min_p"][1:4] == ["0.0", "(off)", "built-in"]
    execute(ctx, "/set temperature")
    assert ctx.last == ("temperature = 0.2   (from model; 0 = greedy; higher = flatter distribution)", "result")
