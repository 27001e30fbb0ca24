"""The annotation queue: `rank generate` on a tiny model, bad lines by number, `--strict`, annotate and resume."""

from __future__ import annotations

import json

from chatcli_rank.annotate import AnnotateApp, pending_items
from chatcli_rank.export import records
from chatcli_rank.jsonl import read_candidates, read_prompts
from chatcli_rank.screen import RankScreen
from chatcli_rank.store import RankStore, default_path
from tests.cli_support import run as cli_run
from tests.tui_support import run, wait_for


def run_cli(capsys, *argv):
    """``chatcli *argv`` in process: (exit code, stdout, stderr); argv may hold Paths and numbers."""
    return cli_run(capsys, *(str(a) for a in argv))


PROMPTS = "\n".join([
    json.dumps({"prompt": "What is a token?", "id": "q1"}),
    "{not json",
    json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]}),
    "",
    json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
    json.dumps(["a list"]),
    json.dumps({"prompt": "Count to three."}),
]) + "\n"  # fmt: skip


def test_prompt_lines_are_checked_with_line_numbers(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(PROMPTS, encoding="utf-8")
    items, errors = read_prompts(path)
    assert [(i.line, i.id) for i in items] == [(1, "q1"), (3, None), (7, None)]
    assert items[1].messages[0] == {"role": "system", "content": "Be brief."}
    assert [(e.line, e.message.split(" (")[0]) for e in errors] == [
        (2, "not valid JSON"), (5, "the last message must be from the user"), (6, "not a JSON object"),
    ]
    assert str(errors[0]).startswith(f"{path}:2: not valid JSON")


def test_prompt_files_that_are_not_text_are_refused_by_line(tmp_path, capsys):
    # A broken "\ud83d" escape is a bad line (skipped, or refused with --strict); bytes that are not
    # UTF-8 refuse the whole file, naming the line. Both used to fail later, in the tokenizer or output.
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "\\ud83d"}\n', encoding="utf-8")
    items, errors = read_prompts(path)
    assert [i.line for i in items] == [1] and [e.line for e in errors] == [2]
    assert "half of a UTF-16 surrogate pair" in errors[0].message
    code, _, err = run_cli(capsys, "rank", "generate", path, "-o", tmp_path / "o.jsonl", "--strict", "-m", "/nope")
    assert code == 2 and f"{path}:2: holds \\ud83d" in err and not (tmp_path / "o.jsonl").exists()
    path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    code, _, err = run_cli(capsys, "rank", "generate", path, "-o", tmp_path / "o.jsonl", "-m", "/nope")
    assert code == 2 and err.strip() == f"chatcli: error: {path}:2: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"


def test_generate_writes_candidates_and_annotation_resumes(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(PROMPTS, encoding="utf-8")
    out = tmp_path / "cands.jsonl"

    # --strict refuses the file before loading anything; nothing is written
    code, _, err = run_cli(capsys, "rank", "generate", prompts, "-n", 3, "-o", out, "--strict", "-m", tiny_model_dir)
    assert code == 2 and not out.exists()
    assert f"{prompts}:2: not valid JSON" in err and f"{prompts}:6: not a JSON object" in err
    assert err.strip().splitlines()[-1] == f"chatcli: error: 3 bad line(s) in {prompts}; fix them, or run without --strict to skip them"
    code, _, err = run_cli(capsys, "rank", "generate", prompts, "-n", 11, "-o", out, "-m", tiny_model_dir)
    assert code == 2 and "N must be between 2 and 10" in err and not out.exists()

    args = ["rank", "generate", prompts, "-n", 3, "-o", out, "-m", tiny_model_dir, "--max-tokens", 6, "--seed", 7]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert f"{prompts}:5: the last message must be from the user" in err and "skipped" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["id"] == "q1" and "id" not in lines[1]
    for k, row in enumerate(lines):
        assert list(row)[-3:] == ["messages", "candidates", "model"]
        assert row["model"]["model_type"] == "llama" and len(row["model"]["sha256"]) == 64
        cands = row["candidates"]
        assert [c["seed"] for c in cands] == [7 + 3 * k + i for i in range(3)]
        for c in cands:
            assert c["params"]["temperature"] == 0.8 and c["params"]["seed"] == c["seed"]
            assert 1 <= c["tokens"] <= 6 and c["finish_reason"] in ("stop", "length")
            assert 0 < c["mean_model_prob"] <= 1 and isinstance(c["text"], str)
    first = out.read_text()
    code, _, _ = run_cli(capsys, *args)
    assert code == 0 and out.read_text() == first  # same seed, same candidates

    # annotate: rank the first item, skip the second, leave on the third
    items, errors = read_candidates(out)
    assert not errors and len(items) == 3
    store = RankStore.open(default_path())

    async def session(keys_per_item: list[list[str]]):
        app = AnnotateApp(store, pending_items(store, items), source=str(out), total=len(items))
        titles = []
        async with app.run_test(size=(100, 40)) as pilot:
            for keys in keys_per_item:
                await wait_for(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None)
                titles.append(app.screen.title_text)
                screen = app.screen
                await pilot.press(*keys)
                await wait_for(pilot, lambda: app.screen is not screen or not app.is_running)
        return app.tally, titles

    tally, titles = run(session([["3", "1", "enter"], ["s"], ["escape"]]))
    assert (tally.ranked, tally.skipped, tally.left_at) == (1, 1, 3)  # left on line 3 of the candidates file
    assert titles[0].startswith(f"Item 1 of 3 ({out}:1)")
    assert [i.line for i in pending_items(store, items)] == [3]  # resumes at the item left open

    tally, titles = run(session([["b", "enter"]]))
    assert len(titles) == 1 and titles[0].startswith(f"Item 3 of 3 ({out}:3)") and tally.all_bad == 1
    assert pending_items(store, items) == []
    code, text, _ = run_cli(capsys, "rank", "annotate", out)
    assert code == 0 and "all 3 item(s)" in text and "ranked already" in text

    rows = list(records(store.items(), "dpo", include_truncated=True))
    texts = [c.text for c in items[0].candidates]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        (texts[2], texts[0]), (texts[2], texts[1]), (texts[0], texts[1]),
    ]
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is a token?"}]
    # By default an answer cut at max_tokens is never the chosen one (the tiny model's often are).
    cut = {c.text for c in items[0].candidates if c.truncated}
    assert list(records(store.items(), "dpo")) == [r for r in rows if r["chosen"][0]["content"] not in cut]


def test_annotate_refuses_bad_files_and_needs_a_terminal(tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "q"}], "candidates": [{"text": "a", "seed": 1}, {"text": "b", "seed": 2}]}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "candidates": [{"text": "only one"}]}) + "\n"
                    + json.dumps({**good, "candidates": [{"seed": 3}, {"text": "x"}]}) + "\n", encoding="utf-8")  # fmt: skip
    items, errors = read_candidates(path)
    assert len(items) == 1 and [(e.line, e.message) for e in errors] == [
        (2, '"candidates" must be a list of 2 to 10 answers'), (3, 'candidate 1 has no "text" string'),
    ]
    code, _, err = run_cli(capsys, "rank", "annotate", path, "--strict")
    assert code == 2 and f"{path}:2:" in err and f"{path}:3:" in err and "2 bad line(s)" in err
    code, _, err = run_cli(capsys, "rank", "annotate", path)
    assert code == 2 and "skipped" in err and err.strip().endswith("annotating needs a terminal (the ranking screen is interactive)")
    assert RankStore.open(default_path()).counts()["candidate_sets"] == 0  # nothing stored by refused runs
