"""ModelConfig.from_dict: both config spellings, family feature flags, refusals by name."""

from __future__ import annotations

import json

import pytest

from chatcli.model.config import ModelConfig, RopeScaling
from chatcli.errors import ModelError

# The published SmolLM2-135M-Instruct config.json (classic spelling).
SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
    "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": True,
    "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9,
    "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
    "use_cache": True, "vocab_size": 49152,
}  # fmt: skip

LLAMA3_SCALING = {
    "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3",
}  # fmt: skip


def test_smollm2_config():
    c = ModelConfig.from_dict(SMOLLM2)
    assert (c.model_type, c.hidden_size, c.head_dim, c.num_kv_groups) == ("llama", 576, 64, 3)
    assert c.tie_word_embeddings and c.rope_scaling is None and c.rope_theta == 100000.0
    assert c.eos_token_id == (2,) and c.bos_token_id == 1 and c.pad_token_id == 2
    assert c.context_length == 8192 and c.torch_dtype == "bfloat16"
    assert not (c.attention_bias or c.o_proj_bias or c.qk_norm)


def test_both_rope_spellings_give_the_same_config():
    classic = {**SMOLLM2, "rope_theta": 500000.0, "rope_scaling": LLAMA3_SCALING}
    v5 = {k: v for k, v in classic.items() if k not in ("rope_theta", "rope_scaling")}
    v5["rope_parameters"] = {**LLAMA3_SCALING, "rope_theta": 500000.0}
    a, b = ModelConfig.from_dict(classic), ModelConfig.from_dict(v5)
    assert a == b
    assert a.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    legacy_type_key = {**SMOLLM2, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert ModelConfig.from_dict(legacy_type_key).rope_scaling == RopeScaling("linear", factor=2.0)


def test_family_feature_flags():
    base = {**SMOLLM2, "tie_word_embeddings": False}
    qwen2 = ModelConfig.from_dict({**base, "model_type": "qwen2", "attention_bias": False})
    assert (qwen2.attention_bias, qwen2.o_proj_bias, qwen2.qk_norm) == (True, False, False)
    qwen3 = ModelConfig.from_dict({**base, "model_type": "qwen3", "head_dim": 128})
    assert (qwen3.qk_norm, qwen3.head_dim, qwen3.attention_bias) == (True, 128, False)
    llama_bias = ModelConfig.from_dict({**base, "attention_bias": True, "mlp_bias": True})
    assert (llama_bias.attention_bias, llama_bias.o_proj_bias, llama_bias.mlp_bias) == (True, True, True)
    mistral = ModelConfig.from_dict({**base, "model_type": "mistral", "mlp_bias": True, "sliding_window": None})
    assert not (mistral.mlp_bias or mistral.attention_bias) and mistral.sliding_window is None


def test_sliding_window_caps_the_context_only_where_it_applies():
    mistral = {**SMOLLM2, "model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096}
    assert ModelConfig.from_dict(mistral).context_length == 4096
    assert ModelConfig.from_dict({**mistral, "sliding_window": 32768}).sliding_window is None
    qwen = {**SMOLLM2, "model_type": "qwen2", "max_position_embeddings": 32768, "sliding_window": 4096,
            "max_window_layers": 21}  # fmt: skip
    assert ModelConfig.from_dict({**qwen, "use_sliding_window": False}).context_length == 32768
    assert ModelConfig.from_dict({**qwen, "use_sliding_window": True}).context_length == 4096
    assert ModelConfig.from_dict({**qwen, "use_sliding_window": True, "max_window_layers": 30}).sliding_window is None
    full = {**qwen, "layer_types": ["full_attention"] * 30}
    assert ModelConfig.from_dict(full).sliding_window is None


@pytest.mark.parametrize(
    "change, match",
    [
        ({"model_type": "gpt_neox"}, "unsupported model_type 'gpt_neox': chatcli runs llama, mistral, qwen2, qwen3"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope_scaling type 'yarn'.*llama3"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "unsupported rope_scaling type 'dynamic'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks a valid 'low_freq_factor'"),
        ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
        ({"rope_interleaved": True}, "rope_interleaved"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({"num_key_value_heads": 4}, "not a multiple of num_key_value_heads 4"),
        ({"hidden_size": 577}, "not divisible"),
        ({"vocab_size": None}, "lacks vocab_size"),
        ({"num_hidden_layers": "30"}, "num_hidden_layers must be a positive integer"),
        ({"layer_types": ["chunked_attention"] * 30}, "unsupported layer_types"),
    ],
)
def test_unsupported_or_broken_configs_are_refused_by_name(change, match):
    with pytest.raises(ModelError, match=match) as err:
        ModelConfig.from_dict({**SMOLLM2, **change})
    assert "\n" not in err.value.message


def test_ids_are_normalised_and_unknown_keys_ignored():
    c = ModelConfig.from_dict({**SMOLLM2, "eos_token_id": [2, 0, 2], "something_new": {"x": 1}})
    assert c.eos_token_id == (2, 0)
    assert ModelConfig.from_dict({**SMOLLM2, "eos_token_id": None}).eos_token_id == ()


@pytest.mark.parametrize(
    "cfg",
    [
        SMOLLM2,
        {**SMOLLM2, "tie_word_embeddings": False, "rope_theta": 500000.0, "rope_scaling": LLAMA3_SCALING},
        {**SMOLLM2, "model_type": "qwen3", "head_dim": 128, "eos_token_id": [2, 0]},
        {**SMOLLM2, "model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096},
    ],
)
def test_to_dict_round_trips_through_transformers(cfg):
    import transformers

    c = ModelConfig.from_dict(cfg)
    d = json.loads(json.dumps(c.to_dict()))
    assert ModelConfig.from_dict(d) == c
    hf = transformers.AutoConfig.for_model(**d)  # the oracle reads it as the same architecture
    assert hf.model_type == c.model_type and hf.hidden_size == c.hidden_size
    assert ModelConfig.from_dict(hf.to_dict()) == c
