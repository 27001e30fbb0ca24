"""Options and helpers shared by the commands that load a model (generate, chat, score, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from chatcli.cli.completion import (
    choices_metavar, complete_adapters, complete_choices, complete_presets, models_completer,
)
from chatcli.errors import UsageError
from chatcli.engine.params import SamplingParams
from chatcli.model.quant_choice import CHOICES as QUANTIZE_CHOICES
from chatcli.settings.env import ENV_VARS
from chatcli.settings.keys import DTYPES

DEFAULT_MODEL = "smollm2-135m-instruct"
complete_models = models_completer((DEFAULT_MODEL,))

# An option with envvar=ENV_VARS[key] also takes the config file's [defaults] key (chatcli.cli.option_layers).
ModelOpt = typer.Option(
    DEFAULT_MODEL, "--model", "-m", help="Model name, local directory, .gguf file, or hf:ORG/NAME.",
    envvar=ENV_VARS["model"], autocompletion=complete_models,
)
DtypeOpt = typer.Option(
    "float32", "--dtype", metavar=choices_metavar(DTYPES), help="float32 (reference), bfloat16 or float16.",
    envvar=ENV_VARS["dtype"], autocompletion=complete_choices(DTYPES),
)
QuantizeOpt = typer.Option(
    "none", "--quantize", metavar=choices_metavar(QUANTIZE_CHOICES),
    help="none; int8: weight-only int8 projections and LM head; int4: 4-bit projections (groups of 32) and an "
    "int8 head (faster CPU decode, less memory, a small quality cost).",
    envvar=ENV_VARS["quantize"], autocompletion=complete_choices(QUANTIZE_CHOICES),
)
CompileOpt = typer.Option(
    None, "--compile/--no-compile", envvar=ENV_VARS["compile"], show_default=False,  # unset: "auto" (see help)
    help="Decode through a step compiled ahead of time (CPU; built once per model shape, about a minute, kept on "
    "disk; the eager step's numbers bit for bit). Unset: float32, int8, int4 and bfloat16 use it once a background build "
    "made it; --no-compile: never.",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).")
LoraOpt = typer.Option(
    None, "--lora", metavar="PATH[:SCALE]", envvar=ENV_VARS["adapters"], autocompletion=complete_adapters,
    help="LoRA adapter PATH[:SCALE] (repeatable): a PEFT folder or .safetensors, or a name from ./adapters, "
    "the demo adapters or the user adapter folder.",
)
ChatTemplateOpt = typer.Option(
    None, "--chat-template", help="A Jinja chat template file that replaces the model's own."
)
PresetOpt = typer.Option(
    None, "--preset", metavar="NAME", autocompletion=complete_presets,
    help="A saved preset: model, system message, sampling values, adapters (chatcli presets list); "
    "the flags given here win over it.",
)

# A remote OpenAI-compatible server instead of the local engine (chat, generate).
EndpointOpt = typer.Option(
    None, "--endpoint", help="Use an OpenAI-compatible server (vLLM, llama.cpp, chatcli serve) at this URL, "
    "e.g. http://127.0.0.1:8000/v1; --model is then the server's model name.",
)
ApiKeyEnvOpt = typer.Option(
    None, "--api-key-env", metavar="VAR", help="With --endpoint: the environment variable that holds the API key.",
)
TimeoutOpt = typer.Option(60.0, "--timeout", help="With --endpoint: seconds to wait for the server before giving up.")
LogprobsModeOpt = typer.Option(
    "raw", "--logprobs-mode", metavar=choices_metavar(("raw", "processed")),
    autocompletion=complete_choices(("raw", "processed")),
    help="With --endpoint: raw (the server's logprobs are the model's, vLLM's default) or processed "
    "(the server reports post-sampling logprobs, e.g. vLLM --logprobs-mode processed_logprobs).",
)


def remote_factory(endpoint: str, model: str, *, api_key_env: str | None, timeout: float, logprobs_mode: str,
                   local_only: dict[str, bool] | None = None):
    """A factory ``progress -> engine`` for a remote server; checks the flags first.

    ``local_only`` names flags that make sense only for the local engine and whether
    they were given; any given one is a usage error. The default model name means
    "the server's model" (the server may call it something else).
    """
    from chatcli.remote.client import split_endpoint

    given = [flag for flag, on in (local_only or {}).items() if on]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with --endpoint: the server runs the model "
                         "(load adapters in the chat with /load-lora)")
    if logprobs_mode not in ("raw", "processed"):
        raise UsageError(f"invalid --logprobs-mode {logprobs_mode!r}: use raw or processed")
    split_endpoint(endpoint)  # a malformed URL fails now
    from chatcli.remote.backend import read_api_key

    read_api_key(api_key_env)  # so does a missing key (read again, not kept, when connecting)

    def factory(progress=None):
        from chatcli.remote import connect

        if progress:
            progress("connecting", 0, 1)
        engine = connect(endpoint, None if model == DEFAULT_MODEL else model, api_key_env=api_key_env,
                         timeout=timeout, logprobs_mode=logprobs_mode)  # type: ignore[arg-type]
        if progress:
            progress("connecting", 1, 1)
        return engine

    return factory


# Sampling options of the commands that generate (None: not given, so the layers below decide:
# chatcli.settings.param_sources).
TemperatureOpt = typer.Option(
    None, "--temperature", "-t", help="0 = greedy. [default: the model's, else 0.7]",
    envvar=ENV_VARS["temperature"],
)
TopKOpt = typer.Option(None, "--top-k", help="Keep the k most probable tokens (0 = off).", envvar=ENV_VARS["top_k"])
TopPOpt = typer.Option(
    None, "--top-p", help="Nucleus sampling mass in (0, 1] (1 = off). [default: the model's, else 1]",
    envvar=ENV_VARS["top_p"],
)
MinPOpt = typer.Option(None, "--min-p", help="Drop tokens below min_p x the top probability.", envvar=ENV_VARS["min_p"])
RepetitionPenaltyOpt = typer.Option(
    None, "--repetition-penalty", help="1 = off.", envvar=ENV_VARS["repetition_penalty"]
)


ThinkOpt = typer.Option(
    None, "--think/--no-think",
    help="Qwen3-style chat templates: let the model reason in a <think> block first, or answer at once "
    "(the template's enable_thinking). [default: the template's]",
)


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"invalid --threads {threads}: use an integer >= 1")
    import torch

    torch.set_num_threads(threads)


def check_quantize(quantize: str) -> str:
    """The --quantize value, checked before anything loads (no torch import)."""
    from chatcli.model.quant_choice import check_quantize as check

    return check(quantize)


def check_dtype(dtype: str) -> str:
    if dtype not in ("float32", "bfloat16", "float16", "auto"):
        raise UsageError(f"invalid --dtype {dtype!r}: use float32, bfloat16 or float16")
    return dtype


def sampling_params(
    *,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float | None,
    max_tokens: int | None,
    seed: int | None,
    stop: list[str] | None,
    top_n: int | None,
) -> SamplingParams:
    """Build validated params from CLI flags; flags left out keep chatcli's defaults."""
    given = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
        "max_tokens": max_tokens,
        "seed": seed,
        "top_n": top_n,
    }
    kwargs = {k: v for k, v in given.items() if v is not None}
    if stop:
        kwargs["stop"] = tuple(stop)
    return SamplingParams(**kwargs)


