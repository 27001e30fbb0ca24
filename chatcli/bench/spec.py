"""What one bench run measures: the typed settings every worker receives as JSON.

The parent process builds one :class:`BenchSpec` from the command line, checks it
against the model's context, and passes it to each worker subprocess on its
command line; a worker rebuilds it with :meth:`BenchSpec.from_json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

# transformers: its `generate`; transformers-loop: a plain KV-cache greedy loop (the fair decode baseline).
SYSTEMS = ("chatcli", "transformers", "transformers-loop", "llama.cpp")
BASELINES = SYSTEMS[1:]
# Figure groups, in the order they run; each group is one worker process per system. The
# whole-process start runs after the workers, whose runs have warmed the page cache for it.
GROUPS = ("prefill", "decode", "compile", "turns", "candidates", "adapters", "train", "start", "bandwidth")
# Measured only when asked: train (long runs, the LoRA training of chatcli.bench.train) by --only;
# compile (a build on an empty cache, then a load, chatcli.bench.compile_group) by --compile or --only.
OPT_IN = ("train", "compile")
DEFAULT_GROUPS = tuple(g for g in GROUPS if g not in OPT_IN)


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does (issue 8's sizes by default)."""

    prompt_tokens: int = 512  # prefill
    decode_tokens: int = 128  # decode, greedy
    turns: int = 10  # time to first token on turn 1 and on the last turn
    turn_answer_tokens: int = 8  # answer length of each turn (the history grows by it)
    candidates: int = 8  # N candidates batched vs one after another
    candidate_tokens: int = 16
    adapter_rank: int = 16
    adapter_tokens: int = 48  # decode length of the adapter figures
    adapter_loads: int = 5  # timed adapter loads (after one warm-up load)
    bandwidth_mb: int = 512  # the tensor summed for the read bandwidth (well past the caches)
    short_turns: bool = False  # quick mode: short user turns, so ten fit a tiny model's context
    # Training (--only train): examples (DPO: pairs) per optimizer step and tokens of every row. Half the
    # fine-tuning default batch of 4: the default model's DPO step at 4 x 2 x 256 peaks near 9 GB and the
    # group should end in a couple of minutes on 2 cores.
    train_batch: int = 2
    train_tokens: int = 256

    def needed_context(self, turn_tokens: int = 0) -> int:
        """The longest sequence a figure runs (turn_tokens: the conversation's estimate)."""
        return max(self.prompt_tokens + 1, self.decode_tokens + 64, turn_tokens, self.train_tokens)


QUICK = Sizes(
    prompt_tokens=48, decode_tokens=12, turns=10, turn_answer_tokens=2, candidates=8, candidate_tokens=4,
    adapter_rank=16, adapter_tokens=6, adapter_loads=2, bandwidth_mb=16, short_turns=True, train_batch=2,
    train_tokens=32,
)  # fmt: skip


@dataclass(frozen=True)
class BenchSpec:
    model: str  # what the person gave (a name, a directory, ...), passed as-is to `chatcli generate`
    path: str  # the resolved checkpoint directory every worker loads
    dtype: str = "float32"
    threads: int | None = None  # torch threads in every worker (None: torch's default)
    quantize: str | None = None  # chatcli only; None when not asked or not available
    repeats: int = 3  # measured runs per figure, after a warm-up
    quick: bool = False
    sizes: Sizes = field(default_factory=Sizes)
    groups: tuple[str, ...] = DEFAULT_GROUPS
    systems: tuple[str, ...] = ("chatcli",)
    gguf: str | None = None  # for llama.cpp
    adapter_dir: str | None = None  # the rank-R adapter the adapter figures load
    # chatcli decodes through the compiled step, as a person's commands do for float32, int8, int4 and bfloat16 once its package
    # is built (chatcli.engine.compile_build); build_spec decides (--eager, the `compile` setting).
    compiled: bool = False

    def with_(self, **changes) -> "BenchSpec":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "BenchSpec":
        d = json.loads(text)
        d["sizes"] = Sizes(**d["sizes"])
        d["groups"] = tuple(d["groups"])
        d["systems"] = tuple(d["systems"])
        return cls(**d)
