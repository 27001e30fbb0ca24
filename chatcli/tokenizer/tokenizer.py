"""The tokenizer a model ships with: text <-> ids, chat rendering, and what each token *is*.

:class:`ChatTokenizer` wraps a ``tokenizers.Tokenizer`` read from a Hugging Face
model directory (``tokenizer.json`` + ``tokenizer_config.json``, with
``generation_config.json`` / ``config.json`` for the end-of-sequence ids). It
encodes and decodes as ``transformers``' fast tokenizer does (special tokens
written in the text, like ``<|im_start|>``, are recognised), renders the chat
template (see :mod:`chatcli.tokenizer.chat_template`), and gives each token's own
bytes and text so the UI can show tokens that hold only part of a character.

Not done: ``clean_up_tokenization_spaces`` (a legacy decode-time rewrite that
modern chat models switch off; applying it would break streaming, where text is
decoded a piece at a time).
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

from tokenizers import Tokenizer

from chatcli.tokenizer.chat_template import load_chat_template, render_chat_template
from chatcli.bounded_json import loads
from chatcli.errors import ModelError
from chatcli.regular_file import NotRegularFile, read_bytes, read_text

# The special-token names transformers passes to chat templates (its special_tokens_map).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

_BYTE_FALLBACK_RE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gpt2_byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2): printable stand-in character -> byte value."""
    # Printable bytes stand for themselves; the other 68 are shifted to code points 256+.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _token_string(value: Any) -> str | None:
    # tokenizer_config.json writes a special token as a string or as a serialized AddedToken dict.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _int_list(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = loads(read_bytes(path, path.name))  # a regular file, nesting bounded
    except NotRegularFile as e:
        raise ModelError(e.message) from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}; fix or re-download the model") from None
    return data if isinstance(data, dict) else {}


def _decoder_json(tokenizer: Tokenizer) -> dict | None:
    """The tokenizer.json ``decoder`` section, serialized back from the loaded tokenizer
    (the same JSON; parsing the whole multi-MB file again for it cost ~0.1 s per load)."""
    decoder = tokenizer.decoder
    return None if decoder is None else json.loads(decoder.__getstate__())


