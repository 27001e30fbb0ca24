"""GGUF import: weights, config and tokenizer against the HF original and transformers' own GGUF loader.

Tiny GGUFs are written in the test session (tests/tiny_gguf.py) from the tiny HF
llama, the way llama.cpp's converter writes them (q/k permuted, matrices quantized).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from chatcli.hub.gguf import importer as gguf_import
from chatcli.hub.gguf.importer import import_gguf, open_gguf, read_metadata
from chatcli.hub.gguf.llama import unpermute_rotary
from chatcli.hub.gguf.tokenizer import tokenizer_from_gguf
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.errors import ModelError
from tests.tiny_gguf import hf_state, llama_cpp_permute, write_tiny_gguf

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

PROMPT = torch.tensor([[1, 5, 77, 200, 3, 42, 9, 310, 2, 1, 17]])

# Our own texts; no digits (the smollm digit rule is checked separately).
TEXTS = [
    "The river bends twice before it reaches the old mill.",
    "def area(w, h):\n    return w * h  # rectangle\n\n\nprint(area)",
    "Tabs\tand  double  spaces, newlines\n\nand CAPS: HELLO there!",
    "小模型一次生成一个词元。你好，世界！",
    "Emoji too 🙂🚀 and accents: naïve café façade",
    "<|im_start|>user\nhow are you?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A folder holding tiny GGUFs (one per tensor type), built on demand."""
    return tmp_path_factory.mktemp("gguf")


def _gguf(gguf_dir: Path, hf_dir: Path, qtype: str, **kw) -> Path:
    name = f"{qtype}-{abs(hash(json.dumps(kw, sort_keys=True, default=str))) % 10**8}.gguf"
    path = gguf_dir / name
    if not path.exists():
        write_tiny_gguf(path, hf_dir, qtype=qtype, **kw)
    return path


