"""How text becomes tokens: each token's id, text, bytes and the span of the input it covers.

Byte-level tokenizers can split one character over several tokens (most Chinese
characters and emoji in a small vocabulary): such tokens show U+FFFD as their text,
their ``bytes`` say exactly which part they hold, and their spans overlap on the
character they share.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenPiece:
    index: int
    id: int
    token: str  # the token's own text (U+FFFD for a partial character)
    bytes: bytes
    start: int  # character offsets in the input text
    end: int
    special: bool

    def to_json(self) -> dict:
        return {
            "index": self.index, "id": self.id, "token": self.token, "bytes": self.bytes.hex(" "),
            "start": self.start, "end": self.end, "special": self.special,
        }


def tokenize_pieces(tokenizer, text: str) -> list[TokenPiece]:
    return [
        TokenPiece(
            index=n, id=i, token=tokenizer.token_text(i), bytes=tokenizer.token_bytes(i),
            start=s, end=e, special=tokenizer.is_special(i),
        )
        for n, (i, s, e) in enumerate(tokenizer.encode_offsets(text))
    ]
