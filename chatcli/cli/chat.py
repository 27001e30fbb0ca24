"""``chatcli chat`` and ``chatcli history``: the command-line doors to the chat front ends.

``register(app)`` adds both to the root typer app. ``chat`` opens the Textual app,
or plain mode (``--plain``, or when stdin/stdout is not a terminal); the model
loads through :func:`chatcli.engine.loader.load_engine` inside the front end, so
the TUI shows progress and stays responsive while it loads. ``chat`` creates this
invocation's plugin manager and the front end's command registry
(:func:`chatcli.chat.builtin_commands.build_registry`) and passes both in.

The full-screen chat remembers its view settings in :func:`chatcli.paths.ui_state_path`;
if it crashes, ``chat`` exits with its non-zero code after its one-line report (a plain
traceback with ``chatcli --debug``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from chatcli.cli.common import (
    ApiKeyEnvOpt, ChatTemplateOpt, DeviceOpt, DtypeOpt, EndpointOpt, LogprobsModeOpt, LoraOpt, MinPOpt, ModelOpt,
    CompileOpt, PresetOpt, QuantizeOpt, RepetitionPenaltyOpt, TemperatureOpt, ThinkOpt, ThreadsOpt, TimeoutOpt, TopKOpt,
    TopPOpt,
    check_dtype, check_quantize, remote_factory, sampling_layers, set_threads,
)
from chatcli.cli.completion import choices_metavar, complete_choices, complete_history_ids
from chatcli.cli.option_layers import Layers, load_preset_values
from chatcli.errors import UsageError
from chatcli.settings.env import ENV_VARS
from chatcli.settings.param_sources import resolve_sampling

if TYPE_CHECKING:
    from chatcli.chat.commands import Registry
    from chatcli.plugins.manager import PluginManager
    from chatcli.tour.guide import Tour

TINTS = ("off", "model_prob", "entropy")


def engine_factory(model: str, dtype: str, device: str, chat_template: str | None, lora=(), quantize: str = "none",
                   compile_: bool | str = False):
    """A factory ``progress -> engine`` for the front ends (loads torch only when called)."""

    def factory(progress):
        from chatcli.engine.loader import load_engine

        engine = load_engine(
            model, dtype=dtype, device=device, chat_template=chat_template, progress=progress, lora=lora,
            quantize=quantize, compile=compile_,
        )
        require = getattr(engine, "require_chat_template", None)
        if require is not None:
            require()  # chatting needs the model's chat template; the error says what to do
        return engine

    return factory


def chat(
    ctx: typer.Context,
    conv_id: int | None = typer.Argument(None, metavar="[ID]", help="With --resume: the conversation to reopen.",
                                         autocompletion=complete_history_ids),
    model: str = ModelOpt,
    preset: str | None = PresetOpt,
    system: str | None = typer.Option(None, "--system", "-s", help="System prompt (default: the chat template decides).",
                                      envvar=ENV_VARS["system"]),
    temperature: float | None = TemperatureOpt,
    top_k: int | None = TopKOpt,
    top_p: float | None = TopPOpt,
    min_p: float | None = MinPOpt,
    repetition_penalty: float | None = RepetitionPenaltyOpt,
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", help="Longest answer in tokens. [default: 512]",
                                          envvar=ENV_VARS["max_tokens"]),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default: a new one per answer).",
                                    envvar=ENV_VARS["seed"]),
    top: int | None = typer.Option(None, "--top", help="Alternatives shown per step. [default: 5]"),
    think: bool | None = ThinkOpt,
    resume: bool = typer.Option(
        False, "--resume", "-r", help="Reopen a saved conversation: `chat --resume ID`, or the latest without ID.",
    ),
    save: bool = typer.Option(
        True, "--save/--no-save", " /--no-log", envvar=ENV_VARS["save_history"],
        help="Keep this chat in the history (--no-save: out of it). [default: save]",
    ),
    plain: bool = typer.Option(False, "--plain", help="Line-based chat (also used when stdin or stdout is not a terminal)."),
    tint: str | None = typer.Option(None, "--tint", help="Colour tokens by certainty: off, model_prob or entropy.",
                                    metavar=choices_metavar(TINTS), autocompletion=complete_choices(TINTS)),
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    compile_: bool | None = CompileOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
    lora: list[str] | None = LoraOpt,
    endpoint: str | None = EndpointOpt,
    api_key_env: str | None = ApiKeyEnvOpt,
    timeout: float = TimeoutOpt,
    logprobs_mode: str = LogprobsModeOpt,
) -> None:
    """Chat with a local model (or one on an OpenAI-compatible server) and see how every token was chosen."""
    preset_values = load_preset_values(preset)  # an unknown preset: one line, nothing opened
    chosen = Layers.from_context(ctx, preset_values)  # flag > preset > env > config > built-in
    model, dtype, quantize, system, lora = (chosen.value(k) for k in ("model", "dtype", "quantize", "system", "adapters"))
    compile_ = chosen.compile_choice()
    layers = sampling_layers(ctx, dict(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
        max_tokens=max_tokens, seed=seed, top=top,
    ), preset_values)
    resolve_sampling(layers)  # a bad value fails now; the chat adds the model's values once it has loaded
    check_dtype(dtype)
    quantize = check_quantize(quantize)
    set_threads(threads)
    if tint is not None and tint not in TINTS:
        raise UsageError(f"invalid --tint {tint!r}: use off, model_prob or entropy")
    if conv_id is not None and not resume:
        raise UsageError(f"to reopen conversation {conv_id}, use `chatcli chat --resume {conv_id}`")
    resume_id: int | str | None = (conv_id if conv_id is not None else "latest") if resume else None
    if resume_id is not None and not save:
        typed = getattr(ctx.get_parameter_source("save"), "name", "") == "COMMANDLINE"
        raise UsageError("--resume needs the history; drop --no-save" if typed else
                         "--resume needs the history, and save_history = false (config file or CHATCLI_SAVE_HISTORY) "
                         "turns it off: add --save")  # fmt: skip

    from chatcli.chat.store import open_store

    store, warning = open_store() if save else (None, None)
    if resume_id is not None and store is None and warning:
        raise UsageError(f"cannot resume: {warning}")
    if endpoint is not None:
        factory = remote_factory(endpoint, model, api_key_env=api_key_env, timeout=timeout, logprobs_mode=logprobs_mode,
                                 local_only={"--lora": chosen.given("adapters"), "--chat-template": chat_template is not None,
                                             "--think/--no-think": think is not None,
                                             "--dtype": chosen.given("dtype") and dtype != "float32",
                                             "--device": device != "auto",
                                             "--quantize": chosen.given("quantize") and quantize != "none",
                                             "--compile": chosen.given("compile") and compile_})
    else:
        if api_key_env is not None:
            raise UsageError("--api-key-env goes with --endpoint (a key for a remote server)")
        if lora:
            from chatcli.lora.spec import preflight

            preflight(list(lora))  # a wrong adapter path fails now, not inside the app
        factory = engine_factory(model, dtype, device, chat_template, tuple(lora or ()), quantize, compile_)
    use_plain = plain or not sys.stdin.isatty() or not sys.stdout.isatty()
    problems: list[str] = []
    plugins, registry = chat_plugins(report=None if use_plain else problems.append)
    tour = chat_tour(ctx, registry, sees_answers=use_plain)
    if use_plain:
        from chatcli.chat.repl import run_repl
        from chatcli.tour.tour_command import line_front_end_idle

        rc = run_repl(
            factory, store=store, store_warning=warning, layers=layers, thinking=think, system=system, resume=resume_id,
            tint=tint or "model_prob", registry=registry, plugins=plugins,
            listeners=(tour.listener,), idle=line_front_end_idle(tour),
        )
        raise typer.Exit(rc)

    from chatcli.paths import ui_state_path
    from chatcli.tui.app import make_app

    debug = bool(ctx.find_root().params.get("debug")) or os.environ.get("CHATCLI_DEBUG") == "1"
    app = make_app(
        factory, model_name=model, layers=layers, thinking=think, system=system, store=store, store_warning=warning,
        resume=resume_id, tint=tint, notes=problems, registry=registry, plugins=plugins,
        ui_state=ui_state_path(), tracebacks=debug, tour=tour,
    )
    app.run()
    conv = app.core.conv
    if store is not None and conv.id is not None:
        sys.stderr.write(f"chatcli: conversation saved as #{conv.id} (chatcli chat --resume {conv.id})\n")
    if app.return_code:  # a crash: the app has printed its one line; the shell sees the failure
        raise typer.Exit(app.return_code)


def chat_tour(ctx: typer.Context, registry: Registry, *, sees_answers: bool) -> Tour:
    """This chat's guided tour, with ``/tour`` added to ``registry``: the one ``chatcli tour`` started
    (:data:`chatcli.cli.tour.TOUR_KEY`), else one that stays off until ``/tour``. ``sees_answers``:
    the plain chat prints every token coloured, so its answers count as seen steps."""
    from chatcli.cli.tour import TOUR_KEY
    from chatcli.tour.guide import user_tour
    from chatcli.tour.tour_command import install

    tour = ctx.meta.get(TOUR_KEY) or user_tour()
    tour.sees_answers = sees_answers
    install(registry, tour)
    return tour


def chat_plugins(report: Callable[[str], None] | None = None) -> tuple[PluginManager | None, Registry]:
    """This chat's plugin manager (None if the plugin system itself failed) and its command registry.

    Problems go to ``report`` (the TUI shows them at start), or to stderr when None.
    """
    from chatcli.chat.builtin_commands import build_registry
    from chatcli.plugins.manager import PluginManager, stderr_report

    report = report or stderr_report
    manager = PluginManager(report=report)
    try:
        return manager, build_registry(manager)
    except Exception as e:  # the plugin system itself failing must not stop a chat
        report(f"plugins not loaded ({type(e).__name__}: {e})")
        return None, build_registry(None)


history_app = typer.Typer(help="Saved conversations (chats and generate runs): list, show, search, export, remove.",
                          no_args_is_help=True)


def _store(*, write: bool = False):
    """The history; StoreUnavailable is a ChatcliError: one line, exit 1.

    Reading opens a store that cannot be written read-only, so list, show and export
    still work; ``write`` (rm) refuses it with one line.
    """
    from chatcli.chat.store import Store

    return Store.open(tail="") if write else Store.open_for_reading()


def _warn_unreadable(problems) -> None:
    """A saved conversation shows what could be read; each cell that could not is one warning line."""
    for problem in problems:
        sys.stderr.write(f"chatcli: warning: {problem}\n")


@history_app.command("list")
def history_list(
    limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first (0 = all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List saved conversations, newest first."""
    items = _store().list(limit=limit or None)
    if as_json:
        for s in items:
            sys.stdout.write(json.dumps({"id": s.id, "title": s.title, "model": s.model, "created": s.created,
                                         "updated": s.updated, "messages": s.messages}, ensure_ascii=False) + "\n")
        return
    if not items:
        sys.stderr.write("chatcli: the history is empty\n")
        return
    from rich.console import Console

    from chatcli.chat.builtin_commands import history_table

    Console(highlight=False).print(history_table(items))


