"""``chatcli lora layers PATH[:SCALE] PROMPT``: which layers of an adapter move an answer most.

The adapter's greedy answer to PROMPT (or ``--answer TEXT``, scored as the assistant's
reply), then :func:`chatcli.lora.ablation.layer_ablation`: each transformer layer's
adapter part switched off alone, the mean KL(all on ‖ layer off) in bits over the
answer, the layers ranked with bars, and every layer off for reference. ``--json``:
one object (the ablation's ``to_json`` plus model, answer and whether it was generated).
"""

from __future__ import annotations

import json

import typer

from chatcli.cli.common import DeviceOpt, DtypeOpt, ModelOpt, ThreadsOpt, check_dtype, read_text_arg, set_threads
from chatcli.errors import UsageError


def layers(
    path: str = typer.Argument(..., help="Adapter PATH[:SCALE] (folder, .safetensors, or a name in the adapter folders)."),
    prompt: str = typer.Argument(..., help="The message (or '-' for stdin, '@FILE' for a file)."),
    model: str = ModelOpt,
    answer: str | None = typer.Option(None, "--answer", help="Score this answer (or '@FILE') instead of generating one."),
    system: str | None = typer.Option(None, "--system", help="System message."),
    max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="Most tokens of the generated (greedy) answer."),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object: the layers ranked by KL, the total, the answer."),
) -> None:
    """Which layers of the adapter move the answer most: each layer switched off alone, mean KL in bits."""
    from rich.console import Console

    from chatcli.chat.lora_views import ablation_view
    from chatcli.engine.events import Done, Step
    from chatcli.engine.loader import load_engine
    from chatcli.engine.params import SamplingParams
    from chatcli.errors import GenerationError
    from chatcli.lora.ablation import layer_ablation
    from chatcli.lora.spec import load_adapter_specs, preflight
    from chatcli.progress import stderr_progress

    check_dtype(dtype)
    set_threads(threads)
    if max_tokens < 1:
        raise UsageError(f"invalid --max-tokens {max_tokens}: use an integer >= 1")
    text = read_text_arg(prompt)
    reply = read_text_arg(answer, "answer") if answer is not None else None
    messages = ([] if system is None else [{"role": "system", "content": system}]) + [{"role": "user", "content": text}]
    specs = preflight([path])
    with stderr_progress() as progress:
        engine = load_engine(model, dtype=dtype, device=device, progress=progress)
    engine.require_chat_template()
    (adapter,) = load_adapter_specs(engine.adapters, specs)
    prompt_ids = list(engine.tokenizer.encode_chat(messages))
    if reply is None:  # the adapter's own greedy answer
        steps: list[Step] = []
        done: Done | None = None
        for event in engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens)):
            if isinstance(event, Step):
                steps.append(event)
            elif isinstance(event, Done):
                done = event
        if done is None or done.finish_reason == "error":
            raise GenerationError((done.error if done else None) or "generation failed")
        answer_ids, reply = [s.id for s in steps], done.text
    else:
        answer_ids = list(engine.tokenizer.encode(reply))
    result = layer_ablation(engine.model, engine.adapters, prompt_ids, answer_ids, names=[adapter.name])
    if as_json:
        print(json.dumps({**result.to_json(), "model": engine.identity.name, "answer": reply, "generated": answer is None},
                         ensure_ascii=False))  # fmt: skip
        return
    print(reply)
    print()
    Console(highlight=False).print(ablation_view(result))
