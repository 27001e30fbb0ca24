"""``chatcli generate``: one answer, streamed to stdout as text or JSONL.

The run is saved to the history once the answer has ended (:mod:`chatcli.chat.history.logged_run`:
nothing is written while it streams); ``--resume ID`` / ``-c`` append it to a saved conversation,
``--no-save`` (``--no-log``, ``save_history = false``) keeps it out.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from chatcli import __version__
from chatcli.cli.common import (
    ApiKeyEnvOpt,
    ChatTemplateOpt,
    DeviceOpt,
    CompileOpt,
    DtypeOpt,
    EndpointOpt,
    LogprobsModeOpt,
    LoraOpt,
    MinPOpt,
    ModelOpt,
    PresetOpt,
    QuantizeOpt,
    RepetitionPenaltyOpt,
    TemperatureOpt,
    ThinkOpt,
    ThreadsOpt,
    TimeoutOpt,
    TopKOpt,
    TopPOpt,
    check_dtype,
    check_quantize,
    clean_arg,
    read_prompt,
    remote_factory,
    sampling_layers,
    set_threads,
)
from chatcli.cli.completion import complete_history_ids
from chatcli.cli.option_layers import Layers, load_preset_values
from chatcli.chat.history.logged_run import LATEST, RunLog, history_messages, open_for_resume
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.protocol import model_sampling
from chatcli.settings.env import ENV_VARS
from chatcli.settings.param_sources import Resolved, resolve_sampling
from chatcli.errors import GenerationError, UsageError


def generate(
    ctx: typer.Context,
    prompt: str | None = typer.Argument(
        None, help="The message ('-': read it from stdin, '@FILE': from a file). Text piped in comes first, then a "
        "blank line, then PROMPT; with text piped in PROMPT may be left out.",
    ),
    preset: str | None = PresetOpt,
    system: str | None = typer.Option(
        None, "--system", help="System message ('' sends an empty one; default: the template decides).",
        envvar=ENV_VARS["system"],
    ),
    raw: bool = typer.Option(False, "--raw", help="Plain-text continuation, no chat template."),
    think: bool | None = ThinkOpt,
    temperature: float | None = TemperatureOpt,
    top_k: int | None = TopKOpt,
    top_p: float | None = TopPOpt,
    min_p: float | None = MinPOpt,
    repetition_penalty: float | None = RepetitionPenaltyOpt,
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", help="Most new tokens. [default: 512]",
                                          envvar=ENV_VARS["max_tokens"]),
    seed: int | None = typer.Option(None, "--seed", help="Same seed, same output (default: random, reported).",
                                    envvar=ENV_VARS["seed"]),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    model: str = ModelOpt,
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    compile_: bool | None = CompileOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
    lora: list[str] | None = LoraOpt,
    top: int | None = typer.Option(None, "--top", help="Alternatives shown per step. [default: 5]"),
    as_json: bool = typer.Option(False, "--json", help="JSONL on stdout: meta, one step per token, done."),
    show_probs: bool = typer.Option(False, "--show-probs", help="After the answer, each token with its probability and alternatives."),
    print_prompt: bool = typer.Option(False, "--print-prompt", help="Print the exact prompt string and exit (no weights loaded)."),
    save: bool = typer.Option(
        True, "--save/--no-save", " /--no-log", envvar=ENV_VARS["save_history"],
        help="Keep this run in the history (chatcli history). [default: save]",
    ),
    resume: str | None = typer.Option(
        None, "--resume", metavar="ID", autocompletion=complete_history_ids,
        help="Continue saved conversation ID ('latest': the newest): its messages come before PROMPT, "
        "and the new turn is appended to it.",
    ),
    continue_: bool = typer.Option(False, "--continue", "-c", help="Continue the latest conversation (--resume latest)."),
    endpoint: str | None = EndpointOpt,
    api_key_env: str | None = ApiKeyEnvOpt,
    timeout: float = TimeoutOpt,
    logprobs_mode: str = LogprobsModeOpt,
) -> None:
    """Stream one answer to PROMPT, with the probability of every token."""
    preset_values = load_preset_values(preset)  # an unknown preset: one line, nothing loaded
    chosen = Layers.from_context(ctx, preset_values)  # flag > preset > env > config > built-in
    model, dtype, quantize, system, lora = (chosen.value(k) for k in ("model", "dtype", "quantize", "system", "adapters"))
    compile_ = chosen.compile_choice()
    if system is not None:
        system = clean_arg(system, "--system")
    stop = [clean_arg(s, "--stop") for s in stop] if stop else stop
    layers = sampling_layers(ctx, dict(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
        max_tokens=max_tokens, seed=seed, stop=stop, top=top,
    ), preset_values)
    resolved = resolve_sampling(layers)  # a bad value fails now, before anything loads
    check_dtype(dtype)
    quantize = check_quantize(quantize)
    set_threads(threads)
    if think is not None and raw:
        raise UsageError("--think/--no-think switch the chat template's thinking; --raw uses no template: drop one")
    text = read_prompt(prompt)
    resume_spec = _resume_spec(ctx, resume, continue_, save=save, raw=raw)
    log = RunLog(text, system, raw=raw, warn=lambda line: sys.stderr.write(f"chatcli: warning: {line}\n"))
    if resume_spec is not None:
        log.store, log.conversation = open_for_resume(resume_spec)  # a missing id: one line, exit 2
        conv = log.conversation
        if not chosen.given("system"):  # the conversation keeps its own system message unless one is typed
            system = log.system = conv.system
    messages = history_messages(log.conversation, system) if log.conversation else (
        [] if system is None else [{"role": "system", "content": system}])
    messages.append({"role": "user", "content": text})
    if not save:
        log = None

    if endpoint is not None:
        factory = remote_factory(endpoint, model, api_key_env=api_key_env, timeout=timeout, logprobs_mode=logprobs_mode,
                                 local_only={"--lora": chosen.given("adapters"),
                                             "--chat-template": chat_template is not None, "--print-prompt": print_prompt,
                                             "--think/--no-think": think is not None,
                                             "--dtype": chosen.given("dtype") and dtype != "float32",
                                             "--device": device != "auto",
                                             "--quantize": chosen.given("quantize") and quantize != "none",
                                             "--compile": chosen.given("compile") and compile_})
        _answer(factory(), text, messages, resolved, raw=raw, as_json=as_json, show_probs=show_probs, lora=False,
                log=log)
        return
    if api_key_env is not None:
        raise UsageError("--api-key-env goes with --endpoint (a key for a remote server)")
    from chatcli.engine.loader import load_engine, load_prompt_renderer
    from chatcli.progress import stderr_progress

    if print_prompt:
        with stderr_progress() as progress:
            renderer = load_prompt_renderer(model, chat_template=chat_template, progress=progress)
        _switch_thinking(renderer, think, model)
        sys.stdout.write(text if raw else renderer.render_prompt(messages))
        sys.stdout.flush()
        return

    with stderr_progress() as progress:
        engine = load_engine(
            model, dtype=dtype, device=device, chat_template=chat_template, progress=progress, lora=lora or (),
            quantize=quantize, compile=compile_, warm_up=False,  # one answer: a warm-up forward would only add its own time (see load_engine)
        )
    if not raw:
        engine.require_chat_template()
    _switch_thinking(engine, think, model)
    for warning in engine.generation_defaults.warnings():
        sys.stderr.write(f"chatcli: warning: {warning}\n")
    resolved = resolve_sampling({**layers, "model": model_sampling(engine)})
    _answer(engine, text, messages, resolved, raw=raw, as_json=as_json, show_probs=show_probs, lora=bool(lora),
            log=log)


def _resume_spec(ctx: typer.Context, resume: str | None, continue_: bool, *, save: bool, raw: bool) -> str | None:
    """The conversation ``--resume ID`` / ``-c`` names (an id's digits or 'latest'), None for a new one."""
    if resume is not None and continue_:
        raise UsageError("--resume ID and -c/--continue both name the conversation: give one")
    spec = LATEST if continue_ else None if resume is None else resume.strip().lower()
    if spec is None:
        return None
    if spec not in (LATEST, "last") and not spec.isdigit():
        raise UsageError(f"invalid --resume {resume!r}: give a conversation id (chatcli history list) or 'latest'")
    if raw:
        raise UsageError("--raw continues plain text, not a conversation: drop --raw or --resume/-c")
    if not save:
        typed = getattr(ctx.get_parameter_source("save"), "name", "") == "COMMANDLINE"
        where = "--no-save" if typed else "save_history = false (config file or CHATCLI_SAVE_HISTORY)"
        raise UsageError(f"continuing a conversation saves the new turn in it, but {where} turns saving off: add --save")
    return LATEST if spec == "last" else spec


def _switch_thinking(renderer, think: bool | None, model: str) -> None:
    """``--think``/``--no-think`` as the template's ``enable_thinking``; one line if it has no such switch."""
    if think is not None and not renderer.set_thinking(think):
        from chatcli.tokenizer.thinking import no_switch_message

        sys.stderr.write(f"chatcli: {no_switch_message(model)}\n")


def _answer(engine, text: str, messages: list[dict], resolved: Resolved, *, raw: bool, as_json: bool, show_probs: bool,
            lora: bool, log: RunLog | None = None) -> None:
    """Stream one answer of ``engine`` (local or remote) to stdout as text or JSONL; ``log`` saves it
    to the history once it has ended (its id goes in the --json done line)."""
    params = resolved.params
    if params.seed is None:
        params = params.with_(seed=random.randrange(2**31))
    if log is not None and (note := log.model_note(engine.identity.name)):
        sys.stderr.write(f"chatcli: {note}\n")

    if as_json:
        _emit({
            "type": "meta", "model": engine.identity.name, "model_sha256": engine.identity.sha256,
            "dtype": engine.identity.dtype, "device": engine.identity.device,
            "quantize": getattr(engine.identity, "quantize", "none"),
            "params": params.to_json(), "param_sources": resolved.sources, "seed": params.seed, "raw": raw,
            "adapters": [{"name": a.name, "scale": a.scale} for a in engine.adapters.list()] if lora else [],
            **({"endpoint": engine.identity.path} if engine.identity.model_type.startswith("remote") else {}),
            **({"conversation_id": log.conversation.id} if log is not None and log.conversation is not None else {}),
            "chatcli_version": __version__,
        })
    cancel = threading.Event()
    events = engine.complete(text, params, cancel=cancel) if raw else engine.chat(messages, params, cancel=cancel)
    steps: list[Step] = []
    held: list[str] = []  # loop warnings in text mode: said once the answer's text has ended, not mid-line
    dim = _thinking_dimmer() if not as_json and sys.stdout.isatty() else None  # reasoning shown faint on a terminal
    done: Done | None = None
    with _sigint_cancels(cancel):
        try:
            for event in events:
                if isinstance(event, Step):
                    steps.append(event)
                    if as_json:
                        _emit(event.to_json())
                    elif event.text:
                        sys.stdout.write(dim(event.text) if dim is not None else event.text)
                        sys.stdout.flush()
                elif isinstance(event, Notice):
                    line = f"chatcli: {_notice_text(event)}\n"
                    if event.kind == "loop" and not as_json:
                        held.append(line)
                    else:
                        sys.stderr.write(line)
                elif isinstance(event, Done):
                    done = event
        except KeyboardInterrupt:  # a second Ctrl+C (or one from elsewhere): stop waiting for the engine
            cancel.set()
            done = None
    saved = log.finish(engine, params, steps, done) if log is not None else None  # once, after the stream
    saved_key = {} if saved is None else {"conversation_id": saved}
    if cancel.is_set() and (done is None or done.finish_reason == "cancelled"):
        # Ctrl+C: the answer so far stands; --json still ends with its done line (README), exit 130.
        if as_json:
            _emit({**(done.to_json() if done is not None else {
                "type": "done", "finish_reason": "cancelled", "prompt_tokens": None,
                "completion_tokens": len(steps), "ttft_s": None, "tokens_per_s": None,
            }), **saved_key})
        elif steps:
            sys.stdout.write("\n")
        sys.stdout.flush()
        sys.stderr.write("".join(held) + "chatcli: interrupted\n")
        raise typer.Exit(130)
    assert done is not None, "engine streams always end with Done"
    if done.finish_reason == "error":
        if as_json:
            _emit({"type": "error", "message": done.error})
            raise typer.Exit(1)
        sys.stdout.flush()
        sys.stderr.write("".join(held))
        raise GenerationError(done.error or "generation failed")
    if as_json:
        _emit({**done.to_json(), **saved_key})
        return
    if not done.text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stderr.write("".join(held))
    if show_probs:
        from chatcli.chat.printed_steps import print_steps

        print_steps(steps)
    sys.stdout.flush()


def _notice_text(notice: Notice) -> str:
    """A notice's line; a loop warning offers the command-line flags (not the chat's /set)."""
    if notice.kind == "loop":
        from chatcli.engine.loop_watch import loop_message

        return loop_message(notice.data, cli=True)
    return notice.message


def _thinking_dimmer():
    """``piece -> piece``: an answer's ``<think>`` reasoning in faint text (SGR 2), the rest as it is."""
    from chatcli.tokenizer.thinking import ThinkingTracker

    tracker = ThinkingTracker()
    return lambda piece: f"\x1b[2m{piece}\x1b[22m" if tracker.feed(piece) else piece


@contextmanager
def _sigint_cancels(cancel: threading.Event) -> Iterator[None]:
    """While streaming, the first Ctrl+C sets ``cancel`` (the engine ends with a cancelled Done
    at its next token); a second one raises KeyboardInterrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def handler(signum, frame) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


