"""The remote engine: :class:`chatcli.engine.protocol.ChatEngine` over an OpenAI-compatible server.

:func:`connect` reads the API key from the named environment variable, asks
``GET /v1/models`` for the model (its context length where the server says, and
which server it is: vLLM, llama.cpp, chatcli serve or another), and returns a
:class:`RemoteEngine`. Its ``chat``/``complete`` stream ``/v1/chat/completions`` /
``/v1/completions`` with ``logprobs`` and turn the chunks into Steps
(:mod:`chatcli.remote.steps`); ``chat_batch`` sends one request per answer, each
with its own seed. Every failure ends the stream with ``Done("error")`` and a one-line
message: the answer so far stays (a cut stream is marked by that error) and the
conversation can be retried. As the local engine's, its streams carry a loop warning
when an answer repeats itself (:mod:`chatcli.engine.loop_watch`).

What a server cannot do is declared in :attr:`RemoteEngine.capabilities`: no exact
prompt (the server applies its own chat template), no token ids, no continuation
after given tokens (/continue, branching), no weights for teacher-forced scoring.
Whether the server scores a given text over HTTP instead (vLLM's ``/tokenize`` and
``echo``, :mod:`chatcli.remote.scoring`) is asked once, on first use, and kept in
:attr:`RemoteEngine.text_scorer`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

from chatcli.engine.protocol import Capabilities, Message, ModelIdentity
from chatcli.engine.events import Done, Event, Notice, Step
from chatcli.engine.loop_watch import watch_loops
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.remote.adapters import RequestModel, adapter_control
from chatcli.remote.client import DONE, Client
from chatcli.remote.errors import RemoteError, scrub
from chatcli.remote.steps import LogprobsMode, StepMapper

MAX_TOP_LOGPROBS = 20  # OpenAI's limit, and vLLM's default --max-logprobs
FINISH = {"stop": "stop", "length": "length", "eos": "stop", "stop_sequence": "stop"}
REMOTE = Capabilities(backend="remote", exact_prompt=False, token_ids=False, prefix_continuation=False,
                      weights_in_process=False)


def read_api_key(env_var: str | None) -> str | None:
    """The key from environment variable ``env_var`` (never from the command line)."""
    if env_var is None:
        return None
    if not env_var or not env_var.replace("_", "").isalnum():
        raise UsageError(f"--api-key-env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), not {env_var[:3]!r}…")
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise UsageError(f"environment variable {env_var} is empty or not set; export the API key in it")
    return key


def connect(
    endpoint: str,
    model: str | None = None,
    *,
    api_key_env: str | None = None,
    timeout: float = 60.0,
    logprobs_mode: LogprobsMode = "raw",
    transport=None,
) -> "RemoteEngine":
    """A :class:`RemoteEngine` for ``model`` on the server at ``endpoint`` (checked with GET /v1/models)."""
    if logprobs_mode not in ("raw", "processed"):
        raise UsageError(f"invalid logprobs mode {logprobs_mode!r}: use raw or processed")
    if not timeout > 0:
        raise UsageError(f"invalid --timeout {timeout!r}: use a number of seconds > 0")
    client = Client(endpoint, read_api_key(api_key_env), timeout=timeout, transport=transport)
    try:
        listing = client.get_json("/models")
        entries = [m for m in (listing or {}).get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str)] \
            if isinstance(listing, dict) else None
        if entries is None:
            raise RemoteError(f"{client.url('/models')} did not list models like an OpenAI-compatible server; check --endpoint")
        ids = [m["id"] for m in entries]
        if model is None:
            if not ids:
                raise RemoteError(f"{client.base} serves no model")
            model = ids[0]
        elif model not in ids:
            raise UsageError(f"the server at {client.base} has no model {model!r}; it serves: {', '.join(ids) or 'none'}")
        entry = next(m for m in entries if m["id"] == model)
        return RemoteEngine(client, model, entry, logprobs_mode)
    except BaseException:
        client.close()
        raise


def _flavor(entry: dict) -> str:
    owner = str(entry.get("owned_by", "")).lower()
    if "vllm" in owner:
        return "vllm"
    if "llama" in owner or "meta" in entry and isinstance(entry.get("meta"), dict):
        return "llama.cpp"
    if "chatcli" in owner:
        return "chatcli"
    return "openai"


def _context_length(entry: dict) -> int:
    for value in (entry.get("max_model_len"), entry.get("context_length"), (entry.get("meta") or {}).get("n_ctx_train")):
        if isinstance(value, int) and value > 0:
            return value
    return 0  # unknown


class RemoteEngine:
    """One model on an OpenAI-compatible server; the request model name can switch to an adapter's."""

    capabilities = REMOTE

    def __init__(self, client: Client, model: str, entry: dict, logprobs_mode: LogprobsMode = "raw"):
        self.client = client
        self.base_model = model
        self.request_model = RequestModel(model, model)  # vLLM selects an adapter by model name
        self.flavor = _flavor(entry)
        self.logprobs_mode = logprobs_mode
        self.extra_body: dict[str, Any] = {}  # e.g. llama.cpp's per-request "lora" scales
        self.identity = ModelIdentity(
            name=model, path=client.base, model_type=f"remote ({self.flavor})", sha256=None, dtype="remote",
            device=client.root.split("://", 1)[-1], context_length=_context_length(entry), parameters=0,
        )
        self.context_length = self.identity.context_length

    # --- what the server cannot show ------------------------------------------------------

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        raise UsageError(self.capabilities.unsupported("the exact prompt")
                         + ": the server applies its own chat template and does not show the result")

    def count_tokens(self, text: str) -> int:
        raise UsageError(self.capabilities.unsupported("exact token counting"))

    @cached_property
    def adapters(self):
        """The server's adapter control (vLLM or llama.cpp), or None when it offers none
        (asked on first use: llama.cpp is probed with a request)."""
        return adapter_control(self.client, self.flavor, self.request_model)

    @cached_property
    def text_scorer(self):
        """Teacher-forced scoring of a given answer (:class:`chatcli.remote.scoring.EchoScorer`), or
        None when the server has none: probed once, on first use (/compare), and kept."""
        from chatcli.remote.scoring import probe

        return probe(self.client, self.base_model, self.logprobs_mode)

    # --- streams ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        answer_prefix_ids: Sequence[int] = (),
    ) -> Iterator[Event]:
        if answer_prefix_ids:
            raise UsageError(self.capabilities.unsupported("continuing after given tokens (/continue, branching)")
                             + "; /retry asks for a new answer")
        yield from self.chat_with({}, messages, params, cancel)

    def chat_with(self, fields: dict, messages: Sequence[Message], params: SamplingParams,
                  cancel: threading.Event | None = None) -> Iterator[Event]:
        """``chat`` with request ``fields`` overridden for this request only (/compare: another model name)."""
        current = params() if callable(params) else params  # the TUI passes a live getter
        body = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
        yield from watch_loops(self._stream("/chat/completions", body, current, cancel, chat=True, fields=fields), current)

    def complete(self, text: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[Event]:
        yield from watch_loops(self._stream("/completions", {"prompt": text}, params, cancel, chat=False), params)

    def chat_batch(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """N answers as N requests (one seed each; servers differ in how they seed ``n``)."""
        for i in range(n):
            p = params.with_(seed=seeds[i]) if seeds is not None else params
            for event in self.chat(messages, p, cancel=cancel):
                yield replace(event, seq=i) if isinstance(event, (Step, Done)) else event

    def request_body(self, params: SamplingParams, *, chat: bool, stream: bool = True) -> dict:
        """The sampling part of a request: OpenAI's fields, the others only when not neutral."""
        body: dict[str, Any] = {
            "model": self.request_model.current, "stream": stream, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        k = min(params.top_n, MAX_TOP_LOGPROBS)
        if chat:
            body.update(logprobs=True, top_logprobs=k)
        else:
            body["logprobs"] = max(k, 1)  # completions: an int (how many alternatives)
        if params.top_k:
            body["top_k"] = params.top_k
        if params.min_p:
            body["min_p"] = params.min_p
        if params.repetition_penalty != 1.0:
            body["repeat_penalty" if self.flavor == "llama.cpp" else "repetition_penalty"] = params.repetition_penalty
        body.update(self.extra_body)
        return body

    def _stream(self, path: str, body: dict, params: SamplingParams, cancel: threading.Event | None, *, chat: bool,
                fields: dict | None = None) -> Iterator[Event]:
        body = {**body, **self.request_body(params, chat=chat), **(fields or {})}
        mapper = StepMapper(self.logprobs_mode)
        t0 = time.perf_counter()
        first: float | None = None
        texts: list[str] = []
        finish: str | None = None
        usage: dict = {}
        n = 0

        def done(reason: str, error: str | None = None) -> Done:
            now = time.perf_counter()
            tps = (n - 1) / (now - first) if first is not None and n > 1 and now > first else None
            return Done(reason, int(usage.get("prompt_tokens") or 0), n, (first - t0) if first else None, tps,
                        text="".join(texts), error=error)  # type: ignore[arg-type]

        try:
            with self.client.stream(path, body) as events:
                for event in events:
                    if cancel is not None and cancel.is_set():
                        yield done("cancelled")  # leaving the block closes the connection: the server stops
                        return
                    if event is DONE:
                        break
                    if isinstance(event.get("usage"), dict):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        steps = mapper.chat_chunk(choice) if chat else mapper.completion_chunk(choice)
                        for step in steps:
                            if first is None:
                                first = time.perf_counter()
                                if not mapper.saw_logprobs and params.top_n:
                                    yield _no_logprobs_notice(self.client.base)
                            n += 1
                            texts.append(step.text)
                            yield step
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    if cancel is not None and cancel.is_set():
                        yield done("cancelled")
                        return
        except RemoteError as e:
            cut = f" after {n} token{'s' * (n != 1)} (the partial answer is kept)" if n else ""
            yield done("error", scrub(e.message, self.client._key) + cut)
            return
        if finish is None:
            yield done("error", f"the server ended the stream mid-answer after {n} token{'s' * (n != 1)} "
                                "(the partial answer is kept); /retry asks again")
            return
        yield done(FINISH.get(finish, "stop"))

    def close(self) -> None:
        self.client.close()


def _no_logprobs_notice(base: str) -> Notice:
    return Notice(f"{base} sends no token probabilities (logprobs): the text streams, the probability panel stays empty",
                  kind="no_logprobs")
