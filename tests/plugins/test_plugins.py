"""The plugin system: discovery, selection, laziness, isolation of broken plugins, the README examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Registry, execute
from chatcli.paths import config_dir
from chatcli.plugins.manager import PluginManager

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_plugins(monkeypatch):
    """Plugin modules are forgotten after each test (managers are the tests' own: there is no process-wide one)."""
    monkeypatch.delenv("CHATCLI_PLUGINS", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("chatcli_user_plugins", "chatcli_greet")):
            del sys.modules[name]


def _plugin_section() -> str:
    """The README's "Writing a plugin" section: its examples are what these tests install."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Writing a plugin")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def user_plugin(name: str, code: str) -> Path:
    folder = config_dir() / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _plugin_section(), flags=re.S)


class Ctx:
    """The least a slash command needs: somewhere to say things."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.said, self.busy, self.core = registry, [], False, None

    def say(self, message, kind="info") -> None:
        self.said.append((str(message), kind))


def chatcli(*args: str, env: dict | None = None, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "CHATCLI_PLUGINS"}
    full.update(env or {})
    if pythonpath is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(pythonpath), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "chatcli", *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)


# --- the README examples, installed and exercised -----------------------------------------------


def test_readme_single_file_plugin_adds_a_command_and_sees_answers():
    from chatcli.chat.core import ChatCore
    from tests.fake_engine import FakeEngine

    user_plugin("shout", readme_blocks("python")[0])
    m = PluginManager(entry_points=[])
    infos = {i.name: i for i in m.list()}
    info = infos["shout"]
    assert info.status == "loaded" and info.version == "0.1" and info.commands == ["/shout"]
    assert info.source.startswith("user file ") and info.source.endswith("shout.py")
    reg = Registry()
    assert m.install_commands(reg) == ["shout"]
    assert m.install_commands(reg) == [] and not m.problems  # a second front end start installs nothing twice
    ctx = Ctx(reg)
    assert execute(ctx, "/shout hello there")
    assert ctx.said == [("HELLO THERE!", "result")]

    core = ChatCore(FakeEngine(length=7), listeners=[m.notify])  # the front end hands the core its manager's notify
    list(core.run(core.send("hi")))
    assert sys.modules["chatcli_user_plugins.shout"].answers == [("stop", 7)]


def _greet_dist(site: Path, marker: Path) -> None:
    """The README's package example as an installed distribution (a dist-info on sys.path)."""
    toml_block = readme_blocks("toml")[0]
    entry = re.search(r'^(\w+)\s*=\s*"([\w.]+)"', toml_block, flags=re.M)
    init_code, cli_code = readme_blocks("python")[1:3]
    pkg = site / "chatcli_greet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(init_code, encoding="utf-8")
    # The test's only addition: importing the CLI module leaves a mark, to prove it happens late.
    (pkg / "cli.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + cli_code, encoding="utf-8")
    info = site / "chatcli_greet-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chatcli-greet\nVersion: 1.2.3\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[chatcli.plugins]\n{entry.group(1)} = {entry.group(2)}\n", encoding="utf-8")


def test_readme_package_plugin_registers_a_lazy_cli_subcommand(tmp_path, _chatcli_home):
    site, marker = tmp_path / "site", tmp_path / "imported-greet-cli"
    _greet_dist(site, marker)

    r = chatcli("--help", pythonpath=site)
    assert r.returncode == 0 and re.search(r"greet\s+Print a greeting", r.stdout), r.stdout + r.stderr
    assert not marker.exists()  # listed by name; its module was not imported

    r = chatcli("greet", "--name", "you", pythonpath=site)
    assert r.returncode == 0 and r.stdout.strip() == "hello you", r.stderr
    assert marker.exists()

    r = chatcli("plugins", "list", "--json", pythonpath=site)
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["greet"] == {
        "name": "greet", "version": "1.2.3", "source": "entry point (chatcli-greet)", "status": "loaded",
        "error": None, "commands": [], "cli": ["greet"], "tui": [],
    }
    assert rows["rank"]["status"] == "loaded" and rows["rank"]["commands"] == ["/rank"] and rows["rank"]["cli"] == ["rank"]


