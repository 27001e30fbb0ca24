"""A panel view that shows one probe of the selected step, computed once in a worker and cached.

The lens and attention views differ in what they compute and draw; everything else is this:
why a step cannot be read now (a streaming answer, no local model), looking again when a
streaming answer finishes, one computation at a time on a worker thread, results and errors
cached per :func:`probe_key` (answer, step, adapter weights), and catching up with a step the
person moved to while the worker ran. A subclass sets :attr:`WHAT` and :attr:`FAILED` (its messages) and
implements :meth:`compute` (runs on the worker) and :meth:`_redraw`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.worker import get_current_worker

from chatcli.chat.lens_commands import local_engine
from chatcli.errors import ChatcliError
from chatcli.tui.widgets.panel_view import PanelView

if TYPE_CHECKING:
    from chatcli.chat.session import Node


def probe_key(core: Any, node: Node, index: int) -> tuple:
    """What a cached probe result depends on: the answer, the step and the adapters' weights now."""
    adapters = getattr(core.engine, "adapters", None) if core.engine is not None else None
    version = adapters.weights_version() if adapters is not None and hasattr(adapters, "weights_version") else 0
    return (node.id, index, version)


def probe_problem(core: Any, node: Node, what: str) -> str | None:
    """Why ``what`` cannot read a step of ``node`` now (a streaming answer, no local model), or None."""
    if node.status == "streaming":
        return "the answer is still being written: the view opens on its steps when it is done"
    try:
        local_engine(core, what)
    except ChatcliError as e:
        return e.message
    return None


class ProbeView(PanelView):
    WHAT = "the probe"  # its name when it cannot run ("the logit lens", "attention")
    FAILED = "the probe failed"  # said when computing it failed

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple, Any] = {}
        self._errors: dict[tuple, str] = {}
        self._pending: tuple | None = None
        self._problem: str | None = None

    def compute(self, core: Any, node: Node, index: int) -> Any:
        """The probe of step ``index`` of ``node`` (runs on a worker thread)."""
        raise NotImplementedError

    def _redraw(self) -> None:
        raise NotImplementedError

    # --- the protocol --------------------------------------------------------------------------

    def show(self, node: Node, index: int) -> None:
        super().show(node, index)
        core = self.app.core  # type: ignore[attr-defined]
        self._problem = probe_problem(core, node, self.WHAT)
        if self._problem is None:
            self._want(core, node, index)
        elif node.status == "streaming":  # look again when it is done (the panel does not re-show a step)
            self.set_timer(0.5, lambda: self._recheck(node, index))
        self._redraw()

    def _recheck(self, node: Node, index: int) -> None:
        if self.node is node and self.index == index and self.is_attached:
            self.show(node, index)

    def clear(self) -> None:
        super().clear()
        self._problem = None
        self._redraw()

    def cached(self, node: Node, index: int) -> Any:
        """The cached probe of step ``index`` of ``node`` (None until computed)."""
        return self._cache.get(probe_key(self.app.core, node, index))  # type: ignore[attr-defined]

    # --- computing -----------------------------------------------------------------------------

    def _want(self, core: Any, node: Node, index: int) -> None:
        key = probe_key(core, node, index)
        if key in self._cache or key in self._errors or self._pending == key:
            return
        self._pending = key

        def work() -> None:
            try:
                got = (key, self.compute(core, node, index), None)
            except ChatcliError as e:
                got = (key, None, e.message)
            except Exception as e:  # a bug: one line in the view, the chat goes on
                got = (key, None, f"{self.FAILED} ({type(e).__name__}: {e})")
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._computed, *got)

        self.run_worker(work, name=self.VIEW, group=self.VIEW, thread=True, exit_on_error=False)

    def _computed(self, key: tuple, result: Any, error: str | None) -> None:
        if self._pending == key:
            self._pending = None
        if result is not None:
            self._cache[key] = result
        else:
            self._errors[key] = error or self.FAILED
        if self.node is not None and self.index is not None:
            if self._problem is None:
                self._want(self.app.core, self.node, self.index)  # type: ignore[attr-defined]  (moved on meanwhile)
            self._redraw()