# A command's sampling options (its parameter names) -> the SamplingParams field each sets.
SAMPLING_OPTIONS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "max_tokens": "max_tokens", "seed": "seed", "stop": "stop",
    "top": "top_n",
}  # fmt: skip
# click's ParameterSource names -> the layers of chatcli.settings.param_sources.
_LAYER_OF_SOURCE = {"COMMANDLINE": "flag", "ENVIRONMENT": "env", "DEFAULT_MAP": "config"}


def sampling_layers(
    ctx: typer.Context, values: Mapping[str, object], preset: Mapping[str, object] | None = None,
) -> dict[str, dict[str, object]]:
    """The sampling values a command was given, by the layer each came from.

    ``values``: the command's sampling options (parameter name -> value as the command
    cleaned it; None or empty = left out). typer says where each came from: the command
    line ("flag"), a ``CHATCLI_*`` variable ("env") or the config file's ``[defaults]``
    through ``default_map`` ("config"). ``preset`` is a ``--preset``'s values. The model's
    layer is added once the model is loaded (:func:`chatcli.settings.param_sources.resolve_sampling`).
    """
    layers: dict[str, dict[str, object]] = {"flag": {}, "env": {}, "config": {}}
    for name, value in values.items():
        if value is None or (name == "stop" and not value):
            continue
        source = ctx.get_parameter_source(name)
        layer = _LAYER_OF_SOURCE.get(source.name if source is not None else "", "flag")
        layers[layer][SAMPLING_OPTIONS[name]] = tuple(value) if name == "stop" else value  # type: ignore[arg-type]
    if preset:
        layers["preset"] = dict(preset)
    return layers


