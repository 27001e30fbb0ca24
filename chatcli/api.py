"""chatcli's Python API: the same engine and the same ``Step`` objects the CLI prints.

    import chatcli

    model = chatcli.load_model()                      # the default model, float32, auto device
    for step in chatcli.stream(model, "What is the capital of France?", temperature=0):
        print(repr(step.text), f"{step.model_prob:.0%}", [t.token for t in step.top[:3]])
    text = chatcli.generate(model, "Write a haiku about tokens.", seed=1)
    result = chatcli.score(model, "The capital of France is Paris.")
    pieces = chatcli.tokenize(model, "Hello 123 🙂")
    lens = chatcli.lens(model, "The capital of France is", raw=True)   # the next token, layer by layer
    print([(layer.layer, layer.top[0].token) for layer in lens.layers])
    att = chatcli.attention(model, "The capital of France is", raw=True)  # what the last token looked at
    print([(att.tokens[i], f"{w:.0%}") for i, w in att.top(3)])

``prompt`` is a user message (the model's chat template is applied), or a list of
``{"role", "content"}`` messages; ``raw=True`` continues plain text instead.
Sampling keywords are the fields of :class:`~chatcli.engine.params.SamplingParams`
(``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
``max_tokens``, ``seed``, ``stop``, ``top_n``). A keyword left out takes the model's own
value (its ``generation_config.json``, or the catalog's recommendation: temperature 0.2 and
top-p 0.9 for the default model), else chatcli's built-in one; :func:`sampling_for` says which.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from chatcli.engine.events import Done, Event, Notice, Step
from chatcli.engine.loader import LoadedModel, PromptRenderer, load_engine, load_prompt_renderer
from chatcli.engine.params import SamplingParams
from chatcli.engine.protocol import model_sampling
from chatcli.chat.step_context import require_local
from chatcli.engine.probes.attention import AttentionResult, attention_weights
from chatcli.engine.probes.lens import LensResult, logit_lens
from chatcli.engine.scoring import ScoreResult, score_ids
from chatcli.tokenizer.pieces import TokenPiece, tokenize_pieces
from chatcli.errors import GenerationError
from chatcli.settings.param_sources import FIELDS, Resolved, resolve_sampling

DEFAULT_MODEL = "smollm2-135m-instruct"

__all__ = [
    "load_model", "stream", "generate", "score", "tokenize", "lens", "attention", "sampling_for",
    "LoadedModel", "SamplingParams", "Step", "Done", "Notice", "ScoreResult", "TokenPiece",
    "LensResult", "AttentionResult",
]


def load_model(
    name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "auto",
    chat_template: str | None = None, quantize: str = "none", compile: bool | str = False,
) -> LoadedModel:
    """Load a model by name (pulled on first use), local directory, ``.gguf`` file or ``hf:ORG/NAME``.

    ``quantize="int8"``: weight-only int8 projections and LM head; ``"int4"``: group-wise 4-bit
    projections (a Q4_0/Q4_1 GGUF's own blocks where the model came from one) and an int8 head
    (see :mod:`chatcli.model.quantize`). ``compile=True``: decode through a step compiled ahead of time
    (CPU; built on the first answer when missing, kept on disk; :mod:`chatcli.model.compiled.step`);
    ``compile="auto"``: as the commands do when nothing sets it (float32 CPU models, unquantised, int8 or
    int4; built in the background; the same numbers as the eager step).
    """
    return load_engine(name, dtype=dtype, device=device, chat_template=chat_template, quantize=quantize,
                       compile=compile)


def _messages(prompt: str | Sequence[dict], system: str | None) -> list[dict]:
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs = [dict(m) for m in prompt]
    if system is not None:
        msgs = [m for m in msgs if m.get("role") != "system"]
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def sampling_for(model: LoadedModel, **params) -> Resolved:
    """The sampling values an answer with these keywords uses, and where each came from
    (``.sources``: ``"flag"`` for a keyword given here, ``"model"``, ``"built-in"``)."""
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:  # as SamplingParams(**params) would say, so a misspelt keyword is never ignored
        raise TypeError(f"unknown sampling keyword(s) {', '.join(unknown)}: use {', '.join(FIELDS)}")
    return resolve_sampling({"flag": params, "model": model_sampling(model)})


def events(
    model: LoadedModel, prompt: str | Sequence[dict], *, system: str | None = None, raw: bool = False,
    cancel: threading.Event | None = None, **params,
) -> Iterator[Event]:
    """Every event of one answer: Steps, Notices, and the final Done."""
    sp = sampling_for(model, **params).params
    if raw:
        if not isinstance(prompt, str):
            raise TypeError("raw=True continues a string; pass text, not messages")
        yield from model.complete(prompt, sp, cancel=cancel)
    else:
        yield from model.chat(_messages(prompt, system), sp, cancel=cancel)


def stream(
    model: LoadedModel, prompt: str | Sequence[dict], *, system: str | None = None, raw: bool = False,
    cancel: threading.Event | None = None, **params,
) -> Iterator[Step]:
    """Yield one :class:`Step` per generated token; a failed generation raises GenerationError."""
    for event in events(model, prompt, system=system, raw=raw, cancel=cancel, **params):
        if isinstance(event, Step):
            yield event
        elif isinstance(event, Done) and event.finish_reason == "error":
            raise GenerationError(event.error or "generation failed")


def generate(
    model: LoadedModel, prompt: str | Sequence[dict], *, system: str | None = None, raw: bool = False, **params,
) -> str:
    """The whole answer as a string."""
    return "".join(step.text for step in stream(model, prompt, system=system, raw=raw, **params))


def score(
    model: LoadedModel, text: str, *, prompt: str | Sequence[dict] | None = None, system: str | None = None,
    top_n: int = 5,
) -> ScoreResult:
    """Per-token probability, surprisal and rank of ``text`` under the model, and its perplexity.

    Without ``prompt`` the text is scored as plain text (its first token has no
    context unless the model's tokenizer adds a BOS). With ``prompt`` it is scored as
    the assistant's answer to that conversation.
    """
    tok = model.tokenizer
    if prompt is None:
        context = [tok.bos_id] if tok.bos_id is not None and getattr(tok, "add_bos_token", False) else []
    else:
        context = tok.encode_chat(_messages(prompt, system))
    ids = context + tok.encode(text)
    return score_ids(model.model, tok, ids, context_tokens=len(context), top_n=top_n)


def tokenize(model: LoadedModel | PromptRenderer | str, text: str) -> list[TokenPiece]:
    """How ``text`` becomes tokens: ids, each token's text and bytes, and character spans.

    ``model`` may be a model name or path: only its tokenizer is loaded.
    """
    renderer = load_prompt_renderer(model) if isinstance(model, str) else model
    return tokenize_pieces(renderer.tokenizer, text)


def probe_ids(model: LoadedModel, text: str | Sequence[dict], *, raw: bool = False, system: str | None = None) -> list[int]:
    """The ids the probes read: ``text`` as a plain continuation (``raw``), or as a user message
    (or messages) under the chat template with the answer about to start, as ``generate`` sends it."""
    if raw:
        if not isinstance(text, str):
            raise TypeError("raw=True reads a string; pass text, not messages")
        return model.completion_ids(text)
    model.require_chat_template()
    return list(model.tokenizer.encode_chat(_messages(text, system)))


def lens(
    model: LoadedModel, text: str | Sequence[dict], *, raw: bool = False, top_n: int = 10, system: str | None = None,
) -> LensResult:
    """The logit lens for the token after ``text``: its top ``top_n`` tokens read out after every layer.

    Layer 0 is the embeddings, the last layer the model's own distribution (with its
    adapters on); see :mod:`chatcli.engine.probes.lens`.
    """
    require_local(model, "the logit lens")
    ids = probe_ids(model, text, raw=raw, system=system)
    return logit_lens(model.model, ids, top_n=top_n, tokenizer=model.tokenizer)


def attention(
    model: LoadedModel, text: str | Sequence[dict], *, raw: bool = False, position: int = -1,
    system: str | None = None,
) -> AttentionResult:
    """What the token at ``position`` of ``text``'s ids (default: the last) attended to, per layer and head.

    ``result.row(layer, head)`` / ``result.top(k, layer, head)`` average over any axis left
    None; see :mod:`chatcli.engine.probes.attention`.
    """
    require_local(model, "attention weights")
    ids = probe_ids(model, text, raw=raw, system=system)
    return attention_weights(model.model, ids, position=position, tokenizer=model.tokenizer)
