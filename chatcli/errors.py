"""Errors a person sees.

Every failure that reaches the user is a :class:`ChatcliError` whose message is
one line that says what went wrong and what to do. The CLI prints it (no
traceback unless ``--debug``) and exits with ``exit_code``.
"""


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
