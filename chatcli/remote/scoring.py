"""Teacher-forced scoring of a given answer on a server: vLLM's ``/tokenize`` and ``echo``.

A server that can score a text it did not write lets ``/compare`` compare the answer
on screen instead of two new ones. vLLM (and servers that copy its API) can:

1. ``POST /tokenize {model, messages, add_generation_prompt: false, continue_final_message: true}``
   (at the server root) renders the conversation with the answer as its open last
   assistant message, with the server's own chat template and tokenizer, and gives the
   token ids; the same call without the answer and with ``add_generation_prompt: true``
   gives the prompt, whose length is where the answer starts (it must be a prefix of
   the first, or the answer's tokens cannot be told apart);
2. ``POST /v1/completions {prompt: ids, echo: true, logprobs: k, max_tokens: 1}`` returns,
   for every prompt token, its log-probability and the top ``k`` alternatives given the
   tokens before it (teacher-forced), under the request's model: an adapter's name on
   vLLM selects the adapter. The one generated token is ignored.

:func:`probe` tries both once with a two-token prompt; a server that refuses either
call (an HTTP error other than 429) or answers without prompt log-probabilities has no
scorer (None), and ``/compare`` falls back to two greedy answers. A failure to reach
the server is raised instead, so it is not mistaken for "unsupported". Later replies
that lack what scoring needs raise :class:`Unsupported` (``/compare`` then falls back).

The answer comes back as :class:`~chatcli.engine.events.Step` events, as a streamed
completion would (:class:`~chatcli.remote.steps.StepMapper`): ``top`` holds the
alternatives returned, which on vLLM may include the scored token itself beyond the
``k`` asked for.
"""

from __future__ import annotations

from typing import Any

from chatcli.engine.events import Step
from chatcli.remote.client import Client
from chatcli.remote.errors import RemoteError
from chatcli.remote.steps import LogprobsMode, StepMapper


class Unsupported(RemoteError):
    """The server answered, but not with what teacher-forced scoring needs."""


class EchoScorer:
    """Scores an answer after a conversation on one server (see the module doc)."""

    def __init__(self, client: Client, base_model: str, mode: LogprobsMode = "raw"):
        self.client = client
        self.base_model = base_model
        self.mode = mode

    def answer_ids(self, messages: list[dict], answer: str) -> tuple[list[int], int]:
        """(the ids of the conversation with ``answer`` as its last message, where the answer starts)."""
        full = self._tokenize(messages + [{"role": "assistant", "content": answer}], add_generation_prompt=False,
                              continue_final_message=True)  # fmt: skip
        prompt = self._tokenize(messages, add_generation_prompt=True)
        if len(full) <= len(prompt) or full[: len(prompt)] != prompt:
            raise Unsupported(f"{self.client.url('//tokenize')}: the conversation rendered with the answer does not "
                              "start with the prompt rendered without it, so the answer's tokens cannot be told apart")
        return full, len(prompt)

    def score(self, ids: list[int], start: int, fields: dict, k: int) -> list[Step]:
        """Steps for ``ids[start:]``, each scored given the ids before it; ``fields`` override the
        request's (another model name: an adapter)."""
        body = {"model": self.base_model, "prompt": ids, "max_tokens": 1, "echo": True, "logprobs": k,
                "temperature": 0.0, **fields}  # fmt: skip
        reply = self.client.post_json("/completions", body)
        lp = _logprobs(reply)
        tokens, values, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
        if not all(isinstance(x, list) and len(x) >= len(ids) for x in (tokens, values, tops)):
            raise Unsupported(f"{self.client.url('/completions')} did not return the prompt's log-probabilities "
                              "(echo with logprobs)")
        part = {"tokens": tokens[start: len(ids)], "token_logprobs": values[start: len(ids)],
                "top_logprobs": tops[start: len(ids)]}  # fmt: skip
        mapper = StepMapper(self.mode)
        steps = mapper.completion_chunk({"text": "".join(str(t) for t in part["tokens"]), "logprobs": part})
        if len(steps) != len(ids) - start or not mapper.saw_logprobs:
            raise Unsupported(f"{self.client.url('/completions')} returned {len(steps)} scored tokens for "
                              f"{len(ids) - start}")
        return steps

    def _tokenize(self, messages: list[dict], **options: bool) -> list[int]:
        reply = self.client.post_json("//tokenize", {"model": self.base_model, "messages": messages, **options})
        ids = reply.get("tokens") if isinstance(reply, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise Unsupported(f"{self.client.url('//tokenize')} did not return token ids")
        return ids


def _logprobs(reply: Any) -> dict:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    lp = first.get("logprobs")
    return lp if isinstance(lp, dict) else {}


def probe(client: Client, base_model: str, mode: LogprobsMode = "raw") -> EchoScorer | None:
    """An :class:`EchoScorer` if the server scores a given text, else None (two small requests)."""
    scorer = EchoScorer(client, base_model, mode)
    try:
        ids = scorer._tokenize([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
        if len(ids) < 2:
            return None
        scorer.score(ids[:2], 1, {}, 1)
    except Unsupported:
        return None
    except RemoteError as e:
        if e.status is None or e.status == 429:  # unreachable or busy: no answer about support yet
            raise
        return None  # refused (404: no such endpoint, 400: echo or a field not accepted)
    return scorer
