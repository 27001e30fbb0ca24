"""The exact token ids an answer's step was predicted from: what every probe re-reads.

A step of a finished answer is re-examined (``/compare``, the logit lens, attention,
what-if) by running the model again over the same tokens: the prompt the answer had
(its recorded system prompt, without the turns the engine dropped to fit the
context) followed by the answer's tokens before that step. Recomputing from the
conversation keeps one source of truth: nothing extra is stored per step.

Only an engine whose weights run in this process can re-read a step; a server is
refused with one line by :func:`require_local`.
"""

from __future__ import annotations

from typing import Any

from chatcli.chat.answer_record import prompt_messages
from chatcli.engine.fit import fit_messages
from chatcli.engine.protocol import capabilities
from chatcli.errors import UsageError


def require_local(engine: Any, what: str) -> None:
    """Refuse ``what`` (e.g. "the logit lens") on a backend whose weights are not in this process."""
    if not capabilities(engine).weights_in_process:
        raise UsageError(f"{what} needs the model's weights in this process: a server returns no hidden states "
                         "(run chatcli with a local model)")


def answer_prompt_ids(core: Any, node: Any) -> list[int]:
    """The prompt ids ``node`` (an assistant answer) was generated from."""
    engine = core.engine
    messages = prompt_messages(core.conv.messages(before=node), node.meta)
    kept, _ = fit_messages(messages, engine.tokenizer, engine.context_length, len(node.ids))
    return list(engine.tokenizer.encode_chat(kept))


def step_prefix(core: Any, node: Any, index: int) -> list[int]:
    """The ids step ``index`` of ``node`` was predicted from: the prompt, then the answer before it."""
    ids = node.ids
    if not 0 <= index <= len(ids):
        raise UsageError(f"no step {index} in this answer (it has {len(ids)})")
    return answer_prompt_ids(core, node) + list(ids[:index])
