"""PEFT's ``adapter_config.json`` as a typed value, and which modules it selects.

:class:`AdapterConfig` honours what changes the maths: ``r``, ``lora_alpha``,
``use_rslora``, ``rank_pattern`` / ``alpha_pattern`` (regexes matched against the
end of a module name, as PEFT does), ``target_modules`` (list of name suffixes, a
regex matched against the whole name, or ``all-linear``), ``exclude_modules``,
``layers_to_transform`` / ``layers_pattern``, and ``modules_to_save`` for
``lm_head`` / ``embed_tokens`` (and, for a ``SEQ_CLS`` reward model, its scalar
``score`` head). Options that change the forward in ways chatcli does not
implement (DoRA, non-LoRA PEFT types, LoRA bias, layer replication, ...) are
refused by name; training-only options are ignored.

Every field is type-checked against what PEFT writes (``r: Infinity``,
``target_modules: 5`` or ``modules_to_save: [["lm_head"]]`` are one line each, never a
traceback), and the combinations PEFT's ``LoraConfig`` refuses are refused the same
way. :meth:`AdapterConfig.matcher` gives the module selection
(:mod:`chatcli.lora.patterns`: PEFT's rules, every regex time-bounded).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chatcli.lora.patterns import REGEX_BUDGET_S, Matcher, check_pattern
from chatcli.lora.validate import AdapterError

MAX_INT = 2**31 - 1  # ranks and layer indices beyond this are not real (and would print as 300 digits)

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
    revision: str | None = None  # the base's Hub revision (PEFT loads the base at it)
    # chatcli's own record of the base (its name for it, the weights' sha256, how they were made),
    # under the "chatcli" key: PEFT ignores the key (with a warning that names it)
    base_record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "adapter_config.json") -> "AdapterConfig":
        """Parse a PEFT config dict; unknown keys are ignored, unsupported features refused, every
        field type-checked (a wrong type is one :class:`AdapterError` naming the field)."""
        f = _Fields(d, source)
        peft_type = (f.optional_str("peft_type") or "LORA").upper()
        if peft_type != "LORA":
            raise AdapterError(f"{source}: this is a PEFT {peft_type} adapter; chatcli loads LoRA adapters only")
        for key, (default, label) in _REFUSED.items():
            value = d.get(key, default)
            if value not in (default, None, False, [], {}):
                raise AdapterError(f"{source}: {label} is not supported by chatcli; use a plain LoRA adapter")
        task_type = f.optional_str("task_type")
        saved = f.names("modules_to_save") or []
        heads = [m for m in saved if m in HEAD_MODULES] if (task_type or "").upper() == SEQ_CLS else []
        saved = [m for m in saved if m not in heads]
        unsupported = [m for m in saved if m not in SAVED_MODULES]
        if unsupported:
            raise AdapterError(
                f"{source}: modules_to_save {unsupported[0]!r} is not supported (only lm_head and embed_tokens); "
                "a classification or reward head needs its own loader"
            )
        r = f.rank("r", 8)
        alpha = f.number("lora_alpha", 8)
        rank_pattern = f.mapping("rank_pattern", _Fields.positive_rank, f"a positive integer (at most {MAX_INT})")
        alpha_pattern = f.mapping("alpha_pattern", _Fields.finite, "a finite number")
        layers = f.layers("layers_to_transform")
        layers_pattern = [p for p in f.names("layers_pattern") or [] if p] or None
        targets = f.names("target_modules", keep_str=True)
        exclude = f.names("exclude_modules", keep_str=True)
        if isinstance(targets, str):
            if targets.lower() != "all-linear":
                check_pattern(targets, "target_modules", source)
            # PEFT's LoraConfig refuses these combinations (__post_init__), all-linear included
            for name, value in (("layers_to_transform", layers), ("layers_pattern", layers_pattern)):
                if value is not None:
                    raise AdapterError(f"{source}: {name} cannot be used when target_modules is a string (PEFT refuses it)")
        if layers_pattern and layers is None:
            raise AdapterError(f"{source}: layers_pattern needs layers_to_transform (PEFT refuses it otherwise)")
        if isinstance(exclude, str):
            check_pattern(exclude, "exclude_modules", source)
        for field_name, patterns in (("rank_pattern", rank_pattern), ("alpha_pattern", alpha_pattern)):
            for pattern in patterns:
                check_pattern(pattern, field_name, source)
        for pattern in layers_pattern or []:
            check_pattern(pattern, "layers_pattern", source)
        return cls(
            r=r,
            lora_alpha=alpha,
            use_rslora=f.flag("use_rslora"),
            target_modules=targets,
            exclude_modules=exclude,
            layers_to_transform=layers,
            layers_pattern=layers_pattern,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            modules_to_save=list(saved),
            base_model_name_or_path=f.optional_str("base_model_name_or_path"),
            task_type=task_type,
            heads=heads,
            revision=f.optional_str("revision"),
            base_record=dict(d["chatcli"]) if isinstance(d.get("chatcli"), dict) else {},
        )

    def with_linear_names(self, linear_names: Iterable[str]) -> "AdapterConfig":
        """Resolve ``all-linear`` (every linear layer but the output head) and a null target list."""
        t = self.target_modules
        if isinstance(t, str) and t.lower() == "all-linear":
            return replace(self, target_modules=sorted(n for n in linear_names if n != "lm_head"))
        if t is None:
            return replace(self, target_modules=list(DEFAULT_TARGETS))
        return self

    def matcher(self, source: str, budget_s: float = REGEX_BUDGET_S, deadline: float | None = None) -> Matcher:
        """PEFT's module selection for this config, all regex work bounded by ``budget_s`` in total
        (or by the ``deadline`` of an earlier matcher of the same adapter).

        Without a model at hand (:meth:`with_linear_names` not applied), null means PEFT's
        default targets and ``all-linear`` selects every module but ``lm_head``."""
        targets = self.target_modules
        if targets is None:
            targets = list(DEFAULT_TARGETS)
        elif isinstance(targets, str) and targets.lower() == "all-linear":
            targets = r"(?!lm_head$).*"
        return Matcher(
            source=source, r=self.r, alpha=self.lora_alpha, target_modules=targets, exclude_modules=self.exclude_modules,
            modules_to_save=self.modules_to_save, layers_to_transform=self.layers_to_transform,
            layers_pattern=self.layers_pattern, rank_pattern=self.rank_pattern, alpha_pattern=self.alpha_pattern,
            budget_s=budget_s, deadline=deadline,
        )  # fmt: skip

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
            **({"revision": self.revision} if self.revision else {}),
            **({"chatcli": dict(self.base_record)} if self.base_record else {}),
        }


class _Fields:
    """Typed reads of one config dict: a value of the wrong type is one AdapterError naming the field.

    JSON gives ``Infinity``, ``1e400``, ``true`` or a nested list wherever a number or a
    name is expected; each reader accepts exactly the types PEFT writes, so nothing
    malformed reaches ``int()``/``float()`` or the matching code."""

    def __init__(self, d: Mapping[str, Any], source: str):
        self.d, self.source = d, source

    def bad(self, key: str, want: str) -> AdapterError:
        return AdapterError(f"{self.source}: {key} must be {want}, not {short_repr(self.d.get(key))}")

    def optional_str(self, key: str) -> str | None:
        value = self.d.get(key)
        if value is not None and not isinstance(value, str):
            raise self.bad(key, "a string or null")
        return value

    def flag(self, key: str) -> bool:
        value = self.d.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.bad(key, "true or false")
        return bool(value)

    @staticmethod
    def positive_rank(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INT else None

    @staticmethod
    def finite(v: Any) -> float | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            x = float(v)  # a 400-digit integer overflows here
        except OverflowError:
            return None
        return x if math.isfinite(x) else None

    def rank(self, key: str, default: int) -> int:
        value = self.d.get(key, default)
        r = self.positive_rank(value)
        if r is None:
            raise self.bad(key, f"a positive integer (at most {MAX_INT})")
        return r

    def number(self, key: str, default: float) -> float:
        x = self.finite(self.d.get(key, default))
        if x is None:
            raise self.bad(key, "a finite number")
        return x

    def mapping(self, key: str, check, want: str) -> dict:
        """null or an object of pattern -> value; ``check`` returns the value, or None when it is wrong."""
        value = self.d.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.bad(key, "an object mapping patterns to values")
        out = {}
        for k, v in value.items():
            checked = check(v)
            if not isinstance(k, str) or checked is None:
                raise AdapterError(f"{self.source}: {key}[{short_repr(k)}] must be {want}, not {short_repr(v)}")
            out[k] = checked
        return out

    def names(self, key: str, keep_str: bool = False) -> list[str] | str | None:
        """null, a list of strings, or one string (kept as is when ``keep_str``: a regex, or a list of one)."""
        value = self.d.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return value if keep_str else [value]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return list(value)
        raise self.bad(key, "a string or a list of strings")

    def layers(self, key: str) -> int | list[int] | None:
        value = self.d.get(key)
        if value is None:
            return None
        ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT  # noqa: E731
        if ok(value):
            return value
        if isinstance(value, list) and all(ok(v) for v in value):
            return list(value)
        raise self.bad(key, "a layer index or a list of layer indices (non-negative integers)")


def short_repr(value: Any) -> str:
    """A short, bounded repr for messages (reprlib stops at a few levels and a few dozen characters)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 3, 40, 40, 4, 4
    return r.repr(value)
