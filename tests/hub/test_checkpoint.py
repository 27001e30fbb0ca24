"""Checkpoint loading: single and sharded safetensors, key checks, pickle refusal, dtypes, devices."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from chatcli.hub.checkpoint import load_checkpoint, read_model_config, resolve_device, resolve_dtype
from chatcli.errors import ModelError, UsageError
from tests.tiny import EOS_ID, load_hf_oracle, make_tiny_checkpoint


def _ids(shape, seed=0) -> torch.Tensor:
    return torch.randint(3, 400, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny llama directory that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@torch.no_grad()
def test_loads_with_tied_head_and_matches_transformers(tiny_model_dir):
    progress = []
    model = load_checkpoint(tiny_model_dir, progress=lambda stage, done, total: progress.append((done, total)))
    assert not model.training
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(not t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    ids = _ids((2, 20))
    assert (model(ids) - load_hf_oracle(tiny_model_dir)(ids).logits).abs().max().item() <= 1e-4
    total = progress[-1][1]
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert total == len(model.checkpoint_keys())


@torch.no_grad()
def test_sharded_checkpoint_loads_like_the_single_file(tiny_model_dir, tmp_path):
    sharded = make_tiny_checkpoint(tmp_path / "sharded", save_kwargs={"max_shard_size": "60KB"})
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    ids = _ids((1, 16))
    assert torch.equal(load_checkpoint(sharded)(ids), load_checkpoint(tiny_model_dir)(ids))


def test_missing_shard_is_named(tmp_path):
    sharded = make_tiny_checkpoint(tmp_path / "sharded", save_kwargs={"max_shard_size": "60KB"})
    victim = sorted(sharded.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(ModelError, match=f"missing shard.*{victim.name}.*pull the model again"):
        load_checkpoint(sharded)


class _Trap:
    """Unpickling this creates a file: proof that a loader ran pickle's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_refused_without_being_unpickled(model_copy, tmp_path):
    (model_copy / "model.safetensors").unlink()
    marker = tmp_path / "pickle_code_ran"
    weights = model_copy / "pytorch_model.bin"
    weights.write_bytes(pickle.dumps(_Trap(marker)))

    with pytest.raises(ModelError, match="refusing pickle weights \\(pytorch_model.bin\\).*arbitrary code.*safetensors"):
        load_checkpoint(model_copy)
    with pytest.raises(ModelError, match="refusing pickle"):
        load_checkpoint(weights)  # the file itself
    assert not marker.exists()

    pickle.loads(weights.read_bytes())  # the trap is live: unpickling does run code
    assert marker.exists()


def test_safetensors_preferred_over_pickle_in_the_same_dir(model_copy, tmp_path):
    marker = tmp_path / "pickle_code_ran"
    (model_copy / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    load_checkpoint(model_copy)
    assert not marker.exists()


def test_unsupported_model_type_names_the_supported_ones(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unsupported model_type 'gpt2'.*llama, mistral, qwen2, qwen3"):
        load_checkpoint(model_copy)


def test_key_problems_are_listed_together(model_copy):
    path = model_copy / "model.safetensors"
    sd = load_file(path)
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.0.self_attn.extra.weight"] = torch.zeros(2)
    sd["model.norm.weight"] = torch.ones(65)
    save_file(sd, path)
    with pytest.raises(ModelError) as err:
        load_checkpoint(model_copy)
    msg = err.value.message
    assert "\n" not in msg
    assert "1 missing: model.layers.1.mlp.up_proj.weight" in msg
    assert "1 unexpected: model.layers.0.self_attn.extra.weight" in msg
    assert "model.norm.weight [65] (expected [64])" in msg


def test_quantized_tensors_are_refused(model_copy):
    path = model_copy / "model.safetensors"
    sd = load_file(path)
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.int8)
    save_file(sd, path)
    with pytest.raises(ModelError, match="not float.*model.norm.weight I8"):
        load_checkpoint(model_copy)


def test_tied_head_saved_anyway_is_accepted(model_copy):
    path = model_copy / "model.safetensors"
    sd = load_file(path)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    save_file(sd, path)
    model = load_checkpoint(model_copy)
    assert model.lm_head.weight is model.model.embed_tokens.weight


@torch.no_grad()
def test_bfloat16_loading_matches_transformers_in_bfloat16(tiny_model_dir):
    import transformers

    model = load_checkpoint(tiny_model_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.bfloat16
    ids = _ids((2, 24))
    logits = model(ids)
    assert logits.dtype == torch.bfloat16
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    ref = hf(ids).logits.float()
    assert (logits.float() - ref).abs().max().item() <= 0.25  # a few bf16 ulps at |logit| ~ 40
    # and bf16 is a real approximation of float32: same greedy choice at most positions
    f32 = load_checkpoint(tiny_model_dir)(ids)
    agree = (logits.float().argmax(-1) == f32.argmax(-1)).float().mean().item()
    assert agree > 0.9


def test_bf16_checkpoint_loads_as_float32(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "bf16", seed=1)
    sd = {k: v.to(torch.bfloat16) for k, v in load_file(d / "model.safetensors").items()}
    save_file(sd, d / "model.safetensors")
    model = load_checkpoint(d, dtype=torch.float32)
    assert model.dtype == torch.float32
    assert torch.equal(model.model.norm.weight, sd["model.norm.weight"].float())


def test_config_reads_generation_eos_ids(model_copy):
    gen = json.loads((model_copy / "generation_config.json").read_text())
    gen["eos_token_id"] = [0, EOS_ID]
    (model_copy / "generation_config.json").write_text(json.dumps(gen))
    cfg = read_model_config(model_copy)
    assert cfg.eos_token_id == (EOS_ID, 0)
    assert cfg.bos_token_id == 1


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "cannot read config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors or model.safetensors.index.json"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!"), "corrupt"),
    ],
)
def test_broken_directories_give_one_line_errors(model_copy, damage, match):
    damage(model_copy)
    with pytest.raises(ModelError, match=match) as err:
        load_checkpoint(model_copy)
    assert "\n" not in err.value.message


def test_missing_directory_and_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="GGUF file: import it"):
        load_checkpoint(gguf)


def test_resolve_dtype_and_device(tiny_model_dir):
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("BF16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype("auto", "cpu") is torch.float32
    if not torch.cuda.is_available():
        model = load_checkpoint(tiny_model_dir, dtype="auto", device="auto")
        assert model.dtype == torch.float32
    with pytest.raises(UsageError, match="unknown dtype 'int4'"):
        resolve_dtype("int4")
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_cuda_loading_matches_cpu(tiny_model_dir):
    ids = _ids((2, 24))
    ref = load_checkpoint(tiny_model_dir)(ids)
    gpu = load_checkpoint(tiny_model_dir, device="cuda")
    assert gpu.device.type == "cuda" and gpu.model.rotary_emb.inv_freq.device.type == "cuda"
    assert (gpu(ids.cuda()).cpu() - ref).abs().max().item() <= 1e-3
    bf16 = load_checkpoint(tiny_model_dir, dtype="auto", device="cuda")
    assert bf16.dtype in (torch.bfloat16, torch.float16)
    agree = (bf16(ids.cuda()).float().cpu().argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree > 0.9
