"""Helpers for the serve tests: a served engine on a free loopback port, raw HTTP, engine references."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from chatcli.engine.events import Done, Step
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams

MODEL_ID = "tiny"
HELLO = [{"role": "user", "content": "Paris is the capital of"}]


def tiny_engine(model_dir: Path):
    return load_engine(str(model_dir), device="cpu")


@contextmanager
def served(engine, adapter_dirs=(), api_key: str | None = None, log_level: str = "warning"):
    """``engine`` behind chatcli serve's app on a free loopback port; yields the BackgroundServer."""
    from chatcli.serve.server import BackgroundServer, build

    app = build(engine, model_id=MODEL_ID, adapter_dirs=list(adapter_dirs), api_key=api_key)
    with BackgroundServer(app, log_level=log_level) as server:
        yield server


def client(server, api_key: str = "unused", **kwargs):
    import openai

    kwargs.setdefault("timeout", 60)
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, **kwargs)


def post(server, path: str, body: bytes | dict | None, key: str | None = None, root: bool = False,
         method: str = "POST") -> tuple[int, dict | str]:  # fmt: skip
    """POST raw bytes (or a dict as JSON) to ``/v1{path}`` (``root``: to ``{path}`` at the server's
    root, where vLLM has /tokenize); returns (status, parsed JSON or text). ``method="GET"``: no body."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    base = server.base_url.removesuffix("/v1") if root else server.base_url
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read().decode()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def reference(events) -> tuple[list[Step], Done]:
    """The steps and Done of an engine stream (run directly, not through the server)."""
    steps, done = [], None
    for ev in events:
        if isinstance(ev, Step):
            steps.append(ev)
        elif isinstance(ev, Done):
            done = ev
    assert done is not None
    return steps, done


def greedy(max_tokens: int = 12, top_n: int = 5, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, top_n=top_n, **kw)
