"""The front ends on a remote backend: the plain REPL with adapter commands, /compare, /raw, a cut
stream and /retry, the history; ``chatcli generate/chat --endpoint``; the key never leaks."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from chatcli.cli.common import remote_factory
from chatcli.engine.params import SamplingParams
from chatcli.chat.repl import run_repl
from chatcli.chat.store import Store
from tests.cli_support import run
from tests.remote_fakes import ANSWER, FakeServer


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the test printed before: the tuple holds this command's output only
    return run(capsys, *argv)


def repl(url: str, lines: str, *, store=None, api_key_env=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    factory = remote_factory(url, "fake-model", api_key_env=api_key_env, timeout=5, logprobs_mode="raw")
    rc = run_repl(factory, store=store, params=SamplingParams(temperature=0, seed=1), stdin=io.StringIO(lines),
                  console=Console(file=out, width=200, highlight=False), err=Console(file=err, width=200),
                  interactive=False, progress_enabled=False)
    return rc, out.getvalue(), err.getvalue()


def test_vllm_adapters_load_select_compare_unload(capsys):
    with FakeServer("vllm") as srv:
        rc, out, err = repl(srv.url, "/load-lora /srv/adapters/pirate\n/lora\nhello\n/compare\n/lora-scale pirate 0.5\n"
                                     "/lora-off pirate\nagain\n/merge pirate\n/unload-lora pirate\n")
    loads = [b for p, b in srv.requests if p == "/v1/load_lora_adapter"]
    assert loads == [{"lora_name": "pirate", "lora_path": "/srv/adapters/pirate"}]
    assert [b for p, b in srv.requests if p == "/v1/unload_lora_adapter"] == [{"lora_name": "pirate"}]
    models = [b["model"] for p, b in srv.requests if p == "/v1/chat/completions"]
    # hello (adapter), /compare: adapter then base, again (adapter switched off)
    assert models == ["pirate", "pirate", "fake-model", "fake-model"]
    assert "loaded adapter pirate on the server" in err and "pirate" in out and "/srv/adapters/pirate" in out
    assert "partial: 2 greedy requests" in out and "mean KL" in out
    assert "scale 1 only" in err and "merging is not available on a remote backend" in err
    assert capsys.readouterr().out.count("".join(ANSWER)) == 2  # scripted answers go to stdout


def test_llamacpp_adapter_scales(tmp_path):
    with FakeServer("llama.cpp", lora_files=["/models/pirate.gguf", "/models/concise.gguf"]) as srv:
        rc, out, err = repl(srv.url, "/load-lora pirate.gguf --scale 0.5\n/lora-scale concise 0.25\n/lora-off pirate\n"
                                     "/lora\n/load-lora /elsewhere/new.gguf\nhi\n")
        scales = {a["path"]: a["scale"] for a in srv.llama_adapters}
    assert scales == {"/models/pirate.gguf": 0.0, "/models/concise.gguf": 0.25}
    posts = [b for p, b in srv.requests if p == "/lora-adapters" and b is not None]
    assert posts[0] == [{"id": 0, "scale": 0.5}, {"id": 1, "scale": 0.0}]  # every adapter's scale, each time
    assert "loads adapters only at start" in err and "concise" in out


def test_unsupported_features_are_reported_and_a_cut_answer_can_be_retried(tmp_path):
    store = Store.open(tmp_path / "h.db")
    with FakeServer("vllm", cut_after=3) as srv:
        rc, out, err = repl(srv.url, "hi\n/continue\n/raw\n", store=store)
        assert "mid-answer after 3 tokens" in err and "/continue is not available on a remote backend" in err
        assert "the exact prompt is not available on a remote backend" in err
        srv.cut_after = None
        rc2, out2, err2 = repl(srv.url, "/resume\n/retry\n", store=Store.open(tmp_path / "h.db"))
    assert rc2 == 0, err2
    conv = Store.open(tmp_path / "h.db").load(Store.open(tmp_path / "h.db").latest_id())
    answers = [n for n in conv.nodes.values() if n.role == "assistant"]
    assert [a.status for a in answers] == ["error", "stop"]
    assert answers[0].content == "".join(ANSWER[:3]) and "mid-answer" in answers[0].meta["error"]
    assert answers[1].steps[0].partial and answers[1].steps[0].id < 0  # restored from the store as they were


def test_key_never_reaches_history_exports_or_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATCLI_TEST_KEY", "sk-very-secret-123")
    store = Store.open(tmp_path / "h.db")
    with FakeServer("vllm", key="sk-very-secret-123") as srv:
        rc, out, err = repl(srv.url, "hi\n/save " + str(tmp_path / "export") + "\n", store=store, api_key_env="CHATCLI_TEST_KEY")
        code, gout, gerr = cli(capsys, "generate", "hi", "--endpoint", srv.url, "--api-key-env", "CHATCLI_TEST_KEY",
                               "--json", "--temperature", "0")
        monkeypatch.setenv("CHATCLI_TEST_KEY", "sk-wrong-456")
        bad, bout, berr = cli(capsys, "generate", "hi", "--endpoint", srv.url, "--api-key-env", "CHATCLI_TEST_KEY")
    assert rc == 0 and code == 0 and bad == 1 and "HTTP 401" in berr
    texts = [out, err, gout, gerr, bout, berr, (tmp_path / "export.md").read_text(), (tmp_path / "export.json").read_text()]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.glob("h.db*")]
    assert all("sk-very-secret-123" not in t and "sk-wrong-456" not in t for t in texts)


def test_generate_json_on_a_remote_backend(capsys):
    with FakeServer("vllm") as srv:
        code, out, err = cli(capsys, "generate", "hi", "--endpoint", srv.url, "--model", "fake-model", "--json",
                             "--temperature", "0", "--top", "2")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["type"] == "meta" and lines[0]["endpoint"] == srv.url and lines[0]["model_sha256"] is None
    steps = [x for x in lines if x["type"] == "step"]
    assert "".join(s["text"] for s in steps) == "".join(ANSWER) and lines[-1]["type"] == "done"
    assert all(s["partial"] and s["prob"] is None and s["id"] is None and len(s["top"]) == 2 for s in steps)


@pytest.mark.parametrize("args, message", [
    (["--lora", "pirate"], "--lora cannot be used with --endpoint"),
    (["--print-prompt"], "--print-prompt cannot be used with --endpoint"),
    (["--api-key-env", "NO_SUCH_VAR_X"], "NO_SUCH_VAR_X is empty or not set"),
    (["--logprobs-mode", "cooked"], "invalid --logprobs-mode"),
])
def test_generate_endpoint_usage_errors(args, message, capsys):
    code, out, err = cli(capsys, "generate", "hi", "--endpoint", "http://127.0.0.1:9/v1", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_generate_on_a_cut_stream_exits_1_with_one_line(capsys):
    with FakeServer("vllm", cut_after=2) as srv:
        code, out, err = cli(capsys, "generate", "hi", "--endpoint", srv.url)
    assert code == 1 and "mid-answer after 2 tokens" in err and out.startswith("The capital")


def test_rank_candidates_on_a_remote_backend_are_n_requests_with_their_seeds():
    from chatcli_rank.candidates import generate_candidates

    with FakeServer("vllm") as srv:
        engine = remote_factory(srv.url, "fake-model", api_key_env=None, timeout=5, logprobs_mode="raw")()
        cands = generate_candidates(engine, [{"role": "user", "content": "hi"}], SamplingParams(seed=1), 3, base_seed=40)
    seeds = [b["seed"] for p, b in srv.requests if p == "/v1/chat/completions"]
    assert len(cands) == 3 and all(c.text == "".join(ANSWER) for c in cands)
    assert sorted(seeds) == sorted(c.seed for c in cands) and len(set(seeds)) == 3
