"""The ``register_graders`` hook: a plugin's grader is found by name for ``finetune rl --reward NAME``
and ``/best``; bad registrations and duplicate names are reported, never fatal."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from chatcli.paths import config_dir
from chatcli.plugins.manager import PluginManager
from chatcli_finetune.rl.graders import Grader, parse_grader

POLITE = """
    from chatcli.plugins.hookspecs import hookimpl

    def polite(prompt_messages, answer_text):
        return 1.0 if "please" in answer_text.lower() else 0.0

    @hookimpl
    def register_graders(register):
        register("polite", polite, "1 for answers that say please")
"""
CLASH = """
    from chatcli.plugins.hookspecs import hookimpl

    @hookimpl
    def register_graders(register):
        register("polite", lambda m, a: 0.5, "a second polite")
"""
BAD = """
    from chatcli.plugins.hookspecs import hookimpl

    @hookimpl
    def register_graders(register):
        register("short", lambda m, a: 0.0)
        register("bad name", lambda m, a: 0.0)
"""


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("CHATCLI_PLUGINS", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("chatcli_user_plugins"):
            del sys.modules[name]


def _plugin(name: str, code: str) -> None:
    folder = config_dir() / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(code), encoding="utf-8")


def _graders(m: PluginManager) -> dict:
    return {g.name: g for g in m.graders()}


def test_a_plugin_grader_is_found_by_name_and_scores():
    _plugin("polite", POLITE)
    m = PluginManager(entry_points=[])
    graders = _graders(m)
    assert list(graders) == ["polite"] and graders["polite"].plugin == "polite" and "please" in graders["polite"].help
    spec = parse_grader("polite", lambda: graders)
    assert spec.kind == "plugin"
    assert Grader("polite", fn=spec.fn).score([{"role": "user", "content": "hi"}], ["Please sit.", "Sit."]) == [1.0, 0.0]


def test_a_second_grader_of_the_same_name_and_a_bad_name_are_reported():
    _plugin("a_polite", POLITE)
    _plugin("b_clash", CLASH)
    _plugin("c_bad", BAD)
    problems: list[str] = []
    m = PluginManager(entry_points=[], report=problems.append)
    graders = _graders(m)
    winner = graders["polite"].plugin
    assert list(graders) == ["polite"] and winner in ("a_polite", "b_clash")  # the one registered first
    loser = ({"a_polite", "b_clash"} - {winner}).pop()
    assert any(f"plugin {loser!r}: grader 'polite' is already registered by {winner!r}" in p for p in problems)
    assert any("invalid grader name 'bad name'" in p for p in problems)
    assert m.infos["c_bad"].status == "error" and "short" not in graders  # a plugin that raised adds nothing


def test_finetune_rl_trains_against_a_plugin_grader(tmp_path, tiny_model_dir):
    from chatcli_finetune.rl.args import RLArgs
    from chatcli_finetune.rl.run import run_rl

    _plugin("polite", POLITE)
    m = PluginManager(entry_points=[])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Ask me nicely."}) + "\n", encoding="utf-8")
    args = RLArgs(kind="rl", data=str(prompts), out=str(tmp_path / "out"), model=str(tiny_model_dir), reward="polite",
                  max_steps=1, group_size=2, max_new_tokens=4, val_split=0.0)  # fmt: skip
    r = run_rl(args, plugin_graders=lambda: _graders(m))
    assert r["summary"]["status"] == "finished" and r["summary"]["grader"] == "polite"
    group = json.loads((tmp_path / "out" / "groups.jsonl").read_text().splitlines()[0])
    assert [a["reward"] for a in group["answers"]] == [float("please" in a["text"].lower()) for a in group["answers"]]