@history_app.command("show")
def history_show(
    conv_id: int = typer.Argument(..., metavar="ID", help="Conversation id (chatcli history list).",
                                  autocompletion=complete_history_ids),
    as_json: bool = typer.Option(False, "--json", help="The JSON export, with every token's distribution."),
    tokens: bool = typer.Option(False, "--tokens", help="Also each answer's tokens with probabilities."),
) -> None:
    """Print a saved conversation as Markdown (or JSON)."""
    conv, problems = _store().load_checked(conv_id)
    _warn_unreadable(problems)
    if as_json:
        sys.stdout.write(json.dumps(conv.to_json(), ensure_ascii=False, indent=2) + "\n")
        return
    sys.stdout.write(conv.to_markdown())
    if tokens:
        from chatcli.chat.printed_steps import print_steps

        lost = {p.message for p in problems if p.what == "steps"}
        for node in conv.path():
            if node.role == "assistant" and (node.steps or node.id in lost):
                sys.stdout.write(f"\n## Tokens of answer {node.id}\n\n")
                sys.stdout.flush()
                if node.steps:
                    print_steps(node.steps)
                if node.id in lost:
                    rest = "the remaining steps" if node.steps else "steps"
                    sys.stdout.write(f"({rest} of this answer could not be read)\n")


