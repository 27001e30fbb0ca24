"""A ``chatcli generate`` run in the history: one conversation, written once when the answer ends.

Contract:

- :meth:`RunLog.finish` is called once, after the engine's stream has ended (never per
  token: the run's own list of steps is what it saves, so logging costs the answer nothing).
  It writes, in one transaction (:meth:`~chatcli.chat.store.Store.save_turn`), the
  conversation header, the user message and the answer with its steps and the ``meta`` a
  chat's answer carries (:mod:`chatcli.chat.answer_record`: params, model, system,
  adapters, token counts, timings; ``raw`` for a ``--raw`` continuation), and returns the
  conversation's id.
- :func:`worth_saving`: an answer is saved when it ended normally (``stop``/``length``,
  an empty answer too) or was cut (Ctrl+C, an error) after at least one token. A run refused
  before generating (bad input, a model that did not load) never reaches :meth:`finish`;
  one cancelled or failed before its first token saves nothing.
- A new run makes a new conversation (titled by its prompt); a resumed one
  (:func:`open_for_resume`, ``generate --resume ID`` / ``-c``) gets the new turn appended
  under its active path's last message and its header updated (system, params, model). The
  model is the run's, as ``chat --resume`` does (:meth:`RunLog.model_note` says when it is
  not the conversation's): a conversation's model name may be a server's, or need a download.
- The history failing never fails the run: :meth:`RunLog.finish` returns None and says why
  through ``warn`` (one line).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from chatcli.chat.answer_record import record_adapters
from chatcli.chat.session import Conversation
from chatcli.chat.store import Store, StoreUnavailable
from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError

LATEST = "latest"


def worth_saving(steps: Sequence[Step], done: Done | None) -> bool:
    """Whether a run's answer goes into the history (see the module's contract)."""
    if done is not None and done.finish_reason in ("stop", "length"):
        return True
    return bool(steps)


def open_for_resume(spec: int | str) -> tuple[Store, Conversation]:
    """The history and the conversation ``spec`` names (an id, or :data:`LATEST`); a missing one,
    an empty history or a history that cannot be opened is one :class:`UsageError` line."""
    try:
        store = Store.open(tail="")
    except StoreUnavailable as e:
        raise UsageError(f"cannot continue a conversation: {e.message}") from None
    if spec == LATEST:
        conv_id = store.latest_id()
        if conv_id is None:
            store.close()
            raise UsageError("the history is empty: there is no conversation to continue yet")
    else:
        conv_id = int(spec)
    try:
        conv = store.load(conv_id)  # no such id: UsageError naming `chatcli history list`
    except (UsageError, StoreUnavailable):
        store.close()
        raise
    if any(n.meta.get("raw") for n in conv.path() if n.role == "assistant"):
        store.close()
        raise UsageError(f"conversation {conv_id} is a --raw continuation, not a chat: start a new one")
    return store, conv


def history_messages(conv: Conversation, system: str | None) -> list[dict]:
    """What the model sees before the new message: ``system`` (None: none; '' an empty one),
    then the active path of ``conv``."""
    head = [] if system is None else [{"role": "system", "content": system}]
    return head + [{"role": n.role, "content": n.content} for n in conv.path()]


@dataclass
class RunLog:
    """Where one run's answer is saved when it ends."""

    user_text: str
    system: str | None
    raw: bool = False
    conversation: Conversation | None = None  # a resumed conversation, else a new one is made
    store: Store | None = None  # the resumed conversation's store, else opened when the run ends
    warn: Callable[[str], None] = field(default=lambda line: None)

    def model_note(self, model: str) -> str | None:
        """One line when a resumed conversation was made with another model than ``model``."""
        conv = self.conversation
        if conv is None or not conv.model or conv.model == model:
            return None
        return f"conversation {conv.id} was made with {conv.model}; this answer comes from {model} (--model to choose)"

    def finish(self, engine, params: SamplingParams, steps: Sequence[Step], done: Done | None) -> int | None:
        """Save the run if it is :func:`worth_saving`; the conversation's id, or None if nothing was saved."""
        if not worth_saving(steps, done):
            return None
        store = self.store
        if store is None:
            try:
                store = Store.open(tail="")
            except StoreUnavailable as e:
                self.warn(f"the answer was not saved to the history: {e.message}")
                return None
        conv = self._conversation(engine, params)
        leaf = conv.leaf
        user = conv.add("user", self.user_text, parent=leaf.id if leaf is not None else None)
        answer = conv.add("assistant", _answer_text(steps, done), parent=user.id,
                          status="cancelled" if done is None else done.finish_reason)  # fmt: skip
        answer.steps = [s if s.index == i else replace(s, index=i) for i, s in enumerate(steps)]
        answer.meta.update(self._meta(engine, params, steps, done))
        try:
            return store.save_turn(conv, [user, answer])
        except (sqlite3.Error, OSError) as e:
            self.warn(f"the answer was not saved to the history ({store.path}: {e})")
            return None
        finally:
            store.close()

    def _conversation(self, engine, params: SamplingParams) -> Conversation:
        conv = self.conversation
        if conv is None:
            return Conversation(system=self.system, params=params, model=engine.identity.name)
        conv.system, conv.params, conv.model = self.system, params, engine.identity.name
        return conv

    def _meta(self, engine, params: SamplingParams, steps: Sequence[Step], done: Done | None) -> dict:
        meta: dict = {"params": params.to_json(), "system": self.system, "model": engine.identity.name}
        record_adapters(meta, engine)
        meta.update(
            prompt_tokens=done.prompt_tokens if done is not None else None,
            completion_tokens=len(steps),
            ttft_s=done.ttft_s if done is not None else None,
            tokens_per_s=done.tokens_per_s if done is not None else None,
        )
        if done is not None and done.error:
            meta["error"] = done.error
        if self.raw:
            meta["raw"] = True  # a plain continuation: --resume refuses it
        return meta


def _answer_text(steps: Sequence[Step], done: Done | None) -> str:
    """The engine's whole text when it extends the steps' (a flushed tail), else the steps' text."""
    text = "".join(s.text for s in steps)
    if done is not None and done.text and done.text.startswith(text):
        return done.text
    return text

