"""Small fake OpenAI-compatible servers for the remote backend's tests (no vLLM or llama.cpp here).

:class:`FakeServer` runs ``http.server`` in a thread on loopback and follows the
documented wire formats of the servers it stands in for:

* both: ``GET /v1/models`` (vLLM's entries carry ``owned_by: "vllm"`` and
  ``max_model_len``; llama.cpp's ``owned_by: "llamacpp"`` and ``meta.n_ctx_train``),
  ``POST /v1/chat/completions`` with ``stream``, ``logprobs``/``top_logprobs``
  (chunks of ``choices[].delta.content`` + ``choices[].logprobs.content[]`` entries
  ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``, llama.cpp's
  entries with ``id`` too), ``stream_options.include_usage``, ``data: [DONE]``;
  ``POST /v1/completions`` (legacy ``logprobs: {tokens, token_logprobs, top_logprobs}``);
* vLLM: ``POST /v1/load_lora_adapter {lora_name, lora_path}`` and
  ``/v1/unload_lora_adapter {lora_name}`` (plain-text answers; loaded adapters are
  listed in /v1/models with ``parent`` and are chosen by model name);
* llama.cpp: ``GET /lora-adapters`` -> ``[{id, path, scale}]``, ``POST /lora-adapters``
  ``[{id, scale}]`` -> ``{"success": true}``;
* vLLM with ``echo=True``: ``POST /tokenize {messages, add_generation_prompt, continue_final_message}``
  -> ``{tokens, count, max_model_len}`` (a ChatML-like template over :data:`VOCAB`, longest match
  first) and ``POST /v1/completions {prompt: ids, echo: true, logprobs: k, stream: false}`` -> one
  JSON completion whose ``logprobs`` score every prompt token given the ones before it
  (:func:`echo_probs`: the scored token and k-1 alternatives, the adapter's rotated by one, so
  each side returns a token the other does not).

An adapter's alternatives are rotated by one place (``OTHERS``) in streamed answers too.

Behaviours for the error tests: ``key`` (401 without the right bearer key),
``rate_limit`` (429 with ``Retry-After``), ``cut_after`` (close the stream after N
tokens, no finish and no [DONE]), ``delay`` (seconds before the first chunk),
``logprobs=False`` (a server that never sends them). Every request body is kept in
``requests``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ["The", " capital", " of", " France", " is", " Paris", "."]
OTHERS = [" city", " Rome", " a", " London", "!", " the"]


SPECIALS = ["<|im_start|>", "<|im_end|>", "user", "assistant", "system", "\n"]
VOCAB = SPECIALS + ANSWER + OTHERS + [chr(c) for c in range(32, 127)]  # the fake's token ids are indices here
BASE_ALT = [0.2, 0.1, 0.05, 0.03]  # echo: the alternatives' probabilities beside the scored token's
ADAPTER_ALT = [0.2, 0.15, 0.1, 0.055]


def logprob_of(i: int, adapter: str | None) -> float:
    # an adapter shifts the distribution a little, so /compare sees a difference
    return -0.05 * (i + 1) - (0.3 if adapter else 0.0)


def alternatives(i: int, adapter: str | None) -> list[str]:
    """The alternatives at step i: the adapter's rotated by one, so each side has one the other lacks."""
    shift = 1 if adapter else 0
    return [OTHERS[(i + j + shift) % len(OTHERS)] for j in range(len(OTHERS))]


def echo_probs(token: str, adapter: str | None, k: int, i: int) -> dict[str, float]:
    """The probabilities /v1/completions with echo returns for a scored prompt token: itself (the most
    probable, 0.5 base or 0.35 with an adapter) and k-1 alternatives."""
    alts = BASE_ALT if adapter is None else ADAPTER_ALT
    out = {token: 0.35 if adapter else 0.5}
    for t, p in zip([a for a in alternatives(i, adapter) if a != token], alts[: max(0, k - 1)]):
        out[t] = p
    return out


def tokenize(text: str) -> list[int]:
    """Longest match first over VOCAB."""
    ids, i = [], 0
    by_length = sorted(range(len(VOCAB)), key=lambda v: -len(VOCAB[v]))
    while i < len(text):
        v = next(v for v in by_length if text.startswith(VOCAB[v], i))
        ids.append(v)
        i += len(VOCAB[v])
    return ids