@history_app.command("search")
def history_search(
    text: str = typer.Argument(..., metavar="TEXT", help="Words to find (every one must be in the message)."),
    limit: int = typer.Option(20, "--limit", "-n", help="Most messages shown, best match first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per matching message."),
) -> None:
    """Find saved messages by their words, with the matches highlighted."""
    if limit < 1:
        raise UsageError(f"invalid --limit {limit}: use an integer >= 1")
    found = _store().search(text, limit=limit)
    if not found.indexed:
        sys.stderr.write("chatcli: note: no full-text index here (this SQLite lacks FTS5); searched with LIKE\n")
    if as_json:
        for hit in found.hits:
            sys.stdout.write(json.dumps(hit.to_json(), ensure_ascii=False) + "\n")
    elif found.hits:
        from rich.console import Console

        from chatcli.chat.history.search_view import search_view

        Console(highlight=False).print(search_view(found.hits))
    if not found.hits:
        sys.stderr.write(f"chatcli: no saved message has {' and '.join(map(repr, text.split()))}\n")
    elif found.total > len(found.hits):
        sys.stderr.write(f"chatcli: {len(found.hits)} of {found.total} matching messages shown (--limit for more)\n")


@history_app.command("path")
def history_path() -> None:
    """Print where the history database is (an SQLite file: sqlite3 and other tools can read it)."""
    from chatcli.chat.store import default_db_path

    path = default_db_path(tail="")
    sys.stdout.write(f"{path}\n")
    if not path.exists():
        sys.stderr.write("chatcli: (not created yet: the first saved chat or generate run creates it)\n")


