"""Chat templates: find a model's template and render it exactly as transformers does.

A chat template is a Jinja program shipped with the model that turns a list of
``{"role", "content"}`` messages into the one string the model reads. We render it
the way ``transformers``' ``apply_chat_template`` does (``_compile_jinja_template``
in ``transformers/utils/chat_template_utils.py``): an ``ImmutableSandboxedEnvironment``
with ``trim_blocks``, ``lstrip_blocks`` and the ``loopcontrols`` extension, a
``tojson`` filter that does not HTML-escape, and the globals ``raise_exception``,
``strftime_now``, ``dict`` and ``namespace``. The variables are ``messages``,
``add_generation_prompt``, ``tools``, ``documents``, the tokenizer's special tokens
(``bos_token``, ``eos_token``, ...) and any extra keyword arguments.

Where the template comes from, first found wins (the order transformers uses,
with an explicit override in front):
  1. an override file (``--chat-template FILE``);
  2. ``chat_template.jinja`` in the model directory;
  3. ``tokenizer_config.json``'s ``chat_template``: a string, or a list of
     ``{"name", "template"}`` entries of which ``"default"`` is used.

Rendering is bounded (:mod:`chatcli.tokenizer.template_sandbox`): past 2 s, 1 MB of
prompt, 50 nested macro calls, a 100,000-item ``range()`` or a string or list the
template blows up, the render stops. Every template problem (a missing or non-UTF-8
file, a syntax error, ``raise_exception``, ``1/0``, a limit) becomes a
:class:`ChatTemplateError` with a one-line message; a caller gets the whole prompt or
that error, never a truncated prompt.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.utils

from chatcli.errors import ChatcliError
from chatcli.regular_file import NotRegularFile, read_text
from chatcli.tokenizer.template_sandbox import BoundedEnvironment, TemplateLimitError, render

CHAT_TEMPLATE_FILE = "chat_template.jinja"


class ChatTemplateError(ChatcliError):
    """A chat template that cannot be found, compiled or rendered."""


def load_chat_template(model_dir: Path, override: Path | None = None) -> str | None:
    """Return the chat template source for ``model_dir`` (None if the model has none)."""
    if override is not None:
        override = Path(override)
        if not override.is_file():
            raise ChatTemplateError(f"chat template file {override} not found; pass an existing Jinja file")
        return _read_text(override, "save it as UTF-8")
    model_dir = Path(model_dir)
    jinja_file = model_dir / CHAT_TEMPLATE_FILE
    if jinja_file.is_file():
        return _read_text(jinja_file, "fix or re-download the model, or pass --chat-template FILE")
    config_file = model_dir / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    text = _read_text(config_file, "fix or re-download the model")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        message = " ".join(str(e).split())
        raise ChatTemplateError(f"cannot read {config_file}: {message}; fix or re-download the model") from e
    if not isinstance(config, dict):
        raise ChatTemplateError(f"{config_file} is not a JSON object; fix or re-download the model")
    return template_from_config(config.get("chat_template"), source=str(config_file))


def _read_text(path: Path, fix: str) -> str:
    """A template file's text: UTF-8 only, and valid Unicode (no lone surrogates from escapes)."""
    try:
        return read_text(path, "chat template file")  # a regular file only: a FIFO would block
    except NotRegularFile as e:
        raise ChatTemplateError(f"{e.message}; {fix}") from None
    except UnicodeDecodeError as e:
        raise ChatTemplateError(
            f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); {fix}"
        ) from None
    except OSError as e:
        raise ChatTemplateError(f"cannot read {path}: {e.strerror or e}; {fix}") from None


def _check_unicode(template: str, source: str) -> str:
    try:
        template.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ChatTemplateError(
            f"{source} has a chat template that is not valid Unicode (a lone surrogate at character {e.start}); "
            "fix it or pass --chat-template FILE"
        ) from None
    return template


def template_from_config(value: Any, source: str = "tokenizer_config.json") -> str | None:
    """Pick the template out of a ``chat_template`` config value (string or named list)."""
    if value is None:
        return value
    if isinstance(value, str):
        return _check_unicode(value, source)
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if "default" in named and isinstance(named["default"], str):
            return _check_unicode(named["default"], source)
        raise ChatTemplateError(
            f"{source} has chat templates {sorted(map(str, named))} but none named 'default'; "
            "pass one with --chat-template FILE"
        )
    raise ChatTemplateError(f"{source} has a chat_template of type {type(value).__name__}; expected a string")


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson HTML-escapes '<', '>', '&' and '\''; transformers replaces it with plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    # As in transformers: `dict(...)` without exposing the dict type itself to the sandbox.
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # As in transformers: namespaces refuse underscore attributes (a path to CPython internals).
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set attribute {name!r} on a namespace")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks;
    transformers accepts it, so we accept it and render its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """Compile a template in the sandbox transformers uses, bounded (cached by source)."""
    env = BoundedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        filters={"tojson": _tojson},
        globals={"raise_exception": _raise_exception, "strftime_now": _strftime_now, "dict": _TemplateDict(),
                 "namespace": _TemplateNamespace},  # fmt: skip
    )
    try:
        return env.from_string(_check_unicode(source, "the chat template"))
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"chat template syntax error at line {e.lineno}: {e.message}; fix it or pass --chat-template FILE"
        ) from e
    except (RecursionError, MemoryError) as e:  # nesting too deep for Jinja's parser
        raise ChatTemplateError(
            f"chat template cannot be compiled ({type(e).__name__}: nested too deeply); fix it or pass --chat-template FILE"
        ) from None


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    **variables: Any,
) -> str:
    """Render ``messages`` with the template ``source``.

    ``special_tokens`` (``bos_token``, ``eos_token``, ...) are visible to the template;
    ``variables`` override them, as in transformers. Keys whose value is None are
    dropped from each message, as transformers does before rendering.
    """
    chat = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise ChatTemplateError(f"a chat message must be a mapping with 'role' and 'content', got {m!r}")
        chat.append({k: v for k, v in m.items() if v is not None})
    template = compile_template(source)
    context = {**(special_tokens or {}), **variables}
    variables = dict(messages=chat, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt)
    try:
        return render(template, {**variables, **context})
    except TemplateLimitError as e:
        raise ChatTemplateError(f"chat template stopped: {e.message}; fix it or pass --chat-template FILE") from None
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"chat template refused the conversation: {_one_line(e)}") from e
    except Exception as e:  # the template is a program: 1/0, 2.0 ** 100000, a bad index, ...
        raise ChatTemplateError(
            f"chat template failed ({type(e).__name__}: {_one_line(e)}); fix it or pass --chat-template FILE"
        ) from None


def _one_line(e: BaseException, limit: int = 300) -> str:
    message = " ".join(str(e).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
