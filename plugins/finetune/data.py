"""Training data: JSONL records in TRL's formats -> token ids with an exact loss mask.

Formats, one JSON object per line (what ``chatcli rank export`` writes, and TRL's own):

* SFT, conversational: ``{"messages": [{"role", "content"}, ...]}`` — loss on every
  assistant turn (its content and the template's end-of-turn token), nothing else;
* SFT, prompt/completion: ``{"prompt": str | messages, "completion": str | messages}``
  — loss on the completion only;
* SFT, language modelling: ``{"text": str}`` — loss on every token;
* preferences (DPO, reward): ``{"prompt": str | messages, "chosen": ..., "rejected": ...}``,
  or TRL's implicit-prompt form (``chosen``/``rejected`` full conversations that share
  the prompt as a common prefix).

A conversation is tokenized segment by segment (template text before an assistant
turn, then the turn), so the assistant tokens are exactly the ones the model would
generate after the rendered prompt at inference time, and the mask is exact by
construction. Bad lines come back as :class:`LineError` (``FILE:LINE: what``); the
caller skips or refuses them (``--strict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcli.errors import UsageError
from chatcli.jsonl import LineError, read_objects

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """One sequence: ids and, per id, whether its prediction is trained (``mask[i]`` for ``ids[i]``)."""

    ids: tuple[int, ...]
    mask: tuple[bool, ...]
    line: int = 0

    @property
    def n_target(self) -> int:
        return sum(self.mask[1:])  # the first token has no context: never predicted


@dataclass(frozen=True)
class Pair:
    chosen: Example
    rejected: Example
    line: int = 0


class BadRecord(ValueError):
    """A record that does not fit its format (the message names what is missing)."""


# --- reading ------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], list[LineError]]:
    """(line number, object) for each non-blank line, and the lines that are not JSON objects."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file not found: {path}")
    return read_objects(path)  # not UTF-8: refused; a broken \ud83d escape: a bad line; never replaced


