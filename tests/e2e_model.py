"""Where e2e tests find the real default model (SmolLM2-135M-Instruct), or skip.

``CHATCLI_TEST_MODEL_DIR`` points at any local HF-style copy. Otherwise the hub
resolves the default model under ``CHATCLI_TEST_CACHE`` (kept between runs, as in
``test_e2e_default_model.py``) or a temporary home, pulling it on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcli.errors import ChatcliError


_resolved: list[Path] = []  # one pull per test session, shared by every module that asks
_homes: list[Path] = []


def e2e_home(tmp_path_factory) -> Path:
    """One CHATCLI_HOME for every e2e test of the session (``CHATCLI_TEST_CACHE`` keeps it across runs)."""
    if not _homes:
        shared = os.environ.get("CHATCLI_TEST_CACHE")
        _homes.append(Path(shared) if shared else tmp_path_factory.mktemp("e2e_home"))
    return _homes[0]


def default_model_dir(tmp_path_factory) -> Path:
    env = os.environ.get("CHATCLI_TEST_MODEL_DIR")
    if env:
        return Path(env)
    if _resolved:
        return _resolved[0]
    from chatcli.hub import catalog as hub

    home = e2e_home(tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATCLI_HOME", str(home))
        try:
            _resolved.append(hub.resolve_model(hub.DEFAULT_MODEL))
        except ChatcliError as e:
            pytest.skip(f"default model not available: {e.message}")
    return _resolved[0]
