"""Shell completion: the completers (fast, quiet, no torch) and typer's protocol through `chatcli` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatcli.cli.common import complete_models
from chatcli.cli.completion import complete_adapters, complete_history_ids, complete_presets
from chatcli.settings.presets import save_preset


def test_preset_names():
    save_preset("terse", {"temperature": 0.2})
    save_preset("wordy", {"temperature": 1.0})
    assert complete_presets("") == ["terse", "wordy"] and complete_presets("w") == ["wordy"]


def test_model_names_are_the_catalog_and_the_cache():
    from chatcli.hub.catalog import CATALOG
    from chatcli.hub.hf.hub_cache import repo_folder
    from chatcli.paths import models_dir

    (models_dir() / "my-model").mkdir()
    repo_folder("Qwen/Qwen3-0.6B").mkdir(parents=True)  # the Hugging Face cache's folder names are enough
    assert complete_models("") == sorted({"my-model", "Qwen/Qwen3-0.6B", *CATALOG})
    assert complete_models("smollm2-1") == ["smollm2-1.7b-instruct", "smollm2-135m-instruct"]
    assert complete_models("Qw") == ["Qwen/Qwen3-0.6B"]
    assert complete_models("./") == [] and complete_models("/tmp") == []  # paths: the shell completes files


def test_adapter_names_from_the_search_folders(tmp_path, monkeypatch):
    from chatcli.lora.search_dirs import user_adapters_dir

    user = user_adapters_dir()
    (user / "mine").mkdir(parents=True)
    (user / "mine" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (user / "loose.safetensors").write_bytes(b"")
    (user / "not-an-adapter").mkdir()
    monkeypatch.chdir(tmp_path)
    names = complete_adapters("")
    assert {"pirate", "mine", "loose"} <= set(names) and "not-an-adapter" not in names
    assert complete_adapters("pi") == ["pirate"] and complete_adapters("./ad") == []


def test_history_ids_with_titles():
    assert complete_history_ids("") == []  # no history yet, and none is created by a Tab
    from chatcli.chat.session import Conversation
    from chatcli.chat.store import Store, default_db_path

    assert not default_db_path().exists()
    store = Store.open()
    ids = []
    for title in ("about cats", "about dogs"):
        conv = Conversation(model="m")
        conv.add("user", title)
        conv.title = title
        ids.append(store.save_conversation(conv))
    store.close()
    got = complete_history_ids("")
    assert sorted(got) == sorted((str(i), t) for i, t in zip(ids, ("about cats", "about dogs")))


def test_a_completer_that_fails_gives_nothing(monkeypatch):
    def broken():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("chatcli.settings.presets.names", broken)
    assert complete_presets("") == []


def _complete(*, words: str, cword: int | None = None, shell: str = "bash") -> subprocess.CompletedProcess:
    env = {**os.environ, "_CHATCLI_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(cword if cword is not None else len(words.split()) - (not words.endswith(" "))))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    return subprocess.run([sys.executable, "-m", "chatcli"], env=env, capture_output=True, text=True, timeout=120)


def test_protocol_in_a_subprocess():
    save_preset("terse", {"temperature": 0.2})
    r = _complete(words="chatcli presets show ", cword=3)
    assert r.returncode == 0 and r.stdout.split() == ["terse"], r.stderr
    r = _complete(words="chatcli pres", cword=1)
    assert r.stdout.split() == ["presets"]
    r = _complete(words="chatcli generate --preset ", cword=3)
    assert r.stdout.split() == ["terse"]
    r = _complete(words="chatcli generate --model smollm2-13", cword=3)
    assert r.stdout.split() == ["smollm2-135m-instruct"]
    r = _complete(words="chatcli generate --dtype ", cword=3)
    assert r.stdout.split() == ["float32", "bfloat16", "float16"]
    r = _complete(words="chatcli chat --lora pir", cword=3)
    assert r.stdout.split() == ["pirate"]
    r = _complete(words="chatcli presets show ", shell="zsh")
    assert r.returncode == 0 and "terse" in r.stdout


_PROBE = r"""
import json, sys
from chatcli.cli.main import main
try:
    main([])
except SystemExit as e:
    if e.code not in (0, None):
        raise
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_completing_imports_no_torch_and_no_plugins(tiny_model_dir):
    env = {**os.environ, "_CHATCLI_COMPLETE": "complete_bash", "COMP_WORDS": "chatcli chat --lora ", "COMP_CWORD": "3"}
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "pirate" in r.stdout.split()
    modules = set(json.loads(r.stderr.strip().splitlines()[-1]))
    assert not {"torch", "tokenizers", "textual", "pluggy", "chatcli_rank", "chatcli.lora.spec"} & modules


def _chatcli(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "chatcli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_show_and_install_completion(tmp_path):
    r = _chatcli("--show-completion", "bash", home=tmp_path)
    assert r.returncode == 0 and "_CHATCLI_COMPLETE=complete_bash" in r.stdout and "complete -o default" in r.stdout
    r = _chatcli("--install-completion", "bash", home=tmp_path)
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "chatcli.sh"
    assert "_CHATCLI_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    assert "bash completion installed" in r.stderr


@pytest.mark.parametrize("shell", ["tcsh", "nosuchshell"])
def test_an_unknown_shell_is_one_line(tmp_path, shell):
    r = _chatcli("--install-completion", shell, home=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not a shell chatcli completes" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing written
