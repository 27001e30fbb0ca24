"""chatcli's first-party plugins.

Each sub-package is an ordinary chatcli plugin, registered through the
``chatcli.plugins`` entry-point group exactly as a third-party plugin would be
(see ``pyproject.toml``), so ``CHATCLI_PLUGINS`` and ``chatcli plugins list``
treat them like any other. A plugin package's ``__init__`` holds only its hook
implementations and stays cheap to import; the real work lives in modules it
imports when a command runs.
"""
