"""Hostile adapter files, one named regression test each: a FIFO, a catastrophic regex, headers the
safetensors library refuses, configs of the wrong types. Each is refused with one line, in bounded
time, by every way in (``lora info``, the ``--lora`` pre-flight, the adapter manager the REPL, the
TUI and the server's engine thread load through), and the model is left untouched."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
import torch

from chatcli.errors import ChatcliError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.config import AdapterConfig
from chatcli.lora.manager import AdapterManager
from chatcli.lora.patterns import Matcher
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, plan_adapter, write_adapter
from chatcli.lora.spec import preflight
from tests.lora_helpers import logits
from tests.hang_guard import in_thread

HIDDEN, KV = 64, 32

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")


def _adapter(folder: Path, modules=("q_proj", "v_proj")) -> Path:
    gen = torch.Generator().manual_seed(0)
    outs = {"q_proj": HIDDEN, "v_proj": KV}
    mods = {
        f"model.layers.{i}.self_attn.{p}": ModuleLoRA(
            0.3 * torch.randn(4, HIDDEN, generator=gen), 0.3 * torch.randn(outs[p], 4, generator=gen), 8.0
        )
        for i in (0, 1)
        for p in modules
    }
    return write_adapter(LoRAAdapter(modules=mods), folder)


def _config(folder: Path, **changes) -> Path:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def _header(folder: Path, mutate) -> Path:
    """Rewrite the weights' header through ``mutate(header dict)``, data kept."""
    f = folder / "adapter_model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    new = json.dumps(mutate(header)).encode()
    f.write_bytes(struct.pack("<Q", len(new)) + new + b" " * (-len(new) % 8) + data)
    return folder


def _first(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)


@pytest.fixture
def run_cli(capsys):
    """``chatcli ARGV...`` in process: (exit code, stdout, stderr)."""
    from tests.cli_support import run  # imported here, as before: only the tests that use the CLI load it

    def go(*argv):
        return run(capsys, *argv)

    return go


def _refused(model, path: Path, phrase: str, limit_s: float = 5.0) -> str:
    """Loading ``path`` through a fresh manager is one line naming ``phrase``, fast; the model is unchanged."""
    before = logits(model)
    mgr = AdapterManager(model)
    start = time.monotonic()
    with pytest.raises(ChatcliError) as exc:
        mgr.load(path, name="bad")
    assert time.monotonic() - start < limit_s
    msg = exc.value.message
    assert "\n" not in msg and phrase in msg, msg
    assert len(mgr) == 0 and torch.equal(logits(model), before)
    with pytest.raises(ChatcliError, match=phrase.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        preflight([str(path)])  # and before any model is loaded
    return msg




# --- FIFOs -------------------------------------------------------------------------------------


def test_fifo_as_adapter_weights_is_refused_not_waited_on(tmp_path, model):
    d = _adapter(tmp_path / "fifo")
    (d / "adapter_model.safetensors").unlink()
    os.mkfifo(d / "adapter_model.safetensors")
    msg = in_thread(lambda: _refused(model, d, "is a FIFO (named pipe), not a regular file"))
    assert "adapter_model.safetensors" in msg


def test_fifo_given_directly_is_refused(tmp_path, model):
    d = _adapter(tmp_path / "direct")
    fifo = tmp_path / "direct" / "other.safetensors"
    os.mkfifo(fifo)
    in_thread(lambda: _refused(model, fifo, "is a FIFO (named pipe)"))


def test_fifo_as_adapter_config_is_refused(tmp_path, model):
    d = _adapter(tmp_path / "cfg")
    (d / "adapter_config.json").unlink()
    os.mkfifo(d / "adapter_config.json")
    in_thread(lambda: _refused(model, d, "adapter config"))


def test_a_symlink_to_a_device_is_refused(tmp_path, model):
    d = _adapter(tmp_path / "dev")
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.safetensors").symlink_to("/dev/zero")
    in_thread(lambda: _refused(model, d, "is a character device, not a regular file"))


# --- regular expressions -----------------------------------------------------------------------


def test_catastrophic_target_regex_is_refused_quickly(tmp_path, model):
    """``(.*.*)*X`` takes hours in Python's re against a module name; it is matched with a bound."""
    d = _config(_adapter(tmp_path / "cat"), target_modules="(.*.*)*X")
    in_thread(lambda: _refused(model, d, "selects none of the 4 modules", limit_s=3.0))


@pytest.mark.parametrize(
    "field, value",
    [
        ("target_modules", "(.*){1,100}[bc]"),
        ("exclude_modules", "(.*){1,100}[bc]"),
        ("rank_pattern", {"(.*){1,100}[bc]": 4}),
        ("alpha_pattern", {"(.*){1,100}[bc]": 4}),
    ],
)
def test_a_regex_that_outlives_its_budget_is_refused_naming_the_field(tmp_path, model, field, value):
    d = _config(_adapter(tmp_path / "slow"), **{field: value})
    start = time.monotonic()
    msg = in_thread(lambda: _refused(model, d, f"against {field}", limit_s=4.0))
    assert "budget" in msg and time.monotonic() - start < 8.0


def test_layers_pattern_regex_is_bounded_too(tmp_path, model):
    d = _config(_adapter(tmp_path / "lp"), target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1],
                layers_pattern="(.*){1,100}[bc]")  # fmt: skip
    in_thread(lambda: _refused(model, d, "against layers_pattern", limit_s=4.0))


