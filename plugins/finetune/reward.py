"""A loaded reward model scoring answers: ``/score`` in the chat, best-of-N for ``/rank``.

A reward model here is a PEFT ``SEQ_CLS`` adapter (what ``chatcli finetune reward``
writes): a LoRA plus a ``score`` head ``[1, hidden]`` that :mod:`chatcli.lora.peft_io`
reads into ``LoRAAdapter.heads``. It lives in the engine's adapter manager beside the
other adapters but is switched off for answers (a reward LoRA is not meant to write);
:class:`RewardScorer` switches it on — and every other adapter off — only for the
scoring pass, under the manager's guard (no answer streams meanwhile), and the
manager restores every switch after. The score of an answer is the head applied to
the final hidden state of its last token, the end-of-turn token, on exactly the
ids training saw (:class:`chatcli_finetune.data.Encoder`), so a score here equals
the reward the training loss optimised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from chatcli.errors import UsageError

HEAD = "score"


def _manager(engine):
    """The engine's adapter manager (``LoadedModel.adapters``)."""
    from chatcli.engine.protocol import capabilities

    if engine is None:
        raise UsageError("no model is loaded yet: wait for it, then try again")
    manager = getattr(engine, "adapters", None)
    if manager is None or not capabilities(engine).weights_in_process:  # a server's control has no heads
        raise UsageError("reward models need chatcli's own PyTorch engine")
    return manager


def reward_names(manager) -> list[str]:
    """Loaded adapters that carry a scalar ``score`` head (reward models), oldest first."""
    return [n for n in manager.names if HEAD in manager.adapter(n).heads and manager.adapter(n).heads[HEAD].shape[0] == 1]


def load_reward(engine, path: str | Path, name: str | None = None):
    """Load a reward adapter through the engine's manager, switched off for answers; returns its info."""
    from chatcli.lora.peft_io import adapter_files, read_config

    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"no reward model at {p}: give the --out folder of 'chatcli finetune reward'")
    cfg = read_config(adapter_files(p)[0])
    if HEAD not in cfg.heads:
        raise UsageError(f"{p} is not a reward model (no '{HEAD}' head in modules_to_save): load it with /load-lora")
    manager = _manager(engine)
    info = manager.load(p, name=name)
    manager.disable(info.name)  # a reward LoRA scores answers; it must not change them
    return manager.info(info.name)


class RewardScorer:
    """Scores answers with one loaded reward adapter (the newest one unless ``name`` is given)."""

    def __init__(self, engine, name: str | None = None):
        self.engine = engine
        self.manager = _manager(engine)
        names = reward_names(self.manager)
        if not names:
            raise UsageError("no reward model is loaded: /score load DIR (a 'chatcli finetune reward' folder), "
                             "or /finetune load after a reward run")  # fmt: skip
        if name is not None and name not in names:
            raise UsageError(f"{name!r} is not a loaded reward model (loaded: {', '.join(names)})")
        self.name = name or names[-1]

    def score(self, prompt: Sequence[dict], answers: Sequence[str], batch: int = 8) -> list[float]:
        """The reward of each answer to ``prompt`` (messages up to the last user turn)."""
        from chatcli_finetune.data import BadRecord, Encoder, collate
        from chatcli_finetune.losses import last_token_hidden

        tok = self.engine.tokenizer
        enc = Encoder(tok)
        try:
            examples = [enc.prompt_completion(list(prompt), [{"role": "assistant", "content": a}]) for a in answers]
        except BadRecord as e:
            raise UsageError(f"cannot score this conversation: {e}") from None
        model = self.engine.model
        head = self.manager.adapter(self.name).heads[HEAD]  # [1, D] float32
        pad = tok.eos_ids[0] if tok.eos_ids else 0
        others = [n for n in self.manager.names if n != self.name]
        out: list[float] = []
        with self.manager.guarded(), self.manager.override(on=[self.name], off=others), torch.no_grad():
            for k in range(0, len(examples), batch):
                ids, attn, _ = collate(examples[k : k + batch], pad)  # [B, S]
                h = last_token_hidden(model, ids.to(model.device), attn.to(model.device)).float()  # [B, D]
                out += (h @ head.to(h.device).T).squeeze(-1).tolist()  # [B]
        return out


def best_first(engine, prompt: Sequence[dict], texts: Sequence[str]) -> tuple[list[int], list[float], str] | None:
    """Best-of-N: candidate positions sorted by reward (best first), their rewards and the
    reward model's name; None when no reward model is loaded."""
    try:
        manager = _manager(engine)
    except UsageError:  # a fake or remote engine without adapters
        return None
    if not reward_names(manager):
        return None
    scorer = RewardScorer(engine)
    scores = scorer.score(prompt, texts)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    return order, [scores[i] for i in order], scorer.name
