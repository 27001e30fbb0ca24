"""The views the probability panel offers beside its distribution, in tab order (F5 cycles them).

Each entry is a :class:`chatcli.tui.widgets.panel_view.PanelView` class (see that module for
the protocol). The panel mounts one of each; their ``KEY`` opens them from the inspector.
"""

from __future__ import annotations

from chatcli.tui.widgets.attention_view import AttentionView
from chatcli.tui.widgets.lens_view import LensView
from chatcli.tui.widgets.panel_view import PanelView
from chatcli.tui.widgets.whatif_view import WhatIfView

VIEWS: tuple[type[PanelView], ...] = (WhatIfView, LensView, AttentionView)
