"""Sampling parameters: one typed, validated value shared by the CLI, the TUI and the API."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from chatcli.errors import UsageError

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 <= seed < 2**64; a larger one fails mid-answer


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    max_tokens: int = 512
    seed: int | None = None  # None: the engine picks one and reports it
    stop: tuple[str, ...] = field(default_factory=tuple)
    top_n: int = 5  # alternatives reported per step

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first invalid value."""

        def bad(name: str, value, rule: str) -> UsageError:
            return UsageError(f"invalid {name} {value!r}: {rule}")

        if not _finite(self.temperature) or self.temperature < 0:
            raise bad("temperature", self.temperature, "use a number >= 0 (0 = greedy)")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise bad("top_k", self.top_k, "use an integer >= 0 (0 = off)")
        if not _finite(self.top_p) or not (0 < self.top_p <= 1):
            raise bad("top_p", self.top_p, "use a number in (0, 1] (1 = off)")
        if not _finite(self.min_p) or not (0 <= self.min_p <= 1):
            raise bad("min_p", self.min_p, "use a number in [0, 1] (0 = off)")
        if not _finite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise bad("repetition_penalty", self.repetition_penalty, "use a number > 0 (1 = off)")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise bad("max_tokens", self.max_tokens, "use an integer >= 1")
        if self.seed is not None:
            check_seed(self.seed)
        if not isinstance(self.top_n, int) or self.top_n < 0:
            raise bad("top_n", self.top_n, "use an integer >= 0")
        if any(not s for s in self.stop):
            raise UsageError("invalid stop string '': stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes) -> "SamplingParams":
        return replace(self, **changes)

    def to_json(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` if it is an integer in [0, 2**64); else a :class:`UsageError` naming ``name``.

    Every command that takes ``--seed`` checks it here before anything loads.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise UsageError(f"invalid {name} {seed!r}: use an integer from 0 to 2**64 - 1")
    return seed


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
