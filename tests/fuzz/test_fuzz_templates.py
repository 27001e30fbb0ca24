"""Seeded fuzzing of the chat-template sandbox: random templates built from ordinary fragments
and hostile constructs each render or raise ChatTemplateError, and none runs away.

A case that fails prints its seed, index and template, so it can be replayed alone.
"""

from __future__ import annotations

import random
import time

import pytest

from chatcli.tokenizer import template_limits
from chatcli.tokenizer.chat_template import ChatTemplateError, render_chat_template

SEED = 1414
CASES = 200
CASE_SECONDS = 3.0  # a hang detector with room for a loaded machine; the render's own limit is 0.2 s

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello 🙂 <b>&</b> {{ not a template }}"},
    {"role": "assistant", "content": "Hi.\n\tTabs and\nlines."},
]

ATOMS = [
    "1", "0", "-3", "2.5", "10**10", "10**5", "'a'", "'🙂'", "''", "'%s|%d'", "'{}{}'", "'\\n'", "[1, 2, 3]",
    "[[]]", "{'a': 1}", "none", "true", "messages", "messages[0]", "messages[-1]['content']", "ns.x", "ns", "tools",
    "bos_token", "range(5)", "undefined_name", "dict(a=1)", "namespace(x=1)", "lipsum(2)", "(1, 2)",
    "'x'.join(['a', 'b'])", "messages|map(attribute='content')|join('\\n')", "('<b>'|e)",
]  # fmt: skip
IN_LOOP = ["message", "message.content", "message['role']", "loop.index", "loop.length", "loop.last", "loop.previtem"]
IN_MACRO = ["n", "m(n - 1) if n > 0 else n", "caller() if caller else ''"]
BIG = ["range(10**6)", "range(100000)", "'a' * 100000", "[0] * 100000", "'x' * 999999"]
BINARY = ["+", "-", "*", "/", "//", "%", "**", "~", "and", "or", "==", "<", "in"]
FILTERS = [
    "length", "string", "upper", "lower", "title", "trim", "first", "last", "list", "sort", "unique", "reverse",
    "join", "join(', ')", "join('x' * 100000)", "tojson", "tojson(indent=2)", "tojson(indent=10**9)", "pprint",
    "center(20)", "center(10**10)", "indent(4)", "indent('x' * 1000)", "replace('a', 'bb')", "replace('', 'x' * 1000)",
    "wordwrap(3)", "truncate(5)", "format(1)", "int", "float", "abs", "round(2)", "sum", "min", "max",
    "batch(2)", "slice(3)", "slice(10**10)", "map('string')", "map('center', 1000000)", "select", "reject",
    "selectattr('role')", "map(attribute='content')", "dictsort", "items", "default('d')", "e", "striptags",
    "urlencode", "wordcount", "capitalize", "random", "groupby('role')", "xmlattr", "filesizeformat", "count",
]  # fmt: skip
METHODS = ["upper()", "split()", "ljust(10)", "ljust(10**10)", "replace('a', 'b')", "replace('', 'x' * 10000)",
           "format(1, 2)", "format('x' * 10000)", "startswith('a')", "strip()", "expandtabs(10**6)", "get('role')",
           "items()", "keys()", "count('a')", "zfill(10**9)", "center(5, '*')", "to_bytes(2, 'big')"]  # fmt: skip
HOSTILE = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
    "{% for x in [1] recursive %}{{ loop([1, 2]) }}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{{ 'a' * 10**10 }}", "{{ 2.0 ** 100000 }}", "{{ 9 ** 9 ** 9 }}", "{{ 1 / 0 }}", "{{ '%10000000000d' % 1 }}",
    "{{ '{:>10000000000}'.format(1) }}", "{{ raise_exception('refused') }}", "{% block b %}{{ self.b() }}{% endblock %}",
    "{% macro m() %}{% set s = 'a' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}{{ m() }}",
    "{{ ''.__class__ }}", "{{ messages.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
    "{{ range(100000)|map('center', 1000000)|list|length }}", "{{ ([[0] * 100000] * 100000)|sum(start=[])|length }}",
    "{% for i in range(2000) %}{{ 'a' * 1000 }}{% endfor %}", "{{ '\\ud83d' }}",
]  # fmt: skip
JUNK = list("{}%()[]'\"|~+*#-.,:=! \nab01")


