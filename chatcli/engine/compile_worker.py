"""The builder process behind :func:`chatcli.engine.compile_build.start`: ``python -m
chatcli.engine.compile_worker PACKAGE SOURCE DTYPE [QUANTIZE [GROUP [BF16_PATH]]]`` loads the model at SOURCE
as the chat did (a bf16 model's one-row products on the chat's calibrated path, ``onednn`` or ``plain``),
builds the package of its decode step at low priority on one thread, and writes
``PACKAGE.failed`` (one line) instead when anything goes wrong; ``PACKAGE.building`` is removed either way."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chatcli.engine.compile_build import marker


def main(argv: list[str]) -> int:
    """The builder process: ``PACKAGE SOURCE DTYPE [QUANTIZE [GROUP [BF16_PATH]]]``."""
    path, source, dtype = Path(argv[0]), argv[1], argv[2]
    quantize = argv[3] if len(argv) > 3 else "none"
    group_size = int(argv[4]) if len(argv) > 4 and argv[4] else None
    bf16_path = argv[5] if len(argv) > 5 else ""
    building = marker(path, ".building")
    try:
        os.nice(10)  # below the chat that started it
    except (OSError, AttributeError):  # no os.nice on Windows
        pass
    try:
        import torch

        torch.set_num_threads(1)
        from chatcli.engine.loader import load_engine
        from chatcli.model.compiled import package
        from chatcli.model.compiled.step import package_path
        from chatcli.model.compiled.step_plan import plan

        model = load_engine(source, dtype=dtype, device="cpu", quantize=quantize, group_size=group_size,
                            warm_up=False, calibrate=False).model
        if bf16_path:  # the path the chat calibrated: its plan, so its package key
            from chatcli.model.packed import use_kernel_choices

            use_kernel_choices(model, model.kernel_choices.with_(bf16_small_rows=bf16_path))
        if package_path(model) != path:  # the file this model's decoder looks for (and inductor's cache dir set)
            raise RuntimeError("the model loaded here is not the one the package is for")
        package.build(package.StepModule(plan(model, 1)), model.config, model.dtype, path)
        marker(path, ".log").unlink(missing_ok=True)  # nothing to keep from a build that worked
        return 0
    except Exception as e:  # noqa: BLE001 - any failure: recorded in one line, the chat stays eager
        marker(path, ".failed").write_text(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}\n", encoding="utf-8")
        return 1
    finally:
        building.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
