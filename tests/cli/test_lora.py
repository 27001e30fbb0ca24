"""``chatcli lora info / merge / diff`` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from tests.cli_support import run as cli_run
from tests.lora_helpers import logits


@pytest.fixture
def run(capsys, monkeypatch):
    import typer

    import chatcli.cli.main as cli
    from chatcli.cli import lora as cli_lora

    original = cli._register_commands

    def register(only: str | None = None) -> None:
        original(only)
        if not any(g.name == "lora" for g in cli.app.registered_groups):
            cli_lora.register(cli.app)

    monkeypatch.setattr(cli, "_register_commands", register)

    def go(*argv):
        return cli_run(capsys, *argv)

    assert typer  # imported for the registry
    return go


def _adapter(model_dir, seed=0, head=True) -> LoRAAdapter:
    model = load_checkpoint(model_dir)
    gen = torch.Generator().manual_seed(seed)
    mods = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.endswith(("q_proj", "v_proj", "up_proj")):
            mods[n] = ModuleLoRA(0.3 * torch.randn(4, m.in_features, generator=gen), 0.3 * torch.randn(m.out_features, 4, generator=gen), 8.0)
    saved = {"lm_head": {"weight": model.lm_head.weight.detach() + 0.3 * torch.randn(model.lm_head.weight.shape, generator=gen)}} if head else {}
    return LoRAAdapter(modules=mods, saved=saved, base_model="tiny-llama")


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    return write_adapter(_adapter(tiny_model_dir), tmp_path / "sft")


def test_info_text_and_json(run, adapter_dir, tiny_model_dir):
    code, out, err = run("lora", "info", str(adapter_dir))
    assert code == 0, err
    assert "rank" in out and "q_proj, v_proj, up_proj" in out and "layers 0-1 (2)" in out
    assert "tiny-llama" in out and "lm_head" in out
    code, out, err = run("lora", "info", str(adapter_dir), "--json", "--model", str(tiny_model_dir))
    assert code == 0, err
    d = json.loads(out)
    assert d["name"] == "sft" and d["ranks"] == [4] and d["wrapped_layers"] == 6
    assert d["expects"] == {"hidden_size": 64, "min_layers": 2}
    assert d["check"]["fits"] is True and d["check"]["percent_of_base"] > 0
    assert d["parameters"] == _adapter(tiny_model_dir).num_params()


def test_info_reports_a_misfit_and_missing(run, tmp_path, tiny_family_dirs):
    other = write_adapter(_adapter(tiny_family_dirs("qwen3"), head=False), tmp_path / "q3")  # head_dim 32: other shapes
    code, out, err = run("lora", "info", str(other), "--model", str(tiny_family_dirs("llama")))
    assert code == 0, err
    assert "no: " in out and "another base model" in out
    code, out, err = run("lora", "info", str(tmp_path / "nope"))
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err


def test_merge_writes_a_checkpoint_that_loads_like_any_model(run, tmp_path, tiny_model_dir, adapter_dir):
    out_dir = tmp_path / "merged"
    code, out, err = run("lora", "merge", "--model", str(tiny_model_dir), "--lora", f"{adapter_dir}:0.5", "--out", str(out_dir))
    assert code == 0, err
    assert out.strip() == str(out_dir)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {
        p.name for p in out_dir.iterdir()
    }
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False  # the adapter replaces the (tied) LM head

    reference = load_checkpoint(tiny_model_dir)
    AdapterManager(reference).load(adapter_dir, scale=0.5)
    merged = load_checkpoint(out_dir)
    assert (logits(merged) - logits(reference)).abs().max() <= 1e-4
    assert not (logits(merged) - logits(load_checkpoint(tiny_model_dir))).abs().max() <= 1e-3

    from chatcli.engine.loader import load_engine

    assert load_engine(str(out_dir), device="cpu").tokenizer.encode("hello")

    code, _, err = run("lora", "merge", "--model", str(tiny_model_dir), "--lora", str(adapter_dir), "--out", str(out_dir))
    assert code == 2 and "--force" in err


def test_merge_without_head_keeps_tied_embeddings(run, tmp_path, tiny_model_dir):
    ad = write_adapter(_adapter(tiny_model_dir, head=False), tmp_path / "nohead")
    code, _, err = run("lora", "merge", "-m", str(tiny_model_dir), "-l", str(ad), "-o", str(tmp_path / "m2"))
    assert code == 0, err
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["tie_word_embeddings"] is True
    reference = load_checkpoint(tiny_model_dir)
    AdapterManager(reference).load(ad)
    assert (logits(load_checkpoint(tmp_path / "m2")) - logits(reference)).abs().max() <= 1e-4


def test_diff_json(run, tiny_model_dir, adapter_dir):
    code, out, err = run("lora", "diff", "--lora", str(adapter_dir), "Hello there", "--model", str(tiny_model_dir),
                         "--json", "-n", "8", "--top", "3")  # fmt: skip
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    meta, tokens, summary = objs[0], objs[1:-1], objs[-1]
    assert meta["type"] == "meta" and meta["adapters"][0]["name"] == "sft"
    assert summary["type"] == "summary" and summary["tokens"] == len(tokens) > 0
    assert summary["adapters"] == ["sft"]
    for i, t in enumerate(tokens):
        assert t["type"] == "token" and t["index"] == i and t["kl_bits"] >= 0
        assert 0 <= t["p_base"] <= 1 and 0 < t["p_adapter"] <= 1
        assert t["shift"] == pytest.approx(t["p_adapter"] - t["p_base"])
        assert 3 <= len(t["top"]) <= 6
    assert summary["mean_kl_bits"] == pytest.approx(sum(t["kl_bits"] for t in tokens) / len(tokens))
    # Greedy with the adapter on: each chosen token is the adapter distribution's top token.
    assert all(t["id"] == max(t["top"], key=lambda x: x["p_adapter"])["id"] for t in tokens)


def test_diff_text_and_bad_adapter(run, tiny_model_dir, adapter_dir, tmp_path):
    code, out, err = run("lora", "diff", "-l", str(adapter_dir), "Hi", "-m", str(tiny_model_dir), "-n", "4")
    assert code == 0, err
    assert "KL bits" in out and "mean KL" in out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_model.bin").write_bytes(b"\x80\x04")
    code, out, err = run("lora", "diff", "-l", str(bad), "Hi", "-m", str(tiny_model_dir))
    assert code == 1 and err.count("\n") == 1 and "never unpickled" in err and out == ""


def test_generate_with_lora_flag(run, tiny_model_dir, adapter_dir):
    base = ("generate", "Paris is", "--model", str(tiny_model_dir), "--json", "-n", "8", "--temperature", "0")
    ids = lambda out: [json.loads(x)["id"] for x in out.splitlines() if json.loads(x)["type"] == "step"]  # noqa: E731
    code, plain, _ = run(*base)
    assert code == 0
    code, adapted, _ = run(*base, "--lora", str(adapter_dir))
    assert code == 0 and ids(adapted) != ids(plain)
    assert json.loads(adapted.splitlines()[0])["adapters"] == [{"name": "sft", "scale": 1.0}]
    code, zero, _ = run(*base, "--lora", f"{adapter_dir}:0")
    assert code == 0 and ids(zero) == ids(plain)


def test_missing_lora_fails_before_loading_the_model(run, tiny_model_dir, tmp_path, monkeypatch):
    import chatcli.hub.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("model loaded"))
    code, out, err = run("generate", "hi", "--model", str(tiny_model_dir), "--lora", str(tmp_path / "nope"))
    assert code == 1 and out == "" and err.count("\n") == 1 and "nope" in err


def test_a_temporary_override_never_reuses_a_stale_kv_cache(tiny_model_dir, adapter_dir):
    """override() changes the weights: an answer inside it equals a fresh base model's, and the
    answer after it equals the adapter's again (the generator's prefix cache must not leak)."""
    import chatcli
    from chatcli.engine.loader import load_engine

    msgs = [{"role": "user", "content": "Paris is"}]
    base = chatcli.generate(load_engine(str(tiny_model_dir), device="cpu"), msgs, temperature=0, max_tokens=8)
    engine = load_engine(str(tiny_model_dir), device="cpu", lora=[str(adapter_dir)])
    adapted = chatcli.generate(engine, msgs, temperature=0, max_tokens=8)
    assert adapted != base
    with engine.adapters.disabled():
        assert chatcli.generate(engine, msgs, temperature=0, max_tokens=8) == base
    assert chatcli.generate(engine, msgs, temperature=0, max_tokens=8) == adapted


def test_info_shows_the_scaling_and_the_share(run, tmp_path, tiny_model_dir, adapter_dir):
    code, out, err = run("lora", "info", str(adapter_dir))
    assert code == 0, err
    assert "α/r = 8/4 = 2: ΔW = 2·B·A" in out and "(--model M: its share of M)" in out
    code, out, err = run("lora", "info", str(adapter_dir), "--json")
    d = json.loads(out)
    assert d["scaling"] == 2.0 and d["scaling_rule"] == "alpha/r" and "check" not in d
    rs = _adapter(tiny_model_dir, head=False)
    rs.use_rslora = True
    rs_dir = write_adapter(rs, tmp_path / "rs")
    code, out, err = run("lora", "info", str(rs_dir), "--json")
    d = json.loads(out)
    assert d["scaling"] == pytest.approx(8 / 2) and d["scaling_rule"] == "alpha/sqrt(r)"  # 8 / sqrt(4)
    code, out, err = run("lora", "info", str(rs_dir), "--model", str(tiny_model_dir))
    assert code == 0, err
    assert "α/√r = 8/√4 = 4 (rsLoRA)" in out
    share = 100.0 * rs.num_params() / sum(p.numel() for p in load_checkpoint(tiny_model_dir).parameters())
    assert f"({share:.2f}% of the model's)" in out


def test_info_with_a_model_draws_the_heat_table(run, adapter_dir, tiny_model_dir):
    from chatcli.lora.layer_norms import layer_norms

    code, out, err = run("lora", "info", str(adapter_dir), "--model", str(tiny_model_dir), "--json")
    assert code == 0, err
    d = json.loads(out)["layer_norms"]
    mgr = AdapterManager(load_checkpoint(tiny_model_dir))
    mgr.load(adapter_dir, name="sft")
    expected = layer_norms(mgr, "sft")
    assert d["type"] == "layer_norms" and d["adapter"] == "sft" and d["scaling"] == 2.0 and d["targets"] == ["q_proj", "v_proj", "up_proj"]
    assert [(c["module"], c["ratio"]) for c in d["cells"]] == [(c.module, pytest.approx(c.ratio)) for c in expected.cells]
    assert d["largest"]["module"] == expected.largest().module and [x["layer"] for x in d["layers"]] == [0, 1]
    code, out, err = run("lora", "info", str(adapter_dir), "--model", str(tiny_model_dir))
    assert code == 0, err
    assert "sft: ‖ΔW‖/‖W0‖ in %" in out and "◆ max: layer" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("sft: "))
    assert lines[head + 1].split() == ["layer", "q", "v", "up", "all"] and lines[head + 2].split()[0] == "0"
    code, out, err = run("lora", "info", str(adapter_dir))  # model-free as before: no weights, no table
    assert code == 0 and "‖ΔW‖" not in out and "layer_norms" not in json.loads(run("lora", "info", str(adapter_dir), "--json")[1])


def test_layers_ranks_the_layers_of_a_generated_or_given_answer(run, tiny_model_dir, adapter_dir):
    from chatcli.engine.loader import load_engine
    from chatcli.lora.ablation import layer_ablation

    code, out, err = run("lora", "layers", f"{adapter_dir}:0.5", "Hello there", "--model", str(tiny_model_dir), "-n", "6", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["type"] == "layer_ablation" and d["adapters"] == ["sft×0.5"] and d["generated"] is True
    assert sorted(x["layer"] for x in d["layers"]) == [0, 1] and d["tokens"] == 6
    assert [x["mean_kl_bits"] for x in d["layers"]] == sorted((x["mean_kl_bits"] for x in d["layers"]), reverse=True)

    code, out, err = run("lora", "layers", str(adapter_dir), "Hello there", "--model", str(tiny_model_dir),
                         "--answer", "General Kenobi", "--json")  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    engine = load_engine(str(tiny_model_dir), device="cpu")
    engine.adapters.load(adapter_dir, name="sft")
    tok = engine.tokenizer
    expected = layer_ablation(engine.model, engine.adapters, tok.encode_chat([{"role": "user", "content": "Hello there"}]),
                              tok.encode("General Kenobi"))  # fmt: skip
    assert d["generated"] is False and d["answer"] == "General Kenobi" and d["tokens"] == expected.tokens
    assert d["total_kl_bits"] == pytest.approx(expected.total_kl_bits, abs=1e-5)
    assert [(x["layer"], x["mean_kl_bits"]) for x in d["layers"]] == [(e.layer, pytest.approx(e.kl_bits, abs=1e-5)) for e in expected.ranked()]

    code, out, err = run("lora", "layers", str(adapter_dir), "Hello there", "--model", str(tiny_model_dir), "-n", "4")
    assert code == 0, err
    assert "sft: KL(all on ‖ one layer off)" in out and "every layer off (no adapter)" in out and "█" in out
    code, out, err = run("lora", "layers", str(adapter_dir), "Hi", "--model", str(tiny_model_dir), "-n", "0")
    assert code == 2 and "--max-tokens" in err and err.count("\n") == 1
