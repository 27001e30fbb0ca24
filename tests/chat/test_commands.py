"""The slash-command registry: parsing, help, completion, did-you-mean, and each built-in command."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chatcli.chat.core import ChatCore
from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Arg, Command, Registry, execute, is_command, message_text
from chatcli.chat.repl import PLAIN
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.chat.store import Store
from tests.fake_engine import FakeEngine

PLAIN_REGISTRY = build_registry()  # what a front end without plugins offers


class Ctx:
    """A minimal front end: records what commands say and do."""

    def __init__(self, core: ChatCore, busy: bool = False) -> None:
        self.core = core
        self.registry = PLAIN_REGISTRY
        self.frontend = PLAIN
        self.busy = busy
        self.said: list[tuple[str, str]] = []
        self.jobs: list = []
        self.changed = 0
        self.tint = None
        self.quitted = False

    def say(self, message, kind="info"):
        buf = io.StringIO()
        Console(file=buf, width=200, color_system=None).print(message)
        self.said.append((buf.getvalue().strip(), kind))

    def run_job(self, job):
        self.jobs.append(job)
        list(self.core.run(job))

    def conversation_changed(self):
        self.changed += 1

    def set_tint(self, mode):
        self.tint = mode

    def quit(self):
        self.quitted = True

    def adapters_changed(self):
        pass

    @property
    def last(self) -> tuple[str, str]:
        return self.said[-1]


@pytest.fixture
def ctx(tmp_path) -> Ctx:
    store = Store.open(tmp_path / "h.db")
    return Ctx(ChatCore(FakeEngine(length=6), store=store, params=SamplingParams(temperature=0.7, seed=1)))


def test_parse_args_kinds_quotes_and_errors():
    reg = Registry()
    reg.add(Command("go", lambda ctx, **k: None, "go", (Arg("n", "int"), Arg("name", optional=True), Arg("rest", "text", optional=True))))
    assert reg.parse("/go 3")[1] == {"n": 3, "name": None, "rest": None}
    assert reg.parse('/go 3 "two words" and  the rest ')[1] == {"n": 3, "name": "two words", "rest": "and  the rest"}
    assert reg.parse("/GO 1 'x y'")[1]["name"] == "x y"
    with pytest.raises(UsageError, match="needs N"):
        reg.parse("/go")
    with pytest.raises(UsageError, match="must be an integer"):
        reg.parse("/go three")
    with pytest.raises(ValueError):
        reg.add(Command("go", lambda ctx: None, "dup"))


def test_unknown_command_suggests_the_closest():
    with pytest.raises(UsageError, match=r"unknown command /hepl \(did you mean /help\?\)"):
        PLAIN_REGISTRY.parse("/hepl")
    with pytest.raises(UsageError, match="did you mean /retry"):
        PLAIN_REGISTRY.parse("/rerty")
    with pytest.raises(UsageError, match="too many arguments for /retry"):
        PLAIN_REGISTRY.parse("/retry now please")


def test_help_lists_every_command_from_the_registry(ctx):
    assert execute(ctx, "/help")
    text, kind = ctx.last
    assert kind == "result"
    for c in PLAIN_REGISTRY.commands():
        assert c.usage in text and c.summary[:30] in text
    execute(ctx, "/help set")
    assert "/set [NAME] [VALUE]" in ctx.last[0] and "/retry" not in ctx.last[0]
    required = {"help", "set", "system", "clear", "new", "retry", "continue", "raw", "save", "history", "resume", "model", "quit"}
    assert required <= {c.name for c in PLAIN_REGISTRY.commands()}


def test_completion_by_prefix_and_alias():
    names = [c.name for c in PLAIN_REGISTRY.complete("re")]
    assert set(names) == {"resume", "retry"}
    assert [c.name for c in PLAIN_REGISTRY.complete("q")] == ["quit"]
    assert [c.name for c in PLAIN_REGISTRY.complete("exi")] == ["quit"]  # an alias completes to its command
    assert len(PLAIN_REGISTRY.complete("")) == len(PLAIN_REGISTRY.commands())


def test_is_command_and_slash_escape():
    assert is_command("/help") and is_command("  /set x 1")
    assert not is_command("//etc/passwd is a file") and not is_command("hello /x")
    assert message_text("//etc/hosts") == "/etc/hosts" and message_text(" hi ") == "hi"


def test_set_lists_changes_and_rejects_without_changing(ctx):
    execute(ctx, "/set")
    text = ctx.last[0]
    for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens", "seed", "top_shown"):
        assert name in text
    assert execute(ctx, "/set temperature 0.2") and ctx.core.conv.params.temperature == 0.2
    before = ctx.core.conv.params
    assert not execute(ctx, "/set temperature hot")
    assert ctx.last == ("invalid temperature 'hot': use a number", "error")
    assert not execute(ctx, "/set top_p 1.5")
    assert ctx.last[1] == "error" and "top_p" in ctx.last[0]
    assert ctx.core.conv.params == before
    execute(ctx, "/set top_k")
    assert ctx.last[0].startswith("top_k = 0 (off)")


def test_system_clear_new(ctx):
    execute(ctx, "/system You are a pirate.  Arr.")
    assert ctx.core.conv.system == "You are a pirate.  Arr."
    execute(ctx, "/system")
    assert "pirate" in ctx.last[0]
    ctx.core.set_param("temperature", "1.1")
    list(ctx.core.run(ctx.core.send("hi")))
    old = ctx.core.conv.id
    execute(ctx, "/clear")
    assert ctx.changed == 1 and ctx.core.conv.is_empty() and ctx.core.conv.system == "You are a pirate.  Arr."
    assert ctx.core.conv.params.temperature == 1.1
    execute(ctx, "/new")  # the default system prompt; the /set values carry over, and it says so
    assert ctx.core.conv.system is None and ctx.core.conv.params.temperature == 1.1
    assert ctx.last == ("new conversation; kept /set temperature=1.1", "info")
    ctx.core.set_param("temperature", "0.7")  # back to the session's start: nothing to mention
    said = len(ctx.said)
    execute(ctx, "/new")
    assert len(ctx.said) == said and ctx.core.conv.params.temperature == 0.7
    execute(ctx, "/system -")
    assert ctx.core.conv.system is None
    assert ctx.core.store.load(old).title == "hi"


def test_retry_continue_and_busy_refusal(ctx):
    assert not execute(ctx, "/retry")
    assert "nothing to retry" in ctx.last[0]
    list(ctx.core.run(ctx.core.send("hello")))
    execute(ctx, "/retry")
    assert ctx.jobs[-1].kind == "retry" and len(ctx.core.conv.nodes) == 3
    ctx.busy = True
    assert not execute(ctx, "/retry")
    assert "busy" in ctx.last[0] and len(ctx.core.conv.nodes) == 3
    ctx.busy = False
    assert not execute(ctx, "/continue")  # the answer is complete
    ctx.core.conv.leaf.status = "cancelled"
    assert execute(ctx, "/continue") and ctx.jobs[-1].kind == "continue"


def test_raw_model_save_history_resume_quit(ctx, tmp_path):
    list(ctx.core.run(ctx.core.send("hello")))
    execute(ctx, "/raw")
    assert "<|im_start|>user\nhello<|im_end|>" in ctx.last[0] and "tokens" in ctx.last[0]
    execute(ctx, "/model")
    assert "fake-tiny" in ctx.last[0] and "1,234,567" in ctx.last[0] and "2,048" in ctx.last[0]
    execute(ctx, f"/save {tmp_path / 'exp'}")
    assert (tmp_path / "exp.md").exists() and (tmp_path / "exp.json").exists()
    first = ctx.core.conv.id
    execute(ctx, "/new")
    list(ctx.core.run(ctx.core.send("second")))
    execute(ctx, "/history")
    assert "hello" in ctx.last[0] and "second" in ctx.last[0]
    assert execute(ctx, f"/resume {first}") and ctx.core.conv.id == first
    assert ctx.last[0].startswith(f"resumed conversation {first}")
    assert not execute(ctx, "/resume abc")
    assert "must be an integer" in ctx.last[0]
    execute(ctx, "/tint entropy")
    assert ctx.tint == "entropy"
    assert not execute(ctx, "/tint loud")
    execute(ctx, "/exit")
    assert ctx.quitted


def test_history_without_store():
    c = Ctx(ChatCore(FakeEngine()))
    assert not execute(c, "/history")
    assert "not available" in c.last[0]


class _Plugins:
    """A plugin host as the chat sees it: commands to add, events to hear."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def install_commands(self, registry: Registry) -> list[str]:
        registry.add(Command("shout", lambda ctx: ctx.say("HI", "result"), "shout"))
        return ["shout"]

    def notify(self, hook: str, **fields) -> None:
        self.events.append(hook)


def test_each_front_end_builds_its_own_registry():
    from chatcli.chat.lora_commands import COMMANDS as ADAPTER_COMMANDS

    plain, with_plugins = build_registry(), build_registry(_Plugins())
    assert plain is not build_registry() and plain.get("help").func is build_registry().get("help").func
    assert {c.name for c in ADAPTER_COMMANDS} <= set(plain.names())  # the adapter commands are built in
    assert with_plugins.get("shout") is not None
    assert plain.get("shout") is None and build_registry().get("shout") is None  # nothing leaks between front ends


def test_did_you_mean_is_the_one_spelling_hint():
    from chatcli.errors import did_you_mean

    assert did_you_mean("hepl", ["help", "set"], slash=True) == " (did you mean /help?)"
    assert did_you_mean("temprature", ["temperature", "top_k"]) == " (did you mean temperature?)"
    assert did_you_mean("zz", ["help"]) == ""
    with pytest.raises(UsageError, match=r"unknown parameter 'temprature' \(did you mean temperature\?\)"):
        ctx = Ctx(ChatCore(FakeEngine()))
        ctx.core.set_param("temprature", "0.5")