def _transformers_from_gguf(path: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for n_head, head_dim, cols in [(4, 16, 64), (3, 64, 8), (9, 64, 1)]:
        w = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
        permuted = llama_cpp_permute(w, n_head)
        assert not np.array_equal(permuted, w)
        assert np.array_equal(unpermute_rotary(permuted, n_head), w)


def test_f32_import_reproduces_the_hf_checkpoint_exactly(gguf_dir, tiny_model_dir, tmp_path):
    src = _gguf(gguf_dir, tiny_model_dir, "F32")
    out = import_gguf(src, tmp_path / "model")
    ours = load_file(str(out / "model.safetensors"))
    orig = hf_state(tiny_model_dir)
    assert set(ours) == set(orig) - {"lm_head.weight"}  # tied: no output tensor in the GGUF
    for name, arr in orig.items():
        if name in ours:
            assert np.array_equal(ours[name], arr), name

    cfg = json.loads((out / "config.json").read_text())
    ref = json.loads((tiny_model_dir / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "vocab_size"):
        assert cfg[key] == ref[key], key
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["tie_word_embeddings"] is True and cfg["head_dim"] == 16
    assert cfg["rope_theta"] == 10000.0 and cfg["bos_token_id"] == 1 and cfg["eos_token_id"] == 2
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2

    manifest = read_manifest(out)
    assert manifest["converter_version"] == gguf_import.CONVERTER_VERSION
    assert manifest["source"]["sha256"] and manifest["source"]["tensor_types"] == ["F32"]
    assert manifest["parameters"] == sum(a.size for a in ours.values())
    assert verify_model_dir(out, full=True) == []


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantized_import_matches_transformers(gguf_dir, tiny_model_dir, tmp_path, qtype):
    src = _gguf(gguf_dir, tiny_model_dir, qtype, embed_qtype="Q8_0")
    out = import_gguf(src, tmp_path / "model")
    ours = load_file(str(out / "model.safetensors"))
    ref = _transformers_from_gguf(src)
    ref_state = ref.state_dict()
    for name, arr in ours.items():
        assert np.abs(ref_state[name].numpy() - arr).max() <= 1e-6, name
    # Dequantized weights are close to the originals (a wrong layout or permutation is not).
    orig = hf_state(tiny_model_dir)
    q = ours["model.layers.1.self_attn.q_proj.weight"]
    assert np.abs(q - orig["model.layers.1.self_attn.q_proj.weight"]).mean() < 0.1 * np.abs(q).mean()

    ours_hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(PROMPT).logits
        assert (ours_hf(PROMPT).logits - want).abs().max().item() < 1e-4
        from chatcli.hub.checkpoint import load_checkpoint

        engine_model = load_checkpoint(out)
        assert (engine_model(PROMPT) - want).abs().max().item() < 1e-4


def _random_kquant_tensor(qtype: str, rows: int, cols: int, rng) -> np.ndarray:
    """Random K-quant blocks with sane f16 scales (gguf-py cannot quantize K types)."""
    import gguf

    q = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[q]
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    # (offset of the f16 scale fields) per type, from ggml's block_qN_K structs
    f16_at = {"Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}[qtype]
    for off in f16_at:
        scale = rng.uniform(0.001, 0.01, size=blocks.shape[0]).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // block * size)


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_k_quants_dequantize_as_transformers_does(tmp_path, qtype):
    from tests.tiny import make_tiny_checkpoint

    # K-quant blocks hold 256 values: rows of hidden/intermediate must be multiples of 256.
    hf = make_tiny_checkpoint(tmp_path / "hf", hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                              num_attention_heads=4, num_key_value_heads=2)
    blocks = _random_kquant_tensor(qtype, 256, 256, np.random.default_rng(1))
    src = write_tiny_gguf(tmp_path / "k.gguf", hf, raw_tensors={"blk.0.ffn_up.weight": (blocks, qtype)})
    out = import_gguf(src, tmp_path / "model")
    up = load_file(str(out / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    ref = _transformers_from_gguf(src).state_dict()["model.layers.0.mlp.up_proj.weight"].numpy()
    assert np.isfinite(up).all() and np.abs(up).max() > 0
    assert np.abs(ref - up).max() <= 1e-6


def test_bfloat16_output_is_the_rounded_float32(gguf_dir, tiny_model_dir, tmp_path):
    src = _gguf(gguf_dir, tiny_model_dir, "Q8_0")
    f32 = import_gguf(src, tmp_path / "f32")
    bf16 = import_gguf(src, tmp_path / "bf16", dtype="bfloat16")
    from safetensors.torch import load_file as load_torch

    a, b = load_torch(str(f32 / "model.safetensors")), load_torch(str(bf16 / "model.safetensors"))
    for name in a:
        assert b[name].dtype == torch.bfloat16
        assert torch.equal(a[name].to(torch.bfloat16), b[name]), name
    assert json.loads((bf16 / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert (bf16 / "model.safetensors").stat().st_size < 0.6 * (f32 / "model.safetensors").stat().st_size


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_matches_transformers_on_text_without_digits(gguf_dir, tiny_model_dir, tmp_path):
    src = _gguf(gguf_dir, tiny_model_dir, "F32")
    out = import_gguf(src, tmp_path / "model")
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref = transformers.AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == ref(text).input_ids, text
        assert ours.decode(ids, skip_special_tokens=False) == text
    # Special tokens stay whole.
    assert ours.encode("<|im_start|>").ids == [1]

    tc = json.loads((out / "tokenizer_config.json").read_text())
    orig_tc = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert tc["chat_template"] == orig_tc["chat_template"]
    assert (tc["bos_token"], tc["eos_token"], tc["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tc["add_bos_token"] is False


def test_smollm_pre_tokenizer_splits_every_digit(gguf_dir, tiny_model_dir):
    # The tiny vocabulary has merged digit tokens ("12", "34", "Ġ2"); SmolLM2's rule never uses them.
    meta = read_metadata(open_gguf(_gguf(gguf_dir, tiny_model_dir, "F32")))
    ours = tokenizer_from_gguf(meta)
    enc = ours.encode("In 2024 we sold 12345 apples")
    digits = [t for t in enc.tokens if any(c.isdigit() for c in t)]
    assert digits == list("2024") + list("12345")
    # The plain GPT-2 split (pre "gpt2") does use them: the rule is what makes the difference.
    gpt2 = tokenizer_from_gguf({**meta, "tokenizer.ggml.pre": "gpt2"})
    assert "12" in gpt2.encode("12345").tokens


def test_llama3_and_qwen2_pre_tokenizers_match_transformers(gguf_dir, tiny_model_dir):
    for pre in ("llama-bpe", "qwen2"):
        src = _gguf(gguf_dir, tiny_model_dir, "F32", pre=pre)
        ours = tokenizer_from_gguf(read_metadata(open_gguf(src)))
        ref = transformers.AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        for text in TEXTS:
            assert ours.encode(text).ids == ref(text).input_ids, (pre, text)


def test_sentencepiece_vocabulary_matches_transformers(tmp_path):
    import gguf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tests.tiny_tokenizer import CORPUS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.train_from_iterator(CORPUS * 3, trainer=trainers.BpeTrainer(vocab_size=300, show_progress=False))
    learned = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + learned
    types = [2, 3, 3] + [6] * 256 + [1] * len(learned)
    scores = [0.0] * 259 + [-float(i) for i in range(len(learned))]
    path = tmp_path / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = tokenizer_from_gguf(read_metadata(open_gguf(path)))
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS + ["Numbers 12345 too", "  two leading spaces"]:
        assert ours.encode(text).ids == ref(text).input_ids, text  # both add BOS <s>
    assert ours.encode("hi").ids[0] == 1
    assert ours.decode(ours.encode("小模型 🙂").ids) == "小模型 🙂"  # byte fallback round trip


# ---------------------------------------------------------------- refusals and atomicity


def test_refusals_name_the_problem(gguf_dir, tiny_model_dir, tmp_path):
    def refused(match: str, **kw):
        src = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}.gguf"
        write_tiny_gguf(src, tiny_model_dir, **kw)
        with pytest.raises(ModelError, match=match):
            import_gguf(src, tmp_path / "out")
        assert not (tmp_path / "out").exists()

    refused("architecture 'qwen2' is not supported", arch="qwen2")
    refused("pre-tokenizer 'made-up' is not supported", pre="made-up")
    refused("unknown tensor blk.0.attn_q.bias", extra_tensors={"blk.0.attn_q.bias": np.zeros(64, np.float32)})
    refused("missing tensor model.layers.1.mlp.up_proj.weight", drop_tensors=("blk.1.ffn_up.weight",))
    refused("output_norm.weight has type F64.*supported types: F32",
            drop_tensors=("output_norm.weight",), extra_tensors={"output_norm.weight": np.ones(64, np.float64)})
    refused("rope_freqs", extra_tensors={"rope_freqs.weight": np.ones(8, np.float32)})
    foreign = tmp_path / "my-documents"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not made by chatcli"):
        import_gguf(_gguf(gguf_dir, tiny_model_dir, "F32"), foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ModelError, match="not a readable GGUF"):
        import_gguf(junk, tmp_path / "out")
    with pytest.raises(ModelError, match="dtype"):
        import_gguf(_gguf(gguf_dir, tiny_model_dir, "F32"), tmp_path / "out", dtype="int8")


def test_interrupted_import_leaves_nothing_and_keeps_the_old_entry(gguf_dir, tiny_model_dir, tmp_path, monkeypatch):
    src = _gguf(gguf_dir, tiny_model_dir, "Q8_0")
    calls = {"n": 0}
    real_write = gguf_import.SafetensorsStreamWriter.write

    def failing_write(self, name, array):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if the person pressed Ctrl-C mid-conversion
        real_write(self, name, array)

    monkeypatch.setattr(gguf_import.SafetensorsStreamWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        import_gguf(src, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # no model dir, no temporary

    monkeypatch.setattr(gguf_import.SafetensorsStreamWriter, "write", real_write)
    good = import_gguf(src, tmp_path / "model")
    before = (good / "model.safetensors").read_bytes()
    calls["n"] = 0
    monkeypatch.setattr(gguf_import.SafetensorsStreamWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        import_gguf(src, tmp_path / "model", dtype="bfloat16")
    assert (good / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_not_enough_disk_or_memory_is_refused_with_numbers(gguf_dir, tiny_model_dir, tmp_path, monkeypatch):
    src = _gguf(gguf_dir, tiny_model_dir, "F32")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gguf_import.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ModelError, match=r"needs .* MB of disk .* 0\.0 MB free.*bfloat16"):
        import_gguf(src, tmp_path / "model")
    monkeypatch.undo()
    monkeypatch.setattr(gguf_import, "physical_memory", lambda: 10_000)
    with pytest.raises(ModelError, match=r"needs .* of memory .*bfloat16"):
        import_gguf(src, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_progress_is_reported_per_tensor(gguf_dir, tiny_model_dir, tmp_path):
    src = _gguf(gguf_dir, tiny_model_dir, "Q4_1")
    seen: list[tuple[str, int, int | None]] = []
    import_gguf(src, tmp_path / "model", progress=lambda s, d, t: seen.append((s, d, t)))
    conv = [(d, t) for s, d, t in seen if s == "converting tensors"]
    n = len(open_gguf(src).tensors)
    assert conv == [(i, n) for i in range(1, n + 1)]
