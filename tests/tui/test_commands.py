"""Pilot tests of slash commands in the TUI: errors, hints and completion, the palette, conversation commands."""

from __future__ import annotations

from chatcli.chat.store import Store
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.prompt import CommandHints
from chatcli.tui.widgets.transcript import Note, UserMessage
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for


def _last_note(app) -> Note:
    return list(app.query(Note))[-1]


def test_set_changes_the_status_bar_and_bad_args_change_nothing():
    async def go():
        app = build_app(FakeEngine(length=5))
        async with app.run_test(size=(140, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "/set temperature 0.25")
            assert app.core.conv.params.temperature == 0.25
            assert app.status.info.params.temperature == 0.25
            assert "T 0.25" in str(app.status.query_one("#status-left").render())
            before = app.core.conv.params
            for line, expect in [
                ("/set temperature warm", "invalid temperature 'warm'"),
                ("/set top_p 2", "invalid top_p 2.0"),
                ("/set colour 3", "unknown parameter 'colour'"),
                ("/sett temperature 1", "unknown command /sett (did you mean /set?)"),
                ("/retry now", "too many arguments for /retry"),
            ]:
                await send(pilot, line)
                note = _last_note(app)
                assert note.kind == "error" and expect in note.plain and "\n" not in note.plain.strip(), line
                assert app.core.conv.params == before
            assert app.core.conv.is_empty()

    run(go())


def test_hints_and_tab_completion():
    async def go():
        app = build_app(FakeEngine(length=5))
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            hints = app.query_one(CommandHints)
            await pilot.press("slash", "r")
            assert hints.display
            shown = str(hints.render())
            assert "/raw" in shown and "/retry" in shown and "/resume" in shown and "/help" not in shown
            await pilot.press("e", "t")
            await pilot.press("tab")
            assert app.prompt.text == "/retry"
            await pilot.press("space")
            assert not hints.display
            app.prompt.load_text("/sy")
            await pilot.press("tab")
            assert app.prompt.text == "/system "
            await pilot.press("escape")
            assert not hints.display or app.prompt.text == "/system "

    run(go())


def test_palette_offers_every_command():
    async def go():
        app = build_app(FakeEngine(length=5))
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for c in app.registry.commands():  # the app's own registry, adapter commands included
                assert c.usage in titles
            assert "Tint tokens by certainty" in titles
            # a command without arguments runs; one with arguments is put in the prompt
            run_help = next(c for c in app.get_system_commands(app.screen) if c.title == "/help [COMMAND]")
            run_help.callback()
            await pilot.pause()
            assert app.prompt.text == "/help "
            run_model = next(c for c in app.get_system_commands(app.screen) if c.title == "/model")
            run_model.callback()
            await pilot.pause()
            assert "fake-tiny" in _last_note(app).plain
            await pilot.press("ctrl+p")
            await pilot.pause()
            assert app.screen is not app.screen_stack[0]
            await pilot.press("escape")  # Esc closes the palette (the app's Esc binding steps aside)
            await pilot.pause()
            assert app.screen is app.screen_stack[0]

    run(go())


def test_conversation_commands(tmp_path):
    async def go():
        store = Store.open(tmp_path / "h.db")
        app = build_app(FakeEngine(length=8), store=store)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "/system Answer in French.")
            await send(pilot, "bonjour")
            await until_idle(pilot)
            first = app.core.conv.id
            await send(pilot, "/raw")
            raw = _last_note(app).plain  # the last answer's own prompt, then how the next one starts
            asked, _, nxt = raw.partition("the next turn's prompt starts with")
            assert "<|im_start|>system\nAnswer in French.<|im_end|>" in asked
            assert asked.rstrip().endswith("<|im_start|>assistant")
            assert nxt.rstrip().endswith(app.core.conv.leaf.content.rstrip() + "<|im_end|>")
            await send(pilot, "/retry")
            await until_idle(pilot)
            assert len(app.transcript.answers()) == 1 and app.transcript.answers()[0].sibling_pos == (1, 2)
            await send(pilot, f"/save {tmp_path / 'out'}")
            assert (tmp_path / "out.md").read_text().count("## Assistant") == 1
            await send(pilot, "/clear")
            await pilot.pause()
            assert app.core.conv.is_empty() and app.core.conv.system == "Answer in French."
            assert not app.transcript.answers() and app.query("#welcome")
            await send(pilot, "/new")
            await pilot.pause()
            assert app.core.conv.system is None
            await send(pilot, "/history")
            assert "bonjour" in _last_note(app).plain
            await send(pilot, f"/resume {first}")
            await pilot.pause()
            assert app.core.conv.id == first and len(app.transcript.answers()) == 1
            assert [type(w) for w in app.transcript.children if isinstance(w, (UserMessage, AnswerView))] == [UserMessage, AnswerView]
            await send(pilot, "/quit")
            await pilot.pause(0.2)
        assert not app.is_running

    run(go())


def test_commands_refused_while_streaming_and_typing_from_an_answer():
    async def go():
        engine = FakeEngine(length=100000, delay=0.001)
        engine.hold_at = 10
        app = build_app(engine)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "go")
            await pilot.pause(0.1)
            await send(pilot, "/retry")
            assert "has to wait: the model is busy" in _last_note(app).plain
            await send(pilot, "another message")
            assert app.prompt.text == "another message"  # kept, not lost
            await pilot.press("escape")
            await until_idle(pilot)
            app.prompt.clear()
            await pilot.press("ctrl+up")
            assert isinstance(app.focused, AnswerView)
            await pilot.press("x", "h", "y")  # "x" is no inspector key: it and the keys after it go to the prompt
            assert app.focused is app.prompt and app.prompt.text == "xhy"

    run(go())


