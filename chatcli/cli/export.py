"""Taking models and adapters to other tools: ``chatcli models export`` and ``chatcli lora export``.

* ``models export MODEL [--lora A[:S] ...] --format gguf [--quantize f16|q8_0|q4_0] --out FILE.gguf``
  — the model with its adapters merged at their scales, as one GGUF file llama.cpp and
  Ollama load (:mod:`chatcli.hub.gguf.exporter`), and ``FILE.Modelfile`` beside it for
  ``ollama create`` (:mod:`chatcli.hub.gguf.modelfile`).
* ``lora export A --format gguf --out A.gguf [--model M]`` — the adapter alone as a GGUF
  LoRA for llama.cpp's ``--lora`` (:mod:`chatcli.hub.gguf.lora_file`); M (the base it is
  used with) gives the head counts its q/k rows are permuted with.

Everything that can refuse runs before anything is written (format, quantization, an
existing output, the adapters' files, the model's architecture and weight types); the
files are then written atomically, so a refused or failed export leaves nothing. Neither
command reads the config file's ``[defaults]``: an export contains exactly what its
command line names.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from chatcli.cli.common import DEFAULT_MODEL, complete_models
from chatcli.errors import UsageError

FORMATS = ("gguf",)

FormatOpt = typer.Option("gguf", "--format", "-f", metavar="[gguf]", help="Output format (GGUF, as llama.cpp and "
                         "Ollama read it).")
ExportLoraOpt = typer.Option(None, "--lora", "-l", metavar="PATH[:SCALE]", help="An adapter to merge at SCALE "
                             "(default 1; repeatable).")
ForceOpt = typer.Option(False, "--force", help="Replace the output files if they exist.")


def _check_out(out: Path, force: bool, *, modelfile: bool) -> tuple[Path, Path | None]:
    out = out.expanduser()
    if out.suffix.lower() != ".gguf":
        raise UsageError(f"--out {out} must name a .gguf file")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory: name the .gguf file to write")
    side = out.with_suffix(".Modelfile") if modelfile else None
    existing = [p for p in (out, side) if p is not None and p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists: choose another --out or pass --force to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"the folder {out.parent} does not exist: create it or choose another --out")
    return out, side


def _check_format(fmt: str) -> None:
    if fmt.strip().lower() not in FORMATS:
        raise UsageError(f"invalid --format {fmt!r}: use gguf")


def model_export(
    model: str = typer.Argument(DEFAULT_MODEL, help="A catalog name, a Hugging Face id, a model directory or a .gguf.",
                                autocompletion=complete_models),
    out: Path = typer.Option(..., "--out", "-o", help="The .gguf file to write (FILE.Modelfile is written beside it)."),
    lora: list[str] = ExportLoraOpt,
    fmt: str = FormatOpt,
    quantize: str = typer.Option("q8_0", "--quantize", "-q", metavar="[f16|q8_0|q4_0]",
                                 help="How matrices are stored: f16, q8_0 (8-bit blocks) or q4_0 (4-bit blocks; "
                                 "embedding and head in q8_0). Norms stay f32."),
    force: bool = ForceOpt,
) -> None:
    """Export MODEL, with adapters merged, to one GGUF file for llama.cpp and Ollama, plus an Ollama Modelfile."""
    from chatcli.hub.gguf.exporter import check_quantize

    _check_format(fmt)
    quantize = check_quantize(quantize)
    out, modelfile = _check_out(out, force, modelfile=True)
    assert modelfile is not None
    _run_model_export(model, list(lora or []), quantize, out, modelfile)


def lora_export(
    path: str = typer.Argument(..., help="Adapter folder, .safetensors file, or name in the adapter folders."),
    out: Path = typer.Option(..., "--out", "-o", help="The .gguf file to write."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="The base model it is used with (its head "
                              "counts and shapes).", autocompletion=complete_models),
    fmt: str = FormatOpt,
    force: bool = ForceOpt,
) -> None:
    """Export an adapter alone as a GGUF LoRA for llama.cpp's --lora (and Ollama's ADAPTER)."""
    _check_format(fmt)
    out, _ = _check_out(out, force, modelfile=False)
    _run_lora_export(path, model, out)


# --- the work ------------------------------------------------------------------------------------


def _run_model_export(model: str, lora: list[str], quantize: str, out: Path, modelfile: Path) -> None:
    import torch

    from chatcli.hub.base_ref import base_reference
    from chatcli.hub.catalog import recommended_sampling, resolve_model
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.hub.generation_config import read_generation_defaults
    from chatcli.hub.gguf.exporter import export_gguf, preflight
    from chatcli.hub.gguf.modelfile import modelfile_text
    from chatcli.hub.resources import fmt_bytes
    from chatcli.lora.manager import AdapterManager
    from chatcli.lora.spec import load_adapter_specs
    from chatcli.lora.spec import preflight as preflight_adapters
    from chatcli.paths import write_text_atomic as write_atomic
    from chatcli.progress import stderr_progress

    specs = preflight_adapters(lora)
    with stderr_progress() as progress:
        src = resolve_model(model, progress=progress)
        preflight(src)  # architecture, quantized weights, tokenizer: refused before the weights are read
        base = load_checkpoint(src, dtype=torch.float32, device="cpu", progress=progress)
        mgr = AdapterManager(base)
        infos = load_adapter_specs(mgr, specs)
        state, untied = mgr.merged_state_dict()  # float32 sums, adapters at their scales
        merged = ", ".join(f"{i.name}×{i.scale:g}" for i in infos)
        label = model + (f" + {merged}" if merged else "")
        defaults = read_generation_defaults(src, recommended_sampling(model, src))
        ref = base_reference(model, src)
        result = export_gguf(
            src, state, out, quantize=quantize, name=label, source_repo=ref.hf_id, progress=progress,
            adapters=tuple(i.name for i in infos),
            description=f"{label}, exported by chatcli ({quantize})", sampling=defaults.sampling,
        )
    vocab = result.vocab
    assert vocab is not None
    stops = [vocab.token("eos") or ""] + [vocab.tokens[i] for i in defaults.eos_ids if 0 <= i < len(vocab.tokens)]
    specials = {f"{k}_token": v for k in ("bos", "eos", "unk") if (v := vocab.token(k)) is not None}
    text = modelfile_text(out.name, vocab.chat_template, defaults.sampling, stops, specials,
                          header=f"Made by chatcli from {label} ({quantize}).")
    try:
        write_atomic(modelfile, text)
    except BaseException:
        out.unlink(missing_ok=True)  # all or nothing: the pair, not half of it
        raise
    kept = f"; kept in F16 (rows not a multiple of 32): {', '.join(result.kept_f16)}" if result.kept_f16 else ""
    print(f"{out}  {fmt_bytes(result.size)}  {result.describe_types()} tensors"
          f"{' (LM head untied by an adapter)' if untied else ''}{kept}")
    print(f"{modelfile}  for Ollama: ollama create NAME -f {modelfile}")


def _run_lora_export(path: str, model: str, out: Path) -> None:
    from chatcli.hub.catalog import resolve_model
    from chatcli.hub.checkpoint import meta_model, read_model_config
    from chatcli.hub.gguf.exporter import preflight
    from chatcli.hub.gguf.lora_file import LoraPair, write_gguf_lora
    from chatcli.hub.resources import fmt_bytes
    from chatcli.lora.manager import AdapterManager
    from chatcli.lora.peft_io import read_adapter
    from chatcli.lora.spec import resolve_adapter
    from chatcli.model.lora_linear import lora_scaling
    from chatcli.progress import stderr_progress

    spec = resolve_adapter(path)
    with stderr_progress() as progress:
        src = resolve_model(model, progress=progress)
    config = preflight(src, tokenizer=False)
    adapter = read_adapter(spec.path, AdapterManager(meta_model(read_model_config(src))).shapes)  # no weights read
    if adapter.saved:
        raise UsageError(f"cannot export {spec.name} as a GGUF LoRA: it replaces {', '.join(sorted(adapter.saved))} "
                         "(modules_to_save), which a llama.cpp LoRA cannot; export the merged model with "
                         f"`chatcli models export {model} --lora {path}` instead")
    if not adapter.modules:
        raise UsageError(f"cannot export {spec.name} as a GGUF LoRA: it has no LoRA matrices")
    pairs = {
        module: LoraPair(A=m.A.float().numpy(), B=m.B.float().numpy(), alpha=float(m.alpha),
                         scaling=lora_scaling(m.r, m.alpha, adapter.use_rslora))
        for module, m in adapter.modules.items()
    }
    size, alpha = write_gguf_lora(out, pairs, config, name=spec.name)
    how = f"alpha {alpha:g}" if alpha else "per-module scaling folded into B (alpha 0)"
    print(f"{out}  {fmt_bytes(size)}  {len(pairs)} LoRA pairs, {how}")