def render(messages: list[dict], add_generation_prompt: bool, continue_final_message: bool = False) -> str:
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if continue_final_message and messages:
        out[-1] = out[-1].removesuffix("<|im_end|>\n")
    return "".join(out) + ("<|im_start|>assistant\n" if add_generation_prompt else "")


class FakeServer:
    def __init__(self, flavor: str = "vllm", *, model: str = "fake-model", key: str | None = None,
                 logprobs: bool = True, rate_limit: float | None = None, cut_after: int | None = None,
                 delay: float = 0.0, answer: list[str] | None = None, lora_files: list[str] = (), echo: bool = False):
        self.flavor = flavor
        self.model = model
        self.key = key
        self.logprobs = logprobs
        self.rate_limit = rate_limit
        self.cut_after = cut_after
        self.delay = delay
        self.answer = list(answer or ANSWER)
        self.echo = echo  # vLLM's /tokenize and echo: a given text can be scored
        self.requests: list[tuple[str, dict | list | None]] = []
        self.headers: list[dict] = []
        self.vllm_adapters: dict[str, str] = {}  # name -> path
        self.llama_adapters = [{"id": i, "path": p, "scale": 0.0} for i, p in enumerate(lora_files)]
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- payloads ------------------------------------------------------------------------------

    def models(self) -> dict:
        if self.flavor == "llama.cpp":
            entries = [{"id": self.model, "object": "model", "owned_by": "llamacpp", "created": 0,
                        "meta": {"n_ctx_train": 8192, "n_params": 135_000_000}}]
        else:
            entries = [{"id": self.model, "object": "model", "owned_by": "vllm", "root": self.model,
                        "parent": None, "max_model_len": 4096}]
            entries += [{"id": n, "object": "model", "owned_by": "vllm", "root": p, "parent": self.model,
                         "max_model_len": 4096} for n, p in self.vllm_adapters.items()]
        return {"object": "list", "data": entries}

    def adapter_of(self, body: dict) -> str | None:
        if self.flavor == "llama.cpp":
            active = [a for a in body.get("lora", self.llama_adapters) if a.get("scale")]
            return "lora" if active else None
        return body["model"] if body["model"] != self.model else None

    def entry(self, i: int, token: str, k: int, adapter: str | None) -> dict:
        lp = logprob_of(i, adapter)
        tops = [(token, lp)] + [(t, lp - 1.5 * (j + 1)) for j, t in enumerate(alternatives(i, adapter)[: max(0, k - 1)])]
        def one(t: str, v: float) -> dict:
            d = {"token": t, "logprob": v, "bytes": list(t.encode())}
            if self.flavor == "llama.cpp":
                d["id"] = 100 + (ANSWER + OTHERS).index(t) if t in ANSWER + OTHERS else 99
            return d
        out = one(token, lp)
        out["top_logprobs"] = [one(t, v) for t, v in tops[:k]]
        return out


