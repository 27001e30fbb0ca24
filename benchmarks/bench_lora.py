"""LoRA benchmark (printed numbers, not a test): adapter load time and decode speed.

Run: ``python benchmarks/bench_lora.py [--model NAME_OR_DIR] [--rank 16] [--tokens 128]``

Uses the default model (smollm2-135m-instruct) when it is already in the model
cache (it is never downloaded here); otherwise a random model of the same shape.
Measures:

* load time of a rank-R adapter on every linear layer (q/k/v/o/gate/up/down of
  every block), read from disk, validated and attached (target: < 100 ms), and
  unload time;
* decode tokens/s (one token per forward with a KV cache, greedy, after a short
  prefill) with no adapter, one unmerged adapter (target: at most 15% slower)
  and the same adapter merged (target: no slower than none).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatcli.engine.adapters import AdapterManager  # noqa: E402
from chatcli.engine.config import ModelConfig  # noqa: E402
from chatcli.engine.kv_cache import KVCache  # noqa: E402
from chatcli.engine.lora_io import LoRAAdapter, ModuleLoRA, write_adapter  # noqa: E402
from chatcli.engine.model import DecoderLM  # noqa: E402

DEFAULT = "smollm2-135m-instruct"
SMOLLM2_135M = dict(  # the default model's shape, for a random stand-in
    model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
    rope_theta=100000.0, tie_word_embeddings=True,
)  # fmt: skip


def load_model(spec: str) -> tuple[DecoderLM, str]:
    from chatcli.engine.checkpoint import load_checkpoint
    from chatcli.engine.paths import models_dir

    path = Path(spec).expanduser()
    if not path.is_dir():
        path = models_dir() / spec
    if path.is_dir() and (path / "config.json").is_file():
        return load_checkpoint(path), str(path)
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig.from_dict(SMOLLM2_135M)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model, f"random stand-in with {spec}'s shape ({spec} is not in the model cache)"


def random_adapter(model: DecoderLM, rank: int) -> LoRAAdapter:
    gen = torch.Generator().manual_seed(1)
    mods = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name != "lm_head":
            mods[name] = ModuleLoRA(
                A=torch.randn(rank, m.in_features, generator=gen) / m.in_features**0.5,
                B=0.01 * torch.randn(m.out_features, rank, generator=gen),
                alpha=2.0 * rank,
            )
    return LoRAAdapter(modules=mods, base_model=DEFAULT)


CLOCK = time.perf_counter  # --clock cpu: process CPU time, steadier on a shared machine


@torch.inference_mode()
def decode_tps(model: DecoderLM, tokens: int, prompt_len: int = 16, repeats: int = 1) -> float:
    """Median tokens/s of greedy one-token forwards after a prefill."""
    rates = []
    for _ in range(repeats):
        cache = KVCache(model.config, 1, model.dtype, model.device)
        ids = torch.arange(100, 100 + prompt_len)[None]
        logits = model(ids, cache, last_only=True)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        t0 = CLOCK()
        for _ in range(tokens):
            logits = model(nxt, cache)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
        rates.append(tokens / (CLOCK() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: count the process's CPU time (use with --threads 1 on a busy machine)")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    model, where = load_model(args.model)
    print(f"model: {where}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {model.dtype}, {model.device}, {args.clock} clock")
    mgr = AdapterManager.of(model)
    tmp = tempfile.TemporaryDirectory()
    folder = write_adapter(random_adapter(model, args.rank), Path(tmp.name) / "bench-r16")
    size = sum(f.stat().st_size for f in folder.iterdir())
    loads, unloads = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        info = mgr.load(folder, name="bench")
        loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mgr.unload("bench")
        unloads.append(time.perf_counter() - t0)
    print(
        f"adapter: rank {args.rank} on {info.modules} linear layers ({', '.join(info.targets)}), "
        f"{info.params:,} params ({info.percent:.2f}% of base), {size / 1e6:.1f} MB"
    )
    print(
        f"load:    first {loads[0] * 1e3:.1f} ms, median {statistics.median(loads) * 1e3:.1f} ms "
        f"(target < 100 ms); unload median {statistics.median(unloads) * 1e3:.1f} ms"
    )

    # Interleaved rounds, so load from other processes hits every configuration alike:
    # none = no adapter loaded (the original modules), off = loaded but switched off.
    rounds: dict[str, list[float]] = {"none": [], "off": [], "unmerged": [], "merged": []}
    decode_tps(model, 4, repeats=1)  # warm-up
    for _ in range(args.rounds):
        rounds["none"].append(decode_tps(model, args.tokens))
        mgr.load(folder, name="bench")
        mgr.disable("bench")
        rounds["off"].append(decode_tps(model, args.tokens))
        mgr.enable("bench")
        rounds["unmerged"].append(decode_tps(model, args.tokens))
        mgr.merge("bench")
        rounds["merged"].append(decode_tps(model, args.tokens))
        mgr.unload("bench")
    tmp.cleanup()
    med = {k: statistics.median(v) for k, v in rounds.items()}
    # Paired per-round ratios cancel slow drifts of machine load; the spread shows what is left.
    paired = {k: statistics.median(1 - a / b for a, b in zip(rounds[k], rounds["none"])) for k in rounds if k != "none"}
    print(f"decode:  {args.tokens} tokens x {args.rounds} interleaved rounds; tok/s median [min-max]")
    targets = {"off": "", "unmerged": " (target <= 15%)", "merged": " (target: no slower, within noise)"}
    for k, v in rounds.items():
        line = f"         {k:<9}{med[k]:6.1f} [{min(v):.1f}-{max(v):.1f}]"
        if k in paired:
            line += f"  {100 * (1 - med[k] / med['none']):+.1f}% slower than none by medians, {100 * paired[k]:+.1f}% paired{targets[k]}"
        print(line)


if __name__ == "__main__":
    main()
