"""The model's architecture as a typed value, read from a Hugging Face ``config.json``.

``ModelConfig.from_dict(d)`` accepts the config dict of a supported family
(``llama`` incl. Llama-3 RoPE scaling, ``mistral``, ``qwen2``, ``qwen3``), ignores
keys that do not change the maths, and raises :class:`ModelError` naming what is
supported for anything that would (another model type, another RoPE scaling,
another activation, interleaved RoPE, ...). Family differences are resolved here
into explicit feature flags (``attention_bias``, ``o_proj_bias``, ``qk_norm``), so
the model code never branches on ``model_type``.

Both config spellings are read: the classic ``rope_theta`` + ``rope_scaling`` of
published checkpoints and transformers 5's ``rope_parameters``.

A sliding window shorter than the context is not implemented as a mask; instead
``context_length`` is capped at the window, where full attention and windowed
attention are the same maths (Mistral-7B-v0.1 works, up to 4096 tokens).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chatcli.errors import ModelError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_SUPPORTED_ACTIVATIONS = ("silu", "swish")

_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling: ``linear`` (divide all frequencies) or ``llama3`` (by band)."""

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 8192  # llama3


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q/k/v projections
    o_proj_bias: bool = False  # bias on the attention output projection
    mlp_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    sliding_window: int | None = None  # only when it is shorter than max_position_embeddings
    torch_dtype: str | None = None  # the dtype the checkpoint was saved in
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = field(default_factory=tuple)
    pad_token_id: int | None = None

    @property
    def context_length(self) -> int:
        """The most positions (prompt + answer) the model can attend over correctly."""
        if self.sliding_window is not None:
            return min(self.max_position_embeddings, self.sliding_window)
        return self.max_position_embeddings

    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a ``config.json`` dict; raise :class:`ModelError` for what is not supported."""
        if not isinstance(d, dict):
            raise ModelError("config.json must hold a JSON object: re-download or re-convert the model")
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(
                f"unsupported model_type {model_type!r}: chatcli runs {', '.join(SUPPORTED_MODEL_TYPES)} "
                "models; pick a model of one of these families"
            )
        missing = [k for k in _REQUIRED if d.get(k) is None]
        if missing:
            raise ModelError(f"config.json lacks {', '.join(missing)}: the checkpoint is incomplete, re-download it")
        _refuse_unsupported_features(d)

        heads = _pos_int(d, "num_attention_heads")
        kv_heads = _pos_int(d, "num_key_value_heads") if d.get("num_key_value_heads") is not None else heads
        hidden = _pos_int(d, "hidden_size")
        head_dim = d.get("head_dim")
        if head_dim is None:
            if hidden % heads:
                raise ModelError(
                    f"hidden_size {hidden} is not divisible by num_attention_heads {heads} and config.json "
                    "gives no head_dim: the config is broken"
                )
            head_dim = hidden // heads
        head_dim = _as_pos_int("head_dim", head_dim)
        if heads % kv_heads:
            raise ModelError(
                f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}: the config is broken"
            )
        if head_dim % 2:
            raise ModelError(f"head_dim {head_dim} is odd; rotary embeddings need an even head_dim")

        rope_theta, rope_scaling = _read_rope(d)
        max_pos = _pos_int(d, "max_position_embeddings") if d.get("max_position_embeddings") else 2048
        attention_bias = bool(d.get("attention_bias", False))
        o_proj_bias = attention_bias
        if model_type == "qwen2":  # Qwen2 hard-codes q/k/v bias and no output bias
            attention_bias, o_proj_bias = True, False
        elif model_type == "mistral":  # Mistral has no bias anywhere
            attention_bias = o_proj_bias = False
        mlp_bias = bool(d.get("mlp_bias", False)) if model_type == "llama" else False

        return cls(
            model_type=model_type,
            vocab_size=_pos_int(d, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_pos_int(d, "intermediate_size"),
            num_hidden_layers=_pos_int(d, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(d.get("rms_norm_eps") or 1e-6),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=max_pos,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            o_proj_bias=o_proj_bias,
            mlp_bias=mlp_bias,
            qk_norm=model_type == "qwen3",
            sliding_window=_effective_window(d, model_type, max_pos),
            torch_dtype=d.get("torch_dtype") or d.get("dtype"),
            bos_token_id=_opt_int(d.get("bos_token_id")),
            eos_token_id=normalize_ids(d.get("eos_token_id")),
            pad_token_id=_opt_int(d.get("pad_token_id")),
        )

    def to_dict(self) -> dict[str, Any]:
        """A ``config.json`` dict (classic spelling) that both transformers and ``from_dict`` read back."""
        d = asdict(self)
        d.pop("o_proj_bias")
        d.pop("qk_norm")
        d["rope_scaling"] = asdict(self.rope_scaling) if self.rope_scaling else None
        if self.rope_scaling is not None and self.rope_scaling.rope_type == "linear":
            d["rope_scaling"] = {"rope_type": "linear", "factor": self.rope_scaling.factor}
        eos = list(self.eos_token_id)
        d["eos_token_id"] = eos[0] if len(eos) == 1 else (eos or None)
        d["hidden_act"] = "silu"
        d["architectures"] = [_ARCHITECTURES[self.model_type]]
        if self.sliding_window is None:
            d.pop("sliding_window")
            if self.model_type == "mistral":
                d["sliding_window"] = None
        elif self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = True
            d["max_window_layers"] = 0
        if self.torch_dtype is None:
            d.pop("torch_dtype")
        return d

    def with_(self, **changes) -> "ModelConfig":
        from dataclasses import replace

        return replace(self, **changes)


_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def normalize_ids(value: Any) -> tuple[int, ...]:
    """``None`` / an int / a list of ints -> a tuple of ints (order kept, duplicates dropped)."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[int] = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelError(f"token id {v!r} in config is not an integer: the config is broken")
        if v not in out:
            out.append(v)
    return tuple(out)


