"""The HTTP side of a remote backend: base URLs, the API key, JSON calls and SSE streams.

:class:`Client` wraps one ``httpx.Client``. ``base`` is the OpenAI API root
(``http://host:8000/v1``: a URL given without ``/v1`` gets it), ``root`` the server
root (llama.cpp's ``/lora-adapters`` lives there). The key goes into the
``Authorization`` header and nowhere else; every failure becomes a
:class:`~chatcli.remote.errors.RemoteError` naming the endpoint without the key.

:func:`iter_sse` parses a Server-Sent Events body into the JSON of each ``data:``
event, stopping at ``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from chatcli.errors import UsageError
from chatcli.remote.errors import RemoteError, http_error, transport_error

DONE = object()  # what iter_sse yields for ``data: [DONE]``


def split_endpoint(url: str) -> tuple[str, str]:
    """``(root, base)`` of an endpoint URL: ``http://h:8000`` -> (``http://h:8000``, ``http://h:8000/v1``)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"invalid --endpoint {url!r}: give the server's URL, e.g. http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise UsageError("--endpoint must not contain credentials: put the key in an environment variable "
                         "and pass --api-key-env VAR")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid --endpoint {url!r}: give the base URL without ?query or #fragment")
    path = parts.path.rstrip("/")
    base_path = path if path.endswith("/v1") else path + "/v1"
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin + base_path.removesuffix("/v1"), origin + base_path


class Client:
    """JSON over HTTP to one OpenAI-compatible server."""

    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        self.root, self.base = split_endpoint(endpoint)
        self.timeout = timeout
        self._key = api_key or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        # connect fails fast; read is the longest silence allowed (between stream chunks too)
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), transport=transport,
            follow_redirects=False,
        )

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def url(self, path: str) -> str:
        """``/chat/completions`` -> under base; ``//lora-adapters`` (two slashes) -> under the root."""
        return self.root + path[1:] if path.startswith("//") else self.base + path

    def close(self) -> None:
        self._http.close()

    # --- calls -------------------------------------------------------------------------------

    def get_json(self, path: str) -> Any:
        return self._json("GET", path, None)

    def post_json(self, path: str, body: Any) -> Any:
        return self._json("POST", path, body)

    def _json(self, method: str, path: str, body: Any) -> Any:
        url = self.url(path)
        try:
            r = self._http.request(method, url, json=body)
        except httpx.HTTPError as e:
            raise transport_error(e, url, self.timeout) from None
        self._check(r, url)
        if not r.content.strip():
            return None
        try:
            return r.json()
        except ValueError:
            if "json" in r.headers.get("content-type", ""):
                raise RemoteError(f"{url} sent broken JSON; is it an OpenAI-compatible server? check --endpoint") from None
            return r.text  # vLLM's LoRA endpoints answer plain text

    @contextmanager
    def stream(self, path: str, body: Any) -> Iterator[Iterator[Any]]:
        """POST ``body`` and give the SSE events of the answer (JSON dicts, then DONE).

        Errors before the first byte raise :class:`RemoteError`; errors while reading
        raise it from the iterator. Leaving the block closes the connection (a cancel).
        """
        url = self.url(path)
        try:
            with self._http.stream("POST", url, json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r, url)
                kind = r.headers.get("content-type", "")
                if "text/event-stream" not in kind:
                    r.read()
                    raise RemoteError(f"{url} did not answer with a stream (content-type {kind or 'none'}); "
                                      "is it an OpenAI-compatible server? check --endpoint")
                yield self._events(r, url)
        except httpx.HTTPError as e:
            raise transport_error(e, url, self.timeout) from None

    def _events(self, r: httpx.Response, url: str) -> Iterator[Any]:
        try:
            yield from iter_sse(r.iter_lines())
        except httpx.HTTPError as e:
            raise transport_error(e, url, self.timeout) from None

    def _check(self, r: httpx.Response, url: str) -> None:
        if r.status_code >= 400:
            raise http_error(r.status_code, r.content, r.headers, url, has_key=self.has_key, secret=self._key)
        if 300 <= r.status_code < 400:
            raise RemoteError(f"{url} redirects (HTTP {r.status_code}) to {r.headers.get('location')}; "
                              "give that address to --endpoint")


def iter_sse(lines: Iterable[str]) -> Iterator[Any]:
    """The JSON payload of each SSE event (multi-line ``data:`` joined), then DONE at ``[DONE]``.

    Comments (``:`` lines, keep-alives) and other fields (``event:``, ``id:``) are skipped;
    an ``event: error`` or a payload with an ``error`` key raises :class:`RemoteError`.
    """
    data: list[str] = []
    event = ""
    for line in lines:
        line = line.rstrip("\r")
        if line == "":
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    yield DONE
                    return
                yield _payload(payload, event)
            event = ""
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:  # a last event without its blank line
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            yield DONE
            return
        yield _payload(payload, event)


def _payload(text: str, event: str) -> Any:
    from chatcli.remote.errors import server_message

    try:
        obj = json.loads(text)
    except ValueError:
        raise RemoteError(f"the server sent a stream event that is not JSON: {text[:80]!r}") from None
    if event == "error" or (isinstance(obj, dict) and "error" in obj and "choices" not in obj):
        raise RemoteError(f"the server reported an error mid-stream: {server_message(text)}")
    return obj
