"""One generation's events -> an HTTP response: a JSON body, or Server-Sent Events.

Both shapes watch the connection while the engine works: when the client goes away
(``http.disconnect``), the request's ``cancel`` event is set, so a queued job is skipped
and a running one stops before its next forward. Streams follow OpenAI's sequence:
a role chunk per choice (chat), a chunk per token, a chunk with each choice's
``finish_reason``, the usage chunk when ``stream_options.include_usage`` asks for it,
then ``data: [DONE]``. A failure after the stream has started becomes an ``error``
event (the status line is already sent), as vLLM does. A completion with ``echo`` opens
each choice with its prompt (a :class:`~chatcli.serve.openai_format.PromptEcho` event
before the choice's tokens). ``n`` is the number of choices (prompts × answers each).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from chatcli.engine.events import Done, Step
from chatcli.errors import ChatcliError
from chatcli.serve.errors import APIError, internal, log_unexpected
from chatcli.serve.openai_format import Formatter, PromptEcho


async def watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client closes the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


def as_api_error(e: ChatcliError) -> APIError:
    """Engine refusals (a prompt it cannot take, an adapter it cannot load) are the request's fault."""
    return e if isinstance(e, APIError) else APIError(e.message, 400)


async def respond(request: Request, events: AsyncIterator, fmt: Formatter, n: int, stream: bool,
                  cancel: threading.Event):  # fmt: skip
    watcher = asyncio.create_task(watch_disconnect(request, cancel))
    if stream:
        return StreamingResponse(_sse(events, fmt, n, cancel, watcher), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
    try:
        steps: dict[int, list[Step]] = defaultdict(list)
        dones: dict[int, Done] = {}
        echoes: dict[int, PromptEcho] = {}
        try:
            async for ev in events:
                if isinstance(ev, Step):
                    steps[ev.seq].append(ev)
                elif isinstance(ev, Done):
                    dones[ev.seq] = ev
                elif isinstance(ev, PromptEcho):
                    echoes[ev.seq] = ev
        except ChatcliError as e:
            raise as_api_error(e) from None
        failed = next((d for d in dones.values() if d.finish_reason == "error"), None)
        if failed is not None:
            raise internal(f"generation failed: {failed.error}")
        if len(dones) < n:  # cancelled: the client is gone, nobody reads this
            raise APIError("the request was cancelled", 499, code="cancelled")
        return JSONResponse(fmt.response(steps, dones, echoes))
    finally:
        watcher.cancel()
        cancel.set()  # a no-op after a finished job; stops one still running if this coroutine dies


def _data(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(events: AsyncIterator, fmt: Formatter, n: int, cancel: threading.Event,
               watcher: asyncio.Task) -> AsyncIterator[str]:  # fmt: skip
    try:
        for seq in range(n):
            if (first := fmt.first_chunk(seq)) is not None:
                yield _data(first)
        prompt_tokens = completion_tokens = 0
        try:
            async for ev in events:
                if isinstance(ev, Step):
                    yield _data(fmt.step_chunk(ev))
                elif isinstance(ev, PromptEcho):
                    yield _data(fmt.echo_chunk(ev))
                elif isinstance(ev, Done):
                    if ev.finish_reason == "cancelled":
                        return
                    if ev.finish_reason == "error":
                        yield _data(internal(f"generation failed: {ev.error}").body())
                        continue
                    prompt_tokens, completion_tokens = ev.prompt_tokens, completion_tokens + ev.completion_tokens
                    yield _data(fmt.finish_chunk(ev))
        except ChatcliError as e:
            yield _data(as_api_error(e).body())
        except Exception as e:  # the status line is sent: the error goes in the stream, and it ends properly
            log_unexpected("a streamed answer", e)
            yield _data(internal(f"internal error ({type(e).__name__}): see the server log").body())
        if fmt.include_usage:
            total = fmt.prompt_tokens if fmt.prompt_tokens is not None else prompt_tokens
            yield _data(fmt.usage_chunk(total, completion_tokens))
        yield _data("[DONE]")
    finally:
        watcher.cancel()
        cancel.set()
