"""A small byte-level BPE tokenizer, trained in milliseconds, for tests that need no download.

It has the special tokens and ChatML template of the default model's family, so the
chat path of the engine is exercised exactly as with SmolLM2, and its byte-level
alphabet covers any text (Chinese and emoji fall back to byte tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Our own texts: English, code, numbers, emoji and Chinese.
CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small model predicts the next token from the tokens before it.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "for i in range(10):\n    total += i * 2",
    "Weather today: sunny with a chance of rain, 21 degrees at noon.",
    "Tokens, probabilities, entropy and sampling are easy to see here. 🙂🚀",
    "小模型一次生成一个词元，每一步都有一个概率分布。",
    "今天天气很好，我们去公园散步吧。",
    "The numbers 12345 and 67890 are split into single digits by some tokenizers.",
]


def build_tokenizer(vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tok


def write_tokenizer_files(out_dir: Path, vocab_size: int = 400) -> int:
    """Write tokenizer.json and tokenizer_config.json; return the real vocabulary size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {
                "content": t, "special": True, "lstrip": False, "rstrip": False,
                "normalized": False, "single_word": False,
            }
            for t in SPECIAL_TOKENS
        },
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return tok.get_vocab_size()
