"""How ``--help`` reads: option panels, flags without a value placeholder, examples under each command.

:func:`polish` walks the built command tree once per run (no import, no I/O; ``--help``
stays instant) and

* puts the options of a command with many of them into panels by what they are about
  (:data:`PANELS`: Prompt, Sampling, Model, Output, History, Remote server), keeping any
  panel a command chose itself;
* gives flags (``--json``, ``--raw``, ``--help``) an empty placeholder (typer would show
  ``<bool>`` for a switch that takes no value), and repeatable text options ``TEXT``, not
  ``<list[str]>``;
* names each argument by its metavar in capitals (``PROMPT``, not ``prompt``);
* escapes ``[`` in option help, so ``[default: 0.7]`` is shown, not read as rich markup;
* adds the command's examples (:data:`chatcli.cli.examples.EXAMPLES`) as its epilog.
"""

from __future__ import annotations

import re
from typing import Any

from chatcli.cli.examples import EXAMPLES

# Option (parameter) name -> panel. Options not listed stay under "Options".
PANELS: dict[str, str] = {
    **dict.fromkeys(("model", "preset", "dtype", "quantize", "device", "threads", "lora"), "Model"),
    **dict.fromkeys(("system", "raw", "think", "chat_template"), "Prompt"),
    **dict.fromkeys(("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens", "seed", "stop"),
                    "Sampling"),
    **dict.fromkeys(("top", "as_json", "show_probs", "print_prompt", "tint", "plain"), "Output"),
    **dict.fromkeys(("resume", "continue_", "save"), "History"),
    **dict.fromkeys(("endpoint", "api_key_env", "timeout", "logprobs_mode"), "Remote server"),
}  # fmt: skip
MIN_OPTIONS_FOR_PANELS = 7  # a command with a handful of options reads best as one list


class _HelpNames:
    """What ``Command.get_help_option`` reads of a context: the root's help option names."""

    help_option_names = ["-h", "--help"]


HELP_NAMES = _HelpNames()  # also read by chatcli.cli.option_layers.read_plain_values


def polish(root: Any) -> None:
    """Apply the help conventions to every command under ``root`` (idempotent)."""
    _polish_command(root, "")


def _polish_command(command: Any, path: str) -> None:
    params = getattr(command, "params", [])
    options = [p for p in params if getattr(p, "param_type_name", "") == "option"]
    grouped = len(options) >= MIN_OPTIONS_FOR_PANELS
    for param in params:
        if getattr(param, "param_type_name", "") == "argument":
            if param.metavar is None:
                param.metavar = param.name.upper()
            continue
        if getattr(param, "help", None):
            param.help = _escape(param.help)  # "[default: 0.7]" is text, not a rich style tag
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a switch takes no value: no <bool>
        elif getattr(param, "multiple", False) and param.metavar is None and _of_strings(param):
            param.metavar = "TEXT"  # a repeatable text option, not <list[str]>: "(repeatable)" is in its help
        if grouped and getattr(param, "rich_help_panel", None) is None and param.name in PANELS:
            param.rich_help_panel = PANELS[param.name]
    helper = command.get_help_option(HELP_NAMES) if hasattr(command, "get_help_option") else None
    if helper is not None and helper.metavar is None:
        helper.metavar = ""  # built once and cached by the command: --help is a switch too
    examples = EXAMPLES.get(path)
    if examples and not getattr(command, "epilog", None):
        command.epilog = _epilog(examples)
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "params", None) is None:  # a plugin's lazy placeholder: its own help when it loads
            continue
        _polish_command(sub, f"{path} {name}".strip())


def _of_strings(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    return "list[str]" in str(getattr(descriptor, "annotation", ""))


def _epilog(examples: tuple[str, ...]) -> str:
    """An "Examples" block: one paragraph, one line per example (rich markup: typer's help mode)."""
    return "[bold]Examples[/bold]\n" + "\n".join(f"  [dim]$[/dim] {_escape(e)}" for e in examples)


def _escape(text: str) -> str:
    """``text`` with every ``[`` not yet escaped escaped: typer renders help as rich markup, where
    ``[default: 0.7]`` would be taken for a style tag and vanish. Idempotent (main may run many times)."""
    return re.sub(r"(?<!\\)\[", r"\\[", text)
