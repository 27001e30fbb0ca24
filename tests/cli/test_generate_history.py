"""`chatcli generate` in the history: saved once at the end, --no-save/--no-log/config, --resume ID and -c."""

from __future__ import annotations

import json
import sqlite3

import pytest

from chatcli.chat.history.logged_run import RunLog, worth_saving
from chatcli.chat.store import Store, default_db_path
from chatcli.engine.events import Done
from chatcli.engine.params import SamplingParams
from tests.cli_support import run
from tests.fake_engine import FakeEngine


def gen(capsys, model_dir, *argv):
    code, out, err = run(capsys, "generate", *argv, "--model", str(model_dir), "--json", "-n", "6", "--seed", "5")
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    return objs[0], [o for o in objs if o["type"] == "step"], objs[-1]


def conversations() -> int:
    path = default_db_path()
    if not path.exists():
        return 0
    return sqlite3.connect(path).execute("SELECT COUNT(*) FROM conversations").fetchone()[0]


def test_a_run_is_saved_once_as_a_conversation_with_its_steps_and_meta(capsys, tiny_model_dir):
    meta, steps, done = gen(capsys, tiny_model_dir, "Paris is", "--system", "Be brief.")
    conv_id = done["conversation_id"]
    assert "conversation_id" not in meta  # a new conversation has no id until the answer is saved
    conv = Store.open().load(conv_id)
    user, answer = conv.path()
    assert (conv.title, conv.system, conv.model) == ("Paris is", "Be brief.", str(tiny_model_dir))
    assert (user.role, user.content) == ("user", "Paris is")
    assert answer.role == "assistant" and answer.status == done["finish_reason"]
    assert [s.id for s in answer.steps] == [s["id"] for s in steps]
    assert answer.content == "".join(s["text"] for s in steps)
    assert answer.steps[2].model_prob == pytest.approx(steps[2]["model_prob"])
    assert answer.meta["params"] == meta["params"] and answer.meta["system"] == "Be brief."
    assert answer.meta["completion_tokens"] == len(steps) and answer.meta["prompt_tokens"] == done["prompt_tokens"]
    assert answer.meta["adapters"] == [] and "raw" not in answer.meta
    assert conv.params.seed == 5
    code, out, _ = run(capsys, "history", "show", str(conv_id))
    assert code == 0 and "## You\n\nParis is" in out


def test_raw_runs_are_saved_marked_raw_and_cannot_be_continued(capsys, tiny_model_dir):
    _, _, done = gen(capsys, tiny_model_dir, "Once upon a time", "--raw")
    answer = Store.open().load(done["conversation_id"]).path()[1]
    assert answer.meta["raw"] is True
    code, _, err = run(capsys, "generate", "more", "--model", str(tiny_model_dir), "--resume", str(done["conversation_id"]))
    assert code == 2 and err.count("\n") == 1 and "--raw continuation" in err
    code, _, err = run(capsys, "generate", "more", "--model", str(tiny_model_dir), "--raw", "-c")
    assert code == 2 and err.count("\n") == 1 and "drop --raw" in err


@pytest.mark.parametrize("opt_out", [["--no-save"], ["--no-log"], ["env"], ["config"]])
def test_opting_out_saves_nothing(capsys, tiny_model_dir, _chatcli_home, monkeypatch, opt_out):
    if opt_out == ["env"]:
        monkeypatch.setenv("CHATCLI_SAVE_HISTORY", "0")
        opt_out = []
    elif opt_out == ["config"]:
        folder = _chatcli_home / "config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text("[defaults]\nsave_history = false\n", encoding="utf-8")
        opt_out = []
    _, steps, done = gen(capsys, tiny_model_dir, "hello", *opt_out)
    assert steps and "conversation_id" not in done
    assert not default_db_path().exists()  # not even created


def test_save_typed_wins_over_a_config_that_turns_it_off(capsys, tiny_model_dir, _chatcli_home):
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text("[defaults]\nsave_history = false\n", encoding="utf-8")
    _, _, done = gen(capsys, tiny_model_dir, "hello", "--save")
    assert done["conversation_id"] == 1
    code, _, err = run(capsys, "generate", "again", "--model", str(tiny_model_dir), "-c")
    assert code == 2 and err.count("\n") == 1 and "save_history = false" in err and "add --save" in err


def test_a_bad_config_value_is_one_line(capsys, tiny_model_dir, _chatcli_home):
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text('[defaults]\nsave_history = "no"\n', encoding="utf-8")
    code, out, err = run(capsys, "generate", "hello", "--model", str(tiny_model_dir))
    assert code == 2 and out == "" and err.count("\n") == 1 and "save_history" in err and "true or false" in err


@pytest.mark.parametrize("argv", [
    ["--model", "/no/such/model"],  # the model does not load
    ["--temperature", "-1"],  # a bad value
    ["--model", "TINY", "--chat-template", "/no/such/template.jinja"],
])
def test_refused_runs_save_nothing(capsys, tiny_model_dir, argv):
    argv = [str(tiny_model_dir) if a == "TINY" else a for a in argv]
    code, _, err = run(capsys, "generate", "hello", *argv)
    assert code != 0 and err.count("\n") == 1
    assert conversations() == 0


