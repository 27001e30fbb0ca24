"""``chatcli lora``: inspect an adapter, merge adapters into a new checkpoint, show what one changes.

* ``lora info PATH`` — config, tensors, parameter count and the base it expects
  (``--model M`` also checks that it fits that model, then reads its weights for
  the heat table);
  exits 1 on anything loading would refuse that needs no model (NaN/Inf values
  included).
* ``lora merge --model M --lora PATH[:SCALE]... --out DIR`` — a plain safetensors
  checkpoint with the adapters folded in, config and tokenizer files copied: it
  loads like any model. A tied LM head that an adapter changes is written untied.
* ``lora diff --lora PATH[:SCALE]... PROMPT`` — answer PROMPT with the adapters on,
  then re-score every answer token with them off: per-token KL and the chosen
  token's probability shift (``--json``: one object per line).
* ``lora layers PATH[:SCALE] PROMPT`` — the adapter's greedy answer (or ``--answer``),
  then each layer's adapter part switched off alone: the layers ranked by mean KL.

``lora info --model M`` also draws ‖ΔW‖/‖W0‖ per layer and module on M's weights;
without ``--model`` it reads no model at all.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import typer

from chatcli.cli import export, lora_layers
from chatcli.cli.common import DeviceOpt, DtypeOpt, ModelOpt, ThreadsOpt, check_dtype, read_text_arg, sampling_params, set_threads
from chatcli.errors import UsageError

lora_app = typer.Typer(help="Inspect, merge and compare LoRA adapters (PEFT format).", no_args_is_help=True)

LoraOpt = typer.Option(..., "--lora", "-l", help="Adapter PATH or NAME, optionally :SCALE (repeatable).")


# --- info --------------------------------------------------------------------------------------


def describe_adapter(path: Path) -> dict:
    """What ``lora info`` shows, from the config and the safetensors header.

    The adapter first passes every check loading makes that needs no model
    (:func:`~chatcli.lora.peft_io.plan_adapter`, values included): what loading would
    refuse, info refuses."""
    from chatcli.lora.info import sort_targets
    from chatcli.lora.peft_io import parse_key, plan_adapter
    from chatcli.model.lora_linear import lora_scaling

    plan = plan_adapter(path, values=True)
    config, entries, weights = plan.config, plan.entries, plan.weights
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    others: dict[str, tuple[int, ...]] = {}
    for key, e in entries.items():
        kind, module, part = parse_key(key, str(weights))
        if kind == "lora":
            modules.setdefault(module, {})[part] = e.shape
        else:
            others[f"{module}.{part} ({kind})"] = e.shape
    ranks = sorted({s["A"][0] for s in modules.values() if "A" in s})
    layers = sorted({int(m.split(".")[2]) for m in modules if m.startswith("model.layers.") and m.split(".")[2].isdigit()})
    short = list(sort_targets(m.rsplit(".", 1)[-1] for m in modules))
    hidden = next((s["A"][1] for m, s in modules.items() if m.endswith(("q_proj", "gate_proj")) and "A" in s), None)
    params = sum(_numel(s) for e in modules.values() for s in e.values()) + sum(_numel(s) for s in others.values())
    return {
        "path": str(path),
        "weights": str(weights),
        "size_bytes": weights.stat().st_size,
        "dtypes": sorted({e.dtype for e in entries.values()}),
        "base_model": config.base_model_name_or_path,
        "base_revision": config.revision,
        "base_record": config.base_record,  # chatcli's own: its name for the base, the weights' sha256
        "task_type": config.task_type,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "use_rslora": config.use_rslora,
        # B·A is multiplied by this before it is added to W0 (the config's r and alpha; patterns may differ)
        "scaling": lora_scaling(config.r, config.lora_alpha, config.use_rslora),
        "scaling_rule": "alpha/sqrt(r)" if config.use_rslora else "alpha/r",
        "ranks": ranks,
        "rank_pattern": config.rank_pattern,
        "alpha_pattern": config.alpha_pattern,
        "target_modules": config.target_modules,
        "exclude_modules": config.exclude_modules,
        "layers_to_transform": config.layers_to_transform,
        "modules_to_save": config.modules_to_save,
        "targets": short,
        "wrapped_layers": len(modules),
        "layers": layers,
        "expects": {"hidden_size": hidden, "min_layers": (layers[-1] + 1) if layers else None},
        "other_tensors": {k: list(v) for k, v in others.items()},
        "tensors": len(entries),
        "parameters": params,
    }


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _fits(path: Path, model: str) -> dict:
    """Check the adapter against a model's shapes (meta device: no weights are read)."""
    from chatcli.lora.manager import AdapterManager
    from chatcli.hub.checkpoint import meta_model, read_model_config
    from chatcli.hub.catalog import resolve_model
    from chatcli.lora.peft_io import read_adapter
    from chatcli.errors import ChatcliError

    model_dir = resolve_model(model, auto_pull=False)
    meta = meta_model(read_model_config(model_dir))
    shapes = AdapterManager(meta).shapes
    try:
        ad = read_adapter(path, shapes)
    except ChatcliError as e:
        return {"model": model, "fits": False, "problem": e.message}
    base = sum(p.numel() for p in meta.parameters())
    return {"model": model, "fits": True, "percent_of_base": 100.0 * ad.num_params() / base}


