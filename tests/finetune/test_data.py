"""Fine-tuning data: exact loss masks per format, bad lines with line numbers, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import UsageError
from chatcli_finetune.data import Encoder, check_loaded, load_examples
from chatcli_finetune.outdir import prepare


@pytest.fixture(scope="module")
def enc(tiny_model_dir) -> Encoder:
    return Encoder(ChatTokenizer.from_dir(tiny_model_dir))


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _masked_text(enc: Encoder, ex) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, cur = [], []
    for i, m in zip(ex.ids, ex.mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(enc.tok.decode(cur))
            cur = []
    if cur:
        runs.append(enc.tok.decode(cur))
    return runs


def test_messages_mask_is_exactly_the_assistant_turns(enc):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello fox"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello dog"},
    ]
    ex = enc.conversation(msgs)
    # The ids are the rendered conversation, token for token the text the template writes.
    rendered = enc.tok.render_chat(msgs, add_generation_prompt=False)
    assert enc.tok.decode(ex.ids) == rendered.rstrip()
    assert _masked_text(enc, ex) == ["Hello fox<|im_end|>", "Hello dog<|im_end|>"]
    # Each trained run starts right after the generation prompt the model sees at inference.
    prompt_ids = enc.tok.encode_chat(msgs[:2], add_generation_prompt=True)
    assert list(ex.ids[: len(prompt_ids)]) == prompt_ids
    assert not any(ex.mask[: len(prompt_ids)]) and ex.mask[len(prompt_ids)]


def test_prompt_completion_masks_completion_only(enc):
    ex = enc.sft_record({"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A fox"}]})
    assert _masked_text(enc, ex) == ["A fox<|im_end|>"]
    plain = enc.sft_record({"prompt": "The quick", "completion": " brown fox"})
    assert _masked_text(enc, plain) == [" brown fox<|im_end|>"]
    assert enc.tok.decode([i for i, m in zip(plain.ids, plain.mask) if not m]) == "The quick"


def test_text_trains_every_token_but_the_first(enc):
    ex = enc.sft_record({"text": "The quick brown fox"})
    assert ex.mask[0] is False and all(ex.mask[1:])
    assert ex.n_target == len(ex.ids) - 1


def test_preference_pairs_share_the_prompt_and_implicit_prompt_is_found(enc):
    row = {"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "Yes"}],
           "rejected": [{"role": "assistant", "content": "No way"}]}  # fmt: skip
    pair = enc.pref_record(row)
    implicit = enc.pref_record({"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]})
    assert implicit.chosen.ids == pair.chosen.ids and implicit.rejected.mask == pair.rejected.mask
    assert _masked_text(enc, pair.chosen) == ["Yes<|im_end|>"] and _masked_text(enc, pair.rejected) == ["No way<|im_end|>"]


def test_bad_lines_are_reported_with_line_numbers_and_skipped_or_refused(tmp_path, enc):
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    path = _write(tmp_path / "d.jsonl", [good, "{not json", {"messages": [{"role": "user", "content": "only a question"}]},
                                         {"foo": 1}, "", good])  # fmt: skip
    loaded = load_examples(path, enc, "sft", 128)
    assert [e.line for e in loaded.errors] == [2, 3, 4]
    assert "not valid JSON" in loaded.errors[0].message
    assert "no assistant turn" in loaded.errors[1].message
    assert "needs 'messages'" in loaded.errors[2].message
    assert [x.line for x in loaded.items] == [1, 6]
    warnings: list[str] = []
    check_loaded(loaded, path, 128, False, warnings.append)
    assert len(warnings) == 3 and warnings[0].startswith(f"warning: {path}:2:")
    with pytest.raises(UsageError, match="3 bad line"):
        check_loaded(loaded, path, 128, True, warnings.append)


def test_text_that_is_not_text_is_refused_never_replaced(tmp_path, enc):
    # Training on U+FFFD would be silent damage: bytes that are not UTF-8 refuse the file by line
    # (they used to be replaced), a broken "\ud83d" escape is a bad line like any other.
    path = _write(tmp_path / "d.jsonl", [{"text": "good one"}, '{"text": "half \\ud83d of a pair"}'])
    loaded = load_examples(path, enc, "sft", 128)
    assert [x.line for x in loaded.items] == [1] and [e.line for e in loaded.errors] == [2]
    assert "surrogate pair" in loaded.errors[0].message and loaded.total == 2
    path.write_bytes(b'{"text": "good one"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UsageError, match=f"{path}:2: not UTF-8 text"):
        load_examples(path, enc, "sft", 128)


def test_identical_chosen_and_rejected_is_an_error_line(tmp_path, enc):
    same = [{"role": "assistant", "content": "Same"}]
    path = _write(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": same, "rejected": same}])
    loaded = load_examples(path, enc, "pref", 128)
    assert "identical" in loaded.errors[0].message and loaded.errors[0].line == 1
    with pytest.raises(UsageError, match="all 1 line"):
        check_loaded(loaded, path, 128, False, lambda s: None)


def test_empty_data_and_all_too_long_are_clear_errors(tmp_path, enc):
    empty = _write(tmp_path / "e.jsonl", [""])
    with pytest.raises(UsageError, match="holds no examples"):
        check_loaded(load_examples(empty, enc, "sft", 128), empty, 128, False, lambda s: None)
    long = _write(tmp_path / "l.jsonl", [{"text": "The quick brown fox jumps over the lazy dog. " * 5}])
    with pytest.raises(UsageError, match="longer than --max-len 8"):
        check_loaded(load_examples(long, enc, "sft", 8), long, 8, False, lambda s: None)


def test_output_dir_is_refused_without_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "x.txt").write_text("mine")
    with pytest.raises(UsageError, match="--overwrite"):
        prepare(out, resume=False, overwrite=False)
    with pytest.raises(UsageError, match="not a chatcli fine-tuning directory"):
        prepare(out, resume=False, overwrite=True)  # never deletes a folder it did not make
    assert (out / "x.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="nothing to resume"):
        prepare(out, resume=True, overwrite=False)
    (out / "training_args.json").write_text("{}")
    prepare(out, resume=False, overwrite=True)
    assert out.is_dir() and not any(out.iterdir())
