"""What a run tells the person: the plan (parameters, predicted memory), progress, the summary.

Memory prediction has two parts, printed separately:

* the **rule of thumb** from the LoRA article (what the product teaches): the frozen
  model once, plus about ten times the trainable parameters (their gradients,
  AdamW's two moments and working copies), in bytes of their dtypes;
* the **activations** the rule leaves out, which dominate at ordinary batch sizes
  (:func:`activation_memory`): ``tokens × hidden × layers × ACT_FACTOR[dtype]`` plus
  ``tokens × vocab × 4 × LOGIT_COPIES[dtype]`` for the float32 log-probabilities (SFT
  and DPO; the reward model reads hidden states, no logits). ``tokens = rows ×
  the longest example`` (at most ``--max-len``; a batch is padded to its longest
  row), ``rows`` the batch size, doubled for DPO and the reward model (chosen +
  rejected rows). With ``--grad-checkpointing`` each layer keeps only its input
  (``dtype bytes`` instead of the factor) plus one layer's activations while it is
  recomputed.

The constants are measured, not derived (CPU, torch 2.13, all-linear rank-8 LoRA,
dropout 0.05, random weights at SmolLM2-135M's shape: hidden 576, MLP 1536, 30 layers,
vocab 49152; 3-step runs, batch 2/4/8 × max_len 128 and 2 × 256, with and without
checkpointing). The slope of peak RSS per token was 3.66 MB (float32), 2.47 MB
(bfloat16), 1.58 / 1.08 MB with checkpointing; solving the two cases per dtype for
the two unknowns gave ACT_FACTOR ≈ 135 / 90 bytes and LOGIT_COPIES ≈ 7.5 / 5.5
(logits, log-softmax output, and in backward its scatter, exp and result, the
slice's gradient). Measured again after issue 18's round 7 (batch 2 and 8 × 128 on the default
model): 2.17 / 1.56 MiB per token, 0.710 / 0.725 checkpointed, so 96 / 54 bytes and 3.15 / 3.5
copies (no dropout masks kept, and the log-prob's backward writes over the softmax it kept). The bytes autograd *saves* in the forward alone (saved-tensor
hooks, parameters excluded) were 121 / 82 per token·hidden·layer here and 111-115 in
float32 on the tiny test models (2 and 4 layers); the rest is backward's transients.
The reward model (no logits) keeps more per token and layer than the causal LM: its own
factor, measured the same way (reward runs on the default model, 3 steps, batch 2, 4 and 8 pairs × 127
tokens in float32, 2 and 8 in bfloat16, each in its own process, after issue 18's round 7): 2.08 MB per token in float32 (120 bytes per token·hidden·layer; the
batch 4 -> 8 slope agrees within 1 MB a pair) and 1.45 MB in bfloat16 (84). The first fit (1.5 × the SFT factor,
from 185 bytes measured before the dropout masks went) over-predicted float32 by ~25% once the
causal LM's glue was rewritten; why the reward path keeps more than the LM's layers is not
understood (its hidden states are read at each row's last token; allocator reuse is a guess).
Memory was linear in sequence length up to 256 (SDPA keeps no S×S matrix). Fewer
targets or no dropout need less (73 saved bytes in float32 without dropout), and
the estimate uses the longest example for every row: batches of shorter examples
need proportionally less, so it leans high.

The measured peak (process max RSS on CPU, which also counts the Python/torch
runtime and libraries, about 300 MB here; ``torch.cuda.max_memory_allocated`` on a
GPU) is shown beside the prediction at the end of the run.

Reporters: :class:`RichReporter` (a progress bar on stderr with loss, learning rate,
tokens/s and ETA), :class:`JsonReporter` (one metrics object per line on stdout, for
``--json`` and for the chat's background runs) and :class:`QuietReporter` (tests).
Besides the plan, the steps and the summary, each gets the settings chosen from the
data (:meth:`~QuietReporter.defaults`: ``{"event": "defaults", "lines": [...]}`` in
JSON) and the "what changed" report of a finished run (:meth:`~QuietReporter.what_changed`:
``{"event": "what_changed", "lines": [...], ...}``, just before the summary line).
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the trainer; the chat formats a background run's lines without it
    import torch

MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    kind: str
    model: str
    train_examples: int
    val_examples: int
    total_steps: int
    trainable: int
    total_params: int
    predicted_bytes: int  # rule_bytes + activation_bytes
    world_size: int = 1
    rule_bytes: int = 0  # the article's rule of thumb
    activation_bytes: int = 0  # activation estimate (activation_memory)

    @property
    def share(self) -> float:
        return 100.0 * self.trainable / max(1, self.total_params)

    def to_json(self) -> dict:
        return {"event": "plan", **self.__dict__, "trainable_percent": round(self.share, 4)}


def predicted_memory(frozen_params: int, frozen_bytes_per: int, trainable: int, trainable_bytes_per: int = 4) -> int:
    """The article's rule of thumb: frozen model once + ~10x the trainable parameters."""
    return frozen_params * frozen_bytes_per + 10 * trainable * trainable_bytes_per


