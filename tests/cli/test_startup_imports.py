"""What ``chatcli generate`` imports (issue 8, start-up time): only what the command needs.

Each check runs the CLI in a fresh ``python -c`` process and lists ``sys.modules`` at the
end, so an import added anywhere on the path (a module-level ``import rich`` in a command
module, plugin discovery, torch's compiler pulled in by building the model on the meta
device) fails here by name, not as a slower start nobody notices.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run the CLI as the console script does, then print the loaded modules that match a prefix.
_PROBE = r"""
import json, sys
from chatcli.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code not in (0, None):
        raise
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""

# Never needed to answer one prompt from a local model.
NOT_FOR_GENERATE = (
    "textual", "rich", "transformers", "peft", "huggingface_hub", "gguf", "pluggy",
    "chatcli_rank", "chatcli_finetune",  # first-party plugins (rank, finetune and its training modules)
    "chatcli.tui", "chatcli.plugins", "chatcli_user_plugins",
    "torch._dynamo",  # ~1.4 s: what running initializers on meta tensors used to import
    "chatcli.lora.peft_io", "regex",  # ~45 ms: PEFT I/O and its regex budget load with the first adapter
    "pydantic", "pydantic_core",  # ~6 MB resident: typer's coercion, bypassed for plain values (issue 18)
    # The other commands' modules (issue 18: importing them and building their options cost ~0.1 s).
    "chatcli.cli.chat", "chatcli.cli.serve", "chatcli.cli.inspect", "chatcli.cli.probes", "chatcli.cli.models",
    "chatcli.cli.lora", "chatcli.cli.presets", "chatcli.cli.tour", "chatcli.bench",
)


def _loaded(*argv: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stderr.strip().splitlines()[-1]))


def _matching(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_generate_loads_no_tui_plugins_training_or_compiler(tiny_model_dir):
    modules = _loaded("generate", "hello", "--model", str(tiny_model_dir), "-n", "2", "--temperature", "0")
    assert "torch" in modules and "chatcli.engine.generate" in modules  # it did generate
    assert _matching(modules, NOT_FOR_GENERATE) == []


def test_generate_help_loads_no_torch():
    modules = _loaded("generate", "--help")
    heavy = ("torch", "tokenizers", "jinja2", *NOT_FOR_GENERATE)
    assert _matching(modules, tuple(p for p in heavy if p != "rich")) == []  # typer draws help with rich


@pytest.mark.parametrize("command", ["models", "lora", "plugins"])
def test_core_command_help_loads_no_plugins(command):
    assert _matching(_loaded(command, "--help"), ("pluggy", "chatcli_rank", "chatcli_finetune", "chatcli.plugins", "textual")) == []


def test_a_command_registered_alone_leaves_the_full_help_in_its_order(monkeypatch):
    import typer

    from chatcli.cli import main as cli

    def names() -> list[str]:
        return list(typer.main.get_command(cli.app).commands)

    monkeypatch.setattr(cli.app, "registered_commands", [])
    monkeypatch.setattr(cli.app, "registered_groups", [])
    monkeypatch.setattr(cli, "_registered", set())
    cli._register_commands()
    full = names()
    assert {"generate", "score", "history", "bench", "models"} <= set(full)
    for word in ("history", "score"):  # each word registers its module alone, then everything again in order
        cli.app.registered_commands.clear()
        cli.app.registered_groups.clear()
        cli._registered.clear()
        cli._register_commands(word)
        assert word in names() and "generate" not in names()
        cli._register_commands()
        assert names() == full