_PROBE = """
import atexit, sys
def report():
    names = [m for m in sys.modules if m.startswith(("chatcli_rank", "chatcli_finetune", "chatcli_greet", "chatcli_user_plugins"))]
    sys.stderr.write("IMPORTED:" + ",".join(sorted(names)) + "\\n")
atexit.register(report)
from chatcli.cli.main import main
main(sys.argv[1:])
"""


def test_generate_never_imports_plugins(tmp_path, tiny_model_dir, _chatcli_home):
    site, marker = tmp_path / "site", tmp_path / "imported-greet-cli"
    _greet_dist(site, marker)
    loud = tmp_path / "imported-user-plugin"
    user_plugin("loud", f"open({str(loud)!r}, 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("CHATCLI_PLUGINS", None)
    r = subprocess.run([sys.executable, "-c", _PROBE, "generate", "--print-prompt", "-m", str(tiny_model_dir), "hi"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "<|im_start|>user\nhi" in r.stdout
    assert "IMPORTED:\n" in r.stderr  # no plugin module at all: not rank, not the package, not the user file
    assert not marker.exists() and not loud.exists()
    # ...while a plugin's own command does load them
    r = subprocess.run([sys.executable, "-c", _PROBE, "rank", "stats", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "chatcli_rank" in r.stderr and loud.exists()


# --- broken plugins ------------------------------------------------------------------------------


def test_broken_plugins_are_reported_once_and_skipped():
    user_plugin("good", """
        from chatcli.plugins.hookspecs import hookimpl
        seen = []
        @hookimpl
        def register_commands(register):
            register("good", lambda ctx: ctx.say("fine"), "works")
        @hookimpl
        def step_generated(step):
            seen.append(step)
    """)
    user_plugin("syntax", "def broken(:\n    pass\n")
    user_plugin("boom", "raise RuntimeError('no GPU here')\n")
    user_plugin("hookfail", """
        from chatcli.plugins.hookspecs import hookimpl
        @hookimpl
        def register_commands(register):
            raise ValueError("bad registration")
    """)
    user_plugin("eventfail", """
        from chatcli.plugins.hookspecs import hookimpl
        @hookimpl
        def step_generated(step, message):
            raise KeyError(step)
    """)
    problems: list[str] = []
    m = PluginManager(entry_points=[], report=problems.append)
    infos = {i.name: i for i in m.list()}
    assert infos["good"].status == "loaded" and infos["good"].commands == ["/good"]
    assert infos["syntax"].status == "error" and "SyntaxError" in infos["syntax"].error and "line 1" in infos["syntax"].error
    assert infos["boom"].status == "error" and infos["boom"].error == "RuntimeError: no GPU here"
    assert infos["hookfail"].status == "error" and "raised in register_commands (ValueError: bad registration)" in infos["hookfail"].error
    reg = Registry()
    assert m.install_commands(reg) == ["good"]
    for k in range(5):
        m.notify("step_generated", step=k, message=None, conversation=None)
    assert infos["eventfail"].status == "error" and "raised in step_generated (KeyError: 0)" in infos["eventfail"].error
    assert sys.modules["chatcli_user_plugins.good"].seen == [0, 1, 2, 3, 4]  # the others go on
    m.list(), m.install_commands(Registry())
    # one line per broken plugin, each once, naming it
    assert sorted(p.split("'")[1] for p in problems) == ["boom", "eventfail", "hookfail", "syntax"]
    assert all("\n" not in p for p in problems)


def test_broken_plugin_does_not_stop_the_cli(tmp_path):
    user_plugin("boom", "raise RuntimeError('no GPU here')\n")
    r = chatcli("plugins", "list")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "boom" in r.stdout and "RuntimeError: no GPU here" in r.stdout and "loaded" in r.stdout
    r = chatcli("rank", "stats", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rankings"] == 0
    assert r.stderr.count("plugin 'boom' failed to load (RuntimeError: no GPU here); skipped") == 1


def test_a_plugin_command_that_cannot_be_imported_is_one_line(capsys):
    from chatcli.cli.main import main

    user_plugin("ghost", """
        from chatcli.plugins.hookspecs import hookimpl
        @hookimpl
        def register_cli(register):
            register("ghost", "no_such_module_here:app", "a command that is not there")
    """)
    with pytest.raises(SystemExit) as exc:
        main(["ghost", "run"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1
    assert err.startswith("chatcli: error: plugin 'ghost' cannot load its command 'ghost' from no_such_module_here:app")


def test_names_taken_by_chatcli_are_left_out():
    user_plugin("clash", """
        from chatcli.plugins.hookspecs import hookimpl
        @hookimpl
        def register_commands(register):
            register("help", lambda ctx: None, "steal /help")
            register("mine", lambda ctx: None, "mine")
    """)
    problems: list[str] = []
    reg = build_registry(PluginManager(entry_points=[], report=problems.append))
    assert reg.get("mine") is not None and reg.get("help").func is build_registry().get("help").func
    assert problems == ["plugin 'clash': command /help is already registered; its /help is left out"]


# --- selection -----------------------------------------------------------------------------------


def _marked_plugin(tmp_path: Path, name: str) -> Path:
    mark = tmp_path / f"imported-{name}"
    user_plugin(name, f"open({str(mark)!r}, 'w').close()\n")
    return mark


def _statuses(**kw) -> dict[str, str]:
    return {i.name: i.status for i in PluginManager(**kw).list()}


def test_chatcli_plugins_env_selects_and_none_imports_nothing(tmp_path, monkeypatch):
    a, b = _marked_plugin(tmp_path, "alpha"), _marked_plugin(tmp_path, "beta")
    monkeypatch.setenv("CHATCLI_PLUGINS", "none")
    assert _statuses() == {"finetune": "disabled", "rank": "disabled", "alpha": "disabled", "beta": "disabled"}
    assert not a.exists() and not b.exists()  # disabled plugins are never imported
    monkeypatch.setenv("CHATCLI_PLUGINS", "alpha")
    assert _statuses() == {"finetune": "disabled", "rank": "disabled", "alpha": "loaded", "beta": "disabled"}
    assert a.exists() and not b.exists()
    problems: list[str] = []
    monkeypatch.setenv("CHATCLI_PLUGINS", "alpha,nosuch")
    PluginManager(report=problems.append).load()
    assert problems == ["plugin 'nosuch' is selected but not installed (known: alpha, beta, finetune, rank)"]


def test_config_file_selects_and_the_env_var_wins(tmp_path, monkeypatch):
    _marked_plugin(tmp_path, "alpha")
    (config_dir() / "config.toml").write_text('plugins = ["alpha"]\n', encoding="utf-8")
    assert _statuses() == {"finetune": "disabled", "rank": "disabled", "alpha": "loaded"}
    monkeypatch.setenv("CHATCLI_PLUGINS", "all")
    assert _statuses() == {"finetune": "loaded", "rank": "loaded", "alpha": "loaded"}
    monkeypatch.delenv("CHATCLI_PLUGINS")
    (config_dir() / "config.toml").unlink()
    (config_dir() / "config.json").write_text('{"plugins": "none"}', encoding="utf-8")
    assert _statuses() == {"finetune": "disabled", "rank": "disabled", "alpha": "disabled"}
    (config_dir() / "config.json").write_text('{"plugins": 5}', encoding="utf-8")
    problems: list[str] = []
    assert _statuses(report=problems.append) == {"finetune": "loaded", "rank": "loaded", "alpha": "loaded"}
    assert problems and "must be" in problems[0] and "config.json" in problems[0]
    (config_dir() / "config.json").unlink()
    (config_dir() / "config.toml").write_text("plugins = [\n", encoding="utf-8")
    problems.clear()
    assert _statuses(report=problems.append) == {"finetune": "loaded", "rank": "loaded", "alpha": "loaded"}
    assert problems[0].startswith(f"cannot read {config_dir() / 'config.toml'}")


def test_events_reach_only_the_manager_a_chat_was_given():
    from chatcli.chat.core import ChatCore
    from tests.fake_engine import FakeEngine

    user_plugin("ears", """
        from chatcli.plugins.hookspecs import hookimpl
        heard = []
        @hookimpl
        def answer_finished(done):
            heard.append(done.finish_reason)
    """)
    m = PluginManager(entry_points=[]).load()
    heard = sys.modules["chatcli_user_plugins.ears"].heard
    core = ChatCore(FakeEngine(length=2))  # a chat without plugins: loading a manager elsewhere changes nothing
    list(core.run(core.send("hi")))
    assert heard == []
    core = ChatCore(FakeEngine(length=2), listeners=[m.notify])
    list(core.run(core.send("hi")))
    assert heard == ["stop"]