# Peak bytes per token × hidden unit × layer, and float32 [tokens, vocab] copies at the
# peak (measured; see the module docstring).
# Issue 18 round 6: LoRA dropout no longer keeps a float32 mask per adapted layer for the backward pass
# (chatcli.model.training.dropout_mask), 36 bytes per token·hidden·layer less (ACT_FACTOR 135 -> 99).
# Issue 18 round 7, measured again (the default model, SFT, 3 steps, batch 2 and 8 x 128 tokens, each run
# in its own process, with and without checkpointing): float32 2.17 / 0.710 MiB per token, bfloat16
# 1.56 / 0.725, which the two-unknown fit turns into the factors 96 / 54 and 3.15 / 3.5 log-prob copies
# (7.5 / 5.5 before: the log-prob's backward now reuses its softmax in place, chatcli_finetune.losses.picked_logprob,
# and the head's gradient is no longer copied by a split of one). float16 is taken to be bfloat16.
ACT_FACTOR = {"float32": 96, "bfloat16": 54, "float16": 54}
LOGIT_COPIES = {"float32": 3.15, "bfloat16": 3.5, "float16": 3.5}
# The reward model's own factor (no logits; measured, see the module docstring).
REWARD_ACT_FACTOR = {"float32": 120, "bfloat16": 84, "float16": 84}


def activation_memory(kind: str, batch: int, max_len: int, hidden: int, layers: int, vocab: int, dtype: str,
                      grad_checkpointing: bool = False) -> int:  # fmt: skip
    """Estimated activation bytes of one micro-batch (forward kept for backward, plus log-probs)."""
    rows = batch * (1 if kind == "sft" else 2)  # DPO / reward: chosen + rejected rows
    tokens = rows * max_len
    factors = REWARD_ACT_FACTOR if kind == "reward" else ACT_FACTOR
    factor = factors.get(dtype, factors["float32"])
    if grad_checkpointing:
        itemsize = 4 if dtype == "float32" else 2
        per_token = hidden * (layers * itemsize + factor)  # layer inputs + one layer recomputed
    else:
        per_token = hidden * layers * factor
    copies = LOGIT_COPIES.get(dtype, LOGIT_COPIES["float32"])
    logits = 0 if kind == "reward" else int(tokens * vocab * 4 * copies)  # float32 log-softmax over the vocabulary
    return tokens * per_token + logits


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "process peak RSS"


def plan_lines(plan: dict) -> list[str]:
    """The trainable parameters and the predicted memory, from a plan's JSON (:meth:`Plan.to_json`)."""
    share = 100.0 * plan["trainable"] / max(1, plan["total_params"])
    return [
        f"trainable parameters: {plan['trainable']:,} of {plan['total_params']:,} ({share:.3f}%)",
        f"predicted memory: {plan['rule_bytes'] / MB:,.0f} MB rule of thumb (frozen model + ~10x trainable) "
        f"+ {plan['activation_bytes'] / MB:,.0f} MB activations = {plan['predicted_bytes'] / MB:,.0f} MB",
    ]


