"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Every failure a client can cause (bad JSON, a bad parameter, an unknown model, a prompt
larger than the context, a missing key) is an :class:`APIError` raised at the boundary,
before the engine is touched; the app turns it into the JSON body OpenAI's clients parse.
A failure nobody expected is a 500 (:func:`internal`) and a log line from
:func:`log_unexpected`, which names the exception and the code, not the request.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from chatcli.errors import ChatcliError

log = logging.getLogger("chatcli.serve")


class APIError(ChatcliError):
    """A request the server refuses; ``status`` is the HTTP status, the rest goes to the body."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters: a client's value echoed in a message stays short."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bad_param(param: str, message: str) -> APIError:
    return APIError(message, 400, param=param, code="invalid_value")


def model_not_found(model: str, available: list[str]) -> APIError:
    return APIError(
        f"The model `{shorten(model)}` does not exist: use one of {', '.join(available)} (GET /v1/models lists them)",
        404,
        param="model",
        code="model_not_found",
    )


def internal(message: str) -> APIError:
    return APIError(message, 500, type="server_error", code="internal_error")


def log_unexpected(what: str, exc: BaseException) -> None:
    """Log an unexpected failure by type and where it happened; not its message, which may
    quote the request (a prompt, a path), and never the headers (the key)."""
    frames = traceback.extract_tb(exc.__traceback__)[-5:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    log.error("unexpected %s in %s at %s", type(exc).__name__, what, where or "?")
