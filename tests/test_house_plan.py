"""The house plan holds: imports run one way, no circles, no crowded folders, one name per concept.

Read from the source text (nothing is imported), counting imports inside functions and under
``if TYPE_CHECKING:`` too: a lazy import hides a circle, it does not cut it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Where each source folder installs (pyproject's package-dir does the same for the wheel).
SOURCES = {"chatcli": ROOT / "chatcli", "chatcli_rank": ROOT / "plugins" / "rank",
           "chatcli_finetune": ROOT / "plugins" / "finetune"}  # fmt: skip

# Layers, lowest first: a module may import its own layer and the layers below, never above.
# cli -> tui -> plugins -> chat -> serve/remote -> engine -> lora -> hub -> model/tokenizer -> errors/paths
LAYERS = [
    {"chatcli", "chatcli.errors", "chatcli.paths", "chatcli.progress", "chatcli.jsonl"},  # `chatcli`: __version__
    {"chatcli.model", "chatcli.tokenizer"},
    {"chatcli.hub"},
    {"chatcli.lora"},
    {"chatcli.engine"},
    {"chatcli.serve", "chatcli.remote"},
    {"chatcli.chat", "chatcli.commands", "chatcli.settings", "chatcli.tour"},  # settings: config defaults, presets, where each value came from; tour: the guided chapters
    {"chatcli.plugins", "chatcli.hookspecs"},
    {"chatcli.tui"},
    {"chatcli.cli", "chatcli.bench", "chatcli.api"},
    {"chatcli.__main__", "chatcli_rank", "chatcli_finetune",  # the entry point and the first-party plugins
     "chatcli.bench.train"},  # the bench's training figures measure chatcli_finetune's trainer (reached by name)
]


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} belongs to no layer of the house plan: add it to LAYERS"
    return best


def _modules() -> dict[str, Path]:
    found = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([top, *parts])] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(package[: len(package) - node.level + 1] + ([mod] if mod else []))
            targets.add(mod)
            targets.update(f"{mod}.{a.name}" for a in node.names)
    # the nearest known module of each target: `from chatcli.engine.events import Step` -> chatcli.engine.events
    resolved = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name:
            resolved.add(t)
    return resolved


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def test_no_import_circles(graph):
    # a package's __init__ is not an edge source for this check unless it imports something itself
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components, iterative enough for this size
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(" <-> ".join(sorted(comp)))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_imports_run_one_way(graph):
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if layer_of(dst) > layer_of(src) and not (src == "chatcli" and dst == "chatcli.api")  # the lazy API re-export
    ]
    assert upward == []


def test_no_folder_has_more_than_20_modules():
    crowded = [
        f"{folder.relative_to(ROOT)}: {n}"
        for folder in [p for p in (ROOT / "chatcli").rglob("*") if p.is_dir()] + [ROOT / "chatcli"]
        if (n := len(list(folder.glob("*.py")))) > 20
    ]
    assert crowded == []


def test_one_name_one_concept():
    """A module name used in two concern folders must not hide two different concepts (list allowed pairs)."""
    # Same word, same concept seen from two layers (the command line's `lora` group drives the `lora` package, ...).
    allowed = {"__init__", "cli", "errors", "adapters", "compare", "config", "tokenizer", "lora", "chat", "plugins",
               "models", "generate", "serve", "app", "inspect", "status", "worker", "commands", "hookspecs",
               "params", "scoring", "spec", "manager", "tui", "validate", "presets"}  # fmt: skip
    seen: dict[str, list[str]] = {}
    for path in (ROOT / "chatcli").rglob("*.py"):
        seen.setdefault(path.stem, []).append(str(path.parent.relative_to(ROOT)))
    twice = {stem: folders for stem, folders in seen.items() if len(folders) > 1 and stem not in allowed}
    assert twice == {}
