"""Where each sampling value comes from: one precedence, one pure function.

A run's sampling values are stacked in layers, highest first (:data:`SOURCES`)::

    flag > /set > preset > env > config > model > built-in

``flag`` is a command-line option or a Python API keyword, ``/set`` a value set in the chat,
``preset`` a ``--preset`` file, ``env`` a ``CHATCLI_*`` variable, ``config`` the config
file's ``[defaults]``, ``model`` the model's own recommendation (its ``generation_config.json``
over the catalog's, :mod:`chatcli.hub.generation_config`) and ``built-in``
:class:`~chatcli.engine.params.SamplingParams`' defaults. :func:`resolve_sampling` takes the
layers as plain mappings (SamplingParams field names; other keys such as ``model`` or
``system`` are ignored, so a whole preset or ``[defaults]`` table can be passed) and gives the
values with, for every field, the name of the layer it came from. ``None`` means "not set
here" (a command-line option left out; a seed chosen per answer is :data:`RANDOM_SEED`). A
``built-in`` layer, if given, replaces SamplingParams' own defaults for a front end that has others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from chatcli.engine.params import SamplingParams

SOURCES = ("flag", "/set", "preset", "env", "config", "model", "built-in")
FIELDS = tuple(f.name for f in fields(SamplingParams))
# A layer's seed: None means "not set here", so a layer that chooses a new seed per answer
# (`/set seed none` over a seed in the config file) says RANDOM_SEED.
RANDOM_SEED = "random"


@dataclass(frozen=True)
class Resolved:
    """The values a run uses, and the layer each came from (every field of SamplingParams)."""

    params: SamplingParams
    sources: dict[str, str]


def resolve_sampling(layers: Mapping[str, Mapping[str, object]]) -> Resolved:
    """The values of the highest layer that sets each field; a bad value is SamplingParams' one-line UsageError."""
    unknown = [name for name in layers if name not in SOURCES]
    if unknown:  # a caller's typo would silently drop a whole layer
        raise ValueError(f"unknown sampling layer(s) {unknown}: use {', '.join(SOURCES)}")
    values: dict[str, object] = {}
    sources = dict.fromkeys(FIELDS, "built-in")
    for field in FIELDS:
        for source in SOURCES:
            value = (layers.get(source) or {}).get(field)
            if value is not None:
                if field == "seed" and value == RANDOM_SEED:
                    value = None
                values[field] = tuple(value) if field == "stop" else value
                sources[field] = source
                break
    return Resolved(SamplingParams(**values), sources)


def explicit(params: SamplingParams) -> dict[str, object]:
    """The fields of ``params`` that differ from SamplingParams' defaults: what a caller chose."""
    default = SamplingParams()
    return {f: getattr(params, f) for f in FIELDS if getattr(params, f) != getattr(default, f)}