def test_one_budget_covers_all_patterns_of_an_adapter():
    slow = "(.*){1,100}[bc]"
    m = Matcher(source="x", r=4, alpha=8, target_modules=["q_proj"], rank_pattern={slow: 4, slow + "|a": 4},
                alpha_pattern={slow: 2.0}, budget_s=0.3)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(ChatcliError, match="budget"):
        for _ in range(3):
            m.rank_alpha("model.layers.0.self_attn.q_proj")
    assert time.monotonic() - start < 1.0  # not 0.3 s per pattern per call


def test_a_million_listed_names_cost_set_lookups_not_a_scan():
    names = [f"x{i}" for i in range(1_000_000)]
    config = AdapterConfig.from_dict({"target_modules": [*names, "q_proj"], "exclude_modules": names})
    m = config.matcher("big", budget_s=0.3)
    start = time.monotonic()
    keys = [f"model.layers.{i}.{p}" for i in range(80) for p in ("self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj")]
    assert sum(m.targets(k) for k in keys) == 80
    assert time.monotonic() - start < 1.0


def test_a_pattern_selecting_no_module_of_the_model_is_refused(tmp_path, model):
    """An adapter with only a replaced lm_head and a target regex that matches nothing (PEFT: not found)."""
    head = {"lm_head": {"weight": torch.zeros(400, HIDDEN)}}
    d = write_adapter(LoRAAdapter(modules={}, saved=head), tmp_path / "none")
    _config(d, target_modules="nothing_matches_this")
    mgr = AdapterManager(model)
    with pytest.raises(ChatcliError, match="selects no linear layer of this model"):
        mgr.load(d)


def test_huge_and_nested_patterns_are_refused_before_compiling():
    with pytest.raises(ChatcliError, match="characters long"):
        AdapterConfig.from_dict({"target_modules": "a" * 100_000})
    with pytest.raises(ChatcliError, match="not a usable regular expression"):
        AdapterConfig.from_dict({"target_modules": "(" * 2000 + ")" * 2000})


# --- headers the safetensors library refuses ---------------------------------------------------


def _shape_as(kind):
    def mutate(h):
        k = _first(h)
        h[k]["shape"] = [{"str": str, "float": float, "neg": lambda d: -d}[kind](d) for d in h[k]["shape"]]
        return h

    return mutate


def _offsets_as(kind):
    def mutate(h):
        k = _first(h)
        h[k]["data_offsets"] = [{"str": str, "float": float}[kind](o) for o in h[k]["data_offsets"]]
        return h

    return mutate


HEADERS = {
    "shape_strings": (_shape_as("str"), "has shape ['4', '64']"),
    "shape_floats": (_shape_as("float"), "has shape [4.0, 64.0]"),
    "shape_negative": (_shape_as("neg"), "has shape [-4, -64]"),
    "offsets_strings": (_offsets_as("str"), "has data_offsets ['0', '1024']"),
    "offsets_floats": (_offsets_as("float"), "has data_offsets [0.0, 1024.0]"),
    "metadata_not_strings": (lambda h: {**h, "__metadata__": {"format": 1}}, "__metadata__ must map names to strings"),
    "metadata_a_list": (lambda h: {**h, "__metadata__": ["pt"]}, "__metadata__ must map names to strings"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_header_the_library_refuses_is_one_line(tmp_path, model, case, run_cli):
    mutate, phrase = HEADERS[case]
    d = _header(_adapter(tmp_path / case), mutate)
    _refused(model, d, phrase)
    code, out, err = run_cli("lora", "info", str(d))
    assert code == 1 and out == "" and err.count("\n") == 1 and phrase in err


def test_deeply_nested_header_is_refused_without_recursing(tmp_path, model):
    d = _adapter(tmp_path / "deep")
    raw = b'{"__metadata__":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    (d / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    _refused(model, d, "nested 100002 levels deep")


def test_a_negative_zero_offset_is_refused_as_the_library_does(tmp_path, model):
    d = _adapter(tmp_path / "negzero")
    f = d / "adapter_model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[-0,', 1)
    assert header != raw[8 : 8 + n]
    f.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n :])
    _refused(model, d, "data_offsets [-0.0, 1024]")


