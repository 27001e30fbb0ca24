"""The ``CHATCLI_*`` environment variables that set defaults: one table, one reader.

:data:`ENV_VARS` maps each setting key (:data:`chatcli.settings.keys.KEYS`) to its variable.
The CLI puts these names on its options (``envvar=``), so click reads them and ``--help``
shows them; :func:`read_env` reads the same table for callers without click (the Python
API, the chat's ``/set`` table). An empty variable counts as unset, as click treats it.
Adapters are separated by spaces (``CHATCLI_ADAPTERS="pirate:0.5 shout"``), as click
splits a repeatable option's variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from chatcli.errors import UsageError
from chatcli.settings.keys import KEYS, BadValue, parse_text

ENV_VARS: dict[str, str] = {name: f"CHATCLI_{name.upper()}" for name in KEYS}


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The settings given by environment variables, checked; :class:`UsageError` naming the variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, var in ENV_VARS.items():
        text = environ.get(var)
        if not text:
            continue
        try:
            values[name] = parse_text(name, text)
        except BadValue as e:
            raise UsageError(f"the environment variable {var} {e}; fix or unset it") from None
    return values
