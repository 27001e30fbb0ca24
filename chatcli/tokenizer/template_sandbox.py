"""The bounded Jinja sandbox chat templates run in: transformers' sandbox, with limits.

:class:`BoundedEnvironment` is Jinja's ``ImmutableSandboxedEnvironment`` (what
transformers renders chat templates in) plus hooks that enforce
:mod:`chatcli.tokenizer.template_limits` on every place a template can spend time or
memory, with no thread and no tracing:

* calls (``environment.call``): the deadline, the macro/recursion depth, size
  arguments of built-in methods, ``str.replace``/``join``/``expandtabs``/``translate``
  and ``str.format`` before they run, and the size of what comes back;
* the operators ``*``, ``**`` and ``%`` (``intercepted_binops``), checked before they
  build a result, and ``+`` chains (the code generator measures a chain's result, or each
  step of a long chain, instead of intercepting every ``+``);
* every filter (wrapped when the environment is made), ``{{ ... }}`` output
  (``finalize``) and ``~`` concatenation (the code generator emits a bounded join);
* every ``{% for %}`` loop (the code generator wraps its iterable in ``loop_items``, so
  each iteration checks the deadline), including recursive ``loop(...)`` calls.

:func:`render` runs a compiled template under a fresh budget and refuses a prompt
larger than ``MAX_OUTPUT_BYTES`` or one that is not valid Unicode, so a caller gets
the whole prompt or an error, never a truncated prompt.
"""

from __future__ import annotations

import functools
import types
from time import monotonic
from typing import Any, Callable, Mapping

import jinja2
import jinja2.nodes as nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.runtime import BlockReference, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from chatcli.tokenizer.template_limits import (
    ITERATING_FILTERS,
    MAX_OUTPUT_BYTES,
    MAX_TEXT,
    MAX_VOLUME,
    SMALL_TEXT,
    TemplateLimitError,
    bounded_lipsum,
    bounded_range,
    check_format,
    check_percent,
    check_power,
    check_repeat,
    check_size_arguments,
    current,
    end_budget,
    enter_call,
    filter_args,
    leave_call,
    printed_size,
    produced,
    spend,
    start_budget,
    str_method_args,
    tick,
)

_RECURSIVE = (Macro, BlockReference, LoopContext)  # calls that can nest: counted against MAX_DEPTH
_BUILTIN = frozenset({types.BuiltinFunctionType, types.MethodWrapperType})
_GROWING_STR_METHODS = frozenset({"replace", "join", "expandtabs", "translate"})
SHORT_CHAIN = 8  # a + b + ... with this many operands is added in one go, then measured


def _is_wrapped(node: nodes.Expr) -> bool:
    return (isinstance(node, nodes.Call) and isinstance(node.node, nodes.EnvironmentAttribute)
            and node.node.name == "loop_items")  # fmt: skip


