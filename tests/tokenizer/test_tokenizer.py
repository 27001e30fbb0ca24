"""ChatTokenizer agrees with transformers; token bytes/text are exact; streaming text is UTF-8 safe."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

from chatcli.tokenizer.detokenizer import IncrementalDetokenizer, StopStringHolder
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import ModelError
from tests.e2e_model import default_model_dir
from tests.tiny_tokenizer import write_tokenizer_files

TEXTS = [
    "The quick brown fox.",
    "小模型一次生成一个词元，每一步都有一个概率分布。",
    "Emoji: 🙂🚀👩‍👩‍👧 and flags 🇫🇷 mixed with text.",
    "Mixed 中文 and English, 数字 12345, code: def f(x): return x  # ✓",
    "<|im_start|>user\nHi 👋<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, trailing spaces  \n\n\ttabs",
]


@pytest.fixture(scope="module")
def tok(tok_dir) -> ChatTokenizer:
    return ChatTokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def hf(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(tok_dir)


def _llama_style_dir(path: Path) -> Path:
    """A SentencePiece-style tokenizer (Metaspace '▁', byte fallback, Strip decoder), like Llama 2's."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "!", "▁h", "▁w", "el", "lo", "or", "ld", "▁wor", "▁world"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "h"), ("▁", "w"), ("e", "l"), ("l", "o"), ("o", "r"), ("l", "d"), ("▁w", "or"), ("▁wor", "ld")]
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    t.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    path.mkdir(parents=True, exist_ok=True)
    t.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return path


# ---- agreement with transformers ------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(tok, hf, text):
    ids = tok.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == hf.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)


def test_special_tokens_in_text_are_single_ids(tok):
    ids = tok.encode("<|im_start|>user\n")
    assert ids[0] == tok.token_to_id("<|im_start|>") == tok.bos_id
    assert tok.is_special(ids[0]) and not tok.is_special(ids[1])
    assert tok.token_text(ids[0]) == "<|im_start|>"


def test_eos_ids_are_the_union_of_all_sources(tmp_path):
    d = tmp_path / "m"
    write_tokenizer_files(d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    (d / "config.json").write_text(json.dumps({"eos_token_id": 0, "bos_token_id": 1}))
    t = ChatTokenizer.from_dir(d)
    assert set(t.eos_ids) == {0, 2}  # generation_config [2, 0], config 0, tokenizer's <|im_end|> = 2
    assert t.vocab_size == 400 and t.has_chat_template


def test_missing_template_says_what_to_do(tmp_path):
    d = tmp_path / "m"
    write_tokenizer_files(d)
    conf = json.loads((d / "tokenizer_config.json").read_text())
    del conf["chat_template"]
    (d / "tokenizer_config.json").write_text(json.dumps(conf))
    t = ChatTokenizer.from_dir(d)
    assert not t.has_chat_template
    with pytest.raises(ModelError, match="--raw.*--chat-template FILE"):
        t.render_chat([{"role": "user", "content": "hi"}])
    override = tmp_path / "t.jinja"
    override.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert ChatTokenizer.from_dir(d, override).render_chat([{"role": "user", "content": "hi"}]) == "[hi]"


def test_missing_tokenizer_json_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="tokenizer.json"):
        ChatTokenizer.from_dir(tmp_path)


# ---- token bytes and text -------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_concatenate_to_the_text(tok, text):
    ids = tok.encode(text)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_token_text_marks_partial_characters(tok):
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the tiny tokenizer falls back to byte tokens for this emoji
    assert "\ufffd" in tok.token_text(ids[0])
    assert tok.token_text(tok.encode(" the")[0]).startswith(" ")
    assert tok.token_bytes(10**6) == b"" and tok.token_text(-1) == ""


def test_add_bos_token_follows_the_post_processor(tok, tmp_path):
    from tokenizers import processors

    assert tok.add_bos_token is False  # the tiny (SmolLM2-like) tokenizer adds nothing
    d = _llama_style_dir(tmp_path / "bos")
    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    raw.save(str(d / "tokenizer.json"))
    t = ChatTokenizer.from_dir(d)
    assert t.add_bos_token is True and t.encode("hello", add_special_tokens=True)[0] == t.bos_id == 1


def test_llama_style_token_bytes_and_text(tmp_path):
    t = ChatTokenizer.from_dir(_llama_style_dir(tmp_path / "llama"))
    text = "hello world 小🙂!"
    ids = t.encode(text)
    assert t.decode(ids) == text
    # The model sees a leading '▁' that the decoder strips; token bytes keep it as a space.
    assert b"".join(t.token_bytes(i) for i in ids) == (" " + text).encode("utf-8")
    assert t.token_text(t.token_to_id("▁world")) == " world"
    assert t.token_bytes(t.token_to_id("<0xE5>")) == b"\xe5"