def _handler(server: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes: a cut is a close

        def log_message(self, *args) -> None:  # quiet tests
            pass

        def _json(self, status: int, obj, headers: dict | None = None) -> None:
            data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(obj, str) else "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            server.headers.append(dict(self.headers))
            if server.key is None or self.headers.get("Authorization") == f"Bearer {server.key}":
                return True
            self._json(401, {"error": {"message": "Unauthorized", "type": "invalid_request_error", "code": 401}})
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            server.requests.append((self.path, None))
            if self.path == "/v1/models":
                self._json(200, server.models())
            elif self.path == "/lora-adapters" and server.flavor == "llama.cpp":
                self._json(200, server.llama_adapters)
            else:
                self._json(404, {"error": {"message": f"File Not Found: {self.path}", "type": "not_found_error"}})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
            server.requests.append((self.path, body))
            if self.path in ("/v1/chat/completions", "/v1/completions"):
                if server.rate_limit is not None:
                    self._json(429, {"error": {"message": "Too many requests", "type": "rate_limit"}},
                               {"Retry-After": f"{server.rate_limit:g}"})
                    return
                if body.get("model") not in [m["id"] for m in server.models()["data"]]:
                    self._json(404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.",
                                     "type": "NotFoundError", "code": 404})
                    return
                if server.echo and body.get("echo") and not body.get("stream"):
                    self._json(200, self._echo(body))
                    return
                try:
                    self._stream(body, chat=self.path.endswith("chat/completions"))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a cancel, a timeout)
            elif self.path == "/v1/load_lora_adapter" and server.flavor == "vllm":
                name, path = body.get("lora_name"), body.get("lora_path")
                if name in server.vllm_adapters:
                    self._json(400, {"object": "error", "message": f"The lora adapter '{name}' has already been loaded.",
                                     "type": "InvalidUserInput", "code": 400})
                    return
                server.vllm_adapters[name] = path
                self._json(200, f"Success: LoRA adapter '{name}' added successfully.")
            elif self.path == "/v1/unload_lora_adapter" and server.flavor == "vllm":
                name = body.get("lora_name")
                if server.vllm_adapters.pop(name, None) is None:
                    self._json(404, {"object": "error", "message": f"The lora adapter '{name}' cannot be found.",
                                     "type": "NotFoundError", "code": 404})
                    return
                self._json(200, f"Success: LoRA adapter '{name}' removed successfully.")
            elif self.path == "/tokenize" and server.echo:
                ids = tokenize(render(body["messages"], body.get("add_generation_prompt", True),
                                      body.get("continue_final_message", False)))
                self._json(200, {"tokens": ids, "count": len(ids), "max_model_len": 4096})
            elif self.path == "/lora-adapters" and server.flavor == "llama.cpp":
                for item in body:
                    server.llama_adapters[item["id"]]["scale"] = float(item["scale"])
                self._json(200, {"success": True})
            else:
                self._json(404, {"error": {"message": f"File Not Found: {self.path}", "type": "not_found_error"}})

        def _echo(self, body: dict) -> dict:
            """A non-streamed completion that scores the prompt (ids) and adds one token."""
            ids = body["prompt"] if isinstance(body["prompt"], list) else tokenize(body["prompt"])
            adapter, k = server.adapter_of(body), int(body.get("logprobs") or 0)
            tokens = [VOCAB[i] for i in ids] + [ANSWER[0]]
            lps: list = [None]
            tops: list = [None]
            for i, tok in enumerate(tokens[1:], start=1):
                probs = echo_probs(tok, adapter, k, i)
                lps.append(math.log(probs[tok]))
                tops.append({t: math.log(p) for t, p in probs.items()})
            offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
            return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "length",
                                 "logprobs": {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops,
                                              "text_offset": offsets}}],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}}

        def _send(self, obj) -> None:
            self.wfile.write(f"data: {json.dumps(obj) if not isinstance(obj, str) else obj}\n\n".encode())
            self.wfile.flush()

        def _stream(self, body: dict, *, chat: bool) -> None:
            if server.delay:
                time.sleep(server.delay)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            adapter = server.adapter_of(body)
            k = body.get("top_logprobs", 0) if chat else body.get("logprobs") or 0
            want = server.logprobs and (body.get("logprobs") if chat else k)
            tokens = server.answer[: body.get("max_tokens") or len(server.answer)]
            base = {"id": "chatcmpl-1", "created": 0, "model": body["model"],
                    "object": "chat.completion.chunk" if chat else "text_completion"}
            for i, tok in enumerate(tokens):
                if server.cut_after is not None and i >= server.cut_after:
                    return  # the connection closes: no finish_reason, no [DONE]
                if chat:
                    choice = {"index": 0, "delta": {"content": tok}, "finish_reason": None}
                    if want:
                        choice["logprobs"] = {"content": [server.entry(i, tok, k, adapter)]}
                else:
                    choice = {"index": 0, "text": tok, "finish_reason": None}
                    if want:
                        e = server.entry(i, tok, k, adapter)
                        choice["logprobs"] = {"tokens": [tok], "token_logprobs": [e["logprob"]],
                                              "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}]}
                self._send({**base, "choices": [choice]})
            finish = "length" if len(tokens) < len(server.answer) else "stop"
            last = {"index": 0, "delta": {}, "finish_reason": finish} if chat else {"index": 0, "text": "", "finish_reason": finish}
            self._send({**base, "choices": [last]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._send({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(tokens),
                                                              "total_tokens": 11 + len(tokens)}})
            self._send("[DONE]")

    return Handler


def expected_model_prob(i: int, adapter: str | None = None) -> float:
    return math.exp(logprob_of(i, adapter))
