"""Compatibility import for plugins written to the README: ``from chatcli.commands import Arg``.

The slash-command machinery lives in :mod:`chatcli.chat.commands`; this module only re-exports
what a plugin may use (``FrontEnd``: what ``ctx.frontend`` declares a chat can do). Plugin-facing compatibility modules: ``chatcli.commands`` and
``chatcli.hookspecs`` (listed in the README's "How it is built").
"""

from chatcli.chat.commands import Arg, Command, CommandContext, execute, is_command  # noqa: F401
from chatcli.chat.frontend import FrontEnd  # noqa: F401
