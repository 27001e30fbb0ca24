"""What ``--quantize int8`` / ``int4`` cost in quality and gain in decode speed (issues 8, 18), printed, never asserted.

    .venv/bin/python benchmarks/quant_quality.py [--model smollm2-135m-instruct] [--threads 2]
        [--seed-dir /work/shared/seeds] [--prompts 8] [--tokens 64] [--rounds 5] [--transformers]
        [--variants int8,int4,int4-g64,int4-g128] [--skip ppl,greedy,speed]

Variants: ``int8``; ``int4`` (groups of 32: on the default model its shipped Q4_1 blocks, loaded
as they are, with an int8 LM head); ``int4-g64``, ``int4-g128`` (the float weights quantised
again in larger groups); ``int4-head4`` and ``int4-headf`` (groups of 32 with an int4 or a
float LM head: how the head's precision was chosen); ``int8-embf``, ``int4-embf`` (the tied
embedding kept as a float table instead of looked up from the int8 head's rows: what that
lookup costs in quality). Each is loaded, measured and dropped in
turn, so memory holds two models at a time.

Quality, float32 model against the same model with quantised weights:

* perplexity (chatcli's ``score``: teacher-forced, 2 ** mean surprisal) of the seed
  article(s) in ``--seed-dir`` (read as data, never copied) and of the English texts in
  ``benchmarks/data/``, with the mean KL divergence float32 || int8 per token (bits) and
  how often both put the same token first;
* greedy agreement: N chat prompts x T tokens generated greedily by both (end-of-turn
  ignored, so every answer is T tokens): the fraction of positions with the same token,
  the first divergence, and the top-1 agreement of int8 teacher-forced on float32's
  answer (which does not stop counting at the first divergence).

Scoring runs many rows per forward, so a quantised model computes with its dequantised
weights and float32 activations there; ``NAME/kernel`` forces the decode kernels
(bfloat16 activations) for scoring too, so the table shows what each path costs (the
decode path is the one ``chatcli generate`` and ``chat`` answer with).

Speed: decode tokens/s (128 tokens, greedy, after a 64-token prompt) of float32,
bfloat16, int8 (float32 model) and int8 on a bfloat16 model, interleaved round by
round in this one process on the same threads (the machine is shared: medians, with
min and max); ``--transformers`` adds transformers' float32 ``generate`` the same way.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "data"
PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short poem about autumn leaves.",
    "What are three tips for learning a new language?",
    "Describe the water cycle to a ten-year-old.",
    "Give me a recipe for a simple tomato soup.",
    "Why is the sky blue?",
    "Write a polite email asking to reschedule a meeting.",
    "What is the difference between a virus and a bacterium?",
    "Summarise the plot of a detective story in a few sentences.",
    "How do I make my houseplants grow better?",
]
SPEED_PROMPT = "Write a long story about a lighthouse keeper who collects sea glass, with many details."


@contextmanager
def kernel_everywhere(engine):
    """Route every int8/int4 matmul of ``engine``'s model through the decode kernels (bfloat16 activations),
    scoring included: its kernel choices (chatcli.model.kernel_choice) with no row limit, for the block."""
    from chatcli.model.packed import use_kernel_choices

    saved = engine.model.kernel_choices
    use_kernel_choices(engine.model, saved.with_(int8_max_rows=1 << 30, int4_max_rows=1 << 30))
    try:
        yield
    finally:
        use_kernel_choices(engine.model, saved)


def variant_loader(path: str, name: str):
    """A function loading variant ``name`` of the model at ``path`` (see the module docstring)."""
    import chatcli
    from chatcli.engine.loader import load_engine

    if name == "int8":
        return lambda: chatcli.load_model(path, device="cpu", quantize="int8")
    if name in ("int4", "int4-g64", "int4-g128"):
        group = int(name.removeprefix("int4-g")) if "-g" in name else 32
        return lambda: load_engine(path, device="cpu", quantize="int4", group_size=group)
    if name in ("int4-head4", "int4-headf"):
        def load():
            from chatcli.hub.gguf.q4_blocks import q4_blocks
            from chatcli.model.quantize import quantize_model

            engine = chatcli.load_model(path, device="cpu")  # float, then quantised with the other head
            quantize_model(engine.model, "int4", head="int4" if name == "int4-head4" else "none",
                           blocks=q4_blocks(Path(path)))
            return engine
        return load
    if name in ("int8-embf", "int4-embf"):
        def load_float_lookup():
            from chatcli.hub.gguf.q4_blocks import q4_blocks
            from chatcli.model.quantize import quantize_model

            method = name.removesuffix("-embf")
            engine = chatcli.load_model(path, device="cpu")  # float, then quantised keeping the float table
            quantize_model(engine.model, method, embedding="float",
                           blocks=q4_blocks(Path(path)) if method == "int4" else None)
            return engine
        return load_float_lookup
    raise SystemExit(f"unknown variant {name!r}: use int8, int4, int4-g64, int4-g128, int4-head4, int4-headf, "
                     "int8-embf, int4-embf")


def text_ids(engine, text: str) -> list[int]:
    return engine.completion_ids(text)  # BOS first when the tokenizer config asks for it


def windows(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def logprob_rows(engine, parts: list[list[int]]) -> torch.Tensor:
    """Log-probabilities [n, V] predicting each window's ids[1:] (chatcli's scoring pass), concatenated."""
    from chatcli.engine.scoring import next_token_logprobs

    return torch.cat([lp for ids in parts for lp in next_token_logprobs(engine.model, ids)])


def reference_rows(ref, texts: dict[str, str], limit: int, window: int) -> dict:
    """Per text: (windows, float32 log-probabilities, targets, perplexity)."""
    out = {}
    for tname, text in texts.items():
        parts = windows(text_ids(ref, text)[:limit], window)
        ref_lp = logprob_rows(ref, parts)
        targets = torch.tensor([t for ids in parts for t in ids[1:]])
        out[tname] = (parts, ref_lp, targets, math.exp(-ref_lp.gather(1, targets[:, None]).mean().item()))
    return out


def quality_rows(refs: dict, variants: dict, limit: int, window: int) -> None:
    """One row per text and variant (``variants``: name -> (engine, context)), and the overall line."""
    print(f"\nperplexity (at most {limit} tokens of a text, scored in windows of {window})")
    print(f"{'text':24} {'tokens':>6} {'model':16} {'perplexity':>10} {'ratio':>7} {'KL bits/tok':>11} {'top-1 same':>10}")
    for tname, (parts, ref_lp, targets, ref_ppl) in refs.items():
        print(f"{tname:24} {len(targets):6d} {'float32':16} {ref_ppl:10.3f} {1:7.4f} {'':>11} {'':>10}")
        for vname, (engine, ctx) in variants.items():
            with ctx():
                lp = logprob_rows(engine, parts)
            ppl = math.exp(-lp.gather(1, targets[:, None]).mean().item())
            kl = (ref_lp.exp() * (ref_lp - lp)).sum(1).mean().item() / math.log(2)
            same = (lp.argmax(1) == ref_lp.argmax(1)).float().mean().item()
            print(f"{'':24} {'':6} {vname:16} {ppl:10.3f} {ppl / ref_ppl:7.4f} {kl:11.5f} {same:10.1%}")


def greedy_ids(engine, prompt: str, tokens: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy answer ids) with end-of-turn ignored, so the answer has ``tokens`` ids."""
    from chatcli.engine.events import Step
    from chatcli.engine.params import SamplingParams

    ids = engine.tokenizer.encode_chat([{"role": "user", "content": prompt}])
    engine.generator.reset()
    params = SamplingParams(temperature=0.0, max_tokens=tokens, stop=())
    out = [ev.id for ev in engine.generator.stream(ids, params, eos_ids=()) if isinstance(ev, Step)]
    return ids, out


