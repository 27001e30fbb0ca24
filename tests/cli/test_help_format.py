"""`--help` reads well: panels, choices, env vars, no <bool> on switches, examples that really parse."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
import typer

from chatcli.cli import main as cli
from chatcli.cli.examples import EXAMPLES
from chatcli.cli.help_format import polish


def _help(*argv: str, columns: int = 80) -> str:
    import os

    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "chatcli", *argv, "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_generate_help_at_80_columns():
    text = _help("generate")
    assert "<bool>" not in text and "BOOLEAN" not in text
    assert "[float32|bfloat16|float16]" in text and "[none|int8|int4]" in text and "[raw|processed]" in text
    for panel in ("Prompt", "Sampling", "Model", "Output", "Remote server", "Examples"):
        assert f"─ {panel} " in text or f" {panel}" in text, panel
    assert "CHATCLI_TEMPERATURE" in text and "CHATCLI_MODEL" in text and "CHATCLI_ADAPTERS" in text
    assert "[default: 512]" in text  # "[...]" in a help text is shown, not taken for rich markup
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "chatcli generate " in text.split("Examples", 1)[1]


def test_chat_help_shows_tint_choices_and_preset():
    text = _help("chat")
    assert "[off|model_prob|entropy]" in text and "--preset" in text and "<bool>" not in text


def test_root_help_offers_completion():
    text = _help()
    assert "--install-completion" in text and "--show-completion" in text and "presets" in text


def _commands(command, path=""):
    for name, sub in getattr(command, "commands", {}).items():
        here = f"{path} {name}".strip()
        yield here, sub
        yield from _commands(sub, here)


def _root():
    cli._register_commands()
    root = typer.main.get_command(cli.app)
    polish(root)
    return root


def test_every_core_command_has_examples():
    from chatcli.cli.plugins import LazyCommand

    missing = [path for path, cmd in _commands(_root()) if not isinstance(cmd, LazyCommand) and path not in EXAMPLES]
    assert missing == []


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_examples_parse_against_their_command(path):
    root = _root()
    if path and path.split()[0] not in root.commands:
        pytest.skip(f"{path!r} is not registered in this tree")  # a command landing in parallel work
    for example in EXAMPLES[path]:
        words = shlex.split(example.split("| ", 1)[-1])
        words = words[words.index("chatcli") + 1:]
        command, ctx_words = root, words
        names = []
        while hasattr(command, "commands") and ctx_words and ctx_words[0] in command.commands:
            names.append(ctx_words[0])
            command, ctx_words = command.commands[ctx_words[0]], ctx_words[1:]
        assert " ".join(names[: len(path.split())]) == path, example  # a group's examples run its sub-commands
        if hasattr(command, "commands"):
            continue
        ctx = command.make_context(" ".join(["chatcli", *names]), list(ctx_words), resilient_parsing=False)
        assert ctx.params is not None  # parsed: every flag exists and every value converts


def test_polish_is_idempotent():
    root = _root()
    polish(root)
    generate = root.commands["generate"]
    temperature = next(p for p in generate.params if p.name == "temperature")
    assert temperature.help.count("\\[") == 1


def test_help_says_a_default_comes_from_the_config_file(_chatcli_home, capsys):
    (_chatcli_home / "config").mkdir(parents=True, exist_ok=True)
    (_chatcli_home / "config" / "config.toml").write_text("[defaults]\ntemperature = 0.3\n", encoding="utf-8")
    text = " ".join(_help("generate", columns=200).split())
    assert "(0.3, from the config file)" in text
