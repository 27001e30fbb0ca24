"""The hooks a chatcli plugin can implement (pluggy, project name ``chatcli``).

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names
are the hooks below; it is found through the ``chatcli.plugins`` entry-point
group or as a ``.py`` file in ``<config dir>/plugins/`` (see :mod:`chatcli.plugins.manager`).

Registration hooks receive a ``register`` callback, so a plugin adds things
without importing chatcli internals:

* ``register_commands(register)`` — slash commands for the TUI and the REPL:
  ``register(name, func, summary, args=(), aliases=(), idle_only=False)`` where
  ``func(ctx, **args)`` gets a :class:`chatcli.chat.commands.CommandContext` and
  ``args`` are :class:`chatcli.chat.commands.Arg` values.
* ``register_cli(register)`` — CLI sub-commands, imported only when invoked:
  ``register(name, "package.module:attr", help)`` where ``attr`` is a
  ``typer.Typer`` (or a command of the click copy typer uses).
* ``register_tui(register)`` — screens or panels:
  ``register(name, factory, kind="screen", title="")``; ``factory(ctx)`` gets
  the chat's CommandContext (the TUI's, whose ``ctx.app`` is the Textual app) and
  returns a Textual ``Screen`` to push (or a ``Widget`` for a panel); it may raise
  ``chatcli.errors.ChatcliError``.
* ``register_graders(register)`` — answer graders for reinforcement learning
  (``chatcli finetune rl --reward NAME``) and ``/best N --reward NAME``:
  ``register(name, fn, help="")`` where ``fn(prompt_messages, answer_text) -> float``
  (higher is better; ``prompt_messages`` are the messages up to the question).

``status_item()`` is polled (about once a second, on the UI thread, so it must be
quick) for a short live status in the chat's status bar: ``None``, a text, or
``(text, command)`` where ``command`` is a slash command the person can run with one
key (F8), e.g. a finished fine-tuning run offering ``"/finetune load"``.

Event hooks are called with keyword arguments as things happen; they must be
quick (``step_generated`` runs for every token) and must not change what they
are given. A hook that raises is reported once and its plugin is switched off.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("chatcli")
hookimpl = pluggy.HookimplMarker("chatcli")


@hookspec
def register_commands(register):
    """Add slash commands: ``register(name, func, summary, args=(), aliases=(), idle_only=False)``."""


@hookspec
def register_cli(register):
    """Add lazily imported CLI sub-commands: ``register(name, "module:attr", help)``."""


@hookspec
def register_tui(register):
    """Add TUI screens or panels: ``register(name, factory, kind="screen", title="")``."""


@hookspec
def register_graders(register):
    """Add answer graders: ``register(name, fn, help="")``, ``fn(prompt_messages, answer_text) -> float``."""


@hookspec
def step_generated(step, message, conversation):
    """A token of an answer arrived (``step``: chatcli.engine.events.Step; ``message``: its session Node)."""


@hookspec
def message_added(message, conversation):
    """A message (a session Node) was added: a user message when sent, or an answer that did
    not stream (the one ``/rank`` chose); streamed answers arrive through ``answer_finished``."""


@hookspec
def answer_finished(message, done, conversation):
    """An answer ended (``done``: chatcli.engine.events.Done with the finish reason)."""


@hookspec
def adapter_loaded(name, info):
    """A LoRA adapter was loaded (``info``: chatcli.lora.manager.AdapterInfo)."""


@hookspec
def status_item():
    """A live status for the status bar: None, ``text``, or ``(text, "/command")`` (F8 runs it)."""
