"""Compatibility import for plugins written to the README: ``from chatcli.hookspecs import hookimpl``.

The hook specifications live in :mod:`chatcli.plugins.hookspecs`.
"""

from chatcli.plugins.hookspecs import hookimpl, hookspec  # noqa: F401
