"""The probability view, token inspection and /compare tinting of the chat app.

Mixed into :class:`chatcli.tui.app.ChatApp`: shows a step of an answer in the
:class:`~chatcli.tui.widgets.probs.ProbabilityPanel` (or base vs adapter when the answer
is compared by KL), handles token selection, branching at an alternative token,
switching between sibling answers, and which answer is being inspected.
"""

from __future__ import annotations

from chatcli.errors import ChatcliError
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.compare_view import comparison_note
from chatcli.tui.messages import BranchRequested, SiblingRequested, TokenSelected
from chatcli.tui.widgets.probs import AltList


class InspectionMixin:
    """_show_step, token/branch/sibling handlers, inspected-answer focus, show/end comparison."""

    _compared: AnswerView | None  # the answer /compare tints by KL
    _inspected: AnswerView | None

    # --- the probability view --------------------------------------------------------------

    def _show_step(self, node_id: int, index: int, *, following: bool) -> None:
        node = self.core.conv.nodes.get(node_id)
        if node is None or not 0 <= index < len(node.steps):
            return
        compared = self._compared
        if compared is not None and compared.node is node and compared.comparison is not None:
            c = compared.comparison
            self.panel.show_shift(node.steps[index], c.steps[index], adapters=c.adapters, node_id=node_id, index=index, total=len(node.steps))
            return
        self.panel.show(node.steps[index], node_id=node_id, index=index, total=len(node.steps), following=following)

    def on_token_selected(self, message: TokenSelected) -> None:
        following = self.stream.token_selected(message.node_id, message.index)
        self._show_step(message.node_id, message.index, following=following)

    async def on_branch_requested(self, message: BranchRequested) -> None:
        async def branch() -> None:
            try:
                job = self.core.branch(message.node_id, message.index, message.token_id)
            except ChatcliError as e:
                self.say(e.message, "error")
                return
            await self.start_job(job)
            step = job.node.steps[message.index]
            self.notify(f"branched at token {message.index + 1}: {step.token!r}", timeout=2)
            self.prompt.focus()

        if self.stream.streaming:  # picking an alternative while streaming: stop, then branch
            self.stream.stop_then(branch)
        else:
            await branch()

    async def on_sibling_requested(self, message: SiblingRequested) -> None:
        if self.busy:
            self.notify("wait for the answer to finish (Esc stops it)", severity="warning", timeout=2)
            return
        sibs, i = self.core.conv.siblings(message.node_id)
        if len(sibs) == 1 or not 0 <= i + message.delta < len(sibs):
            self.bell()
            return
        node = self.core.switch_sibling(message.node_id, message.delta)
        view = self.transcript.view_for(message.node_id)
        if view is None:
            await self._redraw()
            return
        await self.transcript.rerender_from(self.core.conv, view, node, model=self._model_label(), tint=self.tint)
        view.focus()
        if node.steps:
            view.move_to(len(node.steps) - 1)
        self._refresh_status()

    def set_inspected(self, view: AnswerView) -> None:
        if self._inspected is not None and self._inspected is not view and self._inspected.is_attached:
            self._inspected.set_inspecting(False)
        self._inspected = view

    def clear_inspected(self) -> None:
        if self._inspected is not None and self._inspected.is_attached:
            self._inspected.set_inspecting(False)
        self._inspected = None
        self.stream.follow()

    def focus_alternatives(self) -> None:
        alts = self.query_one(AltList)
        if self.panel.display and alts.display and alts.option_count:
            alts.focus()
            if alts.highlighted is None:
                alts.highlighted = 0

    def focus_inspected(self) -> None:
        if self._inspected is not None and self._inspected.is_attached:
            self._inspected.focus()
        else:
            self.prompt.focus()

    # --- /compare: per-token KL tinting ----------------------------------------------------

    def show_comparison(self, node, comparison) -> None:
        """Called by /compare: tint the answer by per-token KL; its tokens show base vs adapter in the panel.

        The same comparison again (nothing changed since) switches it off, like Esc or F2.
        """
        view = self.transcript.view_for(node.id)
        shown = self._compared
        previous = shown.comparison if shown is not None else None
        self.end_comparison()
        if view is None or view.node is not node or len(comparison.steps) != len(node.steps):
            # not on screen (another branch is shown): the transcript gets the printed copy
            from chatcli.chat.lora_commands import comparison_view

            self.say(comparison_view(comparison), "result")
            return
        if shown is view and previous == comparison:
            self.notify("comparison off: normal tinting", timeout=2)
            return
        view.set_comparison(comparison)
        self._compared = view
        self.say(comparison_note(comparison), "result")
        self.panel.display = True  # the side-by-side distributions are the point
        if comparison.steps:
            view.focus()
            view.move_to(comparison.max_step.index)

    def end_comparison(self) -> bool:
        """Back to normal tinting (Esc, F2, /tint, a new answer); False when no comparison was shown."""
        view, self._compared = self._compared, None
        if view is None or view.comparison is None:  # none, or its view moved to a sibling since
            return False
        if view.is_attached:
            view.set_comparison(None)
            if self.panel.node_id == view.node.id and view.cursor is not None:
                self._show_step(view.node.id, view.cursor, following=False)
        return True
