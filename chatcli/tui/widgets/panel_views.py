"""The views the probability panel offers beside its distribution, in tab order (F5 cycles them).

Each entry is a :class:`chatcli.tui.widgets.panel_view.PanelView` class (see that module for
the protocol). The panel mounts one of each; their ``KEY`` opens them from the inspector.
A view not built yet is a placeholder tab that says so in one line.
"""

from __future__ import annotations

from chatcli.tui.widgets.panel_view import PanelView, placeholder
from chatcli.tui.widgets.whatif_view import WhatIfView

VIEWS: tuple[type[PanelView], ...] = (
    WhatIfView,
    placeholder("lens", "Lens", "l", "coming with the lens view"),
    placeholder("attention", "Attention", "a", "coming with the attention view"),
)
