"""``--lora PATH[:SCALE]`` parsing and name lookup, including folder escapes."""

from __future__ import annotations

import os

import pytest
import torch

from chatcli.lora.spec import PACKAGE_ADAPTERS, adapter_dirs, resolve_adapter, split_scale, user_adapters_dir
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from chatcli.lora.validate import AdapterError, max_rank_limit
from chatcli.errors import UsageError


def _write(folder):
    ad = LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": ModuleLoRA(torch.ones(2, 64), torch.ones(64, 2), 4.0)})
    return write_adapter(ad, folder)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sft", ("sft", 1.0)),
        ("sft:0.5", ("sft", 0.5)),
        ("sft:-1", ("sft", -1.0)),
        ("sft:0", ("sft", 0.0)),
        ("sft:1e-3", ("sft", 0.001)),
        ("a:b:2", ("a:b", 2.0)),
        ("dir/with:colon", ("dir/with:colon", 1.0)),
        (r"C:\adapters\sft", (r"C:\adapters\sft", 1.0)),
        ("x:", ("x:", 1.0)),
    ],
)
def test_split_scale(text, expected):
    assert split_scale(text) == expected


@pytest.mark.parametrize("text", ["sft:inf", "sft:nan", "sft:-inf", ":0.5", ""])
def test_split_scale_refuses(text):
    with pytest.raises(UsageError):
        split_scale(text)


def test_paths_and_names(tmp_path):
    _write(tmp_path / "adapters" / "sft-v1.2")
    _write(tmp_path / "elsewhere" / "dpo")
    spec = resolve_adapter("sft-v1.2:0.25", cwd=tmp_path)
    assert spec.by_name and spec.scale == 0.25 and spec.name == "sft-v1_2"
    assert spec.path == tmp_path / "adapters" / "sft-v1.2"
    spec = resolve_adapter("elsewhere/dpo:-2", cwd=tmp_path)
    assert not spec.by_name and spec.scale == -2 and spec.name == "dpo"
    spec = resolve_adapter(str(tmp_path / "elsewhere" / "dpo" / "adapter_model.safetensors"), cwd=tmp_path)
    assert spec.name == "adapter_model" and spec.path.is_file()
    with pytest.raises(AdapterError, match="no adapter named 'ghost'"):
        resolve_adapter("ghost", cwd=tmp_path)
    with pytest.raises(AdapterError, match="does not exist"):
        resolve_adapter("./ghost:0.5", cwd=tmp_path)


def test_search_order_and_user_dir(tmp_path):
    _write(user_adapters_dir() / "mine")  # CHATCLI_HOME is a temp dir in tests
    spec = resolve_adapter("mine", cwd=tmp_path)
    assert spec.by_name and spec.path == user_adapters_dir() / "mine"
    _write(tmp_path / "adapters" / "mine")  # ./adapters comes first
    assert resolve_adapter("mine", cwd=tmp_path).path == tmp_path / "adapters" / "mine"
    dirs = adapter_dirs(tmp_path)
    assert dirs[0] == tmp_path / "adapters" and dirs[-1] == user_adapters_dir()
    assert dirs[1] == PACKAGE_ADAPTERS and (PACKAGE_ADAPTERS / "pirate").is_dir()  # the shipped demos


def test_names_may_not_escape_their_folder(tmp_path):
    outside = _write(tmp_path / "outside" / "evil")
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    os.symlink(outside, adapters / "evil")
    with pytest.raises(AdapterError, match="outside"):
        resolve_adapter("evil", cwd=tmp_path)
    # A real folder whose weights file is a symlink out of the folder.
    inner = _write(adapters / "sneaky")
    (inner / "adapter_model.safetensors").unlink()
    os.symlink(outside / "adapter_model.safetensors", inner / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="outside"):
        resolve_adapter("sneaky", cwd=tmp_path)
    # '..' as a name climbs out of ./adapters.
    _write(tmp_path / "adapter_like")
    (tmp_path / "adapter_like" / "adapters").mkdir()
    with pytest.raises(AdapterError, match="outside"):
        resolve_adapter("..", cwd=tmp_path / "adapter_like")
    # An explicit path is the person's own choice: symlinks are followed.
    assert resolve_adapter("./adapters/evil", cwd=tmp_path).path.exists()


def test_max_rank_env(monkeypatch):
    monkeypatch.setenv("CHATCLI_MAX_LORA_RANK", "64")
    assert max_rank_limit() == 64
    monkeypatch.setenv("CHATCLI_MAX_LORA_RANK", "lots")
    with pytest.raises(AdapterError, match="CHATCLI_MAX_LORA_RANK"):
        max_rank_limit()
