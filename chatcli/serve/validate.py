"""Request JSON -> a validated :class:`ChatRequest` or :class:`CompletionRequest`.

Follows OpenAI's chat completions and (legacy) completions bodies, with vLLM's extra
sampling parameters (``top_k``, ``min_p``, ``repetition_penalty``). Every bad value is
an :class:`~chatcli.serve.errors.APIError` (400) naming the parameter; parameters the
engine cannot honour (penalties, logit bias, tools, JSON mode) are refused when set to
anything but their neutral value, never silently ignored. Unknown fields are ignored, as
vLLM does. ``max_tokens`` may stay ``None`` here: the app fills it from the context left
after the prompt, which it has to tokenize first.

A completion's ``prompt`` is a string, a list of token ids, or a list of either (a batch:
choice ``i * n + j`` is prompt ``i``'s ``j``-th answer, as vLLM numbers them; token ids are
checked against the vocabulary by the app). ``echo: true`` returns each prompt before its
answer, with its tokens' log-probabilities when ``logprobs`` is set (the first one null),
and then ``max_tokens`` may be 0: the prompt is scored, nothing is generated.

Any JSON value goes in and only a request or an ``APIError`` comes out (the fuzz tests
hold it to that): text the engine will see must be valid Unicode (a JSON ``"\\ud83d"``
escape decodes to a lone surrogate no tokenizer takes), and values echoed in an error
message are shortened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.serve.errors import APIError, bad_param, shorten

MAX_N = 16  # answers per request: a batch of n rows, each with its own KV cache
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat (vLLM's default max_logprobs)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Parameters the engine cannot honour: accepted only at these neutral values.
NEUTRAL = {"presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}),
           "tools": (None, []), "functions": (None, []), "suffix": (None, "")}
MAX_PROMPTS = 64  # prompts in one completion request (a batch, e.g. lm-evaluation-harness's)
# A sampling value the request leaves out is the model's own (its generation_config.json, as vLLM
# does), else OpenAI's neutral default.
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class GenRequest:
    model: str
    sampling: dict  # the SamplingParams fields the request gives, except max_tokens (checked already)
    max_tokens: int | None  # None: what the context leaves after the prompt
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int

    def params(self, max_tokens: int, model_defaults: Mapping[str, object] | None = None) -> SamplingParams:
        """The request's values over ``model_defaults`` (the model's recommendation) over OpenAI's defaults."""
        model = {k: v for k, v in (model_defaults or {}).items() if k in OPENAI_DEFAULTS}
        # top_n: the alternatives each Step carries, so exactly what top_logprobs asks for.
        values = {**OPENAI_DEFAULTS, **model, **self.sampling}
        return SamplingParams(max_tokens=max_tokens, top_n=self.top_logprobs, **values)


@dataclass(frozen=True)
class ChatRequest(GenRequest):
    messages: tuple[dict, ...] = ()


Prompt = str | tuple[int, ...]  # a text, or token ids


@dataclass(frozen=True)
class CompletionRequest(GenRequest):
    prompts: tuple[Prompt, ...] = ()
    echo: bool = False  # each choice's text (and logprobs) starts with its prompt


