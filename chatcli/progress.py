"""Progress on stderr for long steps (download, conversion, loading).

The engine reports through plain callbacks ``progress(stage, done, total)``;
this module turns them into rich progress bars on a terminal, or one line per
stage when stderr is not a terminal (logs stay readable).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# progress(stage, done, total): the one progress callback of the package (loaders, the chat front ends).
ProgressFn = Callable[[str, int, "int | None"], None]


@contextmanager
def stderr_progress(enabled: bool = True) -> Iterator[ProgressFn]:
    if not enabled:
        yield lambda stage, done, total: None
        return
    if not sys.stderr.isatty():
        seen: set[str] = set()

        def plain(stage: str, done: int, total: int | None) -> None:
            if stage not in seen:
                seen.add(stage)
                sys.stderr.write(f"chatcli: {stage}...\n")
                sys.stderr.flush()

        yield plain
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn()]
    tasks: dict[str, int] = {}
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:

        def rich_update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield rich_update