def _layer_norms(spec, model: str):
    """‖ΔW‖/‖W0‖ per layer and module of the adapter on ``model``'s weights (float32, CPU)."""
    import torch

    from chatcli.hub.catalog import resolve_model
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.lora.layer_norms import layer_norms
    from chatcli.lora.manager import AdapterManager
    from chatcli.progress import stderr_progress

    with stderr_progress() as progress:
        base = load_checkpoint(resolve_model(model, progress=progress), dtype=torch.float32, device="cpu", progress=progress)
    mgr = AdapterManager(base)
    mgr.load(spec.path, name=spec.name, scale=spec.scale)
    return layer_norms(mgr, spec.name)


def info(
    path: str = typer.Argument(..., help="Adapter folder, .safetensors file, or name in the adapter folders."),
    model: str | None = typer.Option(None, "--model", "-m", help="Also check that it fits this model and show "
                                     "‖ΔW‖/‖W0‖ per layer and module on its weights."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Show an adapter's config, tensors, parameter count and the base model it expects
    (with --model: how much it changes each layer of that model)."""
    from chatcli.hub.base_ref import describe_base
    from chatcli.lora.spec import resolve_adapter

    spec = resolve_adapter(path)
    d = describe_adapter(spec.path)
    d["name"] = spec.name
    norms = None
    if model is not None:
        d["check"] = _fits(spec.path, model)
        if d["check"]["fits"] and d["wrapped_layers"]:
            norms = _layer_norms(spec, model)
            d["layer_norms"] = norms.to_json()
    if as_json:
        print(json.dumps(d, ensure_ascii=False))
        return
    rank = ", ".join(map(str, d["ranks"])) if len(d["ranks"]) > 1 else str(d["ranks"][0] if d["ranks"] else d["r"])
    sqrt = "√" if d["use_rslora"] else ""
    scaling = (f"α/{sqrt}r = {d['lora_alpha']:g}/{sqrt}{d['r']} = {d['scaling']:.4g}" + (" (rsLoRA)" if sqrt else "")
               + f": ΔW = {d['scaling']:.4g}·B·A")  # fmt: skip
    layers = d["layers"]
    span = f"layers {layers[0]}-{layers[-1]} ({len(layers)})" if layers else "no transformer layers"
    percent = d.get("check", {}).get("percent_of_base")
    base_line, weights_line = describe_base(d["base_model"], d["base_record"])
    share = f" ({percent:.2f}% of the model's)" if percent is not None else "" if model else " (--model M: its share of M)"
    rows = [
        ("name", d["name"]),
        ("path", d["path"]),
        ("file", f"{Path(d['weights']).name}, {d['size_bytes'] / 1e6:.1f} MB, {'/'.join(d['dtypes'])}, {d['tensors']} tensors"),
        ("base model", base_line),
        *([("base weights", weights_line)] if weights_line else []),
        ("expects", f"hidden size {d['expects']['hidden_size'] or '?'}, at least {d['expects']['min_layers'] or '?'} layers"),
        ("rank", f"{rank} (config r={d['r']}{', patterns' if d['rank_pattern'] else ''})"),
        ("alpha", f"{d['lora_alpha']:g}{' (+ patterns)' if d['alpha_pattern'] else ''}"),
        ("scaling", scaling + (" (modules in rank/alpha patterns differ)" if d["rank_pattern"] or d["alpha_pattern"] else "")),
        ("targets", f"{', '.join(d['targets']) or 'none'} on {d['wrapped_layers']} linear layers, {span}"),
        ("replaces", ", ".join(d["modules_to_save"]) or "nothing (no modules_to_save)"),
        ("parameters", f"{d['parameters']:,}" + share),
    ]
    if "check" in d:
        c = d["check"]
        rows.append((f"fits {c['model']}", f"yes ({c['percent_of_base']:.2f}% of its parameters)" if c["fits"] else f"no: {c['problem']}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if norms is not None:
        from rich.console import Console

        from chatcli.chat.lora_views import heat_table

        print()
        Console(highlight=False).print(heat_table(norms))


# --- merge -------------------------------------------------------------------------------------

_NOT_COPIED = {"model.safetensors", "model.safetensors.index.json", "chatcli.json"}


def merge(
    model: str = ModelOpt,
    lora: list[str] = LoraOpt,
    out: Path = typer.Option(..., "--out", "-o", help="The new model directory."),
    dtype: str = typer.Option("float32", "--dtype", help="Dtype of the written weights: float32, bfloat16 or float16."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Fold adapters into a copy of the model: a safetensors checkpoint that loads like any model."""
    import torch
    from safetensors.torch import save_file

    from chatcli.engine.loader import weights_sha256
    from chatcli.hub.base_ref import base_reference
    from chatcli.lora.spec import load_adapter_specs, preflight
    from chatcli.lora.manager import AdapterManager
    from chatcli.hub.checkpoint import load_checkpoint, resolve_dtype
    from chatcli.hub.catalog import resolve_model
    from chatcli.paths import replace_dir
    from chatcli.progress import stderr_progress

    out_dtype = resolve_dtype(check_dtype(dtype), "cpu")
    out = out.expanduser()
    if out.exists() and not force:
        raise UsageError(f"{out} already exists: choose another --out or pass --force to replace it")
    specs = preflight(lora)
    with stderr_progress() as progress:
        src = resolve_model(model, progress=progress)
        # Merge in float32 whatever the output dtype: the sum is rounded once, at the end.
        base = load_checkpoint(src, dtype=torch.float32, device="cpu", progress=progress)
    mgr = AdapterManager(base)
    infos = load_adapter_specs(mgr, specs)
    state, untied = mgr.merged_state_dict()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to(out_dtype).contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in src.iterdir():
            if f.is_file() and f.name not in _NOT_COPIED and not f.name.endswith(".safetensors"):
                shutil.copy2(f, tmp / f.name)
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
        if untied:
            cfg["tie_word_embeddings"] = False
        cfg["torch_dtype"] = str(out_dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        ref = base_reference(model, src, weights_sha256(src))
        provenance = {
            "base_model": str(src),
            "base": {"hf_id": ref.hf_id, "revision": ref.revision, **ref.extra()},
            "adapters": [{"name": i.name, "path": i.source, "scale": i.scale} for i in infos],
            "dtype": cfg["torch_dtype"],
            "lm_head_untied": untied,
        }
        (tmp / "chatcli-merge.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    names = ", ".join(f"{i.name}×{i.scale:g}" for i in infos)
    sys.stderr.write(f"chatcli: merged {names} into {out}{' (LM head untied)' if untied else ''}\n")
    print(out)


# --- diff --------------------------------------------------------------------------------------


def diff(
    prompt: str = typer.Argument(..., help="The message (or '-' for stdin, '@FILE' for a file)."),
    lora: list[str] = LoraOpt,
    model: str = ModelOpt,
    system: str | None = typer.Option(None, "--system", help="System message."),
    max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="Most answer tokens."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="Sampling temperature of the answer (0 = greedy)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the answer's sampling."),
    top: int = typer.Option(5, "--top", help="Top tokens of each distribution per step (JSON)."),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    as_json: bool = typer.Option(False, "--json", help="JSONL: meta, one token object per answer token, summary."),
) -> None:
    """Answer PROMPT with the adapters on, then show per token how they moved the distribution."""
    from chatcli import __version__
    from chatcli.lora.spec import load_adapter_specs, preflight
    from chatcli.lora.compare import compare_answer
    from chatcli.engine.events import Done, Step
    from chatcli.engine.loader import load_engine
    from chatcli.errors import GenerationError
    from chatcli.progress import stderr_progress

    check_dtype(dtype)
    set_threads(threads)
    if top < 1:
        raise UsageError(f"invalid --top {top}: use an integer >= 1")
    params = sampling_params(
        temperature=temperature, top_k=None, top_p=None, min_p=None, repetition_penalty=None,
        max_tokens=max_tokens, seed=seed, stop=None, top_n=top,
    )  # fmt: skip
    text = read_text_arg(prompt)
    messages = ([] if system is None else [{"role": "system", "content": system}]) + [{"role": "user", "content": text}]
    specs = preflight(lora)
    with stderr_progress() as progress:
        engine = load_engine(model, dtype=dtype, device=device, progress=progress)
    engine.require_chat_template()
    mgr = engine.adapters
    infos = load_adapter_specs(mgr, specs)

    steps: list[Step] = []
    done: Done | None = None
    for event in engine.chat(messages, params):
        if isinstance(event, Step):
            steps.append(event)
        elif isinstance(event, Done):
            done = event
    if done is None or done.finish_reason == "error":
        raise GenerationError((done.error if done else None) or "generation failed")
    prompt_ids = engine.tokenizer.encode_chat(messages)
    cmp = compare_answer(engine.model, mgr, prompt_ids, [s.id for s in steps], top_n=top, tokenizer=engine.tokenizer)

    if as_json:
        _emit({
            "type": "meta", "model": engine.identity.name, "model_sha256": engine.identity.sha256,
            "adapters": [i.to_json() for i in infos], "params": params.to_json(),
            "kl": "KL(adapter || base), bits", "chatcli_version": __version__,
        })  # fmt: skip
        for s in cmp.steps:
            _emit(s.to_json())
        _emit({**cmp.to_json(), "answer": done.text, "finish_reason": done.finish_reason})
        return
    print(done.text)
    print()
    print(f"{'#':>4}  {'token':<16} {'p base':>8} {'p adapter':>10} {'shift':>8} {'KL bits':>8}")
    for s in cmp.steps:
        mark = "  * top choice changed" if s.choice_changed else ""
        print(f"{s.index:>4}  {json.dumps(s.token)[:16]:<16} {s.p_base:>8.4f} {s.p_adapter:>10.4f} {s.shift:>+8.4f} {s.kl_bits:>8.3f}{mark}")
    summary = cmp.to_json()
    peak = cmp.max_step
    print(
        f"\n{summary['tokens']} tokens, mean KL {summary['mean_kl_bits']:.3f} bits"
        + (f", largest at #{peak.index} {json.dumps(peak.token)} ({peak.kl_bits:.3f} bits)" if peak else "")
        + f", top choice changed at {summary['choices_changed']} step(s)"
    )


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


lora_app.command("info")(info)
lora_app.command("merge")(merge)
lora_app.command("diff")(diff)
lora_app.command("layers")(lora_layers.layers)
lora_app.command("export")(export.lora_export)


def register(app: typer.Typer) -> None:
    app.add_typer(lora_app, name="lora")
