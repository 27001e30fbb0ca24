"""The served tiny model most serve tests talk to: ``server`` (chatcli serve's app on a loopback
port) and ``ref`` (a second engine on the same weights, so the same answers), one pair per module.

A module that needs another set-up (adapters, an API key, a stubbed engine) defines its own
``server``; pytest's own override rule makes that one win for that module.
"""

from __future__ import annotations

import pytest

from tests.serve_support import served, tiny_engine


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    """(served engine, reference engine): the same weights, so the same answers."""
    return tiny_engine(tiny_model_dir), tiny_engine(tiny_model_dir)


@pytest.fixture(scope="module")
def server(engines):
    with served(engines[0]) as s:
        yield s


@pytest.fixture(scope="module")
def ref(engines):
    return engines[1]
