"""Shared pytest fixtures: an isolated CHATCLI_HOME per test, a session-wide tiny model and tokenizer dir."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# `from tests.tiny import ...` works however pytest was started (plain `pytest` too).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.tiny import make_tiny_checkpoint  # noqa: E402
from tests.tiny_tokenizer import write_tokenizer_files  # noqa: E402

# Module- and session-scoped fixtures run outside a test's own CHATCLI_HOME (below): they get this one,
# never the developer's cache (a model loaded there would leave its packed layout in ~/.cache/chatcli/packed).
os.environ["CHATCLI_HOME"] = _SESSION_HOME = tempfile.mkdtemp(prefix="chatcli-tests-home-")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
# And no compiled decode step there either: an unset `compile` is "auto", which for a float32 model starts
# a background AOTInductor build (a minute of C++ per CHATCLI_HOME) and changes what the bench reports.
os.environ["CHATCLI_COMPILE"] = "0"


@pytest.fixture(autouse=True)
def _chatcli_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty CHATCLI_HOME (so nothing touches the real user dirs) and no CHATCLI_* setting variable."""
    home = tmp_path_factory.mktemp("chatcli_home")
    monkeypatch.setenv("CHATCLI_HOME", str(home))
    from chatcli.settings.env import ENV_VARS

    for var in ENV_VARS.values():  # a CHATCLI_MODEL or CHATCLI_TEMPERATURE in the developer's shell stays out
        monkeypatch.delenv(var, raising=False)
    # No per-CPU kernel calibration on load (chatcli.engine.calibration): the suite runs the default
    # paths, fast and the same on every machine; tests/engine/test_calibration.py turns it on.
    monkeypatch.setenv("CHATCLI_CALIBRATE", "0")
    # No compiled decode step unless a test asks (an unset `compile` is "auto": a float32 model would
    # start a background build, minutes of C++ for a test; tests/engine/test_compile_build.py covers it).
    monkeypatch.setenv("CHATCLI_COMPILE", "0")
    # chatcli reads the Hugging Face cache's location at each call: an empty one per test (never the
    # developer's, which `models rm` could delete from), and no endpoint or offline switch from the shell.
    monkeypatch.setenv("HF_HOME", str(home / "huggingface"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random llama (SmolLM2-like, tied embeddings) HF directory, built once per session."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llama"), family="llama", seed=0)


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    """The tiny trained BPE tokenizer (ChatML template) written once per session; tests only read it."""
    d = tmp_path_factory.mktemp("tok")
    write_tokenizer_files(d)
    return d


@pytest.fixture(scope="session")
def tiny_family_dirs(tmp_path_factory):
    """A callable ``family -> dir`` that builds each family's tiny checkpoint once per session."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny_{family}"), family=family, seed=0)
        return built[family]

    return get
