"""Training through a packed group (chatcli.model.training.lora_group) gives the autograd formula's
loss and gradients: the unpacked model, whose LoRA layers add ``s·B·A·dropout(x)`` with autograd's
own operations (lora_linear._add_trained_side), is the reference.

Both draw their dropout masks from torch's global generator in the same order (layer by layer:
q, k, v, o, gate, up, down), so under one seed they drop the same entries and the two models
agree to float rounding, dropout included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.manager import AdapterManager
from chatcli.model.training.lora_group import LoRAGroupFn, Term
from tests.lora_helpers import IDS, peft_model, save_peft

ALL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("group_train")
    trained = save_peft(peft_model(tiny_model_dir, seed=1, target_modules=ALL_LINEARS, r=4, lora_alpha=8), out / "t")
    frozen_pm = peft_model(tiny_model_dir, seed=2, target_modules=["k_proj", "up_proj"], r=2, lora_alpha=4)
    frozen = save_peft(frozen_pm, out / "f")
    return trained, frozen


def _graph_names(root) -> set[str]:
    seen, todo, names = set(), [root], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo += [f for f, _ in node.next_functions]
    return names


def _run(model_dir, adapters, pack: bool, dropout: float, dtype=torch.float32, checkpointing=False, frozen=True):
    model = load_checkpoint(model_dir, pack=pack, dtype=dtype).train()
    model.requires_grad_(False)
    model.set_gradient_checkpointing(checkpointing)
    manager = AdapterManager(model)
    if frozen:
        manager.load(adapters[1], name="f")  # a loaded adapter under the trained one: added, never trained
    manager.load(adapters[0], name="t")
    pairs = [m.lora["t"] for m in model.modules() if hasattr(m, "lora") and "t" in m.lora]
    for p in pairs:
        if dtype != torch.float32:  # float32 masters on a low-precision base, as fine-tuning keeps them
            p.A.data, p.B.data = p.A.data.float(), p.B.data.float()
        p.A.requires_grad_(True)
        p.B.requires_grad_(True)
        p.dropout = dropout
    for m in model.modules():
        if hasattr(m, "invalidate"):
            m.invalidate()
    torch.manual_seed(123)
    logits = model(IDS[:, :-1]).float()
    loss = F.cross_entropy(logits.flatten(0, 1), IDS[:, 1:].flatten())
    loss.backward()
    return loss.detach(), [(p.A.grad.clone(), p.B.grad.clone()) for p in pairs], _graph_names(loss.grad_fn)


@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.7])
def test_packed_training_matches_the_autograd_formula(tiny_model_dir, adapters, dropout):
    loss, grads, names = _run(tiny_model_dir, adapters, pack=True, dropout=dropout)
    ref_loss, ref_grads, ref_names = _run(tiny_model_dir, adapters, pack=False, dropout=dropout)
    assert "LoRAGroupFnBackward" in names and "LoRAGroupFnBackward" not in ref_names
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert len(grads) == len(ref_grads) == 7 * 2  # every linear of both layers
    for (ga, gb), (ra, rb) in zip(grads, ref_grads):
        assert ga.abs().sum() > 0 and gb.abs().sum() > 0
        assert torch.allclose(ga, ra, rtol=1e-4, atol=1e-6 * ra.abs().max().item())
        assert torch.allclose(gb, rb, rtol=1e-4, atol=1e-6 * rb.abs().max().item())


def test_dropout_changes_the_gradients(tiny_model_dir, adapters):
    """The masks are really applied (a test above passing at every p could otherwise mean none is)."""
    _, with_drop, _ = _run(tiny_model_dir, adapters, pack=True, dropout=0.3)
    _, without, _ = _run(tiny_model_dir, adapters, pack=True, dropout=0.0)
    assert not torch.allclose(with_drop[0][0], without[0][0], rtol=1e-2)


def test_gradient_checkpointing_replays_the_same_masks(tiny_model_dir, adapters):
    loss, grads, _ = _run(tiny_model_dir, adapters, pack=True, dropout=0.2, checkpointing=True)
    ref_loss, ref_grads, _ = _run(tiny_model_dir, adapters, pack=True, dropout=0.2)
    assert torch.allclose(loss, ref_loss, rtol=1e-6)
    for (ga, _), (ra, _) in zip(grads, ref_grads):
        assert torch.allclose(ga, ra, rtol=1e-4, atol=1e-6 * ra.abs().max().item())


def test_float32_masters_on_a_bf16_base(tiny_model_dir, adapters):
    loss, grads, names = _run(tiny_model_dir, adapters, pack=True, dropout=0.1, dtype=torch.bfloat16, frozen=False)
    ref_loss, ref_grads, _ = _run(tiny_model_dir, adapters, pack=False, dropout=0.1, dtype=torch.bfloat16, frozen=False)
    assert "LoRAGroupFnBackward" in names
    assert all(g.dtype == torch.float32 for pair in grads for g in pair)
    assert torch.allclose(loss, ref_loss, rtol=1e-2)
    for (ga, gb), (ra, rb) in zip(grads, ref_grads):
        assert torch.allclose(ga, ra, rtol=0.05, atol=0.05 * ra.abs().max().item())
        assert torch.allclose(gb, rb, rtol=0.05, atol=0.05 * rb.abs().max().item())


def test_the_function_against_the_formula_with_gradcheck():
    """Float64, no dropout, two members and a bias: torch's numerical gradients agree."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 7, dtype=torch.float64)
    b = torch.randn(7, dtype=torch.float64)
    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    a1, b1, a2, b2 = leaf(2, 5), leaf(4, 2), leaf(3, 5), leaf(3, 3)
    terms = (Term(0, 4, 0.5, 0.0), Term(4, 3, 2.0, 0.0))
    assert torch.autograd.gradcheck(lambda *t: LoRAGroupFn.apply(t[0], w, b, terms, *t[1:]), (x, a1, b1, a2, b2))
    y = LoRAGroupFn.apply(x, w, b, terms, a1, b1, a2, b2)
    ref = x @ w + b + torch.cat([0.5 * (x @ a1.t()) @ b1.t(), 2.0 * (x @ a2.t()) @ b2.t()], dim=1)
    assert torch.allclose(y, ref)
