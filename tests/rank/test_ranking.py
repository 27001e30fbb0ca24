"""Ranking logic without a UI: the keyboard model, /rank arguments, candidate plans, --lora-mix on a tiny model."""

from __future__ import annotations

import pytest

from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.chat.session import Conversation
from chatcli_rank.candidates import generate_candidates, plan
from chatcli_rank.command import parse_rank_args, rank_prompt
from chatcli_rank.ranking import RankingDraft


def test_draft_picks_best_first_and_places_the_last_by_itself():
    d = RankingDraft(4)
    d.pick(2)
    assert d.order == [2, 0, 1, 3] and d.placed == 1 and d.tiers() == [[2], [0, 1, 3]]
    d.pick(0)
    d.pick(3)  # the fourth answer needs no key
    assert d.placed == 4 and d.tiers() == [[2], [0], [3], [1]]
    d.pick(0)  # take back a placed answer: the others keep their order, it becomes unplaced
    assert d.order == [2, 3, 1, 0] and d.placed == 3 and d.tiers() == [[2], [3], [1], [0]]
    d.pick(1)
    assert d.order == [2, 3, 1, 0] and d.placed == 2 and not d.is_placed(0)  # the first unplaced is on top
    with pytest.raises(UsageError, match="there is no answer 5"):
        d.pick(4)


def test_draft_moves_ties_and_results():
    d = RankingDraft(3)
    with pytest.raises(UsageError, match="rank at least the best answer"):
        d.result()
    assert d.move(1, -1) and d.order[0] == 1 and d.placed == 1  # moving an unplaced answer up places it
    assert not d.move(1, -1)  # already first
    assert not d.toggle_tie(1)  # nothing above it
    d.pick(2)  # 1 > 2 > 0 (last placed by itself)
    assert d.toggle_tie(2) and d.tiers() == [[1, 2], [0]]
    assert d.move(2, -1) and d.order == [2, 1, 0] and d.tiers() == [[2], [1], [0]]  # the top answer ties with nobody
    assert d.move(0, 1) and d.placed == 2  # the last placed answer moving down leaves the ranking
    d.note = "  close call "
    r = d.result(duration_s=1.5)
    assert r.tiers == ((2,), (1,), (0,)) and r.note == "close call" and r.best == (2,) and r.status == "ranked"
    d.toggle_all_bad()
    bad = d.result()
    assert bad.status == "all_bad" and bad.best == ()


def test_rank_arguments():
    assert parse_rank_args("") == parse_rank_args("4")
    a = parse_rank_args("6 --temperature 0.5,1.1 --lora-mix")
    assert (a.n, a.temperatures, a.lora_mix) == (6, (0.5, 1.1), True)
    assert parse_rank_args("-t 1.2 3").temperatures == (1.2,)
    assert parse_rank_args("--temperature=1.2 3").n == 3
    for bad, msg in [("11", "between 2 and 10"), ("0", "between 2 and 10"), ("x", "whole number"),
                     ("3 4", "too many arguments"), ("--temperature", "needs a value"),
                     ("--temperature hot", "must be a number"), ("--temperature -1", "out of range"),
                     ("--nope", "unknown option --nope"), ('"unclosed', "usage")]:  # fmt: skip
        with pytest.raises(UsageError, match=msg):
            parse_rank_args(bad)


def test_rank_prompt_is_the_conversation_up_to_the_last_user_message():
    conv = Conversation(system="sys")
    with pytest.raises(UsageError, match="send a message first"):
        rank_prompt(conv)
    u1 = conv.add("user", "one")
    a1 = conv.add("assistant", "first", parent=u1.id)
    u2 = conv.add("user", "two", parent=a1.id)
    conv.add("assistant", "second", parent=u2.id)
    messages, parent = rank_prompt(conv)
    assert parent == u2.id
    assert messages == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first"}, {"role": "user", "content": "two"},
    ]


def test_plan_spreads_candidates_over_temperatures():
    v = plan(5, (0.5, 1.0), False)
    assert [(x.members, x.temperature) for x in v] == [((0, 2, 4), 0.5), ((1, 3), 1.0)]
    with pytest.raises(UsageError, match="needs at least one loaded LoRA adapter"):
        plan(4, (0.8,), True, engine=object())


def test_lora_mix_samples_with_and_without_the_adapter_and_restores_it(tiny_model_dir, tmp_path):
    from chatcli.engine.loader import load_engine
    from tests.lora_helpers import peft_model, save_peft

    adapter_dir = save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path / "a1")
    engine = load_engine(str(tiny_model_dir))
    manager = engine.adapters
    manager.load(adapter_dir, name="a1", scale=1.0)
    msgs = [{"role": "user", "content": "Tell me something."}]
    params = SamplingParams(temperature=0.0, max_tokens=8)

    def single(seed: int, adapter_on: bool) -> str:
        p = params.with_(temperature=0.8, seed=seed)
        with manager.override(off=[] if adapter_on else ["a1"]):
            engine.generator.reset()
            text = next(e.text for e in engine.chat(msgs, p) if type(e).__name__ == "Done")
        engine.generator.reset()
        return text

    before = single(11, True)
    cands = generate_candidates(engine, msgs, params, 4, lora_mix=True, base_seed=20)
    assert [c.adapters for c in cands] == [[], [{"name": "a1", "scale": 1.0}], [], [{"name": "a1", "scale": 1.0}]]
    assert [c.seed for c in cands] == [20, 21, 22, 23]
    for c in cands:  # each candidate is exactly what a single answer with its seed and adapter setting gives
        assert c.text == single(c.seed, adapter_on=bool(c.adapters))
    assert manager.active_names() == ["a1"]  # the mix switched it back on
    assert single(11, True) == before  # and no stale cache leaked into later answers

    # the same through `chatcli rank generate --lora PATH:SCALE --lora-mix`
    import json

    from chatcli.cli.main import main

    prompts, out = tmp_path / "p.jsonl", tmp_path / "c.jsonl"
    prompts.write_text(json.dumps({"prompt": "Tell me something."}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["rank", "generate", str(prompts), "-n", "3", "-o", str(out), "-m", str(tiny_model_dir), "--max-tokens", "4",
              "--seed", "5", "--lora", f"{adapter_dir}:0.5", "--lora-mix"])  # fmt: skip
    assert exc.value.code == 0
    row = json.loads(out.read_text())
    assert [c["adapters"] for c in row["candidates"]] == [[], [{"name": "a1", "scale": 0.5}], []]
    with pytest.raises(SystemExit) as exc:
        main(["rank", "generate", str(prompts), "-o", str(out), "-m", str(tiny_model_dir), "--lora-mix"])
    assert exc.value.code == 2