def test_resume_appends_the_turn_and_the_model_sees_the_history(capsys, tiny_model_dir):
    _, _, first = gen(capsys, tiny_model_dir, "Paris is", "--system", "Be brief.")
    conv_id = first["conversation_id"]
    code, prompt, _ = run(capsys, "generate", "and then?", "--model", str(tiny_model_dir), "--resume", str(conv_id),
                          "--print-prompt")  # fmt: skip
    assert code == 0 and prompt.index("Be brief.") < prompt.index("Paris is") < prompt.index("and then?")
    meta, steps, done = gen(capsys, tiny_model_dir, "and then?", "--resume", str(conv_id))
    assert meta["conversation_id"] == done["conversation_id"] == conv_id
    conv = Store.open().load(conv_id)
    assert [(n.role, n.content) for n in conv.path()][2] == ("user", "and then?")
    assert [s.id for s in conv.path()[3].steps] == [s["id"] for s in steps]
    assert conv.system == "Be brief." and conv.path()[3].meta["system"] == "Be brief."  # kept unless typed
    assert conversations() == 1


def test_continue_takes_the_latest_conversation_and_system_typed_replaces_its_own(capsys, tiny_model_dir):
    gen(capsys, tiny_model_dir, "first conversation")
    _, _, second = gen(capsys, tiny_model_dir, "second conversation", "--system", "old")
    _, _, done = gen(capsys, tiny_model_dir, "more", "-c", "--system", "new")
    assert done["conversation_id"] == second["conversation_id"]
    conv = Store.open().load(second["conversation_id"])
    assert conv.system == "new" and len(conv.path()) == 4
    assert [s.title for s in Store.open().list()] == ["second conversation", "first conversation"]


def test_continue_answers_with_the_model_given_and_says_when_the_conversation_had_another(
        capsys, tiny_model_dir, tiny_family_dirs):  # fmt: skip
    gen(capsys, tiny_model_dir, "hello")
    other = tiny_family_dirs("qwen2")
    code, out, err = run(capsys, "generate", "again", "-c", "--json", "-n", "2", "--model", str(other))
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["model"] == str(other)
    (note,) = [line for line in err.splitlines() if "was made with" in line]
    assert note == f"chatcli: conversation 1 was made with {tiny_model_dir}; this answer comes from {other} (--model to choose)"
    conv = Store.open().load(1)
    assert conv.model == str(other) and conv.path()[1].meta["model"] == str(tiny_model_dir)
    code, _, err = run(capsys, "generate", "more", "-c", "-n", "2", "--model", str(other))
    assert code == 0 and "was made with" not in err  # now it is the conversation's model


@pytest.mark.parametrize("argv,words", [
    (["--resume", "999"], "no conversation 999"),
    (["--resume", "abc"], "invalid --resume 'abc'"),
    (["-c", "--resume", "1"], "give one"),
    (["-c", "--no-save"], "--no-save turns saving off"),
])
def test_bad_resumes_are_one_line_exit_2_and_load_nothing(capsys, tiny_model_dir, argv, words):
    gen(capsys, tiny_model_dir, "hello")
    code, out, err = run(capsys, "generate", "hi", "--model", "/never/loaded", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err
    assert conversations() == 1 and len(Store.open().load(1).nodes) == 2


def test_continue_with_an_empty_history_is_one_line(capsys, tiny_model_dir):
    code, _, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "-c")
    assert code == 2 and err.count("\n") == 1 and "the history is empty" in err


def test_a_history_that_cannot_be_opened_warns_and_the_answer_stands(capsys, tiny_model_dir, _chatcli_home):
    (_chatcli_home / "data").write_text("a file where the data folder should be")
    code, out, err = run(capsys, "generate", "hello", "--model", str(tiny_model_dir), "-n", "4", "--json")
    assert code == 0 and out.splitlines()[-1].startswith('{"type": "done"')
    assert "conversation_id" not in out.splitlines()[-1]
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith("chatcli: warning: the answer was not saved to the history: cannot create")
    assert "chatting" not in warning


def test_what_is_worth_saving():
    step_done = Done("stop", 3, 0, None, None, text="")
    assert worth_saving([], step_done)  # an empty answer that ended normally
    assert not worth_saving([], None)  # Ctrl+C before the first token
    assert not worth_saving([], Done("cancelled", 3, 0, None, None))
    assert not worth_saving([], Done("error", 3, 0, None, None, error="boom"))


def _steps(n: int):
    engine = FakeEngine(length=n)
    events = list(engine.chat([{"role": "user", "content": "hi"}], SamplingParams(seed=1, max_tokens=n)))
    return engine, [e for e in events if not isinstance(e, Done) and hasattr(e, "top")], events[-1]


def test_a_run_cut_after_some_tokens_is_saved_as_cancelled_and_one_cut_before_saves_nothing():
    engine, steps, _ = _steps(5)
    log = RunLog("hi", None)
    conv_id = log.finish(engine, SamplingParams(seed=1), steps[:3], None)
    answer = Store.open().load(conv_id).path()[1]
    assert answer.status == "cancelled" and len(answer.steps) == 3 and answer.meta["prompt_tokens"] is None
    assert RunLog("hi", None).finish(engine, SamplingParams(seed=1), [], None) is None
    assert len(Store.open().list()) == 1


def test_the_chat_takes_save_history_too(capsys, tiny_model_dir, _chatcli_home, monkeypatch):
    import io
    import sys

    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text("[defaults]\nsave_history = false\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("secret\n"))
    code, out, _ = run(capsys, "chat", "--model", str(tiny_model_dir), "-n", "3", "--plain")
    assert code == 0 and out and not default_db_path().exists()
    code, _, err = run(capsys, "chat", "--model", str(tiny_model_dir), "--resume")
    assert code == 2 and err.count("\n") == 1 and "save_history = false" in err and "add --save" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("kept\n"))
    code, _, _ = run(capsys, "chat", "--model", str(tiny_model_dir), "-n", "3", "--plain", "--save")
    assert code == 0 and [s.title for s in Store.open().list()] == ["kept"]
