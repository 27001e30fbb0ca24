"""Load a model by name or path into a :class:`LoadedModel`, the engine the front ends use.

:func:`load_engine` resolves the spec (a known name pulled on first use, a local
directory, a ``.gguf`` file, ``hf:ORG/NAME``), loads weights and tokenizer, and
wraps them with a :class:`~chatcli.engine.generate.Generator` that keeps the KV
cache of the conversation between turns. :func:`load_prompt_renderer` loads only
the tokenizer and template (``--print-prompt`` needs no weights).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from chatcli.engine.protocol import Message, ModelIdentity
from chatcli.engine.events import Event, Notice
from chatcli.hub.generation_config import GenerationDefaults, read_generation_defaults
from chatcli.hub.manifest import read_manifest
from chatcli.engine.params import SamplingParams
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import UsageError
from chatcli.progress import ProgressFn


class PromptRenderer:
    """Tokenizer + chat template of a model, without its weights."""

    def __init__(self, tokenizer: ChatTokenizer):
        self.tokenizer = tokenizer

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.render_chat(list(messages), add_generation_prompt=add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def require_chat_template(self) -> None:
        """Fail early, before any generation, when chat mode is impossible."""
        if not self.tokenizer.has_chat_template:
            self.render_prompt([])  # raises the tokenizer's one-line ModelError

    def set_thinking(self, enabled: bool | None) -> bool:
        """Pass ``enable_thinking=enabled`` to the chat template in every render from now on
        (None: leave it undefined, the template's default). False, changing nothing, when the
        template has no such switch (:func:`chatcli.tokenizer.thinking.has_thinking_switch`)."""
        from chatcli.tokenizer.thinking import THINKING_VARIABLE, has_thinking_switch

        if not has_thinking_switch(self.tokenizer.chat_template):
            return False
        if enabled is None:
            self.tokenizer.template_variables.pop(THINKING_VARIABLE, None)
        else:
            self.tokenizer.template_variables[THINKING_VARIABLE] = enabled
        return True


class LoadedModel(PromptRenderer):
    """A model ready to answer: implements :class:`chatcli.engine.protocol.ChatEngine`."""

    def __init__(
        self, model, tokenizer: ChatTokenizer, identity: ModelIdentity,
        generation_defaults: GenerationDefaults | None = None,
    ):
        from chatcli.engine.generate import Generator
        from chatcli.hub.base_ref import base_reference
        from chatcli.lora.manager import AdapterManager

        super().__init__(tokenizer)
        self.model = model
        self.identity = identity
        # The model's sampling values (generation_config.json over the catalog's recommendation):
        # the "model" layer under flags, /set, presets, env and config (chatcli.settings.param_sources).
        self.generation_defaults = generation_defaults or GenerationDefaults()
        # The model's one adapter manager (every adapter change goes through it). The
        # generator asks it for the weights version, so a change drops the cached prefix,
        # and its changes wait for no answer to be running (Generator.idle).
        # It knows the base as other tools name it, for the adapters it saves (PEFT's base id).
        self.adapters = AdapterManager(model, base=base_reference(identity.name, identity.path, identity.sha256))
        self.generator = Generator(model, tokenizer, weights_version=self.adapters.weights_version)
        self.adapters.guard = self.generator.idle
        # The calibration the model's kernel choices came from (chatcli.engine.calibration), if any.
        self.calibration = None

    @property
    def context_length(self) -> int:
        return self.identity.context_length

    def chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        answer_prefix_ids: Sequence[int] = (),
    ) -> Iterator[Event]:
        from chatcli.engine.fit import fit_messages

        self.require_chat_template()
        current = params() if callable(params) else params  # the TUI passes a live getter
        reserve = min(current.max_tokens, self.context_length // 2) + len(answer_prefix_ids)
        kept, dropped = fit_messages(list(messages), self.tokenizer, self.context_length, reserve)
        if dropped:
            yield Notice(
                f"dropped the {dropped} oldest message(s) to fit the context of {self.context_length} tokens",
                kind="context",
                data={"dropped_messages": dropped},
            )
        yield from self.generator.stream(
            self.tokenizer.encode_chat(kept), params, cancel=cancel,
            context_length=self.context_length, answer_prefix=answer_prefix_ids,
        )

    def complete(
        self, text: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        ids = self.completion_ids(text)
        yield from self.generator.stream(ids, params, cancel=cancel, context_length=self.context_length)

    def complete_batch(
        self,
        text: str,
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """N continuations of ``text`` in one batch; events carry ``seq`` (as :meth:`chat_batch`)."""
        yield from self.generator.stream_batch(
            self.completion_ids(text), params, n, seeds=seeds, cancel=cancel, context_length=self.context_length
        )

    def completion_ids(self, text: str) -> list[int]:
        """The prompt ids of a plain continuation: BOS first when the tokenizer config asks for it."""
        ids = self.tokenizer.encode(text)
        if self.tokenizer.bos_id is not None and self._adds_bos():
            ids = [self.tokenizer.bos_id] + ids
        return ids

    def chat_batch(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        self.require_chat_template()
        prompt_ids = self.tokenizer.encode_chat(list(messages))
        yield from self.generator.stream_batch(
            prompt_ids, params, n, seeds=seeds, cancel=cancel, context_length=self.context_length
        )

    def _adds_bos(self) -> bool:
        """Raw continuation starts with BOS when the model's tokenizer config asks for it."""
        return self.tokenizer.add_bos_token


def load_prompt_renderer(
    spec: str, chat_template: str | None = None, progress: ProgressFn | None = None
) -> PromptRenderer:
    from chatcli.hub.catalog import resolve_model

    path = resolve_model(spec, progress=progress)
    return PromptRenderer(_tokenizer(path, chat_template))


def load_engine(
    spec: str,
    dtype: str = "float32",
    device: str = "auto",
    chat_template: str | None = None,
    progress: ProgressFn | None = None,
    lora: Sequence[str] = (),
    warm_up: bool = True,
    quantize: str = "none",
    group_size: int | None = None,
    calibrate: bool | None = None,
    compile: bool | str = False,
) -> LoadedModel:
    """Load a model, and the ``--lora PATH[:SCALE]`` adapters given (all or nothing).

    Adapter files are checked before the weights are read, so a typo costs no model load.
    ``warm_up=False`` skips the one-token forward that keeps page-in out of the first
    answer's time to first token: a one-shot command (``chatcli generate``) pays that cost
    in its only answer anyway, so the extra forward only makes it slower.
    ``quantize="int8"`` stores the projections and the LM head as int8, ``"int4"`` the
    projections as group-wise int4 (``group_size`` 32, 64 or 128; default 32) and the head as
    int8 (see :mod:`chatcli.model.quantize`); adapters then wrap the quantised layers. The
    weights are quantised one by one as they are read, before packing, so the float model is
    never whole in memory; a model converted from a Q4_0/Q4_1 GGUF that kept the file loads
    its 4-bit blocks as they are (:mod:`chatcli.hub.gguf.q4_blocks`).
    ``calibrate`` (None: the ``CHATCLI_CALIBRATE`` switch, on by default) gives a CPU model the compute
    paths measured fastest on this CPU, measuring them on the first load of their key (one line on
    stderr; :mod:`chatcli.engine.calibration`), after everything else loaded and was checked.
    ``compile=True`` (``--compile``, CPU only) decodes through a step compiled ahead of time
    (:mod:`chatcli.model.compiled.step`), built on the first answer when its package is missing (kept
    on disk after); what it does not cover decodes eagerly, with one line. ``compile="auto"`` (the
    commands' default when nothing sets it) does that for a float32 CPU model (unquantised, int8 or
    int4), whose compiled answers are the eager ones bit for bit, and builds a missing package in the background
    (:mod:`chatcli.engine.compile_build`) instead of making the person wait.
    """
    from chatcli.hub.checkpoint import load_checkpoint, resolve_device, resolve_dtype
    from chatcli.hub.catalog import recommended_sampling, resolve_model
    from chatcli.hub.resources import check_load_fits

    from chatcli.model.quant_choice import check_quantize
    from chatcli.model.quantize import quantize_model

    quantize = check_quantize(quantize)
    from chatcli.engine.calibration.auto import auto_enabled, calibrate_on_load

    calibrate = auto_enabled() if calibrate is None else calibrate  # a bad CHATCLI_CALIBRATE: one line, nothing loaded
    adapter_specs = []
    if lora:
        from chatcli.lora.spec import preflight

        adapter_specs = preflight(list(lora))
    path = resolve_model(spec, progress=progress)
    tokenizer = _tokenizer(path, chat_template)
    dev = resolve_device(device)
    if compile is True and dev.type != "cpu":
        raise UsageError(f"--compile compiles the CPU decode step, not {dev.type}: drop --compile or use --device cpu")
    dt = resolve_dtype(dtype, dev)
    check_load_fits(path, str(dt).removeprefix("torch."), str(dev))
    counted: list[int] = []

    def quantize_weights(model) -> None:
        counted.append(sum(p.numel() for p in model.parameters()))  # before: quantised weights are buffers
        blocks = None
        if quantize == "int4" and group_size in (None, 32):
            from chatcli.hub.gguf.q4_blocks import q4_blocks

            blocks = q4_blocks(path)
        quantize_model(model, quantize, group_size=group_size, blocks=blocks)

    transform = quantize_weights if quantize != "none" else None
    built = _built_name(path, quantize, group_size) if transform is not None else None
    model = load_checkpoint(path, dtype=dt, device=dev, progress=progress, transform=transform, built=built)
    if not counted and transform is not None:  # mapped from the cache: count the float model's parameters
        counted.append(_float_parameters(model))
    identity = ModelIdentity(
        name=spec,
        path=str(path),
        model_type=model.config.model_type,
        sha256=weights_sha256(path),
        dtype=str(dt).removeprefix("torch."),
        device=str(dev),
        context_length=model.config.max_position_embeddings,
        parameters=counted[0] if counted else sum(p.numel() for p in model.parameters()),
        quantize=quantize,
    )
    if warm_up:
        _warm_up(model, progress)
    engine = LoadedModel(model, tokenizer, identity, read_generation_defaults(path, recommended_sampling(spec, path)))
    if adapter_specs:
        from chatcli.lora.spec import load_adapter_specs

        load_adapter_specs(engine.adapters, adapter_specs)
    if calibrate:
        engine.calibration = calibrate_on_load(engine, say=_stderr_line)
    if compile is True:
        from chatcli.model.compiled.step import CompiledDecoder

        engine.generator.compiled = CompiledDecoder()  # its lines reach the person as the answer's Notices
    elif compile == "auto" and dev.type == "cpu" and identity.dtype in ("float32", "bfloat16"):  # identical answers
        from chatcli.engine import compile_build
        from chatcli.model.compiled.step import CompiledDecoder

        engine.generator.compiled = CompiledDecoder(mode="auto", background=lambda package: compile_build.start(
            package, str(path), identity.dtype, quantize, group_size,  # float32 also for int8 and int4
            model.kernel_choices.bf16_small_rows if identity.dtype == "bfloat16" else ""))  # fmt: skip
    return engine


def _built_name(path: Path, quantize: str, group_size: int | None) -> str | None:
    """What ``quantize_weights`` builds from the model at ``path``, for the cache of built models
    (chatcli.hub.packed_cache): the method, the group size and the files beside the weights it may read
    (the manifest naming a kept GGUF, and that GGUF); None when they cannot be stat'ed (no caching)."""
    try:
        files = sorted(Path(path).glob("*.gguf")) + [Path(path) / "chatcli.json"]
        ids = [[f.name, st.st_size, st.st_mtime_ns, st.st_ino] for f in files if (st := _stat(f)) is not None]
    except OSError:
        return None
    return f"{quantize}/g{group_size or 32}/{ids}"


def _float_parameters(model) -> int:
    """The parameters the float model had, counted on the quantised one: its float parameters plus each
    quantised layer's weights (an embedding looked up from the head's rows shares them, as a tied
    embedding shares the head's; cheaper than building the float model on the meta device, ~0.07 s)."""
    from chatcli.model.qlinear import QuantizedLinear

    quantised = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantizedLinear))
    return quantised + sum(p.numel() for p in model.parameters())


