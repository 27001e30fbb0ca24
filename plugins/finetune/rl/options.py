"""The ``chatcli finetune rl`` options that differ from the other trainers' (typer objects only).

An option left out is None, and :class:`chatcli_finetune.rl.args.RLArgs` supplies RL's
default (shown in each help text); the options shared unchanged with ``sft``/``dpo``/
``reward`` come from :mod:`chatcli_finetune.cli`.
"""

from __future__ import annotations

import typer

from chatcli_finetune.rl.args import MAX_G, MIN_G, TOP_LAYERS, RLArgs

_O = typer.Option
_D = RLArgs(kind="rl", data="", out="")  # the defaults, for the help texts

PromptsArg = typer.Argument(..., metavar="PROMPTS", help='JSONL prompts, as for \'chatcli rank generate\': '
                            '{"prompt": TEXT} or {"messages": [...]} per line.', show_default=False)  # fmt: skip
RewardOpt = _O(..., "--reward", "-r", help="The grader: a reward model folder ('chatcli finetune reward --out DIR'), "
               "rule:max-words=N, rule:contains=WORD, rule:regex=PATTERN, or a plugin grader's NAME.", show_default=False)  # fmt: skip
GroupOpt = _O(None, "--group-size", "-G", help=f"Answers sampled per prompt, compared with each other ({MIN_G} to {MAX_G}; "
              f"default {_D.group_size}).", show_default=False)  # fmt: skip
MaxNewOpt = _O(None, "--max-new-tokens", help=f"Longest sampled answer (default {_D.max_new_tokens}).", show_default=False)
TemperatureOpt = _O(None, "--temperature", "-t", help=f"Sampling temperature (default {_D.temperature:g}: the policy itself).",
                    show_default=False)  # fmt: skip
BetaOpt = _O(None, "--beta", help=f"Weight of the KL penalty to the base model (default {_D.beta:g}).", show_default=False)
LrOpt = _O(None, "--lr", help=f"Learning rate (default {_D.lr:g}).", show_default=False)
EpochsOpt = _O(None, "--epochs", help=f"Passes over the prompts (ignored with --max-steps; default {_D.epochs:g}).",
               show_default=False)  # fmt: skip
ScheduleOpt = _O(None, "--schedule", help=f"constant, linear or cosine (default {_D.schedule}).", show_default=False)
BatchOpt = _O(None, "--batch-size", help=f"Prompts per micro-batch, each with G answers (default {_D.batch_size}).",
              show_default=False)  # fmt: skip
DropoutOpt = _O(None, "--dropout", help=f"LoRA dropout (default {_D.dropout:g}).", show_default=False)
RankOpt = _O(None, "--rank", help=f"LoRA rank r (default {_D.rank}).", show_default=False)
AlphaOpt = _O(None, "--alpha", help=f"LoRA alpha (default {_D.alpha:g}).", show_default=False)
TargetsOpt = _O(None, "--targets", help=f"all-linear or a comma list of q_proj,...,down_proj (default {_D.targets}).",
                show_default=False)  # fmt: skip
LayersOpt = _O(None, "--layers", help=f"Layers to adapt: e.g. 0-5,9, last:4 or all (default: the last {TOP_LAYERS}).",
               show_default=False)  # fmt: skip
SaveEveryOpt = _O(None, "--save-every", help=f"Write a checkpoint every N steps (default {_D.save_every}).", show_default=False)
