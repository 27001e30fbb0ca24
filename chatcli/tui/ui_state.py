"""The chat TUI's view settings kept across restarts: the tint (F2) and the panel (F3, F4).

A small JSON object in :func:`chatcli.paths.ui_state_path` (the app is handed the path;
None keeps nothing)::

    {"tint": "entropy", "panel": true, "sampled": false}

:func:`load_ui_state` reads it defensively: a missing file is the defaults; a file that
is not a regular file, too large, not UTF-8 JSON, not an object, or holds a value of the
wrong kind is ignored as a whole, with one warning line for the transcript. Unknown keys
are ignored (a newer chatcli may add some). :func:`save_ui_state` writes it atomically
(a temporary file in the same folder, fsync, rename), so a crash leaves the old file or
the new one, never half of one. :class:`ViewSettings` is what the app holds: the state,
its file, and the one warning a failed save gets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from chatcli.errors import ChatcliError
from chatcli.paths import write_text_atomic
from chatcli.regular_file import open_regular
from chatcli.tui.token_text import TINTS

MAX_BYTES = 16 * 1024  # a few dozen bytes are expected; anything far larger is not ours


@dataclass
class UiState:
    tint: str = "off"  # "off" | "model_prob" | "entropy" (F2, /tint)
    panel: bool = True  # the probability panel is wanted (F3); a narrow terminal still hides it at start
    sampled: bool = False  # the panel's sampled-distribution column (F4)

    @classmethod
    def from_dict(cls, data: dict) -> UiState:
        """The state in ``data``; ValueError naming the first value of the wrong kind."""
        state = cls()
        tint = data.get("tint", state.tint)
        if tint not in TINTS:
            raise ValueError(f"tint {tint!r} is not one of {', '.join(TINTS)}")
        for key in ("panel", "sampled"):
            if not isinstance(data.get(key, False), bool):
                raise ValueError(f"{key} {data[key]!r} is not true or false")
        return cls(tint=tint, panel=data.get("panel", state.panel), sampled=data.get("sampled", state.sampled))


def load_ui_state(path: Path) -> tuple[UiState, str | None]:
    """The saved state and a warning (None when the file was fine or absent)."""
    try:
        with open_regular(path, "UI state file") as f:
            raw = f.read(MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):  # nothing saved yet (or nowhere it could be)
        return UiState(), None
    except (OSError, ChatcliError) as e:
        return UiState(), f"the saved view settings were not read ({_reason(e)}); using the defaults"
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return UiState.from_dict(data), None
    except (ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors; deep nesting recurses
        return UiState(), f"the saved view settings in {path} are broken ({_reason(e)}); using the defaults"


def save_ui_state(state: UiState, path: Path) -> None:
    """Write ``state`` to ``path`` atomically; OSError when the folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(state)) + "\n")


class ViewSettings:
    """The remembered :class:`UiState` and its file (None: nothing is read or written)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.state, self.warning = load_ui_state(path) if path is not None else (UiState(), None)
        self._save_failed = False

    def remember(self, **changes) -> str | None:
        """Change fields of the state and write it; a warning the first time writing fails, else None."""
        for key, value in changes.items():
            setattr(self.state, key, value)
        if self.path is None:
            return None
        try:
            save_ui_state(self.state, self.path)
        except OSError as e:
            if not self._save_failed:  # one line, not one per key press
                self._save_failed = True
                return f"the view settings could not be saved to {self.path} ({e.strerror or e})"
        return None


def _reason(e: BaseException) -> str:
    if isinstance(e, ChatcliError):
        return e.message
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return " ".join(str(e).split())[:120] or type(e).__name__