def agreement(refs: list, variants: dict, n: int, tokens: int) -> None:
    """Greedy answers of each variant against float32's (``refs``: (prompt ids, answer ids) per prompt)."""
    from chatcli.engine.scoring import score_ids

    for vname, (engine, ctx) in variants.items():
        same, firsts, forced, whole = 0, [], [], 0
        with ctx():
            for prompt, (pids, rids) in zip(PROMPTS[:n], refs):
                _, ids = greedy_ids(engine, prompt, tokens)
                same += sum(a == b for a, b in zip(ids, rids))
                first = next((i for i, (a, b) in enumerate(zip(ids, rids)) if a != b), tokens)
                firsts.append(first)
                whole += first == tokens
                scored = score_ids(engine.model, engine.tokenizer, pids + rids, context_tokens=len(pids), top_n=0)
                forced += [t.rank == 1 for t in scored.scored]
        print(f"{vname:16} {same / (n * tokens):11.1%} {whole:4d}/{n:<4d} "
              f"{statistics.median(firsts):>22.1f} ({min(firsts)}-{max(firsts)}){'':>6} {sum(forced) / len(forced):12.1%}")


def chatcli_decode(engine, prompt_ids: list[int], tokens: int) -> float:
    from chatcli.engine.events import Done
    from chatcli.engine.params import SamplingParams

    engine.generator.reset()  # no prefix reuse between runs
    params = SamplingParams(temperature=0.0, max_tokens=tokens, stop=())
    done = [ev for ev in engine.generator.stream(prompt_ids, params, eos_ids=()) if isinstance(ev, Done)][0]
    return done.tokens_per_s or 0.0


