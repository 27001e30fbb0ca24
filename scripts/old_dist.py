"""Say whether this Python has chatcli's old distribution: prints ``ours``, ``other`` or nothing.

Usage: ``python scripts/old_dist.py CHECKOUT`` (scripts/bootstrap runs it with the venv's Python).
The distribution named ``chatcli`` (the project's name before it became ``chatcli-lab``) is
``ours`` when its entry points register the first-party plugin ``chatcli_rank`` or pip installed it
from CHECKOUT (its ``direct_url.json``), ``other`` when it is some other project of that name
(PyPI's ``chatcli`` is one), and nothing is printed when no ``chatcli`` distribution is installed.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path


def old_dist(checkout: Path, path: list[str] | None = None) -> str | None:
    """``ours``, ``other`` or None for the ``chatcli`` distribution on ``path`` (default: sys.path)."""
    found = list(metadata.distributions(name="chatcli", path=sys.path if path is None else path))
    if not found:
        return None
    dist = found[0]  # the one Python would import from
    try:
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except (ValueError, AttributeError):  # a damaged record proves nothing either way
        url = ""
    plugins = {(e.group, e.value) for e in dist.entry_points}
    ours = ("chatcli.plugins", "chatcli_rank") in plugins or url == checkout.resolve().as_uri()
    return "ours" if ours else "other"


if __name__ == "__main__":
    found = old_dist(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    if found:
        print(found)
