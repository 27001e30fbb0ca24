"""Loop warnings: a stream of events in, the same stream out with a Notice when an answer repeats itself.

:func:`watch_loops` wraps an engine stream (one answer, or a batch whose events
carry ``seq``): it passes every event through unchanged and, right after the Step
at which :class:`~chatcli.engine.probes.repeats.RepeatDetector` first fires for a
sequence, yields one ``Notice(kind="loop")`` for it. So every front end gets the
warning the same way (the TUI shows it as a warning note, the REPL and ``chatcli
generate`` print it on one line, ``chatcli serve`` ignores notices, so its API
output is unchanged). Nothing is stopped or changed: it is advice.

The Notice's ``data``: ``seq``, ``start`` (the step index where the repeated text
first began), ``tokens`` (its length), ``text``, ``copies``, ``at`` (the step that
fired), ``greedy`` and ``suggest`` (``repetition_penalty``, and ``temperature`` when
the answer was greedy). :func:`loop_message` words it for the chat (``/set ...``) or
for the command line (``--repetition-penalty ...``) from that data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from chatcli.engine.events import Event, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.repeats import Repeat, RepeatDetector

SAMPLING_TEMPERATURE = SamplingParams().temperature  # what to suggest instead of greedy: the default
PENALTY = 1.2  # a repetition penalty that breaks most loops of small models without garbling the text
SHOWN_CHARS = 48  # the repeated text in the message is cut to this


def watch_loops(
    events: Iterator[Event],
    params: SamplingParams | Callable[[], SamplingParams],
    prime_ids: Sequence[int] = (),
    token_text: Callable[[int], str] | None = None,
) -> Iterator[Event]:
    """``events`` unchanged, plus one loop Notice per sequence after the Step where it starts looping.

    ``params`` (or a getter of the live ones) says whether the answer is greedy when it
    fires; ``prime_ids`` are answer tokens already decided (a continued answer): a loop
    among them is not announced again, and step indices count after them.
    """
    detectors: dict[int, RepeatDetector] = {}
    try:
        for event in events:
            yield event
            if not isinstance(event, Step):
                continue
            detector = detectors.get(event.seq)
            if detector is None:
                detector = detectors[event.seq] = RepeatDetector()
                detector.prime(prime_ids, [token_text(i) for i in prime_ids] if token_text else None)
            repeat = detector.push(event.id, event.text)
            if repeat is not None:
                yield loop_notice(repeat, params() if callable(params) else params, seq=event.seq)
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # closed early: the engine's stream ends now (its cleanup runs), as without the watch
            close()


def loop_notice(repeat: Repeat, params: SamplingParams, seq: int = 0) -> Notice:
    greedy = params.greedy or params.top_k == 1
    suggest = {"repetition_penalty": PENALTY if params.repetition_penalty < PENALTY else round(params.repetition_penalty + 0.1, 2)}
    if greedy:
        suggest["temperature"] = SAMPLING_TEMPERATURE
    data = {"seq": seq, **repeat.to_json(), "greedy": greedy, "suggest": suggest}
    del data["ids"]  # the ids are for the detector; front ends show the text
    return Notice(loop_message(data), kind="loop", data=data)


def loop_message(data: dict, *, cli: bool = False) -> str:
    """One line: what repeats, since where, and the fix (``/set`` in the chat, flags with ``cli``)."""
    suggest = data.get("suggest", {})
    penalty = suggest.get("repetition_penalty", PENALTY)
    temperature = suggest.get("temperature")

    def setting(name: str, value: float) -> str:
        return f"--{name.replace('_', '-')} {value:g}" if cli else f"/set {name} {value:g}"

    what = f"the answer repeats itself: {_shown(data.get('text', ''))} ×{data.get('copies', 3)} from token {data.get('start', 0) + 1}"
    if temperature is not None:
        fix = (f"greedy decoding loops easily: {setting('temperature', temperature)} samples instead, "
               f"or {setting('repetition_penalty', penalty)} makes repeated tokens less likely")  # fmt: skip
    else:
        fix = f"{setting('repetition_penalty', penalty)} makes repeated tokens less likely"
    return f"{what}; {fix}"


def _shown(text: str) -> str:
    """The repeated text quoted on one line: newlines and tabs as escapes, long text cut."""
    flat = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(flat) > SHOWN_CHARS:
        flat = flat[: SHOWN_CHARS - 1] + "…"
    return f'"{flat}"'
