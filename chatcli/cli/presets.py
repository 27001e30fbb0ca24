"""``chatcli presets list|show|save``: named presets (model + system + sampling + adapters).

A preset is a TOML file in ``<config dir>/presets/`` (:mod:`chatcli.settings.presets`);
``generate`` and ``chat`` take one with ``--preset NAME``. ``save`` builds it from its own
flags, over the config file's ``[defaults]`` with ``--from-config``; its options read no
environment variable and no ``[defaults]`` (a preset holds what was typed, nothing else),
and it replaces an existing preset of that name whole.
"""

from __future__ import annotations

import json
import sys

import typer

from chatcli.cli.common import complete_models
from chatcli.cli.completion import complete_adapters, complete_presets

presets_app = typer.Typer(
    help="Named presets: a model, a system message, sampling values and adapters under one name.",
    no_args_is_help=True,
)


@presets_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per preset.")) -> None:
    """Every saved preset and what it sets; a broken file is listed with its problem."""
    from chatcli.errors import ChatcliError
    from chatcli.settings.presets import load_preset, names, presets_dir

    found = names()
    if not found and not as_json:
        sys.stderr.write(f"chatcli: no presets in {presets_dir()} yet; save one with "
                         "`chatcli presets save NAME --temperature 0.2 ...`\n")
        return
    for name in found:
        try:
            preset = load_preset(name)
            values, problem = preset.values, None
        except ChatcliError as e:
            values, problem = {}, e.message
        if as_json:
            sys.stdout.write(json.dumps({"name": name, "values": values, **({"error": problem} if problem else {})},
                                        ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(f"{name:16} {problem or _summary(values)}\n")


def _summary(values: dict[str, object]) -> str:
    return "  ".join(f"{k}={_shown(v)}" for k, v in values.items())


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:39] + "…"
        return json.dumps(text, ensure_ascii=False) if (not text or " " in text or "\n" in text) else text
    return str(value)


@presets_app.command("show")
def show(
    name: str = typer.Argument(..., help="The preset's name.", autocompletion=complete_presets),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """A preset's file: where it is and every value it sets."""
    from chatcli.settings.presets import load_preset
    from chatcli.settings.toml_io import dumps

    preset = load_preset(name)
    if as_json:
        sys.stdout.write(json.dumps({"name": preset.name, "path": str(preset.path), "values": preset.values},
                                    ensure_ascii=False) + "\n")
        return
    sys.stdout.write(dumps(preset.values, header=str(preset.path)))


@presets_app.command("save")
def save(
    name: str = typer.Argument(..., help="The preset's name: letters, digits, '.', '_' or '-'.",
                               autocompletion=complete_presets),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name, local directory, .gguf file, or hf:ORG/NAME.",
                                     autocompletion=complete_models),
    system: str | None = typer.Option(None, "--system", "-s", help="System message ('' sends an empty one)."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", help="0 = greedy."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling mass in (0, 1]."),
    top_k: int | None = typer.Option(None, "--top-k", help="Keep the k most probable tokens (0 = off)."),
    min_p: float | None = typer.Option(None, "--min-p", help="Drop tokens below min_p x the top probability."),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty", help="1 = off."),
    seed: int | None = typer.Option(None, "--seed", help="Same seed, same output."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", help="Most new tokens per answer."),
    lora: list[str] | None = typer.Option(None, "--lora", metavar="PATH[:SCALE]", help="LoRA adapter (repeatable).",
                                          autocompletion=complete_adapters),
    dtype: str | None = typer.Option(None, "--dtype", metavar="[float32|bfloat16|float16]", help="Weights' dtype."),
    quantize: str | None = typer.Option(None, "--quantize", metavar="[none|int8|int4]", help="Weight-only quantization."),
    from_config: bool = typer.Option(False, "--from-config", help="Start from the config file's [defaults]."),
) -> None:
    """Save a preset from these flags (and --from-config); an existing one of that name is replaced."""
    from chatcli.cli.common import clean_arg
    from chatcli.settings.config_file import read_defaults
    from chatcli.settings.presets import check_name, names, save_preset

    check_name(name)
    values: dict[str, object] = dict(read_defaults()) if from_config else {}
    given = {"model": model, "system": None if system is None else clean_arg(system, "--system"),
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
             "repetition_penalty": repetition_penalty, "seed": seed, "max_tokens": max_tokens,
             "adapters": list(lora) if lora else None, "dtype": dtype, "quantize": quantize}  # fmt: skip
    values.update({k: v for k, v in given.items() if v is not None})
    existed = name in names()
    path = save_preset(name, values)
    sys.stderr.write(f"chatcli: {'replaced' if existed else 'saved'} preset {name!r} ({path}); "
                     f"use it with `chatcli generate --preset {name} ...` or `chatcli chat --preset {name}`\n")


def register(app: typer.Typer) -> None:
    app.add_typer(presets_app, name="presets")
