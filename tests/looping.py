"""A tiny checkpoint whose greedy decoding loops: the loop warnings' test model.

``make_looping_checkpoint(dir)`` writes the tiny mistral of :mod:`tests.tiny` (untied
LM head) with its weights edited so that greedy decoding, after any prompt, produces
``CYCLE`` over and over: ``Rome add day gre ick Rome add ...``. The blocks write
nothing into the residual stream (``o_proj`` and ``down_proj`` are zero), so the last
hidden state is the current token's normed embedding h(t); every token outside the
cycle gets the embedding of the cycle's last one, and the head's row for the token
after c is 10·h(c)/|h(c)|, so the next token is always the one after the current.
End-of-sequence never wins (its row is zero), so an answer runs to ``max_tokens``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.tiny import make_tiny_checkpoint

CYCLE = [341, 348, 355, 362, 369]  # "Rome", "add", "day", "gre", "ick": plain text tokens of the tiny vocabulary
EPS = 1e-5  # the tiny models' rms_norm_eps


def make_looping_checkpoint(out_dir: Path) -> Path:
    path = make_tiny_checkpoint(Path(out_dir), family="mistral", seed=0)
    weights_file = path / "model.safetensors"
    w = load_file(weights_file)
    for name in w:
        if name.endswith("self_attn.o_proj.weight") or name.endswith("mlp.down_proj.weight"):
            w[name].zero_()
    emb, gain = w["model.embed_tokens.weight"], w["model.norm.weight"]
    outside = torch.ones(emb.shape[0], dtype=torch.bool)
    outside[CYCLE] = False
    emb[outside] = emb[CYCLE[-1]].clone()  # every other token leads into the cycle
    head = w["lm_head.weight"]
    head.zero_()
    for here, after in zip(CYCLE, CYCLE[1:] + CYCLE[:1]):
        x = emb[here]
        h = x / torch.sqrt(x.pow(2).mean() + EPS) * gain
        head[after] = 10 * h / h.norm()
    save_file({k: v.contiguous() for k, v in w.items()}, weights_file, metadata={"format": "pt"})
    return path
