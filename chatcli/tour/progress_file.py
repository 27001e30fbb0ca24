"""The learner's place in the tour, kept across runs in the user data dir.

A small JSON object in :func:`default_path` (``tour.json`` in :func:`chatcli.paths.data_dir`)::

    {"version": 1, "current": 4, "chapters": {"1": {"met": ["near", "wide"], "done": true},
                                              "4": {"met": ["turns"], "done": false}}}

``current`` is the chapter the learner is on; per chapter, the goals already met and
whether it is done, so leaving in the middle of a chapter and coming back resumes it.

:func:`load_progress` never raises: a missing file is a fresh start; a file that is not
a regular file, too large, not UTF-8 JSON or not of this shape is ignored as a whole
with one warning line, and the tour starts over. :func:`save_progress` writes
atomically (a temporary file in the same folder, fsync, rename): a crash leaves the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chatcli.errors import ChatcliError
from chatcli.paths import data_dir, write_text_atomic
from chatcli.regular_file import open_regular

VERSION = 1
MAX_BYTES = 64 * 1024  # a few hundred bytes are expected


@dataclass
class TourProgress:
    current: int = 1
    met: dict[int, set[str]] = field(default_factory=dict)  # chapter -> goal keys met
    done: set[int] = field(default_factory=set)

    def to_json(self) -> dict:
        chapters = {str(n): {"met": sorted(self.met.get(n, ())), "done": n in self.done}
                    for n in sorted(set(self.met) | self.done)}  # fmt: skip
        return {"version": VERSION, "current": self.current, "chapters": chapters}

    @classmethod
    def from_json(cls, data: object, chapters: int) -> TourProgress:
        """The progress in ``data``; ValueError naming what is wrong. Chapters past ``chapters`` are dropped."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        current = data.get("current", 1)
        if not isinstance(current, int) or isinstance(current, bool) or not 1 <= current <= chapters:
            raise ValueError(f"current chapter {current!r} is not 1..{chapters}")
        raw = data.get("chapters", {})
        if not isinstance(raw, dict):
            raise ValueError("chapters is not an object")
        progress = cls(current=current)
        for key, entry in raw.items():
            if not (isinstance(key, str) and key.isdigit() and isinstance(entry, dict)):
                raise ValueError(f"chapter entry {key!r} is not a number with an object")
            met, done = entry.get("met", []), entry.get("done", False)
            if not isinstance(met, list) or not all(isinstance(k, str) for k in met) or not isinstance(done, bool):
                raise ValueError(f"chapter {key}: met must be a list of names and done true or false")
            n = int(key)
            if not 1 <= n <= chapters:
                continue  # a chapter this version does not have
            if met:
                progress.met[n] = set(met)
            if done:
                progress.done.add(n)
        return progress


def default_path() -> Path:
    return data_dir() / "tour.json"


def load_progress(path: Path, chapters: int) -> tuple[TourProgress, str | None]:
    """The saved progress and a warning line (None when the file was fine or absent)."""
    try:
        with open_regular(path, "tour progress file") as f:
            raw = f.read(MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return TourProgress(), None
    except (OSError, ChatcliError) as e:
        reason = e.message if isinstance(e, ChatcliError) else (e.strerror or type(e).__name__)
        return TourProgress(), f"the tour's progress in {path} was not read ({reason}); starting the tour over"
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        return TourProgress.from_json(json.loads(raw.decode("utf-8")), chapters), None
    except (ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
        reason = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())[:120]
        return TourProgress(), f"the tour's progress in {path} is broken ({reason}); starting the tour over"


def save_progress(progress: TourProgress, path: Path) -> None:
    """Write ``progress`` to ``path`` atomically; OSError when the folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(progress.to_json()) + "\n")
