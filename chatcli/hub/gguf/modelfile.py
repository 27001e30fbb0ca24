"""An Ollama ``Modelfile`` for an exported GGUF: ``ollama create NAME -f FILE.Modelfile``.

Ollama formats prompts with a Go template (``TEMPLATE``), not the model's Jinja
chat template. :func:`translate_template` finds out, by rendering the Jinja
template on probe conversations (never by reading its source), whether it is plain
ChatML — ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` per message and
``<|im_start|>assistant\\n`` to answer — and whether it inserts a default system
message when the conversation has none (SmolLM2's does). ChatML becomes Ollama's
``.Messages`` loop, the default system message its ``SYSTEM`` line. Any other template
is left to Ollama (it reads ``tokenizer.chat_template`` from the GGUF and uses the
templates it recognises); the Modelfile says so and quotes the template as comments.

``PARAMETER`` lines carry the model's own sampling defaults (generation_config.json,
else the catalog's recommendation), under Ollama's names, and a ``stop`` line per
end-of-turn token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# chatcli sampling name -> Ollama PARAMETER name
_PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
               "repetition_penalty": "repeat_penalty"}

# Ollama gathers every system message (and the Modelfile's SYSTEM, when a request has none) into
# .System; some versions also leave them in .Messages, others take them out. So the system turn is
# written from .System and system messages are skipped in the loop: the same prompt either way.
CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n"
    "{{ .System }}<|im_end|>\n"
    "{{ end }}"
    "{{- range .Messages }}{{- if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}{{- end }}<|im_start|>assistant\n"
)

# Probe texts no template would produce by itself.
_S, _U1, _A1, _U2 = "SYSTEM-PROBE-7f3", "USER-PROBE-1c9", "ASSISTANT-PROBE-5e2", "USER-PROBE-2b8"


@dataclass(frozen=True)
class Translation:
    template: str | None  # Ollama's TEMPLATE, or None when not translated
    system: str | None  # the default system message the Jinja template inserts, if any
    note: str  # one line for the Modelfile's comments


def _chatml(*turns: tuple[str, str]) -> str:
    return "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)


def translate_template(jinja: str | None, special_tokens: Mapping[str, str] | None = None) -> Translation:
    """Ollama's TEMPLATE (and SYSTEM) for the Jinja chat template ``jinja``, when it is ChatML."""
    from chatcli.errors import ChatcliError
    from chatcli.tokenizer.chat_template import render_chat_template

    if not jinja:
        return Translation(None, None, "the model has no chat template")
    tokens = dict(special_tokens or {})
    try:
        full = render_chat_template(jinja, [
            {"role": "system", "content": _S}, {"role": "user", "content": _U1},
            {"role": "assistant", "content": _A1}, {"role": "user", "content": _U2},
        ], special_tokens=tokens)
        bare = render_chat_template(jinja, [{"role": "user", "content": _U1}], special_tokens=tokens)
    except ChatcliError as e:
        return Translation(None, None, f"its chat template did not render probe conversations ({e.message[:80]})")
    answer = "<|im_start|>assistant\n"
    if full != _chatml(("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2)) + answer:
        return Translation(None, None, "its chat template is not plain ChatML")
    tail = _chatml(("user", _U1)) + answer
    if bare == tail:
        return Translation(CHATML_TEMPLATE, None, "ChatML, translated from the model's chat template")
    head = bare[: -len(tail)] if bare.endswith(tail) else ""
    start, end = "<|im_start|>system\n", "<|im_end|>\n"
    if head.startswith(start) and head.endswith(end) and head.count("<|im_start|>") == 1:
        return Translation(CHATML_TEMPLATE, head[len(start): -len(end)],
                           "ChatML, translated from the model's chat template (with its default system message)")
    return Translation(None, None, "its chat template adds text Ollama's ChatML template would not")


def modelfile_text(
    gguf_name: str,
    jinja: str | None,
    sampling: Mapping[str, float | int],
    stops: Sequence[str],
    special_tokens: Mapping[str, str] | None = None,
    header: str = "",
) -> str:
    """The Modelfile for ``./gguf_name`` (in the same folder)."""
    t = translate_template(jinja, special_tokens)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"# Ollama: ollama create NAME -f {gguf_name.rsplit('.', 1)[0]}.Modelfile, then ollama run NAME", "",
              f"FROM ./{gguf_name}", ""]
    if t.template is not None:
        lines += [f"# Prompt format: {t.note}.", f'TEMPLATE """{t.template}"""']
        if t.system is not None and '"""' not in t.system:  # Ollama's quoting has no escape for """
            lines.append(f'SYSTEM """{t.system}"""')
    else:
        lines += [f"# No TEMPLATE: {t.note}; Ollama uses the chat template stored in the GGUF",
                  "# (tokenizer.chat_template) when it recognises it. The model's template:"]
        lines += [f"#   {line}" for line in (jinja or "(none)").splitlines()]
    lines.append("")
    for key, name in _PARAMETERS.items():
        if key in sampling:
            value = sampling[key]
            lines.append(f"PARAMETER {name} {value:g}" if isinstance(value, float) else f"PARAMETER {name} {value}")
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    return "\n".join(lines).rstrip("\n") + "\n"
