"""The logit lens: the next-token distribution read out after every layer, at one position.

``logit_lens(model, ids, position=-1)`` runs one forward over ``ids[: position + 1]``
(no cache, so nothing of a generation is touched) and reads the residual stream at
that position as it enters each block:

* layer 0 is the token embedding (what block 0 reads),
* layer i (1 <= i < L) is the residual after i blocks,
* layer L is the model's own next-token distribution, taken from the same forward's
  logits, so it is *exactly* what generation would sample from.

Each of layers 0..L-1 goes through ``model.model.norm`` and the LM head, the modules
the model itself uses: packed, int8, int4 and LoRA-wrapped models are read as they run
(with adapters on, it is the adapted model). Logits come out in the model's dtype,
as the model's own do; the softmax, entropy and probabilities are float32, computed
as every Step's ``model_prob`` is (:func:`~chatcli.engine.sampling.raw_with_entropy`).

The *target* is the token followed through the layers (its probability per layer,
where it first becomes top-1, where it settles): by default the model's own most
probable next token, or any ``target_id`` (e.g. the token an answer actually chose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from chatcli.engine.probes.capture import reading_inputs, resolve_position
from chatcli.engine.sampling import check_finite, raw_with_entropy
from chatcli.errors import UsageError


@dataclass(frozen=True)
class LensToken:
    id: int
    token: str
    prob: float

    def to_json(self) -> dict:
        return {"id": self.id, "token": self.token, "prob": self.prob}


@dataclass(frozen=True)
class LensLayer:
    layer: int  # 0 = embeddings, L = the model's output
    top: tuple[LensToken, ...]  # most probable first
    entropy: float  # bits, of the whole distribution at this layer
    target_prob: float | None  # the target's probability here (None without a target)

    def to_json(self) -> dict:
        return {"layer": self.layer, "top": [t.to_json() for t in self.top], "entropy": self.entropy,
                "target_prob": self.target_prob}


@dataclass(frozen=True)
class LensResult:
    position: int  # absolute index of the token whose next token is read
    layers: tuple[LensLayer, ...]  # layer 0 .. L
    target_id: int | None
    target_token: str | None

    def first_top_layer(self) -> int | None:
        """The first layer where the target is the most probable token, or None."""
        if self.target_id is None:
            return None
        for layer in self.layers:
            if layer.top and layer.top[0].id == self.target_id:
                return layer.layer
        return None

    def settled_layer(self, threshold: float = 0.5) -> int | None:
        """The first layer from which the target's probability stays >= ``threshold`` up to the
        output, or None (no target, or the output itself is below it)."""
        settled = None
        for layer in reversed(self.layers):
            if layer.target_prob is None or layer.target_prob < threshold:
                break
            settled = layer.layer
        return settled

    def to_json(self) -> dict:
        return {"type": "lens", "position": self.position, "target_id": self.target_id,
                "target_token": self.target_token, "layers": [layer.to_json() for layer in self.layers]}


def token_text(tokenizer, token_id: int) -> str:
    """The token's text, or its id in angle brackets when no tokenizer is given."""
    return tokenizer.token_text(token_id) if tokenizer is not None else f"<{token_id}>"


@torch.no_grad()
def layer_logits(model, ids: Sequence[int], position: int) -> torch.Tensor:
    """Logits [L + 1, V] (model dtype) for the token after ``ids[position]``, one row per layer."""
    x = torch.as_tensor(list(ids[: position + 1]), dtype=torch.long, device=model.device).view(1, -1)
    layers = model.model.layers
    residuals: list[torch.Tensor | None] = [None] * len(layers)

    def record(i: int, args: tuple) -> None:
        residuals[i] = args[0][0, -1]  # [D]: the residual stream entering block i, at the position

    with reading_inputs(layers, record):
        own = model(x, last_only=True)[0]  # [1, V]: the model's own next-token logits
    inner = model.lm_head(model.model.norm(torch.stack(residuals)))  # [L, V]
    return torch.cat([inner.to(own.dtype), own])


def logit_lens(
    model, ids: Sequence[int], *, position: int = -1, top_n: int = 10, target_id: int | None = None,
    tokenizer=None,
) -> LensResult:
    """The top ``top_n`` next tokens after ``ids[position]`` at every layer (see the module docstring)."""
    if top_n < 1:
        raise UsageError(f"invalid top {top_n}: show at least 1 token per layer")
    pos = resolve_position(ids, position, model.config.context_length)
    logits = layer_logits(model, ids, pos).float()  # [L + 1, V]
    vocab = logits.shape[-1]
    if target_id is not None and not 0 <= target_id < vocab:
        raise UsageError(f"target token {target_id} is outside the vocabulary of {vocab}")
    check_finite(logits)
    probs, entropy_bits = raw_with_entropy(logits)  # the same maths as every Step's model_prob
    entropy = entropy_bits.tolist()  # [L + 1]
    target = int(probs[-1].argmax()) if target_id is None else int(target_id)
    target_probs = probs[:, target].tolist()
    top_p, top_i = probs.topk(min(top_n, vocab), dim=-1)
    layers = tuple(
        LensLayer(
            layer=n,
            top=tuple(LensToken(int(i), token_text(tokenizer, int(i)), float(p)) for i, p in zip(top_i[n], top_p[n])),
            entropy=float(entropy[n]),
            target_prob=float(target_probs[n]),
        )
        for n in range(logits.shape[0])
    )
    return LensResult(position=pos, layers=layers, target_id=target, target_token=token_text(tokenizer, target))
