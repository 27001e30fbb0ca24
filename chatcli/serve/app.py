"""The Starlette app: OpenAI's routes on one loaded engine, vLLM's adapter and tokenizer routes, a bearer key.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (with
``echo`` and prompt logprobs: :mod:`chatcli.serve.prompt_echo`), ``POST /v1/load_lora_adapter``,
``POST /v1/unload_lora_adapter``, vLLM's ``POST /tokenize``, ``POST /detokenize`` and
``GET /tokenizer_info`` at the root (:mod:`chatcli.serve.tokenizer_api`), and an open
``GET /health``. The base model answers to each of its served names (``--served-model-name``,
as vLLM; default: its chatcli name); a loaded adapter's id is its ``lora_name``.
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
from dataclasses import replace

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatcli.engine.events import Done, Step
from chatcli.engine.protocol import model_sampling
from chatcli.errors import ChatcliError
from chatcli.serve.adapters import ServedAdapters
from chatcli.serve.errors import APIError, internal, log_unexpected, model_not_found
from chatcli.serve.json_body import parse_json_body
from chatcli.serve.openai_format import Formatter
from chatcli.serve.prompt_echo import echo_prompt
from chatcli.serve.tokenizer_api import detokenize, parse_detokenize, parse_tokenize, tokenize, tokenizer_info
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
        self.base_ids = adapters.base_ids  # the names the base model answers to
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
        if model in self.base_ids:
            return None
        if model in self.adapters.names:
            return model
        raise model_not_found(model, [*self.base_ids, *self.adapters.names])

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

    def _prompt_ids(self, req: GenRequest) -> list[list[int]]:
        """The token ids of each prompt (a chat: its one rendered conversation)."""
        if isinstance(req, ChatRequest):
            return [self.engine.tokenizer.encode_chat(list(req.messages))]
        assert isinstance(req, CompletionRequest)
        vocab = self.engine.tokenizer.vocab_size
        out = []
        for i, prompt in enumerate(req.prompts):
            if isinstance(prompt, str):
                out.append(self.engine.completion_ids(prompt))
                continue
            bad = next((t for t in prompt if t >= vocab), None)
            if bad is not None:
                raise APIError(f"prompt {i} holds token id {bad}, outside this model's vocabulary (0 to {vocab - 1})",
                               400, param="prompt", code="invalid_value")  # fmt: skip
            out.append(list(prompt))
        return out

    def _work(self, req: GenRequest, prompts: list[list[int]], params, adapter: str | None,
              cancel: threading.Event):  # fmt: skip
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
                    return
                for i, ids in enumerate(prompts):  # choice i * n + j: prompt i's j-th answer (vLLM's order)
                    if cancel.is_set():
                        return
                    yield from self._completion(req, i, ids, params, cancel)

        return run

    def _completion(self, req: CompletionRequest, i: int, ids: list[int], params, cancel: threading.Event):
        """Prompt ``i``'s choices: its echo (when asked), then its answers (none for max_tokens 0)."""
        first = i * req.n
        if req.echo:
            text = req.prompts[i] if isinstance(req.prompts[i], str) else None
            echo = echo_prompt(self.engine, ids, text, req.top_logprobs if req.logprobs else None)
            for j in range(req.n):
                yield echo.for_choice(first + j)
        if params is None:  # max_tokens 0: the prompt is scored, nothing is generated
            for j in range(req.n):
                yield Done("length", len(ids), 0, None, None, seq=first + j)
            return
        # The engine's own completion path (LoadedModel.complete), from ids: a prompt may come as ids.
        generator, ctx = self.engine.generator, self.engine.context_length
        stream = (generator.stream(ids, params, cancel=cancel, context_length=ctx) if req.n == 1 else
                  generator.stream_batch(ids, params, req.n, cancel=cancel, context_length=ctx))  # fmt: skip
        for ev in stream:
            yield replace(ev, seq=ev.seq + first) if first and isinstance(ev, (Step, Done)) else ev

    async def generate(self, request: Request, req: GenRequest) -> Response:
        adapter = self.adapter_for(req.model)
        try:
            prompts = await run_in_threadpool(self._prompt_ids, req)
        except ChatcliError as e:  # no chat template, ...
            raise as_api_error(e) from None
        longest = max(len(ids) for ids in prompts)
        if req.max_tokens == 0:  # echo only: the prompt is scored, nothing follows it
            if longest > self.engine.context_length:
                raise APIError(f"This model's maximum context length is {self.engine.context_length} tokens, but the "
                               f"prompt has {longest}: shorten it", 400, param="prompt",
                               code="context_length_exceeded")  # fmt: skip
            params = None
        else:
            params = req.params(self.budget(longest, req.max_tokens), model_sampling(self.engine))
        cancel = threading.Event()
        log.info("%s model=%s n=%d prompts=%d stream=%s prompt_tokens=%d max_tokens=%d queued=%d",
                 "chat" if isinstance(req, ChatRequest) else "completion", req.model, req.n, len(prompts), req.stream,
                 sum(map(len, prompts)), req.max_tokens if params is None else params.max_tokens,
                 self.worker.waiting)  # fmt: skip
        events = self.worker.stream(self._work(req, prompts, params, adapter, cancel), cancel)
        fmt = Formatter(req.model, isinstance(req, ChatRequest), req.logprobs, req.top_logprobs,
                        self.engine.tokenizer.token_bytes, req.include_usage)  # fmt: skip
        if isinstance(req, CompletionRequest):
            fmt.prompt_tokens = sum(map(len, prompts))
        return await respond(request, events, fmt, req.n * len(prompts), req.stream, cancel)


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
    base = {"id": server.base_ids[0], "object": "model", "created": server.created, "owned_by": "chatcli",
            "root": server.engine.identity.path, "parent": None, "max_model_len": server.engine.context_length}  # fmt: skip
    data = [{**base, "id": name} for name in server.base_ids] + [
        {**base, "id": name, "root": server.adapters.source(name), "parent": server.base_ids[0]}
        for name in server.adapters.names
    ]
    return JSONResponse({"object": "list", "data": data})


async def tokenize_route(request: Request) -> Response:
    server = _server(request)
    req = parse_tokenize(await _json(request))
    if req.model is not None:
        server.adapter_for(req.model)  # a name it does not serve: 404, as for generation
    engine = server.engine
    return JSONResponse(await run_in_threadpool(tokenize, engine.tokenizer, req, engine.context_length))


async def detokenize_route(request: Request) -> Response:
    server = _server(request)
    engine = server.engine
    model, tokens = parse_detokenize(await _json(request), engine.tokenizer.vocab_size)
    if model is not None:
        server.adapter_for(model)
    return JSONResponse(await run_in_threadpool(detokenize, engine.tokenizer, tokens, engine.context_length))


async def tokenizer_info_route(request: Request) -> Response:
    server = _server(request)
    return JSONResponse(tokenizer_info(server.engine.tokenizer, server.engine.context_length))


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
    """The ASGI app serving ``engine``; ``adapters.base_ids`` are the base model's names."""
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload_lora_adapter, methods=["POST"]),
            Route("/tokenize", tokenize_route, methods=["POST"]),  # vLLM serves these at the root
            Route("/detokenize", detokenize_route, methods=["POST"]),
            Route("/tokenizer_info", tokenizer_info_route, methods=["GET"]),
        ],
        middleware=[Middleware(_CatchAll)],
        exception_handlers={ChatcliError: _api_error, HTTPException: _http_error},
    )
    app.state.chatcli = Server(engine, adapters, api_key)
    return app
