"""``/load-lora`` with no argument in the TUI: a modal listing the adapters chatcli can find by name.

:func:`find_adapters` lists the adapters in the folders bare names are looked up
in (:func:`chatcli.lora.spec.adapter_dirs`: ``./adapters``, the demo
adapters shipped with chatcli, the user adapter dir), in that order, each folder
once even when two of those are the same place. An adapter is a folder with
PEFT's files, or a ``.safetensors`` file with its config beside it; anything
else (pickles, stray files) is left out. Nothing is loaded to list them: the
config's rank and base model are read, the weights are not opened.

:class:`AdapterPicker` shows them (name, where, rank, base model; loaded ones
marked and not selectable) and dismisses with the chosen path, or None on Esc.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from chatcli.bounded_json import loads

MAX_CONFIG_BYTES = 1 << 20  # a PEFT config is a few KB; a bigger file is not read


@dataclass(frozen=True)
class AdapterEntry:
    name: str  # what /load-lora would call it (folder name or file stem)
    path: Path
    origin: str  # "./adapters", "demo" or "user"
    rank: int | None = None
    base: str = ""  # base_model_name_or_path from the config


def _origins() -> list[tuple[Path, str]]:
    from chatcli.lora.spec import adapter_dirs

    return list(zip(adapter_dirs(), ("./adapters", "demo", "user")))


def _config_summary(config: Path) -> tuple[int | None, str]:
    try:
        if config.stat().st_size > MAX_CONFIG_BYTES:
            return None, ""
        data = loads(config.read_bytes())  # bounded nesting: a hostile config is skipped, not a crash
    except (OSError, ValueError):
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    rank = data.get("r")
    return (rank if isinstance(rank, int) else None), str(data.get("base_model_name_or_path") or "")


def find_adapters(folders: Iterable[tuple[Path, str]] | None = None) -> list[AdapterEntry]:
    """Adapters directly inside each (folder, origin), in folder order then by name (see module doc)."""
    from chatcli.lora.manager import adapter_name
    from chatcli.lora.peft_io import adapter_files

    seen: set[Path] = set()
    found: list[AdapterEntry] = []
    for folder, origin in _origins() if folders is None else folders:
        try:
            real = folder.resolve()
            children = sorted(folder.iterdir(), key=lambda p: p.name.lower()) if folder.is_dir() else []
        except OSError:
            continue
        if real in seen:  # e.g. ./adapters of a source checkout is also the demo folder
            continue
        seen.add(real)
        for child in children:
            if child.name.startswith((".", "_")) or not (child.is_dir() or child.suffix == ".safetensors"):
                continue
            try:
                config, _ = adapter_files(child)
            except Exception:  # not an adapter (a pickle-only folder, a data folder): not offered
                continue
            rank, base = _config_summary(config)
            found.append(AdapterEntry(adapter_name(child.stem if child.is_file() else child.name), child, origin, rank, base))
    return found


class AdapterPicker(ModalScreen[Path | None]):
    """Choose an adapter to load; dismisses with its path (None: cancelled)."""

    DEFAULT_CSS = """
    AdapterPicker { align: center middle; }
    #picker { width: 90; max-width: 95%; height: auto; max-height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    #picker-list { height: auto; max-height: 20; border: none; background: transparent; }
    #picker-help { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, entries: list[AdapterEntry], loaded: Iterable[str] = ()) -> None:
        super().__init__()
        self.entries = entries
        self.loaded = set(loaded)

    def compose(self) -> ComposeResult:
        with Vertical(id="picker") as box:
            box.border_title = "load a LoRA adapter"
            yield OptionList(*[self._row(i, e) for i, e in enumerate(self.entries)], id="picker-list")
            yield Static("Enter loads it (scale 1; /lora-scale changes it) · Esc cancels · /load-lora PATH loads one from anywhere",
                         id="picker-help")  # fmt: skip

    def _row(self, i: int, e: AdapterEntry) -> Option:
        loaded = e.name in self.loaded
        parts: list = [(e.name.ljust(20), "bold"), (f" {e.origin:<10}", "$text-muted")]
        parts.append((f" r={e.rank}" if e.rank is not None else " r=?", ""))
        if e.base:
            parts.append((f"  for {e.base}", "$text-muted"))
        if loaded:
            parts.append(("  (loaded)", "$success"))
        return Option(Content.assemble(*parts), id=f"adapter-{i}", disabled=loaded)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        first = next((i for i, e in enumerate(self.entries) if e.name not in self.loaded), None)
        if first is not None:
            options.highlighted = first

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id and event.option_id.startswith("adapter-"):
            self.dismiss(self.entries[int(event.option_id.removeprefix("adapter-"))].path)

    def action_cancel(self) -> None:
        self.dismiss(None)