class _BoundedCodeGenerator(CodeGenerator):
    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # {% for x in items %} runs as {% for x in environment.loop_items(items) %} (Jinja allows
        # no new node types, so the wrapper is a call of an environment attribute).
        if not _is_wrapped(node.iter):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [node.iter], [], None, None,
                                   lineno=node.iter.lineno)  # fmt: skip
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Add(self, node: nodes.Add, frame: Frame) -> None:
        # a + b + c parses as Add(Add(a, b), c). A short chain (the usual '<|im_start|>' + role
        # + '\n' + ...) runs as plain Python and is measured once: at most SHORT_CHAIN bounded
        # operands. A longer one goes through add_all, which measures after every step.
        # (Intercepting each '+' cost a third of a ChatML render.)
        operands = []
        while isinstance(node, nodes.Add):
            operands.append(node.right)
            node = node.left
        operands.append(node)
        short = len(operands) <= SHORT_CHAIN
        self.write("environment.measured((" if short else "environment.add_all((")
        for i, operand in enumerate(reversed(operands)):
            if i:
                self.write(" + " if short else ", ")
            self.visit(operand, frame)
        self.write("))" if short else ",))")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's, but through environment.join_text, which measures the parts first.
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.join_text((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` passes here before ``str()``: measured, counted, then printed.
    Counting what is printed bounds a macro or ``{% set %}`` buffer that a loop fills with
    references to one big string (its join would allocate them all)."""
    size = len(value) if type(value) is str else printed_size(value, MAX_TEXT)
    if size > MAX_TEXT:
        raise TemplateLimitError(f"a {{{{ ... }}}} expression would print more than {MAX_TEXT:,} characters")
    budget = current()
    if budget is not None:
        budget.volume += size
        if budget.volume > MAX_VOLUME:
            spend(budget, 0)  # raises
    return value


def _guard_filter(name: str, func: Callable) -> Callable:
    skip = 0 if _PassArg.from_obj(func) is None else 1  # the context/eval_ctx/environment argument
    # Given only a string, a filter that does not walk it item by item grows it a few times at
    # most (indent: 4 spaces a line, tojson: escapes, urlize: a tag a word): its result is checked.
    plain = name not in ITERATING_FILTERS

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes what ``func`` expects
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        if budget is not None and monotonic() > budget.deadline:
            tick(budget)  # raises
        if plain and len(args) == skip + 1 and not kwargs and type(args[skip]) is str:
            return produced(budget, func(*args))  # trim, upper, tojson, ... of a string
        value, params = filter_args(name, args[skip], args[skip + 1 :], kwargs)
        return produced(budget, func(*args[:skip], value, *params, **kwargs))

    return guarded


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """transformers' chat-template sandbox, bounded (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})  # '+' chains go through add_all
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, filters: Mapping[str, Callable] | None = None, globals: Mapping[str, Any] | None = None,
                 **options: Any):  # fmt: skip
        super().__init__(finalize=_finalize, **options)
        self.globals.update(range=bounded_range, lipsum=bounded_lipsum, **(globals or {}))
        all_filters = {**self.filters, **(filters or {})}
        self.filters = {name: _guard_filter(name, f) for name, f in all_filters.items()}

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        budget = current()
        tick(budget)
        if isinstance(__obj, _RECURSIVE):
            if isinstance(__obj, LoopContext) and args:  # loop(children): bound the inner loop too
                args = (__self.loop_items(args[0]), *args[1:])
            try:
                enter_call(budget)
                return produced(budget, super().call(__context, __obj, *args, **kwargs))
            finally:
                leave_call(budget)
        kind = type(__obj)
        if kind in _BUILTIN or (kind is types.MethodType and issubclass(type(__obj.__self__), (str, bytes))):
            # message.get(...), 'x'.ljust(...), and Markup's methods, which are Python wrappers of str's
            name = __obj.__name__
            if args or kwargs:
                check_size_arguments(f"{name}()", args, kwargs)
            if name in _GROWING_STR_METHODS and issubclass(type(__obj.__self__), (str, bytes)):
                args = str_method_args(__obj, args, kwargs)
        return produced(budget, super().call(__context, __obj, *args, **kwargs))

    @staticmethod
    def measured(value: Any) -> Any:
        """The result of a short ``+`` chain, accounted for unless it is short text."""
        if type(value) is str and len(value) <= SMALL_TEXT:
            return value
        return produced(current(), value)

    def add_all(self, operands: tuple) -> Any:
        """A long ``a + b + c + ...`` chain, measured after every step, so a chain of many big
        operands stops at the first sum past the limit."""
        result = operands[0]
        for operand in operands[1:]:
            result = produced(current(), result + operand)
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        tick(budget)
        if operator == "*":
            check_repeat(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%" and isinstance(left, (str, bytes)):
            check_percent(left if isinstance(left, str) else left.decode("latin-1"), right)
        return produced(budget, self.binop_table[operator](left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        @functools.wraps(wrapper)
        def bounded(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            check_format(fmt, () if is_map else args, mapping)
            return produced(current(), wrapper(*args, **kwargs))

        return bounded

    def loop_items(self, iterable: Any):
        """Yield ``iterable``'s items, checking the render's deadline before each."""
        budget = current()
        if budget is None:
            yield from iterable
            return
        deadline = budget.deadline
        for item in iterable:
            if monotonic() > deadline:
                tick(budget)  # raises
            yield item

    def join_text(self, parts: tuple, markup: bool) -> str:
        """``a ~ b ~ c``: refused before joining when the text would pass ``MAX_TEXT``."""
        if sum(printed_size(p, MAX_TEXT) for p in parts) > MAX_TEXT:
            raise TemplateLimitError(f"a ~ concatenation would build more than {MAX_TEXT:,} characters")
        return produced(current(), markup_join(parts) if markup else str_join(parts))


def render(template: jinja2.Template, variables: Mapping[str, Any]) -> str:
    """The whole rendered text of ``template``, within the limits, or TemplateLimitError."""
    pieces, size = [], 0
    token = start_budget()
    try:
        for piece in template.generate(**variables):
            size += len(piece)  # characters <= bytes: past the limit already
            if size > MAX_OUTPUT_BYTES:
                raise TemplateLimitError(f"the prompt would be larger than {MAX_OUTPUT_BYTES:,} bytes")
            pieces.append(piece)
    finally:
        end_budget(token)
    text = "".join(pieces)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise TemplateLimitError(
            f"the rendered prompt is not valid Unicode (a lone surrogate at character {e.start})"
        ) from None
    if size > MAX_OUTPUT_BYTES:
        raise TemplateLimitError(f"the prompt would be larger than {MAX_OUTPUT_BYTES:,} bytes")
    return text
