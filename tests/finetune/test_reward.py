"""A trained reward model loaded into the chat: ``/score`` and best-of-N for ``/rank``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from chatcli.engine.loader import load_engine
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from chatcli.errors import UsageError
from chatcli.chat.session import Conversation
from chatcli.chat.frontend import FrontEnd
from chatcli_finetune.args import TrainArgs
from chatcli_finetune.data import collate
from chatcli_finetune.losses import rewards
from chatcli_finetune.reward import RewardScorer, load_reward, reward_names
from chatcli_finetune.run import run_training
from chatcli_finetune.score_command import conversation_rewards, score_command
from chatcli_rank import command as rank_command
from chatcli_rank.ranking import Ranking
from chatcli_rank.store import RankStore
from tests.rank_support import candidates
from tests.tiny import EOS_ID

QA = [("Where is the fox?", "The fox is near the river bank."), ("Say a number.", "12345 and 67890."),
      ("What is Paris?", "Paris is the capital of France.")]  # fmt: skip
BAD = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("reward")
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": BAD}]} for q, a in QA]  # fmt: skip
    data = tmp / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = TrainArgs(kind="reward", data=str(data), out=str(tmp / "rm"), model=str(tiny_model_dir), rank=4, alpha=8.0,
                     dropout=0.0, val_split=0.0, batch_size=3, schedule="constant", seed=0, max_steps=25, lr=5e-3)  # fmt: skip
    return run_training(args)


def _ctx(engine, conv):
    said: list = []
    # A line-based front end: no screens, adapters_changed() required of every CommandContext.
    ctx = SimpleNamespace(core=SimpleNamespace(engine=engine, conv=conv, announce=lambda *a, **k: None), said=said,
                          say=lambda m, kind="info": said.append((m, kind)), frontend=FrontEnd("test"),
                          adapters_changed=lambda: None)  # fmt: skip
    return ctx


def _text(renderable) -> str:
    console = Console(record=True, width=140)
    console.print(renderable)
    return console.export_text()


def test_scores_equal_the_trained_reward_and_answers_stay_unchanged(trained, tiny_model_dir):
    out = Path(trained["summary"]["out"])
    engine = load_engine(str(tiny_model_dir), device="cpu")
    ids = torch.tensor([engine.tokenizer.encode_chat([{"role": "user", "content": QA[0][0]}])])
    before = engine.model(ids)
    # Another (generation) adapter is on: scoring must switch it off, and leave it on after.
    manager = engine.adapters
    gen = torch.Generator().manual_seed(3)
    q = "model.layers.0.self_attn.q_proj"
    lin = engine.model.get_submodule(q)
    manager.add(LoRAAdapter(modules={q: ModuleLoRA(A=torch.randn(2, lin.in_features, generator=gen),
                                                   B=torch.randn(lin.out_features, 2, generator=gen), alpha=2.0)}), "style")  # fmt: skip
    styled = engine.model(ids)
    assert not torch.allclose(styled, before)

    info = load_reward(engine, out, name="rm")
    assert not info.enabled and reward_names(manager) == ["rm"]
    assert torch.equal(engine.model(ids), styled)  # the reward LoRA is off for answers

    scorer = RewardScorer(engine)
    prompts = [[{"role": "user", "content": q}] for q, _ in QA]
    got = [scorer.score(p, [a, BAD]) for p, (_, a) in zip(prompts, QA)]
    assert all(c > r for c, r in got), got  # the preference it was trained on
    # Same numbers as the training-time reward of the in-process model (pairs in data order).
    pairs = sorted(trained["train"], key=lambda p: p.line)
    tids, attn, _ = collate([x for p in pairs for x in (p.chosen, p.rejected)], EOS_ID)
    with torch.no_grad():
        ref = rewards(trained["model"].eval(), trained["head"], tids, attn).view(-1, 2)
    assert torch.allclose(torch.tensor(got), ref, atol=1e-4), (got, ref)
    # Every switch is back: the style adapter on, the reward adapter off.
    assert torch.equal(engine.model(ids), styled)
    assert manager.info("style").enabled and not manager.info("rm").enabled


def test_score_command_lists_the_branch_and_the_last_answers_siblings(trained, tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu")
    conv = Conversation()
    u1 = conv.add("user", QA[0][0])
    conv.add("assistant", QA[0][1], parent=u1.id)
    u2 = conv.add("user", QA[2][0], parent=conv.leaf.id)
    conv.add("assistant", BAD, parent=u2.id)
    conv.add("assistant", QA[2][1], parent=u2.id)  # the newest sibling is active
    ctx = _ctx(engine, conv)
    with pytest.raises(UsageError, match="no reward model is loaded"):
        score_command(ctx, "")
    score_command(ctx, f"load {trained['summary']['out']} rm")
    assert "loaded reward model rm" in ctx.said[-1][0]
    score_command(ctx, "")
    rows = conversation_rewards(RewardScorer(engine), conv)
    assert [(r.turn, r.sibling, r.siblings, r.active, r.text) for r in rows] == [
        (1, 1, 1, True, QA[0][1]), (2, 1, 2, False, BAD), (2, 2, 2, True, QA[2][1])]  # fmt: skip
    assert rows[2].reward > rows[1].reward
    text = _text(ctx.said[-1][0])
    assert "rewards by rm" in text and f"{rows[2].reward:+.3f}" in text and "2 (1/2)" in text
    with pytest.raises(UsageError, match="not a loaded reward model"):
        score_command(ctx, "style")


def test_score_load_refuses_a_plain_adapter(tmp_path, tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu")
    q = "model.layers.0.self_attn.q_proj"
    lin = engine.model.get_submodule(q)
    from chatcli.lora.peft_io import write_adapter

    write_adapter(LoRAAdapter(modules={q: ModuleLoRA(A=torch.zeros(2, lin.in_features), B=torch.zeros(lin.out_features, 2),
                                                     alpha=2.0)}), tmp_path / "plain")  # fmt: skip
    with pytest.raises(UsageError, match="not a reward model"):
        load_reward(engine, tmp_path / "plain")
    with pytest.raises(UsageError, match="no reward model at"):
        load_reward(engine, tmp_path / "missing")


def test_rank_candidates_come_best_first_with_a_reward_model(trained, tiny_model_dir, monkeypatch):
    engine = load_engine(str(tiny_model_dir), device="cpu")
    conv = Conversation()
    conv.add("user", QA[1][0])
    texts = [BAD, "Paris is the capital of France.", QA[1][1]]
    monkeypatch.setattr(rank_command, "generate_candidates", lambda *a, **k: candidates(texts))
    store = RankStore.open()
    ctx = _ctx(engine, conv)

    plain = rank_command.ChatRanking(ctx, rank_command.RankArgs(n=3), store).generate(None, threading.Event())
    assert [c.text for c in plain] == texts  # no reward model: as generated
    assert all(c.reward is None for c in plain)

    load_reward(engine, trained["summary"]["out"], name="rm")
    run = rank_command.ChatRanking(ctx, rank_command.RankArgs(n=3), store)
    got = run.generate(None, threading.Event())
    scores = RewardScorer(engine).score([{"role": "user", "content": QA[1][0]}], texts)
    assert [c.text for c in got] == [texts[i] for i in sorted(range(3), key=lambda i: -scores[i])]
    assert got[-1].text == BAD and got[0].text != BAD and [c.index for c in got] == [0, 1, 2]
    assert [c.reward for c in got] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)  # each keeps its score
    store.add_ranking(run.set_id, Ranking(((0,), (1,), (2,)), "ranked"))
    [item] = store.items()
    assert item.reward_model == "rm" and [c.reward for c in item.candidates] == pytest.approx([c.reward for c in got])
    assert rank_command.reward_model_name(engine) == "rm"
    assert "best first by reward model rm" in rank_command.build_screen(ctx, rank_command.RankArgs(n=3)).title_text


def test_finetune_load_of_a_reward_run_loads_it_for_scoring_only(trained, tiny_model_dir):
    from chatcli_finetune import command

    engine = load_engine(str(tiny_model_dir), device="cpu")
    run = SimpleNamespace(kind="reward", out=Path(trained["summary"]["out"]), loaded=False)
    text = command._load(_ctx(engine, Conversation()), run)
    assert text.startswith("loaded reward model rm") and run.loaded
    assert reward_names(engine.adapters) == ["rm"] and not engine.adapters.info("rm").enabled
    command._load(_ctx(engine, Conversation()), run)  # loading again replaces it
    assert engine.adapters.names == ["rm"]


def test_load_lora_of_a_reward_model_keeps_it_off_for_answers(trained, tiny_model_dir):
    from chatcli.chat.lora_commands import load_lora

    engine = load_engine(str(tiny_model_dir), device="cpu")
    ctx = _ctx(engine, Conversation())
    load_lora(ctx, str(trained["summary"]["out"]))
    name = reward_names(engine.adapters)[0]
    assert not engine.adapters.info(name).enabled
    assert any("reward model" in _text(m) for m, _ in ctx.said)
