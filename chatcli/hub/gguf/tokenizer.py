"""Rebuild a ``tokenizers.Tokenizer`` (tokenizer.json) from a GGUF file's metadata.

A GGUF has no tokenizer.json: it stores the vocabulary (``tokenizer.ggml.tokens``),
token kinds (``token_type``), BPE merges or SentencePiece scores, special ids, and
names the pre-tokenizer llama.cpp must use (``tokenizer.ggml.pre``). This module
turns that back into the pipeline the model was trained with.

Supported ``tokenizer.ggml.model``:

- ``gpt2``: byte-level BPE. The ``pre`` name picks how text is split before BPE,
  mirroring llama.cpp's ``llama-vocab.cpp`` regexes:

  * ``smollm`` (and ``starcoder``, ``refact``, ``command-r``, ``codeshell``,
    ``exaone``, ``minerva``): every digit is its own pre-token, then the GPT-2
    regex. llama.cpp's regexes are ``\\p{N}`` then the GPT-2 regex; SmolLM2's own
    tokenizer.json says ``Sequence[Digits(individual_digits=True),
    ByteLevel(add_prefix_space=False, use_regex=True)]``, which is what we write.
    (Rust's ``char::is_numeric`` and ``\\p{N}`` can differ on a handful of code
    points of newer Unicode versions; no SmolLM2 token depends on them.)
  * ``gpt-2`` (llama.cpp's name; ``gpt2`` is read too), ``default`` (or no ``pre`` at
    all), ``mpt``, ``olmo``, ``jais``: the GPT-2 regex. Note llama.cpp's own fallback for a missing ``pre`` is a different,
    degraded regex it warns about; we use GPT-2's, as transformers does.
  * ``llama-bpe``/``llama3``/``smaug-bpe`` (Llama 3 regex, whole-word vocab hits
    skip the merges) and ``qwen2``/``deepseek-r1-qwen`` (Qwen2 regex).

  Any other ``pre`` is refused by name: a wrong split silently changes the ids the
  model sees, which is worse than a clear error.
- ``llama``: SentencePiece BPE with byte fallback (``<0xNN>`` tokens) and ``▁`` for
  spaces, merges derived from the scores the way transformers does.

Known difference from transformers' own GGUF conversion (the test oracle): for
``smollm`` it keeps plain GPT-2 splitting, without the one-digit rule. On SmolLM2
the ids agree anyway (its vocabulary has no multi-digit or space+digit token);
on a vocabulary that has them, ours follows the model's real tokenizer.

Tokens marked CONTROL (and UNKNOWN) become special added tokens and USER_DEFINED
ones plain added tokens, so they are matched whole in text. A BOS/EOS that the
file says to add is added by a ``TemplateProcessing`` post-processor, as in HF's
Llama tokenizers; the same flags go to tokenizer_config.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from chatcli.errors import ModelError

# gguf.TokenType values, spelled out so this module needs no gguf import.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_STYLE = ("default", "gpt-2", "gpt2", "mpt", "olmo", "jais")
_DIGITS_STYLE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_REGEX_STYLE = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# llama.cpp lets whole-word vocabulary hits skip BPE for these (HF: "ignore_merges": true).
_IGNORE_MERGES = ("llama-bpe", "llama3", "smaug-bpe")

SUPPORTED_PRE = (*_DIGITS_STYLE, *_GPT2_STYLE, *_REGEX_STYLE)
SUPPORTED_MODELS = ("gpt2", "llama")


def _get(meta: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return meta.get(f"tokenizer.ggml.{key}", default)


def tokenizer_from_gguf(meta: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer described by GGUF metadata (keys as in the file, ``tokenizer.ggml.*``)."""
    kind = _get(meta, "model")
    tokens = _get(meta, "tokens")
    if not tokens:
        raise ModelError("the GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens): it cannot be used for chat")
    if kind == "gpt2":
        tok = _byte_level_bpe(meta, list(tokens))
    elif kind == "llama":
        tok = _sentencepiece_bpe(meta, list(tokens))
    else:
        raise ModelError(
            f"GGUF tokenizer model {kind!r} is not supported (supported: {', '.join(SUPPORTED_MODELS)}); "
            "use the model's Hugging Face checkpoint instead"
        )
    _add_special_tokens(tok, list(tokens), list(_get(meta, "token_type") or []))
    _set_post_processor(tok, meta, list(tokens))
    return tok


