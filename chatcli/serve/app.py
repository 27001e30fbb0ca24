"""The Starlette app: OpenAI's routes on one loaded engine, vLLM's adapter routes, a bearer key.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter`` and an open ``GET /health``.
The base model's id is its chatcli name; a loaded adapter's id is its ``lora_name``.
Requests are checked completely (JSON nesting and encoding, parameters, model, prompt
+ ``max_tokens`` against the context) before they are queued for the engine thread, so
every refusal is an OpenAI-style 4xx body and the engine never sees a bad request; an
unexpected failure is a JSON 500 with a one-line message, logged by exception type and
code location only (never the request's contents or key). No error drops the
connection: uvicorn closes a kept-alive connection when an exception leaves the app,
so :class:`_CatchAll` makes sure none does.
With an API key, every ``/v1`` route wants ``Authorization: Bearer KEY``; the key is
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatcli.engine.protocol import model_sampling
from chatcli.errors import ChatcliError
from chatcli.serve.adapters import ServedAdapters
from chatcli.serve.errors import APIError, internal, log_unexpected, model_not_found
from chatcli.serve.json_body import parse_json_body
from chatcli.serve.openai_format import Formatter
from chatcli.serve.validate import (
    ChatRequest,
    CompletionRequest,
    GenRequest,
    parse_adapter_request,
    parse_chat,
    parse_completion,
)
from chatcli.serve.respond import as_api_error, respond
from chatcli.serve.worker import EngineWorker

log = logging.getLogger("chatcli.serve")


class Server:
    """What the routes share: the engine, its worker thread, the served adapters, the key."""

    def __init__(self, engine, adapters: ServedAdapters, api_key: str | None = None):
        self.engine = engine
        self.adapters = adapters
        self.base_id = adapters.base_id
        self._key = api_key.encode() if api_key else None
        self.worker = EngineWorker()
        self.created = int(time.time())

    def authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise APIError("Incorrect or missing API key: send it as 'Authorization: Bearer KEY'", 401,
                           code="invalid_api_key")  # fmt: skip

    def adapter_for(self, model: str) -> str | None:
        """None for the base model, the adapter's name for an adapter; 404 for anything else."""
        if model == self.base_id:
            return None
        if model in self.adapters.names:
            return model
        raise model_not_found(model, [self.base_id, *self.adapters.names])

    def budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """max_tokens for the engine: as asked, or what the context leaves (vLLM); 400 if it cannot fit."""
        ctx = self.engine.context_length
        if prompt_tokens >= ctx:
            raise APIError(f"This model's maximum context length is {ctx} tokens, but the prompt has "
                           f"{prompt_tokens}: shorten it", 400, param="messages", code="context_length_exceeded")  # fmt: skip
        if max_tokens is None:
            return ctx - prompt_tokens
        if prompt_tokens + max_tokens > ctx:
            raise APIError(
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion): "
                "reduce the prompt or max_tokens", 400, param="max_tokens", code="context_length_exceeded")  # fmt: skip
        return max_tokens

    def _prompt_tokens(self, req: GenRequest) -> int:
        if isinstance(req, ChatRequest):
            return len(self.engine.tokenizer.encode_chat(list(req.messages)))
        return len(self.engine.completion_ids(req.prompt))

    def _work(self, req: GenRequest, params, adapter: str | None, cancel: threading.Event):
        """The job for the engine thread: the generation, with the adapter on for it alone."""
        engine, scope = self.engine, self.adapters.scope

        def run():
            with scope(adapter):
                if isinstance(req, ChatRequest):
                    messages = list(req.messages)
                    if req.n == 1:
                        yield from engine.chat(messages, params, cancel=cancel)
                    else:
                        yield from engine.chat_batch(messages, params, req.n, cancel=cancel)
                elif req.n == 1:
                    yield from engine.complete(req.prompt, params, cancel=cancel)
                else:
                    yield from engine.complete_batch(req.prompt, params, req.n, cancel=cancel)

        return run

    async def generate(self, request: Request, req: GenRequest) -> Response:
        adapter = self.adapter_for(req.model)
        try:
            prompt_tokens = await run_in_threadpool(self._prompt_tokens, req)
        except ChatcliError as e:  # no chat template, ...
            raise as_api_error(e) from None
        params = req.params(self.budget(prompt_tokens, req.max_tokens), model_sampling(self.engine))
        cancel = threading.Event()
        log.info("%s model=%s n=%d stream=%s prompt_tokens=%d max_tokens=%d queued=%d",
                 "chat" if isinstance(req, ChatRequest) else "completion", req.model, req.n, req.stream,
                 prompt_tokens, params.max_tokens, self.worker.waiting)  # fmt: skip
        events = self.worker.stream(self._work(req, params, adapter, cancel), cancel)
        fmt = Formatter(req.model, isinstance(req, ChatRequest), req.logprobs, req.top_logprobs,
                        self.engine.tokenizer.token_bytes, req.include_usage)  # fmt: skip
        return await respond(request, events, fmt, req.n, req.stream, cancel)


