"""Chat templates render within limits: each hostile construct fails in one line, quickly, and
never with a truncated prompt; ordinary templates render exactly as Jinja's own sandbox does."""

from __future__ import annotations

import json
import threading

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatcli.tokenizer import template_limits
from chatcli.tokenizer.chat_template import ChatTemplateError, load_chat_template, render_chat_template
from tests.tokenizer.test_chat_template import FEATURE_TEMPLATE, SMOLLM2_TEMPLATE

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    # The time limit is read when a render starts; 0.5 s keeps the loop cases quick.
    monkeypatch.setattr(template_limits, "MAX_SECONDS", 0.5)


def refused(template: str, **variables) -> str:
    with pytest.raises(ChatTemplateError) as e:
        render_chat_template(template, HELLO, **variables)
    message = e.value.message
    assert message.startswith("chat template") and "\n" not in message and len(message) < 400
    return message


# name -> (template, what the one-line error says)
HOSTILE = {
    "nested_range_loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "0.5 s"),
    "nested_loops_over_one_list": ("{% set l = range(100000)|list %}{% for a in l %}{% for b in l %}{% endfor %}"
                                   "{% endfor %}", "0.5 s"),
    "recursive_loop_fan_out": ("{% for x in range(1000) recursive %}{{ loop(range(1000)) }}{% endfor %}", "recursion"),
    "string_repetition": ("{{ 'a' * 10**10 }}", "repetition would build 10,000,000,000 characters"),
    "list_repetition": ("{{ ([0] * 10**9)|length }}", "1,000,000,000 items"),
    "recursive_macro": ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "deeper than 50"),
    "recursive_block": ("{% block a %}{{ self.a() }}{% endblock %}", "deeper than 50"),
    "division_by_zero": ("{{ 1 / 0 }}", "ZeroDivisionError"),
    "modulo_by_zero": ("{{ 1 % 0 }}", "ZeroDivisionError"),
    "float_overflow": ("{{ 2.0 ** 100000 }}", "OverflowError"),
    "integer_power": ("{{ 9 ** (9 ** 9) }}", "a power of more than 100,000 bits"),
    "integer_product": ("{% set n = 10 ** 20000 %}{{ n * n * n * n * n * n }}", "bits"),
    "huge_range": ("{{ range(10**12)|length }}", "range() of more than 100,000 items"),
    "doubling_with_plus": ("{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                           "{% endfor %}", "a string of 1,048,576 characters"),
    "doubling_with_tilde": ("{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                            "{% endfor %}", "~ concatenation"),
    "doubling_a_list": ("{% set ns = namespace(l=[0]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
                        "{% endfor %}", "a list of 131,072 items"),
    "doubling_with_set": ("{% set s = 'a' * 1000 %}" + "{% set s = s + s %}" * 20, "characters"),
    "long_plus_chain": ("{% set s = 'a' * 600000 %}{{ " + " + ".join(["s"] * 20) + " }}", "characters"),
    "macro_argument_doubling": ("{% macro m(s, n) %}{% if n %}{{ m(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
                                "{{ m('a', 45) }}", "concatenation"),
    "ljust": ("{{ 'a'.ljust(10**10) }}", "ljust() got the number 10,000,000,000"),
    "markup_ljust": ("{{ lipsum(1).ljust(10**10) }}", "ljust() got the number"),  # Markup's methods are Python's
    "markup_replace": ("{% set s = 'a' * 100000 %}{{ ('a' * 100)|e|attr('replace')('', s) }}", "str.replace"),
    "markup_join": ("{% set s = 'a' * 100000 %}{{ ('x'|e).join([s] * 100) }}", "join would build"),
    "to_bytes": ("{{ (1).to_bytes(10**10, 'big') }}", "to_bytes()"),
    "expandtabs": ("{% set s = '\t' * 100000 %}{{ s.expandtabs(1000) }}", "str.expandtabs"),
    "str_replace_empty": ("{% set s = 'a' * 100000 %}{{ s.replace('', s) }}", "str.replace"),
    "str_join": ("{% set s = 'a' * 100000 %}{{ s.join(range(1000)|map('string')) }}", "join"),
    "str_translate": ("{% set s = 'a' * 100000 %}{{ s.translate({97: 'b' * 1000}) }}", "str.translate"),
    "format_width": ("{{ '{:>10000000000}'.format(1) }}", "format width"),
    "format_nested_width": ("{{ '{:>{w}}'.format(1, w=10**9) }}", "format width"),
    "format_fields": ("{% set s = 'a' * 100000 %}{{ ('{0}' * 1000).format(s) }}", "str.format"),
    "percent_width": ("{{ '%10000000000d' % 1 }}", "% format width"),
    "percent_star_width": ("{{ '%*d' % (10**9, 1) }}", "'*' width"),
    "center_filter": ("{{ 'a'|center(10**10) }}", "center filter got the number"),
    "indent_filter": ("{% set s = '\n' * 100000 %}{{ s|indent('x' * 100) }}", "indent filter would build"),
    "replace_filter": ("{% set s = 'a' * 100000 %}{{ s|replace('', s) }}", "replace filter would build"),
    "join_filter": ("{% set s = 'a' * 100000 %}{{ range(1000)|join(s) }}", "join filter"),
    "format_filter": ("{{ '%10000000000d'|format(1) }}", "% format width"),
    "wordwrap_filter": ("{% set s = 'a ' * 100000 %}{{ s|wordwrap(1, wrapstring='x' * 100) }}", "wordwrap"),
    "slice_filter": ("{{ [1]|slice(10**10)|list }}", "slice filter got the number"),
    "tojson_separators": ("{% set s = 'a' * 10000 %}{{ range(1000)|list|tojson(separators=(',', s)) }}", "tojson"),
    "printing_a_huge_list": ("{% set s = 'a' * 100000 %}{{ [s] * 100000 }}", "would print more than"),
    "string_filter_of_a_huge_list": ("{% set s = 'a' * 100000 %}{{ ([s] * 100000)|string }}", "string filter"),
    "macro_buffer_of_references": ("{% macro m() %}{% set s = 'a' * 1000000 %}{% for i in range(100000) %}{{ s }}"
                                   "{% endfor %}{% endmacro %}{{ m()|length }}", "built or printed more than"),
    "mapped_filter_results_kept": ("{{ range(100000)|map('center', 1000000)|list|length }}", "built or printed"),
    "lipsum": ("{{ lipsum(10**9) }}", "lipsum()"),
    "namespace_cycle": ("{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }}", "nested more than 100"),
    "prompt_over_1_mb": ("{% for i in range(2000) %}{{ 'a' * 1000 }}{% endfor %}", "larger than 1,000,000 bytes"),
    "multibyte_prompt_over_1_mb": ("{% for i in range(300) %}{{ '🙂' * 1000 }}{% endfor %}", "1,000,000 bytes"),
    "lone_surrogate_in_the_prompt": ("{{ '\\ud83d' }}", "not valid Unicode"),
    "parenthesis_nesting": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "cannot be compiled"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_template_fails_in_one_line(name, monkeypatch):
    template, says = HOSTILE[name]
    if says.startswith("deeper than"):  # the depth limit must decide, not a deadline a busy machine can hit first
        monkeypatch.setattr(template_limits, "MAX_SECONDS", 30.0)
    assert says in refused(template)


def test_the_time_limit_is_two_seconds_by_default(monkeypatch):
    monkeypatch.undo()
    assert template_limits.MAX_SECONDS == 2.0


def test_a_render_after_a_refused_one_starts_with_a_fresh_budget():
    refused(HOSTILE["nested_range_loops"][0])
    assert render_chat_template(SMOLLM2_TEMPLATE, HELLO).endswith("<|im_start|>assistant\n")


def test_budgets_are_per_thread():
    # A runaway render on one thread does not spend a normal render's time on another.
    failed: list[str] = []
    runaway = threading.Thread(target=lambda: failed.append(refused(HOSTILE["nested_range_loops"][0])))
    runaway.start()
    for _ in range(50):
        render_chat_template(SMOLLM2_TEMPLATE, HELLO)
    runaway.join(60)
    assert failed and "0.5 s" in failed[0]


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{% macro m(n) %}{{ m(n - 1) if n else 'done' }}{% endmacro %}{{ m(45) }}", "done"),  # 46 deep
        ("{{ 'a' * 999999 }}", "a" * 999_999),
        ("{{ range(100000)|list|length }}", "100000"),
        ("{{ (2 ** 99999) % 7 }}", str(2**99999 % 7)),
        ("{{ '%5s|%-3d|%.2f' % ('x', 7, 3.14159) }}", "    x|7  |3.14"),
        ("{{ '{:>4}{name}'.format(1, name='!') }}", "   1!"),
        ("{{ 'a b'.replace(' ', '_') ~ ','.join(['x', 'y']) ~ 'a\tb'.expandtabs(2) }}", "a_bx,ya b"),
        ("{{ 'x'|center(5) }}|{{ 'a\nb'|indent(2) }}|{{ [1, 2]|join('-') }}", "  x  |a\n  b|1-2"),
    ],
)
def test_limits_leave_ordinary_work_alone(template, expected):
    assert render_chat_template(template, HELLO) == expected


