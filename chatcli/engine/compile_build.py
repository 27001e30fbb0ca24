"""The compiled decode step built in the background, for the default (``compile`` unset: "auto").

A person who never asked for ``--compile`` should not wait a minute for a build, nor decode slower
forever. So on the first answer of a model whose package is missing, :func:`start` launches
:mod:`chatcli.engine.compile_worker` as a separate, low-priority process that loads the same
model, builds the package (:func:`chatcli.model.compiled.package.build`) and exits; the chat keeps
decoding eagerly meanwhile, and the first answer after the package appears uses it (one line says so
when the build starts). Processes, not threads: export and inductor hold the GIL for seconds, which would
stall a live chat.

Files beside the package (``<key>.pt2``): ``<key>.building`` while a build runs (created exclusively:
two chats started together launch one build; older than :data:`STALE_S`, it is taken as abandoned),
``<key>.failed`` with a one-line reason when a build failed (no second background try for that key:
``chatcli generate --compile`` retries in the foreground and says why), ``<key>.log`` the builder's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STALE_S = 30 * 60  # a build marker older than this belongs to a builder that died


def marker(path: Path, suffix: str) -> Path:
    """The file beside package ``path`` with ``suffix`` (.building, .failed, .log)."""
    return path.with_suffix(suffix)


def start(path: Path, source: str, dtype: str, quantize: str = "none", group_size: int | None = None,
          bf16_path: str = "") -> str | None:
    """Launch a builder for the package ``path`` of the model at ``source`` (a local directory) loaded
    as ``dtype``/``quantize``/``group_size`` (a bf16 model with ``bf16_path``, its one-row products'
    kernel: the builder loads without calibrating), unless one runs or failed before; returns the line
    to tell the person, or None."""
    failed, building = marker(path, ".failed"), marker(path, ".building")
    if failed.exists() or path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if building.exists() and time.time() - building.stat().st_mtime > STALE_S:
            building.unlink(missing_ok=True)
        fd = os.open(building, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None  # another process builds it
    except OSError:
        return None  # a cache that cannot be written: stay eager, quietly
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    try:
        with open(marker(path, ".log"), "ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "chatcli.engine.compile_worker", str(path), source, dtype, quantize,
                 str(group_size or ""), bf16_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,  # outlives a one-shot command
                env={**os.environ, "OMP_NUM_THREADS": "1"},  # one core: the chat keeps the other
            )  # fmt: skip
    except OSError as e:
        building.unlink(missing_ok=True)
        failed.write_text(f"could not start the builder: {e}\n", encoding="utf-8")
        return None
    return ("compiling a faster decode step in the background (once per model shape, about a minute); "
            "answers use it once it is ready")  # fmt: skip
