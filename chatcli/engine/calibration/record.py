"""What a calibration found: :class:`Calibration` (the choices, every measurement, the key) and its JSON form.

The JSON object (schema ``chatcli-calibration/1``) is what the cache file holds and what
``chatcli bench --calibrate --json`` prints::

    {"schema": "chatcli-calibration/1", "key": {...}, "choices": {...KernelChoices...},
     "measurements": [{"what": "decode", "candidate": "plain, 2 threads", "ms": 41.2,
                       "baseline": true, "chosen": false}, ...],
     "seconds": 3.1, "created": "2026-12-06T11:20:00+00:00", "load_per_core": 0.4}

``ms`` is milliseconds per decoded token (``decode``), per prompt of the calibration's length
(``prefill``) or per decoder layer's products (``int8 rows`` / ``int4 rows``). ``baseline`` marks
the candidate that is kept unless another is measurably faster; ``chosen`` what was kept.
``load_per_core`` is the machine's 1-minute load average per CPU when measuring began (null
where unknown): from :data:`BUSY_LOAD` on, other work shared the cores and the choices may be the
busy machine's (:attr:`Calibration.busy`; the automatic calibration measures again on a quiet load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatcli.model.kernel_choice import KernelChoices

SCHEMA = "chatcli-calibration/1"
# Load average per CPU from which a machine counts as busy: other work on every core (chatcli's own
# previous run on all cores leaves at most 1 per CPU in the 1-minute average).
BUSY_LOAD = 1.5


@dataclass(frozen=True)
class Measurement:
    what: str  # "decode", "prefill", "int8 rows", "int4 rows"
    candidate: str  # "plain, 2 threads", "kernel, 32 rows", ...
    ms: float
    baseline: bool = False
    chosen: bool = False

    def to_json(self) -> dict:
        return {"what": self.what, "candidate": self.candidate, "ms": round(self.ms, 4), "baseline": self.baseline,
                "chosen": self.chosen}  # fmt: skip

    @classmethod
    def from_json(cls, d: object) -> "Measurement":
        if not isinstance(d, dict) or set(d) != {"what", "candidate", "ms", "baseline", "chosen"}:
            raise ValueError("a measurement is an object with what, candidate, ms, baseline and chosen")
        what, cand, ms = d["what"], d["candidate"], d["ms"]
        if not isinstance(what, str) or not isinstance(cand, str) or isinstance(ms, bool) \
                or not isinstance(ms, (int, float)) or not math.isfinite(ms):
            raise ValueError("a measurement's what and candidate are strings and its ms a number")
        if not isinstance(d["baseline"], bool) or not isinstance(d["chosen"], bool):
            raise ValueError("a measurement's baseline and chosen are booleans")
        return cls(what, cand, float(ms), d["baseline"], d["chosen"])


@dataclass(frozen=True)
class Calibration:
    key: dict  # chatcli.engine.calibration.key.calibration_key
    choices: KernelChoices
    measurements: tuple[Measurement, ...]
    seconds: float  # how long measuring took
    created: str  # ISO 8601, UTC
    load_per_core: float | None = None  # the load average per CPU when it began (see the module docstring)

    @property
    def busy(self) -> bool:
        """Measured while other work kept every core busy (its thread choices may not hold on a quiet machine)."""
        return self.load_per_core is not None and self.load_per_core >= BUSY_LOAD

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "key": self.key, "choices": self.choices.to_json(),
                "measurements": [m.to_json() for m in self.measurements], "seconds": round(self.seconds, 3),
                "created": self.created,
                "load_per_core": None if self.load_per_core is None else round(self.load_per_core, 2)}  # fmt: skip

    @classmethod
    def from_json(cls, d: object) -> "Calibration":
        """From :meth:`to_json`'s object; ValueError when it is not one (any part wrong)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} object")
        key, seconds, created, rows = d.get("key"), d.get("seconds"), d.get("created"), d.get("measurements")
        if not isinstance(key, dict) or not isinstance(created, str) or not isinstance(rows, list):
            raise ValueError("a calibration has a key object, a created string and a measurements list")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError("a calibration's seconds is a number >= 0")
        load = d.get("load_per_core")
        if load is not None and (isinstance(load, bool) or not isinstance(load, (int, float)) or not load >= 0):
            raise ValueError("a calibration's load_per_core is null or a number >= 0")
        return cls(key, KernelChoices.from_json(d.get("choices")), tuple(Measurement.from_json(r) for r in rows),
                   float(seconds), created, None if load is None else float(load))  # fmt: skip
