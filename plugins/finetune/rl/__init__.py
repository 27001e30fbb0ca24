"""``finetune rl``: on-policy GRPO against a grader (a reward model, a rule or a plugin's), and ``/best N``.

The pieces, one job each: :mod:`.args` (the run's settings and defaults), :mod:`.graders`
(what scores an answer), :mod:`.grpo` (group advantages and the clipped objective with
its KL penalty, on plain tensors), :mod:`.trainer` (sampling, scoring and the loss inside
the shared training loop), :mod:`.groups` (``OUT/groups.jsonl``: which answers were
pushed up and which down), :mod:`.evaluate` (greedy held-out reward and exact KL),
:mod:`.run` (the run end to end), :mod:`.best` (``/best N``: rejection sampling in the chat).
"""
