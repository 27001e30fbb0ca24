"""Tiny random checkpoints built with transformers: the oracle the engine is tested against.

``make_tiny_checkpoint(dir, family)`` writes a complete Hugging Face model directory
(config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) for a few-hundred-kilobyte random model of one of the
supported families, with the tiny ChatML tokenizer of ``tests/tiny_tokenizer.py``.
Weights are re-drawn from a seeded generator with a large standard deviation so
that distributions are peaked and greedy continuations are not degenerate (a model
at HF's default init of 0.02 predicts nearly uniform logits and repeats one token).
``load_hf_oracle(dir)`` loads the same directory with transformers (float32, eval).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.tiny_tokenizer import write_tokenizer_files

BOS_ID = 1  # <|im_start|>
EOS_ID = 2  # <|im_end|>

FAMILIES = ("llama", "llama3", "mistral", "qwen2", "qwen3")

# Shared shape: hidden 64, 4 heads of 16, 2 kv heads (GQA), SwiGLU 128.
_BASE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=EOS_ID,
)

# What each family adds: the features the engine must reproduce.
_FAMILY = {
    # SmolLM2-like: tied embeddings, plain RoPE.
    "llama": dict(tie_word_embeddings=True, rope_theta=10000.0),
    # Llama-3 style frequency scaling; original context small so the scaling bites.
    "llama3": dict(
        tie_word_embeddings=False,
        rope_theta=500000.0,
        num_hidden_layers=3,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    # Mistral: a sliding window no shorter than the context, so it never matters.
    "mistral": dict(tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None),
    # Qwen2: q/k/v bias, untied head.
    "qwen2": dict(tie_word_embeddings=False, rope_theta=1000000.0, use_sliding_window=False),
    # Qwen3: per-head q/k RMSNorm, head_dim not equal to hidden/heads.
    "qwen3": dict(tie_word_embeddings=True, rope_theta=1000000.0, head_dim=32, use_sliding_window=False),
}


def _config_class(family: str):
    import transformers

    return {
        "llama": transformers.LlamaConfig,
        "llama3": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
    }[family]


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.25) -> None:
    """Re-draw every parameter from a seeded generator (tied weights once)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                # Norm gains near 1 but not 1, so a missed gain shows up in parity tests.
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
                p.copy_(noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(std * noise)


def make_tiny_checkpoint(out_dir: Path, family: str = "llama", seed: int = 0, **config_overrides) -> Path:
    """Write a tiny random HF checkpoint of ``family`` to ``out_dir``; return ``out_dir``.

    ``config_overrides`` go to the transformers config (e.g. ``num_hidden_layers=4``).
    The special key ``save_kwargs`` (a dict) is passed to ``save_pretrained``
    (e.g. ``{"max_shard_size": "100KB"}`` for a sharded checkpoint).
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if family not in _FAMILY:
        raise ValueError(f"unknown tiny family {family!r}; use one of {FAMILIES}")
    out_dir = Path(out_dir)
    save_kwargs = config_overrides.pop("save_kwargs", {})
    vocab_size = write_tokenizer_files(out_dir)
    kwargs = {**_BASE, **_FAMILY[family], "vocab_size": vocab_size, **config_overrides}
    config = _config_class(family)(**kwargs)
    torch.manual_seed(seed)  # transformers' own init, overwritten below, also draws
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomize(model, seed)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID
    )
    model.save_pretrained(out_dir, safe_serialization=True, **save_kwargs)

    # Make sure the ids are where a loader reads them, whatever the library version wrote.
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    gen_path = out_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    gen_path.write_text(json.dumps(gen, indent=2))
    return out_dir


def load_hf_oracle(model_dir: Path):
    """The transformers model for ``model_dir``: float32, eval mode, on CPU."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(Path(model_dir), dtype=torch.float32)
    return model.eval()
