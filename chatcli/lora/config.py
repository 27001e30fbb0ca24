"""PEFT's ``adapter_config.json`` as a typed value, and which modules it selects.

:class:`AdapterConfig` honours what changes the maths: ``r``, ``lora_alpha``,
``use_rslora``, ``rank_pattern`` / ``alpha_pattern`` (regexes matched against the
end of a module name, as PEFT does), ``target_modules`` (list of name suffixes, a
regex matched against the whole name, or ``all-linear``), ``exclude_modules``,
``layers_to_transform`` / ``layers_pattern``, and ``modules_to_save`` for
``lm_head`` / ``embed_tokens`` (and, for a ``SEQ_CLS`` reward model, its scalar
``score`` head). Options that change the forward in ways chatcli does not
implement (DoRA, non-LoRA PEFT types, LoRA bias, layer replication, ...) are
refused by name; training-only options are ignored. :meth:`AdapterConfig.targets`
mirrors ``peft.tuners.tuners_utils.check_target_module_exists`` and
:meth:`AdapterConfig.rank_alpha` PEFT's ``get_pattern_key``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chatcli.lora.validate import AdapterError

# modules_to_save entry (as PEFT configs spell it) -> the model's module name.
SAVED_MODULES: dict[str, str] = {
    "lm_head": "lm_head",
    "embed_tokens": "model.embed_tokens",
    "model.embed_tokens": "model.embed_tokens",
}

# Sequence-classification heads (PEFT task_type SEQ_CLS, listed in modules_to_save): a reward
# model's scalar ``score`` head. Not part of the LM forward: kept in ``LoRAAdapter.heads`` for scoring.
HEAD_MODULES = ("score",)
SEQ_CLS = "SEQ_CLS"

# PEFT's default targets when target_modules is null (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGETS = ["q_proj", "v_proj"]

# Set to anything but these defaults, each of these changes the forward in a way chatcli does
# not implement: refuse by name rather than silently compute something else.
_REFUSED: dict[str, tuple[Any, str]] = {
    "use_dora": (False, "DoRA (use_dora)"),
    "lora_bias": (False, "LoRA bias (lora_bias)"),
    "bias": ("none", "trained base biases (bias)"),
    "layer_replication": (None, "layer replication (layer_replication)"),
    "target_parameters": (None, "LoRA on parameters (target_parameters)"),
    "trainable_token_indices": (None, "trainable tokens (trainable_token_indices)"),
    "alora_invocation_tokens": (None, "activated LoRA (alora_invocation_tokens)"),
    "use_qalora": (False, "QA-LoRA (use_qalora)"),
    "use_bdlora": (None, "block-diagonal LoRA (use_bdlora)"),
    "arrow_config": (None, "Arrow routing (arrow_config)"),
    "kasa_config": (None, "KaSA (kasa_config)"),
    "velora_config": (None, "VeLoRA (velora_config)"),
    "monteclora_config": (None, "MonteCLoRA (monteclora_config)"),
}


@dataclass(frozen=True)
class AdapterConfig:
    r: int = 8
    lora_alpha: float = 8
    use_rslora: bool = False
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: list[str] = field(default_factory=list)
    base_model_name_or_path: str | None = None
    task_type: str | None = "CAUSAL_LM"
    heads: list[str] = field(default_factory=list)  # SEQ_CLS heads (``score``) among modules_to_save

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "adapter_config.json") -> "AdapterConfig":
        """Parse a PEFT config dict; unknown keys are ignored, unsupported features refused."""
        peft_type = str(d.get("peft_type") or "LORA").upper()
        if peft_type != "LORA":
            raise AdapterError(f"{source}: this is a PEFT {peft_type} adapter; chatcli loads LoRA adapters only")
        for key, (default, label) in _REFUSED.items():
            value = d.get(key, default)
            if value not in (default, None, False, [], {}):
                raise AdapterError(f"{source}: {label} is not supported by chatcli; use a plain LoRA adapter")
        saved = d.get("modules_to_save") or []
        if isinstance(saved, str):
            saved = [saved]
        heads = [m for m in saved if m in HEAD_MODULES] if str(d.get("task_type") or "").upper() == SEQ_CLS else []
        saved = [m for m in saved if m not in heads]
        unsupported = [m for m in saved if m not in SAVED_MODULES]
        if unsupported:
            raise AdapterError(
                f"{source}: modules_to_save {unsupported[0]!r} is not supported (only lm_head and embed_tokens); "
                "a classification or reward head needs its own loader"
            )
        try:
            r = int(d.get("r", 8))
            alpha = float(d.get("lora_alpha", 8))
            rank_pattern = {str(k): int(v) for k, v in (d.get("rank_pattern") or {}).items()}
            alpha_pattern = {str(k): float(v) for k, v in (d.get("alpha_pattern") or {}).items()}
            layers = d.get("layers_to_transform")
            if layers is not None:
                layers = int(layers) if isinstance(layers, (int, float)) else [int(i) for i in layers]
        except (TypeError, ValueError) as e:
            raise AdapterError(f"{source}: a malformed number in r, lora_alpha, patterns or layers ({e})") from None
        if r < 1 or any(v < 1 for v in rank_pattern.values()):
            raise AdapterError(f"{source}: r must be a positive integer")
        if not all(math.isfinite(a) for a in [alpha, *alpha_pattern.values()]):
            raise AdapterError(f"{source}: lora_alpha must be finite")
        for pattern in [*rank_pattern, *alpha_pattern]:
            _check_regex(pattern, source)
        targets = d.get("target_modules")
        if isinstance(targets, str):
            if targets.lower() != "all-linear":
                _check_regex(targets, source)
        elif targets is not None:
            targets = [str(t) for t in targets]
        exclude = d.get("exclude_modules")
        if isinstance(exclude, str):
            _check_regex(exclude, source)
        elif exclude is not None:
            exclude = [str(t) for t in exclude]
        lp = d.get("layers_pattern")
        return cls(
            r=r,
            lora_alpha=alpha,
            use_rslora=bool(d.get("use_rslora", False)),
            target_modules=targets,
            exclude_modules=exclude,
            layers_to_transform=layers,
            layers_pattern=[lp] if isinstance(lp, str) and lp else (list(lp) if lp else None),
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            modules_to_save=list(saved),
            base_model_name_or_path=d.get("base_model_name_or_path"),
            task_type=d.get("task_type"),
            heads=heads,
        )

    def with_linear_names(self, linear_names: Iterable[str]) -> "AdapterConfig":
        """Resolve ``all-linear`` (every linear layer but the output head) and a null target list."""
        t = self.target_modules
        if isinstance(t, str) and t.lower() == "all-linear":
            return replace(self, target_modules=sorted(n for n in linear_names if n != "lm_head"))
        if t is None:
            return replace(self, target_modules=list(DEFAULT_TARGETS))
        return self

    def targets(self, key: str) -> bool:
        """Does the config select module ``key``? (PEFT's check_target_module_exists.)"""
        ex = self.exclude_modules
        if ex:
            if isinstance(ex, str):
                if re.fullmatch(ex, key):
                    return False
            elif key in ex or any(key.endswith(f".{e}") for e in ex):
                return False
        if any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in self.modules_to_save):
            return False
        t = self.target_modules
        if t is None:
            return False
        if isinstance(t, str):
            return re.fullmatch(t, key) is not None
        if key in t:
            return True  # an exact name is taken as is (layers_to_transform does not apply, as in PEFT)
        if not any(key.endswith(f".{name}") for name in t):
            return False
        layers = self.layers_to_transform
        if layers is None or layers == []:
            return True
        match = None
        if not self.layers_pattern:
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
        else:
            for pattern in self.layers_pattern:
                match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
                if match is not None:
                    break
        if match is None:
            return False
        idx = int(match.group("idx"))
        return idx == layers if isinstance(layers, int) else idx in layers

    def rank_alpha(self, key: str) -> tuple[int, float]:
        """(r, alpha) of module ``key``: the first matching rank/alpha pattern, else the defaults."""
        r = next((v for k, v in self.rank_pattern.items() if re.match(rf"(.*\.)?({k})$", key)), self.r)
        alpha = next((v for k, v in self.alpha_pattern.items() if re.match(rf"(.*\.)?({k})$", key)), self.lora_alpha)
        return r, alpha

    def to_dict(self) -> dict[str, Any]:
        """A PEFT ``adapter_config.json`` (PEFT fills the training-only fields with its defaults)."""
        alpha = self.lora_alpha
        return {
            "peft_type": "LORA",
            "task_type": self.task_type,
            "base_model_name_or_path": self.base_model_name_or_path,
            "r": self.r,
            "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
            "use_rslora": self.use_rslora,
            "target_modules": self.target_modules,
            "exclude_modules": self.exclude_modules,
            "layers_to_transform": self.layers_to_transform,
            "layers_pattern": self.layers_pattern,
            "rank_pattern": dict(self.rank_pattern),
            "alpha_pattern": {k: int(v) if float(v).is_integer() else v for k, v in self.alpha_pattern.items()},
            "modules_to_save": [*self.modules_to_save, *self.heads] or None,
            "lora_dropout": 0.0,
            "bias": "none",
            "use_dora": False,
            "fan_in_fan_out": False,
            "init_lora_weights": True,
            "inference_mode": True,
        }


def _check_regex(pattern: str, source: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise AdapterError(f"{source}: {pattern!r} is not a valid regular expression ({e})") from None
