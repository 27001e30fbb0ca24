"""Calibration on a model's load: read the cache, or measure once per key and say so in one line.

:func:`calibrate_on_load` is what :func:`chatcli.engine.loader.load_engine` calls after the model
(and its adapters) loaded, so every error in the user's arguments comes before it: a cached
calibration is applied silently; a missing, corrupt or foreign one is measured again
(:mod:`.measure`), cached, and reported by exactly one line through ``say``::

    calibrated this CPU's kernels in 3.1 s (cached; redo with chatcli bench --calibrate)

On a busy machine (a load average of :data:`~.record.BUSY_LOAD` or more per CPU: other work keeps
every core busy, so timings say little and thread counts measured then favour fewer threads) nothing
is measured and nothing said: the model runs the cached choices or the defaults, and the first load
that finds the machine quiet measures. A calibration measured busy anyway (``chatcli bench
--calibrate`` always measures) is used until then.

A calibration that fails (which it should not) leaves the default paths and says so in that one
line instead: loading a model never fails because of it. Only CPU models are calibrated.
:func:`auto_enabled` reads the switch, ``CHATCLI_CALIBRATE`` (``0``/``off``/``false``/``no`` turns
automatic calibration off, and with it the cached choices: the model then runs the defaults of
:mod:`chatcli.model.kernel_choice`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from chatcli.engine.calibration.cache import read_cached, write_cached
from chatcli.engine.calibration.key import calibration_key
from chatcli.engine.calibration.measure import calibrate, load_per_core
from chatcli.engine.calibration.record import BUSY_LOAD, Calibration
from chatcli.errors import UsageError
from chatcli.model.kernel_choice import DEFAULT
from chatcli.model.packed import use_kernel_choices

ENV = "CHATCLI_CALIBRATE"
_WORDS = {**dict.fromkeys(("1", "on", "true", "yes", "auto"), True),
          **dict.fromkeys(("0", "off", "false", "no"), False)}  # fmt: skip


def auto_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether models calibrate on load: ``CHATCLI_CALIBRATE`` (unset or empty: on); a one-line
    UsageError for a value that is no on/off word."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if not text:
        return True
    if text not in _WORDS:
        raise UsageError(f"the environment variable {ENV}={text!r} must be on or off (1/0); fix or unset it")
    return _WORDS[text]


def calibrate_on_load(engine, say: Callable[[str], None]) -> Calibration | None:
    """Give ``engine.model`` its calibrated choices (cached, or measured now and cached); None when
    not calibrated (not on the CPU, a busy machine with nothing cached, or the measurement failed:
    the defaults stay)."""
    model = engine.model
    if model.device.type != "cpu":
        return None
    cached = read_cached(calibration_key(model))
    busy = (load_per_core() or 0.0) >= BUSY_LOAD
    if cached is not None and (busy or not cached.busy):
        use_kernel_choices(model, cached.choices)
        return cached
    if busy:
        return None  # measured on a quiet load (see the module docstring)
    try:
        cal = calibrate(engine)
    except Exception as e:  # noqa: BLE001 - a load must not fail for an optimisation; the line says why
        use_kernel_choices(model, DEFAULT)
        engine.generator.reset()
        say(f"could not calibrate this CPU's kernels ({type(e).__name__}: {e}); using the default paths")
        return None
    try:
        write_cached(cal)
        where = "cached"
    except OSError as e:
        where = f"not cached: {e.strerror or e}"
    say(f"calibrated this CPU's kernels in {cal.seconds:.1f} s ({where}; redo with chatcli bench --calibrate)")
    return cal
