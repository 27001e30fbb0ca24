"""Seeded, bounded fuzzing of the files chatcli reads from strangers.

Valid safetensors headers, GGUF files (tests/tiny_gguf.py) and ``adapter_config.json``
documents are mutated (byte flips, type swaps, deep nesting, huge numbers, integer
fields of the binary layout set to edge values), each mutant is handed to the code that
reads such files, and every outcome must be a success or one :class:`ChatcliError`,
within a time limit: no other exception type, no hang. A safetensors header that
chatcli accepts must also be one the safetensors library reads.

``random.Random(0)`` makes every run the same mutants; the counts keep the whole file
near 20 s on a 2-core machine (``FUZZ_SCALE=10`` in the environment runs ten times more).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch

from chatcli.errors import ChatcliError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.hub.safetensors_header import HeaderError, parse_header
from chatcli.hub.safetensors_io import check_file
from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, plan_adapter, write_adapter

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
LIMIT_S = 10.0  # per mutant; the slowest legitimate case (a GGUF import) takes ~0.3 s

# Values that break code expecting something else: wrong types, edges, non-finite, huge, nested.
POOL = [
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, -(2**64), 10**400, 1.5, -0.0, float("inf"), float("nan"),
    "", "x", "4", "q_proj", "(.*.*)*X", "[", [], [1], ["q_proj"], [["lm_head"]], [None], {}, {"a": 1}, {"q_proj": "x"},
]  # fmt: skip


def _bounded(fn, what: str):
    """Run ``fn`` in a daemon thread: "ok", "refused" (a ChatcliError), or the test fails naming ``what``."""
    box: dict = {}

    def run():
        try:
            fn()
            box["result"] = "ok"
        except ChatcliError as e:
            box["result"] = "refused" if "\n" not in e.message else f"multi-line message {e.message!r}"
        except BaseException as e:  # noqa: BLE001 - reported below
            box["result"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(LIMIT_S)
    if t.is_alive():
        pytest.fail(f"{what}: still running after {LIMIT_S} s")
    if box["result"] not in ("ok", "refused"):
        pytest.fail(f"{what}: {box['result'][:500]}")
    return box["result"]


def _deep(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def _swap(rng: random.Random, doc, path_choices: list[tuple]) -> object:
    """Replace the value at one of ``path_choices`` (tuples of keys) in a copy of ``doc``."""
    doc = json.loads(json.dumps(doc))
    path = rng.choice(path_choices)
    node = doc
    for key in path[:-1]:
        node = node[key]
    roll = rng.random()
    if roll < 0.7:
        value = rng.choice(POOL)
    elif roll < 0.85:
        value = _deep(rng.choice(POOL), rng.choice([63, 64, 65, 200, 5000]))
    else:
        value = rng.choice([10**k for k in (18, 19, 20, 300, 5000)]) * rng.choice([1, -1])
    node[path[-1]] = value
    return doc


def _dumps(doc) -> bytes:
    try:
        return json.dumps(doc).encode()  # NaN/Infinity are written as Python writes them
    except (ValueError, RecursionError):
        return b"{}"


def _flip(rng: random.Random, raw: bytes, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray(raw)
    end = len(out) if end is None else end
    for _ in range(rng.randint(1, 4)):
        j = rng.randrange(start, end)
        roll = rng.random()
        if roll < 0.5:
            out[j] = rng.choice(b'0123456789-.eE"[]{},: \\uNaIfty') if rng.random() < 0.7 else rng.randrange(256)
        elif roll < 0.75:
            del out[j]
            end -= 1
        else:
            out.insert(j, rng.choice(b'0123456789-."[]{},'))
            end += 1
    return bytes(out)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager(tiny_model_dir):
    return AdapterManager(load_checkpoint(tiny_model_dir))


@pytest.fixture(scope="module")
def good_adapter(tmp_path_factory, tiny_model_dir) -> Path:
    gen = torch.Generator().manual_seed(0)
    mods = {
        f"model.layers.{i}.self_attn.{p}": ModuleLoRA(0.1 * torch.randn(4, 64, generator=gen), 0.1 * torch.randn(out, 4, generator=gen), 8.0)
        for i in (0, 1)
        for p, out in (("q_proj", 64), ("v_proj", 32))
    }
    return write_adapter(LoRAAdapter(modules=mods, base_model="tiny"), tmp_path_factory.mktemp("fuzz") / "good")


def _load(manager: AdapterManager, folder: Path) -> None:
    """plan_adapter (no model), then the full load; an adapter that loads is unloaded again."""
    plan_adapter(folder)
    info = manager.load(folder, name="fuzz")
    manager.unload(info.name)


# --- safetensors headers -------------------------------------------------------------------------


def test_fuzz_safetensors_headers(tmp_path, good_adapter, manager):
    rng = random.Random(0)
    raw = (good_adapter / "adapter_model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    paths = [("__metadata__", "format"), ("__metadata__",)]
    for key in (k for k in header if k != "__metadata__"):
        paths += [(key,), (key, "dtype"), (key, "shape"), (key, "data_offsets"), (key, "shape", 0), (key, "data_offsets", 1)]
    outcomes = {"ok": 0, "refused": 0}
    for i in range(300 * SCALE):
        roll = rng.random()
        if roll < 0.45:
            body = _dumps(_swap(rng, header, paths))
            blob = struct.pack("<Q", len(body)) + body + data
        elif roll < 0.85:
            blob = _flip(rng, raw, 8, 8 + n)
            blob = struct.pack("<Q", n + len(blob) - len(raw)) + blob[8:]
        else:  # the length field itself
            length = rng.choice([0, 1, 7, n - 1, n + 1, 2**31, 100_000_001, 2**64 - 1])
            blob = struct.pack("<Q", length) + raw[8:]
        folder = tmp_path / f"st{i}"
        shutil.copytree(good_adapter, folder)
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(blob)
        what = f"safetensors mutant {i}: {blob[:200]!r}"
        problem = check_file(weights)  # returns a phrase, never raises
        assert problem is None or isinstance(problem, str), what
        _library_agrees(weights, what)
        outcomes[_bounded(lambda: _load(manager, folder), what)] += 1
        shutil.rmtree(folder)
    assert outcomes["refused"] > 100 and outcomes["ok"] > 0, outcomes


def _library_agrees(path: Path, what: str) -> None:
    """A header chatcli accepts, the safetensors library must read, every tensor."""
    from safetensors import safe_open

    try:
        parse_header(path)
    except (HeaderError, ChatcliError):
        return
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            f.get_tensor(key)
        f.metadata()


# --- adapter_config.json -------------------------------------------------------------------------

CONFIG_FIELDS = [
    "r", "lora_alpha", "use_rslora", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
    "rank_pattern", "alpha_pattern", "modules_to_save", "base_model_name_or_path", "task_type", "peft_type",
    "use_dora", "bias", "lora_bias", "layer_replication",
]  # fmt: skip


def test_fuzz_adapter_configs(tmp_path, good_adapter, manager):
    rng = random.Random(0)
    config = json.loads((good_adapter / "adapter_config.json").read_text())
    config.update(rank_pattern={"q_proj": 4}, alpha_pattern={"v_proj": 8})
    paths = [(f,) for f in CONFIG_FIELDS] + [("rank_pattern", "q_proj"), ("alpha_pattern", "v_proj"), ("target_modules", 0)]
    text = json.dumps(config).encode()
    outcomes = {"ok": 0, "refused": 0}
    for i in range(400 * SCALE):
        roll = rng.random()
        if roll < 0.6:
            body = _dumps(_swap(rng, config, paths))
        elif roll < 0.9:
            body = _flip(rng, text)
        else:
            body = b'{"r": ' + b"[" * rng.choice([65, 1000, 100_000]) + b"]" * rng.choice([65, 1000, 100_000]) + b"}"
        folder = tmp_path / f"cfg{i}"
        shutil.copytree(good_adapter, folder)
        (folder / "adapter_config.json").write_bytes(body)
        outcomes[_bounded(lambda: _load(manager, folder), f"config mutant {i}: {body[:300]!r}")] += 1
        shutil.rmtree(folder)
    assert outcomes["refused"] > 100 and outcomes["ok"] > 10, outcomes


# --- GGUF ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> tuple[bytes, list[tuple[int, int]]]:
    """A tiny Q8_0 GGUF and the (offset, width) of every integer in its header and tensor table."""
    import gguf

    from tests.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("fuzz_gguf") / "tiny.gguf", tiny_model_dir, qtype="Q8_0")
    reader = gguf.GGUFReader(str(path))
    base = reader.data.ctypes.data
    ints = []
    for field in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
        for part in field.parts:
            if part.dtype.kind in "ui" and part.dtype.itemsize >= 4:
                start = part.ctypes.data - base
                ints += [(start + k * part.dtype.itemsize, part.dtype.itemsize) for k in range(min(part.size, 4))]
    raw = path.read_bytes()
    del reader
    return raw, ints


def test_fuzz_gguf_files(tmp_path, tiny_gguf):
    from chatcli.hub.gguf.importer import import_gguf

    rng = random.Random(0)
    raw, ints = tiny_gguf
    header_end = max(off + width for off, width in ints)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(40 * SCALE):
        blob = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6:  # an integer of the layout: counts, lengths, types, dims, offsets
                off, width = rng.choice(ints)
                old = int.from_bytes(blob[off : off + width], "little")
                value = rng.choice([0, 1, 2, old + 1, old - 1 if old else 1, old * 2, 2 ** (8 * width - 1), 2 ** (8 * width) - 1])
                blob[off : off + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
            else:
                blob = bytearray(_flip(rng, bytes(blob), 0, header_end))
        path = tmp_path / f"g{i}.gguf"
        path.write_bytes(bytes(blob))
        out = tmp_path / f"out{i}"
        outcomes[_bounded(lambda: import_gguf(path, out, check_resources=True), f"GGUF mutant {i}")] += 1
        path.unlink()
        shutil.rmtree(out, ignore_errors=True)
    assert outcomes["refused"] > 5, outcomes
