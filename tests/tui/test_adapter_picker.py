"""/load-lora with no argument in the chat TUI: the adapter picker (./adapters, demo adapters, user dir)."""

from __future__ import annotations

import torch

from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter
from tests.tui.test_compare import _app, adapter_dir  # noqa: F401  (the fixture)
from tests.tui_support import ready, run, send, wait_for


def test_find_adapters_lists_each_folder_once_and_skips_non_adapters(tmp_path, adapter_dir):
    from chatcli.tui.widgets.adapter_picker import find_adapters

    local, user = tmp_path / "local", tmp_path / "user"
    write_adapter(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": ModuleLoRA(torch.ones(2, 64), torch.ones(64, 2), 4.0)}),
                  local / "b-one")  # fmt: skip
    (local / "pickled").mkdir()
    (local / "pickled" / "adapter_model.bin").write_bytes(b"x")  # never offered (nor unpickled)
    (local / "notes.txt").write_text("hi")
    user.mkdir()
    (user / "a two.safetensors").write_bytes((adapter_dir / "adapter_model.safetensors").read_bytes())
    (user / "adapter_config.json").write_text((adapter_dir / "adapter_config.json").read_text())
    found = find_adapters([(local, "./adapters"), (tmp_path / "missing", "demo"), (user, "user"), (local, "again")])
    assert [(e.name, e.origin, e.rank) for e in found] == [("b-one", "./adapters", 2), ("a_two", "user", 4)]
    assert found[1].path == user / "a two.safetensors"


def test_load_lora_without_a_path_opens_the_picker(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    import shutil

    from chatcli.lora.spec import PACKAGE_ADAPTERS
    from chatcli.tui.widgets.adapter_picker import AdapterPicker

    work = tmp_path / "work"
    shutil.copytree(adapter_dir, work / "adapters" / "my adapter")  # a space: the path is quoted for /load-lora
    monkeypatch.chdir(work)

    async def go():
        app = _app(tiny_model_dir)
        async with app.run_test(size=(140, 44)) as pilot:
            await ready(pilot)
            await send(pilot, "/load-lora")
            await wait_for(pilot, lambda: isinstance(app.screen, AdapterPicker), what="the picker")
            picker = app.screen
            names = [(e.name, e.origin) for e in picker.entries]
            assert names[0] == ("my_adapter", "./adapters")
            demo = sorted(p.name for p in PACKAGE_ADAPTERS.iterdir() if (p / "adapter_config.json").is_file())
            assert [n for n, o in names if o == "demo"] == demo  # the shipped demo adapters are offered too
            await pilot.press("enter")  # the first one is highlighted
            await wait_for(pilot, lambda: not isinstance(app.screen, AdapterPicker), what="the picker to close")
            await pilot.pause()
            assert [i.name for i in app.core.engine.adapters.list()] == ["my_adapter"]
            assert "lora: my_adapter" in app.status.info.adapters

            await send(pilot, "/load-lora")  # again: the loaded one is marked and cannot be chosen twice
            await wait_for(pilot, lambda: isinstance(app.screen, AdapterPicker), what="the picker")
            from textual.widgets import OptionList

            options = app.screen.query_one(OptionList)
            assert options.get_option_at_index(0).disabled and "(loaded)" in str(options.get_option_at_index(0).prompt)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, AdapterPicker), what="the picker to close")
            assert [i.name for i in app.core.engine.adapters.list()] == ["my_adapter"]

    run(go())
