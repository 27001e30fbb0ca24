"""A model folder's tokenizer as GGUF metadata (``tokenizer.ggml.*``): the inverse of :mod:`.tokenizer`.

llama.cpp has no tokenizer.json: it reads the vocabulary, each token's kind, the BPE
merges, the special ids and the name of its pre-tokenizer from the GGUF's metadata.
:func:`vocab_metadata` builds exactly that from ``tokenizer.json`` +
``tokenizer_config.json`` (+ ``config.json``'s ids as a fallback), the way llama.cpp's
convert_hf_to_gguf.py lays it out:

- ``tokenizer.ggml.model`` ``gpt2`` (byte-level BPE); SentencePiece and other models are
  refused by name.
- ``tokens`` indexed by id, one per embedding row; an id with no token becomes
  ``[PAD<id>]`` of kind UNUSED, as the converter pads.
- ``token_type``: added tokens marked special are CONTROL, other added tokens
  USER_DEFINED, everything else NORMAL.
- ``pre``: read from the pre-tokenizer's structure rather than hashed from sample
  encodings (the converter's way), and limited to the splits :mod:`.tokenizer` rebuilds,
  so an exported file always imports back: ``Sequence[Digits(individual), ByteLevel]`` is
  ``smollm``, a bare regex ``ByteLevel`` is ``gpt-2`` (llama.cpp's spelling: ``gpt2`` would not load), the Llama-3 and Qwen2 split regexes
  are ``llama-bpe`` and ``qwen2``. Anything else is refused: a wrong split silently
  changes the ids the model sees.
- bos/eos/unk/padding ids from the special tokens of tokenizer_config.json, the
  ``add_bos_token``/``add_eos_token`` flags, and the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcli.bounded_json import JSONError, loads
from chatcli.errors import ModelError
from chatcli.hub.gguf.tokenizer import _LLAMA3_SPLIT, _QWEN2_SPLIT, CONTROL, NORMAL, UNUSED, USER_DEFINED
from chatcli.regular_file import NotRegularFile, read_bytes
from chatcli.tokenizer.chat_template import load_chat_template

_SPECIAL_KEYS = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unk", "pad_token": "padding"}


@dataclass(frozen=True)
class VocabMetadata:
    """What the GGUF writer needs to describe the tokenizer."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int] = field(default_factory=dict)  # "bos", "eos", "unk", "padding" -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None

    def token(self, key: str) -> str | None:
        """The text of special token ``key`` ("eos", ...), or None."""
        i = self.special_ids.get(key)
        return self.tokens[i] if i is not None else None

    def add_to(self, writer) -> None:
        """Write the ``tokenizer.ggml.*`` keys (and the chat template) with a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
                  "unk": writer.add_unk_token_id, "padding": writer.add_pad_token_id}
        for key, token_id in self.special_ids.items():
            adders[key](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_add_space_prefix(False)  # byte-level BPE with no prefix space (_pre_name refuses one)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def vocab_metadata(model_dir: Path, vocab_size: int, config: dict[str, Any] | None = None) -> VocabMetadata:
    """The tokenizer of ``model_dir`` as GGUF metadata for an embedding of ``vocab_size`` rows."""
    model_dir = Path(model_dir)
    tj = _read_json(model_dir / "tokenizer.json")
    tc = _read_json(model_dir / "tokenizer_config.json", required=False)
    model = tj.get("model") if isinstance(tj.get("model"), dict) else {}
    if model.get("type") != "BPE" or not _is_byte_level(tj.get("decoder")):
        kind = model.get("type") or "unknown"
        raise ModelError(f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); this model's is {kind} "
                         f"{'(SentencePiece-style)' if kind == 'BPE' else ''}".rstrip())
    pre = _pre_name(tj.get("pre_tokenizer"))
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise ModelError(f"{model_dir / 'tokenizer.json'} has no vocabulary: re-download the model")
    by_id: dict[int, str] = {}
    for text, i in vocab.items():
        by_id.setdefault(int(i), str(text))
    added = {int(a["id"]): a for a in tj.get("added_tokens") or [] if isinstance(a, dict) and "id" in a}
    for i, a in added.items():
        by_id[i] = str(a.get("content"))
    if max(by_id) >= vocab_size:
        raise ModelError(f"the tokenizer has token id {max(by_id)} but the embedding only {vocab_size} rows: "
                         "the model folder is inconsistent")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")  # as llama.cpp's converter pads a vocabulary smaller than the embedding
            types.append(UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(NORMAL if i not in added else CONTROL if added[i].get("special") else USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    ids = {t: i for i, t in enumerate(tokens)}
    special: dict[str, int] = {}
    for key, gguf_key in _SPECIAL_KEYS.items():
        text = _token_text(tc.get(key))
        if text is not None and text in ids:
            special[gguf_key] = ids[text]
    for key, gguf_key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        value = (config or {}).get(key)
        value = value[0] if isinstance(value, list) and value else value
        if gguf_key not in special and isinstance(value, int) and 0 <= value < vocab_size:
            special[gguf_key] = value
    add_bos, add_eos = _adds(tc, tj.get("post_processor"), special, tokens)
    return VocabMetadata(pre, tokens, types, merges, special, add_bos, add_eos, load_chat_template(model_dir))


def _read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise ModelError(f"{path.parent} has no {path.name}: GGUF export needs the model's tokenizer")
        return {}
    try:
        data = loads(read_bytes(path, path.name))
    except (OSError, JSONError, NotRegularFile) as e:
        raise ModelError(f"cannot read {path}: {e}; re-download the model") from None
    return data if isinstance(data, dict) else {}


def _is_byte_level(decoder: Any) -> bool:
    return isinstance(decoder, dict) and decoder.get("type") == "ByteLevel"


def _pre_name(pre: Any) -> str:
    """The llama.cpp pre-tokenizer name for a tokenizer.json ``pre_tokenizer``."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    steps = [s for s in steps or [] if isinstance(s, dict)]
    kinds = [s.get("type") for s in steps]

    def byte_level(s: dict, regex: bool) -> bool:
        return s.get("type") == "ByteLevel" and not s.get("add_prefix_space") and bool(s.get("use_regex", True)) == regex

    if kinds == ["ByteLevel"] and byte_level(steps[0], True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level(steps[1], True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and byte_level(steps[1], False):
        pattern = steps[0].get("pattern") or {}
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        if regex == _LLAMA3_SPLIT:
            return "llama-bpe"
        if regex == _QWEN2_SPLIT:
            return "qwen2"
    shown = json.dumps(pre)[:120]
    raise ModelError(f"GGUF export does not know this tokenizer's pre-tokenizer ({shown}); llama.cpp would "
                     "split text differently from the model's own tokenizer")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _adds(tc: dict, post: Any, special: dict[str, int], tokens: list[str]) -> tuple[bool, bool]:
    """(add_bos, add_eos): the tokenizer_config flags, else whether the post-processor inserts them."""
    single = post.get("single") if isinstance(post, dict) and post.get("type") == "TemplateProcessing" else None
    inserted = {str(p["SpecialToken"].get("id")) for p in single or [] if isinstance(p, dict) and
                isinstance(p.get("SpecialToken"), dict)}

    def flag(name: str, key: str) -> bool:
        value = tc.get(name)
        if isinstance(value, bool):
            return value
        return key in special and tokens[special[key]] in inserted

    return flag("add_bos_token", "bos"), flag("add_eos_token", "eos")
