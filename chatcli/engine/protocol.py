"""The engine as front ends see it: one loaded model that answers conversations.

:class:`ChatEngine` is the protocol the TUI, the plain REPL, the CLI and plugins
program against; :class:`chatcli.engine.loader.LoadedModel` implements it on the
native PyTorch model, and tests use fakes with the same surface.

Messages are plain dicts ``{"role": "system"|"user"|"assistant", "content": str}``.
Every stream yields :class:`~chatcli.engine.events.Step` events, possibly
:class:`~chatcli.engine.events.Notice` events (e.g. older turns dropped to fit
the context), and ends with exactly one :class:`~chatcli.engine.events.Done`.
Calls are not re-entrant: one stream at a time per engine (front ends run it in a
worker thread and stop it with ``cancel``).

Not every backend can do everything the local engine does. :class:`Capabilities`
says what one offers (:func:`capabilities` gives the local engine's full set to an
engine that declares none), and ``adapters`` is the backend's adapter control or
None. A front end asks before it offers a feature, and a backend that lacks one
raises a :class:`~chatcli.errors.ChatcliError` saying so (``render_prompt`` on a
server that applies its own template), so missing features are reported, never faked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from chatcli.engine.events import Event
from chatcli.engine.params import SamplingParams

Message = dict  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # what the person asked for ("smollm2-135m-instruct", a path, "hf:org/name")
    path: str  # the local checkpoint directory
    model_type: str
    sha256: str | None  # of the weights, from the cache manifest when known
    dtype: str
    device: str
    context_length: int
    parameters: int
    quantize: str = "none"  # "int8", "int4": weight-only quantised projections (and LM head) (--quantize)

    @property
    def precision(self) -> str:
        """How the weights are held, for status lines: ``float32``, or ``int8+float32`` when quantised."""
        return self.dtype if self.quantize in ("none", "", None) else f"{self.quantize}+{self.dtype}"


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers beyond streaming answers; the defaults are the local engine's."""

    backend: str = "local"  # "local", or "remote" for an OpenAI-compatible server
    exact_prompt: bool = True  # render_prompt/count_tokens give the exact prompt and its token count
    token_ids: bool = True  # steps carry the model's own token ids
    prefix_continuation: bool = True  # chat(answer_prefix_ids=...) works: /continue, branching at a token
    probabilities: bool = True  # steps carry model_prob, entropy and alternatives
    weights_in_process: bool = True  # the weights are here: teacher-forced scoring, fine-tuning, /compare by re-scoring

    def unsupported(self, what: str) -> str:
        """The one-line message for a feature this backend lacks."""
        return f"{what} is not available on a {self.backend} backend"


LOCAL = Capabilities()


def capabilities(engine: object) -> Capabilities:
    """The engine's declared capabilities (the local engine's for one that declares none)."""
    caps = getattr(engine, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else LOCAL


def model_sampling(engine: object) -> dict:
    """The sampling values the engine's model recommends (SamplingParams field names; {} if none).

    The local engine reads them from the checkpoint (``LoadedModel.generation_defaults``);
    a remote server applies its own, so a remote engine declares none.
    """
    defaults = getattr(engine, "generation_defaults", None)
    sampling = getattr(defaults, "sampling", None)
    return dict(sampling) if isinstance(sampling, dict) else {}


class ChatEngine(Protocol):
    identity: ModelIdentity
    # Optional members (read with getattr): ``generation_defaults`` (the model's sampling
    # values, chatcli.hub.generation_config.GenerationDefaults; read with model_sampling),
    # ``capabilities`` (a Capabilities; default LOCAL)
    # and ``adapters`` (the adapter control: chatcli.lora.manager.AdapterManager locally,
    # chatcli.remote.adapters on a server; None or absent when the backend has none).

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The exact string the model sees for ``messages`` (special tokens included)."""

    def count_tokens(self, text: str) -> int: ...

    def chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        answer_prefix_ids: Sequence[int] = (),
    ) -> Iterator[Event]:
        """Answer the conversation. ``answer_prefix_ids`` are assistant tokens already
        decided (``/continue`` of a stopped answer, or a branch with a forced token):
        the answer continues after them and only new tokens become steps."""

    def complete(
        self, text: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        """Plain-text continuation of ``text`` (no chat template)."""

    def chat_batch(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """N answers to one conversation in one batch; events carry ``seq``."""