def transformers_decode(model, prompt_ids: list[int], tokens: int) -> float:
    ids = torch.tensor([prompt_ids])
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **kw)
        total = time.perf_counter() - t0
    n = out.shape[1] - ids.shape[1]
    return (n - 1) / max(total - first, 1e-9)


def speed(engines: dict, rounds: int, tokens: int, path: str | None) -> None:
    runners = {name: (lambda e=e: chatcli_decode(e, ids, tokens)) for name, e in engines.items()}
    ref = next(iter(engines.values()))
    ids = ref.tokenizer.encode(SPEED_PROMPT * 8)[:64]
    if path is not None:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        runners["transformers f32"] = lambda: transformers_decode(hf, ids, tokens)
    for run in runners.values():
        run()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            rates[name].append(run())
    base = statistics.median(rates["transformers f32"]) if path is not None else statistics.median(rates["float32"])
    label = "x transformers f32" if path is not None else "x float32"
    print(f"\ndecode tokens/s, {tokens} tokens after a 64-token prompt, {rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':18} {'median':>8} {'min':>8} {'max':>8} {label:>20}")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:18} {med:8.1f} {min(r):8.1f} {max(r):8.1f} {med / base:20.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-dir", default="/work/shared/seeds")
    ap.add_argument("--text-tokens", type=int, default=4096, help="score at most this many tokens of a text")
    ap.add_argument("--window", type=int, default=1024, help="scoring window (tokens of context at most)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--speed-tokens", type=int, default=128)
    ap.add_argument("--transformers", action="store_true", help="add transformers float32 to the speed table")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: ppl,greedy,speed")
    ap.add_argument("--variants", default="int8,int4,int4-g64,int4-g128",
                    help="comma list: int8, int4, int4-g64, int4-g128, int4-head4, int4-headf")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    names = [v for v in args.variants.split(",") if v]

    import chatcli
    from chatcli.hub.catalog import resolve_model

    path = str(resolve_model(args.model))
    loaders = {name: variant_loader(path, name) for name in names}
    ref = chatcli.load_model(path, device="cpu")
    cpu_flags = " ".join(f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16") if f in Path("/proc/cpuinfo").read_text())
    print(f"model {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU flags: {cpu_flags or 'no avx512_bf16/vnni/amx'}")

    texts = {f"seed {p.stem[:19]}": p.read_text(encoding="utf-8") for p in sorted(Path(args.seed_dir).glob("*.txt"))}
    texts |= {f"en {p.stem}": p.read_text(encoding="utf-8") for p in sorted(DATA.glob("*.txt"))}
    refs = reference_rows(ref, texts, args.text_tokens, args.window) if "ppl" not in skip else {}
    n = min(args.prompts, len(PROMPTS))
    greedy_refs = [greedy_ids(ref, p, args.tokens) for p in PROMPTS[:n]] if "greedy" not in skip else []
    if "ppl" not in skip or "greedy" not in skip:
        for name, load in loaders.items():  # one quantised model in memory at a time
            engine = load()
            if "ppl" not in skip:
                quality_rows(refs, {name: (engine, _nothing), f"{name}/kernel": (engine, lambda: kernel_everywhere(engine))},
                             args.text_tokens, args.window)
            if "greedy" not in skip:
                print(f"\ngreedy agreement with float32: {n} chat prompts x {args.tokens} tokens")
                print(f"{'model':16} {'same tokens':>11} {'identical':>9} {'first divergence (median, min-max)':>36} "
                      f"{'forced top-1':>12}")
                agreement(greedy_refs, {name: (engine, _nothing)}, n, args.tokens)
            del engine
    if "speed" not in skip:
        engines = {
            "float32": ref,
            "bfloat16": chatcli.load_model(path, device="cpu", dtype="bfloat16"),
            **{name: load() for name, load in loaders.items()},
        }
        speed(engines, args.rounds, args.speed_tokens, path if args.transformers else None)


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    main()
