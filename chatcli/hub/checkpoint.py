"""Hugging Face model directory -> ready-to-run :class:`DecoderLM`.

A directory holds ``config.json`` (+ optional ``generation_config.json``) and its
weights as ``model.safetensors`` or shards listed in ``model.safetensors.index.json``.
``load_checkpoint`` reads the config, builds the model on the meta device (no
memory), checks every tensor name and shape against the model *before* reading
any data (one error lists all problems), then reads each tensor from the
memory-mapped file, casts it, moves it to the device and assigns it in place, so
the weights are allocated once. Pickle files (``.bin``, ``.pt``, ...) are refused:
unpickling can run arbitrary code. Every file is opened as a regular file only (a
FIFO is refused, not waited on), JSON nesting is bounded, and each safetensors
header passes :mod:`chatcli.hub.safetensors_header` before the library maps it.

The device and dtype a load asks for are resolved by :mod:`chatcli.hub.device_choice`
(``resolve_device``/``resolve_dtype``, importable from here too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from chatcli.bounded_json import JSONError, loads
from chatcli.errors import ModelError
from chatcli.hub import packed_cache
from chatcli.hub.device_choice import resolve_device, resolve_dtype  # re-exported: callers import them from here
from chatcli.hub.safetensors_header import HeaderError, parse_header
from chatcli.hub.safetensors_io import map_each, open_mapped
from chatcli.model.config import ModelConfig, normalize_ids
from chatcli.model.model import DecoderLM
from chatcli.model.page_release import drop_file_pages, trim_heap
from chatcli.regular_file import NotRegularFile, read_bytes

Progress = Callable[[str, int, "int | None"], None]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors dtype tags that hold real-valued weights we can cast.
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}


def read_model_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a model directory; eos ids merged from generation_config.json."""
    model_dir = _model_dir(path)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"no config.json in {model_dir}: point at a Hugging Face model directory")
    d = _read_json(cfg_path)
    config = ModelConfig.from_dict(d)
    gen_path = model_dir / "generation_config.json"
    if gen_path.is_file():
        gen = _read_json(gen_path)
        # generate() stops on generation_config's eos ids (instruct models often add the
        # chat end token there), so the union is what the model was tuned to stop on.
        eos = normalize_ids(list(config.eos_token_id) + list(normalize_ids(gen.get("eos_token_id"))))
        bos = config.bos_token_id if config.bos_token_id is not None else _int_or_none(gen.get("bos_token_id"))
        pad = config.pad_token_id if config.pad_token_id is not None else _int_or_none(gen.get("pad_token_id"))
        config = config.with_(eos_token_id=eos, bos_token_id=bos, pad_token_id=pad)
    return config


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a model directory, checked to exist."""
    model_dir = _model_dir(path)
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{index} has no weight_map: the checkpoint is broken, re-download it")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise ModelError(
                f"missing shard(s) {', '.join(missing)} listed in {INDEX_FILE} in {model_dir}: "
                "the download is incomplete, pull the model again"
            )
        return [model_dir / n for n in names]
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _pickle_refusal(", ".join(pickles[:3]) + (" ..." if len(pickles) > 3 else ""))
    raise ModelError(f"no {SINGLE_FILE} or {INDEX_FILE} in {model_dir}: the model has no weights chatcli can read")


def load_checkpoint(
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    pack: bool = True,
    transform: Callable[[DecoderLM], object] | None = None,
    built: str | None = None,
) -> DecoderLM:
    """Load a Hugging Face model directory as a :class:`DecoderLM` in eval mode.

    ``pack``: store the weights in the fast packed layout (:mod:`chatcli.model.packed`);
    the unpacked model gives the same logits (tests compare the two). ``transform`` runs on
    the model once its weights are assigned, before packing, while each float weight is still
    a view of the file that nothing has read: quantising there (``--quantize``) reads one
    weight at a time and never holds the float model in memory. For that, a cast that widens
    (a bfloat16/float16 checkpoint loaded as float32) waits until after ``transform``: exact
    either way, it would otherwise make a float32 copy of every weight before the first one is
    quantised; ``transform`` then sees the file's dtype, and what it leaves float (norms, an
    embedding) and the quantised layers' compute dtype are brought to ``dtype`` after it.
    ``built`` names what ``transform`` makes of the checkpoint (e.g. ``"int4/g32/..."``): given, a packed
    CPU model is kept in :mod:`chatcli.hub.packed_cache` once built and later loads map it instead of
    running ``transform`` (:mod:`chatcli.model.quant_snapshot`; the same model, bit for bit).
    The C heap's free pages are given back at the end (:func:`~chatcli.model.page_release.trim_heap`)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    config = read_model_config(path)
    files = weight_files(path)

    model = meta_model(config)
    expected = model.checkpoint_keys()
    located = _check_keys(files, expected, config)  # key -> file, all problems reported at once

    # A float model packed on the CPU: its packed layout may be on disk already (chatcli.hub.packed_cache).
    key = _pack_key(files, path, dtype) if pack and transform is None and device.type == "cpu" else None
    state = packed_cache.load(key, expected, dtype) if key is not None else None
    cached = state is not None
    built_key = None
    if pack and transform is not None and built is not None and device.type == "cpu":
        from chatcli.model.quant_snapshot import snapshot_tag

        built_key = _pack_key(files, path, dtype, f"{built}/{snapshot_tag()}")
    if built_key is not None:
        if packed_cache.load_built(built_key, lambda layout, blobs: _from_built(model, layout, blobs, device)):
            from chatcli.model.packed import pack_model

            if progress:
                progress("loading weights", len(located), len(located))
            pack_model(model)  # the fused groups' members lie as before: nothing is copied
            trim_heap()
            return model.eval()
        model = meta_model(config)  # a rebuild that failed half way may have changed it
    if cached and progress:
        progress("loading weights", len(located), len(located))
    if not cached:
        state = _read_state(located, dtype, device, progress, separate=pack and transform is None,
                            widen_later=transform is not None)
    model.load_state_dict(state, strict=False, assign=True)
    del state  # the model holds the tensors now; packing then frees each one it replaces
    model.tie_weights()
    model.reset_buffers(device)
    _check_materialized(model)
    if transform is not None:
        transform(model)
        _cast_floats(model, dtype)
    if pack:
        from chatcli.model.packed import pack_model

        pack_model(model)  # from the cache: every group is laid out already, nothing is copied
        if key is not None and not cached:
            packed_cache.store(model, key, expected, dtype)
        if built_key is not None:
            packed_cache.store_built(model, built_key)
    trim_heap()
    return model.eval()


