"""vLLM's tokenizer routes: ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``.

The shapes are those of vLLM's OpenAI server (``TokenizeCompletionRequest``,
``TokenizeChatRequest``, ``TokenizeResponse``, ``DetokenizeRequest``, ``DetokenizeResponse``),
so clients written for vLLM work unchanged (lm-evaluation-harness's remote tokenizer,
chatcli's own ``--endpoint`` scorer):

* ``/tokenize {model?, prompt, add_special_tokens = true, return_token_strs = false}`` — a
  text as the model reads it (with BOS where the tokenizer adds one); or
  ``{model?, messages, add_generation_prompt = true, continue_final_message = false,
  add_special_tokens = false, return_token_strs = false}`` — a conversation rendered by the
  model's chat template (``continue_final_message``: the last message left open, as
  transformers cuts it). Both give ``{count, max_model_len, tokens, token_strs}``
  (``token_strs``: each token's own text, null unless asked for).
* ``/detokenize {model?, tokens}`` gives ``{prompt}``, the ids decoded (special tokens kept).
* ``/tokenizer_info`` gives what a remote tokenizer needs: the special tokens, the chat
  template, the context length.

``model``, when given, must be a served name (the base model's or an adapter's: they share
the tokenizer). A prompt or token list longer than the context is refused, as vLLM does.
Every refusal is a 400 naming the parameter. Pure functions of the tokenizer: the app runs
them off the event loop, beside (not behind) generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatcli.errors import ChatcliError
from chatcli.serve.errors import APIError, bad_param
from chatcli.serve.validate import parse_messages

MAX_TOKEN_IDS = 1 << 20  # a detokenize list longer than any context: refused before it is read


@dataclass(frozen=True)
class TokenizeRequest:
    model: str | None
    prompt: str | None  # a text, or None for messages
    messages: tuple[dict, ...]
    add_special_tokens: bool
    add_generation_prompt: bool
    continue_final_message: bool
    return_token_strs: bool


def parse_tokenize(body: Any) -> TokenizeRequest:
    body = _object(body)
    chat = "messages" in body and "prompt" not in body
    if not chat and not (isinstance(body.get("prompt"), str)):
        raise bad_param("prompt", "give prompt (a string) or messages (a list of {role, content})")
    continue_final = _flag(body, "continue_final_message", False)
    add_generation = _flag(body, "add_generation_prompt", True)
    if chat and continue_final and add_generation and "add_generation_prompt" in body:
        raise bad_param("continue_final_message", "continue_final_message and add_generation_prompt cannot both be "
                                                  "true: set add_generation_prompt to false")  # fmt: skip
    return TokenizeRequest(
        model=_model(body), prompt=None if chat else _text(body["prompt"]),
        messages=parse_messages(body["messages"]) if chat else (),
        add_special_tokens=_flag(body, "add_special_tokens", not chat),
        add_generation_prompt=add_generation and not continue_final, continue_final_message=continue_final,
        return_token_strs=_flag(body, "return_token_strs", False),
    )


def tokenize(tokenizer, req: TokenizeRequest, max_model_len: int) -> dict:
    """vLLM's ``TokenizeResponse`` for ``req``."""
    try:
        if req.prompt is not None:
            ids = tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        else:
            text = _rendered(tokenizer, list(req.messages), req)
            ids = tokenizer.encode(text, add_special_tokens=req.add_special_tokens)
    except APIError:
        raise
    except ChatcliError as e:  # no chat template, a template that fails on these messages
        raise APIError(e.message, 400, param="messages") from None
    if len(ids) > max_model_len:
        raise APIError(f"This model's maximum context length is {max_model_len} tokens, but the text has "
                       f"{len(ids)}: tokenize a shorter one", 400, param="prompt", code="context_length_exceeded")
    strs = [tokenizer.token_text(i) for i in ids] if req.return_token_strs else None
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": strs}


def _rendered(tokenizer, messages: list[dict], req: TokenizeRequest) -> str:
    text = tokenizer.render_chat(messages, add_generation_prompt=req.add_generation_prompt)
    if not req.continue_final_message:
        return text
    # As transformers' continue_final_message: cut the rendering after the last message's text.
    final = messages[-1]["content"]
    if not final.strip() or final.strip() not in text:
        raise bad_param("continue_final_message", "continue_final_message needs the last message's text in the "
                                                  "rendered conversation: give it a non-empty last message")  # fmt: skip
    at = text.rindex(final.strip())
    if text[at : at + len(final.lstrip())] == final.lstrip():
        return text[: at + len(final.lstrip())]
    return text[: at + len(final.strip())]  # the template trimmed trailing spaces: cut after what it kept


def parse_detokenize(body: Any, vocab_size: int) -> tuple[str | None, list[int]]:
    """``(model, tokens)`` of a detokenize request; each id must be in the vocabulary."""
    body = _object(body)
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or len(tokens) > MAX_TOKEN_IDS:
        raise bad_param("tokens", "tokens must be a list of token ids")
    for i, t in enumerate(tokens):
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab_size:
            raise bad_param("tokens", f"tokens[{i}] is not a token id of this model: use integers from 0 to "
                                      f"{vocab_size - 1}")  # fmt: skip
    return _model(body), tokens


def detokenize(tokenizer, tokens: list[int], max_model_len: int) -> dict:
    """vLLM's ``DetokenizeResponse``: the ids' text, special tokens as written."""
    if len(tokens) > max_model_len:
        raise APIError(f"This model's maximum context length is {max_model_len} tokens, but {len(tokens)} were "
                       "given: detokenize fewer", 400, param="tokens", code="context_length_exceeded")  # fmt: skip
    return {"prompt": tokenizer.decode(tokens)}


def tokenizer_info(tokenizer, max_model_len: int) -> dict:
    """What a remote tokenizer needs (vLLM's ``/tokenizer_info``; lm-evaluation-harness checks ``eos_token``)."""
    special = tokenizer.special_tokens
    eos = special.get("eos_token") or (tokenizer.token_text(tokenizer.eos_ids[0]) if tokenizer.eos_ids else None)
    bos = special.get("bos_token") or (tokenizer.token_text(tokenizer.bos_id) if tokenizer.bos_id is not None else None)
    return {
        "tokenizer_class": "chatcli.ChatTokenizer", "eos_token": eos, "bos_token": bos,
        "pad_token": special.get("pad_token"), "unk_token": special.get("unk_token"),
        "add_bos_token": tokenizer.add_bos_token, "chat_template": tokenizer.chat_template,
        "model_max_length": max_model_len, "vocab_size": tokenizer.vocab_size,
    }  # fmt: skip


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", 400)
    return body


def _model(body: dict) -> str | None:
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise bad_param("model", "model must be the name of a served model (GET /v1/models) or left out")
    return _text(model) if model is not None else None


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_param(name, f"{name} must be true or false")
    return value


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_param("prompt", "the text is not valid Unicode (a lone surrogate): send UTF-8 text") from None
    return value
