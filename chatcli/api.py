"""chatcli's Python API: the same engine and the same ``Step`` objects the CLI prints.

    import chatcli

    model = chatcli.load_model()                      # the default model, float32, auto device
    for step in chatcli.stream(model, "What is the capital of France?", temperature=0):
        print(repr(step.text), f"{step.model_prob:.0%}", [t.token for t in step.top[:3]])
    text = chatcli.generate(model, "Write a haiku about tokens.", seed=1)
    result = chatcli.score(model, "The capital of France is Paris.")
    pieces = chatcli.tokenize(model, "Hello 123 🙂")

``prompt`` is a user message (the model's chat template is applied), or a list of
``{"role", "content"}`` messages; ``raw=True`` continues plain text instead.
Sampling keywords are the fields of :class:`~chatcli.engine.params.SamplingParams`
(``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
``max_tokens``, ``seed``, ``stop``, ``top_n``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from chatcli.engine.events import Done, Event, Notice, Step
from chatcli.engine.loader import LoadedModel, PromptRenderer, load_engine, load_prompt_renderer
from chatcli.engine.params import SamplingParams
from chatcli.engine.scoring import ScoreResult, score_ids
from chatcli.tokenizer.pieces import TokenPiece, tokenize_pieces
from chatcli.errors import GenerationError

DEFAULT_MODEL = "smollm2-135m-instruct"

__all__ = [
    "load_model", "stream", "generate", "score", "tokenize",
    "LoadedModel", "SamplingParams", "Step", "Done", "Notice", "ScoreResult", "TokenPiece",
]


def load_model(
    name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "auto",
    chat_template: str | None = None, quantize: str = "none",
) -> LoadedModel:
    """Load a model by name (pulled on first use), local directory, ``.gguf`` file or ``hf:ORG/NAME``.

    ``quantize="int8"``: weight-only int8 projections and LM head (see :mod:`chatcli.model.quantize`).
    """
    return load_engine(name, dtype=dtype, device=device, chat_template=chat_template, quantize=quantize)


def _messages(prompt: str | Sequence[dict], system: str | None) -> list[dict]:
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs = [dict(m) for m in prompt]
    if system is not None:
        msgs = [m for m in msgs if m.get("role") != "system"]
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def events(
    model: LoadedModel, prompt: str | Sequence[dict], *, system: str | None = None, raw: bool = False,
    cancel: threading.Event | None = None, **params,
) -> Iterator[Event]:
    """Every event of one answer: Steps, Notices, and the final Done."""
    sp = SamplingParams(**params)
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
