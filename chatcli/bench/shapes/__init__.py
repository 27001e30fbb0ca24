"""``chatcli bench --shape``: cost against model size, on random-weight checkpoints of real architectures.

* :mod:`.architectures` — the shapes (public configs of Qwen2.5-0.5B, Llama-3.2-1B,
  Qwen2.5-1.5B; tiny hidden ones for tests);
* :mod:`.random_weights` and :mod:`.bench_vocab` — the checkpoint each is measured on,
  built once into the user cache;
* :mod:`.sweep` — the existing figure groups per shape and variant (dtype or
  quantization) through :func:`chatcli.bench.runner.run_bench`, beside the baselines;
* :mod:`.scaling_table` and :mod:`.scaling_plot` — the markdown table and the PNG;
* :mod:`.shape_command` — the ``--shape`` options' checks and the files written.
"""
