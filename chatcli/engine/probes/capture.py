"""What the probes share: the position they read, and a module's inputs seen during one forward.

``resolve_position(ids, position, context_length)`` turns a Python-style index
(``-1`` = the last token) into an absolute one, or raises a one-line
:class:`~chatcli.errors.UsageError` for an empty text, a position outside it, or a
text longer than the model's context.

``reading_inputs(modules, record)`` is a context manager: while inside, each call of
``modules[i]`` *from this thread* first calls ``record(i, args)`` with the module's
positional arguments. It works through forward pre-hooks that are removed in
``finally``, so the model carries no probe state afterwards and costs nothing when no
probe runs; a generation on another thread (the TUI streams from a worker) is never
recorded into a probe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from chatcli.errors import UsageError


def resolve_position(ids: Sequence[int], position: int, context_length: int | None = None) -> int:
    """The absolute index of ``position`` in ``ids`` (negative counts from the end)."""
    n = len(ids)
    if n == 0:
        raise UsageError("nothing to read: the text has no tokens (give a non-empty text)")
    if not -n <= position < n:
        raise UsageError(f"position {position} is outside the text: use 0..{n - 1} (or -{n}..-1 from the end)")
    pos = position % n
    if context_length is not None and pos + 1 > context_length:
        raise UsageError(f"position {pos} is past the model's context of {context_length} tokens: "
                         "use a shorter text or an earlier position")
    return pos


@contextmanager
def reading_inputs(modules: Sequence[nn.Module], record: Callable[[int, tuple], None]) -> Iterator[None]:
    """Call ``record(i, args)`` before each forward of ``modules[i]`` on this thread, while inside."""
    thread = threading.get_ident()
    handles = []

    def hook_for(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() == thread:
                record(i, args)

        return hook

    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_pre_hook(hook_for(i)))
        yield
    finally:
        for handle in handles:
            handle.remove()
