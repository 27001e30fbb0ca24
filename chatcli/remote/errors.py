"""Failures of a remote server, as one line a person can act on.

:func:`http_error` turns an HTTP error answer into a :class:`RemoteError` (401/403:
the key; 404: the URL or the model name; 429: rate limited, with ``Retry-After``;
5xx: the server's own message); :func:`transport_error` does the same for a refused
connection, an unknown host or a timeout. Messages name the endpoint without any
credentials and never contain the API key (:func:`scrub` removes it from text a
server sent back).
"""

from __future__ import annotations

import json

from chatcli.errors import ChatcliError


class RemoteError(ChatcliError):
    """A remote server could not be used; the message says what to check."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def server_message(body: bytes | str, limit: int = 200) -> str:
    """The ``error.message`` of an OpenAI-style error body (or the body's start), one line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
        elif isinstance(data.get("message"), str):  # e.g. {"object": "error", "message": ...} (vLLM)
            text = data["message"]
    text = " ".join(text.split())
    return text[: limit - 1] + "…" if len(text) > limit else text


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (HTTP dates are not worth a parser here)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def http_error(status: int, body: bytes, headers, where: str, *, has_key: bool, secret: str | None) -> RemoteError:
    """The error for an HTTP error answer to a request to ``where`` (an URL without credentials)."""
    said = scrub(server_message(body), secret)
    said = f": {said}" if said else ""
    if status in (401, 403):
        fix = ("check the key in the environment variable given to --api-key-env" if has_key
               else "the server needs an API key: put it in an environment variable and pass --api-key-env VAR")
        return RemoteError(f"{where} refused the request (HTTP {status}){said}; {fix}", status)
    if status == 404:
        return RemoteError(f"{where} answered HTTP 404{said}; check --endpoint (the server's base URL, e.g. "
                           "http://host:8000/v1) and --model", status)
    if status == 429:
        wait = retry_after(headers.get("retry-after"))
        when = f"retry after {wait:g} s" if wait is not None else "wait a moment and retry"
        return RemoteError(f"{where} is rate-limiting requests (HTTP 429){said}; {when} (/retry)", status, wait)
    if status >= 500:
        return RemoteError(f"{where} failed (HTTP {status}){said}; /retry, or check the server's log", status)
    return RemoteError(f"{where} refused the request (HTTP {status}){said}", status)


def transport_error(exc: Exception, where: str, timeout: float) -> RemoteError:
    """The error for a request that got no HTTP answer (httpx transport exceptions)."""
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return RemoteError(f"cannot reach {where}: no connection within {timeout:g} s; check --endpoint and the network")
    if isinstance(exc, httpx.TimeoutException):
        return RemoteError(f"{where} sent nothing for {timeout:g} s (timeout); the server may be overloaded: "
                           "/retry, or raise --timeout")
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or type(exc).__name__
        if "refused" in reason.lower():
            reason = "connection refused"
        return RemoteError(f"cannot reach {where} ({reason}); is the server running? check --endpoint")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return RemoteError(f"{where} closed the connection ({type(exc).__name__}); /retry")
    return RemoteError(f"request to {where} failed ({type(exc).__name__}: {exc})")
