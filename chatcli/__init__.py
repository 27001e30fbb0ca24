"""chatcli: a terminal laboratory for small local language models.

The public Python API lives in :mod:`chatcli.api` and is re-exported here
lazily, so ``import chatcli`` stays cheap (no torch import) for the CLI.
"""

__version__ = "0.1.0"

_API = ("load_model", "stream", "generate", "score", "tokenize", "lens", "attention", "sampling_for")


def __getattr__(name: str):
    if name in _API:
        from chatcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'chatcli' has no attribute {name!r}")
