"""LoRA on the real default model: a PEFT adapter on every linear layer gives PEFT's logits."""

from __future__ import annotations

import warnings

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from tests.e2e_model import default_model_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return default_model_dir(tmp_path_factory)


def test_peft_adapter_on_the_default_model(model_dir, tmp_path):
    import transformers
    from peft import LoraConfig, get_peft_model

    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_" in name:
                    p.mul_(0.2)  # random but moderate: the answer changes, nothing explodes
        pm.save_pretrained(tmp_path / "ad")
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 30, 2, 198, 1, 4093, 198]])
    with torch.no_grad():
        ref = pm(ids).logits

    model = load_checkpoint(model_dir)
    with torch.no_grad():
        base = model(ids)
    mgr = AdapterManager(model)
    info = mgr.load(tmp_path / "ad")
    assert info.modules == 7 * model.config.num_hidden_layers
    with torch.no_grad():
        out = model(ids)
    assert (out - base).abs().max() > 0.1
    assert (out - ref).abs().max() <= 1e-4
    mgr.unload(info.name)
    with torch.no_grad():
        assert torch.equal(model(ids), base)
