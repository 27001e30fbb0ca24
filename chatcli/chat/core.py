"""The chat state machine every front end shares: conversation + engine + history store.

A front end (the Textual app, the plain REPL) turns a person's action into a
:class:`Job` (:meth:`ChatCore.send`, :meth:`retry`, :meth:`continue_`,
:meth:`branch`) and then consumes :meth:`ChatCore.run`, which drives the engine,
applies every event to the conversation (steps appended to the answer, status,
timings) and saves to the store in batches as it goes. ``run`` is a plain
generator, safe to iterate in a worker thread; the front end only renders.

Nothing here imports UI code or plugins. What happens (a message added, a step
generated, an answer finished, an adapter loaded) is announced to the ``listeners``
the front end passes in: each is called as ``listener(event, **fields)`` with the
plugin hooks' names and fields (:mod:`chatcli.plugins.hookspecs`), so a front end
hands in its plugin manager's ``notify``. Failures of the store never stop a chat:
they are reported once through ``on_notice`` and the chat continues in memory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from chatcli.chat.answer_record import drawn_seed, prompt_messages, record_adapters
from chatcli.chat.params import changed_params, format_param, param_rows, parse_param_value, resolve_param
from chatcli.settings.sampling_state import SamplingState
from chatcli.engine.protocol import ChatEngine, ModelIdentity, capabilities, model_sampling
from chatcli.engine.events import Done, Event, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, GenerationError, UsageError
from chatcli.chat.session import Conversation, Node, export_files, forced_step
from chatcli.chat.store import Store
from chatcli.settings.param_sources import Resolved
from chatcli.settings.thinking_switch import ThinkingSwitch
from chatcli.progress import ProgressFn

EngineFactory = Callable[[ProgressFn], ChatEngine]
NoticeFn = Callable[[str, str], None]  # (message, kind: "info" | "warning" | "error")
# listener(event, **fields): "message_added", "step_generated", "answer_finished", "adapter_loaded",
# with the fields of the plugin hook of that name. It must be quick (step_generated comes per token).
Listener = Callable[..., None]

@dataclass
class Job:
    """One generation: which answer it writes, what the model sees, which tokens are already decided."""

    kind: str  # "send" | "retry" | "continue" | "branch"
    node: Node  # the assistant message being written
    messages: list[dict]
    prefix_ids: list[int]
    params: SamplingParams


class ChatCore:
    save_every_steps = 16  # a kill -9 loses at most this many steps (or the last save_every_s)
    save_every_s = 0.25

    def __init__(
        self,
        engine: ChatEngine | None = None,
        *,
        store: Store | None = None,
        params: SamplingParams | None = None,
        layers: Mapping[str, Mapping[str, object]] | None = None,
        thinking: bool | None = None,
        system: str | None = None,
        on_notice: NoticeFn | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        """``layers``: the session's sampling layers (flag, preset, env, config: see
        :mod:`chatcli.settings.sampling_state`); or ``params``, whose non-default values count as flags.
        ``thinking``: ``--think``/``--no-think`` for a Qwen3-style template
        (:mod:`chatcli.settings.thinking_switch`)."""
        self.engine = engine
        self.store = store
        self.sampling = SamplingState(layers, params)
        self.param_sources = self.sampling.base().sources  # field -> the layer its value came from
        self.thinking = ThinkingSwitch(thinking)  # /think changes it
        self.default_system = system
        self.on_notice: NoticeFn = on_notice or (lambda message, kind: None)
        self.listeners: tuple[Listener, ...] = tuple(listeners)
        self.conv = Conversation(system=system, params=self.sampling.base().params)
        self.last_done: Done | None = None
        self._lock = threading.Lock()
        if engine is not None:
            self.attach_engine(engine)

    # --- engine ----------------------------------------------------------------------------

    def attach_engine(self, engine: ChatEngine) -> None:
        self.engine = engine
        defaults = getattr(engine, "generation_defaults", None)
        for warning in defaults.warnings() if defaults is not None else ():
            self.on_notice(warning, "warning")
        self._use(self.sampling.attach_model(model_sampling(engine)))  # the model's layer, under /set
        self.thinking.attach(engine, self.on_notice)
        if self.conv.is_empty() or self.conv.model is None:
            self.conv.model = engine.identity.name
        elif self.conv.model != engine.identity.name:
            self.on_notice(
                f"this conversation was made with {self.conv.model}; answers now come from {engine.identity.name}",
                "info",
            )

    def announce(self, event: str, **fields) -> None:
        """Tell every listener what happened (commands that change the chat outside :meth:`run` call it too)."""
        for listener in self.listeners:
            listener(event, **fields)

    @property
    def identity(self) -> ModelIdentity | None:
        return self.engine.identity if self.engine is not None else None

    def _engine(self) -> ChatEngine:
        if self.engine is None:
            raise ChatcliError("the model is still loading; try again in a moment")
        return self.engine

    # --- jobs ------------------------------------------------------------------------------

    def send(self, text: str) -> Job:
        """Add a user message (after the current leaf) and an empty answer to it."""
        if not text.strip():
            raise UsageError("empty message; type something first")
        self._engine()
        leaf = self.conv.leaf
        user = self.conv.add("user", text, parent=leaf.id if leaf else None)
        answer = self.conv.add("assistant", "", parent=user.id, status="streaming")
        self._persist(lambda s: (s.save_conversation(self.conv), s.save_node(self.conv, user), s.save_node(self.conv, answer)))
        self.announce("message_added", message=user, conversation=self.conv)
        return self._job("send", answer, [])

    def retry(self) -> Job:
        """A new answer to the last user message; the old one stays as a sibling."""
        self._engine()
        leaf = self.conv.leaf
        if leaf is None:
            raise UsageError("nothing to retry yet; send a message first")
        parent = leaf.parent if leaf.role == "assistant" else leaf.id
        answer = self.conv.add("assistant", "", parent=parent, status="streaming")
        answer.meta["retry_of"] = leaf.id if leaf.role == "assistant" else None
        self._persist(lambda s: s.save_node(self.conv, answer))
        return self._job("retry", answer, [])

    def continue_(self) -> Job:
        """Continue a stopped or cut answer after its tokens (or answer a user message left without one)."""
        self._engine()
        leaf = self.conv.leaf
        if leaf is None:
            raise UsageError("nothing to continue yet; send a message first")
        if leaf.role == "user":
            answer = self.conv.add("assistant", "", parent=leaf.id, status="streaming")
            self._persist(lambda s: s.save_node(self.conv, answer))
            return self._job("send", answer, [])
        if leaf.status == "stop" and leaf.steps:
            raise UsageError("the last answer ended normally; /retry asks for a new one")
        self._need_prefix_continuation("/continue")
        leaf.content = leaf.step_text  # the engine re-derives any flushed tail from the ids
        leaf.status = "streaming"
        return self._job("continue", leaf, leaf.ids)

    def branch(self, node_id: int, step_index: int, token_id: int) -> Job:
        """A sibling answer: the same tokens up to ``step_index``, ``token_id`` forced there, then generated."""
        self._engine()
        original = self.conv.nodes.get(node_id)
        if original is None or original.role != "assistant":
            raise UsageError(f"message {node_id} is not an answer; select a token of an answer first")
        if not 0 <= step_index < len(original.steps):
            raise UsageError(f"step {step_index} is outside the answer (0..{len(original.steps) - 1})")
        self._need_prefix_continuation("branching at a token")
        forced = forced_step(original.steps[step_index], token_id)
        answer = self.conv.add("assistant", "", parent=original.parent, status="streaming")
        answer.steps = [*original.steps[:step_index], forced]
        answer.content = answer.step_text
        answer.meta.update(forced_at=step_index, branched_from=original.id)
        self._persist(lambda s: s.save_node(self.conv, answer, with_steps=True))
        return self._job("branch", answer, answer.ids)

    def _need_prefix_continuation(self, what: str) -> None:
        """A backend that cannot continue after given tokens (a remote server) refuses, changing nothing."""
        caps = capabilities(self._engine())
        if not caps.prefix_continuation:
            raise UsageError(f"{caps.unsupported(what)} (the server cannot continue after given tokens); "
                             "/retry asks for a new answer")

    def _job(self, kind: str, node: Node, prefix_ids: list[int]) -> Job:
        # What produced the answer (chatcli.chat.answer_record); the adapters are read in run().
        params = self.conv.params
        node.meta["params"] = params.to_json()
        node.meta["system"] = self.conv.system
        if self.engine is not None:
            node.meta["model"] = self.engine.identity.name
        return Job(kind, node, self.conv.messages(before=node), list(prefix_ids), params)

    # --- running ---------------------------------------------------------------------------

    def run(self, job: Job, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Stream the job's answer: apply each event to the conversation, save in batches, yield it.

        Always ends with one :class:`Done` (also when the engine raises); closing the
        generator early marks the answer as stopped and saves what arrived.
        """
        engine = self._engine()
        node = job.node
        node.status = "streaming"
        start_steps = len(node.steps)
        saved = start_steps
        last_save = time.monotonic()
        done: Done | None = None
        record_adapters(node.meta, engine)  # here, in the worker: a server's adapter control may ask the server
        try:
            stream = engine.chat(job.messages, job.params, cancel=cancel, answer_prefix_ids=job.prefix_ids)
            for event in stream:
                if isinstance(event, Step):
                    if event.seq != 0:
                        continue
                    step = event if event.index == len(node.steps) else replace(event, index=len(node.steps))
                    node.steps.append(step)
                    node.content += step.text
                    now = time.monotonic()
                    if len(node.steps) - saved >= self.save_every_steps or now - last_save >= self.save_every_s:
                        self._persist(lambda s, a=saved, b=len(node.steps): s.append_steps(self.conv, node, a, node.steps[a:b]))
                        saved, last_save = len(node.steps), now
                    self.announce("step_generated", step=step, message=node, conversation=self.conv)
                    yield step
                elif isinstance(event, Done):
                    done = event
                    if job.params.seed is None and drawn_seed(engine) is not None:
                        node.meta["seed_used"] = drawn_seed(engine)
                    self._finish(node, event, start_steps)
                    self.announce("answer_finished", message=node, done=event, conversation=self.conv)
                    yield event
                elif isinstance(event, Notice):
                    if isinstance(event.data.get("dropped_messages"), int):  # /raw shows the prompt without them
                        node.meta["dropped_messages"] = event.data["dropped_messages"]
                    yield event
        except ChatcliError as e:
            done = Done("error", 0, len(node.steps) - start_steps, None, None, text="", error=e.message)
            self._finish(node, done, start_steps)
            yield done
        finally:
            if node.status == "streaming":  # closed early, or the engine ended without Done
                node.status = "cancelled"
            if done is None:
                done = Done("cancelled", 0, len(node.steps) - start_steps, None, None)
            self.last_done = done
            self._persist(lambda s: (s.append_steps(self.conv, node, saved, node.steps[saved:]), s.save_conversation(self.conv)))

    def _finish(self, node: Node, done: Done, start_steps: int) -> None:
        # Done.text is the engine's whole answer text; keep it when it extends what the
        # steps showed (a flushed tail), otherwise trust the steps.
        steps_text = node.step_text
        prefix_text = "".join(s.text for s in node.steps[:start_steps])
        if done.text and done.text.startswith(steps_text):
            node.content = done.text  # the whole answer, with a tail no step carried
        elif done.text and start_steps and (prefix_text + done.text).startswith(steps_text):
            node.content = prefix_text + done.text  # only the new part
        else:
            node.content = steps_text
        node.status = done.finish_reason
        node.meta.update(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=len(node.steps),
            ttft_s=done.ttft_s,
            tokens_per_s=done.tokens_per_s,
        )
        if done.error:
            node.meta["error"] = done.error

    # --- settings --------------------------------------------------------------------------

    def set_param(self, name: str, value: str) -> str:
        """Validate and apply one sampling parameter; returns 'name = value'. Nothing changes on error."""
        key = resolve_param(name)
        field = "top_n" if key == "top_shown" else key
        parsed = parse_param_value(key, value)
        self._use(self.sampling.set(field, parsed))  # SamplingParams validates
        self._persist(lambda s: s.save_conversation(self.conv) if self.conv.id is not None else None)
        return f"{key} = {format_param(key, parsed)}"

    def param_rows(self) -> list[tuple[str, str, str]]:
        return param_rows(self.conv.params)

    def param_source(self, key: str) -> str:
        """Where the value of ``/set``'s parameter ``key`` came from ("/set", "model", "built-in", ...)."""
        return self.param_sources.get("top_n" if key == "top_shown" else key, "built-in")

    def _use(self, resolved: Resolved) -> None:
        self.conv.params, self.param_sources = resolved.params, resolved.sources

    def set_system(self, text: str | None) -> None:
        self.conv.system = text or None
        self._persist(lambda s: s.save_conversation(self.conv) if self.conv.id is not None else None)

    def new_conversation(self, *, keep_system: bool) -> None:
        """Start over with the same sampling parameters (``/set`` values carry over), the system
        prompt kept or back to the session's default; the previous conversation stays in the history."""
        system = self.conv.system if keep_system else self.default_system
        self.sampling.start_new()
        self.conv = Conversation(system=system, params=self.conv.params)
        if self.engine is not None:
            self.conv.model = self.engine.identity.name

    @property
    def default_params(self) -> SamplingParams:
        """What the session starts from: every layer but ``/set``."""
        return self.sampling.base().params

    def changed_params(self) -> list[str]:
        """``name=value`` of each sampling parameter that differs from the session's start."""
        return changed_params(self.conv.params, self.default_params)

    def resume(self, conv_id: int | str | None = None) -> Conversation:
        """Load a saved conversation and make it current.

        ``conv_id``: an id (int or digits, as ``--resume`` gives it), or None / "latest" /
        "last" / "" for the latest; anything else is a :class:`UsageError`.
        """
        if self.store is None:
            raise UsageError("history is not available in this session (--no-save or no data dir)")
        if isinstance(conv_id, str):
            spec = conv_id.strip()
            if spec in ("latest", "last", ""):
                conv_id = None
            elif spec.isdigit():
                conv_id = int(spec)
            else:
                raise UsageError(f"bad conversation id {conv_id!r}; give a number or 'latest'")
        if conv_id is None:
            conv_id = self.store.latest_id()
            if conv_id is None:
                raise UsageError("the history is empty; nothing to resume")
        conv = self.store.load(conv_id)
        self.conv = conv
        self._use(self.sampling.resume(conv.params))  # its own values, under this session's flags
        if self.engine is not None and conv.model and conv.model != self.engine.identity.name:
            self.on_notice(f"conversation {conv_id} was made with {conv.model}; answers now come from {self.engine.identity.name}", "info")
        return conv

    def switch_sibling(self, node_id: int, delta: int) -> Node:
        node = self.conv.switch_sibling(node_id, delta)
        self._persist(lambda s: s.save_conversation(self.conv) if self.conv.id is not None else None)
        return node

    def save_added(self, node: Node) -> None:
        """Save a message a command added itself (``/rank``'s chosen answer), its steps included."""
        self._persist(lambda s: (s.save_node(self.conv, node, with_steps=True), s.save_conversation(self.conv)))

    # --- views -----------------------------------------------------------------------------

    def raw_prompt(self) -> str:
        """The exact string the model sees for the next answer (special tokens included)."""
        return self._engine().render_prompt(self.conv.messages(), add_generation_prompt=True)

    def answer_prompt(self, node: Node) -> str:
        """The prompt that produced answer ``node``, as it was rendered then (see
        :func:`chatcli.chat.answer_record.prompt_messages`)."""
        messages = prompt_messages(self.conv.messages(before=node), node.meta)
        return self._engine().render_prompt(messages, add_generation_prompt=True)

    def next_prompt_start(self) -> str:
        """What the next answer's prompt starts with: the conversation so far, its last turn
        closed (the next message and a new assistant header follow it)."""
        return self._engine().render_prompt(self.conv.messages(), add_generation_prompt=False)

    def context_usage(self) -> tuple[int, int] | None:
        """(tokens the conversation fills, context length), or None before the model loads.

        Counted from the rendered prompt (the template's special tokens included) plus
        the last answer's tokens; called at the start and end of answers, not per token.
        """
        if self.engine is None:
            return None
        engine = self.engine
        leaf = self.conv.leaf
        if not capabilities(engine).exact_prompt:
            return self._reported_usage()
        if leaf is None:
            used = 0
        elif leaf.role == "assistant":
            used = engine.count_tokens(engine.render_prompt(self.conv.messages(before=leaf))) + len(leaf.steps)
        else:
            used = engine.count_tokens(engine.render_prompt(self.conv.messages()))
        return used, engine.identity.context_length

    def _reported_usage(self) -> tuple[int, int] | None:
        """Without the exact prompt (a remote server): the server's own count for the last answer."""
        length = self.engine.identity.context_length if self.engine is not None else 0
        leaf = self.conv.leaf
        if not length or leaf is None or leaf.role != "assistant" or not leaf.meta.get("prompt_tokens"):
            return None
        return int(leaf.meta["prompt_tokens"]) + len(leaf.steps), length

    def export(self, path: str | None = None) -> tuple[Path, Path]:
        """Write the conversation as Markdown and JSON; returns both paths."""
        return export_files(self.conv, path)

    # --- persistence -----------------------------------------------------------------------

    def _persist(self, action: Callable[[Store], object]) -> None:
        if self.store is None:
            return
        try:
            with self._lock:
                action(self.store)
        except (sqlite3.Error, OSError) as e:
            path = self.store.path
            self.store = None
            self.on_notice(f"saving to {path} failed ({e}); this chat continues without saving", "warning")


def ensure_generation_ok(done: Done) -> None:
    """Raise the engine's error of a failed answer (for scripted front ends)."""
    if done.finish_reason == "error":
        raise GenerationError(done.error or "generation failed")
