"""How the chat TUI words a bug: one line, never a variable's value.

Textual's own crash report is a Rich traceback that prints every frame's local
variables (an adapter's config, a conversation, a key); chatcli's never does.
:func:`crash_report` is what the app prints on leaving after an unhandled exception:
one line, or with ``--debug`` a plain traceback (file, line, code; no locals).
:func:`command_error` is the transcript's line for a slash command, or a command's
background callback, that raised something other than a ``ChatcliError``; the app
goes on after it.
"""

from __future__ import annotations

import traceback

from chatcli.errors import describe_bug as describe



def crash_report(error: BaseException, *, tracebacks: bool) -> str:
    """What ``chatcli chat`` prints after a crash (to stderr, once the terminal is restored)."""
    if tracebacks:
        return plain_traceback(error)
    return f"chatcli: internal error: {describe(error)} (run with --debug for the traceback)"


def command_error(where: str, error: BaseException) -> str:
    """The transcript's line for ``where`` (``/load-lora``, a command's callback) raising ``error``."""
    return f"internal error in {where}: {describe(error)} (chatcli --debug chat shows the traceback)"


def plain_traceback(error: BaseException) -> str:
    """The traceback without locals (shown in the transcript under ``--debug``)."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip("\n")