def _byte_level_bpe(meta: Mapping[str, Any], tokens: list[str]) -> Tokenizer:
    pre = _get(meta, "pre") or "default"
    if pre not in SUPPORTED_PRE:
        raise ModelError(
            f"GGUF pre-tokenizer {pre!r} is not supported (supported: {', '.join(SUPPORTED_PRE)}); "
            "use the model's Hugging Face checkpoint instead"
        )
    merges = []
    for m in _get(meta, "merges") or []:
        parts = m.split(" ")
        if len(parts) != 2:
            raise ModelError(f"GGUF merge {m!r} is not two tokens separated by a space: the file is damaged")
        merges.append((parts[0], parts[1]))
    model = models.BPE(
        vocab=_vocab(tokens), merges=merges, fuse_unk=False, byte_fallback=False,
        ignore_merges=pre in _IGNORE_MERGES,
    )
    tok = Tokenizer(model)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_STYLE:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in _REGEX_STYLE:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_REGEX_STYLE[pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: Mapping[str, Any], tokens: list[str]) -> Tokenizer:
    scores = _get(meta, "scores")
    if scores is None or len(scores) != len(tokens):
        raise ModelError("GGUF SentencePiece vocabulary has no scores for its tokens: the file is damaged")
    vocab = _vocab(tokens)
    types = list(_get(meta, "token_type") or [NORMAL] * len(tokens))
    # Only ordinary pieces take part in merges; control/byte/unused tokens never result from one.
    mergeable = {t: float(s) for t, s, ty in zip(tokens, scores, types) if ty in (NORMAL, USER_DEFINED)}
    unk_id = _get(meta, "unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    model = models.BPE(
        vocab=vocab, merges=_merges_from_scores(vocab, mergeable), unk_token=unk, fuse_unk=True, byte_fallback=True,
    )
    tok = Tokenizer(model)
    add_prefix = bool(_get(meta, "add_space_prefix", True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a scored vocabulary: every split of a piece into two known pieces,
    ranked by the merged piece's score (best first), ties by longer left then right part; the
    same order as transformers' ``generate_merges``, so both tokenizers agree."""
    found: list[tuple[str, str, float]] = []
    for piece, score in scores.items():
        local = [
            (piece[:i], piece[i:], score)
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        found.extend(local)
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        # A duplicate spelling keeps its first id (later ones are unreachable by encoding, as in llama.cpp).
        vocab.setdefault(t, i)
    return vocab


def _add_special_tokens(tok: Tokenizer, tokens: list[str], types: list[int]) -> None:
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty in (CONTROL, UNKNOWN)]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _set_post_processor(tok: Tokenizer, meta: Mapping[str, Any], tokens: list[str]) -> None:
    add_bos, add_eos = special_flags(meta)
    bos_id, eos_id = _get(meta, "bos_token_id"), _get(meta, "eos_token_id")
    single, pair, specials = ["$A"], ["$A", "$B:1"], []
    if add_bos and bos_id is not None:
        single, pair = [tokens[bos_id], *single], [tokens[bos_id], "$A", f"{tokens[bos_id]}:1", "$B:1"]
        specials.append((tokens[bos_id], bos_id))
    if add_eos and eos_id is not None:
        single, pair = [*single, tokens[eos_id]], [*pair, f"{tokens[eos_id]}:1"]
        specials.append((tokens[eos_id], eos_id))
    if specials:
        tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    elif _get(meta, "model") == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)


def special_flags(meta: Mapping[str, Any]) -> tuple[bool, bool]:
    """(add_bos, add_eos) as llama.cpp decides them: SentencePiece adds BOS unless told not to."""
    default_bos = _get(meta, "model") == "llama"
    return bool(_get(meta, "add_bos_token", default_bos)), bool(_get(meta, "add_eos_token", False))


def tokenizer_config_from_gguf(meta: Mapping[str, Any], tok: Tokenizer, context_length: int | None) -> dict:
    """tokenizer_config.json for the rebuilt tokenizer: special tokens, flags, chat template."""
    tokens = _get(meta, "tokens")

    def token(key: str) -> str | None:
        i = _get(meta, key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    add_bos, add_eos = special_flags(meta)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "unk_token": token("unknown_token_id"),
        "pad_token": token("padding_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t.content, "special": t.special, "lstrip": t.lstrip, "rstrip": t.rstrip,
                "normalized": t.normalized, "single_word": t.single_word,
            }
            for i, t in sorted(tok.get_added_tokens_decoder().items())
        },
    }
    if context_length:
        config["model_max_length"] = int(context_length)
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return config