# ---- incremental detokenizer ------------------------------------------------------------------


def _stream(tokenizer, ids) -> tuple[list[str], str]:
    det = IncrementalDetokenizer(tokenizer)
    pieces = [det.push(i) for i in ids]
    return pieces, det.flush()


@pytest.mark.parametrize("text", TEXTS)
def test_detokenizer_concatenation_equals_decode(tok, text):
    ids = tok.encode(text)
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) + tail == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)  # never half a character
    assert tail == ""


def test_detokenizer_holds_bytes_until_the_character_completes(tok):
    ids = tok.encode("小🙂")
    pieces, _ = _stream(tok, ids)
    assert pieces[-1] == "🙂" and "".join(pieces) == "小🙂"
    assert pieces.count("") >= 2  # several byte tokens produced nothing on their own


def test_detokenizer_on_random_ids_matches_decode(tok):
    """Random ids include broken byte sequences: whatever they are, the stream adds up to decode()."""
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 30))]
        pieces, tail = _stream(tok, ids)
        assert "".join(pieces) + tail == tok.decode(ids)


def test_detokenizer_llama_style_keeps_spaces(tmp_path):
    t = ChatTokenizer.from_dir(_llama_style_dir(tmp_path / "llama"))
    rng = random.Random(1)
    alphabet = ["hello", "world", " ", "  ", "!", "小", "🙂", "é", "\n", "x"]
    texts = ["hello world 小🙂!", "world  world", "🙂 hello"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(100)]
    for text in texts:
        ids = t.encode(text)
        pieces, tail = _stream(t, ids)
        assert "".join(pieces) + tail == t.decode(ids) == text


def test_detokenizer_byte_fallback_invalid_run_keeps_what_was_shown(tmp_path):
    """decode() turns a byte run that ends invalid into U+FFFDs; the stream keeps the valid part it showed."""
    t = ChatTokenizer.from_dir(_llama_style_dir(tmp_path / "llama"))
    ids = [t.token_to_id("<0x41>"), t.token_to_id("<0xE5>"), t.token_to_id("!")]
    pieces, tail = _stream(t, ids)
    assert pieces == ["A", "", "\ufffd!"] and tail == ""  # shown: "A\ufffd!"
    assert t.decode(ids) == "\ufffd\ufffd!"


def test_flush_releases_an_unfinished_character(tok):
    ids = tok.encode("ab🙂")[:-1]  # cut inside the emoji
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) == "ab" and tail.startswith("\ufffd")
    assert "".join(pieces) + tail == tok.decode(ids)


# ---- stop-string holder ------------------------------------------------------------------------


def test_stop_holder_holds_possible_prefixes_and_releases_them():
    h = StopStringHolder(["\nUser:", "END"])
    assert h.push("Hello") == ("Hello", False)
    assert h.push(" wor\nUs") == (" wor", False)  # "\nUs" might begin "\nUser:"
    assert h.held == "\nUs"
    assert h.push("ually") == ("\nUsually", False)  # decided: not a stop string
    assert h.push(" E") == (" ", False)
    assert h.push("ND of") == ("", True)  # "END" completed; nothing before it was pending
    assert h.stopped and h.push("more") == ("", True) and h.flush() == ""


def test_stop_holder_releases_text_before_a_stop_inside_one_piece():
    h = StopStringHolder(["###"])
    assert h.push("ab#") == ("ab", False)
    assert h.push("x###y") == ("#x", True)
    h2 = StopStringHolder(["ab", "b"])
    assert h2.push("xab") == ("x", True)  # the earliest stop string wins


def test_stop_holder_flush_releases_held_text():
    h = StopStringHolder(["<end>"])
    assert h.push("done <en") == ("done ", False)
    assert h.flush() == "<en"


# ---- the real default model's tokenizer ---------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    return default_model_dir(tmp_path_factory)


@pytest.mark.e2e
def test_smollm2_tokenizer_streams_chinese_and_emoji(smollm2_dir):
    transformers = pytest.importorskip("transformers")
    t = ChatTokenizer.from_dir(smollm2_dir)
    ref = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert 2 in t.eos_ids  # <|im_end|>
    messages = [{"role": "user", "content": "Say 你好 🙂"}]
    assert t.render_chat(messages) == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for text in TEXTS:
        ids = t.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False)
        pieces, tail = _stream(t, ids)
        assert "".join(pieces) + tail == t.decode(ids) == ref.decode(ids)
        assert b"".join(t.token_bytes(i) for i in ids) == text.encode("utf-8")
