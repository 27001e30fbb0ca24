"""Peak resident memory of one phase of this process (the SFT part of a worker, then its DPO part).

Linux keeps a resettable high-water mark: writing ``5`` to ``/proc/self/clear_refs``
sets ``VmHWM`` (``/proc/self/status``) back to the current RSS, so each phase's peak is
its own, with the loaded model and the runtime counted (they are resident throughout).
Where that is not available (macOS, a locked-down /proc) the process's peak so far
(``ru_maxrss``) is returned instead and :attr:`PhaseRss.exact` says so: run SFT before
DPO, whose batch of chosen + rejected rows is the larger one.
"""

from __future__ import annotations

from pathlib import Path

from chatcli.bench.stats import own_peak_rss_mb

_CLEAR = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PhaseRss:
    """``start()`` before a phase, ``peak_mb()`` after it."""

    def __init__(self) -> None:
        self.exact = _CLEAR.exists() and _STATUS.exists()

    def start(self) -> None:
        if not self.exact:
            return
        try:
            _CLEAR.write_text("5")
        except OSError:  # not writable here: fall back to the process's peak
            self.exact = False

    def peak_mb(self) -> float:
        if self.exact:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6  # kB, as ru_maxrss on Linux
        return own_peak_rss_mb()
