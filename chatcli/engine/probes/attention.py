"""Attention weights of one query position: which earlier tokens it looked at, per layer and head.

``attention_weights(model, ids, position=-1)`` runs one forward over
``ids[: position + 1]`` (no cache) and, as each attention layer is entered, recomputes
for the query at ``position`` exactly what eager attention computes::

    w[l, h, j] = softmax_j( q_h · k_{h // groups, j} / sqrt(head_dim) ),   j = 0 .. position

with q and k taken after the projections, Qwen3's q/k norms and RoPE
(:meth:`~chatcli.model.model.Attention.project`, the code the model itself runs),
and head h reading key/value head ``h // groups`` as Hugging Face's ``repeat_kv``
does. Scores and softmax are float32 whatever the model dtype. The forward itself
still runs SDPA: the weights are recomputed on the side, for one row only, and the
hooks that read the inputs are gone when the call returns (generation is untouched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from chatcli.engine.probes.capture import reading_inputs, resolve_position
from chatcli.engine.probes.lens import token_text
from chatcli.errors import UsageError


@dataclass(frozen=True, eq=False)  # a tensor field: == would be ambiguous, compare .weights
class AttentionResult:
    position: int  # absolute index of the query token
    tokens: tuple[str, ...]  # texts of positions 0..position
    weights: torch.Tensor  # float32 [layers, heads, position + 1]; each row sums to 1
    ids: tuple[int, ...] = field(default=())  # token ids of positions 0..position

    @property
    def num_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.weights.shape[1])

    def check(self, layer: int | None = None, head: int | None = None) -> None:
        """Raise a one-line UsageError naming the valid range for a layer or head that does not exist."""
        if layer is not None and not 0 <= layer < self.num_layers:
            raise UsageError(f"no layer {layer}: this model's layers are 0..{self.num_layers - 1}")
        if head is not None and not 0 <= head < self.num_heads:
            raise UsageError(f"no head {head}: this model's heads are 0..{self.num_heads - 1}")

    def row(self, layer: int | None = None, head: int | None = None) -> list[float]:
        """The weights over positions 0..position of one layer/head (None = averaged over that axis)."""
        self.check(layer, head)
        w = self.weights if layer is None else self.weights[layer : layer + 1]
        w = w if head is None else w[:, head : head + 1]
        return w.mean(dim=(0, 1)).tolist()

    def top(self, k: int, layer: int | None = None, head: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` most attended positions as (index, weight), heaviest first (ties: earlier first)."""
        row = self.row(layer, head)
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        return [(j, row[j]) for j in order[: max(k, 0)]]

    def to_json(self, layer: int | None = None, head: int | None = None) -> dict:
        row = self.row(layer, head)
        return {
            "type": "attention", "position": self.position, "token": self.tokens[self.position],
            "layer": layer, "head": head, "layers": self.num_layers, "heads": self.num_heads,
            "weights": [
                {"index": j, **({"id": self.ids[j]} if self.ids else {}), "token": self.tokens[j], "weight": w}
                for j, w in enumerate(row)
            ],
        }


@torch.no_grad()
def attention_weights(model, ids: Sequence[int], *, position: int = -1, tokenizer=None) -> AttentionResult:
    """Eager attention weights [layers, heads, position + 1] of the query at ``ids[position]``."""
    pos = resolve_position(ids, position, model.config.context_length)
    kept = [int(i) for i in ids[: pos + 1]]
    x = torch.as_tensor(kept, dtype=torch.long, device=model.device).view(1, -1)
    attns = [layer.self_attn for layer in model.model.layers]
    rows: list[torch.Tensor | None] = [None] * len(attns)

    def record(i: int, args: tuple) -> None:
        attn = attns[i]
        h, cos, sin = args[0], args[1], args[2]  # the layer's normed input [1, S, D] and RoPE angles
        q, k, _ = attn.project(h, cos, sin)  # q [1, H, S, Dh], k [1, KV, S, Dh]
        groups = q.shape[1] // k.shape[1]
        query = q[0, :, -1].float()  # [H, Dh]
        keys = k[0].float().repeat_interleave(groups, dim=0)  # [H, S, Dh]: head h reads kv head h // groups
        scores = torch.einsum("hd,hsd->hs", query, keys) * attn.head_dim**-0.5  # [H, S]
        rows[i] = torch.softmax(scores, dim=-1)

    with reading_inputs(attns, record):
        model.hidden_states(x)
    weights = torch.stack(rows).cpu()  # [L, H, S]
    return AttentionResult(
        position=pos, tokens=tuple(token_text(tokenizer, i) for i in kept), weights=weights, ids=tuple(kept)
    )