def _refuse_unsupported_features(d: dict[str, Any]) -> None:
    act = d.get("hidden_act", "silu")
    if act not in _SUPPORTED_ACTIVATIONS:
        raise ModelError(f"unsupported hidden_act {act!r}: chatcli supports SwiGLU MLPs with silu only")
    if d.get("rope_interleaved"):
        raise ModelError("unsupported rope_interleaved=true: chatcli implements the rotate-half RoPE of HF llama only")
    factor = d.get("partial_rotary_factor", 1.0)
    params = d.get("rope_parameters")
    if isinstance(params, dict):
        factor = params.get("partial_rotary_factor", factor)
    if factor not in (None, 1, 1.0):
        raise ModelError(f"unsupported partial_rotary_factor {factor}: chatcli rotates the full head dimension only")
    layer_types = d.get("layer_types")
    if isinstance(layer_types, list) and any(t not in ("full_attention", "sliding_attention") for t in layer_types):
        odd = sorted({t for t in layer_types if t not in ("full_attention", "sliding_attention")})
        raise ModelError(f"unsupported layer_types {odd}: chatcli supports full and sliding attention layers")


def _read_rope(d: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from either ``rope_theta``+``rope_scaling`` or ``rope_parameters``."""
    params = d.get("rope_parameters")
    scaling = d.get("rope_scaling")
    theta = d.get("rope_theta")
    if isinstance(params, dict):
        if "rope_theta" in params:
            theta = params["rope_theta"]
        if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
            scaling = params
    theta = float(theta) if theta is not None else 10000.0
    if theta <= 0:
        raise ModelError(f"rope_theta {theta} must be > 0: the config is broken")
    if not scaling:
        return theta, None
    if not isinstance(scaling, dict):
        raise ModelError(f"rope_scaling {scaling!r} is not an object: the config is broken")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in SUPPORTED_ROPE_TYPES:
        raise ModelError(
            f"unsupported rope_scaling type {kind!r}: chatcli supports {', '.join(SUPPORTED_ROPE_TYPES)}; "
            "pick a model without it"
        )
    try:
        factor = float(scaling["factor"])
        if kind == "linear":
            return theta, RopeScaling("linear", factor=factor)
        return theta, RopeScaling(
            "llama3",
            factor=factor,
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"rope_scaling of type {kind!r} lacks a valid {e}: the config is broken") from None


def _effective_window(d: dict[str, Any], model_type: str, max_pos: int) -> int | None:
    """The sliding window that actually applies, or None (full attention everywhere)."""
    window = d.get("sliding_window")
    if window is None or model_type == "llama":
        return None
    if model_type in ("qwen2", "qwen3"):
        layer_types = d.get("layer_types")
        if isinstance(layer_types, list):
            if "sliding_attention" not in layer_types:
                return None
        elif not d.get("use_sliding_window", False):
            return None
        elif d.get("max_window_layers", 0) >= d.get("num_hidden_layers", 0):
            return None  # no layer index reaches the windowed layers
    window = _as_pos_int("sliding_window", window)
    return window if window < max_pos else None


def _pos_int(d: dict[str, Any], key: str) -> int:
    return _as_pos_int(key, d.get(key))


def _as_pos_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ModelError(f"config.json {key} must be a positive integer, got {v!r}: the config is broken")
    return v


def _opt_int(v: Any) -> int | None:
    if isinstance(v, list):  # some configs give a list for bos/pad; the first is the one used
        v = v[0] if v else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None