@history_app.command("export")
def history_export(
    conv_id: int = typer.Argument(..., metavar="ID", help="Conversation id.", autocompletion=complete_history_ids),
    path: str | None = typer.Argument(None, help="Where to write PATH.md and PATH.json (default ./chatcli-ID)."),
    all_branches: bool = typer.Option(False, "--all-branches", help="JSON with every branch, not only the active path."),
) -> None:
    """Write a saved conversation as Markdown and JSON files."""
    from chatcli.chat.core import ChatCore

    core = ChatCore(None, store=None)
    core.conv, problems = _store().load_checked(conv_id)
    _warn_unreadable(problems)
    md, js = core.export(path or f"chatcli-{conv_id}")
    if all_branches:
        js.write_text(json.dumps(core.conv.to_json(all_branches=True), ensure_ascii=False) + "\n", encoding="utf-8")
    sys.stdout.write(f"{md}\n{js}\n")


@history_app.command("rm")
def history_rm(
    conv_ids: list[int] = typer.Argument(..., metavar="ID...", help="Conversation ids to remove.",
                                         autocompletion=complete_history_ids),
) -> None:
    """Remove saved conversations."""
    store = _store(write=True)
    missing = [i for i in conv_ids if not store.delete(i)]
    removed = len(conv_ids) - len(missing)
    sys.stderr.write(f"chatcli: removed {removed} conversation{'s' * (removed != 1)}\n")
    if missing:
        raise UsageError(f"no conversation {', '.join(map(str, missing))} in the history; `chatcli history list` shows the ids")


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
    app.add_typer(history_app, name="history")

