"""Settings a person keeps between runs, and where each value of a run came from.

* :mod:`~chatcli.settings.keys` — the one table of setting keys (model, dtype, quantize, the
  sampling values, system, max_tokens, adapters) with their type and check.
* :mod:`~chatcli.settings.config_file` — THE reader of ``<config dir>/config.toml`` (or
  ``config.json``): its ``plugins`` key and its ``[defaults]`` table.
* :mod:`~chatcli.settings.env` — the ``CHATCLI_MODEL``, ``CHATCLI_TEMPERATURE``, ... variables.
* :mod:`~chatcli.settings.presets` — named presets (model + system + sampling + adapters),
  one TOML file each in ``<config dir>/presets/``.
* :mod:`~chatcli.settings.param_sources` — the precedence flag > /set > preset > env > config >
  model > built-in, and the name of the layer each value came from.

Everything here is plain data and checks: no typer, no torch. The CLI (``chatcli/cli``)
turns these layers into typer's ``default_map`` and ``envvar=`` options.
"""