MAX_BODY_BYTES = 8 * 2**20  # a long conversation is well under 1 MB; more is a mistake or an attack


async def _json(request: Request):
    """The request's JSON body, read with a size cap (declared length first, then as it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():  # a chunked body has no length to check up front
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return parse_json_body(b"".join(chunks))


def _too_large() -> APIError:
    return APIError(f"the request body is larger than {MAX_BODY_BYTES // 2**20} MB: send a shorter conversation", 413)


def _server(request: Request) -> Server:
    server: Server = request.app.state.chatcli
    server.authorize(request)
    return server


async def chat_completions(request: Request) -> Response:
    server = _server(request)
    return await server.generate(request, parse_chat(await _json(request)))


async def completions(request: Request) -> Response:
    server = _server(request)
    req: CompletionRequest = parse_completion(await _json(request))
    return await server.generate(request, req)


async def models(request: Request) -> Response:
    server = _server(request)
    base = {"id": server.base_id, "object": "model", "created": server.created, "owned_by": "chatcli",
            "root": server.engine.identity.path, "parent": None, "max_model_len": server.engine.context_length}  # fmt: skip
    data = [base] + [
        {**base, "id": name, "root": server.adapters.source(name), "parent": server.base_id}
        for name in server.adapters.names
    ]
    return JSONResponse({"object": "list", "data": data})


async def load_lora_adapter(request: Request) -> Response:
    server = _server(request)
    name, path = parse_adapter_request(await _json(request), with_path=True)
    resolved = server.adapters.resolve(path)
    await server.worker.call(lambda: server.adapters.load(name, resolved))
    log.info("loaded adapter %s from %s", name, resolved)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


async def unload_lora_adapter(request: Request) -> Response:
    server = _server(request)
    name, _ = parse_adapter_request(await _json(request), with_path=False)
    await server.worker.call(lambda: server.adapters.unload(name))
    log.info("unloaded adapter %s", name)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")


async def health(request: Request) -> Response:
    return Response(status_code=200)


def error_response(err: APIError) -> Response:
    # ASCII JSON: a message that echoes a client's lone surrogate still encodes.
    return Response(json.dumps(err.body()), status_code=err.status, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    return error_response(as_api_error(exc))  # type: ignore[arg-type]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = APIError(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code,
                   code="not_found" if exc.status_code == 404 else None)  # fmt: skip
    return error_response(err)


class _CatchAll:
    """ASGI guard inside Starlette's own: an exception that escapes a route becomes a JSON 500
    (or, when the response has started, its body is ended), so uvicorn never sees it and keeps
    the connection. Starlette's ``Exception`` handler would answer but then re-raise."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"started": False, "ended": False}

        async def watched_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            log_unexpected(f"{scope.get('method')} {scope.get('path')}", exc)
            try:
                if not state["started"]:
                    err = internal(f"internal error ({type(exc).__name__}): see the server log")
                    await error_response(err)(scope, receive, send)
                elif not state["ended"]:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client is gone: nothing left to tell it
                pass


def make_app(engine, adapters: ServedAdapters, api_key: str | None = None) -> Starlette:
    """The ASGI app serving ``engine``; ``adapters.base_id`` is the base model's id."""
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload_lora_adapter, methods=["POST"]),
        ],
        middleware=[Middleware(_CatchAll)],
        exception_handlers={ChatcliError: _api_error, HTTPException: _http_error},
    )
    app.state.chatcli = Server(engine, adapters, api_key)
    return app
