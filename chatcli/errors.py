"""Errors a person sees.

Every failure that reaches the user is a :class:`ChatcliError` whose message is
one line that says what went wrong and what to do. The CLI prints it (no
traceback unless ``--debug``) and exits with ``exit_code``. :func:`did_you_mean`
is the spelling hint such a message ends with.
"""

from __future__ import annotations

from collections.abc import Iterable


class ChatcliError(Exception):
    """A failure with a one-line, actionable message. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(ChatcliError):
    """A bad command line or parameter value. Exit code 2."""

    exit_code = 2


class ModelError(ChatcliError):
    """A model that is missing, unsupported or broken."""


class GenerationError(ChatcliError):
    """A generation that had to stop (NaN logits, prompt too long, ...)."""


def did_you_mean(word: str, choices: Iterable[str], *, slash: bool = False) -> str:
    """' (did you mean X?)' for the choice closest to ``word``, or '' when none is close.

    The one spelling hint of the package: unknown commands, parameters, tints and
    names all end their error line with it. ``slash`` writes the choice as ``/X``.
    """
    import difflib  # only on the error path

    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(word[:2])][:1] if len(word) >= 2 else []
    if not close:
        return ""
    return f" (did you mean {'/' if slash else ''}{close[0]}?)"


MAX_BUG_MESSAGE = 300  # an unexpected exception's message can be a whole data structure; a line is enough


def describe_bug(error: BaseException) -> str:
    """An exception chatcli did not expect, as ``Type: message`` on one shortened line (front ends say it)."""
    message = " ".join(str(error).split())
    if len(message) > MAX_BUG_MESSAGE:
        message = message[: MAX_BUG_MESSAGE - 1] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