# --- configs of the wrong types ---------------------------------------------------------------

CONFIGS = {
    "r_infinity": (dict(r=float("inf")), "r must be a positive integer"),
    "target_modules_a_number": (dict(target_modules=5), "target_modules must be a string or a list of strings"),
    "rank_pattern_a_list": (dict(rank_pattern=["q_proj"]), "rank_pattern must be an object"),
    "rank_pattern_infinite": (dict(rank_pattern={"q_proj": float("inf")}), "rank_pattern['q_proj'] must be a positive"),
    "layers_to_transform_infinity": (dict(layers_to_transform=float("inf")), "layers_to_transform must be a layer index"),
    "modules_to_save_nested": (dict(modules_to_save=[["lm_head"]]), "modules_to_save must be a string or a list"),
    "modules_to_save_a_number": (dict(modules_to_save=5), "modules_to_save must be a string or a list"),
    "layers_pattern_a_number": (dict(layers_pattern=5, layers_to_transform=[0]), "layers_pattern must be a string"),
    "exclude_modules_a_number": (dict(exclude_modules=5), "exclude_modules must be a string or a list"),
    "alpha_huge_integer": (dict(lora_alpha=10**400), "lora_alpha must be a finite number"),
    "use_rslora_a_string": (dict(use_rslora="yes"), "use_rslora must be true or false"),
    "regex_with_layers": (dict(target_modules=".*q_proj", layers_to_transform=[0]), "cannot be used when target_modules"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_config_of_the_wrong_type_is_one_line(tmp_path, model, case, run_cli):
    changes, phrase = CONFIGS[case]
    d = _config(_adapter(tmp_path / case), **changes)
    _refused(model, d, phrase)
    code, out, err = run_cli("lora", "info", str(d))
    assert code == 1 and out == "" and err.count("\n") == 1 and phrase in err


def test_config_nested_100000_deep_is_one_line(tmp_path, model):
    d = _adapter(tmp_path / "deepcfg")
    (d / "adapter_config.json").write_text('{"r": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _refused(model, d, "nested 100001 levels deep")


def test_lora_info_refuses_what_loading_refuses(tmp_path, run_cli):
    """Tensors for a module the config does not target: info used to print a report and exit 0."""
    d = _config(_adapter(tmp_path / "untargeted"), target_modules=["q_proj"])
    code, out, err = run_cli("lora", "info", str(d))
    assert code == 1 and out == "" and "does not target" in err and err.count("\n") == 1
    assert plan_adapter(_adapter(tmp_path / "fine")).lora_keys  # a sound adapter still plans


def test_lora_info_and_the_pre_flight_refuse_nan_values(tmp_path, run_cli):
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(HIDDEN, 4, generator=gen)
    b[0, 0] = float("nan")
    d = write_adapter(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": ModuleLoRA(torch.randn(4, HIDDEN, generator=gen), b, 8.0)}), tmp_path / "nan")
    code, out, err = run_cli("lora", "info", str(d))
    assert code == 1 and out == "" and "NaN/Inf" in err and err.count("\n") == 1
    with pytest.raises(ChatcliError, match="NaN/Inf"):
        preflight([str(d)])


def test_the_pre_flight_refuses_before_the_model_is_loaded(tmp_path, tiny_model_dir, run_cli, monkeypatch):
    import chatcli.hub.checkpoint as checkpoint

    d = _config(_adapter(tmp_path / "pre"), target_modules="(.*.*)*X")
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("model loaded"))
    code, out, err = run_cli("generate", "hi", "--model", str(tiny_model_dir), "--lora", str(d))
    assert code == 1 and out == "" and err.count("\n") == 1 and "selects none" in err


# --- other readers of adapter folders ----------------------------------------------------------


def test_the_tui_adapter_list_skips_hostile_folders_instead_of_crashing(tmp_path):
    from chatcli.tui.widgets.adapter_picker import find_adapters

    root = tmp_path / "adapters"
    _adapter(root / "good")
    deep = _adapter(root / "deep")
    (deep / "adapter_config.json").write_text('{"r": ' + "[" * 100_000 + "]" * 100_000 + "}")
    fifo = _adapter(root / "fifo")
    (fifo / "adapter_model.safetensors").unlink()
    os.mkfifo(fifo / "adapter_model.safetensors")
    entries = in_thread(lambda: find_adapters([(root, "test")]))
    assert {e.name: e.rank for e in entries} == {"deep": None, "good": 4}