LOOPS = """{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }} {{ loop.revindex }}
{{ loop.first }} {{ loop.last }} {{ loop.previtem.role if loop.previtem else '-' }} {{ loop.changed(m.role) }}
{{ loop.cycle('a', 'b') }}{% else %}none{% endfor %}{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}
{% for x in nothing %}x{% else %}empty{% endfor %}{% for t in tree recursive %}[{{ loop.depth }}{{ t.n }}
{%- if t.c %}{{ loop(t.c) }}{% endif %}]{% endfor %}{% macro m(x) %}<{{ x }}{{ caller() if caller else '' }}>
{%- endmacro %}{{ m(1) }}{% call m(2) %}c{% endcall %}{{ 'x' ~ 1 ~ none }}{{ [1, 2] * 2 }}{{ 2 ** 10 }}"""


@pytest.mark.parametrize("template", [LOOPS, FEATURE_TEMPLATE, SMOLLM2_TEMPLATE], ids=["loops", "features", "smollm2"])
def test_output_is_jinjas_own(template):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": "u2"}]  # fmt: skip
    tree = [{"n": 1, "c": [{"n": 2, "c": [{"n": 3}]}]}, {"n": 4}]
    variables = dict(messages=messages, tools=None, documents=None, add_generation_prompt=True, tree=tree)
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    plain.filters["tojson"] = json.dumps  # what transformers' tojson does with no options
    expected = plain.from_string(template).render(**variables)
    assert render_chat_template(template, messages, tree=tree) == expected