def _pack_key(files: list[Path], path: str | Path, dtype: torch.dtype, built: str | None = None) -> str | None:
    """The packed-layout cache's key of this checkpoint in ``dtype`` (None: its files cannot be stat'ed)."""
    try:
        return packed_cache.cache_key(files, _model_dir(path) / "config.json", dtype, built)
    except OSError:
        return None


def _from_built(model: DecoderLM, layout: dict, blobs: dict[str, torch.Tensor], device: torch.device) -> None:
    """The meta ``model`` made the cached built model (``ValueError`` when the cache does not fit it)."""
    from chatcli.model.quant_snapshot import rebuild

    rebuild(model, layout, blobs)
    model.reset_buffers(device)
    try:
        _check_materialized(model)
    except AssertionError as e:
        raise ValueError(str(e)) from None


def _read_state(
    located: dict[str, Path], dtype: torch.dtype, device: torch.device, progress: Progress | None,
    separate: bool, widen_later: bool,
) -> dict[str, torch.Tensor]:
    """Each checkpoint tensor ``located`` read (mapped) from its file, cast to ``dtype`` and on ``device``."""
    state: dict[str, torch.Tensor] = {}
    total = len(located)
    done = 0
    if progress:
        progress("loading weights", 0, total)
    by_file: dict[Path, list[str]] = {}
    for key, file in located.items():
        by_file.setdefault(file, []).append(key)
    for file, keys in by_file.items():
        # Packing copies every weight into its own layout and drops the original. Each tensor
        # then gets a mapping of its own, unmapped as soon as packing replaced it: one shared
        # mapping stays resident until its last view dies, and the peak would hold the model
        # twice (1.26 GB instead of ~0.86 GB for the default model in float32). A transform
        # (quantisation) gives back the pages of each weight it reads (chatcli.model.page_release),
        # so there the tensors share one mapping: one per tensor made each map the file's header
        # (+12 MB at the default model's int4 peak, 272 mappings).
        tensors = _separately_mapped(file, keys) if separate else _mapped_tensors(file, keys)
        read: list[torch.Tensor] = []
        for key, tensor in tensors:
            # to() is a no-op when dtype and device already match: the tensor read is the one kept.
            widen = widen_later and _widens(tensor.dtype, dtype)
            state[key] = tensor.to(device) if widen else tensor.to(dtype=dtype).to(device)
            read.append(tensor)
            done += 1
            if progress:
                progress("loading weights", done, total)
        if not separate:
            # Reading a tensor maps ~64 kB of the file around its start (16 MB for the default
            # model's 272): give them back once all are read (a neighbour's read maps them again).
            for tensor in read:
                drop_file_pages(tensor)
        del read
    return state


def _widens(have: torch.dtype, want: torch.dtype) -> bool:
    """Whether casting ``have`` to ``want`` is exact and makes it larger (bfloat16/float16 -> float32)."""
    return want == torch.float32 and have in (torch.bfloat16, torch.float16)


def _cast_floats(model: DecoderLM, dtype: torch.dtype) -> None:
    """Bring what a transform left in the checkpoint's dtype to ``dtype``: float parameters (each
    tensor once, so tied weights stay tied) and the compute dtype of quantised layers, whose
    integer buffers ``.to(dtype)`` leaves as they are."""
    from chatcli.model.qlinear import QuantizedLinear

    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
    for m in model.modules():
        if isinstance(m, QuantizedLinear) and m.dtype != dtype:
            m.to(dtype)


