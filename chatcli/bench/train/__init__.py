"""``chatcli bench --only train``: LoRA training throughput and memory, chatcli's trainer beside transformers + PEFT.

Layout (one job per module):

* :mod:`.train_rows` — the token rows both systems train on (SFT examples, DPO pairs)
  and the training settings they share;
* :mod:`.chatcli_train` — chatcli's side: the ``finetune`` plugin's own
  :class:`~chatcli_finetune.trainer.Trainer` (what ``chatcli finetune sft|dpo`` runs);
* :mod:`.peft_loop` — the baseline: a plain transformers + PEFT loop (forward with
  ``labels`` / the DPO loss, ``backward``, ``AdamW.step``);
* :mod:`.phase_rss` — peak RSS of one phase of a process (the SFT part, then the DPO part).

What is compared, and why it is fair: the same checkpoint and dtype (float32 unless
``--dtype`` says otherwise; both keep the LoRA tensors in float32), the same LoRA
(the fine-tuning defaults: rank 8, alpha 16, dropout 0.05, every linear layer of every
block), the same AdamW (lr, betas, eps, no weight decay), the same rows of token ids
and the same loss masks, no gradient checkpointing, the same threads. Each system
runs one warm-up optimizer step (not timed), then ``--repeats`` timed steps; each
step is forward + backward + optimizer step, timed wall-clock from the first forward
to the end of the step.

How tokens/s is counted: the tokens of one step's batch that pass through the model
with gradients, divided by the step's seconds. SFT: ``batch × sequence`` tokens (the
prompt half included: it is computed, only its loss is masked). DPO: ``2 × batch ×
sequence`` (chosen and rejected rows); the frozen reference model's forward over the
same rows is not counted again as tokens. The PEFT loop runs it in every step; chatcli's
trainer computes it once per pair and keeps it (the base is frozen), so its timed steps
are a run's steps after a pair's first use, and the bench times that first computation
on its own and notes the rate a first epoch gets. chatcli computes the LM head only on
the positions that carry loss (the PEFT model computes it everywhere) and runs a DPO
pair's shared prompt once for both rows; the losses are the same. No row is padded, so every counted token is a real one, identical for both
systems.

This package measures the first-party fine-tuning plugin, so it sits in the house
plan's top layer beside the plugins (``tests/test_house_plan.py``); the bench's
worker reaches it by module name (:mod:`chatcli.bench.worker`), like its other workers.
"""
