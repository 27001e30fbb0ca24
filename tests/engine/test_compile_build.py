"""The background build behind float32's default ("auto"): one builder per package, markers beside it,
a failure written down once, and a real build whose package the next answer loads."""

from __future__ import annotations

import subprocess
import time

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
    assert argv[1:] == ["-m", "chatcli.engine.compile_worker", str(pkg), "/models/m", "float32"]
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


def test_a_failed_build_is_written_down_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    pkg = tmp_path / "steps" / "abc.pt2"
    pkg.parent.mkdir()
    pkg.with_suffix(".building").write_text("1\n")
    assert compile_worker.main([str(pkg), str(tmp_path / "no-such-model"), "float32"]) == 1
    said = pkg.with_suffix(".failed").read_text()
    assert said.count("\n") == 1 and not pkg.with_suffix(".building").exists() and not pkg.exists()


def test_background_build_then_the_next_answer_loads_it(tiny_model_dir, tmp_path, monkeypatch):
    """The real thing on the tiny model: an auto decoder starts the builder process (AOTInductor, a few
    seconds of C++ here), keeps decoding eagerly, and its first answer after the package appears loads it."""
    from tests.model.test_compiled_step import _run_both

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = load_checkpoint(tiny_model_dir)
    said: list[str] = []
    decoder = CompiledDecoder(say=said.append, mode="auto",
                              background=lambda p: compile_build.start(p, str(tiny_model_dir), "float32"))
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
    assert (got - want).abs().max().item() < 5e-4 and torch.equal(got.argmax(-1), want.argmax(-1))
    assert not pkg.with_suffix(".building").exists() and not pkg.with_suffix(".log").exists()
    assert len(said) == 2 and "background" in said[0] and "ready" in said[1]  # the start, then the change


def test_packages_unused_for_a_month_are_pruned_after_a_build(tmp_path):
    import os

    from chatcli.model.compiled.package import UNUSED_DAYS, prune

    old, fresh, new = (tmp_path / f"{n}.pt2" for n in ("old", "fresh", "new"))
    for f in (old, fresh, new, tmp_path / "old.failed", tmp_path / "fresh.log"):
        f.write_text("x")
    then = time.time() - (UNUSED_DAYS + 1) * 86400
    for f in (old, tmp_path / "old.failed", new):
        os.utime(f, (then, then))
    prune(tmp_path, keep=new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.log", "fresh.pt2", "new.pt2"]
