"""A completion's prompt echoed before its answer: the text, and each token's log-probability.

``echo: true`` in ``/v1/completions`` (OpenAI's legacy API, vLLM) puts the prompt in front
of the answer; with ``logprobs: k`` every prompt token also gets the log-probability the
model gave it after the tokens before it (teacher-forced, one forward pass over the prompt,
the raw distribution at temperature 1, as the answer's own logprobs) and its ``k`` most
probable alternatives. The first token has nothing before it: its entries are null, as
OpenAI and vLLM return them. That is what lm-evaluation-harness's ``loglikelihood`` reads
(``token_logprobs[ctxlen:-1]``), and what chatcli's own remote ``/compare`` scorer sends.

:func:`echo_prompt` runs on the engine thread, with the request's adapter switched on (the
caller's scope), so the scores are the served model's. The result is a
:class:`~chatcli.serve.openai_format.PromptEcho` (one choice's echo: the app yields one per
choice, before that choice's generated events; the formatter writes it).
"""

from __future__ import annotations

from collections.abc import Sequence

from chatcli.serve.openai_format import LOGPROB_FLOOR, PromptEcho


def echo_prompt(engine, ids: Sequence[int], text: str | None, top_n: int | None) -> PromptEcho:
    """The echo of prompt ``ids`` (``text``: as the client sent it; None: decode the ids);
    ``top_n`` None: no logprobs (no forward pass)."""
    tokenizer = engine.tokenizer
    tokens = tuple(tokenizer.token_text(i) for i in ids)
    shown = text if text is not None else tokenizer.decode(list(ids))
    if top_n is None:
        return PromptEcho(0, shown, tokens, None, None)
    logprobs, top = _scores(engine.model, tokens, list(ids), top_n, tokenizer.token_text)
    return PromptEcho(0, shown, tokens, logprobs, top)


def _scores(model, tokens, ids: list[int], top_n: int, token_text):
    import torch

    from chatcli.engine.scoring import next_token_logprobs

    logprobs: list[float | None] = [None]
    top: list[dict[str, float] | None] = [None]
    pos = 1
    for logp in next_token_logprobs(model, ids):  # [n, V] predicting ids[pos : pos + n]
        targets = torch.as_tensor(ids[pos : pos + logp.shape[0]], device=logp.device)
        chosen = logp.gather(1, targets.view(-1, 1)).squeeze(1).tolist()
        best = logp.topk(top_n, dim=1) if top_n else None
        for j, lp in enumerate(chosen):
            entry = {}
            if best is not None:
                for value, tid in zip(best.values[j].tolist(), best.indices[j].tolist()):
                    entry.setdefault(token_text(tid), _floor(value))
            entry[tokens[pos + j]] = _floor(lp)  # the token itself, always (OpenAI documents up to k+1)
            logprobs.append(_floor(lp))
            top.append(entry)
        pos += logp.shape[0]
    return tuple(logprobs), tuple(top)


def _floor(lp: float) -> float:
    return max(lp, LOGPROB_FLOOR)  # -inf has no JSON form: vLLM's floor
