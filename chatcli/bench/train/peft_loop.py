"""The baseline of the train group: a plain transformers + PEFT training loop, as its documentation writes it.

``AutoModelForCausalLM.from_pretrained`` on chatcli's checkpoint directory (same dtype),
``get_peft_model`` with a ``LoraConfig`` of the same rank, alpha, dropout and target
modules as chatcli's trainer, ``torch.optim.AdamW`` with the same settings over the
trainable parameters, and per step: forward, ``loss.backward()``, ``optimizer.step()``,
``zero_grad``. SFT: the model's own loss (``labels``, the prompt half set to -100).
DPO: sequence log-probabilities (log-softmax in float32, gathered, summed over the
completion), the reference pass under ``disable_adapter()`` without gradients, the same
DPO loss. ``use_cache=False``: a training forward keeps no KV cache. Same rows, same
warm-up step, same timing and token count as :mod:`.chatcli_train`.
"""

from __future__ import annotations

import time

from chatcli.bench.spec import BenchSpec
from chatcli.bench.train.phase_rss import PhaseRss
from chatcli.bench.train.train_rows import BETAS, EPS, KINDS, Batch, batch, settings


def run(spec: BenchSpec, group: str) -> dict:
    import peft
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from chatcli.engine.loader import load_prompt_renderer

    if group != "train":
        raise RuntimeError(f"the training worker measures the train group, not {group!r}")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=getattr(torch, spec.dtype))
    load_s = time.perf_counter() - t0
    tok = load_prompt_renderer(spec.path).tokenizer  # chatcli's tokenizer: the very same ids
    rss = PhaseRss()
    figures: dict[str, list[float]] = {}
    info: dict = {"tokens_per_step": {}, "trainable": {}, "transformers": transformers.__version__,
                  "peft": peft.__version__}  # fmt: skip
    for kind in KINDS:
        rss.start()
        rows = batch(tok, kind, spec.sizes)
        rates, trainable, model = _train(model, rows, spec)
        figures[f"train_{kind}_tps"] = rates
        figures[f"train_{kind}_rss_mb"] = [rss.peak_mb()]
        info["tokens_per_step"][kind] = rows.tokens
        info["trainable"][kind] = trainable
    return {"figures": figures, "load_s": load_s, "info": info, "notes": []}


def _train(model, rows: Batch, spec: BenchSpec):
    """One warm-up step, then ``spec.repeats`` timed ones; (tokens/s per timed step, trainable, the bare model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    s = settings(rows.kind, len(rows.rows) if rows.kind == "sft" else rows.pairs)
    config = LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.targets),
                        bias="none", task_type="CAUSAL_LM")  # fmt: skip
    pm = get_peft_model(model, config)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, betas=BETAS, eps=EPS, weight_decay=s.weight_decay)
    ids = torch.tensor([r.ids for r in rows.rows], dtype=torch.long)
    attn = torch.ones_like(ids)
    target = torch.tensor([r.mask for r in rows.rows], dtype=torch.bool)
    total = 1 + spec.repeats
    rates = []
    for step in range(total):  # step 0 is the warm-up
        t0 = time.perf_counter()
        if rows.kind == "sft":
            loss = pm(input_ids=ids, attention_mask=attn, labels=ids.masked_fill(~target, -100), use_cache=False).loss
        else:
            loss = _dpo_loss(pm, ids, attn, target, rows.pairs, s.beta)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        if step:
            rates.append(rows.tokens / seconds)
    trainable = sum(p.numel() for p in params)
    return rates, trainable, pm.unload()  # the base model back, without LoRA layers, for the next kind


def _sequence_logps(model, ids, attn, target):
    import torch

    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * target[:, 1:]).sum(-1)


def _dpo_loss(pm, ids, attn, target, pairs: int, beta: float):
    import torch
    import torch.nn.functional as F

    with torch.no_grad(), pm.disable_adapter():
        ref = _sequence_logps(pm, ids, attn, target)
    pol = _sequence_logps(pm, ids, attn, target)
    chosen, rejected = pol[:pairs] - ref[:pairs], pol[pairs:] - ref[pairs:]
    return -F.logsigmoid(beta * (chosen - rejected)).mean()
