"""The Ollama Modelfile: ChatML templates translated (found by rendering, with a default system
message when the template inserts one), other templates left to Ollama and quoted, parameters."""

from __future__ import annotations

from chatcli.hub.gguf.modelfile import CHATML_TEMPLATE, modelfile_text, translate_template

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PLAIN_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
    "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_smollm2_template_gets_chatml_and_its_default_system_message():
    t = translate_template(SMOLLM2)
    assert t.template == CHATML_TEMPLATE
    assert t.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_plain_chatml_has_no_system_line(tok_dir):
    import json

    t = translate_template(PLAIN_CHATML)
    assert t.template == CHATML_TEMPLATE and t.system is None
    tiny = json.loads((tok_dir / "tokenizer_config.json").read_text())["chat_template"]
    assert translate_template(tiny).template == CHATML_TEMPLATE


def test_other_templates_are_quoted_not_translated():
    text = modelfile_text("m.gguf", LLAMA3, {"temperature": 0.6}, ["<|eot_id|>"], {"bos_token": "<|begin_of_text|>"})
    assert not any(line.startswith(("TEMPLATE", "SYSTEM")) for line in text.splitlines())
    assert "# No TEMPLATE: its chat template is not plain ChatML" in text
    assert "#   {{ bos_token }}{% for m in messages %}" in text
    assert "PARAMETER temperature 0.6" in text and 'PARAMETER stop "<|eot_id|>"' in text
    assert translate_template(None).template is None
    assert "did not render" in translate_template("{{ raise_exception('no') }}").note


def test_modelfile_for_smollm2():
    text = modelfile_text("smollm2.gguf", SMOLLM2, {"temperature": 0.2, "top_p": 0.9, "top_k": 40,
                                                    "repetition_penalty": 1.1}, ["<|im_end|>", "<|im_end|>", ""],
                          header="Made by a test.")
    lines = text.splitlines()
    assert lines[0] == "# Made by a test."
    assert "FROM ./smollm2.gguf" in lines
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}' in text
    assert '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in lines
    params = [line for line in lines if line.startswith("PARAMETER")]
    assert params == ["PARAMETER temperature 0.2", "PARAMETER top_p 0.9", "PARAMETER top_k 40",
                      "PARAMETER repeat_penalty 1.1", 'PARAMETER stop "<|im_end|>"']
