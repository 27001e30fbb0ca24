"""The calibration cache: one JSON file per key under ``<cache dir>/calibration/``.

A file is named by a digest of its key and holds the whole :class:`~.record.Calibration`, key
included. :func:`read_cached` returns it only when the file parses, has this schema and holds
exactly the key asked for; anything else (a missing, unreadable, truncated or hand-edited file,
another machine's or another torch's calibration copied in) reads as no calibration, so the
caller measures again and overwrites it. Never an error: a cache is re-creatable by definition.
:func:`write_cached` replaces the file whole (:func:`chatcli.paths.write_text_atomic`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from chatcli.engine.calibration.record import Calibration
from chatcli.paths import cache_dir, write_text_atomic

MAX_BYTES = 1 << 20  # a calibration is a few kB: a bigger file is not one of ours


def cache_path(key: dict) -> Path:
    """Where the calibration of ``key`` lives (the folder is created)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.json"


def read_cached(key: dict) -> Calibration | None:
    """The cached calibration of ``key``, or None (see the module docstring)."""
    try:
        path = cache_path(key)
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        cal = Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):  # json's errors are ValueErrors
        return None
    return cal if cal.key == key else None


def write_cached(cal: Calibration) -> Path:
    """Save ``cal`` under its key, replacing any file there; OSError when it cannot be written."""
    path = cache_path(cal.key)
    write_text_atomic(path, json.dumps(cal.to_json(), indent=1, sort_keys=True) + "\n")
    return path
