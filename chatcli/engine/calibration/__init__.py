"""Per-machine calibration of a model's compute paths (issue 18: "paths chosen per machine by measurement").

The fastest kernel for a dtype, the row count up to which the int8/int4 kernels pay, and the
best thread count per phase differ between CPUs. On a model's first load on a CPU the engine
measures the candidates on that model (:mod:`.measure`), keeps the fastest where it beats the
plain path by more than the noise, caches the result per CPU, torch version, dtype,
quantisation and shape (:mod:`.key`, :mod:`.cache`) and says so in one line (:mod:`.auto`);
later loads read the cache. ``chatcli bench --calibrate`` measures again and prints the table
(:mod:`.table`). ``CHATCLI_CALIBRATE=0`` turns it off (the defaults of
:mod:`chatcli.model.kernel_choice` then apply). Nothing here changes a dtype or a
quantisation: only which kernel computes the same products, and on how many threads
(:mod:`.threads`, which the generator calls per phase).

This ``__init__`` imports nothing: the generator imports :mod:`.threads` on every start.
"""
