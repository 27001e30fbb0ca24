"""The figures of issue 8: id, label, unit and which way is better.

Every row of the table and every entry of ``--json``'s ``figures`` is one of these.
``ratio`` is always oriented so that > 1 means chatcli is better (faster, or less
memory): a rate is chatcli / baseline, a time or a size is baseline / chatcli.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.bench.spec import Sizes


@dataclass(frozen=True)
class Figure:
    id: str
    label: str
    unit: str
    higher_is_better: bool
    group: str  # the worker group that measures it ("*": every worker)

    def ratio(self, chatcli: float, baseline: float) -> float:
        """> 1: chatcli better."""
        return chatcli / baseline if self.higher_is_better else baseline / chatcli


def figures(s: Sizes) -> list[Figure]:
    """All figures, in table order, labelled with this run's sizes."""
    n, t = s.candidates, s.turns
    return [
        Figure("load_s", "model load (s)", "s", False, "*"),
        Figure("start_s", "process start to first token (s)", "s", False, "start"),
        Figure("prefill_tps", f"prefill tok/s ({s.prompt_tokens}-token prompt)", "tok/s", True, "prefill"),
        Figure("decode_tps", f"decode tok/s ({s.decode_tokens} tokens, greedy)", "tok/s", True, "decode"),
        # chatcli only: 1 / decode tok/s times the share of a profiled step outside the product kernels
        # (chatcli_worker._outside_share: both halves of the share from the same profiled steps)
        Figure("decode_outside_ms", "decode: per-token time outside the matrix products (ms)", "ms", False, "decode"),
        # chatcli only, with --compile (chatcli.bench.compile_group): eager and compiled in one worker, interleaved
        Figure("decode_eager_tps", f"decode tok/s, eager step ({s.decode_tokens} tokens)", "tok/s", True, "compile"),
        Figure("decode_compiled_tps", "decode tok/s, --compile step", "tok/s", True, "compile"),
        Figure("compile_cold_s", "--compile: build time, empty cache (s)", "s", False, "compile"),
        Figure("compile_warm_s", "--compile: load time, package on disk (s)", "s", False, "compile"),
        Figure("ttft_first_s", "time to first token, turn 1 (s)", "s", False, "turns"),
        Figure("ttft_last_s", f"time to first token, turn {t} (s)", "s", False, "turns"),
        Figure("batch_tps", f"{n} candidates in one batch (tok/s)", "tok/s", True, "candidates"),
        Figure("sequential_tps", f"{n} candidates one after another (tok/s)", "tok/s", True, "candidates"),
        Figure("adapter_load_ms", f"adapter load, rank {s.adapter_rank}, all linear (ms)", "ms", False, "adapters"),
        Figure("adapter_none_tps", f"decode, no adapter ({s.adapter_tokens} tokens, tok/s)", "tok/s", True, "adapters"),
        Figure("adapter_unmerged_tps", "decode, adapter unmerged (tok/s)", "tok/s", True, "adapters"),
        Figure("adapter_merged_tps", "decode, adapter merged (tok/s)", "tok/s", True, "adapters"),
        Figure("peak_rss_mb", "peak RSS, whole start-to-first-token process (MB)", "MB", False, "start"),
        *_train(s),
    ]


def _train(s: Sizes) -> list[Figure]:
    """LoRA training (chatcli.bench.train): tokens/s of a step = the batch's tokens / the step's seconds."""
    b, n = s.train_batch, s.train_tokens
    return [
        Figure("train_sft_tps", f"SFT training tok/s ({b} x {n} tokens a step)", "tok/s", True, "train"),
        Figure("train_dpo_tps", f"DPO training tok/s ({b} pairs x 2 x {n} tokens a step)", "tok/s", True, "train"),
        Figure("train_sft_rss_mb", "SFT training peak RSS (MB)", "MB", False, "train"),
        Figure("train_dpo_rss_mb", "DPO training peak RSS (MB)", "MB", False, "train"),
    ]
