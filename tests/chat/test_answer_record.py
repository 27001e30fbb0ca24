"""What produced each answer (params, system prompt, adapters, drawn seed, dropped messages) and the
commands that read it back in the plain REPL: /raw, /save, /new (regressions of issue 14)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from chatcli.chat.answer_record import describe, prompt_messages, recorded_adapters
from chatcli.chat.core import ChatCore
from chatcli.chat.repl import run_repl
from chatcli.engine.events import Notice
from chatcli.engine.params import SamplingParams
from tests.fake_engine import FakeEngine, fake_factory


def repl(engine: FakeEngine, lines: str, params: SamplingParams | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_repl(fake_factory(engine), params=params or SamplingParams(temperature=0.7, seed=1),
                  stdin=io.StringIO(lines), console=Console(file=out, width=300, highlight=False),
                  err=Console(file=err, width=300), interactive=False, progress_enabled=False)  # fmt: skip
    return rc, out.getvalue(), err.getvalue()


class DroppingEngine(FakeEngine):
    """Drops the oldest messages beyond the last ``keep`` and says so, as the local engine does."""

    def __init__(self, keep: int, **kw) -> None:
        super().__init__(**kw)
        self.keep = keep

    def chat(self, messages, params, cancel=None, answer_prefix_ids=()):
        head = [m for m in messages if m["role"] == "system"]
        turns = [m for m in messages if m["role"] != "system"]
        dropped = max(0, len(turns) - self.keep)
        if dropped:
            yield Notice(f"dropped the {dropped} oldest message(s)", kind="context", data={"dropped_messages": dropped})
        return (yield from super().chat(head + turns[dropped:], params, cancel, answer_prefix_ids))


def test_each_answer_records_what_produced_it():
    core = ChatCore(FakeEngine(length=4), params=SamplingParams(temperature=0.3, seed=None), system="Be brief.")
    list(core.run(core.send("hi")))
    meta = core.conv.leaf.meta
    assert meta["params"]["temperature"] == 0.3 and meta["system"] == "Be brief." and meta["model"] == "fake-tiny"
    assert meta["adapters"] == []  # this engine has no adapter control: no adapter made it
    assert recorded_adapters({"adapters": [{"name": "sft", "scale": 0.5}]}) == {"sft": 0.5}
    assert recorded_adapters({}) is None  # not recorded: unknown, not "none"
    line = describe({**meta, "adapters": [{"name": "sft", "scale": 0.5}, {"name": "dpo", "scale": 1.0}]}, "fake-tiny")
    assert line == ("temperature 0.3, top_k 0, top_p 1.0, min_p 0.0, repetition_penalty 1.0, seed random, "
                    "max_tokens 512, adapters sft×0.5, dpo")


def test_prompt_messages_restore_the_system_prompt_and_the_dropped_turns():
    now = [{"role": "system", "content": "new"}, *({"role": r, "content": str(i)} for i, r in enumerate(["user", "assistant"] * 2))]
    assert prompt_messages(now, {"system": "old", "dropped_messages": 2}) == [
        {"role": "system", "content": "old"}, {"role": "user", "content": "2"}, {"role": "assistant", "content": "3"}]
    assert prompt_messages(now, {"system": None}) == now[1:]
    assert prompt_messages(now, {}) == now  # an answer from before the record: today's system prompt


def test_raw_shows_the_prompt_that_produced_the_last_answer_and_the_next_turns_start():
    """Regression: /raw after an answer showed a prompt the model never saw (a new assistant header
    after the answer, today's system prompt)."""
    engine = DroppingEngine(keep=1, length=4)
    rc, out, err = repl(engine, "/system Answer in French.\nfirst\nbonjour\n/system Be brief.\n/raw\n")
    assert rc == 0, err
    seen = engine.render_prompt(engine.calls[-1]["messages"])  # exactly what the engine rendered for it
    assert "first" not in seen and "Answer in French." in seen  # the oldest turn was dropped
    head, _, rest = out.partition("the next turn's prompt starts with")
    assert "prompt of the last answer, as rendered when it was generated" in head
    assert seen.strip() in head and head.rstrip().endswith("<|im_start|>assistant")
    answer = [line for line in out.splitlines() if line and "<|" not in line][0]
    assert answer not in head.split("generated", 1)[1]  # the answer is not part of its own prompt
    assert "Be brief." in rest and rest.rstrip().endswith("<|im_end|>")
    assert "<|im_start|>assistant\n" not in rest.rstrip()[-30:]  # no new header: the next message comes first


def test_save_writes_each_answers_own_parameters():
    """Regression: /save's Markdown gave only the temperature of the moment."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "exp"
        rc, out, err = repl(FakeEngine(length=3), f"/set temperature 0.3\nhello\n/set temperature 0.9\n/set seed 7\n"
                                                  f"again\n/set temperature 0.5\n/save {base}\n")
        assert rc == 0, err
        md = (base.with_suffix(".md")).read_text()
        data = json.loads(base.with_suffix(".json").read_text())
    assert "*sampling now:* temperature 0.5" in md
    made = [line for line in md.splitlines() if line.startswith("*generated with:*")]
    assert len(made) == 2 and made[0].startswith("*generated with:* temperature 0.3,") and "seed 1," in made[0]
    assert made[1].startswith("*generated with:* temperature 0.9,") and "seed 7," in made[1] and "adapters none" in made[1]
    assert md.index(made[0]) < md.index("## You", md.index(made[0]))  # beside its own answer
    answers = [m for m in data["messages"] if m["role"] == "assistant"]
    assert [a["meta"]["params"]["temperature"] for a in answers] == [0.3, 0.9]
    assert [a["meta"]["params"]["seed"] for a in answers] == [1, 7] and answers[1]["meta"]["adapters"] == []


def test_new_keeps_the_set_values_and_says_so():
    """Regression: /new silently reset the /set values to the session's defaults."""
    engine = FakeEngine(length=3)
    rc, out, err = repl(engine, "/system Pirate.\n/set temperature 0.3\n/set top_k 5\nhi\n/new\nhello\n")
    assert rc == 0, err
    assert "new conversation; kept /set temperature=0.3 top_k=5" in err
    last = engine.calls[-1]
    assert last["params"].temperature == 0.3 and last["params"].top_k == 5
    assert last["messages"] == [{"role": "user", "content": "hello"}]  # the system prompt is the default again


def test_an_adapter_set_the_backend_cannot_tell_is_not_recorded_as_none():
    from chatcli.chat.answer_record import record_adapters
    from chatcli.errors import ChatcliError

    class Unreachable:  # a server's adapter control whose listing fails
        def list(self):
            raise ChatcliError("cannot reach the server")

    class Engine:
        adapters = Unreachable()

    meta = {"adapters": [{"name": "old", "scale": 1.0}]}  # from an earlier run of this answer
    record_adapters(meta, Engine())
    assert "adapters" not in meta and recorded_adapters(meta) is None