def memory_line(summary: dict) -> str:
    """The measured peak beside the prediction and its two parts."""
    runtime = " (RSS also counts the Python/torch runtime)" if "RSS" in summary.get("peak_memory_measure", "") else ""
    return (f"memory: measured peak {summary['peak_memory_mb']:,.0f} MB ({summary.get('peak_memory_measure', '')}) vs "
            f"predicted {summary['predicted_memory_mb']:,.0f} MB = rule of thumb "
            f"{summary.get('rule_of_thumb_mb', 0):,.0f} + activations {summary.get('activations_mb', 0):,.0f}" + runtime)  # fmt: skip


def _fmt_metrics(m: dict) -> str:
    parts = [f"loss {m['loss']:.4f}"]
    if "val_loss" in m:
        parts.append(f"val {m['val_loss']:.4f}")
    if "accuracy" in m:
        parts.append(f"acc {m['accuracy']:.2f}")
    if "reward" in m:  # rl: the step's mean reward and KL to the base model (bits/token)
        parts.append(f"reward {m['reward']:+.3f}  KL {m['kl']:.3f}")
    parts += [f"lr {m['lr']:.2e}", f"{m['tokens_per_s']:.0f} tok/s"]
    return "  ".join(parts)


class QuietReporter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[dict] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def plan(self, plan: Plan) -> None:
        self.lines.append(json.dumps(plan.to_json()))

    def defaults(self, lines: list[str]) -> None:
        """The settings chosen from the data, and why (nothing when every one was given)."""
        self.lines.extend(lines)

    def what_changed(self, report: dict) -> None:
        """The finished run's "what changed" report (:mod:`chatcli_finetune.what_changed`)."""
        from chatcli_finetune.what_changed import lines

        self.lines.extend(lines(report))

    def start(self, total: int, done: int) -> None:
        pass

    def step(self, m: dict) -> None:
        self.steps.append(m)

    def end(self, summary: dict, plot: str) -> None:
        self.lines.append(json.dumps(summary))

    def close(self) -> None:
        pass


class JsonReporter(QuietReporter):
    """Metrics as JSON lines on stdout; human messages on stderr."""

    def _emit(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def message(self, text: str) -> None:
        sys.stderr.write(f"chatcli: {text}\n")

    def plan(self, plan: Plan) -> None:
        self._emit(plan.to_json())

    def defaults(self, lines: list[str]) -> None:
        if lines:
            self._emit({"event": "defaults", "lines": lines})

    def what_changed(self, report: dict) -> None:
        from chatcli_finetune.what_changed import lines

        self._emit({"event": "what_changed", "lines": lines(report), **report})

    def step(self, m: dict) -> None:
        self._emit({"event": "step", **m})

    def end(self, summary: dict, plot: str) -> None:
        self._emit({"event": "summary", **summary})


class RichReporter(QuietReporter):
    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = None
        self.task = None
        self.report_lines: list[str] = []

    def message(self, text: str) -> None:
        self.console.print(f"chatcli: {text}", highlight=False, markup=False)

    def plan(self, p: Plan) -> None:
        c = self.console
        c.print(f"[bold]{p.kind}[/] on {p.model}: {p.train_examples} training / {p.val_examples} validation examples, "
                f"{p.total_steps} steps" + (f", {p.world_size} processes" if p.world_size > 1 else ""))  # fmt: skip
        for line in plan_lines(p.to_json()):
            c.print(line, highlight=False, markup=False)

    def defaults(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line, highlight=False, markup=False)

    def what_changed(self, report: dict) -> None:
        from chatcli_finetune.what_changed import lines

        self.report_lines = lines(report)  # printed last, under the summary

    def start(self, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def step(self, m: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=m["step"], info=_fmt_metrics(m))

    def end(self, summary: dict, plot: str) -> None:
        self.close()
        c = self.console
        if plot:
            c.print(plot, highlight=False, markup=False)
        if "peak_memory_mb" in summary and "predicted_memory_mb" in summary:
            c.print(memory_line(summary), highlight=False, markup=False)
        for k, v in summary.items():
            if k != "event":
                c.print(f"  {k}: {v}", highlight=False, markup=False)
        for line in self.report_lines:
            c.print(line, highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
