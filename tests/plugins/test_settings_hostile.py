"""A broken or hostile config file never crashes plugin loading: one warning, every plugin loads."""

from __future__ import annotations

import pytest

from chatcli.plugins.settings import selection_setting


@pytest.mark.parametrize(
    "name, text, reason",
    [
        ("config.json", '{"plugins":' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
        ("config.toml", "plugins = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("config.json", "{", "not valid JSON"),
        ("config.json", '{"plugins": "\\ud83d"}', None),  # a lone surrogate is text to parse_selection, not a crash
    ],
)
def test_hostile_config_files_are_one_clear_error(_chatcli_home, name, text, reason):
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    if reason is None:
        value, where = selection_setting()
        assert where.endswith(name)
        return
    with pytest.raises(ValueError, match=reason):
        selection_setting()


def test_plugins_list_says_why_the_setting_was_ignored(_chatcli_home, capsys):
    from chatcli.cli.main import main

    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{", encoding="utf-8")
    try:
        main(["plugins", "list"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr()
    assert "warning: cannot read" in out.err and "loading all plugins" in out.err
    assert "rank" in out.out
