"""``/best N``: N answers graded, every score shown, the best kept as the reply; one line without a grader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from chatcli.chat.core import ChatCore
from chatcli.chat.frontend import FrontEnd
from chatcli.engine.loader import load_engine
from chatcli.errors import UsageError
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli_finetune.reward import RewardScorer, load_reward
from chatcli_finetune.rl.best import best_command, parse_best_args
from chatcli_finetune.rl.graders import max_words


class Ctx:
    """A line-based front end (no UI thread): /best runs at once."""

    frontend = FrontEnd("test")

    def __init__(self, core):
        self.core = core
        self.said: list = []
        self.redraws = 0

    def say(self, message, kind="info"):
        self.said.append((message, kind))

    def conversation_changed(self):
        self.redraws += 1


def _text(renderable) -> str:
    console = Console(record=True, width=160)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def chat(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu")
    core = ChatCore(engine)
    core.conv.add("user", "Say a number.")
    return Ctx(core)


def _reward_model(tmp: Path, engine) -> Path:
    """A reward model folder (SEQ_CLS: a zero LoRA and a random score head)."""
    q = "model.layers.0.self_attn.q_proj"
    lin = engine.model.get_submodule(q)
    head = torch.randn(1, engine.model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    adapter = LoRAAdapter(modules={q: ModuleLoRA(A=torch.zeros(2, lin.in_features), B=torch.zeros(lin.out_features, 2),
                                                 alpha=2.0)}, heads={"score": head})  # fmt: skip
    write_adapter(adapter, tmp / "rm")
    return tmp / "rm"


def test_best_keeps_the_highest_scored_answer_and_shows_every_score(chat):
    before = len(chat.core.conv.nodes)
    best_command(chat, "4 --reward rule:max-words=1")
    reply = chat.core.conv.path()[-1]
    assert reply.role == "assistant" and len(chat.core.conv.nodes) == before + 1 and chat.redraws == 1
    info = reply.meta["best_of"]
    assert info["n"] == 4 and info["grader"] == "rule:max-words=1" and len(info["scores"]) == 4
    assert info["scores"][info["candidate"]] == max(info["scores"])
    assert max_words(1)([], reply.content) == max(info["scores"])  # the kept text earns the best score
    assert reply.steps and "".join(s.text for s in reply.steps) == reply.content  # inspectable like any answer
    table, kind = chat.said[-1]
    text = _text(table)
    assert kind == "result" and "graded by rule:max-words=1" in text and "★" in text
    assert all(f"{s:+.3f}" in text for s in info["scores"])


def test_best_uses_the_loaded_reward_model_by_default(chat, tmp_path):
    engine = chat.core.engine
    load_reward(engine, _reward_model(tmp_path, engine), name="rm")
    best_command(chat, "3")
    reply = chat.core.conv.path()[-1]
    info = reply.meta["best_of"]
    assert info["grader"] == "reward model rm"
    again = RewardScorer(engine, "rm").score([{"role": "user", "content": "Say a number."}], [reply.content])
    assert again[0] == pytest.approx(max(info["scores"]), abs=1e-4)
    assert engine.adapters.info("rm").enabled is False  # the reward model never writes answers


def test_best_without_a_grader_or_a_question_is_one_line(chat, tiny_model_dir):
    with pytest.raises(UsageError, match="/best needs a grader: load a reward model"):
        best_command(chat, "")
    empty = Ctx(ChatCore(chat.core.engine))
    with pytest.raises(UsageError, match="needs a question"):
        best_command(empty, "--reward rule:max-words=3")
    with pytest.raises(UsageError, match="unknown grader"):
        best_command(chat, "--reward nothing-like-this")
    assert len(chat.core.conv.nodes) == 1  # nothing was added


@pytest.mark.parametrize("text, expected", [("", (4, None)), ("6", (6, None)), ("--reward rule:max-words=3 2", (2, "rule:max-words=3")),
                                            ("--reward=x", (4, "x"))])  # fmt: skip
def test_parse(text, expected):
    assert parse_best_args(text) == expected


@pytest.mark.parametrize("text", ["1", "11", "--reward", "4 5", "--temperature 1"])
def test_parse_refuses(text):
    with pytest.raises(UsageError, match="/best"):
        parse_best_args(text)


class ThreadedCtx(Ctx):
    """A front end whose widgets live on one thread (the TUI): /best works on a background thread."""

    frontend = FrontEnd("tui-like", live_status=True, ui_thread=True)

    def __init__(self, core):
        super().__init__(core)
        self.activity: list = []
        self.done = __import__("threading").Event()

    def set_activity(self, state):
        self.activity.append(state)

    def call_from_thread(self, fn, *args):
        fn(*args)
        self.done.set()

    def call_later(self, fn, *args):
        fn(*args)


def test_best_in_a_tui_like_chat_works_in_the_background_and_shows_it(chat):
    ctx = ThreadedCtx(chat.core)
    best_command(ctx, "2 --reward rule:contains=e")
    assert ctx.activity == ["best of 2"]  # busy at once: idle-only commands and new messages wait
    assert ctx.done.wait(120)
    assert ctx.activity == ["best of 2", None]
    assert chat.core.conv.path()[-1].meta["best_of"]["n"] == 2 and ctx.said[-1][1] == "result"
