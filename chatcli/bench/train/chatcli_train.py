"""chatcli's side of the train group: the fine-tuning plugin's own trainer on the bench's rows.

The model is loaded as ``chatcli finetune`` loads it (:func:`chatcli.engine.loader.load_engine`,
unquantized: fine-tuning refuses int8/int4 weights), a fresh adapter is attached with
:func:`chatcli_finetune.trainable.attach_trainable`, and each optimizer step is
:meth:`chatcli_finetune.trainer.Trainer.train_step` — the same call the command's loop
makes (loss sums, backward, gradient norm, AdamW), so the figure is what a person's run
gets per step. SFT runs first, then DPO (the reference pass through the same model with
the adapter switched off), each with its own adapter and its own peak RSS.

The trainer computes the DPO reference's log-probs once per pair and keeps them (the base
is frozen), so a run's later epochs skip that pass. Here it is computed before the warm-up
step and timed on its own (``info["dpo_reference_s"]``); the timed steps are such later
steps, and a note gives the rate a first epoch gets (each step paying its pairs' reference).

Result: ``train_sft_tps`` / ``train_dpo_tps`` (one value per timed step),
``train_sft_rss_mb`` / ``train_dpo_rss_mb`` and, in ``info["memory"]``, the LoRA article's
rule of thumb for the same model and adapter (also one line in the notes).
"""

from __future__ import annotations

import time

from chatcli.bench.spec import BenchSpec
from chatcli.bench.train.phase_rss import PhaseRss
from chatcli.bench.train.train_rows import KINDS, Batch, batch, settings
from chatcli.model.training.kept_heap import kept_heap
from chatcli_finetune.args import TrainArgs
from chatcli_finetune.data import Example, Pair
from chatcli_finetune.report import activation_memory, predicted_memory
from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable, trainable_parameters
from chatcli_finetune.trainer import Trainer

MB = 1e6  # the bench's megabytes (its peak RSS figures)


def run(spec: BenchSpec, group: str) -> dict:
    from chatcli.engine.loader import load_engine

    if group != "train":
        raise RuntimeError(f"the training worker measures the train group, not {group!r}")
    t0 = time.perf_counter()
    engine = load_engine(spec.path, dtype=spec.dtype, device="cpu")
    load_s = time.perf_counter() - t0
    model, tok, manager = engine.model, engine.tokenizer, engine.adapters
    rss = PhaseRss()
    figures: dict[str, list[float]] = {}
    info: dict = {"tokens_per_step": {}, "trainable": {}, "dpo_reference_s": None}
    activations: dict[str, float] = {}
    for kind in KINDS:
        rss.start()
        rows = batch(tok, kind, spec.sizes)
        rates, trainable, reference_s = _train(model, manager, tok, rows, spec)
        figures[f"train_{kind}_tps"] = rates
        figures[f"train_{kind}_rss_mb"] = [rss.peak_mb()]
        info["tokens_per_step"][kind] = rows.tokens
        info["trainable"][kind] = trainable
        if kind == "dpo":
            info["dpo_reference_s"] = reference_s
        cfg = model.config
        n = spec.sizes.train_batch
        activations[kind] = activation_memory(kind, n, spec.sizes.train_tokens, cfg.hidden_size,
                                              cfg.num_hidden_layers, cfg.vocab_size, spec.dtype) / MB  # fmt: skip
    rule = predicted_memory(manager.base_params, model.dtype.itemsize, info["trainable"]["sft"], 4) / MB
    info["memory"] = {"rule_of_thumb_mb": rule, "activations_mb": activations, "rss_phase_exact": rss.exact}
    notes = [memory_note(rule, activations)]
    if info["dpo_reference_s"] is not None and figures.get("train_dpo_tps"):
        notes.append(reference_note(info["dpo_reference_s"], figures["train_dpo_tps"], info["tokens_per_step"]["dpo"]))
    if spec.quantize:
        notes.append(f"train: both systems train the unquantized weights (fine-tuning refuses --quantize {spec.quantize})")
    if not rss.exact:
        notes.append("train: no per-phase peak on this system; the DPO peak RSS is the process's peak so far")
    return {"figures": figures, "load_s": load_s, "info": info, "notes": notes}


def memory_note(rule_mb: float, activations: dict[str, float]) -> str:
    acts = ", ".join(f"{k.upper()} {rule_mb + v:,.0f} MB" for k, v in activations.items())
    return (f"train memory, the LoRA article's rule of thumb (the model once + 10x the trainable parameters): "
            f"{rule_mb:,.0f} MB; with chatcli finetune's activation estimate: {acts}; the peak RSS rows also "
            "count the Python/torch runtime (a few hundred MB)")  # fmt: skip


def reference_note(reference_s: float, rates: list[float], tokens: int) -> str:
    step_s = tokens / sorted(rates)[len(rates) // 2]
    return (f"train: chatcli's DPO reference log-probs are computed once per pair and kept ({reference_s:.2f} s for "
            f"this step's pairs, before the timed steps); a first epoch pays them in each step: "
            f"{tokens / (step_s + reference_s):,.1f} DPO tok/s")  # fmt: skip


def _train(model, manager, tok, rows: Batch, spec: BenchSpec) -> tuple[list[float], int, float | None]:
    """The DPO reference log-probs (timed), one warm-up step, then ``spec.repeats`` timed ones;
    (tokens/s per timed step, trainable parameters, the reference's seconds or None for SFT)."""
    kind = rows.kind
    examples = [Example(r.ids, r.mask) for r in rows.rows]
    items = examples if kind == "sft" else [Pair(c, r) for c, r in zip(examples[: rows.pairs], examples[rows.pairs :])]
    s = settings(kind, len(items))
    attach_trainable(manager, LoRASpec(s.rank, s.alpha, False, s.targets, None, s.dropout), seed=0, base_model=spec.path)
    try:
        params = trainable_parameters(model)
        args = TrainArgs(kind=kind, data="", out="", model=spec.path, rank=s.rank, alpha=s.alpha, targets="all-linear",
                         dropout=s.dropout, lr=s.lr, schedule="constant", batch_size=len(items), dtype=spec.dtype,
                         device="cpu", beta=s.beta, weight_decay=s.weight_decay)  # fmt: skip
        pad_id = tok.eos_ids[0] if tok.eos_ids else 0
        trainer = Trainer(model, params, args, pad_id, reference=lambda: manager.disabled([TRAIN_NAME]))
        reference_s = None
        if kind == "dpo":  # what the trainer does on a pair's first use, timed on its own
            t0 = time.perf_counter()
            trainer.reference_logps(items)
            reference_s = time.perf_counter() - t0
        total = 1 + spec.repeats
        rates = []
        with kept_heap():  # as Trainer.run keeps it around its steps
            for step in range(total):  # step 0 is the warm-up (allocator, kernels, AdamW's state)
                t0 = time.perf_counter()
                m = trainer.train_step(step, items, total)
                seconds = time.perf_counter() - t0
                if m["tokens"] != rows.tokens:  # the trainer's own count must be the one the baseline is given
                    raise RuntimeError(f"the trainer counted {m['tokens']} tokens, the batch holds {rows.tokens}")
                if step:
                    rates.append(rows.tokens / seconds)
        return rates, sum(p.numel() for _, p in params), reference_s
    finally:
        manager.unload(TRAIN_NAME)
