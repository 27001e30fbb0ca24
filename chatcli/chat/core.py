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

This module holds the state, the jobs and the conversation's saving; running an answer,
the settings and the prompt views are mixins in :mod:`chatcli.chat.core_parts`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping

from chatcli.chat.core_parts.answer_run import AnswerRun, Job
from chatcli.chat.core_parts.chat_settings import ChatSettings
from chatcli.chat.core_parts.prompt_views import PromptViews
from chatcli.settings.sampling_state import SamplingState
from chatcli.engine.protocol import ChatEngine, ModelIdentity, capabilities, model_sampling
from chatcli.engine.events import Done
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, GenerationError, UsageError
from chatcli.chat.session import Conversation, Node, forced_step
from chatcli.chat.store import Store
from chatcli.settings.thinking_switch import ThinkingSwitch
from chatcli.progress import ProgressFn

EngineFactory = Callable[[ProgressFn], ChatEngine]
NoticeFn = Callable[[str, str], None]  # (message, kind: "info" | "warning" | "error")
# listener(event, **fields): "message_added", "step_generated", "answer_finished", "adapter_loaded",
# with the fields of the plugin hook of that name. It must be quick (step_generated comes per token).
Listener = Callable[..., None]


class ChatCore(AnswerRun, ChatSettings, PromptViews):
    """The chat's state and what a front end asks of it: jobs (here), :meth:`run`
    (core_parts/answer_run.py), settings (core_parts/chat_settings.py), prompt views
    (core_parts/prompt_views.py)."""

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

    # --- the conversation: resumed, a version switched, a message a command added ------------

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
