"""`chatcli models import/list/info/verify/rm` on a tiny GGUF: the commands a person types."""

from __future__ import annotations

import json

import pytest

from tests.cli_support import run
from tests.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_model_dir, qtype="Q8_0")


def test_import_list_info_verify_rm(capsys, tiny_gguf):
    code, out, err = run(capsys, "models", "import", str(tiny_gguf), "--dtype", "bfloat16")
    assert code == 0, err
    entry = out.strip().rsplit("/", 1)[-1]
    assert entry.startswith("gguf-")
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows[entry]["status"] == "ready" and rows[entry]["dtype"] == "bfloat16"
    assert rows["smollm2-135m-instruct"]["name"] == "smollm2-135m-instruct"  # known, pulled or not
    code, out, _ = run(capsys, "models", "info", entry, "--json")
    info = json.loads(out)
    assert code == 0 and info["architecture"] and info["parameters"] > 0
    assert run(capsys, "models", "verify", entry)[:2] == (0, f"{entry}: ok\n")
    code, out, _ = run(capsys, "models", "rm", entry)
    assert code == 0 and "removed" in out
    code, _, err = run(capsys, "models", "rm", entry)
    assert code == 1 and err.count("\n") == 1


def test_import_errors_are_one_line(capsys, tmp_path, tiny_gguf):
    code, _, err = run(capsys, "models", "import", str(tiny_gguf), "--dtype", "int8")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run(capsys, "models", "import", str(tmp_path / "missing.gguf"))
    assert code == 1 and err.count("\n") == 1 and "missing.gguf" in err
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    code, _, err = run(capsys, "models", "import", str(tmp_path))
    assert code == 1 and err.count("\n") == 1
