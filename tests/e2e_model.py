"""Where e2e tests find the real default model (SmolLM2-135M-Instruct), or skip.

``CHATCLI_TEST_MODEL_DIR`` points at any local HF-style copy; otherwise the hub
resolves (and on first use pulls) the default model into the user cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcli.errors import ChatcliError


def default_model_dir() -> Path:
    env = os.environ.get("CHATCLI_TEST_MODEL_DIR")
    if env:
        return Path(env)
    try:
        from chatcli.engine.hub import resolve_model
    except ImportError as e:
        pytest.skip(f"no hub module to provide the default model: {e}")
    try:
        return Path(resolve_model("smollm2-135m-instruct"))
    except ChatcliError as e:
        pytest.skip(f"default model not available: {e.message}")