# --- template files that are not UTF-8 ------------------------------------------------------------


def test_a_non_utf8_override_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.jinja"
    path.write_bytes("{{ 'café' }}".encode("latin-1"))
    with pytest.raises(ChatTemplateError) as e:
        load_chat_template(tmp_path, override=path)
    assert "is not UTF-8 text (byte 0xe9 at offset 7)" in e.value.message and "\n" not in e.value.message


def test_a_non_utf8_chat_template_jinja_is_one_line(tmp_path):
    (tmp_path / "chat_template.jinja").write_bytes(b"\xff\xfe{{ x }}")
    with pytest.raises(ChatTemplateError, match="chat_template.jinja is not UTF-8 text"):
        load_chat_template(tmp_path)


def test_a_non_utf8_tokenizer_config_is_one_line(tmp_path):
    (tmp_path / "tokenizer_config.json").write_bytes('{"chat_template": "é"}'.encode("latin-1"))
    with pytest.raises(ChatTemplateError, match="tokenizer_config.json is not UTF-8 text"):
        load_chat_template(tmp_path)


def test_a_lone_surrogate_escape_in_tokenizer_config_is_one_line(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ x }}\\ud83d"}')
    with pytest.raises(ChatTemplateError, match="not valid Unicode"):
        load_chat_template(tmp_path)


def test_a_tokenizer_config_that_is_not_an_object_is_one_line(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ChatTemplateError, match="not a JSON object"):
        load_chat_template(tmp_path)