def parse_chat(body: Any) -> ChatRequest:
    body = _object(body)
    if body.get("response_format") not in (None, {"type": "text"}):
        raise bad_param("response_format", "response_format is not supported by chatcli serve: leave it out (plain text)")
    logprobs = _bool(body, "logprobs", False)
    top = _int(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top and not logprobs:
        raise bad_param("top_logprobs", "top_logprobs needs logprobs: true")
    max_tokens = _int(body, "max_completion_tokens", None, 1, None)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", None, 1, None)
    return ChatRequest(**_common(body), max_tokens=max_tokens, logprobs=logprobs, top_logprobs=top or 0,
                       messages=parse_messages(body.get("messages")))  # fmt: skip


def parse_completion(body: Any) -> CompletionRequest:
    body = _object(body)
    if body.get("best_of") is not None and body.get("best_of") != body.get("n", 1):
        raise bad_param("best_of", "best_of is not supported by chatcli serve: leave it out")
    top = _int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    echo = _bool(body, "echo", False)
    # OpenAI's (and vLLM's) default for legacy completions is 16 tokens; 0 with echo scores the prompt only.
    max_tokens = _int(body, "max_tokens", 16, 0, None)
    if max_tokens == 0 and not echo:
        raise bad_param("max_tokens", "max_tokens 0 generates nothing: use it with echo: true to score the prompt")
    return CompletionRequest(**_common(body), max_tokens=max_tokens, logprobs=top is not None, top_logprobs=top or 0,
                             prompts=_prompts(body.get("prompt")), echo=echo)  # fmt: skip


def parse_adapter_request(body: Any, *, with_path: bool) -> tuple[str, str | None]:
    """``(lora_name, lora_path)`` of a load (``with_path``) or unload request."""
    body = _object(body)
    name = _adapter_field(body, "lora_name")
    return name, (_adapter_field(body, "lora_path") if with_path else None)


def _adapter_field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise bad_param(name, f"missing {name}: give it as a non-empty string")
    if "\0" in value:
        raise bad_param(name, f"{name} contains a NUL character: give a plain name or path")
    return _text(value, name)


def _text(value: str, where: str) -> str:
    """``value`` if it is valid Unicode, else a 400 naming ``where``."""
    if not value.isascii():  # the usual case is ASCII: nothing to encode
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise bad_param(where, f"{where} is not valid Unicode: a lone surrogate (\\u{ord(value[e.start]):04x}) "
                                   f"at character {e.start}; send UTF-8 text") from None  # fmt: skip
    return value


def _common(body: dict) -> dict:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_param("model", "missing model: give the id of a model from GET /v1/models")
    _text(model, "model")
    for name, neutral in NEUTRAL.items():
        if body.get(name) is not None and body[name] not in neutral:
            raise bad_param(name, f"{name} is not supported by chatcli serve: leave it out")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise bad_param("stream_options", "stream_options must be an object and needs stream: true")
    include_usage = _bool(options or {}, "include_usage", False, where="stream_options.include_usage")
    top_k = _int(body, "top_k", None, -1, None)
    given = dict(
        temperature=_number(body, "temperature", None, 0.0, None),
        top_p=_number(body, "top_p", None, 0.0, 1.0, open_low=True),
        top_k=None if top_k is None else max(top_k, 0),  # vLLM's -1 and chatcli's 0 both mean off
        min_p=_number(body, "min_p", None, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", None, 0.0, None, open_low=True),
        seed=_int(body, "seed", None, 0, 2**63 - 1),
    )
    sampling = {k: v for k, v in given.items() if v is not None}  # left out: the model's, else OpenAI's
    sampling["stop"] = _stops(body.get("stop"))
    try:
        SamplingParams(**sampling)  # the engine's own checks, as a last word
    except UsageError as e:
        raise APIError(e.message, 400, code="invalid_value") from None
    return dict(model=model, sampling=sampling, n=_int(body, "n", 1, 1, MAX_N), stream=stream,
                include_usage=include_usage)  # fmt: skip


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", 400)
    return body


def parse_messages(value: Any) -> tuple[dict, ...]:
    """Chat messages (OpenAI's roles, text content only) as ``{role, content}`` dicts; a 400 naming the bad one."""
    if not isinstance(value, list) or not value:
        raise bad_param("messages", "messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in ROLES:  # (a list or object as role is unhashable)
            raise bad_param(where, f"{where} needs a role: one of {', '.join(ROLES)} (tools are not supported)")
        out.append({"role": ROLES[role], "content": _content(m.get("content"), where)})
    return tuple(out)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return _text(value, f"{where}.content")
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
        return "".join(_text(p["text"], f"{where}.content[{j}].text") for j, p in enumerate(value))
    raise bad_param(f"{where}.content", f"{where}.content must be a string or a list of text parts (no images or audio)")


def _prompts(value: Any) -> tuple[Prompt, ...]:
    """The prompts of a completion: one, or a batch (a list of strings or of token-id lists)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(_is_id(v) for v in value)):
        return (_one_prompt(value, "prompt"),)
    if not isinstance(value, list) or not value or len(value) > MAX_PROMPTS:
        raise bad_param("prompt", f"prompt must be a non-empty string, a list of token ids, or a list of at most "
                                  f"{MAX_PROMPTS} of either")  # fmt: skip
    return tuple(_one_prompt(v, f"prompt[{i}]") for i, v in enumerate(value))


def _one_prompt(value: Any, where: str) -> Prompt:
    if isinstance(value, str) and value:
        return _text(value, where)
    if isinstance(value, list) and value and all(_is_id(v) for v in value):
        return tuple(value)
    raise bad_param("prompt", f"{where} must be a non-empty string or a non-empty list of token ids")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 16:
        raise bad_param("stop", "stop must be a non-empty string or a list of at most 16 non-empty strings")
    return tuple(_text(s, "stop") for s in stops)


def _bool(body: dict, name: str, default: bool, where: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_param(where or name, f"{where or name} must be true or false, not {shorten(repr(value))}")
    return value


def _int(body: dict, name: str, default: int | None, lo: int, hi: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        rule = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
        raise bad_param(name, f"invalid {name} {shorten(repr(value))}: use {rule}")
    return value


def _number(body: dict, name: str, default: float | None, lo: float, hi: float | None,
            open_low: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
    if ok:
        ok = (value > lo if open_low else value >= lo) and (hi is None or value <= hi)
    if not ok:
        low = f"> {lo:g}" if open_low else f">= {lo:g}"
        rule = f"a number {low}" + ("" if hi is None else f" and <= {hi:g}")
        raise bad_param(name, f"invalid {name} {shorten(repr(value))}: use {rule}")
    return float(value)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (JSON allows 10**4000)
        return False
