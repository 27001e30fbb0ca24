"""What the model sees and how full its context is: ``/raw``, the status bar's context meter, ``/save``.

:class:`PromptViews` is a mixin of :class:`~chatcli.chat.core.ChatCore`. The prompts are
rendered by the engine's own chat template (special tokens included), so what is shown is
exactly what the model reads; nothing here changes the conversation.
"""

from __future__ import annotations

from pathlib import Path

from chatcli.chat.answer_record import prompt_messages
from chatcli.chat.session import Node, export_files
from chatcli.engine.protocol import capabilities


class PromptViews:
    def raw_prompt(self) -> str:
        """The exact string the model sees for the next answer (special tokens included)."""
        return self._engine().render_prompt(self.conv.messages(), add_generation_prompt=True)

    def answer_prompt(self, node: Node) -> str:
        """The prompt that produced answer ``node``, as it was rendered then (see
        :func:`chatcli.chat.answer_record.prompt_messages`)."""
        messages = prompt_messages(self.conv.messages(before=node), node.meta)
        return self._engine().render_prompt(messages, add_generation_prompt=True)

    def next_prompt_start(self) -> str:
        """What the next answer's prompt starts with: the conversation so far, its last turn
        closed (the next message and a new assistant header follow it)."""
        return self._engine().render_prompt(self.conv.messages(), add_generation_prompt=False)

    def context_usage(self) -> tuple[int, int] | None:
        """(tokens the conversation fills, context length), or None before the model loads.

        Counted from the rendered prompt (the template's special tokens included) plus
        the last answer's tokens; called at the start and end of answers, not per token.
        """
        if self.engine is None:
            return None
        engine = self.engine
        leaf = self.conv.leaf
        if not capabilities(engine).exact_prompt:
            return self._reported_usage()
        if leaf is None:
            used = 0
        elif leaf.role == "assistant":
            used = engine.count_tokens(engine.render_prompt(self.conv.messages(before=leaf))) + len(leaf.steps)
        else:
            used = engine.count_tokens(engine.render_prompt(self.conv.messages()))
        return used, engine.identity.context_length

    def _reported_usage(self) -> tuple[int, int] | None:
        """Without the exact prompt (a remote server): the server's own count for the last answer."""
        length = self.engine.identity.context_length if self.engine is not None else 0
        leaf = self.conv.leaf
        if not length or leaf is None or leaf.role != "assistant" or not leaf.meta.get("prompt_tokens"):
            return None
        return int(leaf.meta["prompt_tokens"]) + len(leaf.steps), length

    def export(self, path: str | None = None) -> tuple[Path, Path]:
        """Write the conversation as Markdown and JSON; returns both paths."""
        return export_files(self.conv, path)
