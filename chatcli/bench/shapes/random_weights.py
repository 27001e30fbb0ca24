"""Random-weight checkpoints of a :class:`~.architectures.Shape`, built once into the user cache.

``ensure_checkpoint(shape)`` returns ``<cache>/bench-shapes/<name>/``, a complete
Hugging Face model directory (config.json, generation_config.json, model.safetensors
in bfloat16 as the published files are, the bench tokenizer of :mod:`.bench_vocab`)
that both chatcli and transformers load. It is built only when missing or made by
another version of this builder (``chatcli-shape.json`` records a fingerprint of the
config, the seed and :data:`BUILD_VERSION`); later runs reuse it.

Writing is durable and whole: the directory is built under a temporary name, every
file is fsynced, and one rename puts it in place (:func:`chatcli.paths.replace_dir`),
so an interrupted build leaves no half checkpoint behind. The weights are drawn and
written one tensor at a time through the streamed safetensors writer: the peak is
one tensor (the 1.5B shape's 467 MB embedding), never the model.

Initialisation: N(0, 0.02) for projections (the configs' ``initializer_range``),
ones for RMSNorm gains, and the embedding / head at N(0, 3/sqrt(hidden)) so logits
spread with a standard deviation of about 3, as a trained model's do, instead of a
flat distribution: every value is finite, and greedy decoding is a normal argmax.
The rows of ids with no text of their own (the vocabulary beyond the bench tokenizer's
thousand entries, lone bytes, special tokens) are scaled by 0.05, as a trained model
rarely picks them: its answers then stream text token by token, and the decode figure
times steps, not an answer the builder held back to the end. The arithmetic is the
same whatever the values.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from chatcli.bench.shapes.architectures import Shape, checkpoint_shapes
from chatcli.errors import ChatcliError

BUILD_VERSION = 2  # bump when the files this module writes change: cached checkpoints are rebuilt
_QUIET_ROWS = 0.05  # scale of the vocabulary rows with no text of their own (see the module docstring)
SEED = 1234
STAMP = "chatcli-shape.json"
_SPARE_BYTES = 512 * 2**20  # free disk kept beyond the checkpoint itself


def shapes_root() -> Path:
    from chatcli.paths import cache_dir

    return cache_dir() / "bench-shapes"


def fingerprint(shape: Shape) -> str:
    text = json.dumps({"v": BUILD_VERSION, "seed": SEED, "config": shape.config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weight_bytes(shape: Shape) -> int:
    """Bytes of the checkpoint's bfloat16 weights (its size on disk, within a header)."""
    return 2 * shape.param_count()


def cached(shape: Shape) -> Path | None:
    """The built checkpoint of ``shape`` if it is in the cache, current and sound; else None."""
    from chatcli.hub.safetensors_io import check_file

    folder = shapes_root() / shape.name
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("fingerprint") != fingerprint(shape):
        return None
    return folder if check_file(folder / "model.safetensors") is None else None


def ensure_checkpoint(shape: Shape, say: Callable[[str], None] = lambda _m: None) -> Path:
    """The checkpoint folder of ``shape``, built first when needed (ChatcliError when the disk is too full)."""
    found = cached(shape)
    if found is not None:
        return found
    root = shapes_root()
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f".{shape.name}.build-*"):  # an interrupted build's files
        shutil.rmtree(leftover, ignore_errors=True)
    need = weight_bytes(shape) + _SPARE_BYTES
    free = shutil.disk_usage(root).free
    if free < need:
        raise ChatcliError(
            f"building the {shape.name} checkpoint needs {need / 1e9:.1f} GB free in {root}, "
            f"{free / 1e9:.1f} GB is: free some space or point CHATCLI_HOME elsewhere"
        )
    say(f"{shape.name}: building a random-weight checkpoint ({shape.param_count() / 1e9:.2f}B parameters, "
        f"{weight_bytes(shape) / 1e9:.1f} GB) in {root / shape.name}, once")  # fmt: skip
    tmp = root / f".{shape.name}.build-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(shape, tmp)
        from chatcli.paths import replace_dir

        replace_dir(tmp, root / shape.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / shape.name


def _build(shape: Shape, out: Path) -> None:
    from chatcli.bench.shapes.bench_vocab import write_tokenizer
    from chatcli.paths import fsync_file

    ids, text_ids = write_tokenizer(out, shape.config["vocab_size"])
    config = {**shape.config, **ids}  # the special ids of the tokenizer the checkpoint ships
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(ids, indent=2), encoding="utf-8")
    _write_weights(config, out / "model.safetensors", text_ids)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
        fsync_file(out / name)
    stamp = {"shape": shape.name, "source": shape.source, "fingerprint": fingerprint(shape),
             "params": shape.param_count(), "seed": SEED, "random_weights": True}  # fmt: skip
    (out / STAMP).write_text(json.dumps(stamp, indent=2), encoding="utf-8")  # written last: the folder is whole
    fsync_file(out / STAMP)


def _write_weights(config: dict, path: Path, text_ids: list[int]) -> None:
    import torch

    from chatcli.hub.safetensors_io import SafetensorsStreamWriter

    shapes = checkpoint_shapes(config)
    names = sorted(shapes)
    writer = SafetensorsStreamWriter(path, [(n, "BF16", shapes[n]) for n in names], {"format": "pt"})
    head_std = 3.0 / config["hidden_size"] ** 0.5
    quiet = torch.full((config["vocab_size"], 1), _QUIET_ROWS)  # row scale of the embedding and the head
    quiet[text_ids] = 1.0
    std = float(config.get("initializer_range", 0.02))
    try:
        for i, name in enumerate(names):
            gen = torch.Generator().manual_seed(SEED + i)  # one stream per tensor: the same file every time
            if name.endswith("norm.weight"):
                t = torch.ones(shapes[name], dtype=torch.bfloat16)
            else:
                vocab_rows = name.endswith(("embed_tokens.weight", "lm_head.weight"))
                t = torch.randn(shapes[name], generator=gen, dtype=torch.float32).mul_(head_std if vocab_rows else std)
                if vocab_rows:
                    t.mul_(quiet)
                t = t.to(torch.bfloat16)
            writer.write(name, t.view(torch.int16).numpy())  # numpy has no bfloat16: the same two bytes
            del t
        writer.close()
    except BaseException:
        writer.abort()
        raise
