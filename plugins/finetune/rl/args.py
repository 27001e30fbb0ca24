"""The settings of one ``finetune rl`` run: the shared trainer settings plus the RL ones.

:class:`RLArgs` extends :class:`chatcli_finetune.args.TrainArgs` (so the shared loop,
checkpoints and resume read it unchanged) with the grader (``reward``), the group size
G, the longest sampled answer, the sampling temperature and the KL weight β. Its
defaults are what the toy run of ``benchmarks/rl_max_words.py`` needs to learn within
minutes on two CPU cores (the numbers it measured are in the README); a flag always
wins. :meth:`RLArgs.chosen` is the line that says which were used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatcli.errors import UsageError
from chatcli_finetune.args import RESUME_FIXED, TrainArgs

MIN_G, MAX_G = 2, 10  # a group needs two answers to compare; ten is the batch /rank also draws
# Without --layers, the top TOP_LAYERS layers are adapted (all of a smaller model): backward stops
# at the lowest adapted layer, so a step costs about half (measured on SmolLM2-135M, 8 rows x 88
# tokens, one CPU thread: forward 3.1 s + backward 1.4 s against 7.2 + 8.1 s for all 30 layers);
# when to end an answer is the top layers' decision.
TOP_LAYERS = 8
# What a resumed run must share with the run it continues, besides the shared settings.
RL_RESUME_FIXED = (*RESUME_FIXED, "reward", "group_size", "max_new_tokens", "temperature")


@dataclass
class RLArgs(TrainArgs):
    reward: str = ""  # the grader spec (chatcli_finetune.rl.graders)
    group_size: int = 4  # G answers per prompt
    max_new_tokens: int = 48  # the longest sampled answer
    temperature: float = 1.0  # sampling: 1 samples the policy itself (the gradient assumes it)
    # The shared settings with RL's own defaults.
    rank: int | None = 8
    alpha: float | None = 16.0
    targets: str | None = "all-linear"
    dropout: float = 0.0  # dropout would make the trained policy differ from the one that sampled
    epochs: float | None = 1.5
    lr: float | None = 2e-3
    schedule: str = "constant"
    batch_size: int = 2  # prompts per micro-batch (x G answers each)
    beta: float = 0.04  # TRL's long-time default KL weight
    save_every: int = 10

    def check(self) -> "RLArgs":
        super().check()
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or not MIN_G <= self.group_size <= MAX_G:
            raise UsageError(f"invalid --group-size {self.group_size}: use {MIN_G} to {MAX_G} answers per prompt "
                             "(a group needs two answers to compare)")  # fmt: skip
        if self.max_new_tokens < 1:
            raise UsageError(f"invalid --max-new-tokens {self.max_new_tokens}: use an integer >= 1")
        if not (math.isfinite(self.temperature) and 0 < self.temperature <= 5):
            raise UsageError(f"invalid --temperature {self.temperature}: use a number above 0 (0 gives G identical answers) up to 5")
        return self

    def layer_spec(self, n_layers: int) -> str:
        """``--layers`` as given, or the top :data:`TOP_LAYERS` of a model with ``n_layers``."""
        return self.layers or f"last:{min(TOP_LAYERS, n_layers)}"

    def chosen(self, n_layers: int) -> str:
        """The one line that says which settings this run uses (printed before training)."""
        steps = f"{self.max_steps} steps" if self.max_steps is not None else f"{self.epochs:g} epoch(s)"
        return (f"rl settings: {steps} of {self.batch_size * self.grad_accum} prompt(s) x G={self.group_size} answers, "
                f"lr {self.lr:g} ({self.schedule}), beta {self.beta:g}, temperature {self.temperature:g}, "
                f"max new tokens {self.max_new_tokens}, LoRA r {self.rank} alpha {self.alpha:g} {self.targets} "
                f"layers {self.layer_spec(n_layers)} (any flag overrides)")  # fmt: skip