def _stat(file: Path):
    import os

    try:
        return os.stat(file)
    except FileNotFoundError:
        return None


def _stderr_line(line: str) -> None:
    import sys

    sys.stderr.write(f"chatcli: {line}\n")
    sys.stderr.flush()


def _warm_up(model, progress: ProgressFn | None) -> None:
    """Run one token through the model while the loading progress is still showing.

    Weights are memory-mapped, so the first forward pages them in from disk and sets up
    the matmul kernels (about 2 s for the default model on a slow disk); doing it here
    keeps that out of the first answer's time to first token.
    """
    import torch

    if progress:
        progress("warming up", 0, 1)
    with torch.inference_mode():
        model(torch.zeros(1, 1, dtype=torch.long, device=model.device))
    if progress:
        progress("warming up", 1, 1)


def _tokenizer(path: Path, chat_template: str | None) -> ChatTokenizer:
    override = None
    if chat_template is not None:
        override = Path(chat_template)
        if not override.is_file():
            raise UsageError(f"chat template file not found: {override}")
    return ChatTokenizer.from_dir(path, chat_template_override=override)


def weights_sha256(path: Path) -> str:
    """The weights' sha256: from the manifest of a converted model, else hashed now.

    A sharded checkpoint hashes its shards in name order into one digest.
    """
    from chatcli.hub.checkpoint import weight_files

    recorded = (read_manifest(path) or {}).get("weights") or {}
    if isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str):
        return recorded["sha256"]
    h = hashlib.sha256()
    for file in sorted(weight_files(path)):
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()
