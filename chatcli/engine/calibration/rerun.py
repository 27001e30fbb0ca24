"""``chatcli bench --calibrate``: load a model without the automatic calibration, measure, cache, report."""

from __future__ import annotations

from pathlib import Path

from chatcli.engine.calibration.cache import write_cached
from chatcli.engine.calibration.measure import calibrate
from chatcli.engine.calibration.record import Calibration


def recalibrate(path: str, dtype: str, quantize: str | None) -> tuple[Calibration, Path | None, str]:
    """Calibrate the model at ``path`` on the CPU under torch's thread count now, replacing its cache
    entry; (the calibration, the cache file or None, a line saying where it went)."""
    from chatcli.engine.loader import load_engine

    engine = load_engine(path, dtype=dtype, device="cpu", quantize=quantize or "none", calibrate=False)
    cal = calibrate(engine)
    try:
        written = write_cached(cal)
    except OSError as e:
        return cal, None, f"not cached: {e.strerror or e} (later loads will measure again)"
    return cal, written, f"cached in {written} (every later load of this model, dtype and quantization here uses it)"