def _decoder_types(node: Any) -> list[dict]:
    """Flatten a tokenizer.json ``decoder`` (possibly a Sequence) into its parts."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        return [d for sub in node.get("decoders", []) for d in _decoder_types(sub)]
    return [node]


class ChatTokenizer:
    """A model's tokenizer plus its chat template and end-of-sequence ids."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
        eos_ids: Sequence[int] = (),
        bos_id: int | None = None,
        decoder: Mapping[str, Any] | None = None,
        name: str = "model",
    ):
        self._tok = tokenizer
        self.chat_template = chat_template
        # Variables every render passes to the template (a call's own win): {"enable_thinking": False}
        # when a front end switches a Qwen3-style template's thinking off (chatcli.tokenizer.thinking).
        self.template_variables: dict[str, Any] = {}
        self.special_tokens = dict(special_tokens or {})
        self.eos_ids = tuple(dict.fromkeys(eos_ids))  # union, order kept
        self.bos_id = bos_id
        self.name = name
        parts = _decoder_types(decoder)
        self._byte_level = any(p.get("type") == "ByteLevel" for p in parts)
        self._byte_fallback = any(p.get("type") == "ByteFallback" for p in parts)
        # SentencePiece-style tokenizers write a space as U+2581 in tokens.
        self._space_marks = [
            p.get("replacement", "▁") if p.get("type") == "Metaspace" else p.get("pattern", {}).get("String")
            for p in parts
            if p.get("type") == "Metaspace" or (p.get("type") == "Replace" and p.get("content") == " ")
        ]
        added = tokenizer.get_added_tokens_decoder()
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self._added_text = {i: t.content for i, t in added.items()}
        self._byte_decoder = gpt2_byte_decoder() if self._byte_level else None
        self._bytes: dict[int, bytes] = {}  # token id -> its bytes, filled as tokens are shown

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: Path | str, chat_template_override: Path | None = None) -> "ChatTokenizer":
        """Load from a Hugging Face model directory (needs ``tokenizer.json``)."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelError(
                f"{path} has no tokenizer.json; chatcli needs a fast-tokenizer file (re-import or re-download the model)"
            )
        try:
            raw = read_text(tok_file, "tokenizer.json")  # a regular file only: a FIFO would block
        except NotRegularFile as e:
            raise ModelError(e.message) from None
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {tok_file}: {e}; re-import or re-download the model") from None
        try:
            tokenizer = Tokenizer.from_str(raw)
        except Exception as e:  # the tokenizers library raises plain Exceptions
            raise ModelError(f"cannot load {tok_file}: {' '.join(str(e).split())}") from e
        decoder = _decoder_json(tokenizer)

        tconf = _read_json(path / "tokenizer_config.json")
        special = {k: s for k in SPECIAL_TOKEN_NAMES if (s := _token_string(tconf.get(k))) is not None}
        gen = _read_json(path / "generation_config.json")
        conf = _read_json(path / "config.json")

        eos_ids = _int_list(gen.get("eos_token_id")) + _int_list(conf.get("eos_token_id"))
        if "eos_token" in special and (i := tokenizer.token_to_id(special["eos_token"])) is not None:
            eos_ids.append(i)
        bos_id = None
        if "bos_token" in special:
            bos_id = tokenizer.token_to_id(special["bos_token"])
        if bos_id is None:
            bos_ids = _int_list(gen.get("bos_token_id")) or _int_list(conf.get("bos_token_id"))
            bos_id = bos_ids[0] if bos_ids else None

        return cls(
            tokenizer,
            chat_template=load_chat_template(path, chat_template_override),
            special_tokens=special,
            eos_ids=eos_ids,
            bos_id=bos_id,
            decoder=decoder,
            name=path.name,
        )

    # ---- text <-> ids -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text -> ids. Special tokens written in the text are recognised, as in transformers."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """Text -> ``(id, start, end)`` with the character span of ``text`` each token covers."""
        enc = self._tok.encode(text, add_special_tokens=False)
        return [(i, s, e) for i, (s, e) in zip(enc.ids, enc.offsets)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @cached_property
    def add_bos_token(self) -> bool:
        """Whether plain text starts with BOS: the tokenizer's post-processor adds it (as in
        transformers 5, which reads this from tokenizer.json, not tokenizer_config.json)."""
        if self.bos_id is None:
            return False
        ids = self._tok.encode("a", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self.bos_id

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token stands for (b'' for an id outside the vocabulary)."""
        cached = self._bytes.get(token_id)
        if cached is None:
            if not 0 <= token_id < self._vocab_size:
                return b""
            cached = self._bytes[token_id] = self._piece_bytes(token_id)
        return cached

    def token_text(self, token_id: int) -> str:
        """The token's own text; U+FFFD stands for bytes of a character it holds only part of."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    @cached_property
    def _vocab_size(self) -> int:
        return self.vocab_size

    def _piece_bytes(self, token_id: int) -> bytes:
        # One token at a time, kept by token_bytes: a table of the whole vocabulary built
        # up front cost ~0.25 s of every start for the few hundred tokens an answer shows.
        if token_id in self._added_text:
            return self._added_text[token_id].encode("utf-8")
        piece = self._tok.id_to_token(token_id)
        if piece is None:
            return b""
        byte_decoder = self._byte_decoder
        if byte_decoder is not None and all(c in byte_decoder for c in piece):
            return bytes(byte_decoder[c] for c in piece)
        if self._byte_fallback and (m := _BYTE_FALLBACK_RE.fullmatch(piece)):
            return bytes([int(m.group(1), 16)])
        for mark in self._space_marks:
            if mark:
                piece = piece.replace(mark, " ")
        return piece.encode("utf-8")

    # ---- chat ----------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **variables: Any
    ) -> str:
        """The exact string the model reads for this conversation (special tokens included)."""
        if not self.chat_template:
            raise ModelError(
                f"{self.name} has no chat template; use --raw for plain text completion "
                "or --chat-template FILE to supply one"
            )
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
            **{**self.template_variables, **variables},
        )

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **variables: Any
    ) -> list[int]:
        """Render and encode a conversation (no extra BOS: the template writes what it needs)."""
        return self.encode(self.render_chat(messages, add_generation_prompt, **variables), add_special_tokens=False)
