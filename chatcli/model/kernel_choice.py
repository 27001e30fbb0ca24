"""Which compute path a model takes where more than one gives the same numbers: :class:`KernelChoices`.

The fastest kernel for a dtype differs between CPUs (the oneDNN bf16 matrix-vector path won
1.9x on an AMD machine and loses on an Intel Xeon with AMX; the row count up to which the
int8/int4 kernels beat a dequantised matmul depends on the core and its caches; decode, which
reads every weight once per token, may run best on fewer threads than a prefill). So these
are values held by each model (``DecoderLM.kernel_choices``), not module constants:
:func:`chatcli.model.packed.use_kernel_choices` gives a model its choices and pushes them into
its fused groups and quantised layers, which read them instead of constants; the generator
sets torch's thread count per phase from them. :mod:`chatcli.engine.calibration` measures
them per machine; :data:`DEFAULT` is what a model gets without a calibration (the behaviour
before choices existed).

None of these choices changes a dtype or a quantisation: every path of a choice computes the
same products in the same dtypes (float32 stays the parity reference), so a choice can only
make a model faster or slower, never change what it answers beyond floating-point order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BF16_PATHS = ("onednn", "plain")  # bf16 products of a few rows: oneDNN's prepacked weight, or aten's mm


@dataclass(frozen=True)
class KernelChoices:
    """One model's compute paths (see the module docstring).

    * ``bf16_small_rows``: bf16 products of at most ``bf16_onednn_max_rows`` rows (decode steps,
      batched candidates, short prompts) through oneDNN's prepacked weight (``"onednn"``, a second
      copy of each bf16 weight) or aten's plain bf16 mm (``"plain"``, no copy);
    * ``bf16_onednn_max_rows``: with ``"onednn"``, products of more rows take aten's mm (a long
      prompt: on a Xeon with AMX oneDNN's blocked weight wins ~25 % at 64 rows and loses at 512);
    * ``int8_max_rows`` / ``int4_max_rows``: products of at most this many rows go through the
      int8 / int4 kernel, more rows dequantise the weight for a dense matmul;
    * ``prefill_threads`` / ``decode_threads``: torch's thread count while a prompt is prefilled /
      while tokens are decoded, and ``idle_threads`` the count set back when an answer ends (the count
      in effect when the choices were measured, so a model loaded later in the same process sees the
      count its user set). All three or none (None: leave the count as it is).
    """

    bf16_small_rows: str = "onednn"
    bf16_onednn_max_rows: int = 16
    int8_max_rows: int = 16
    int4_max_rows: int = 16
    prefill_threads: int | None = None
    decode_threads: int | None = None
    idle_threads: int | None = None

    def __post_init__(self) -> None:
        if self.bf16_small_rows not in BF16_PATHS:
            raise ValueError(f"bf16_small_rows must be one of {', '.join(BF16_PATHS)}, got {self.bf16_small_rows!r}")
        for name in ("bf16_onednn_max_rows", "int8_max_rows", "int4_max_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("prefill_threads", "decode_threads", "idle_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if len({self.prefill_threads is None, self.decode_threads is None, self.idle_threads is None}) != 1:
            raise ValueError("prefill_threads, decode_threads and idle_threads are all None or all set")

    def with_(self, **changes) -> "KernelChoices":
        return KernelChoices(**{**asdict(self), **changes})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "KernelChoices":
        """From :meth:`to_json`'s dict; ValueError when it is not one (a wrong type, an unknown or missing key)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"kernel choices must be an object with the keys {', '.join(sorted(names))}")
        return cls(**data)

    def describe(self) -> str:
        """One line for people: ``bf16 small rows onednn (<= 16 rows), int8 kernel <= 16 rows, ...``."""
        threads = "threads as set" if self.prefill_threads is None else (
            f"threads {self.prefill_threads} for prompts / {self.decode_threads} for decoding (else {self.idle_threads})")
        bf16 = self.bf16_small_rows + (f" (<= {self.bf16_onednn_max_rows} rows)" if self.bf16_small_rows == "onednn" else "")
        return (f"bf16 small rows {bf16}, int8 kernel <= {self.int8_max_rows} rows, "
                f"int4 kernel <= {self.int4_max_rows} rows, {threads}")


DEFAULT = KernelChoices()
