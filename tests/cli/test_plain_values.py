"""Plain option values typed without pydantic (chatcli.cli.option_layers.read_plain_values, issue 18):
every value gives what typer's own coercion gives, value, type or error, and anything else still goes
to typer's coercion."""

from __future__ import annotations

import pytest
import typer
from typer._click.core import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from chatcli.cli import main as cli
from chatcli.cli.option_layers import _PlainValue, read_plain_values
from tests.cli_support import run

app = typer.Typer(add_completion=False)


@app.command()
def probe(
    text: str | None = typer.Option(None),
    whole: int | None = typer.Option(None),
    number: float | None = typer.Option(None),
    switch: bool | None = typer.Option(None, "--switch"),
    texts: list[str] | None = typer.Option(None, "--texts"),
    name: str = typer.Argument("x"),
) -> None:
    """Options of each plain kind."""


VALUES = [
    None, "", " ", "5", " 5 ", "-5", "+5", "-0", "0", "007", "00", "1_000", "0x10", "5.0", "5.", ".5", "1.5",
    "-1.25", "0.1", "1e3", "1E-3", "inf", "-inf", "nan", "NaN", "٣", "５", "1" * 18, "1" * 19, "1" * 40,
    "0." + "3" * 18, "3" * 18 + ".5", "-", "abc", "1 2", "\udcff", "héllo", "x\ny", "\t7",
    "true", "True", "TRUE", " yes ", "YES", "y", "Y", "t", "on", "On", "1", "false", "F", "n", "No", "off", "OFF",
    "\u00a0yes", "tru", "2", "yes!", "ｙｅｓ", "İ", "\tno\n",
    5, 0, -3, 2**70, 5.0, 0.5, float("inf"), True, False, ("a", "b"), ["a"], (), ("a", 1), [b"a"], b"5",
]  # fmt: skip


def _outcome(runtime, value, param, ctx):
    """(type, value) or ("error", message) of one coercion."""
    try:
        got = runtime.coerce(value, param=param, ctx=ctx)
    except BadParameter as e:
        return "error", e.format_message()
    return type(got), got


@pytest.mark.parametrize("name", ["text", "whole", "number", "switch", "texts", "name"])
def test_every_value_is_typed_as_typer_types_it(name):
    command = typer.main.get_command(app)
    ctx = Context(command)
    param = next(p for p in command.params if p.name == name)
    typers, ours = build_runtime_param(param.type_descriptor), _PlainValue(param.type_descriptor, build_runtime_param)
    for value in VALUES:
        want, got = _outcome(typers, value, param, ctx), _outcome(ours, value, param, ctx)
        if want[0] is float and got[0] is float and want[1] != want[1]:
            assert got[1] != got[1], (name, value)  # nan is nan
        else:
            assert got == want, (name, value)


def test_only_plain_options_and_help_are_read_plainly():
    bounded = typer.Typer(add_completion=False)

    @bounded.command()
    def cmd(
        count: int = typer.Option(1, min=0), word: str = typer.Option("a"),
        ratio: float = typer.Option(0.5, clamp=True, max=1),
    ) -> None:
        """Bounded numbers keep typer's coercion."""

    command = typer.main.get_command(bounded)
    read_plain_values(command)
    kinds = {p.name: type(p._runtime_param).__name__ for p in command.params}
    assert kinds == {"count": "NoneType", "word": "_PlainValue", "ratio": "NoneType"}
    cli._register_commands("generate")
    root = typer.main.get_command(cli.app)
    from chatcli.cli.help_format import HELP_NAMES, polish

    polish(root)
    read_plain_values(root)
    generate = root.commands["generate"]
    assert all(isinstance(p._runtime_param, _PlainValue) for p in generate.params)  # every generate option is plain
    assert isinstance(generate.get_help_option(HELP_NAMES)._runtime_param, _PlainValue)


def test_a_value_typer_refuses_gives_typers_message(capsys):
    code, _, err = run(capsys, "generate", "hi", "--max-tokens", "1.5", "--print-prompt")
    assert code == 2
    assert "Invalid value for '--max-tokens' / '-n'" in err and "Input should be a valid integer" in err
    code, _, err = run(capsys, "generate", "hi", "--temperature", "warm", "--print-prompt")
    assert code == 2 and "Input should be a valid number" in err