def _mapped_tensors(file: Path, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors as views of the memory-mapped file (pages read on first use).

    The header was checked by :func:`_check_keys`; the file is re-checked to be a regular
    file (a FIFO swapped in would block the library) and the library's errors are one line."""
    try:
        with open_mapped(file, checked=True) as f:
            for key in keys:
                yield key, f.get_tensor(key)
    except NotRegularFile as e:
        raise ModelError(e.message) from None
    except (OSError, HeaderError) as e:
        raise ModelError(f"cannot read {file.name}: {e}; the file is corrupt, re-download the model") from None


def _separately_mapped(file: Path, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors each backed by its own mapping of the file (freed with the tensor)."""
    try:
        yield from map_each(file, keys)
    except NotRegularFile as e:
        raise ModelError(e.message) from None
    except (OSError, ValueError) as e:  # HeaderError is a ValueError; mmap's own errors are OSError/ValueError
        raise ModelError(f"cannot read {file.name}: {e}; the file is corrupt, re-download the model") from None


def meta_model(config: ModelConfig) -> DecoderLM:
    """The model's structure on the meta device: shapes, no memory, no initializer run.

    Initializers are skipped because on meta tensors they do nothing useful and
    ``nn.init.normal_`` (the embedding's) goes through a decomposition that imports
    ``torch._dynamo`` (about 1.5 s on a CPU machine, longer than the whole load).
    """
    with torch.device("meta"), _SkipMetaInit():
        return DecoderLM(config)


class _SkipMetaInit(TorchFunctionMode):
    """Turn ``torch.nn.init.*`` calls on meta tensors into no-ops (thread-local, like every mode)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            tensor = kwargs.get("tensor", args[0] if args else None)
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def _check_keys(files: list[Path], expected: dict[str, tuple[int, ...]], config: ModelConfig) -> dict[str, Path]:
    """Map each expected key to its file; raise one ModelError listing every problem.

    Each header is parsed as strictly as the safetensors library parses it (a FIFO or a
    damaged header is one line here, not a hang or a traceback in the library)."""
    located: dict[str, Path] = {}
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    bad_dtype: list[str] = []
    for file in files:
        try:
            tensors = parse_header(file, what="weights").tensors
        except NotRegularFile as e:
            raise ModelError(e.message) from None
        except (OSError, HeaderError) as e:
            raise ModelError(f"cannot read {file.name}: {e}; the file is corrupt, re-download the model") from None
        for key, entry in tensors.items():
            if key not in expected:
                if _ignorable(key, config):
                    continue
                unexpected.append(key)
                continue
            if entry.shape != expected[key]:
                wrong_shape.append(f"{key} {list(entry.shape)} (expected {list(expected[key])})")
            if entry.dtype not in _FLOAT_TAGS:
                bad_dtype.append(f"{key} {entry.dtype}")
            located[key] = file
    missing = [k for k in expected if k not in located]
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
        ("not float (quantized?)", bad_dtype),
    ):
        if items:
            shown = ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise ModelError(
            f"checkpoint does not match its {config.model_type} config: {'; '.join(problems)}; "
            "the weights belong to another model or are damaged"
        )
    return located


def _ignorable(key: str, config: ModelConfig) -> bool:
    """Tensors some exporters save that carry no information for us."""
    if key == "lm_head.weight" and config.tie_word_embeddings:
        return True  # a tied head saved anyway: it is the embedding matrix
    return key.endswith("rotary_emb.inv_freq")  # old transformers saved the RoPE buffer


def _check_materialized(model: DecoderLM) -> None:
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise AssertionError(f"parameters left on the meta device after loading: {left[:4]}")


def _pickle_refusal(names: str) -> ModelError:
    return ModelError(
        f"refusing pickle weights ({names}): loading them can run arbitrary code; convert them to "
        "safetensors (e.g. huggingface.co/spaces/safetensors/convert, or save_pretrained(..., "
        "safe_serialization=True) in a trusted sandbox) or use a model that ships model.safetensors"
    )


def _model_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix in PICKLE_SUFFIXES:
            raise _pickle_refusal(p.name)
        if p.suffix == ".gguf":
            raise ModelError(f"{p.name} is a GGUF file: import it into a model directory first (chatcli pull)")
        if p.suffix == ".safetensors" or p.name == "config.json":
            return p.parent
        raise ModelError(f"{p} is not a model directory: point at a folder with config.json and *.safetensors")
    if not p.is_dir():
        raise ModelError(f"model directory {p} does not exist: check the path or pull the model")
    return p


def _read_json(path: Path) -> dict:
    try:
        data = loads(read_bytes(path, path.name))  # a regular file, nesting bounded
    except NotRegularFile as e:
        raise ModelError(e.message) from None
    except (OSError, JSONError) as e:
        raise ModelError(f"cannot read {path.name} in {path.parent}: {e}; re-download the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} in {path.parent} is not a JSON object: re-download the model")
    return data


def _int_or_none(v) -> int | None:
    ids = normalize_ids(v) if v is not None else ()
    return ids[0] if ids else None
