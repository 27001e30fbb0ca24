"""The tokenizer of the random-weight shape checkpoints: a small byte-level BPE, trained in milliseconds.

A shape's cost does not depend on which tokenizer produced the ids, only on how many
there are: the prefill figure feeds exactly ``prompt_tokens`` ids and the decode
figure never stops early. So instead of shipping a 150k-entry vocabulary, the
checkpoint gets a BPE trained on the bench's own texts (:mod:`chatcli.bench.prompts`)
with a ChatML template, and its ``config.json`` keeps the real ``vocab_size``: the
embedding and the LM head have every row the real model has, and ids the tokenizer
does not know decode to nothing (as the unused tail of Qwen's padded vocabulary does).
Training is deterministic, so the files are the same on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatcli.bench import prompts

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS, EOS = "<|im_start|>", "<|im_end|>"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_tokenizer(out_dir: Path, max_vocab: int) -> tuple[dict[str, int], list[int]]:
    """Write tokenizer.json and tokenizer_config.json (at most ``max_vocab`` entries).

    Returns the special ids (for config.json) and the *text ids*: tokens that decode on their
    own to whole characters. The checkpoint makes these the likely ones (:mod:`.random_weights`),
    so a random model's answer streams text step by step as a trained one's does; an id with no
    text (the padded tail, a lone byte of a character) would be held back by the answer builder
    until the answer ends, and the decode figure would time nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(max_vocab, 1024), special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    corpus = [prompts.PREFILL_TEXT, prompts.DECODE_MESSAGE, *prompts.CONVERSATION, *prompts.SHORT_CONVERSATION]
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    if tok.get_vocab_size() > max_vocab:  # the byte alphabet alone is 256 + 3: a shape this small is a mistake
        raise ValueError(f"the bench tokenizer needs {tok.get_vocab_size()} ids; the shape has {max_vocab}")
    tok.save(str(out_dir / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
        "unk_token": SPECIAL_TOKENS[0], "add_bos_token": False, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 32768, "chat_template": CHATML,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                     "single_word": False}
            for t, i in ids.items()
        },
    }  # fmt: skip
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = set(ids.values())
    text_ids = [i for i in range(tok.get_vocab_size()) if i not in specials
                and (t := tok.decode([i])) and "\ufffd" not in t]  # fmt: skip
    return {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[EOS]}, text_ids
