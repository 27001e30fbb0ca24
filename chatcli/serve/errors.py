"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Every failure a client can cause (bad JSON, a bad parameter, an unknown model, a prompt
larger than the context, a missing key) is an :class:`APIError` raised at the boundary,
before the engine is touched; the app turns it into the JSON body OpenAI's clients parse.
"""

from __future__ import annotations

from chatcli.errors import ChatcliError


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


def bad_param(param: str, message: str) -> APIError:
    return APIError(message, 400, param=param, code="invalid_value")


def model_not_found(model: str, available: list[str]) -> APIError:
    return APIError(
        f"The model `{model}` does not exist: use one of {', '.join(available)} (GET /v1/models lists them)",
        404,
        param="model",
        code="model_not_found",
    )


def internal(message: str) -> APIError:
    return APIError(message, 500, type="server_error", code="internal_error")
