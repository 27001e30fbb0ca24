"""The model shapes ``chatcli bench --shape`` measures: real architectures, random weights.

Each :class:`Shape` is the architecture part of a published ``config.json`` (hidden
size, layers, heads, KV heads, SwiGLU width, vocabulary, tied head, RoPE, q/k/v bias
through ``model_type``), copied from the public Hugging Face files named in
``source``. Nothing is downloaded: the bench builds a checkpoint of the same shape
with random weights (:mod:`.random_weights`), so every matrix product, cache entry and
head row costs what it costs in the real model.

Hidden shapes (``tiny-*``) are a few hundred kilobytes: the tests run the whole
``--shape`` path on them; they are accepted by ``--shape`` but not advertised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcli.errors import UsageError


@dataclass(frozen=True)
class Shape:
    name: str  # what --shape takes
    source: str  # the public config.json the numbers come from
    config: dict[str, Any] = field(default_factory=dict)  # config.json without the token ids
    hidden: bool = False  # test shapes: accepted, not listed

    def param_count(self) -> int:
        """Parameters of the model (a tied head counted once), from chatcli's own module shapes."""
        import math

        return sum(math.prod(s) for s in checkpoint_shapes(self.config).values())


def checkpoint_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensors a checkpoint of ``config`` holds, with their shapes: what chatcli's loader expects."""
    from chatcli.hub.checkpoint import meta_model
    from chatcli.model.config import ModelConfig

    return meta_model(ModelConfig.from_dict(config)).checkpoint_keys()


_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "attention_dropout": 0.0, "initializer_range": 0.02, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "max_position_embeddings": 32768, "sliding_window": 32768, "max_window_layers": 21,
    "use_sliding_window": False, "use_cache": True, "torch_dtype": "bfloat16", "vocab_size": 151936,
    "tie_word_embeddings": True,
}  # fmt: skip

SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("qwen2.5-0.5b", "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json", {
            **_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "max_window_layers": 21,
        }),  # fmt: skip
        Shape("llama-3.2-1b", "https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct/blob/main/config.json", {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1,
            "initializer_range": 0.02, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
            "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "max_position_embeddings": 131072, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
            "use_cache": True, "vocab_size": 128256,
        }),  # fmt: skip
        Shape("qwen2.5-1.5b", "https://huggingface.co/Qwen/Qwen2.5-1.5B-Instruct/blob/main/config.json", {
            **_QWEN2, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "max_window_layers": 21,
        }),  # fmt: skip
        # Test shapes: the same families and features (q/k/v bias; Llama-3 RoPE, tied head), tiny.
        Shape("tiny-qwen2", "tests", {
            **_QWEN2, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "sliding_window": 512, "max_window_layers": 2, "vocab_size": 1024, "tie_word_embeddings": False,
        }, hidden=True),  # fmt: skip
        Shape("tiny-llama", "tests", {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 3, "num_attention_heads": 6,
            "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 64, "rope_type": "llama3"},
            "max_position_embeddings": 512, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
            "vocab_size": 2048,
        }, hidden=True),  # fmt: skip
    )
}

PUBLIC = tuple(name for name, s in SHAPES.items() if not s.hidden)


def parse_shapes(text: str) -> list[Shape]:
    """``--shape``'s comma-separated names, in order, each once; one-line UsageError for an unknown one."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SHAPES]
    if unknown or not names:
        raise UsageError(f"unknown --shape {(unknown or [text])[0]!r}: use some of {','.join(PUBLIC)}")
    return [SHAPES[n] for n in names]
