"""Hostile model files, one named regression test each: safetensors headers that chatcli's old check
accepted but the library refuses, nesting that blew the stack, a FIFO in a file's place, a damaged
header in the model cache (rebuilt, not crashed on), and GGUF contents the importer choked on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from chatcli.errors import ChatcliError, ModelError
from chatcli.hub.catalog import pull, resolve_model
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.hub.resources import count_parameters
from chatcli.hub.safetensors_header import HeaderError, parse_header
from chatcli.hub.safetensors_io import check_file, open_mapped
from tests.hub.test_hub import NAME, fake_wheel, registry  # noqa: F401  (fixtures)
from tests.hang_guard import in_thread

GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def _file(tmp_path: Path, header: bytes | dict, data_len: int = 16, name: str = "x.safetensors") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)
    return path


def _library_reads(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k in f.keys():
                f.get_tensor(k)
            f.metadata()
        return True
    except Exception:  # noqa: BLE001 - any refusal counts
        return False




# --- the header rules are the library's --------------------------------------------------------

SAME_AS_LIBRARY = {
    "good": GOOD,
    "shape_string": {"a": {**GOOD["a"], "shape": ["2", 2]}},
    "shape_float": {"a": {**GOOD["a"], "shape": [2.0, 2]}},
    "shape_bool": {"a": {**GOOD["a"], "shape": [True, 4]}},
    "offset_float": {"a": {**GOOD["a"], "data_offsets": [0.0, 16]}},
    "offset_string": {"a": {**GOOD["a"], "data_offsets": ["0", 16]}},
    "three_offsets": {"a": {**GOOD["a"], "data_offsets": [0, 16, 16]}},
    "offset_negative": {"a": {**GOOD["a"], "data_offsets": [-16, 16]}},
    "metadata_int": {"__metadata__": {"format": 1}, **GOOD},
    "metadata_null_value": {"__metadata__": {"format": None}, **GOOD},
    "metadata_list": {"__metadata__": ["pt"], **GOOD},
    "metadata_null": {"__metadata__": None, **GOOD},
    "extra_field": {"a": {**GOOD["a"], "x": [1, {"y": 2}]}},
    "dtype_lowercase": {"a": {**GOOD["a"], "dtype": "f32"}},
    "dtype_F8_E8M0": {"a": {"dtype": "F8_E8M0", "shape": [16], "data_offsets": [0, 16]}},
    "beyond_u64": {"a": {**GOOD["a"], "shape": [2**64, 2]}},
    "missing_shape": {"a": {"dtype": "F32", "data_offsets": [0, 16]}},
    "entry_null": {"a": None},
    "scalar_and_vector": {"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
                          "b": {"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}},
    "overflowing_shape": {"z": {"dtype": "F32", "shape": [2**40, 2**40, 0], "data_offsets": [0, 0]}, **GOOD},
}  # fmt: skip

RAW_SAME = {
    "nan_offset": b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,NaN]}}',
    "exponent_offset": b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,1.6e1]}}',
    "negative_zero": b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[-0,16]}}',
    "lone_surrogate": b'{"a\\ud800":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
    "paired_surrogates": b'{"a\\ud83d\\ude00":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
    "trailing_garbage": b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}} x',
    "whitespace_around": b' {"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}\n\t ',
    "byte_order_mark": b'\xef\xbb\xbf{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
    "not_utf8": b'{"\xff":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
    "top_level_array": b"[]",
}


@pytest.mark.parametrize("case", sorted(SAME_AS_LIBRARY) + sorted(RAW_SAME))
def test_a_header_is_accepted_exactly_when_the_library_reads_it(tmp_path, case):
    header = SAME_AS_LIBRARY.get(case) or RAW_SAME[case]
    path = _file(tmp_path, header)
    try:
        parse_header(path)
        ours = True
    except HeaderError:
        ours = False
    assert ours == _library_reads(path), case
    assert (check_file(path) is None) == ours


def test_where_chatcli_is_stricter_than_the_library(tmp_path):
    """Duplicate keys (the library keeps the last) and dimensions beyond int64 (torch cannot hold them)."""
    dup = _file(tmp_path, b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}')
    with pytest.raises(HeaderError, match="appears twice"):
        parse_header(dup)
    big = _file(tmp_path, {"z": {"dtype": "F32", "shape": [2**64 - 1, 0], "data_offsets": [0, 0]}, **GOOD}, name="big.safetensors")
    with pytest.raises(HeaderError, match="dimensions must be non-negative integers"):
        parse_header(big)


def test_a_header_nested_100000_deep_is_refused_without_recursing(tmp_path):
    path = _file(tmp_path, b'{"__metadata__":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}", data_len=0)
    with pytest.raises(HeaderError, match="nested 100002 levels deep"):
        parse_header(path)
    assert "nested" in check_file(path)


def test_the_library_s_own_refusal_is_caught_at_the_boundary(tmp_path):
    path = _file(tmp_path, {"a": {**GOOD["a"], "shape": [2.0, 2]}})
    with pytest.raises(HeaderError, match="the safetensors library refuses it"):
        with open_mapped(path, checked=True) as f:  # checked=True: only the library looks at the header
            f.keys()


def test_fifo_in_place_of_weights_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ChatcliError, match="is a FIFO"):
        in_thread(lambda: parse_header(fifo))
    assert "is a FIFO" in in_thread(lambda: check_file(fifo))
    with pytest.raises(ChatcliError, match="is a FIFO"):
        in_thread(lambda: open_mapped(fifo).__enter__())


# --- checkpoints -------------------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _rewrite_header(path: Path, mutate) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    new = json.dumps(mutate(json.loads(raw[8 : 8 + n]))).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_checkpoint_header_the_library_refuses_is_one_line(model_copy):
    def floats(h):
        key = next(k for k in h if k != "__metadata__")
        h[key]["shape"] = [float(d) for d in h[key]["shape"]]
        return h

    _rewrite_header(model_copy / "model.safetensors", floats)
    with pytest.raises(ModelError, match="cannot read model.safetensors: tensor .* has shape .*re-download") as e:
        load_checkpoint(model_copy)
    assert "\n" not in e.value.message
    assert count_parameters(model_copy) is None  # the memory check before loading does not crash either


def test_config_nested_100000_deep_is_one_line(model_copy):
    (model_copy / "config.json").write_text('{"model_type": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelError, match="nested 100001 levels deep"):
        load_checkpoint(model_copy)


def test_a_fifo_shard_or_config_never_blocks(model_copy):
    (model_copy / "model.safetensors").unlink()
    os.mkfifo(model_copy / "model.safetensors")
    with pytest.raises(ModelError, match="no model.safetensors"):
        in_thread(lambda: load_checkpoint(model_copy))
    (model_copy / "config.json").unlink()
    os.mkfifo(model_copy / "config.json")
    with pytest.raises(ModelError, match="no config.json"):
        in_thread(lambda: load_checkpoint(model_copy))


# --- the model cache ---------------------------------------------------------------------------


def _corrupt_cached_header(path: Path, kind: str) -> None:
    """Damage the cached weights' header, keeping the file size. "deep": nested brackets (the old
    check hit RecursionError); "floats": offsets as floats, with the manifest's header hash updated
    to match, so only a check as strict as the library's finds it."""
    weights = path / "model.safetensors"
    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    if kind == "deep":
        body = b"[" * (n // 2) + b"]" * (n - n // 2)
    else:  # "floats": offsets written as floats, padded to the same length
        header = json.loads(raw[8 : 8 + n])
        key = next(k for k in header if k != "__metadata__")
        header[key]["data_offsets"] = [float(o) for o in header[key]["data_offsets"]]
        header["__metadata__"] = {"format": "pt"}  # room for the ".0"s
        body = json.dumps(header, separators=(",", ":")).encode()
        assert len(body) <= n
        body += b" " * (n - len(body))
    weights.write_bytes(raw[:8] + body + raw[8 + n :])
    if kind == "floats":
        manifest = read_manifest(path)
        manifest["weights"]["header_sha256"] = hashlib.sha256(body).hexdigest()
        (path / "chatcli.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind", ["deep", "floats"])
def test_a_damaged_cached_header_is_reported_and_rebuilt(registry, kind, capsys):  # noqa: F811
    import chatcli.cli.main as cli

    path = pull(NAME)
    _corrupt_cached_header(path, kind)
    problems = verify_model_dir(path)
    assert problems and "model.safetensors" in problems[0]
    with pytest.raises(SystemExit) as exc:
        cli.main(["models", "verify", NAME])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1 and f"{NAME} is damaged" in err
    stages: list[str] = []
    assert resolve_model(NAME, progress=lambda s, d, t: stages.append(s)) == path
    assert any(s.startswith(f"rebuilding the damaged cache entry {NAME}") for s in stages), stages
    assert verify_model_dir(path, full=True) == [] and len(registry) == 2
    load_checkpoint(path)


def test_generate_on_a_damaged_cache_entry_rebuilds_and_answers(registry, capsys):  # noqa: F811
    import chatcli.cli.main as cli

    _corrupt_cached_header(pull(NAME), "deep")
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "hi", "--model", NAME, "-n", "2", "--raw", "--seed", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 0, err
    assert "rebuilding the damaged cache entry" in err and "Traceback" not in err
    assert len(registry) == 2


def test_a_gguf_path_that_is_a_fifo_is_refused(tmp_path):
    from chatcli.hub.gguf.importer import import_gguf

    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ChatcliError, match="is a FIFO"):
        in_thread(lambda: import_gguf(fifo, tmp_path / "out"))
    with pytest.raises(ChatcliError, match="is a FIFO"):
        in_thread(lambda: resolve_model(str(fifo)))


def test_gguf_merges_naming_an_unknown_token_are_one_line(tmp_path, tiny_model_dir):
    """Found by the fuzzer: the tokenizers library raised a bare Exception out of the importer."""
    import gguf

    from chatcli.hub.gguf.importer import import_gguf
    from tests.tiny_gguf import write_tiny_gguf

    src = write_tiny_gguf(tmp_path / "t.gguf", tiny_model_dir, qtype="F32")
    reader = gguf.GGUFReader(str(src))
    field = reader.fields["tokenizer.ggml.merges"]
    first = field.parts[field.data[0]]  # the bytes of the first merge, "A B"
    start, length = first.ctypes.data - reader.data.ctypes.data, first.size
    del reader
    raw = bytearray(src.read_bytes())
    raw[start : start + length] = b"\x7f" * (length - 2) + b" \x7f"
    src.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="t.gguf: unusable tokenizer metadata .*re-download it") as e:
        import_gguf(src, tmp_path / "out")
    assert "\n" not in e.value.message

