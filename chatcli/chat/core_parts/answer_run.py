"""A job's answer streamed into the conversation: :meth:`AnswerRun.run`, a mixin of :class:`~chatcli.chat.core.ChatCore`.

``run`` drives the engine and applies every event to the answer being written: each step
is appended (renumbered after the answer's own steps when a continuation or branch started
from some), saved in batches (every ``save_every_steps`` steps or ``save_every_s`` seconds,
so a kill loses at most one batch) and announced (``step_generated``); the end
(``answer_finished``) sets the answer's content, status and timings from the engine's
:class:`Done`. It is a plain generator, safe to iterate in a worker thread, and always
ends with one ``Done``: an engine error becomes ``Done("error")``, and closing the generator
early (a stop) marks the answer cancelled and saves what arrived.

:class:`Job` is what a front end gets from ``ChatCore.send`` (``retry``, ``continue_``,
``branch``) and hands to ``run``; :mod:`chatcli.chat.core` exports it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from chatcli.chat.answer_record import drawn_seed, record_adapters
from chatcli.chat.session import Node
from chatcli.engine.events import Done, Event, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError


@dataclass
class Job:
    """One generation: which answer it writes, what the model sees, which tokens are already decided."""

    kind: str  # "send" | "retry" | "continue" | "branch"
    node: Node  # the assistant message being written
    messages: list[dict]
    prefix_ids: list[int]
    params: SamplingParams


class AnswerRun:
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
