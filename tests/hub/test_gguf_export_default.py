"""The default model exported to GGUF, compared tensor by tensor with the Q4_1 GGUF it was converted from.

A round trip through chatcli's own importer cannot catch a q/k permutation that is wrong the
same way in both directions. So here (1) the export is compared with the shipped file, read
with gguf-py and numpy only: every tensor's name, shape and dequantised values, and the
tokenizer and architecture metadata; and (2) the q/k layout is checked by what it means,
independently of any permutation code: attention scores computed from the HF-layout weights
with Hugging Face's rotate-half RoPE equal those computed from the exported weights with
llama.cpp's RoPE on adjacent pairs.

Skipped when the shipped GGUF is not on this machine (``$CHATCLI_TEST_SHIPPED_GGUF``, or
``SmolLM2-135M-Instruct.Q4_1.gguf`` in chatcli's real download folder) or the default model has
not been converted here (``$CHATCLI_TEST_MODEL_DIR`` points at another converted copy). About a
minute on two CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chatcli.hub.base_ref import base_reference
from chatcli.hub.gguf.exporter import export_gguf
from chatcli.hub.gguf.importer import open_gguf, read_metadata
from chatcli.hub.manifest import read_manifest, sha256_file, verify_model_dir

gguf = pytest.importorskip("gguf")
platformdirs = pytest.importorskip("platformdirs")

REAL_CACHE = Path(platformdirs.user_cache_dir("chatcli"))  # the real one: conftest points CHATCLI_HOME elsewhere
DEFAULT_DIR = Path(os.environ.get("CHATCLI_TEST_MODEL_DIR") or REAL_CACHE / "models" / "smollm2-135m-instruct")
_DOWNLOADED = REAL_CACHE / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# The shipped GGUF: where an older pull left it, else the copy the model cache keeps beside the checkpoint.
SHIPPED = Path(os.environ.get("CHATCLI_TEST_SHIPPED_GGUF")
               or (_DOWNLOADED if _DOWNLOADED.is_file() else DEFAULT_DIR / "source.gguf"))
N_HEAD, N_KV, HEAD_DIM, THETA = 9, 3, 64, 100000.0

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not SHIPPED.is_file() or verify_model_dir(DEFAULT_DIR) != [],
    reason="needs the shipped SmolLM2 Q4_1 GGUF and the converted default model on this machine",
)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.lora.manager import AdapterManager

    source = (read_manifest(DEFAULT_DIR) or {}).get("source", {})
    if source.get("sha256") != sha256_file(SHIPPED):
        pytest.skip(f"{SHIPPED} is not the GGUF the default model was converted from")
    state, _ = AdapterManager(load_checkpoint(DEFAULT_DIR, dtype=torch.float32, device="cpu")).merged_state_dict()
    out = tmp_path_factory.mktemp("default") / "smollm2-f16.gguf"
    repo = base_reference("smollm2-135m-instruct", DEFAULT_DIR).hf_id  # as `chatcli models export` names it
    export_gguf(DEFAULT_DIR, state, out, quantize="f16", source_repo=repo)
    return out


def _values(t) -> np.ndarray:
    """A tensor's values as float32, numpy order, dequantised by gguf-py."""
    shape = tuple(reversed([int(x) for x in t.shape]))
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)


def test_every_tensor_matches_the_shipped_file(exported):
    ours = {t.name: t for t in open_gguf(exported).tensors}
    theirs = {t.name: t for t in open_gguf(SHIPPED).tensors}
    assert sorted(ours) == sorted(theirs) and len(ours) == 272  # tied head: no output.weight in either
    for name, t in theirs.items():
        want, got = _values(t), _values(ours[name])
        assert got.shape == want.shape, name
        # Q4_1/Q8_0 values were dequantised exactly into float32; F16 keeps 11 significant bits
        np.testing.assert_allclose(got, want, rtol=2.0**-11, atol=6e-8, err_msg=name)
        assert ours[name].tensor_type.name == ("F32" if t.tensor_type.name == "F32" else "F16"), name


def test_metadata_matches_the_shipped_file(exported):
    ours, theirs = read_metadata(open_gguf(exported)), read_metadata(open_gguf(SHIPPED))
    same = [k for k in theirs if k.startswith(("llama.", "tokenizer."))] + ["general.architecture"]
    assert len(same) > 20
    for key in same:
        assert ours.get(key) == theirs[key], key
    assert ours["general.source.url"] == "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"


def _rope_hf(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Hugging Face llama: each head's dims i and i + d/2 rotate together (rotate_half)."""
    half = HEAD_DIM // 2
    freq = THETA ** (-np.arange(half) * 2.0 / HEAD_DIM)
    ang = pos[:, None, None] * freq  # [T, 1, half]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], axis=-1)


def _rope_llama_cpp(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """llama.cpp's llama (LLAMA_ROPE_TYPE_NORM): dims 2i and 2i + 1 rotate together."""
    half = HEAD_DIM // 2
    freq = THETA ** (-np.arange(half) * 2.0 / HEAD_DIM)
    ang = pos[:, None, None] * freq
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)
    return out


def _scores(wq: np.ndarray, wk: np.ndarray, x: np.ndarray, pos: np.ndarray, rope) -> np.ndarray:
    q = rope((x @ wq.T).reshape(len(x), N_HEAD, HEAD_DIM), pos)
    k = rope((x @ wk.T).reshape(len(x), N_KV, HEAD_DIM), pos)
    k = np.repeat(k, N_HEAD // N_KV, axis=1)
    return np.einsum("ahd,bhd->hab", q, k)  # [head, query position, key position]


def test_qk_layout_means_the_same_attention(exported):
    from safetensors.numpy import load_file

    hf = load_file(str(DEFAULT_DIR / "model.safetensors"))
    ours = {t.name: t for t in open_gguf(exported).tensors}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 576)).astype(np.float32)
    pos = np.array([0, 1, 5, 17, 300, 4000], dtype=np.float64)
    for layer in range(30):
        p = f"model.layers.{layer}.self_attn."
        want = _scores(hf[p + "q_proj.weight"], hf[p + "k_proj.weight"], x, pos, _rope_hf)
        got = _scores(_values(ours[f"blk.{layer}.attn_q.weight"]), _values(ours[f"blk.{layer}.attn_k.weight"]),
                      x, pos, _rope_llama_cpp)
        scale = np.abs(want).max()
        assert np.abs(got - want).max() < 2e-3 * scale, layer
        # the same weights read without the permutation mean something else
        wrong = _scores(_values(ours[f"blk.{layer}.attn_q.weight"]), _values(ours[f"blk.{layer}.attn_k.weight"]),
                        x, pos, _rope_hf)
        assert np.abs(wrong - want).max() > 0.05 * scale, layer
