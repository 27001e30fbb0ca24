"""Memory checks before loading: a model that cannot fit is refused with the numbers."""

from __future__ import annotations

import pytest

import chatcli
from chatcli.hub import resources
from chatcli.errors import ModelError


def test_loading_a_model_too_big_for_memory_is_refused_with_numbers(tiny_model_dir, monkeypatch):
    params = resources.count_parameters(tiny_model_dir)
    assert params and params > 10_000
    monkeypatch.setattr(resources, "available_memory", lambda: params * 3)  # room for bf16 (2 B each), not float32 (4 B)
    with pytest.raises(ModelError) as e:
        chatcli.load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    msg = e.value.message
    assert "float32" in msg and "available" in msg and "bfloat16" in msg and "\n" not in msg
    model = chatcli.load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert model.identity.dtype == "bfloat16"
