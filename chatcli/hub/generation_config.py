"""A model's own sampling defaults: its ``generation_config.json``, over its catalog recommendation.

vLLM answers with the sampling values a model ships in ``generation_config.json``
unless a request says otherwise; chatcli does the same. :func:`read_generation_defaults`
reads the keys that are present among ``temperature``, ``top_p``, ``top_k``, ``min_p`` and
``repetition_penalty`` (never the library's defaults for absent keys), and an explicit
``"do_sample": false`` means greedy decoding, as transformers reads it. The catalog's
recommendation for a known model (e.g. the model card's temperature 0.2 / top-p 0.9 for
SmolLM2) lies under the file's values: a key the file sets wins.

A value the engine could not use (a negative temperature, a string) is left out and
described in :attr:`GenerationDefaults.problems`, one phrase each, so a front end can
warn; the model still loads. ``eos_token_id`` (an id or a list) is reported too: the
tokenizer already stops on those ids (:class:`chatcli.tokenizer.tokenizer.ChatTokenizer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatcli.bounded_json import JSONError, loads
from chatcli.regular_file import NotRegularFile, read_bytes

FILE = "generation_config.json"
# The keys read: generation_config.json and SamplingParams spell them alike.
_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass(frozen=True)
class GenerationDefaults:
    """What a model says about sampling: values by SamplingParams field name, and where each came from."""

    sampling: dict[str, float | int] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # field -> "generation_config.json" | "catalog"
    eos_ids: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()  # values left out, e.g. "temperature -1 (use a number >= 0)"

    def warnings(self) -> list[str]:
        """One line per value left out, for a front end to show."""
        return [f"the model's {FILE} has {p}: left out, the next layer's value is used" for p in self.problems]


def read_generation_defaults(model_dir: Path, recommended: Mapping[str, float | int] | None = None) -> GenerationDefaults:
    """The sampling defaults of the model in ``model_dir`` (its file over ``recommended``)."""
    data = _read(Path(model_dir) / FILE)
    sampling: dict[str, float | int] = {}
    origins: dict[str, str] = {}
    for key, value in (recommended or {}).items():
        sampling[key], origins[key] = value, "catalog"
    problems: list[str] = []
    for key in _KEYS:
        if key not in data or data[key] is None:
            continue
        value, problem = _check(key, data[key])
        if problem:
            problems.append(f"{key} {data[key]!r} ({problem})")
            continue
        sampling[key], origins[key] = value, FILE
    if data.get("do_sample") is False:  # transformers: greedy, whatever the temperature says
        sampling["temperature"], origins["temperature"] = 0.0, FILE
    return GenerationDefaults(sampling, origins, _ids(data.get("eos_token_id")), tuple(problems))


def _read(path: Path) -> dict:
    """The file's object, or {} when it is absent or unreadable (the model loads without it)."""
    if not path.is_file():
        return {}
    try:
        data = loads(read_bytes(path, FILE))
    except (OSError, JSONError, NotRegularFile, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check(key: str, value) -> tuple[float | int | None, str | None]:
    """(the value as SamplingParams takes it, None) or (None, what is wrong)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, "not a number"
    if key == "top_k":
        if value != int(value):
            return None, "not an integer"
        return max(int(value), 0), None  # vLLM's -1 and 0 both mean off, as chatcli's 0
    if key == "temperature" and value < 0:
        return None, "use a number >= 0"
    if key == "top_p" and not 0 < value <= 1:
        return None, "use a number in (0, 1]"
    if key == "min_p" and not 0 <= value <= 1:
        return None, "use a number in [0, 1]"
    if key == "repetition_penalty" and value <= 0:
        return None, "use a number > 0"
    return float(value), None


def _ids(value) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(i for i in items if isinstance(i, int) and not isinstance(i, bool) and i >= 0)
