"""The run's output directory: refuse / overwrite / resume, atomic checkpoints, the final files.

Layout::

    OUT/adapter_config.json, adapter_model.safetensors   the PEFT adapter (at the end)
    OUT/training_args.json                               every setting of the run
    OUT/metrics.jsonl                                    one metrics object per line
    OUT/loss.png                                         train / validation loss curve
    OUT/data_split.json                                  which data lines trained, which were held out
    OUT/checkpoint-<step>/                               trainable.safetensors, optimizer.safetensors, state.json

A checkpoint is written into ``checkpoint-<step>.tmp`` and renamed into place (a
rename is atomic), then older checkpoints are removed; a ``.tmp`` left by a crash is
never read. ``--resume`` continues from the newest complete checkpoint.

``data_split.json`` records the held-out split: the data file's line numbers for
training and validation and, for preference data, a key per pair
(:func:`pair_key`: a hash of the prompt, chosen and rejected texts with whitespace
normalised), so a reward model can later be checked on pairs it never saw
(``chatcli rank stats --reward DIR``) without its data file or tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from chatcli.errors import UsageError

ARGS_NAME = "training_args.json"
METRICS_NAME = "metrics.jsonl"
SPLIT_NAME = "data_split.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Create ``out``, or check it may be reused: never clobber or continue without being asked."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    if resume:
        if not (out / ARGS_NAME).is_file():
            raise UsageError(f"nothing to resume in {out}: it holds no {ARGS_NAME} (start without --resume)")
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: choose a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"output directory {out} already exists: pass --overwrite to replace it or --resume to continue it"
            )
        if not (out / ARGS_NAME).is_file():
            raise UsageError(f"--overwrite refused: {out} is not a chatcli fine-tuning directory (no {ARGS_NAME})")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_args(out: Path) -> dict:
    return json.loads((out / ARGS_NAME).read_text(encoding="utf-8"))


def latest_checkpoint(out: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-*") if (m := _CKPT.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def save_checkpoint(out: Path, step: int, params: list[tuple[str, torch.Tensor]], optimizer, state: dict) -> Path:
    from safetensors.torch import save_file

    final = out / f"checkpoint-{step}"
    tmp = out / f"checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in params}, str(tmp / "trainable.safetensors"))
    opt: dict[str, torch.Tensor] = {}
    for i, (_, p) in enumerate(params):
        for k, v in optimizer.state.get(p, {}).items():
            opt[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    save_file(opt, str(tmp / "optimizer.safetensors"))
    write_json(tmp / "state.json", {**state, "step": step})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in out.glob("checkpoint-*"):
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, params: list[tuple[str, torch.Tensor]], optimizer) -> dict:
    """Restore trainable tensors and optimizer moments in place; returns the saved state."""
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "trainable.safetensors"))
    names = [n for n, _ in params]
    if sorted(saved) != sorted(names):
        raise UsageError(f"{ckpt} does not match this run's adapter (different --targets/--layers/--rank?)")
    with torch.no_grad():
        for n, p in params:
            p.copy_(saved[n].to(p.dtype))
    opt = load_file(str(ckpt / "optimizer.safetensors"))
    for i, (_, p) in enumerate(params):
        st = {k.split(".", 1)[1]: v for k, v in opt.items() if k.split(".", 1)[0] == str(i)}
        st = {k: (v if k == "step" else v.to(p.device)) for k, v in st.items()}  # AdamW keeps step on the CPU
        if st:
            optimizer.state[p] = st
    return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))


def truncate_metrics(out: Path, step: int) -> None:
    """Drop metrics lines logged after the checkpoint being resumed (they will be logged again)."""
    path = out / METRICS_NAME
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(out: Path) -> list[dict]:
    path = out / METRICS_NAME
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --- the held-out split -------------------------------------------------------------------------


def _turns(value, role: str) -> list[list[str]]:
    """Text or messages -> [[role, normalised content], ...]."""
    if isinstance(value, str):
        return [[role, " ".join(value.split())]]
    return [[str(m.get("role", "")), " ".join(str(m.get("content", "")).split())] for m in value if isinstance(m, dict)]


def pair_key(prompt, chosen, rejected) -> str:
    """A preference pair's identity: prompt (text or messages), chosen and rejected (text or messages)."""
    rows = [_turns(prompt, "user"), _turns(chosen, "assistant"), _turns(rejected, "assistant")]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def record_pair_key(obj: dict) -> str | None:
    """:func:`pair_key` of a preference record (TRL's explicit or implicit prompt); None for other records."""
    chosen, rejected = obj.get("chosen"), obj.get("rejected")
    if chosen is None or rejected is None:
        return None
    if "prompt" in obj:
        return pair_key(obj["prompt"], chosen, rejected)
    if isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt: the shared leading messages
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        return pair_key(chosen[:k], chosen[k:], rejected[k:])
    return None


def write_split(out: Path, data: Path, train: list, val: list) -> None:
    """Record which lines of ``data`` (items with ``.line``) trained and which were held out."""
    from chatcli.jsonl import read_objects

    rows, _ = read_objects(Path(data))
    by_line = dict(rows)

    def keys(items: list) -> list[str]:
        found = (record_pair_key(by_line.get(x.line, {})) for x in items)
        return sorted({k for k in found if k is not None})

    write_json(out / SPLIT_NAME, {
        "data": str(data), "train_lines": sorted(x.line for x in train), "val_lines": sorted(x.line for x in val),
        "train_pairs": keys(train), "val_pairs": keys(val),
    })  # fmt: skip


def read_split(out: Path) -> dict | None:
    """``data_split.json`` of a run directory, or None when the run recorded none (older runs)."""
    path = Path(out) / SPLIT_NAME
    if not path.is_file():
        return None
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} cannot be read ({e}); it is not what 'chatcli finetune' wrote") from None
    if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in ("train_pairs", "val_pairs")):
        raise UsageError(f"{path} is not what 'chatcli finetune' wrote (no train_pairs / val_pairs lists)")
    return split
