"""The ``--quantize`` choices and their check, without importing torch (the CLI checks its
flags before anything heavy loads; :mod:`chatcli.model.quantize` does the work)."""

from __future__ import annotations

from chatcli.errors import UsageError

CHOICES = ("none", "int8", "int4")


def check_quantize(value: str | None) -> str:
    """``none``, ``int8`` or ``int4`` (None means none); anything else is a one-line UsageError."""
    v = "none" if value is None else str(value).strip().lower()
    if v not in CHOICES:
        raise UsageError(f"invalid --quantize {value!r}: use none, int8 or int4")
    return v
