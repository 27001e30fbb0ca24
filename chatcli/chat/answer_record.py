"""What produced an answer, recorded in its ``meta`` while it is generated, and read back.

:class:`chatcli.chat.core.ChatCore` keeps, on every answer (``Node.meta``):

* ``params`` — the :class:`~chatcli.engine.params.SamplingParams` it was generated with
  (``to_json``), ``model`` — the model's name, ``system`` — the system prompt then (None: none);
* ``adapters`` — ``[{"name", "scale"}]``, the adapters that were on (scale not 0) while it
  was generated, ``[]`` for none; absent on answers made before chatcli recorded them or
  when the backend could not say (a server that failed to list its adapters);
* ``seed_used`` — the seed the engine drew when ``params.seed`` was None (the local engine
  reports it), so a sampled answer can be made again;
* ``dropped_messages`` — how many of the oldest messages the engine dropped to fit the context.

``/compare`` compares the recorded adapters at the recorded scales, ``/raw`` re-renders the
prompt from ``system`` and ``dropped_messages``, ``/save`` writes :func:`describe` beside
each answer. Pure functions over the engine's adapter control and plain dicts; no I/O
beyond what the adapter control does to list its adapters (a server: one request after
a change).
"""

from __future__ import annotations

from typing import Any

from chatcli.errors import ChatcliError

# The sampling parameters written beside an answer, in this order.
SHOWN_PARAMS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed", "max_tokens")


def active_adapters(engine: Any) -> list[dict] | None:
    """``[{"name", "scale"}]`` of the adapters on now; ``[]`` when the engine has no adapter
    control; None when the control could not say (a server that did not answer)."""
    control = getattr(engine, "adapters", None)  # ChatEngine's optional member (engine/protocol.py)
    if control is None:
        return []
    try:
        infos = control.list()
    except ChatcliError:
        return None
    return [{"name": i.name, "scale": float(i.scale)} for i in infos if i.enabled and i.scale != 0.0]


def record_adapters(meta: dict, engine: Any) -> None:
    """Set ``meta["adapters"]`` to the adapters on now, or remove it when the engine cannot say
    (an unknown set is never recorded as "none": /compare would not compare it)."""
    adapters = active_adapters(engine)
    if adapters is None:
        meta.pop("adapters", None)
    else:
        meta["adapters"] = adapters


def drawn_seed(engine: Any) -> int | None:
    """The seed the local engine drew for its last answer; None for an engine that does not say."""
    seed = getattr(getattr(engine, "generator", None), "last_seed", None)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def recorded_adapters(meta: dict) -> dict[str, float] | None:
    """The adapters an answer was generated with, name -> scale; None when not recorded."""
    items = meta.get("adapters")
    if not isinstance(items, list):
        return None
    out: dict[str, float] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("scale"), (int, float)):
            out[item["name"]] = float(item["scale"])
    return out


def prompt_messages(messages: list[dict], meta: dict) -> list[dict]:
    """The messages an answer's prompt was rendered from: ``messages`` (the conversation before
    it, with today's system prompt) with the system prompt recorded in ``meta`` (today's for an
    answer that predates the record) and without the oldest messages the engine dropped."""
    turns = [m for m in messages if m["role"] != "system"]
    system = meta["system"] if "system" in meta else next((m["content"] for m in messages if m["role"] == "system"), None)
    dropped = meta.get("dropped_messages", 0)
    if isinstance(dropped, int) and not isinstance(dropped, bool) and 0 < dropped < len(turns):
        turns = turns[dropped:]  # the engine drops whole turns, oldest first (chatcli.engine.fit)
    return ([{"role": "system", "content": system}] if system else []) + turns


def adapters_text(adapters: dict[str, float]) -> str:
    """``sft×0.5, dpo`` (scale shown when it is not 1), ``none`` for no adapter."""
    return ", ".join(n if s == 1.0 else f"{n}×{s:g}" for n, s in adapters.items()) or "none"


def describe(meta: dict, model: str | None = None) -> str:
    """One line of what produced an answer: its sampling parameters, adapters and (when it is
    not ``model``, the conversation's) model; '' when nothing was recorded."""
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    parts = []
    for key in SHOWN_PARAMS:
        if key not in params:
            continue
        value = params[key]
        if key == "seed" and value is None:
            used = meta.get("seed_used")
            value = f"{used} (drawn)" if used is not None else "random"
        parts.append(f"{key} {value}")
    adapters = recorded_adapters(meta)
    if adapters is not None:
        parts.append(f"adapters {adapters_text(adapters)}")
    if meta.get("model") and meta.get("model") != model:
        parts.append(f"model {meta['model']}")
    return ", ".join(parts)
