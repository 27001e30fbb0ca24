"""The background build behind the default ("auto"; float32, int8, int4 and bfloat16): one builder per package, markers beside it,
a failure written down once, and a real build whose package the next answer loads."""

from __future__ import annotations

import subprocess
import time

import pytest
import torch

from chatcli.engine import compile_build, compile_worker
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.compiled.step import CompiledDecoder, CompiledStep, package_path


def test_one_builder_per_package_and_none_after_a_failure(tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: launched.append((argv, kw)))
    pkg = tmp_path / "steps" / "abc.pt2"
    line = compile_build.start(pkg, "/models/m", "float32")
    assert line and "background" in line and "\n" not in line
    argv, kw = launched[0]
    assert argv[1:] == ["-m", "chatcli.engine.compile_worker", str(pkg), "/models/m", "float32", "none", "", ""]
    assert kw["start_new_session"] and kw["env"]["OMP_NUM_THREADS"] == "1"
    assert pkg.with_suffix(".building").is_file()
    assert compile_build.start(pkg, "/models/m", "float32") is None and len(launched) == 1  # one runs already
    old = time.time() - compile_build.STALE_S - 5  # a builder that died long ago: taken as abandoned
    import os

    os.utime(pkg.with_suffix(".building"), (old, old))
    assert compile_build.start(pkg, "/models/m", "float32") and len(launched) == 2
    pkg.with_suffix(".building").unlink()
    pkg.with_suffix(".failed").write_text("boom\n")
    assert compile_build.start(pkg, "/models/m", "float32") is None and len(launched) == 2
    other = tmp_path / "steps" / "int4.pt2"  # a quantised model's builder loads it quantised, as the chat did
    assert compile_build.start(other, "/models/m", "float32", "int4", 64)
    assert launched[-1][0][-4:] == ["float32", "int4", "64", ""]
    bf16 = tmp_path / "steps" / "bf16.pt2"  # a bf16 builder plans the chat's calibrated one-row path
    assert compile_build.start(bf16, "/models/m", "bfloat16", "none", None, "plain")
    assert launched[-1][0][-4:] == ["bfloat16", "none", "", "plain"]


def test_a_failed_build_is_written_down_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    pkg = tmp_path / "steps" / "abc.pt2"
    pkg.parent.mkdir()
    pkg.with_suffix(".building").write_text("1\n")
    assert compile_worker.main([str(pkg), str(tmp_path / "no-such-model"), "float32"]) == 1
    said = pkg.with_suffix(".failed").read_text()
    assert said.count("\n") == 1 and not pkg.with_suffix(".building").exists() and not pkg.exists()


@pytest.mark.parametrize("dtype,quantize", [("float32", "int4"), ("bfloat16", "none")])
def test_background_build_then_the_next_answer_loads_it(dtype, quantize, tiny_model_dir, tmp_path, monkeypatch):
    """The real thing on the tiny model as the commands load it (int4, and bf16 on the plain one-row
    path a calibration may choose; ``compile`` unset = "auto"): the decoder starts the builder process
    (which loads the model as the chat did: int4, or bf16 on the chat's path, which the builder's own
    uncalibrated load would not take; AOTInductor, a few seconds of C++ here), keeps decoding eagerly,
    and its first answer after the package appears loads it and gives the eager step's logits bit for bit."""
    from chatcli.engine.loader import load_engine
    from chatcli.model.packed import use_kernel_choices
    from tests.model.test_compiled_step import _run_both

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    engine = load_engine(str(tiny_model_dir), dtype=dtype, quantize=quantize, compile="auto", warm_up=False,
                         calibrate=False)  # fmt: skip
    model, decoder = engine.model, engine.generator.compiled
    if dtype == "bfloat16":
        use_kernel_choices(model, model.kernel_choices.with_(bf16_small_rows="plain"))
    said: list[str] = []
    decoder.say = said.append
    want, got, step = _run_both(model, decoder, steps=2)
    assert not isinstance(step, CompiledStep) and torch.equal(got, want)
    pkg = package_path(model)
    deadline = time.time() + 480
    while not pkg.exists() and time.time() < deadline and not pkg.with_suffix(".failed").exists():
        time.sleep(1)
    log = pkg.with_suffix(".log").read_text() if pkg.with_suffix(".log").exists() else ""
    assert pkg.is_file(), (pkg.with_suffix(".failed").read_text() if pkg.with_suffix(".failed").exists() else "", log[-2000:])
    want, got, step = _run_both(model, decoder, steps=6)
    assert isinstance(step, CompiledStep) and decoder.loads == 1 and decoder.compiles == 0
    assert torch.equal(got, want)
    assert not pkg.with_suffix(".building").exists() and not pkg.with_suffix(".log").exists()
    assert len(said) == 2 and "background" in said[0] and "ready" in said[1]  # the start, then the change


def test_a_calibrated_row_limit_names_the_same_package(tiny_model_dir):
    """The builder loads without calibrating; the chat may have calibrated the int4 kernel's row limit.
    A one-row step is on the kernel's side of any limit, so both name one package."""
    from chatcli.model.compiled import package
    from chatcli.model.compiled.step_plan import plan
    from chatcli.model.packed import use_kernel_choices
    from chatcli.model.quantize import quantize_model

    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, "int4")

    def key():
        return package.package_key(package.StepModule(plan(model, 1)), "source")

    before = key()
    use_kernel_choices(model, model.kernel_choices.with_(int4_max_rows=64, int8_max_rows=32))
    assert key() == before
    use_kernel_choices(model, model.kernel_choices.with_(int4_max_rows=0))  # no kernel: another program
    assert key() != before


def test_the_bf16_one_row_path_names_its_own_package(tiny_model_dir):
    """oneDNN's prepacked products and aten's mm are two programs (the same numbers, other kernels)."""
    from chatcli.model.compiled import package
    from chatcli.model.compiled.step_plan import plan
    from chatcli.model.packed import use_kernel_choices

    model = load_checkpoint(tiny_model_dir).to(torch.bfloat16)
    keys = {}
    for path in ("onednn", "plain"):
        use_kernel_choices(model, model.kernel_choices.with_(bf16_small_rows=path))
        keys[path] = package.package_key(package.StepModule(plan(model, 1)), "source")
    assert keys["onednn"] != keys["plain"]


def test_packages_unused_for_a_month_are_pruned_after_a_build(tmp_path):
    import os

    from chatcli.model.compiled.package import UNUSED_DAYS, prune

    old, fresh, new = (tmp_path / f"{n}.pt2" for n in ("old", "fresh", "new"))
    logs = ("running.building", "running.log", "broke.failed", "broke.log", "gone.log")
    for f in (old, fresh, new, tmp_path / "old.failed", *(tmp_path / n for n in logs)):
        f.write_text("x")
    then = time.time() - (UNUSED_DAYS + 1) * 86400
    for f in (old, tmp_path / "old.failed", new):
        os.utime(f, (then, then))
    prune(tmp_path, keep=new)
    # A running build's log and a failed build's log stay; a log no builder or failure explains goes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broke.failed", "broke.log", "fresh.pt2", "new.pt2",
                                                          "running.building", "running.log"]  # fmt: skip