def _messages(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadRecord(f"'{field}' must be a non-empty list of messages")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise BadRecord(f"'{field}'[{k}] must be {{\"role\": one of {', '.join(ROLES)}, \"content\": TEXT}}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _text_or_messages(value: Any, field: str) -> str | list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise BadRecord(f"'{field}' is empty")
        return value
    return _messages(value, field)


# --- tokenizing ---------------------------------------------------------------------------------


class Encoder:
    """Turns records into :class:`Example` s with one tokenizer (a ``ChatTokenizer``)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos = tokenizer.eos_ids[0] if tokenizer.eos_ids else None

    def _enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def _bos(self) -> list[int]:
        return [self.tok.bos_id] if self.tok.add_bos_token and self.tok.bos_id is not None else []

    def _need_template(self) -> None:
        if not self.tok.has_chat_template:
            raise UsageError("the model has no chat template: use 'text' or plain-string prompt/completion data")

    def conversation(self, messages: list[dict], train_from: int = 0) -> Example:
        """Loss on the assistant turns at index >= ``train_from``; each turn is the text the
        template adds after the generation prompt, up to and including its end-of-turn token."""
        self._need_template()
        if not any(m["role"] == "assistant" for m in messages[train_from:]):
            raise BadRecord("the conversation has no assistant turn to learn from")
        ids: list[int] = []
        mask: list[bool] = []
        done = ""  # the rendered text already tokenized
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or i < train_from:
                continue
            prompt = self.tok.render_chat(messages[:i], add_generation_prompt=True) if i else ""
            turn = self.tok.render_chat(messages[: i + 1], add_generation_prompt=False)
            if not prompt.startswith(done) or not turn.startswith(prompt):
                raise BadRecord("the chat template does not render this conversation as growing prefixes")
            answer = turn[len(prompt):]
            # The turn ends at its end-of-turn marker; what follows (a newline) belongs to the next prompt.
            stripped = answer.rstrip()
            seg = self._enc(prompt[len(done):])
            ans = self._enc(stripped)
            ids += seg + ans
            mask += [False] * len(seg) + [True] * len(ans)
            done = prompt + stripped
        full = self.tok.render_chat(messages, add_generation_prompt=False)
        if full.startswith(done) and len(full) > len(done) and messages[-1]["role"] != "assistant":
            tail = self._enc(full[len(done):])
            ids += tail
            mask += [False] * len(tail)
        return Example(tuple(ids), tuple(mask))

    def prompt_completion(self, prompt: str | list[dict], completion: str | list[dict]) -> Example:
        if isinstance(prompt, list) != isinstance(completion, list):
            raise BadRecord("'prompt' and 'completion' must both be text or both be message lists")
        if isinstance(prompt, list):
            if not all(m["role"] == "assistant" for m in completion):
                raise BadRecord("'completion' messages must be assistant turns")
            return self.conversation([*prompt, *completion], train_from=len(prompt))
        p = self._bos() + self._enc(prompt)
        c = self._enc(completion) + ([self.eos] if self.eos is not None else [])
        return Example(tuple(p + c), tuple([False] * len(p) + [True] * len(c)))

    def text(self, text: str) -> Example:
        ids = self._bos() + self._enc(text) + ([self.eos] if self.eos is not None else [])
        # The first token has no context: nothing predicts it.
        return Example(tuple(ids), tuple([False] + [True] * (len(ids) - 1)))

    # --- records ---------------------------------------------------------------------------------

    def sft_record(self, obj: dict) -> Example:
        if "messages" in obj:
            return self.conversation(_messages(obj["messages"], "messages"))
        if "prompt" in obj and "completion" in obj:
            return self.prompt_completion(
                _text_or_messages(obj["prompt"], "prompt"), _text_or_messages(obj["completion"], "completion")
            )
        if "text" in obj:
            if not isinstance(obj["text"], str) or not obj["text"].strip():
                raise BadRecord("'text' must be non-empty text")
            return self.text(obj["text"])
        raise BadRecord("an SFT line needs 'messages', 'prompt' + 'completion', or 'text'")

    def pref_record(self, obj: dict) -> Pair:
        if "chosen" not in obj or "rejected" not in obj:
            raise BadRecord("a preference line needs 'chosen' and 'rejected' (and usually 'prompt')")
        chosen = _text_or_messages(obj["chosen"], "chosen")
        rejected = _text_or_messages(obj["rejected"], "rejected")
        if "prompt" in obj:
            prompt = _text_or_messages(obj["prompt"], "prompt")
        elif isinstance(chosen, list) and isinstance(rejected, list):
            k = 0  # implicit prompt: the shared leading messages
            while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
                k += 1
            prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
            if not prompt:
                raise BadRecord("'chosen' and 'rejected' share no prompt; add a 'prompt' field")
        else:
            raise BadRecord("a preference line with text answers needs a 'prompt'")
        if chosen == rejected:
            raise BadRecord("'chosen' and 'rejected' are identical: the pair says nothing")
        return Pair(self.prompt_completion(prompt, chosen), self.prompt_completion(prompt, rejected))


# --- loading a file -----------------------------------------------------------------------------


@dataclass
class Loaded:
    items: list  # Example (sft) or Pair (dpo, reward)
    errors: list[LineError]
    too_long: int
    total: int


def load_examples(path: Path, encoder: Encoder, kind: str, max_len: int) -> Loaded:
    """Read ``path`` as ``kind`` ("sft" or "pref"); over-long examples are dropped and counted."""
    rows, errors = read_jsonl(path)
    unreadable = len(errors)  # lines that are not a JSON object (or not text); record errors come below
    items: list = []
    too_long = 0
    for n, obj in rows:
        try:
            item = encoder.sft_record(obj) if kind == "sft" else encoder.pref_record(obj)
        except BadRecord as e:
            errors.append(LineError(Path(path), n, str(e)))
            continue
        seqs = [item] if isinstance(item, Example) else [item.chosen, item.rejected]
        if any(s.n_target == 0 for s in seqs):
            errors.append(LineError(Path(path), n, "no token to learn from after tokenizing"))
            continue
        if any(len(s.ids) > max_len for s in seqs):
            too_long += 1
            continue
        if isinstance(item, Example):
            items.append(Example(item.ids, item.mask, n))
        else:
            items.append(Pair(item.chosen, item.rejected, n))
    errors.sort(key=lambda e: e.line)
    return Loaded(items, errors, too_long, len(rows) + unreadable)


def check_loaded(loaded: Loaded, path: Path, max_len: int, strict: bool, warn) -> None:
    """Report bad lines (refuse with ``strict``) and refuse data that would train nothing."""
    for e in loaded.errors:
        warn(f"{'error' if strict else 'warning'}: {e}{'' if strict else '; skipped'}")
    if loaded.errors and strict:
        raise UsageError(f"{len(loaded.errors)} bad line(s) in {path}; fix them, or run without --strict to skip them")
    if loaded.too_long:
        warn(f"warning: {loaded.too_long} example(s) longer than --max-len {max_len} tokens skipped")
    if not loaded.items:
        if loaded.too_long:
            raise UsageError(f"every usable example in {path} is longer than --max-len {max_len}: raise --max-len")
        if loaded.errors:
            raise UsageError(f"no usable example in {path}: all {len(loaded.errors)} line(s) are bad (see above)")
        raise UsageError(f"{path} holds no examples: write one JSON object per line")


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded ids [B, S], attention mask [B, S] and target mask [B, S] (torch tensors)."""
    import torch

    S = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), S), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), S), dtype=torch.long)
    target = torch.zeros((len(examples), S), dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e.ids)
        ids[b, :n] = torch.tensor(e.ids)
        attn[b, :n] = 1
        target[b, :n] = torch.tensor(e.mask)
    return ids, attn, target