def read_prompt(value: str | None) -> str:
    """``generate``'s message: the PROMPT argument (see :func:`read_text_arg`), joined with piped stdin.

    As with ``llm``, text piped in comes first and the argument is the instruction about it
    (``cat notes.txt | chatcli generate "Summarize"``): stdin, one blank line, then PROMPT
    (stdin's own trailing newlines give way to that blank line; nothing else of it is
    changed). stdin is read only when it is a pipe or a regular file: never a terminal or
    ``/dev/null`` (character devices), so a command typed at a prompt never waits for input.
    Stdin that is empty (or only whitespace) leaves PROMPT byte-identical; with PROMPT left
    out, piped stdin is the whole message. ``-`` still means "the message is stdin".
    """
    if value == "-":
        return read_text_arg(value)
    piped = _piped_stdin()
    if value is None:
        if piped is None or not piped.strip():
            where = "stdin was empty" if piped is not None else "stdin is not a pipe or a file"
            raise UsageError(f"missing PROMPT ({where}): give the message as an argument, '-' to type it, "
                             "'@FILE', or pipe text in")
        return clean_arg(piped, "prompt", "stdin")
    text = read_text_arg(value)
    if piped is None or not piped.strip():
        return text
    return clean_arg(piped, "prompt", "stdin").rstrip("\r\n") + "\n\n" + text


def _piped_stdin() -> str | None:
    """All of stdin if it is a pipe (FIFO) or a regular file; None for a terminal, a device, a socket, none."""
    import os
    import stat
    import sys

    from chatcli.chat.text_input import tolerant

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # no stdin, a closed one, or a stand-in without a descriptor
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return None
    return tolerant(sys.stdin).read()


def read_text_arg(value: str, what: str = "prompt") -> str:
    """``-`` reads stdin; ``@FILE`` reads a file; anything else is the text itself.

    Bytes that are not UTF-8 (in stdin, the file, or a non-UTF-8 argv) become U+FFFD
    with a warning on stderr, as in the chat: a prompt is typed input, not a data file.
    """
    import sys

    from chatcli.chat.text_input import tolerant

    if value == "-":
        return clean_arg(tolerant(sys.stdin).read(), what, "stdin")
    if value.startswith("@") and len(value) > 1:
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as e:
            raise UsageError(f"cannot read {what} file {path}: {e.strerror}") from None
        return clean_arg(text, what, str(path))
    return clean_arg(value, what, "the command line")


def clean_arg(text: str, what: str, where: str = "the command line") -> str:
    """``text`` with lone surrogates (bytes that were not UTF-8) as U+FFFD; warns on stderr if any."""
    import sys

    from chatcli.chat.text_input import clean_text

    cleaned, replaced = clean_text(text)
    if replaced:
        sys.stderr.write(f"chatcli: warning: the {what} from {where} is not valid UTF-8; its undecodable bytes "
                         "are read as U+FFFD\n")
    return cleaned