def test_the_plugin_manager_the_app_is_given_feeds_palette_commands_events_and_status():
    from textual.screen import Screen
    from textual.widgets import Static

    from chatcli.chat.commands import Command
    from chatcli.plugins.manager import TuiExtension

    class Hello(Screen):
        def compose(self):
            yield Static("hello from a plugin")

    class Manager:  # what the app uses of a PluginManager
        def __init__(self):
            self.events: list[str] = []
            self.factory_args: list = []  # what a screen factory is given: the chat's CommandContext

        def tui_extensions(self, kind=None):
            def factory(ctx):
                self.factory_args.append(ctx)
                return Hello()

            return [TuiExtension("hello", factory, "screen", "Open the hello screen", "demo")]

        def install_commands(self, registry):
            registry.add(Command("wave", lambda ctx: ctx.say("o/", "result"), "wave"))
            return ["wave"]

        def notify(self, hook, **fields):
            self.events.append(hook)

        def status_items(self):
            return [("demo: busy", None)]

    manager = Manager()

    async def go():
        app = build_app(FakeEngine(length=3), plugins=manager,
                        notes=["plugin 'broken' failed to load (ImportError: x); skipped"])  # fmt: skip
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert any("plugin 'broken'" in n.plain and n.kind == "warning" for n in app.query(Note))
            assert app.registry.get("wave") is not None and app.commands.frontend.screens
            await send(pilot, "hi")
            await until_idle(pilot)
            assert manager.events[0] == "message_added" and manager.events[-1] == "answer_finished"
            await wait_for(pilot, lambda: app.status.info.plugin == "demo: busy", timeout=5, what="the status item")
            entry = next(c for c in app.get_system_commands(app.screen) if c.title == "Open the hello screen")
            entry.callback()
            await pilot.pause()
            assert isinstance(app.screen, Hello)
            assert manager.factory_args == [app.commands] and app.commands.app is app

    run(go())
    assert build_app(FakeEngine()).registry.get("wave") is None  # another app, without the plugins, has no /wave


def test_adapter_commands_update_the_status_bar(tiny_model_dir, tmp_path):
    import torch

    from chatcli.engine.loader import load_engine
    from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
    from chatcli.engine.params import SamplingParams
    from chatcli.tui.app import make_app

    gen = torch.Generator().manual_seed(0)
    mods = {
        f"model.layers.{i}.self_attn.q_proj": ModuleLoRA(torch.randn(4, 64, generator=gen), torch.randn(64, 4, generator=gen), 8.0)
        for i in (0, 1)
    }
    adapter = write_adapter(LoRAAdapter(modules=mods), tmp_path / "sft")
    engine = load_engine(str(tiny_model_dir), device="cpu")

    async def go():
        app = make_app(lambda progress: engine, params=SamplingParams(temperature=0, max_tokens=6))
        async with app.run_test(size=(140, 30)) as pilot:
            await ready(pilot)
            assert "adapters none" in str(app.status.query_one("#status-left").render())
            await send(pilot, f"/load-lora {adapter} --name sft --scale 0.5")
            assert "lora: sft×0.5" in str(app.status.query_one("#status-left").render())
            await send(pilot, "hello")
            await until_idle(pilot)
            assert app.core.conv.leaf.steps  # the tiny model answers with the adapter on
            await send(pilot, "/lora-off sft")
            assert "adapters none" in str(app.status.query_one("#status-left").render())

    run(go())


def test_raw_new_and_save_read_what_each_answer_was_made_with(tmp_path):
    """Regressions (issue 14) in the full-screen chat: /raw showed a prompt the model never saw,
    /new reset the /set values silently, /save gave only the temperature of the moment."""

    async def go():
        engine = FakeEngine(length=4)
        app = build_app(engine)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "/system Answer in French.")
            await send(pilot, "/set temperature 0.3")
            await send(pilot, "bonjour")
            await until_idle(pilot)
            first = app.core.conv.leaf
            await send(pilot, "/system Be brief.")
            await send(pilot, "/set temperature 0.9")
            await send(pilot, "/raw")
            raw = _last_note(app).plain
            asked, _, nxt = raw.partition("the next turn's prompt starts with")
            assert asked.strip().endswith(engine.render_prompt(engine.calls[-1]["messages"]).strip())
            assert "Be brief." not in asked and "Be brief." in nxt and first.content.strip() in nxt

            await send(pilot, "again")
            await until_idle(pilot)
            await send(pilot, f"/save {tmp_path / 'out'}")
            md = (tmp_path / "out.md").read_text()
            made = [line for line in md.splitlines() if line.startswith("*generated with:*")]
            assert [line.split(",")[0] for line in made] == ["*generated with:* temperature 0.3",
                                                            "*generated with:* temperature 0.9"]

            await send(pilot, "/new")
            await wait_for(pilot, lambda: "kept /set temperature=0.9" in _last_note(app).plain, what="the /new line")
            assert app.core.conv.is_empty() and app.core.conv.params.temperature == 0.9 and app.core.conv.system is None

    run(go())
