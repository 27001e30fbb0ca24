"""Every bad adapter is one actionable line, and the model and its active adapters are untouched."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.lora.validate import check_safetensors
from chatcli.errors import ChatcliError
from tests.lora_helpers import logits, write_config, write_raw_safetensors

HIDDEN, KV = 64, 32  # the tiny llama: q/o 64x64, k/v 32x64
PFX = "base_model.model.model.layers"


def _adapter(seed: int = 0, rank: int = 4, in_f: int = HIDDEN, layers=(0, 1), nan: bool = False) -> LoRAAdapter:
    gen = torch.Generator().manual_seed(seed)
    mods = {}
    for i in layers:
        for proj, out_f in (("q_proj", HIDDEN), ("v_proj", KV)):
            mods[f"model.layers.{i}.self_attn.{proj}"] = ModuleLoRA(
                A=0.3 * torch.randn(rank, in_f, generator=gen), B=0.3 * torch.randn(out_f, rank, generator=gen), alpha=8.0
            )
    if nan:
        next(iter(mods.values())).B[0, 0] = float("nan")
    return LoRAAdapter(modules=mods)


def _good(folder: Path, **kw) -> Path:
    return write_adapter(_adapter(**kw), folder)


def _set_config(folder: Path, **changes) -> Path:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def _entries(n_a: int = 4 * HIDDEN, n_b: int = HIDDEN * 4):
    """Header dict for one q_proj pair (F32) with contiguous offsets, and the matching data."""
    a, b = 4 * n_a, 4 * n_b
    header = {
        f"{PFX}.0.self_attn.q_proj.lora_A.weight": {"dtype": "F32", "shape": [4, HIDDEN], "data_offsets": [0, a]},
        f"{PFX}.0.self_attn.q_proj.lora_B.weight": {"dtype": "F32", "shape": [HIDDEN, 4], "data_offsets": [a, a + b]},
    }
    data = torch.randn(n_a + n_b).numpy().astype("<f4").tobytes()
    return header, data


def _raw(folder: Path, header, data: bytes, header_len: int | None = None) -> Path:
    write_config(folder, target_modules=["q_proj"])
    write_raw_safetensors(folder / "adapter_model.safetensors", header, data, header_len)
    return folder


# --- the bad inputs: each builds a folder (or path) and names a phrase of the expected message -----

def bad_missing(tmp):
    return tmp / "nope", "does not exist"


def bad_no_config(tmp):
    d = _good(tmp / "a")
    (d / "adapter_config.json").unlink()
    return d, "no adapter_config.json"


def bad_config_json(tmp):
    d = _good(tmp / "a")
    (d / "adapter_config.json").write_text("{not json")
    return d, "adapter config is broken"


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_pickle_only(tmp):
    d = write_config(tmp / "a")
    boom = _Boom()
    boom.marker = tmp / "UNPICKLED"
    (d / "adapter_model.bin").write_bytes(pickle.dumps(boom))
    return d, "never unpickled"


def bad_pickle_file(tmp):
    d = bad_pickle_only(tmp)[0]
    return d / "adapter_model.bin", "never unpickled"


def bad_truncated(tmp):
    d = _good(tmp / "a")
    f = d / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    return d, "truncated"


def bad_header_size(tmp):
    header, data = _entries()
    return _raw(tmp / "a", header, data, header_len=2**40), "not a valid safetensors"


def bad_header_past_eof(tmp):
    header, data = _entries()
    raw = json.dumps(header).encode()
    return _raw(tmp / "a", header, data[:0], header_len=len(raw) + 10_000), "not a valid safetensors"


def bad_offsets_past_end(tmp):
    header, data = _entries()
    return _raw(tmp / "a", header, data[:-64]), "truncated"


def bad_overlap(tmp):
    header, data = _entries()
    k = f"{PFX}.0.self_attn.q_proj.lora_B.weight"
    header[k]["data_offsets"] = [512, 512 + 1024]  # starts inside lora_A
    return _raw(tmp / "a", header, data[: 512 + 1024]), "overlaps"


def bad_gap(tmp):
    header, data = _entries()
    k = f"{PFX}.0.self_attn.q_proj.lora_B.weight"
    header[k]["data_offsets"] = [1024 + 8, 1024 + 8 + 1024]
    return _raw(tmp / "a", header, data[:1024] + b"\0" * 8 + data[1024:]), "gap"


def bad_span(tmp):
    header, data = _entries()
    header[f"{PFX}.0.self_attn.q_proj.lora_A.weight"]["shape"] = [4, 32]  # 512 bytes, spans 1024
    return _raw(tmp / "a", header, data), "needs 512 bytes but spans 1024"


def bad_trailing(tmp):
    header, data = _entries()
    return _raw(tmp / "a", header, data + b"\0" * 16), "after the last tensor"


def bad_duplicate_key(tmp):
    header, data = _entries()
    k = f"{PFX}.0.self_attn.q_proj.lora_A.weight"
    a, b = json.dumps(header[k]), json.dumps(header[f"{PFX}.0.self_attn.q_proj.lora_B.weight"])
    raw = ('{"%s": %s, "%s.0.self_attn.q_proj.lora_B.weight": %s, "%s": %s}' % (k, a, PFX, b, k, a)).encode()
    return _raw(tmp / "a", raw, data), "appears twice"


def bad_int_dtype(tmp):
    header, data = _entries()
    header[f"{PFX}.0.self_attn.q_proj.lora_A.weight"]["dtype"] = "I32"
    return _raw(tmp / "a", header, data), "not a float type"


def bad_other_base(tmp):
    return _good(tmp / "a", in_f=96), "lora_A has shape [4, 96] but this model needs [4, 64]"


def bad_no_module(tmp):
    return _good(tmp / "a", layers=(0, 7)), "model.layers.7.self_attn.q_proj"


def bad_not_peft_key(tmp):
    header, data = _entries()
    header = {k.removeprefix("base_model.model."): v for k, v in header.items()}
    return _raw(tmp / "a", header, data), "not a PEFT adapter key"


def bad_rank_vs_config(tmp):
    return _set_config(_good(tmp / "a", rank=4), r=8), "rank 4 but adapter_config.json says r=8"


def bad_zero_size(tmp):
    d = tmp / "a"
    ad = LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": ModuleLoRA(torch.zeros(0, HIDDEN), torch.zeros(HIDDEN, 0), 8.0)})
    write_adapter(ad, d)
    return _set_config(d, r=4), "is empty"


def bad_nan(tmp):
    return _good(tmp / "a", nan=True), "NaN/Inf"


def bad_inf(tmp):
    d = tmp / "a"
    ad = _adapter()
    next(iter(ad.modules.values())).A[1, 2] = float("inf")
    return write_adapter(ad, d), "NaN/Inf"


def bad_rank_cap(tmp):
    return _good(tmp / "a", rank=16), "above the limit of 8"


def bad_dora(tmp):
    return _set_config(_good(tmp / "a"), use_dora=True), "DoRA (use_dora)"


def bad_dora_tensor(tmp):
    header, data = _entries()
    header[f"{PFX}.0.self_attn.q_proj.lora_magnitude_vector"] = {"dtype": "F32", "shape": [2], "data_offsets": [2048, 2056]}
    return _raw(tmp / "a", header, data + b"\0" * 8), "DoRA"


def bad_peft_type(tmp):
    return _set_config(_good(tmp / "a"), peft_type="IA3"), "PEFT IA3 adapter"


def bad_reward_head(tmp):
    return _set_config(_good(tmp / "a"), modules_to_save=["score"]), "modules_to_save 'score'"


def bad_a_without_b(tmp):
    header, data = _entries()
    del header[f"{PFX}.0.self_attn.q_proj.lora_B.weight"]
    return _raw(tmp / "a", header, data[:1024]), "has no lora_B.weight"


def bad_untargeted(tmp):
    return _set_config(_good(tmp / "a"), target_modules=["q_proj"]), "does not target"


def bad_base_copy(tmp):
    d = _good(tmp / "a")
    from safetensors.torch import load_file, save_file

    t = load_file(str(d / "adapter_model.safetensors"))
    t["base_model.model.lm_head.base_layer.weight"] = torch.randn(400, HIDDEN)
    save_file(t, str(d / "adapter_model.safetensors"))
    return d, "differs from this model's"


BAD = {f.__name__.removeprefix("bad_"): f for f in list(globals().values()) if callable(f) and getattr(f, "__name__", "").startswith("bad_")}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tmp_path_factory):
    """A model with one active adapter (the state every refusal must leave alone)."""
    model = load_checkpoint(tiny_model_dir)
    mgr = AdapterManager(model, max_rank=8)
    keep = _good(tmp_path_factory.mktemp("keep") / "keep", seed=5)
    mgr.load(keep, name="keep", scale=0.7)
    return model, mgr


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_adapter_is_one_line_and_changes_nothing(tmp_path, loaded, case):
    model, mgr = loaded
    before = logits(model)
    modules_before = [(n, type(m)) for n, m in model.named_modules()]
    path, phrase = BAD[case](tmp_path)
    with pytest.raises(ChatcliError) as exc:
        mgr.load(path, name="bad")
    msg = exc.value.message
    assert "\n" not in msg and phrase in msg, msg
    assert torch.equal(logits(model), before)
    assert [(n, type(m)) for n, m in model.named_modules()] == modules_before
    assert mgr.names == ["keep"] and mgr.info("keep").scale == 0.7
    assert not (tmp_path / "UNPICKLED").exists()


def test_the_raw_fixture_itself_is_valid(tmp_path, loaded):
    """The corrupt-file cases differ from a loadable file only in what they break."""
    model, mgr = loaded
    header, data = _entries()
    d = _raw(tmp_path / "ok", header, data)
    assert list(check_safetensors(d / "adapter_model.safetensors")) == list(header)
    mgr.load(d, name="ok")
    mgr.unload("ok")


def test_bad_names_and_scales(tmp_path, loaded):
    model, mgr = loaded
    d = _good(tmp_path / "a")
    before = logits(model)
    for kwargs, phrase in (
        (dict(name="keep"), "already loaded"),
        (dict(name="bad name"), "invalid adapter name"),
        (dict(name="x", scale=float("nan")), "finite"),
    ):
        with pytest.raises(ChatcliError, match=phrase):
            mgr.load(d, **kwargs)
    with pytest.raises(ChatcliError, match="no adapter named 'ghost'"):
        mgr.set_scale("ghost", 1.0)
    with pytest.raises(ChatcliError, match="finite"):
        mgr.set_scale("keep", float("inf"))
    assert torch.equal(logits(model), before)


def test_guard_refuses_while_busy(tmp_path, tiny_model_dir):
    import threading

    from chatcli.errors import GenerationError

    lock = threading.Lock()

    def guard():
        from contextlib import contextmanager

        @contextmanager
        def held():
            if not lock.acquire(blocking=False):
                raise GenerationError("the model is busy with another answer; wait for it or stop it")
            try:
                yield
            finally:
                lock.release()

        return held()

    model = load_checkpoint(tiny_model_dir)
    resets: list[int] = []
    mgr = AdapterManager(model, guard=guard, on_change=[lambda: resets.append(1)])
    d = _good(tmp_path / "a")
    base = logits(model)
    with lock:  # an answer is streaming
        with pytest.raises(GenerationError, match="busy"):
            mgr.load(d)
    assert torch.equal(logits(model), base) and len(mgr) == 0 and not resets
    mgr.load(d)
    assert resets == [1]
