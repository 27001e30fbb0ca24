"""Which package index the person configured, read as pip and uv read it (for fetching without pip).

The main index, first found wins:

1. ``PIP_INDEX_URL``;
2. ``UV_DEFAULT_INDEX`` or ``UV_INDEX_URL`` (uv's names, old and new);
3. ``index-url`` in pip's configuration files (``[global]``, then ``[download]`` over it), the
   files read in pip's order, a later one overriding an earlier one: ``/etc/pip.conf``,
   ``$XDG_CONFIG_DIRS/pip/pip.conf``, ``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``,
   ``<sys.prefix>/pip.conf``, then ``PIP_CONFIG_FILE``;
4. PyPI (``https://pypi.org/simple``).

Extra indexes are asked after it: ``PIP_EXTRA_INDEX_URL``, ``UV_INDEX``/``UV_EXTRA_INDEX_URL``
(a ``name=`` prefix is dropped) and ``extra-index-url`` from the same files. ``cert`` (or
``PIP_CERT``) names a CA bundle. ``PIP_CONFIG_FILE=os.devnull`` disables the files, as in pip.
"""

from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

PYPI_SIMPLE = "https://pypi.org/simple"


@dataclass(frozen=True)
class IndexConfig:
    index_url: str
    extra_urls: list[str] = field(default_factory=list)
    cert: str | None = None

    @property
    def urls(self) -> list[str]:
        """The main index, then the extras, each once."""
        out: list[str] = []
        for url in [self.index_url, *self.extra_urls]:
            if url and url not in out:
                out.append(url)
        return out


def read_index_config() -> IndexConfig:
    """The index URLs and CA bundle this environment asks for (see the module docstring)."""
    files = _read_pip_files()
    env = os.environ
    index = (env.get("PIP_INDEX_URL") or env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL")
             or files.get("index-url") or PYPI_SIMPLE)
    extras = _split(env.get("PIP_EXTRA_INDEX_URL")) + _split(env.get("UV_INDEX")) \
        + _split(env.get("UV_EXTRA_INDEX_URL")) + _split(files.get("extra-index-url"))
    cert = env.get("PIP_CERT") or files.get("cert") or None
    return IndexConfig(index.strip(), extras, cert)


def pip_config_files() -> list[Path]:
    """pip's configuration files in the order it reads them (later ones win)."""
    env_file = os.environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    xdg_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    files = [Path("/etc/pip.conf")] + [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d]
    files += [Path.home() / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf", Path(sys.prefix) / "pip.conf"]
    if env_file:
        files.append(Path(env_file))
    return files


def _read_pip_files() -> dict[str, str]:
    values: dict[str, str] = {}
    for path in pip_config_files():
        parser = configparser.RawConfigParser()
        try:
            if not path.is_file():
                continue
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):  # a broken file is pip's to report
            continue
        for section in ("global", "download"):
            if parser.has_section(section):
                values.update({k: v for k, v in parser.items(section)
                               if k in ("index-url", "extra-index-url", "cert")})
    return values


def _split(value: str | None) -> list[str]:
    """Whitespace-separated URLs; uv's ``name=URL`` keeps the URL."""
    out = []
    for word in (value or "").split():
        name, eq, url = word.partition("=")
        out.append(url if eq and "://" not in name else word)
    return out