def expression(rng: random.Random, scope: tuple[str, ...], depth: int = 0) -> str:
    """A random expression using only the names ``scope`` (the enclosing loops and macros) defines."""
    roll = rng.random()
    if depth > 2 or roll < 0.45:
        pools = [ATOMS] + [IN_LOOP] * ("loop" in scope) + [IN_MACRO] * ("macro" in scope)
        return rng.choice(BIG) if rng.random() < 0.04 else rng.choice(rng.choice(pools))
    sub = lambda: expression(rng, scope, depth + 1)  # noqa: E731
    if roll < 0.55:
        return f"({sub()} {rng.choice(BINARY)} {sub()})"
    if roll < 0.8:
        return f"({sub()})|{rng.choice(FILTERS)}"
    if roll < 0.95:
        return f"({sub()}).{rng.choice(METHODS)}"
    return f"({sub()})[{sub()}]"


def statement(rng: random.Random, scope: tuple[str, ...] = (), depth: int = 0) -> str:
    roll = rng.random()

    def inner(*more: str) -> str:
        return "".join(statement(rng, scope + more, depth + 1) for _ in range(rng.randint(1, 3)))

    if depth > 2 or roll < 0.4:
        return "{{ " + expression(rng, scope) + " }}"
    if roll < 0.55:
        return "{% for message in " + expression(rng, scope) + " %}" + inner("loop") + "{% endfor %}"
    if roll < 0.65:
        return "{% if " + expression(rng, scope) + " %}" + inner() + "{% else %}" + inner() + "{% endif %}"
    if roll < 0.73:
        return "{% set ns.x = " + expression(rng, scope) + " %}" + inner()
    if roll < 0.8:
        return "{% macro m(n) %}" + inner("macro") + "{% endmacro %}{{ m(" + str(rng.randint(0, 60)) + ") }}"
    if roll < 0.86:
        return rng.choice(HOSTILE)
    if roll < 0.95:
        return "{% set v = " + expression(rng, scope) + " %}{{ v }}"
    return "".join(rng.choice(JUNK) for _ in range(rng.randint(1, 12)))  # syntax errors


def template(rng: random.Random) -> str:
    return "{% set ns = namespace(x=0) %}" + "".join(statement(rng) for _ in range(rng.randint(1, 4)))


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    monkeypatch.setattr(template_limits, "MAX_SECONDS", 0.2)


def test_random_templates_render_or_fail_in_one_line():
    rng = random.Random(SEED)
    outcomes = {"rendered": 0, "refused": 0}
    for i in range(CASES):
        source = template(rng)
        start = time.monotonic()
        try:
            out = render_chat_template(source, MESSAGES, tools=[{"name": "t"}], bos_token="<s>")
        except ChatTemplateError as e:
            assert "\n" not in e.message, f"seed {SEED} case {i}: {source!r}"
            outcomes["refused"] += 1
        except Exception as e:  # pragma: no cover - the failure report
            pytest.fail(f"seed {SEED} case {i}: {type(e).__name__}: {e} from {source!r}")
        else:
            assert isinstance(out, str) and len(out.encode("utf-8")) <= 1_000_000
            outcomes["rendered"] += 1
        elapsed = time.monotonic() - start
        assert elapsed < CASE_SECONDS, f"seed {SEED} case {i} took {elapsed:.1f} s: {source!r}"
    # Both outcomes occur, so the generator exercises the renderer, not only the parser.
    assert outcomes["rendered"] > CASES // 10 and outcomes["refused"] > CASES // 10, outcomes
