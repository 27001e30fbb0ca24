"""One answer's clock: when it started, when its first and last tokens came, and the decode speed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class AnswerClock:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now

    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    def rate(self, n: int) -> float | None:
        # Decode speed after the first token: n - 1 tokens over the time since it.
        if n < 2 or self.first is None or self.last is None or self.last <= self.first:
            return None
        return (n - 1) / (self.last - self.first)
