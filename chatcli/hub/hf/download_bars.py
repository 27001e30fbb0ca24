"""huggingface_hub's progress bars, reported through chatcli's progress function instead of drawn.

``snapshot_download(tqdm_class=...)`` builds its bars from the class it is given. :func:`bar_class`
returns a tqdm subclass that never draws (tqdm is told ``disable=True``) and reports
``progress(stage, done, total)`` instead, so a download shows as chatcli's own rich bar (or one
plain line when stderr is not a terminal).

huggingface_hub versions differ in which bars they make: newer ones (1.x, 2.x) make byte bars for
the whole snapshot, older ones only a bar counting files. The first byte bar made is reported; a
file-count bar only while there is no byte bar. Updates arrive from download threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from huggingface_hub.utils import tqdm  # its own tqdm subclass: tqdm itself is not our dependency

Progress = Callable[[str, int, "int | None"], None]


def bar_class(progress: Progress, stage: str, total: int | None = None) -> type[tqdm]:
    """A tqdm class whose bars report to ``progress`` under ``stage``.

    ``total``: the bytes the whole download will take, when known beforehand; the byte bar is
    then shown against it rather than against huggingface_hub's total, which grows file by file.
    """
    lock = threading.Lock()
    state: dict[str, object] = {"bytes_bar": None}

    class ReportingBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # a group name for huggingface_hub's switches; this bar is never drawn anyway
            kwargs["disable"] = True  # chatcli draws; tqdm stays silent
            super().__init__(*args, **kwargs)
            self.n = kwargs.get("initial") or 0
            self.total = kwargs.get("total")
            self._bytes = kwargs.get("unit") == "B"
            with lock:
                if self._bytes and state["bytes_bar"] is None:
                    state["bytes_bar"] = self

        def _reports(self) -> bool:
            owner = state["bytes_bar"]
            return owner is self or (owner is None and not self._bytes)

        def update(self, n: float | None = 1) -> bool | None:
            with lock:
                self.n += n or 0
                if self._reports():
                    known = total if (self._bytes and total) else (int(self.total) if self.total else None)
                    progress(stage, min(int(self.n), known) if known else int(self.n), known)
            return None

        def __iter__(self):  # older versions iterate a file-count bar over the finished downloads
            for item in self.iterable:
                yield item
                self.update(1)

    return ReportingBar
